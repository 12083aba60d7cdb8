#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! Properties: valid JSON passes unchanged; no input makes the engine panic; every prefix of a
//! document has a partial value.

use keel_repair::{Repairer, partial};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
        "[a-z \"'\\\\/{}\\[\\],:#\\n\\t.]{0,20}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON document as models produce them: an object or an array at the top.
fn document() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(value(), 0..6).prop_map(Value::Array),
        prop::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,10}", value()), 0..6)
            .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn valid_json_passes_unchanged(doc in document()) {
        let repairer = Repairer::new();
        for text in [serde_json::to_string(&doc).unwrap(), serde_json::to_string_pretty(&doc).unwrap()] {
            let repaired = repairer.repair(&text, None).unwrap();
            prop_assert_eq!(repaired.value(), &doc);
            prop_assert!(repaired.report().is_clean(), "{}", repaired.report());
            let reparsed: Value = serde_json::from_str(repaired.text()).unwrap();
            prop_assert_eq!(&reparsed, &doc);
        }
    }

    #[test]
    fn valid_json_in_a_fence_with_prose_is_the_value(doc in document()) {
        let text = format!("Here you go:\n\n```json\n{}\n```\nAnything else?", serde_json::to_string_pretty(&doc).unwrap());
        let repaired = Repairer::new().repair(&text, None);
        // An empty container in prose is refused; anything else is found.
        if let Ok(repaired) = repaired {
            prop_assert_eq!(repaired.value(), &doc);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let repairer = Repairer::new();
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]});
        let _ = repairer.repair_bytes(&bytes, None);
        let _ = repairer.repair_bytes(&bytes, Some(&schema));
        let _ = partial(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn json_like_text_never_panics(text in "[{}\\[\\]\"'“”‘’`,:a-zA-Z0-9 \\n\\t.\\\\/*#+\\-…\u{a0}\u{200b}<>]{0,300}") {
        let repairer = Repairer::new();
        let schema = json!({"type": "array", "items": {"type": "object", "additionalProperties": false,
            "properties": {"a": {"type": "number"}, "b": {"enum": ["x", "y"]}}}});
        if let Ok(repaired) = repairer.repair(&text, None) {
            // Whatever comes out is strict JSON.
            prop_assert!(serde_json::from_str::<Value>(repaired.text()).is_ok());
        }
        if let Ok(repaired) = repairer.repair(&text, Some(&schema)) {
            prop_assert!(serde_json::from_str::<Value>(repaired.text()).is_ok());
        }
        let _ = partial(&text);
    }

    #[test]
    fn every_prefix_has_a_partial_value(doc in document()) {
        let text = serde_json::to_string(&doc).unwrap();
        for (cut, _) in text.char_indices().skip(1) {
            let prefix = &text[..cut];
            let value = partial(prefix);
            prop_assert!(value.is_some(), "no partial value for {:?}", prefix);
            let value = value.unwrap();
            prop_assert_eq!(value.is_object(), doc.is_object());
        }
        prop_assert_eq!(partial(&text), Some(doc));
    }
}

#[test]
fn pathological_inputs_finish() {
    let repairer = Repairer::new();
    for text in [
        "[".repeat(200_000),
        "{".repeat(200_000),
        "{\"a\":".repeat(50_000),
        "\"".repeat(100_000),
        "{\"a\": \"".to_owned() + &"\" ".repeat(100_000),
        "Hello {x} ".repeat(20_000),
        "[1, ".repeat(50_000),
        "{a: 1 b: 2 ".repeat(20_000),
        "<think>".repeat(20_000),
        "```".repeat(20_000),
        "{\\\"a\\\": ".repeat(20_000),
    ] {
        let start = std::time::Instant::now();
        let _ = repairer.repair(&text, None);
        let _ = partial(&text);
        // Not a timing assertion: a quadratic blow-up on these inputs would take minutes.
        let _ = start.elapsed();
    }
}
