//! `keel repair` on deeply nested input: valid JSON within the depth limit is printed unchanged,
//! deeper input is refused with the depth as the reason (also in `--jsonl`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::io::Write as _;
use std::process::{Command, Stdio};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Runs `keel args…` with `input` on stdin.
fn keel(args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(KEEL)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn objects(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn mixed(depth: usize) -> String {
    format!("{}true{}", "{\"a\": [".repeat(depth / 2), "]}".repeat(depth / 2))
}

#[test]
fn valid_deep_json_is_printed_unchanged() {
    for text in [objects(1000), mixed(1000), format!("{}{}", "[".repeat(1000), "]".repeat(1000))] {
        let out = keel(&["repair"], &text);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{text}\n"));
    }
}

#[test]
fn too_deep_input_is_refused_with_the_depth() {
    for text in [objects(20_000), mixed(20_000), "[".repeat(20_000)] {
        let out = keel(&["repair"], &text);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty(), "printed something for too deep input");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains("nested deeper than 10000 levels; keel does not repair JSON this deep"), "{stderr}");
    }
    // Within 10,000 but past what keel builds values for: refused, never changed.
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, r#"{"type": "object"}"#).unwrap();
    for args in [&["repair", "--pretty"][..], &["repair", "--schema", schema.to_str().unwrap()][..]] {
        let out = keel(args, &objects(1000));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains("nested deeper than 127 levels"), "{args:?}: {stderr}");
    }
}

#[test]
fn jsonl_carries_the_depth_reason() {
    let cases = [("ok", objects(1000)), ("deep", objects(20_000))]
        .map(|(id, input)| serde_json::json!({"id": id, "input": input}).to_string())
        .join("\n");
    let out = keel(&["repair", "--jsonl"], &cases);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["output"], serde_json::json!(objects(1000)));
    assert_eq!(lines[0]["error"], serde_json::Value::Null);
    assert_eq!(lines[1]["id"], "deep");
    assert_eq!(lines[1]["output"], serde_json::Value::Null);
    assert_eq!(lines[1]["error"], "nested deeper than 10000 levels; keel does not repair JSON this deep");
}
