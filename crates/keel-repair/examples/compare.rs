#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    reason = "benchmark tool"
)]
//! keel-repair vs `jsonrepair-rs`: throughput (MB/s) and accuracy on the repair corpus.
//!
//! ```text
//! cargo run --release -p keel-repair --example compare [-- CORPUS_DIR]
//! ```
//!
//! First table: per large category (the corpus's three large inputs and five broken forms
//! derived from them, `tests/support/large.rs`), both engines without schemas, alternating rounds;
//! then `public.jsonl`'s small cases and the whole public corpus (both files), keel with the
//! cases' schemas. Second table: each corpus file as a whole, keel with its schemas.
//!
//! `CORPUS_DIR` defaults to `shared/repair-corpus` beside the repository. Accuracy follows the
//! corpus README: the output must parse and equal `expected` as a value, or both be null (a
//! refusal). `jsonrepair-rs` has no schema support and never refuses, so it is scored on the same
//! cases without schemas; keel is scored both ways.

#[path = "../tests/support/large.rs"]
mod large;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_repair::Repairer;
use serde_json::Value;

/// The allocator the `keel` binary uses, so the numbers are the binary's (both engines run on it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Case {
    input: String,
    expected: Option<Value>,
    schema: Option<Value>,
}

fn load(path: &PathBuf) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            Case {
                input: v["input"].as_str().unwrap().to_owned(),
                expected: v.get("expected").cloned(),
                schema: v.get("schema").cloned(),
            }
        })
        .collect()
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn correct(output: Option<&str>, expected: Option<&Value>) -> bool {
    let expected = expected.filter(|e| !e.is_null());
    match (output, expected) {
        (None, None) => true,
        (Some(text), Some(exp)) => serde_json::from_str::<Value>(text).is_ok_and(|out| same(&out, exp)),
        _ => false,
    }
}

/// Runs both engines over `inputs` in alternating rounds (keel, then the peer, again) until each
/// has had about `budget`; returns their MB/s.
fn alternating<T: Copy>(
    inputs: &[(&str, T)],
    budget: Duration,
    keel: impl Fn((&str, T)),
    peer: impl Fn((&str, T)),
) -> (f64, f64) {
    let bytes: usize = inputs.iter().map(|i| i.0.len()).sum();
    let round = |f: &dyn Fn((&str, T))| {
        let start = Instant::now();
        for &input in inputs {
            f(input);
        }
        start.elapsed()
    };
    // Warm up once each.
    round(&keel);
    round(&peer);
    let (mut keel_time, mut peer_time, mut rounds) = (Duration::ZERO, Duration::ZERO, 0u32);
    while keel_time.min(peer_time) < budget || rounds < 3 {
        keel_time += round(&keel);
        peer_time += round(&peer);
        rounds += 1;
    }
    let mbs = |time: Duration| (bytes as f64 * f64::from(rounds)) / time.as_secs_f64() / 1e6;
    (mbs(keel_time), mbs(peer_time))
}

/// Per large category (the corpus's three inputs and the broken forms derived from them), then
/// all large inputs and the public corpus's small cases: MB/s of each engine without schemas,
/// alternating rounds, and accuracy.
fn per_category(dir: &Path, budget: Duration, repairer: &Repairer) {
    let large = large::large_cases(dir);
    let small = load(&dir.join("public.jsonl"));
    println!(
        "| category | inputs | MB | keel MB/s | jsonrepair-rs MB/s | keel / peer | keel accuracy | peer accuracy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    // (input, expected, schema): keel gets the schema, the peer has no use for it.
    type Group<'a> = (String, Vec<(&'a str, Option<&'a Value>, Option<&'a Value>)>);
    let mut groups: Vec<Group<'_>> = large::CATEGORIES
        .iter()
        .map(|&category| {
            let cases = large.iter().filter(|c| c.category == category);
            (category.to_owned(), cases.map(|c| (c.input.as_str(), Some(&c.expected), None)).collect())
        })
        .collect();
    groups.push(("all large".to_owned(), large.iter().map(|c| (c.input.as_str(), Some(&c.expected), None)).collect()));
    groups.push((
        "public.jsonl (298 small cases; keel with their schemas)".to_owned(),
        small.iter().map(|c| (c.input.as_str(), c.expected.as_ref(), c.schema.as_ref())).collect(),
    ));
    groups.push((
        "public.jsonl, the cases without a schema (the same work for both)".to_owned(),
        small.iter().filter(|c| c.schema.is_none()).map(|c| (c.input.as_str(), c.expected.as_ref(), None)).collect(),
    ));
    // The whole public corpus: both files, every input once per round (keel with the schemas).
    let public_large = load(&dir.join("public-large.jsonl"));
    groups.push((
        "whole public corpus (public.jsonl + public-large.jsonl; keel with their schemas)".to_owned(),
        small.iter().chain(&public_large).map(|c| (c.input.as_str(), c.expected.as_ref(), c.schema.as_ref())).collect(),
    ));
    for (name, cases) in groups {
        let keel_ok = cases
            .iter()
            .filter(|(input, exp, schema)| {
                correct(repairer.repair(input, *schema).ok().map(|r| r.text().to_owned()).as_deref(), *exp)
            })
            .count();
        let peer_ok = cases.iter().filter(|(input, exp, _)| correct(jsonrepair(input).as_deref(), *exp)).count();
        let inputs: Vec<(&str, Option<&Value>)> = cases.iter().map(|c| (c.0, c.2)).collect();
        let (keel, peer) = alternating(
            &inputs,
            budget,
            |(input, schema)| {
                std::hint::black_box(repairer.repair(input, schema).ok());
            },
            |(input, _)| {
                std::hint::black_box(jsonrepair(input));
            },
        );
        let mb = inputs.iter().map(|i| i.0.len()).sum::<usize>() as f64 / 1e6;
        let n = cases.len();
        println!(
            "| {name} | {n} | {mb:.2} | {keel:.1} | {peer:.1} | {:.2}x | {keel_ok}/{n} | {peer_ok}/{n} |",
            keel / peer
        );
    }
}

