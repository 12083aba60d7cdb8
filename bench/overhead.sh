#!/usr/bin/env bash
# keel's added latency and throughput, side by side with a plain nginx reverse proxy and with no
# proxy at all, in one run, all in front of the same fast upstream (nginx serving a canned Ollama
# /api/chat answer). Reports ratios; absolute numbers depend on the machine.
#
# Usage: bench/overhead.sh [DURATION_SECONDS]      (default 10 per measurement; REPS=3 runs each)
# Needs: wrk and nginx (installed from Debian's packages if missing, when run as root).
# Output: a Markdown table on stdout, raw wrk output under bench/results/.
# KEEL_BASELINE=/path/to/other/keel adds a "baseline" path (e.g. a build of an earlier commit),
# measured interleaved with the others, to compare two keel builds in one run.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-10}"
UPSTREAM_PORT=18401
NGINX_PORT=18402
KEEL_PORT=18403
BASE_PORT=18404
source bench/lib.sh

need wrk nginx

# Two separate nginx processes: the canned upstream, and the plain reverse proxy in front of it
# (one process for both would let the proxy hand requests to the upstream without a context switch,
# an advantage keel cannot have).
canned_upstream
nginx_conf proxy 2 "server { listen 127.0.0.1:$NGINX_PORT; location / { proxy_pass http://canned; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; proxy_request_buffering off; } }"

"$KEEL" serve --listen "127.0.0.1:$KEEL_PORT" --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
  --store "sqlite://$WORK/keel.db" --log-level warn 2>"$WORK/keel.log" &
KEEL_PID=$!
pids+=("$KEEL_PID")
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$KEEL_PORT/keel/health" >/dev/null && break
  sleep 0.1
done
IDLE_RSS_KB=$(ps -o rss= -p "$KEEL_PID" | tr -d ' ')
PATHS="direct:$UPSTREAM_PORT nginx:$NGINX_PORT keel:$KEEL_PORT"
if [ -n "${KEEL_BASELINE:-}" ]; then
  "$KEEL_BASELINE" serve --listen "127.0.0.1:$BASE_PORT" --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
    --store "sqlite://$WORK/base.db" --log-level warn 2>"$WORK/base.log" &
  BASE_PID=$!
  pids+=("$BASE_PID")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$BASE_PORT/keel/health" >/dev/null && break; sleep 0.1; done
  BASE_IDLE_RSS_KB=$(ps -o rss= -p "$BASE_PID" | tr -d ' ')
  PATHS="$PATHS baseline:$BASE_PORT"
fi

cat >"$WORK/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"llama3.2","messages":[{"role":"user","content":"Hello!"}],"stream":false}'
LUA

