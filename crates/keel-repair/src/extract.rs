//! Finding the JSON in a model's output: think blocks, code fences, prose around the value,
//! several fragments, a document escaped once.
//!
//! The output is cut into *regions* (the text outside `<think>` blocks, split at code fences);
//! each region is scanned for fragments that start with `{` or `[` and parse with the tolerant
//! parser; fragments separated only by whitespace, commas or stray closers form a *run* (several
//! values → one array). Every run is a [`Choice`]; the caller picks one (by schema fitness when it
//! has a schema, else the first: json fences first, then the largest).

use std::ops::Range;

use serde_json::Value;

use crate::error::RepairError;
use crate::parser::{self, unicode_space_len};
use crate::report::{FixLog, Strategy};
use crate::strict::{self, Strict};
use crate::{MAX_DEPTH, MAX_VALUE_DEPTH};

/// Preference of a region: a json (or unlabeled) code fence, plain text, a fence of another
/// language.
const TIER_JSON_FENCE: u8 = 3;
const TIER_PLAIN: u8 = 2;
const TIER_OTHER_FENCE: u8 = 1;

/// A chosen value: a slice of the input that is already strict JSON (parsed only when someone
/// needs the value), or a value the repair built.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// `text[start..end]` is strict JSON, nested `depth` containers deep.
    Text {
        start: usize,
        end: usize,
        depth: usize,
    },
    /// A repaired value as compact JSON, exactly as `serde_json` serializes it (parsed only when
    /// someone needs the value).
    Json(String),
    Value(Value),
}

impl Content {
    /// The value (parsing the slice when the content is text). Text nested deeper than
    /// [`MAX_VALUE_DEPTH`] is refused: its value is never built (parsing, dropping and
    /// serializing a `Value` recurse once per level).
    pub(crate) fn into_value(self, text: &str) -> Result<Value, RepairError> {
        match self {
            Self::Value(value) => Ok(value),
            Self::Json(json) => Ok(serde_json::from_str(&json).unwrap_or(Value::Null)),
            Self::Text { depth, .. } if depth > MAX_VALUE_DEPTH => Err(too_deep_to_build()),
            Self::Text { start, end, .. } => {
                Ok(serde_json::from_str(text.get(start..end).unwrap_or("null")).unwrap_or(Value::Null))
            }
        }
    }

    /// Is it an object or an array?
    fn is_container(&self, text: &str) -> bool {
        match self {
            Self::Value(value) => value.is_object() || value.is_array(),
            Self::Json(json) => matches!(json.as_bytes().first(), Some(b'{' | b'[')),
            Self::Text { start, .. } => matches!(text.as_bytes().get(*start), Some(b'{' | b'[')),
        }
    }

    /// Does the value hold any data (a member, an element, a string)? See [`has_substance`].
    fn has_substance(&self) -> bool {
        match self {
            Self::Value(value) => has_substance(value),
            // Compact JSON holds a quote exactly when it holds a string or a member (a non-empty
            // object starts `{"`).
            Self::Json(json) => memchr::memchr(b'"', json.as_bytes()).is_some(),
            Self::Text { .. } => true,
        }
    }

    fn materialize(&mut self, text: &str) -> Result<(), RepairError> {
        if let Self::Text { .. } = self {
            let value = std::mem::replace(self, Self::Value(Value::Null)).into_value(text)?;
            *self = Self::Value(value);
        }
        Ok(())
    }
}

/// One value the output could mean.
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) content: Content,
    /// The output was cut off inside this value.
    pub(crate) truncated: bool,
    /// Every fix that produced it (extraction and syntax).
    pub(crate) log: FixLog,
    pub(crate) tier: u8,
    /// Bytes of input it spans.
    pub(crate) size: usize,
    pub(crate) start: usize,
    /// A single element of a run of several values (only offered when asked for).
    pub(crate) individual: bool,
}

/// How to extract.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// A schema will judge the choices: also offer each value of a multi-value run on its own,
    /// and keep data-less fragments found in prose.
    pub(crate) individuals: bool,
    /// Streaming: keep a truncated value even when nothing in it is complete yet.
    pub(crate) partial: bool,
}

