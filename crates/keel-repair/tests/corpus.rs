#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, reason = "test code")]
//! Scores the engine on the public repair corpus (`shared/repair-corpus/public.jsonl`) by the
//! corpus README's rules: the output must parse as strict JSON and equal `expected` as a value
//! (key order ignored, `1 == 1.0`, strings exact), or both must be null (refusal).

use std::collections::BTreeMap;
use std::path::PathBuf;

use keel_repair::Repairer;
use serde_json::Value;

/// Overall accuracy this crate must keep (just below what it reaches).
const ACCURACY_FLOOR: f64 = 0.99;

fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/repair-corpus/public.jsonl")
}

/// Value equality by the scoring rule.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn public_corpus_accuracy() {
    let path = corpus_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!("cannot read the repair corpus at {}: {err} (it lives in shared/ beside the repository)", path.display())
    });
    let repairer = Repairer::new();
    let mut per_category: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut invented = 0usize;
    let mut failures = Vec::new();
    let verbose = std::env::var_os("KEEL_CORPUS_VERBOSE").is_some();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let id = case["id"].as_str().unwrap().to_owned();
        let category = case["category"].as_str().unwrap().to_owned();
        let input = case["input"].as_str().unwrap();
        let expected = &case["expected"];
        let schema = case.get("schema");
        let result = repairer.repair(input, schema);
        let output: Option<Value> = result.as_ref().ok().map(|r| serde_json::from_str(r.text()).unwrap());
        let correct = match (&output, expected) {
            (None, Value::Null) => true,
            (Some(out), exp) if !exp.is_null() => same(out, exp),
            _ => false,
        };
        if expected.is_null() && output.is_some() {
            invented += 1;
        }
        let entry = per_category.entry(category.clone()).or_default();
        entry.1 += 1;
        if correct {
            entry.0 += 1;
        } else {
            let got = match &result {
                Ok(r) => r.text().to_owned(),
                Err(err) => format!("refused: {err}"),
            };
            failures.push(format!("{id} [{category}]\n  got:      {got}\n  expected: {expected}"));
        }
    }
    let (mut right, mut total) = (0, 0);
    println!("| category | correct | cases | accuracy |\n|---|---|---|---|");
    for (category, (ok, n)) in &per_category {
        right += ok;
        total += n;
        println!("| {category} | {ok} | {n} | {:.1}% |", 100.0 * *ok as f64 / *n as f64);
    }
    let accuracy = right as f64 / total as f64;
    println!("overall: {right}/{total} = {:.2}%", 100.0 * accuracy);
    println!("outputs produced on refuse cases: {invented}");
    if verbose {
        for failure in &failures {
            println!("{failure}");
        }
    }
    assert!(total > 0, "the corpus is empty");
    assert_eq!(invented, 0, "invented outputs on refusal cases");
    assert!(accuracy >= ACCURACY_FLOOR, "accuracy {accuracy:.4} fell below the floor {ACCURACY_FLOOR}");
}
