#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! keel repairs every large category of the throughput benchmark (`examples/compare.rs`) to the
//! value it means: the corpus's three large inputs and the five broken forms derived from them
//! (`support/large.rs`).

#[path = "support/large.rs"]
mod large;

use std::path::PathBuf;

use keel_repair::Repairer;
use serde_json::Value;

#[test]
fn every_large_category_is_repaired_to_its_value() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/repair-corpus");
    let cases = large::large_cases(&dir);
    assert_eq!(cases.len(), 3 + 3 * 5);
    let repairer = Repairer::new();
    for case in &cases {
        let repaired = repairer.repair(&case.input, None).unwrap_or_else(|err| panic!("{}: {err}", case.category));
        let output: Value = serde_json::from_str(repaired.text()).unwrap();
        // Equal as values (key order aside), numbers spelled alike: stricter than the scoring rule.
        assert!(output == case.expected, "{}: wrong value", case.category);
        assert_eq!(repaired.truncated(), case.category == "large_truncated", "{}", case.category);
    }
}

/// FNV-1a, 64 bits: a stable fingerprint of the outputs.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The output text and the report of every large case, as they were before the tolerant parser
/// was made faster (issue 15): the speed-ups change no byte of either.
#[test]
fn outputs_and_reports_are_unchanged() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/repair-corpus");
    let repairer = Repairer::new();
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for case in large::large_cases(&dir) {
        let repaired = repairer.repair(&case.input, None).unwrap();
        hash = fnv(hash, repaired.text().as_bytes());
        hash = fnv(hash, serde_json::to_string(repaired.report()).unwrap().as_bytes());
    }
    assert_eq!(hash, 0x712f_3c26_106e_0e04, "fingerprint {hash:#x}");
}

/// The same for every case of the public corpus (with its schema): output text and report, or
/// the refusal's message.
#[test]
fn public_corpus_outputs_are_unchanged() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/repair-corpus/public.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let repairer = Repairer::new();
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        match repairer.repair(case["input"].as_str().unwrap(), case.get("schema")) {
            Ok(repaired) => {
                hash = fnv(hash, repaired.text().as_bytes());
                hash = fnv(hash, serde_json::to_string(repaired.report()).unwrap().as_bytes());
            }
            Err(err) => hash = fnv(hash, err.to_string().as_bytes()),
        }
    }
    assert_eq!(hash, 0x9a26_ad89_c8d3_b8af, "fingerprint {hash:#x}");
}