/// The choices in order of preference, best first; an error when there is nothing to choose.
pub(crate) fn extract(text: &str, opts: Options) -> Result<Vec<Choice>, RepairError> {
    extract_at_depth(text, opts, 0)
}

/// Nested deeper than keel reads at all.
const fn too_deep() -> RepairError {
    RepairError::TooDeep { limit: MAX_DEPTH }
}

/// Nested deeper than the values keel builds (to repair, extract or schema-check).
const fn too_deep_to_build() -> RepairError {
    RepairError::TooDeep { limit: MAX_VALUE_DEPTH }
}

fn is_space_char(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{feff}' | '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}')
}

fn extract_at_depth(text: &str, opts: Options, depth: u8) -> Result<Vec<Choice>, RepairError> {
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.trim_matches(is_space_char).is_empty() {
        return Err(RepairError::Empty);
    }
    let start = trimmed.as_ptr() as usize - text.as_ptr() as usize;
    // Fast path: the whole output is JSON. Output that does not end like JSON (cut off, prose
    // after it) is not read for it here.
    let read_whole = strict::may_end_document(trimmed.as_bytes());
    if read_whole {
        match strict::check(trimmed.as_bytes()) {
            Strict::Json { depth: nesting } => {
                return Ok(vec![whole(text, start, trimmed.len(), nesting, opts, depth)?]);
            }
            Strict::TooDeep => return Err(too_deep()),
            Strict::NotJson => {}
        }
    }
    let mut head = FixLog::default();
    let spans = visible_spans(text, &mut head);
    let regions = regions(text, &spans);
    let found = extract_regions(text, opts, depth, &head, &regions);
    // Not read whole: the output's nesting was not checked against `MAX_DEPTH`. Repairing reads
    // the same containers and stops deeper than `MAX_VALUE_DEPTH`; only then, or when fences or
    // think blocks split the output (a split may leave a shallow piece), is it read whole to
    // refuse as before what is nested deeper than `MAX_DEPTH`.
    let split = !matches!(regions.as_slice(), [r] if r.start <= start && r.end >= start + trimmed.len());
    let deep = matches!(found, Err(RepairError::TooDeep { .. }));
    if !read_whole && (deep || split) && strict::check(trimmed.as_bytes()) == Strict::TooDeep {
        return Err(too_deep());
    }
    found
}

/// The choices found in `regions` of `text`.
fn extract_regions(
    text: &str,
    opts: Options,
    depth: u8,
    head: &FixLog,
    regions: &[Region],
) -> Result<Vec<Choice>, RepairError> {
    let mut choices = Vec::new();
    let mut individuals = Vec::new();
    let mut failed = 0usize;
    let mut any_content = false;
    let filled = |r: &Region| !text.get(r.start..r.end).unwrap_or("").trim_matches(is_space_char).is_empty();
    let filled_count = regions.iter().filter(|r| filled(r)).count();
    for region in regions {
        let is_filled = filled(region);
        any_content |= is_filled;
        // Text in other regions (prose around a fence, another code block) is dropped too.
        let prose_outside = filled_count > usize::from(is_filled);
        scan_region(text, region, opts, head, prose_outside, &mut choices, &mut individuals, &mut failed)?;
    }
    if choices.is_empty() && depth == 0 {
        // A document escaped once: `{\"a\": 1}`.
        for region in regions {
            let body = text.get(region.start..region.end).unwrap_or("");
            if memchr::memmem::find(body.as_bytes(), b"\\\"").is_none() {
                continue;
            }
            let unescaped = unescape_once(body);
            let found = extract_at_depth(&unescaped, opts, depth + 1);
            if let Err(err @ RepairError::TooDeep { .. }) = found {
                return Err(err);
            }
            if let Ok(found) = found {
                for mut choice in found {
                    choice.content.materialize(&unescaped)?;
                    choice.log.shift(region.start);
                    let mut log = head.clone();
                    log.push(Strategy::EscapedJson, region.start);
                    log.append(choice.log);
                    choice.log = log;
                    choice.start += region.start;
                    choice.tier = choice.tier.min(region.tier);
                    if choice.individual {
                        individuals.push(choice);
                    } else {
                        choices.push(choice);
                    }
                }
                break;
            }
        }
    }
    if choices.is_empty() {
        return Err(if failed > 0 {
            RepairError::NotJson { fragments: failed }
        } else if any_content {
            RepairError::NoJson
        } else {
            RepairError::Empty
        });
    }
    let rank = |c: &Choice| (c.tier, c.size, c.start);
    choices.sort_by_key(|c| std::cmp::Reverse(rank(c)));
    individuals.sort_by_key(|c| std::cmp::Reverse(rank(c)));
    choices.extend(individuals);
    Ok(choices)
}

