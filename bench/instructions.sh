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

if ! command -v valgrind >/dev/null || { ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; }; then
  log "installing valgrind and nginx from Debian's packages"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind nginx >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
extra_cleanup() { "$NGINX" -p "$WORK" -c "$WORK/upstream.conf" -s stop 2>/dev/null || true; }

CHAT_REPLY='{"model":"llama3.2","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"Hello! How can I help you today?"},"done":true,"done_reason":"stop","total_duration":1000,"load_duration":10,"prompt_eval_count":12,"prompt_eval_duration":100,"eval_count":9,"eval_duration":800}'
cat >"$WORK/upstream.conf" <<CONF
worker_processes 1;
error_log $WORK/upstream-error.log warn;
pid $WORK/upstream.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/upstream-body;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UPSTREAM_PORT; location / { default_type application/json; return 200 '$CHAT_REPLY'; } }
}
CONF
"$NGINX" -p "$WORK" -c "$WORK/upstream.conf"

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
