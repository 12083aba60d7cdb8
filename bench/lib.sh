# Shared set-up of the whole-process benchmarks; sourced from the repository root, not run.
# Sets WORK (a temporary folder, removed at exit), RESULTS, KEEL (a release build of keel),
# `pids` (processes killed at exit) and `log`. A script may define `extra_cleanup` to run at exit.
# KEEL_BIN=/path/to/keel measures another build (e.g. of an earlier commit) instead.
WORK="$(mktemp -d /tmp/keel-bench.XXXXXX)"
RESULTS="bench/results"
mkdir -p "$RESULTS"
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "building keel (release)"
cargo build --release -p keel-cli --locked -q
KEEL="${KEEL_BIN:-target/release/keel}"

pids=()
cleanup() {
  if declare -F extra_cleanup >/dev/null; then extra_cleanup; fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