/// The whole output, strict JSON nested `nesting` deep. A JSON string holding a document is that
/// document.
fn whole(
    text: &str,
    start: usize,
    size: usize,
    nesting: usize,
    opts: Options,
    depth: u8,
) -> Result<Choice, RepairError> {
    let content = Content::Text { start, end: start + size, depth: nesting };
    if depth == 0
        && text.as_bytes().get(start) == Some(&b'"')
        && let Ok(Value::String(inner)) = content.clone().into_value(text)
    {
        let t = inner.trim_start();
        let found = if t.starts_with('{') || t.starts_with('[') {
            extract_at_depth(&inner, opts, depth + 1)
        } else {
            Err(RepairError::NoJson)
        };
        if let Err(err @ RepairError::TooDeep { .. }) = found {
            return Err(err);
        }
        if let Ok(found) = found
            && let Some(mut first) = found.into_iter().next()
        {
            first.content.materialize(&inner)?;
            if !first.content.is_container(&inner) {
                return Ok(plain(content, start, size));
            }
            let mut log = FixLog::default();
            log.push(Strategy::StringifiedDocument, start);
            first.log.shift(start);
            log.append(first.log);
            first.log = log;
            first.start = start;
            first.size = size;
            return Ok(first);
        }
    }
    Ok(plain(content, start, size))
}

fn plain(content: Content, start: usize, size: usize) -> Choice {
    Choice { content, truncated: false, log: FixLog::default(), tier: TIER_PLAIN, size, start, individual: false }
}

/// The parts of the text outside `<think>…</think>` (also `<thinking>`, `<reasoning>`). An
/// unclosed block runs to the end; a closing tag with no opening one hides everything before it.
fn visible_spans(text: &str, log: &mut FixLog) -> Vec<(usize, usize)> {
    const NAMES: [&[u8]; 3] = [b"think", b"thinking", b"reasoning"];
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut from = 0usize;
    let mut inside = false;
    let mut at = 0usize;
    while let Some(off) = memchr::memchr(b'<', b.get(at..).unwrap_or(&[])) {
        let i = at + off;
        at = i + 1;
        let closing = b.get(i + 1) == Some(&b'/');
        let name_at = if closing { i + 2 } else { i + 1 };
        let Some(len) = NAMES.iter().find_map(|name| {
            let candidate = b.get(name_at..name_at + name.len())?;
            (candidate.eq_ignore_ascii_case(name) && b.get(name_at + name.len()) == Some(&b'>')).then_some(name.len())
        }) else {
            continue;
        };
        let tag_end = name_at + len + 1;
        if closing {
            if inside {
                inside = false;
            } else {
                // `</think>` without `<think>`: the template opened the block.
                spans.clear();
                log.push(Strategy::ThinkBlock, 0);
            }
            from = tag_end;
        } else if !inside {
            spans.push((from, i));
            inside = true;
            log.push(Strategy::ThinkBlock, i);
        }
        at = tag_end;
    }
    if !inside {
        spans.push((from, b.len()));
    }
    spans
}

#[derive(Debug, Clone, Copy)]
struct Region {
    start: usize,
    end: usize,
    tier: u8,
    fence: bool,
}

