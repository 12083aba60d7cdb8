//! The large categories of the throughput benchmark: the three large inputs of
//! `shared/repair-corpus/public-large.jsonl` as they are, and five broken forms derived from their
//! values deterministically (trailing commas and comments, Python repr, truncation, raw newlines
//! and tabs in strings, NDJSON), each with the value the corpus README says it means.
//!
//! Shared by `tests/large.rs` (keel repairs every input to its expected value) and
//! `examples/compare.rs` (throughput per category), through `#[path]`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// One input of a category and the value it means.
pub(crate) struct LargeCase {
    /// The category (`large_valid_pretty`, …, `large_python_repr`, …).
    pub(crate) category: &'static str,
    /// The raw model output.
    pub(crate) input: String,
    /// The value it means (corpus README conventions).
    pub(crate) expected: Value,
}

/// The categories, in report order.
pub(crate) const CATEGORIES: [&str; 8] = [
    "large_valid_pretty",
    "large_valid_compact",
    "large_fence_prose",
    "large_comments_trailing_commas",
    "large_python_repr",
    "large_truncated",
    "large_raw_newlines",
    "large_ndjson",
];

/// Every large case: the corpus's own three, then five derived from each of their values.
pub(crate) fn large_cases(corpus_dir: &Path) -> Vec<LargeCase> {
    let path = corpus_dir.join("public-large.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let originals: Vec<(String, String, Value)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let case: Value = serde_json::from_str(line).unwrap();
            (
                case["category"].as_str().unwrap().to_owned(),
                case["input"].as_str().unwrap().to_owned(),
                case["expected"].clone(),
            )
        })
        .collect();
    let mut cases = Vec::new();
    for (category, input, expected) in &originals {
        let category = CATEGORIES.iter().find(|c| *c == category).unwrap();
        cases.push(LargeCase { category, input: input.clone(), expected: expected.clone() });
    }
    for (_, _, value) in &originals {
        cases.extend(derived(value));
    }
    cases
}

/// The five broken forms of `value`.
fn derived(value: &Value) -> Vec<LargeCase> {
    let (truncated, truncated_value) = truncated(value);
    vec![
        LargeCase { category: CATEGORIES[3], input: styled(value, Style::CommentsTrailing), expected: value.clone() },
        LargeCase { category: CATEGORIES[4], input: styled(value, Style::Python), expected: value.clone() },
        LargeCase { category: CATEGORIES[5], input: truncated, expected: truncated_value },
        LargeCase { category: CATEGORIES[6], input: styled(value, Style::RawNewlines), expected: value.clone() },
        ndjson(value),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Pretty JSON with a trailing comma in every non-empty container, a `//` comment line before
    /// every third member and a `/* */` comment after every fifth element.
    CommentsTrailing,
    /// Python's `repr` of the value: one line, single quotes (double when the string holds a
    /// single quote and no double one), `True`/`False`/`None`.
    Python,
    /// Pretty JSON with newlines and tabs inside strings written raw.
    RawNewlines,
}

fn styled(value: &Value, style: Style) -> String {
    let mut out = String::new();
    write_value(&mut out, value, style, 0);
    out.push('\n');
    out
}

fn newline(out: &mut String, style: Style, indent: usize) {
    if style != Style::Python {
        out.push('\n');
        out.push_str(&"  ".repeat(indent));
    }
}

fn write_value(out: &mut String, value: &Value, style: Style, indent: usize) {
    match value {
        Value::Null => out.push_str(if style == Style::Python { "None" } else { "null" }),
        Value::Bool(b) => out.push_str(match (style, b) {
            (Style::Python, true) => "True",
            (Style::Python, false) => "False",
            (_, true) => "true",
            (_, false) => "false",
        }),
        Value::Number(n) => write!(out, "{n}").unwrap(),
        Value::String(s) => write_string(out, s, style),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                newline(out, style, indent + 1);
                write_value(out, item, style, indent + 1);
                write_separator(out, style, i + 1 == items.len());
                if style == Style::CommentsTrailing && i % 5 == 0 && !item.is_object() && !item.is_array() {
                    out.push_str(" /* note */");
                }
            }
            if !items.is_empty() {
                newline(out, style, indent);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if style == Style::CommentsTrailing && i % 3 == 0 {
                    newline(out, style, indent + 1);
                    write!(out, "// member {i}").unwrap();
                }
                newline(out, style, indent + 1);
                write_string(out, key, style);
                out.push_str(": ");
                write_value(out, item, style, indent + 1);
                write_separator(out, style, i + 1 == map.len());
            }
            if !map.is_empty() {
                newline(out, style, indent);
            }
            out.push('}');
        }
    }
}

/// The comma after an element or member: always in the comments style (trailing too), between
/// items in the others.
fn write_separator(out: &mut String, style: Style, last: bool) {
    if !last {
        out.push_str(if style == Style::Python { ", " } else { "," });
    } else if style == Style::CommentsTrailing {
        out.push(',');
    }
}

fn write_string(out: &mut String, s: &str, style: Style) {
    // Python quotes with `"` only when the string holds a `'` and no `"`.
    let python_double = s.contains('\'') && !s.contains('"');
    let quote = if style == Style::Python && !python_double { '\'' } else { '"' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' | '\t' if style == Style::RawNewlines => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if u32::from(c) < 0x20 => write!(out, "\\u{:04x}", u32::from(c)).unwrap(),
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// The pretty JSON of `value` cut inside a string value at about 90% of its length, and what it
/// means: the complete members before the cut and the cut string's partial text.
fn truncated(value: &Value) -> (String, Value) {
    let pretty = serde_json::to_string_pretty(value).unwrap();
    let b = pretty.as_bytes();
    let mut at = pretty.len() * 9 / 10;
    let cut = loop {
        let off = pretty[at..].find(": \"").expect("a string value after 90%");
        let open = at + off + 3;
        // Keep up to six characters of the string, stopping before an escape or its end.
        let run: usize =
            pretty[open..].chars().take_while(|&c| c != '\\' && c != '"').take(6).map(char::len_utf8).sum();
        if run > 0 {
            break open + run;
        }
        at = open;
    };
    let input = pretty[..cut].to_owned();
    // What it means: close the string and every open container, then parse.
    let mut closers = Vec::new();
    let mut in_string = false;
    let mut i = 0;
    while i < b.len().min(cut) {
        match (in_string, b[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'{') => closers.push('}'),
            (false, b'[') => closers.push(']'),
            (false, b'}' | b']') => {
                closers.pop();
            }
            _ => {}
        }
        i += 1;
    }
    assert!(in_string, "the cut is inside a string");
    let closed = format!("{input}\"{}", closers.iter().rev().collect::<String>());
    (input, serde_json::from_str(&closed).unwrap())
}

/// The value's records (the array under `records`), one compact JSON document per line; they
/// mean the array of records.
fn ndjson(value: &Value) -> LargeCase {
    let records = value["records"].as_array().expect("records");
    let mut input = String::new();
    for record in records {
        input.push_str(&serde_json::to_string(record).unwrap());
        input.push('\n');
    }
    LargeCase { category: CATEGORIES[7], input, expected: Value::Array(records.clone()) }
}
