#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! The tolerant parser writes its output as compact JSON text directly, without building a
//! `Value`: that text must be exactly what `serde_json` writes for the value it means.

use keel_repair::Repairer;
use proptest::prelude::*;
use serde_json::Value;

/// Broken-JSON-ish text: brackets, quotes of every kind, escapes, control characters, numbers in
/// odd spellings, literals, comments, repeated keys.
fn broken() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"a\":".to_owned()),
        Just("'a':".to_owned()),
        Just("b: ".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("\u{201c}".to_owned()),
        Just("\\".to_owned()),
        Just("\\u00e9\\ud83d\\ude80\\u0001\\/\\b\\f".to_owned()),
        Just("\n\t\r\u{1}\u{7f}".to_owned()),
        Just("True None undefined NaN -Infinity".to_owned()),
        Just("// c\n".to_owned()),
        Just("/* c */".to_owned()),
        Just("...".to_owned()),
        "[-+]?[0-9]{0,20}(\\.[0-9]{0,20})?([eE][-+]?[0-9]{1,3})?",
        "[a-zé日 ]{0,6}",
    ];
    prop::collection::vec(piece, 1..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn repaired_text_is_what_serde_json_writes(text in broken()) {
        if let Ok(repaired) = Repairer::new().repair(&text, None) {
            let out = repaired.text();
            let value: Value = serde_json::from_str(out).unwrap();
            // Text passed as written (strict JSON, maybe inside prose or a fence) stays as is.
            prop_assert!(out == serde_json::to_string(&value).unwrap() || text.contains(out), "{out}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20000))]

    /// Numbers in every spelling, in a repaired array (the trailing comma needs the repair).
    #[test]
    fn repaired_numbers_are_what_serde_json_writes(
        number in "[-+]?(0|[0-9]{0,18})(\\.[0-9]{0,18})?([eE][-+]?[0-9]{1,3})?",
    ) {
        let text = format!("[{number}, {number},]");
        if let Ok(repaired) = Repairer::new().repair(&text, None) {
            let out = repaired.text();
            let value: Value = serde_json::from_str(out).unwrap();
            prop_assert_eq!(out, serde_json::to_string(&value).unwrap());
            if let Some(first) = value.get(0)
                && let Ok(exact) = number.trim_start_matches('+').parse::<f64>()
                && let Some(got) = first.as_f64()
            {
                prop_assert!(got == exact || !exact.is_finite(), "{number} read as {got}");
            }
        }
    }
}