/// Splits the visible spans at code fences (``` or ~~~).
fn regions(text: &str, spans: &[(usize, usize)]) -> Vec<Region> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for &(span_start, span_end) in spans {
        let mut i = span_start;
        while let Some(open) = find_fence(b, i, span_end, span_start, true) {
            out.push(Region { start: i, end: open.at, tier: TIER_PLAIN, fence: false });
            // Info string: the language.
            let mut p = open.at + 3;
            while b.get(p) == Some(&open.marker) {
                p += 1;
            }
            let lang_start = p;
            while p < span_end && b.get(p).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'-'))
            {
                p += 1;
            }
            let lang = text.get(lang_start..p).unwrap_or("").to_ascii_lowercase();
            // The body starts on the next line, or right away when the fence is inline.
            let mut q = p;
            while q < span_end && matches!(b.get(q), Some(b' ' | b'\t' | b'\r')) {
                q += 1;
            }
            let body_start = if b.get(q) == Some(&b'\n') { q + 1 } else { q };
            let tier = match lang.as_str() {
                "" | "json" | "jsonc" | "json5" | "jsonl" | "ndjson" | "js" | "javascript" => TIER_JSON_FENCE,
                _ => TIER_OTHER_FENCE,
            };
            let close = find_fence(b, body_start, span_end, span_start, false).filter(|c| c.marker == open.marker);
            let body_end = close.map_or(span_end, |c| c.at);
            out.push(Region { start: body_start.min(body_end), end: body_end, tier, fence: true });
            i = match close {
                Some(c) => {
                    let mut e = c.at;
                    while b.get(e) == Some(&c.marker) {
                        e += 1;
                    }
                    e
                }
                None => span_end,
            };
        }
        out.push(Region { start: i, end: span_end, tier: TIER_PLAIN, fence: false });
    }
    out.retain(|r| r.start < r.end || r.fence);
    out
}

#[derive(Debug, Clone, Copy)]
struct FenceMark {
    at: usize,
    marker: u8,
}

/// The next ``` or ~~~ in `b[from..to]`: at a line start, or (for an opening fence) anywhere when
/// followed by `json`. A closing fence not at a line start is accepted when no other is found.
fn find_fence(b: &[u8], from: usize, to: usize, line_floor: usize, opening: bool) -> Option<FenceMark> {
    let mut at = from;
    let mut loose = None;
    while at < to {
        let off = memchr::memchr2(b'`', b'~', b.get(at..to)?)?;
        let i = at + off;
        let Some(&marker) = b.get(i) else { return loose };
        if b.get(i + 1) != Some(&marker) || b.get(i + 2) != Some(&marker) || i + 3 > to {
            at = i + 1;
            continue;
        }
        let mut k = i;
        while k > line_floor && matches!(b.get(k - 1), Some(b' ' | b'\t')) {
            k -= 1;
        }
        let line_start = k == line_floor || b.get(k - 1) == Some(&b'\n');
        if line_start {
            return Some(FenceMark { at: i, marker });
        }
        if opening {
            let info = b.get(i + 3..(i + 7).min(to)).unwrap_or(&[]);
            if info.eq_ignore_ascii_case(b"json") {
                return Some(FenceMark { at: i, marker });
            }
        } else if loose.is_none() {
            loose = Some(FenceMark { at: i, marker });
        }
        let mut e = i;
        while b.get(e) == Some(&marker) {
            e += 1;
        }
        at = e;
    }
    loose
}

/// What a candidate holds.
#[derive(Debug, Clone)]
enum Piece {
    /// `text[start..end]` is strict JSON, nested `depth` containers deep.
    Text { start: usize, end: usize, depth: usize },
    /// A fragment's compact JSON in the region's scratch text.
    Json(Range<usize>),
}

impl Piece {
    /// As a choice's content, copied out of `scratch`.
    fn content(&self, scratch: &parser::Scratch) -> Content {
        match self {
            Self::Text { start, end, depth } => Content::Text { start: *start, end: *end, depth: *depth },
            Self::Json(range) => Content::Json(scratch.json(range.clone()).to_owned()),
        }
    }

    /// As a choice's content, taking the scratch text when it holds only this.
    fn into_content(self, scratch: &mut parser::Scratch) -> Content {
        match self {
            Self::Json(range) => Content::Json(scratch.take_json(range)),
            text => text.content(scratch),
        }
    }
}

/// One parsed fragment in a region.
#[derive(Debug)]
struct Candidate {
    piece: Piece,
    start: usize,
    end: usize,
    truncated: bool,
    /// What was fixed, boxed and only when something was: a region may hold thousands of
    /// candidates (NDJSON), most with nothing fixed.
    log: Option<Box<FixLog>>,
}

impl Candidate {
    /// Its fixes, taken out (an empty log when nothing was fixed).
    fn take_log(&mut self) -> FixLog {
        self.log.take().map_or_else(FixLog::default, |log| *log)
    }
}

