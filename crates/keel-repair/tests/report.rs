#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! The report format (what logs and metrics see), pinned with snapshots.

use keel_repair::{Repairer, Strategy};
use serde_json::json;

#[test]
fn syntax_report() {
    let raw = "<think>draft {\"a\": 0}</think>\nHere you go:\n```json\n{'name': 'Ada', tags: ['x',], ok: True, // checked\n \"n\": +1}\n```";
    let repaired = Repairer::new().repair(raw, None).unwrap();
    assert_eq!(repaired.value(), &json!({"name": "Ada", "tags": ["x"], "ok": true, "n": 1}));
    assert_eq!(repaired.report().header_value(), "extracted,fixed-syntax");
    insta::assert_json_snapshot!("syntax_report", repaired.report());
}

#[test]
fn schema_report() {
    let schema = json!({
        "type": "object",
        "properties": {
            "priority": {"type": "string", "enum": ["low", "high"]},
            "count": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "customer": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
        },
        "required": ["priority", "count"],
        "additionalProperties": false
    });
    let raw = r#"{"Priority": "HIGH", "count": "3", "tags": "vip", "customer": "{\"name\": \"Ada\"}", "meta": 1}"#;
    let repaired = Repairer::new().repair(raw, Some(&schema)).unwrap();
    assert_eq!(
        repaired.value(),
        &json!({"priority": "high", "count": 3, "tags": ["vip"], "customer": {"name": "Ada"}})
    );
    assert!(repaired.report().has(Strategy::KeyMatch));
    insta::assert_json_snapshot!("schema_report", repaired.report());
}

#[test]
fn truncated_report() {
    let repaired = Repairer::new().repair(r#"{"a": [1, 2], "b": "hel"#, None).unwrap();
    assert!(repaired.truncated());
    assert_eq!(repaired.text(), r#"{"a":[1,2],"b":"hel"}"#);
    insta::assert_json_snapshot!("truncated_report", repaired.report());
}

#[test]
fn refusals_say_why() {
    let repairer = Repairer::new();
    let schema = json!({"type": "object", "properties": {"n": {"type": "number", "default": 0}}, "required": ["n"]});
    let cases = [
        ("", None, "empty output"),
        ("Sorry, I can't do that.", None, "no JSON found"),
        ("Hello {first_name}, thanks.", None, "not JSON"),
        ("{}", Some(&schema), "missing required field \"n\""),
        (r#"{"n": "N/A"}"#, Some(&schema), "\"N/A\" at /n is not a number"),
        (r#"{"n": null}"#, Some(&schema), "null at /n"),
        (r#"{"m": 1, "n"#, Some(&schema), "cut off"),
    ];
    for (input, schema, why) in cases {
        let err = repairer.repair(input, schema).unwrap_err();
        assert!(err.to_string().contains(why), "{input:?}: {err}");
    }
}
