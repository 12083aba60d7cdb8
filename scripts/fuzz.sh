#!/usr/bin/env bash
# Runs every cargo-fuzz target of keel for a fixed budget each (installs cargo-fuzz if missing).
# A crash stops the script with the target's name; its input is kept under fuzz/artifacts/.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]     (default 60; all targets)
# Prints one line per target: inputs run, and the slowest input's time.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(repair upstream server config headers incidents anthropic responses)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the pinned stable toolchain take them.
export RUSTC_BOOTSTRAP=1
# The config target starts from the commented default config (`keel init`) and the README's.
seed_config() {
  mkdir -p corpus/config
  (cd .. && cargo run -q --release -p keel-cli -- init - >fuzz/corpus/config/init.toml)
  awk '/^```toml$/ {on=1; n++; next} /^```$/ {on=0} on {print > ("corpus/config/readme-" n ".toml")}' ../README.md
}
for target in "${TARGETS[@]}"; do
  log="artifacts/$target-run.log"
  mkdir -p artifacts
  [ "$target" != config ] || [ -d corpus/config ] || seed_config
  echo "[fuzz] $target for ${SECONDS_PER_TARGET}s" >&2
  if ! cargo fuzz run "$target" -- -max_total_time="$SECONDS_PER_TARGET" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "[fuzz] $target FAILED; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
  slowest=$(grep -o 'Slowest unit: [0-9]* s' "$log" | tail -1 || true)
  echo "$target: ${runs:-?} inputs in ${SECONDS_PER_TARGET}s, no crash${slowest:+; $slowest}"
done