/// Consecutive candidates separated only by separators: `candidates[from..to]`.
struct Run {
    from: usize,
    to: usize,
    /// Stray closers stood between two of its values.
    closers_between: bool,
}

/// Is `gap` (text between two fragments, or after the last) only separators? Returns
/// `Some(had_closers)` when it is.
fn separator_gap(gap: &[u8]) -> Option<bool> {
    let mut i = 0;
    let mut closers = false;
    while i < gap.len() {
        match gap.get(i) {
            Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b';') => i += 1,
            Some(b'}' | b']') => {
                closers = true;
                i += 1;
            }
            Some(b'/') if gap.get(i + 1) == Some(&b'/') => {
                i = memchr::memchr(b'\n', gap.get(i..)?).map_or(gap.len(), |o| i + o + 1);
            }
            Some(b'/') if gap.get(i + 1) == Some(&b'*') => {
                i = memchr::memmem::find(gap.get(i + 2..)?, b"*/").map_or(gap.len(), |o| i + 2 + o + 2);
            }
            Some(b'#') => {
                i = memchr::memchr(b'\n', gap.get(i..)?).map_or(gap.len(), |o| i + o + 1);
            }
            _ => {
                let len = unicode_space_len(gap, i);
                if len == 0 {
                    return None;
                }
                i += len;
            }
        }
    }
    Some(closers)
}

/// Where the bracket structure that opens at `start` closes (brackets in strings are counted
/// too: this only has to be roughly right), or `end`.
fn structure_end(b: &[u8], start: usize, end: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < end {
        match b.get(i) {
            Some(b'{' | b'[') => depth += 1,
            Some(b'}' | b']') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            None => break,
            _ => {}
        }
        i += 1;
    }
    end
}

/// Does the text before `at` on the same line end like a CSS selector or a code header
/// (`.rule {`, `body {`, `if (x) {`) rather than like prose introducing a value (`Here: {`)?
fn after_selector(b: &[u8], floor: usize, at: usize) -> bool {
    let mut i = at;
    while i > floor && matches!(b.get(i - 1), Some(b' ' | b'\t')) {
        i -= 1;
    }
    i > floor && b.get(i - 1).is_some_and(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b')' | b']'))
}

/// Does the value hold any data (a member, an element, a string)? Used to refuse bracket pairs
/// in prose that hold nothing a reader would call data (`[1]`, `[ ]`).
fn has_substance(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::String(_) => true,
        Value::Array(items) => items.iter().any(has_substance),
        _ => false,
    }
}

