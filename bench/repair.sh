#!/usr/bin/env bash
# keel-repair vs jsonrepair-rs on the repair corpus: MB/s and accuracy, as Markdown tables.
#
# First table: per large category — the three large inputs of public-large.jsonl and five broken
# forms derived from each of their values (trailing commas + comments, Python repr, truncation,
# raw newlines/tabs in strings, NDJSON; crates/keel-repair/tests/support/large.rs) — both engines
# without schemas, in one process, alternating rounds, mimalloc as the global allocator for both;
# then the whole public.jsonl and the whole public corpus (both files; keel with the cases' schemas).
# Second table: each file as a whole.
#
# Usage: bench/repair.sh [CORPUS_DIR]        (default: ../shared/repair-corpus beside the repo)
# Env:   COMPARE_MILLIS=2500                  time spent measuring each engine on each category/file
# Needs: cargo (builds crates/keel-repair/examples/compare.rs in release mode).
#
# Accuracy follows the corpus README (value equality, refusal == null). jsonrepair-rs has no
# schema support and never refuses, so it is scored on the cases without a schema; keel is scored
# on all cases (with their schemas) and on the same schema-less subset.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-$(cd .. && pwd)/shared/repair-corpus}"
if [ ! -f "$DIR/public.jsonl" ] || [ ! -f "$DIR/public-large.jsonl" ]; then
  echo "repair corpus not found in $DIR (expected public.jsonl and public-large.jsonl)" >&2
  exit 1
fi
cargo build --release -p keel-repair --example compare -q
echo "## keel-repair vs jsonrepair-rs ($(date -u +%Y-%m-%d), $(nproc) cores)"
echo
target/release/examples/compare "$DIR"
