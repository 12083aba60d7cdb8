#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! Deep nesting is never silently changed: strict JSON up to `MAX_DEPTH` levels comes back byte
//! for byte; deeper output — or output that needs a value deeper than `MAX_VALUE_DEPTH` — is
//! refused with the depth as the reason, never answered with a shallower piece of it; and no depth
//! overflows a thread's normal 2 MiB stack. Documents are built as text (never as a deep `Value`).

use keel_repair::{MAX_DEPTH, MAX_VALUE_DEPTH, RepairError, Repairer, partial};
use proptest::prelude::*;
use serde_json::json;

/// One level of nesting, as its opening and closing text.
#[derive(Debug, Clone, Copy)]
enum Level {
    /// `{"a":` … `}`
    Object,
    /// `{ "x": [1, null], "k" :` … `, "z": true }` (members before and after)
    ObjectAmong,
    /// `[` … `]`
    Array,
    /// `[ "s", ` … ` ,{}]` (elements before and after)
    ArrayAmong,
}

impl Level {
    const fn open(self) -> &'static str {
        match self {
            Self::Object => "{\"a\":",
            Self::ObjectAmong => "{ \"x\": [1, null], \"k\" :",
            Self::Array => "[",
            Self::ArrayAmong => "[ \"s\", ",
        }
    }

    const fn close(self) -> &'static str {
        match self {
            Self::Object => "}",
            Self::ObjectAmong => ", \"z\": true }",
            Self::Array => "]",
            Self::ArrayAmong => " ,{}]",
        }
    }
}

/// The document with `leaf` innermost; it is nested [`depth_of`] levels deep.
fn document(levels: &[Level], leaf: &str) -> String {
    let mut text = String::new();
    for level in levels {
        text.push_str(level.open());
    }
    text.push_str(leaf);
    for level in levels.iter().rev() {
        text.push_str(level.close());
    }
    text
}

/// How deep the document of `levels` nests: one per level, and one more when the innermost level
/// holds a container beside the leaf (`[1, null]` or `{}`), which sits a level below it.
fn depth_of(levels: &[Level]) -> usize {
    let beside_the_leaf = matches!(levels.last(), Some(Level::ObjectAmong | Level::ArrayAmong));
    levels.len() + usize::from(beside_the_leaf)
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::Object), Just(Level::ObjectAmong), Just(Level::Array), Just(Level::ArrayAmong)]
}

/// Nestings of one kind, or mixed, `depth` levels deep.
fn levels(depth: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<Level>> {
    prop_oneof![
        depth.clone().prop_map(|d| vec![Level::Object; d]),
        depth.clone().prop_map(|d| vec![Level::Array; d]),
        (depth.clone(), level()).prop_map(|(d, l)| vec![l; d]),
        depth.prop_flat_map(|d| prop::collection::vec(level(), d)),
    ]
}

fn leaf() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("1"), Just("\"}]\""), Just("null"), Just("-0.5e3"), Just("true")]
}

fn too_deep(limit: usize) -> RepairError {
    RepairError::TooDeep { limit }
}

/// Runs `f` in a thread with a normal 2 MiB stack (what a test or tokio worker thread has): a
/// stack overflow aborts the whole test binary, a panic fails the test.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Valid JSON at any depth up to the limit comes back as written, without a schema.
    #[test]
    fn valid_documents_pass_as_written(levels in levels(0..=MAX_DEPTH), leaf in leaf()) {
        let text = document(&levels, leaf);
        let depth = depth_of(&levels);
        let result = Repairer::new().repair(&text, None);
        if depth > MAX_DEPTH {
            prop_assert_eq!(result.unwrap_err(), too_deep(MAX_DEPTH));
            return Ok(());
        }
        let repaired = result.unwrap();
        prop_assert_eq!(repaired.text(), text.as_str());
        prop_assert_eq!(repaired.report().header_value(), "none");
        prop_assert_eq!(repaired.try_value().is_some(), depth <= MAX_VALUE_DEPTH);
        if depth <= MAX_VALUE_DEPTH {
            prop_assert_eq!(repaired.value(), &serde_json::from_str::<serde_json::Value>(&text).unwrap());
        }
    }

    /// Deeper than the limit: refused with the depth, whatever the kind of nesting.
    #[test]
    fn deeper_documents_are_refused(levels in levels(MAX_DEPTH + 1..=MAX_DEPTH + 3000), leaf in leaf()) {
        let text = document(&levels, leaf);
        let err = Repairer::new().repair(&text, None).unwrap_err();
        prop_assert_eq!(&err, &too_deep(MAX_DEPTH));
        prop_assert_eq!(err.kind(), "too_deep");
        prop_assert!(err.to_string().contains("nested deeper than 10000 levels"), "{}", err);
        // A broken one too (the nesting is read before the break).
        let broken = format!("{}]", &text[..text.len() - 1]);
        prop_assert_eq!(Repairer::new().repair(&broken, None).unwrap_err(), too_deep(MAX_DEPTH));
    }

    /// With a schema the value is built: valid JSON up to `MAX_VALUE_DEPTH` passes as written,
    /// deeper (still within `MAX_DEPTH`) is refused with that limit, never changed.
    #[test]
    fn with_a_schema(levels in levels(0..=MAX_VALUE_DEPTH + 200), leaf in leaf()) {
        let text = document(&levels, leaf);
        let result = Repairer::new().repair(&text, Some(&json!({})));
        if depth_of(&levels) <= MAX_VALUE_DEPTH {
            let repaired = result.unwrap();
            prop_assert_eq!(repaired.text(), text.as_str());
        } else {
            prop_assert_eq!(result.unwrap_err(), too_deep(MAX_VALUE_DEPTH));
        }
    }

    /// Output that needs repair or extraction is built into a value: within `MAX_VALUE_DEPTH` it is
    /// repaired to the same value; deeper it is refused, never answered with an inner piece.
    #[test]
    fn repairs_within_the_value_limit(levels in levels(1..=MAX_VALUE_DEPTH + 200), leaf in leaf()) {
        let text = document(&levels, leaf);
        let depth = depth_of(&levels);
        // The prose is around an object (a bare `[1]` in prose is not an answer), one level more.
        let in_prose = format!("Here it is: {{\"doc\": {text}}} — hope that helps");
        let trailing_comma = format!("{}, {}", &text[..text.len() - 1], &text[text.len() - 1..]);
        let truncated = text[..text.len() - 1].to_owned();
        let cases = [
            ("prose", in_prose, depth + 1, format!("{{\"doc\": {text}}}")),
            ("trailing comma", trailing_comma, depth, text.clone()),
            ("truncated", truncated, depth, text.clone()),
        ];
        for (name, input, depth, meant) in cases {
            let result = Repairer::new().repair(&input, None);
            if depth <= MAX_VALUE_DEPTH {
                let repaired = result.unwrap_or_else(|err| panic!("{name}: {err}"));
                prop_assert_eq!(
                    repaired.value(),
                    &serde_json::from_str::<serde_json::Value>(&meant).unwrap(),
                    "{}", name
                );
            } else {
                prop_assert_eq!(result.unwrap_err(), too_deep(MAX_VALUE_DEPTH), "{}", name);
            }
        }
    }
}

