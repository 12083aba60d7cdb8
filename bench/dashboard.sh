#!/usr/bin/env bash
# What the dashboard costs keel: the page's weight, and keel's CPU with 0 and with 20 tabs open
# (20 live event streams on /keel/ui/events, what 20 open tabs hold; the page itself loads once
# per tab). keel runs in front of the mock with traffic of 20 requests a second in both phases,
# so the difference is the dashboard's. CPU is read from /proc (user + system time) over WINDOW
# seconds (default 30) per phase; phases alternate ROUNDS times (default 3) and medians are shown.
#
# Usage: bench/dashboard.sh            Output: a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

MOCK_PORT=18431
KEEL_PORT=18432
WINDOW="${WINDOW:-30}"
ROUNDS="${ROUNDS:-3}"
TABS="${TABS:-20}"
source bench/lib.sh

"$KEEL" mock --listen "127.0.0.1:$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
pids+=($!)
keel_toml "$WORK/keel.toml"
"$KEEL" serve --config "$WORK/keel.toml" --listen "127.0.0.1:$KEEL_PORT" --store "sqlite://$WORK/keel.db" >"$WORK/keel.log" 2>&1 &
keel_pid=$!
pids+=($keel_pid)
wait_up "http://127.0.0.1:$KEEL_PORT/keel/health"

page=0
for file in "" /app.js /app.css; do
  bytes=$(curl -s "http://127.0.0.1:$KEEL_PORT/keel/ui$file" | wc -c)
  page=$((page + bytes))
done
gzipped=$(for file in "" /app.js /app.css; do curl -s "http://127.0.0.1:$KEEL_PORT/keel/ui$file"; done | gzip -9 | wc -c)

# Background traffic: 20 chat requests a second for the whole run.
(
  while true; do
    for _ in $(seq 20); do
      curl -s -o /dev/null "http://127.0.0.1:$KEEL_PORT/api/chat" \
        -d '{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}' &
    done
    wait
    sleep 1
  done
) &
traffic=$!
pids+=($traffic)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$keel_pid/stat"; }
ticks_per_second=$(getconf CLK_TCK)

# cpu_percent: keel's CPU over WINDOW seconds, in percent of one core.
cpu_percent() {
  local before after
  before=$(cpu_ticks)
  sleep "$WINDOW"
  after=$(cpu_ticks)
  awk -v t=$((after - before)) -v hz="$ticks_per_second" -v w="$WINDOW" 'BEGIN { printf "%.2f", 100 * t / hz / w }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

idle=()
open=()
for round in $(seq "$ROUNDS"); do
  log "round $round: no tab open"
  idle+=("$(cpu_percent)")
  log "round $round: $TABS tabs open"
  tabs=()
  for _ in $(seq "$TABS"); do
    curl -sN "http://127.0.0.1:$KEEL_PORT/keel/ui/events" >/dev/null &
    tabs+=($!)
  done
  sleep 2
  open+=("$(cpu_percent)")
  kill "${tabs[@]}" 2>/dev/null || true
  wait "${tabs[@]}" 2>/dev/null || true
  sleep 2
done

echo "| measure | value |"
echo "|---|---|"
echo "| page weight (HTML + JS + CSS, uncompressed) | $page bytes |"
echo "| page weight gzip -9 (for reference; keel serves it uncompressed) | $gzipped bytes |"
echo "| keel CPU, no tab open (median of $ROUNDS × ${WINDOW}s) | $(printf '%s\n' "${idle[@]}" | median)% of a core |"
echo "| keel CPU, $TABS tabs open (median of $ROUNDS × ${WINDOW}s) | $(printf '%s\n' "${open[@]}" | median)% of a core |"
echo "| rounds (no tab / $TABS tabs) | ${idle[*]} / ${open[*]} |"