# run NAME PORT CONNECTIONS REP -> prints "rps p50_ms p99_ms"
run() {
  local name=$1 port=$2 conns=$3 out="$RESULTS/wrk-$1-c$3-r$4.txt"
  wrk -t2 -c"$conns" -d"${DURATION}s" --latency -s "$WORK/chat.lua" "http://127.0.0.1:$port/api/chat" >"$out"
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1=="50%" {print $2}' "$out")
  p99=$(awk '$1=="99%" {print $2}' "$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
# median of the values in column $1 of the lines on stdin
median() { sort -g -k"$1" | awk -v c="$1" '{v[NR]=$c} END {print v[int((NR+1)/2)]}'; }
to_ms() { # wrk prints 1.23ms, 456.00us or 1.20s
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}

log "warming up"
wrk -t1 -c8 -d2s -s "$WORK/chat.lua" "http://127.0.0.1:$KEEL_PORT/api/chat" >/dev/null
wrk -t1 -c8 -d2s -s "$WORK/chat.lua" "http://127.0.0.1:$NGINX_PORT/api/chat" >/dev/null

echo "| connections | path | req/s | p50 ms | p99 ms | added p50 ms |"
echo "|---|---|---|---|---|---|"
REPS="${REPS:-3}"
declare -A R
for conns in 8 64; do
  declare -A runs=()
  # Interleave the three paths and repeat, then take medians: the machine's noise hits all alike.
  for rep in $(seq "$REPS"); do
    for target in $PATHS; do
      name=${target%%:*}; port=${target##*:}
      log "wrk $name, $conns connections, ${DURATION}s, run $rep/$REPS"
      runs[$name]+="$(run "$name" "$port" "$conns" "$rep")"$'\n'
    done
  done
  NAMES="direct nginx keel"; [ -n "${KEEL_BASELINE:-}" ] && NAMES="$NAMES baseline"
  for name in $NAMES; do
    R[$name-$conns]="$(printf '%s' "${runs[$name]}" | median 1) $(printf '%s' "${runs[$name]}" | median 2) $(printf '%s' "${runs[$name]}" | median 3)"
  done
  read -r d_rps d_p50 d_p99 <<<"${R[direct-$conns]}"
  for name in $NAMES; do
    read -r rps p50 p99 <<<"${R[$name-$conns]}"
    add50=$(awk -v a="$p50" -v b="$d_p50" 'BEGIN{printf "%.3f", a-b}')
    echo "| $conns | $name | $rps | $p50 | $p99 | $add50 |"
  done
done
LOADED_RSS_KB=$(ps -o rss= -p "$KEEL_PID" | tr -d ' ')

read -r n8_rps n8_p50 n8_p99 <<<"${R[nginx-8]}"; read -r k8_rps k8_p50 k8_p99 <<<"${R[keel-8]}"; read -r _ d8_p50 _ <<<"${R[direct-8]}"
read -r n64_rps _ _ <<<"${R[nginx-64]}"; read -r k64_rps _ _ <<<"${R[keel-64]}"
echo
awk -v k="$k8_p50" -v n="$n8_p50" -v d="$d8_p50" 'BEGIN{printf "- added p50 latency at 8 connections, keel / nginx: %.2f (keel +%.3f ms, nginx +%.3f ms over direct)\n", (k-d)/((n-d)>0.001?(n-d):0.001), k-d, n-d}'
echo "- p99 at 8 connections: keel $k8_p99 ms, nginx $n8_p99 ms (direct p99 is dominated by wrk sharing the 2 cores, so no difference is taken)"
awk -v k="$k8_rps" -v n="$n8_rps" 'BEGIN{printf "- throughput at 8 connections, keel / nginx: %.2f\n", k/n}'
awk -v k="$k64_rps" -v n="$n64_rps" 'BEGIN{printf "- throughput at 64 connections, keel / nginx: %.2f\n", k/n}'
if [ -n "${KEEL_BASELINE:-}" ]; then
  read -r b8_rps b8_p50 _ <<<"${R[baseline-8]}"; read -r b64_rps _ _ <<<"${R[baseline-64]}"
  awk -v k="$k8_rps" -v b="$b8_rps" -v k64="$k64_rps" -v b64="$b64_rps" 'BEGIN{printf "- keel / baseline throughput: %.2f at 8 connections, %.2f at 64\n", k/b, k64/b64}'
  awk -v k="$k8_p50" -v b="$b8_p50" -v d="$d8_p50" 'BEGIN{printf "- added p50 at 8 connections: keel +%.3f ms, baseline +%.3f ms\n", k-d, b-d}'
  echo "- baseline RSS: idle $((BASE_IDLE_RSS_KB / 1024)) MiB ($BASE_IDLE_RSS_KB KiB)"
fi
echo "- keel RSS: idle $((IDLE_RSS_KB / 1024)) MiB ($IDLE_RSS_KB KiB), after load $((LOADED_RSS_KB / 1024)) MiB"
echo "- machine: $(nproc) cores, $(uname -r); wrk -t2, ${DURATION}s per run, median of $REPS interleaved runs; raw output in $RESULTS/"
