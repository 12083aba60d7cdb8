#!/usr/bin/env bash
# Session store figures for BENCHMARKS.md: durable appends per second with 64 concurrent writers
# (one run per backend), and keel's restart-to-ready time with 100,000 sessions stored in SQLite.
#
# Usage: bench/sessions.sh [SESSIONS]      (default 100000)
# Needs: PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 for their rows (skipped if down).
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS="${1:-100000}"
WORK="$(mktemp -d /tmp/keel-sessions-bench.XXXXXX)"
PORT=18611
trap 'kill "${KEEL_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cargo build --release -q -p keel-session --example fill
cargo build --release -q -p keel-cli --locked
FILL=target/release/examples/fill

echo "## durable appends (64 concurrent writers)"
log "sqlite: $SESSIONS sessions"
echo "- sqlite: $($FILL "sqlite://$WORK/keel.db" "$SESSIONS")"
SMALL=$((SESSIONS / 10))
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  SCHEMA="bench_$(date +%s)"
  log "postgres: $SMALL sessions"
  echo "- postgres: $($FILL "postgres://postgres@127.0.0.1:5432/test?schema=$SCHEMA" "$SMALL")"
  psql -h 127.0.0.1 -U postgres -d test -qc "DROP SCHEMA $SCHEMA CASCADE" >/dev/null
fi
if redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  PREFIX="keel-bench-$(date +%s):"
  log "redis: $SMALL sessions"
  echo "- redis: $($FILL "redis://127.0.0.1:6379/?prefix=$PREFIX" "$SMALL")"
  redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 del >/dev/null
fi

echo
echo "## restart to ready with $SESSIONS sessions stored (SQLite, $(du -h "$WORK/keel.db" | cut -f1))"
times=()
for run in 1 2 3 4 5; do
  start=$(date +%s%N)
  target/release/keel serve --listen "127.0.0.1:$PORT" --store "sqlite://$WORK/keel.db" --log-level warn 2>/dev/null &
  KEEL_PID=$!
  until curl -sf "http://127.0.0.1:$PORT/keel/health" >/dev/null; do sleep 0.005; done
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000000 )))
  kill -9 "$KEEL_PID"; wait "$KEEL_PID" 2>/dev/null || true
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
echo "- keel serve start → /keel/health 200: ${sorted}ms (5 runs, killed with SIGKILL each time); median $(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p) ms"
