#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    missing_docs,
    reason = "profiling tool"
)]
//! Repairs the inputs of one large category `N` times, for a profiler (callgrind counts
//! instructions repeatably):
//!
//! ```text
//! cargo build --release -p keel-repair --example profile_large
//! valgrind --tool=callgrind target/release/examples/profile_large large_python_repr 3
//! ```
//!
//! Categories as in `tests/support/large.rs`; `public` repairs the public corpus's small cases
//! (with their schemas); `public_schema` and `public_plain` only those with and without one. `CORPUS_DIR` defaults to `shared/repair-corpus` beside the repository.
//!
//! One warm-up pass (schemas compiled, caches filled) runs first; to count only the `N` measured
//! passes, collect inside `measured` alone:
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='*profile_large::measured*' \
//!     target/release/examples/profile_large public 10
//! ```

#[allow(dead_code, reason = "the expected values are for the test and the comparison")]
#[path = "../tests/support/large.rs"]
mod large;

use std::path::PathBuf;

use keel_repair::Repairer;
use serde_json::Value;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let category = args.next().unwrap_or_else(|| "large_python_repr".to_owned());
    let times: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let dir = std::env::var_os("CORPUS_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/repair-corpus"), PathBuf::from);
    let cases: Vec<(String, Option<Value>)> = if category.starts_with("public") {
        let text = std::fs::read_to_string(dir.join("public.jsonl")).unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let case: Value = serde_json::from_str(line).unwrap();
                (case["input"].as_str().unwrap().to_owned(), case.get("schema").cloned())
            })
            .filter(|(_, schema)| match category.as_str() {
                "public_schema" => schema.is_some(),
                "public_plain" => schema.is_none(),
                _ => true,
            })
            .collect()
    } else {
        let large = large::large_cases(&dir);
        large.into_iter().filter(|c| c.category == category).map(|c| (c.input, None)).collect()
    };
    assert!(!cases.is_empty(), "no inputs in category {category}");
    let repairer = Repairer::new();
    passes(&repairer, &cases, 1);
    let bytes = measured(&repairer, &cases, times);
    println!("{category}: {} inputs x {times}, {bytes} bytes out", cases.len());
}

/// Repairs every case `times` times; the bytes of output.
#[inline(never)]
fn passes(repairer: &Repairer, cases: &[(String, Option<Value>)], times: usize) -> usize {
    let mut bytes = 0usize;
    for _ in 0..times {
        for (input, schema) in cases {
            bytes += repairer.repair(input, schema.as_ref()).map_or(0, |r| r.text().len());
        }
    }
    bytes
}

/// The measured passes (a function of their own, for `--toggle-collect`).
#[inline(never)]
fn measured(repairer: &Repairer, cases: &[(String, Option<Value>)], times: usize) -> usize {
    passes(repairer, cases, times)
}