/// Exactly at the limits.
#[test]
fn the_limits_exactly() {
    let repairer = Repairer::new();
    for depth in [MAX_DEPTH - 1, MAX_DEPTH] {
        let text = document(&vec![Level::Array; depth], "");
        assert_eq!(repairer.repair(&text, None).unwrap().text(), text);
    }
    let text = document(&vec![Level::Array; MAX_DEPTH + 1], "");
    let err = repairer.repair(&text, None).unwrap_err();
    assert_eq!(err.to_string(), "nested deeper than 10000 levels; keel does not repair JSON this deep");
    let text = document(&[Level::Object; MAX_VALUE_DEPTH], "1");
    assert_eq!(repairer.repair(&text, Some(&json!({"type": "object"}))).unwrap().text(), text);
    let text = document(&[Level::Object; MAX_VALUE_DEPTH + 1], "1");
    let err = repairer.repair(&text, Some(&json!({"type": "object"}))).unwrap_err();
    assert_eq!(err.to_string(), "nested deeper than 127 levels; keel does not repair JSON this deep");
}

/// At the value limit with each kind of innermost level (an innermost `[ "s", … ,{}]` or
/// `{ "x": [1, null], … }` nests one level more than it opens): repaired at the limit, refused one
/// past it. CI once drew 126 objects around an innermost `ArrayAmong` and the test, counting 127,
/// expected a repair of what is 128 deep.
#[test]
fn the_value_limit_with_every_innermost_level() {
    let repairer = Repairer::new();
    for innermost in [Level::Object, Level::ObjectAmong, Level::Array, Level::ArrayAmong] {
        for outer in MAX_VALUE_DEPTH - 3..=MAX_VALUE_DEPTH {
            let mut levels = vec![Level::Object; outer];
            levels.push(innermost);
            let text = document(&levels, "true");
            let trailing_comma = format!("{}, {}", &text[..text.len() - 1], &text[text.len() - 1..]);
            let result = repairer.repair(&trailing_comma, None);
            if depth_of(&levels) <= MAX_VALUE_DEPTH {
                let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(result.unwrap().value(), &expected, "{innermost:?} inside {outer}");
            } else {
                assert_eq!(result.unwrap_err(), too_deep(MAX_VALUE_DEPTH), "{innermost:?} inside {outer}");
            }
        }
    }
}

/// 100,000 and 1,000,000 levels in every shape the pipeline reads: refused, no panic, no stack
/// overflow on a 2 MiB stack.
#[test]
fn huge_depths_on_a_normal_stack() {
    for depth in [100_000, 1_000_000] {
        on_small_stack(move || {
            let repairer = Repairer::new();
            let schema = json!({"type": "object", "required": ["a"]});
            let objects = document(&vec![Level::Object; depth], "1");
            let arrays = document(&vec![Level::Array; depth], "1");
            let mixed = document(&[Level::Object, Level::ArrayAmong].repeat(depth / 2), "1");
            for text in [objects, arrays, mixed] {
                assert_eq!(repairer.repair(&text, None).unwrap_err(), too_deep(MAX_DEPTH));
                assert_eq!(repairer.repair(&text, Some(&schema)).unwrap_err(), too_deep(MAX_DEPTH));
                let unclosed = &text[..text.len() / 2];
                assert!(matches!(repairer.repair(unclosed, None), Err(RepairError::TooDeep { .. })));
                let in_prose = format!("Sure! {text} Anything else?");
                assert_eq!(repairer.repair(&in_prose, None).unwrap_err(), too_deep(MAX_VALUE_DEPTH));
                let fenced = format!("```json\n{text}\n```");
                assert_eq!(repairer.repair(&fenced, None).unwrap_err(), too_deep(MAX_DEPTH));
                let stringified = serde_json::to_string(&text).unwrap();
                assert!(matches!(repairer.repair(&stringified, None), Err(RepairError::TooDeep { .. })));
                assert!(repairer.repair(stringified.trim_matches('"'), None).is_err());
                assert_eq!(partial(unclosed), None);
            }
        });
    }
}
