#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs, reason = "benchmark")]
//! Throughput of the repair engine on the repair corpus.
//!
//! `cargo bench -p keel-repair --bench repair` — one group per file of
//! `shared/repair-corpus`: each large input on its own (bytes per second), and the whole public
//! corpus (298 small broken outputs, with their schemas) as one batch.

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keel_repair::Repairer;
use serde_json::Value;

fn load(name: &str) -> Vec<(String, String, Option<Value>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/repair-corpus").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let case: Value = serde_json::from_str(line).unwrap();
            (
                case["id"].as_str().unwrap_or("?").to_owned(),
                case["input"].as_str().unwrap().to_owned(),
                case.get("schema").cloned(),
            )
        })
        .collect()
}

fn large(c: &mut Criterion) {
    let repairer = Repairer::new();
    let mut group = c.benchmark_group("public-large");
    group.sample_size(20);
    for (id, input, schema) in load("public-large.jsonl") {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(&id, |b| b.iter(|| repairer.repair(std::hint::black_box(&input), schema.as_ref())));
    }
    group.finish();
}

fn public(c: &mut Criterion) {
    let repairer = Repairer::new();
    let cases = load("public.jsonl");
    let bytes: usize = cases.iter().map(|(_, input, _)| input.len()).sum();
    let mut group = c.benchmark_group("public");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("all-cases-with-schemas", |b| {
        b.iter(|| {
            for (_, input, schema) in &cases {
                let _ = std::hint::black_box(repairer.repair(input, schema.as_ref()));
            }
        });
    });
    group.bench_function("all-cases-without-schemas", |b| {
        b.iter(|| {
            for (_, input, _) in &cases {
                let _ = std::hint::black_box(repairer.repair(input, None));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, large, public);
criterion_main!(benches);