#[allow(clippy::too_many_arguments, reason = "one call site; the state is the caller's")]
fn scan_region(
    text: &str,
    region: &Region,
    opts: Options,
    head: &FixLog,
    prose_outside: bool,
    choices: &mut Vec<Choice>,
    individuals: &mut Vec<Choice>,
    failed: &mut usize,
) -> Result<(), RepairError> {
    let b = text.as_bytes();
    let body = text.get(region.start..region.end).unwrap_or("");
    let trimmed = body.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Ok(());
    }
    let trimmed_start = region.start + (trimmed.as_ptr() as usize - body.as_ptr() as usize);
    let mut candidates = Vec::new();
    let mut scratch = parser::Scratch::default();
    // The whole output (trimmed) was checked already: it is not strict JSON.
    let whole_output = trimmed.len() == text.trim_matches(|c: char| c.is_ascii_whitespace()).len();
    let strict = if whole_output { Strict::NotJson } else { strict::check(trimmed.as_bytes()) };
    if strict == Strict::TooDeep {
        return Err(too_deep());
    }
    if let Strict::Json { depth } = strict {
        candidates.push(Candidate {
            piece: Piece::Text { start: trimmed_start, end: trimmed_start + trimmed.len(), depth },
            start: trimmed_start,
            end: trimmed_start + trimmed.len(),
            truncated: false,
            log: None,
        });
    } else {
        let mut pos = region.start;
        while pos < region.end {
            let Some(off) = memchr::memchr2(b'{', b'[', b.get(pos..region.end).unwrap_or(&[])) else { break };
            let p = pos + off;
            match parser::parse_fragment(text, p, region.end, &mut scratch) {
                Ok(fragment) => {
                    // The fragment is an object or an array, as compact JSON: `{}` and `[]` are
                    // the empty ones, and the others hold data.
                    let empty = fragment.json.len() == 2;
                    let acceptable = if fragment.truncated {
                        opts.partial || !empty
                    } else {
                        !(empty && fragment.log.total() > fragment.log.count(Strategy::UnicodeWhitespace))
                    };
                    if acceptable {
                        candidates.push(Candidate {
                            piece: Piece::Json(fragment.json),
                            start: p,
                            end: fragment.end,
                            truncated: fragment.truncated,
                            log: (!fragment.log.is_empty()).then(|| Box::new(fragment.log)),
                        });
                    } else {
                        scratch.drop_last(fragment.json);
                        *failed += 1;
                    }
                    pos = fragment.end.max(p + 1);
                }
                Err(fail) if fail.deep => return Err(too_deep_to_build()),
                Err(fail) => {
                    *failed += 1;
                    // A fragment that failed after reading values is a broken document: the
                    // fragments inside it are pieces, not answers, so skip to its end.
                    let resume = if fail.progress > 0 { structure_end(b, p, region.end) } else { fail.pos };
                    pos = resume.max(fail.pos).max(p + 1);
                }
            }
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }

    // Group fragments separated only by whitespace, commas or stray closers into runs.
    let mut runs: Vec<Run> = Vec::with_capacity(1);
    for (index, candidate) in candidates.iter().enumerate() {
        if let Some(run) = runs.last_mut()
            && let Some(last) = candidates.get(run.to - 1)
        {
            let gap = b.get(last.end..candidate.start).unwrap_or(&[]);
            if !last.truncated
                && let Some(closers) = separator_gap(gap)
            {
                run.closers_between |= closers;
                run.to = index + 1;
                continue;
            }
        }
        runs.push(Run { from: index, to: index + 1, closers_between: false });
    }

    let region_text = b.get(region.start..region.end).unwrap_or(&[]);
    let only_one_run = runs.len() == 1;
    for Run { from, to, closers_between } in runs {
        let Some(run) = candidates.get_mut(from..to) else { continue };
        let (Some(first), Some(last)) = (run.first(), run.last()) else { continue };
        let (run_start, run_end, truncated) = (first.start, last.end, last.truncated);
        let before = region_text.get(..run_start - region.start).unwrap_or(&[]);
        let after = region_text.get(run_end - region.start..).unwrap_or(&[]);
        let before_empty = separator_gap(before).is_some_and(|closers| !closers);
        let trailing = separator_gap(after);
        let prose = !only_one_run || !before_empty || trailing.is_none();
        let code_like = run.iter().any(|c| {
            c.log.as_ref().is_some_and(|log| log.count(Strategy::UnquotedKey) > 0)
                && !b.get(c.start..c.end).unwrap_or(&[]).iter().any(|&q| matches!(q, b'"' | b'\'' | 0xE2))
                && after_selector(b, region.start, c.start)
        });
        let count = run.len();
        let mut log = head.clone();
        if region.fence {
            log.push(Strategy::Fence, region.start);
        }
        if prose || prose_outside {
            log.push(Strategy::Prose, run_start);
        }
        if count > 1 {
            log.push(Strategy::Concatenated, run_start);
        }
        if closers_between || trailing == Some(true) {
            log.push(Strategy::ExtraClosing, run_end);
        }
        let mut own_choices = Vec::new();
        let mut content_of_run = if let [only] = run {
            log.append(only.take_log());
            only.piece.clone().into_content(&mut scratch)
        } else {
            let mut own_logs = Vec::new();
            for candidate in run.iter_mut() {
                let candidate_log = candidate.take_log();
                if opts.individuals {
                    let mut own = log.clone();
                    own.append(candidate_log.clone());
                    own_logs.push((own, candidate.start, candidate.end, candidate.truncated));
                }
                log.append(candidate_log);
            }
            own_choices.reserve(own_logs.len());
            for ((own, start, end, cut), candidate) in own_logs.into_iter().zip(run.iter()) {
                own_choices.push(Choice {
                    content: candidate.piece.content(&scratch),
                    truncated: cut,
                    log: own,
                    tier: region.tier,
                    size: end - start,
                    start,
                    individual: true,
                });
            }
            Content::Json(json_array(run, &scratch, text)?)
        };
        if prose {
            content_of_run.materialize(text)?;
        }
        let substance = content_of_run.has_substance();
        // A bare `[1]` or `{}` in prose is not an answer — unless a schema will judge it.
        if prose && !region.fence && !opts.partial && ((!substance && !opts.individuals) || code_like) {
            *failed += 1;
            continue;
        }
        individuals.extend(own_choices);
        choices.push(Choice {
            content: content_of_run,
            truncated,
            log,
            tier: region.tier,
            size: run_end - run_start,
            start: run_start,
            individual: false,
        });
    }
    Ok(())
}

