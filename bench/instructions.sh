#!/usr/bin/env bash
# keel's CPU work per proxied request, counted in instructions: the same count for the same binary
# on every run, unlike times on this noisy machine. keel runs under valgrind's callgrind with one
# serving thread in front of nginx serving a canned Ollama /api/chat answer; a keep-alive client
# sends 2,000 requests one at a time to warm up, the counters are zeroed, then it sends REQUESTS
# more (default 8,000) and the counters are dumped: total instructions / requests. (A fixed count,
# not a fixed time: keel's timers tick per second, and a time-boxed run would spread their work
# over however many requests a build managed.)
#
# Usage: bench/instructions.sh                  (KEEL_BASELINE=/path/to/other/keel adds a column)
# Needs: valgrind, nginx and Python 3 (installed from Debian's packages if missing, when run as root).
# Output: a Markdown table on stdout; callgrind's dumps under bench/results/ (callgrind_annotate
# shows where the instructions go).
set -euo pipefail
cd "$(dirname "$0")/.."

UPSTREAM_PORT=18411
KEEL_PORT=18412
source bench/lib.sh

need valgrind nginx
canned_upstream

cat >"$WORK/keel.toml" <<TOML
[server]
listen = "127.0.0.1:$KEEL_PORT"
workers = 1

[[upstream]]
name = "default"
url = "http://127.0.0.1:$UPSTREAM_PORT"
health_interval = "0s"
TOML
cat >"$WORK/client.py" <<'PY'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
body = b'{"model":"llama3.2","messages":[{"role":"user","content":"Hello!"}],"stream":false}'
conn = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(count):
    conn.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"keel answered {response.status}")
PY
REQUESTS="${REQUESTS:-8000}"

# count NAME BINARY -> prints "instructions_per_request requests"
count() {
  local name=$1 bin=$2 out="$RESULTS/callgrind-$1.out"
  rm -f "$out"*
  valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no \
    "$bin" serve --config "$WORK/keel.toml" --store "sqlite://$WORK/$name.db" --log-level warn 2>"$WORK/$name.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$KEEL_PORT/keel/health" >/dev/null && break; sleep 0.2; done
  python3 "$WORK/client.py" "$KEEL_PORT" 2000
  callgrind_control -z "$pid" >/dev/null 2>&1
  python3 "$WORK/client.py" "$KEEL_PORT" "$REQUESTS"
  local requests=$REQUESTS
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # The dump after zeroing is the second file (out.1); its totals cover the measured 6 s only.
  local total
  total=$(grep -h '^summary:\|^totals:' "$out.1" 2>/dev/null | head -1 | awk '{print $2}')
  awk -v t="$total" -v r="$requests" 'BEGIN { printf "%.1f %d\n", t / r / 1000, r }'
}

echo "| build | instructions per request (thousands) | requests measured |"
echo "|---|---|---|"
# Each build twice, interleaved: the two counts of one build should agree to within a few tenths.
for round in 1 2; do
  if [ -n "${KEEL_BASELINE:-}" ]; then
    log "callgrind: baseline ($KEEL_BASELINE), run $round"
    read -r per n <<<"$(count baseline "$KEEL_BASELINE")"
    echo "| baseline | $per | $n |"
  fi
  log "callgrind: keel ($KEEL), run $round"
  read -r per n <<<"$(count keel "$KEEL")"
  echo "| keel | $per | $n |"
done
