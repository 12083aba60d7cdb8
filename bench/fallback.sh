#!/usr/bin/env bash
# Time to answer when the primary target is out, with its breaker closed (keel still tries it)
# and open (keel skips it), against the backup answering directly. Two kinds of "out": a primary
# that refuses connections, and one that hangs until keel's response_timeout (2 s here).
#
# Usage: bench/fallback.sh [REQUESTS]     (default 20 per measurement; prints a Markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20}"
WORK="$(mktemp -d /tmp/keel-fallback.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
log() { printf '[fallback %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cargo build --release -p keel-cli --locked -q
KEEL=target/release/keel
BACKUP=18511; HANG=18512; DEAD=18513; KEEL_PORT=18514

printf '[[model]]\nname = "llama3.2"\nreply = "backup"\n' >"$WORK/backup.toml"
printf '[[model]]\nname = "llama3.2"\n[[model.fault]]\nkind = "hang"\n' >"$WORK/hang.toml"
"$KEEL" mock --listen 127.0.0.1:$BACKUP --scenario "$WORK/backup.toml" >/dev/null & pids+=($!)
"$KEEL" mock --listen 127.0.0.1:$HANG --scenario "$WORK/hang.toml" >/dev/null & pids+=($!)

BODY='{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}'
# median milliseconds of N sequential requests to URL
median_ms() {
  for _ in $(seq "$N"); do
    curl -s -o /dev/null -w '%{time_total}\n' -H 'content-type: application/json' -d "$BODY" "$1"
  done | sort -g | awk '{v[NR]=$1} END {printf "%.2f", v[int((NR+1)/2)]*1000}'
}
one_ms() { curl -s -o /dev/null -w '%{time_total}' -H 'content-type: application/json' -d "$BODY" "$1" | awk '{printf "%.2f", $1*1000}'; }

wait_up() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return; sleep 0.1; done; }
wait_up "http://127.0.0.1:$BACKUP/api/version"

echo "| primary | breaker | time to answer (ms) |"
echo "|---|---|---|"
echo "| (backup directly, no keel) | - | $(median_ms "http://127.0.0.1:$BACKUP/api/chat") |"
for kind in dead hang; do
  port=$DEAD; [ "$kind" = hang ] && port=$HANG
  cat >"$WORK/keel.toml" <<CONF
[server]
listen = "127.0.0.1:$KEEL_PORT"
[[upstream]]
name = "primary"
url = "http://127.0.0.1:$port"
response_timeout = "2s"
[[upstream]]
name = "backup"
url = "http://127.0.0.1:$BACKUP"
[[route]]
model = "llama3.2"
targets = ["primary", "backup"]
[breaker]
failure_threshold = 1
cooldown = "10m"
CONF
  "$KEEL" serve --config "$WORK/keel.toml" --store "sqlite://$WORK/keel.db" --log-level error 2>/dev/null & kp=$!
  pids+=("$kp")
  wait_up "http://127.0.0.1:$KEEL_PORT/keel/health"
  log "primary $kind: first request (breaker closed)"
  closed=$(one_ms "http://127.0.0.1:$KEEL_PORT/api/chat")
  log "primary $kind: $N requests (breaker open)"
  open=$(median_ms "http://127.0.0.1:$KEEL_PORT/api/chat")
  echo "| $kind | closed (tries the primary first) | $closed |"
  echo "| $kind | open (skips it) | $open |"
  kill "$kp"; wait "$kp" 2>/dev/null || true
done