/// The values of a run as one JSON array, compact.
fn json_array(run: &[Candidate], scratch: &parser::Scratch, text: &str) -> Result<String, RepairError> {
    let size: usize = run.iter().map(|c| if let Piece::Json(item) = &c.piece { item.len() + 1 } else { 0 }).sum();
    let mut json = String::with_capacity(size + 2);
    json.push('[');
    for (i, candidate) in run.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        match &candidate.piece {
            Piece::Json(item) => json.push_str(scratch.json(item.clone())),
            other => {
                let value = other.content(scratch).into_value(text)?;
                json.push_str(&serde_json::to_string(&value).unwrap_or_default());
            }
        }
    }
    json.push(']');
    Ok(json)
}

/// Undoes one level of JSON string escaping (`\"` → `"`, `\\` → `\`, `\n` → newline, …).
pub(crate) fn unescape_once(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 4).and_then(char::from_u32) {
                    Some(ch) => {
                        for _ in 0..4 {
                            chars.next();
                        }
                        out.push(ch);
                    }
                    None => out.push_str("\\u"),
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn best(text: &str) -> Result<Value, RepairError> {
        extract(text, Options::default()).map(|c| c.into_iter().next().unwrap().content.into_value(text).unwrap())
    }

    #[test]
    fn think_blocks_are_hidden() {
        let mut log = FixLog::default();
        let spans = visible_spans("<think>{\"a\":1}</think>\n{\"b\":2}", &mut log);
        assert_eq!(spans, vec![(0, 0), (22, 30)]);
        assert_eq!(best("<think>x {\"rating\": 3}</think> {\"b\": 2}").unwrap(), json!({"b": 2}));
        assert_eq!(best("draft {\"a\": 1} </think> {\"b\": 2, \"c\": 3}").unwrap(), json!({"b": 2, "c": 3}));
        assert_eq!(best("<think>\n</think>\n\n"), Err(RepairError::Empty));
    }

    #[test]
    fn fences() {
        let text = "Intro\n```sql\nSELECT {a} FROM t;\n```\nAnd:\n```json\n{\"a\": 1}\n```\nBye";
        assert_eq!(best(text).unwrap(), json!({"a": 1}));
        assert_eq!(best("```json\n\n```\n"), Err(RepairError::Empty));
        assert_eq!(best("~~~json\n[1, 2]\n~~~").unwrap(), json!([1, 2]));
        assert_eq!(best("```json\n{\"a\": [1, 2").unwrap(), json!({"a": [1, 2]}));
    }

    #[test]
    fn runs_become_arrays() {
        assert_eq!(best("{\"a\":1}\n{\"a\":2}").unwrap(), json!([{"a": 1}, {"a": 2}]));
        assert_eq!(best("{\"a\":1}, {\"a\":2}").unwrap(), json!([{"a": 1}, {"a": 2}]));
        assert_eq!(best("{\"a\":1}\n}\n}").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn prose() {
        assert_eq!(best("Sorry, I can't do that."), Err(RepairError::NoJson));
        assert_eq!(best("Hello {first_name}, thanks."), Err(RepairError::NotJson { fragments: 1 }));
        assert!(best("See [1] and [2].").is_err());
        assert_eq!(best("Here: {\"a\": 1} (copied)").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn escaped_once() {
        assert_eq!(best(r#"{\"a\": \"x\\ny\"}"#).unwrap(), json!({"a": "x\ny"}));
        assert_eq!(best(r#""{\"a\": 1}""#).unwrap(), json!({"a": 1}));
    }
}