/// Runs `f` over every case repeatedly for about `budget`; returns MB/s.
fn throughput(cases: &[Case], budget: Duration, mut f: impl FnMut(&Case)) -> f64 {
    let bytes: usize = cases.iter().map(|c| c.input.len()).sum();
    // Warm up once.
    for case in cases {
        f(case);
    }
    let start = Instant::now();
    let mut rounds = 0u32;
    while start.elapsed() < budget || rounds < 3 {
        for case in cases {
            f(case);
        }
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    (bytes as f64 * f64::from(rounds)) / secs / 1e6
}

fn jsonrepair(input: &str) -> Option<String> {
    std::panic::catch_unwind(|| jsonrepair_rs::jsonrepair(input).ok()).ok().flatten()
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/repair-corpus"), PathBuf::from);
    let budget =
        Duration::from_millis(std::env::var("COMPARE_MILLIS").ok().and_then(|v| v.parse().ok()).unwrap_or(2500));
    let repairer = Repairer::new();
    if std::env::var_os("COMPARE_SLOWEST").is_some() {
        // Where the time goes: the slowest cases of public.jsonl.
        let cases = load(&dir.join("public.jsonl"));
        let mut timed: Vec<(f64, usize)> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let start = Instant::now();
                for _ in 0..200 {
                    std::hint::black_box(repairer.repair(&c.input, c.schema.as_ref()).ok());
                }
                (start.elapsed().as_secs_f64() / 200.0 * 1e6, i)
            })
            .collect();
        timed.sort_by(|a, b| b.0.total_cmp(&a.0));
        let total: f64 = timed.iter().map(|t| t.0).sum();
        println!("total {total:.0} µs per pass");
        for (micros, i) in timed.iter().take(15) {
            let c = &cases[*i];
            println!(
                "{micros:8.1} µs  {:6} bytes  schema={}  {:?}",
                c.input.len(),
                c.schema.is_some(),
                c.input.chars().take(60).collect::<String>()
            );
        }
        return;
    }
    per_category(&dir, budget, &repairer);
    println!();
    println!("| corpus | engine | MB/s | accuracy |");
    println!("|---|---|---:|---:|");
    for name in ["public-large.jsonl", "public.jsonl"] {
        let cases = load(&dir.join(name));
        let n = cases.len();
        let keel_schema = cases
            .iter()
            .filter(|c| {
                correct(
                    repairer.repair(&c.input, c.schema.as_ref()).ok().map(|r| r.text().to_owned()).as_deref(),
                    c.expected.as_ref(),
                )
            })
            .count();
        let schemaless: Vec<&Case> = cases.iter().filter(|c| c.schema.is_none()).collect();
        let keel_plain = schemaless
            .iter()
            .filter(|c| {
                correct(
                    repairer.repair(&c.input, None).ok().map(|r| r.text().to_owned()).as_deref(),
                    c.expected.as_ref(),
                )
            })
            .count();
        let jr_plain =
            schemaless.iter().filter(|c| correct(jsonrepair(&c.input).as_deref(), c.expected.as_ref())).count();
        let keel_mbs = throughput(&cases, budget, |c| {
            std::hint::black_box(repairer.repair(&c.input, c.schema.as_ref()).ok());
        });
        let jr_mbs = throughput(&cases, budget, |c| {
            std::hint::black_box(jsonrepair(&c.input));
        });
        let pct = |ok: usize, of: usize| {
            if of == 0 { "n/a".to_owned() } else { format!("{:.1}% ({ok}/{of})", 100.0 * ok as f64 / of as f64) }
        };
        println!("| {name} | keel-repair (with schemas) | {keel_mbs:.1} | {} |", pct(keel_schema, n));
        println!("| {name} | keel-repair (cases without schema) | | {} |", pct(keel_plain, schemaless.len()));
        println!(
            "| {name} | jsonrepair-rs 0.2.6 (cases without schema) | {jr_mbs:.1} | {} |",
            pct(jr_plain, schemaless.len())
        );
        println!("| {name} | speed-up | {:.2}x | |", keel_mbs / jr_mbs);
    }
}
