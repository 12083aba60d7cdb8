#!/usr/bin/env bash
# keel must not turn a local limit or a flood of made-up names into an outage. Two measurements,
# against a healthy keel-mock (nothing else needed but python3):
#   1. keel started under the usual soft open-file limit (`ulimit -Sn 1024`) relays STREAMS
#      concurrent streams (default 1000: 2,000 sockets in keel) — keel raises its soft limit to the
#      hard one at start-up, and a shortage would be keel's own 503, never a refusal by "the server";
#   2. NAMES requests (default 20000), each for a different made-up model name (404 from the
#      server): /metrics size and keel's RSS at idle and after.
#
# Usage: bench/limits.sh            (STREAMS=1000 NAMES=20000 by default)
# Output: a Markdown table on stdout; keel's log under bench/results/limits-keel.log.
set -euo pipefail
cd "$(dirname "$0")/.."

STREAMS="${STREAMS:-1000}"
NAMES="${NAMES:-20000}"
MOCK_PORT=18411
KEEL_PORT=18412
source bench/lib.sh

# The client and the mock hold a socket per stream too: give them room.
ulimit -n "$(ulimit -Hn)"

cat >"$WORK/scenario.toml" <<'TOML'
[[model]]
name = "llama3.2"
reply = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
token_delay = "100ms"
TOML
"$KEEL" mock --listen "127.0.0.1:$MOCK_PORT" --scenario "$WORK/scenario.toml" >/dev/null &
pids+=($!)

keel_toml "$WORK/keel.toml"
# keel alone gets the usual soft limit of 1,024 open files.
bash -c "ulimit -Sn 1024; exec $KEEL serve --config $WORK/keel.toml" 2>"$RESULTS/limits-keel.log" &
KEEL_PID=$!
pids+=($KEEL_PID)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$KEEL_PORT/keel/health" >/dev/null 2>&1 && break
  sleep 0.1
done
log "keel's open-file limit: $(grep 'Max open files' /proc/$KEEL_PID/limits | awk '{print $4" soft, "$5" hard"}')"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$KEEL_PID/status"; }
metrics_bytes() { curl -fs "http://127.0.0.1:$KEEL_PORT/metrics" | wc -c; }

IDLE_RSS=$(rss_kib)
IDLE_METRICS=$(metrics_bytes)
log "$NAMES requests with made-up model names"
python3 - "$KEEL_PORT" "$NAMES" <<'PY'
import http.client, json, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
statuses = {}
for i in range(n):
    body = json.dumps({"model": f"made-up-{i}", "messages": [{"role": "user", "content": "hi"}], "stream": False})
    conn.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
    r = conn.getresponse(); r.read()
    statuses[r.status] = statuses.get(r.status, 0) + 1
print(statuses, file=sys.stderr)
PY
AFTER_RSS=$(rss_kib)
AFTER_METRICS=$(metrics_bytes)
log "$STREAMS concurrent streams through keel"
STREAM_RESULT="$(python3 - "$KEEL_PORT" "$STREAMS" <<'PY'
import asyncio, json, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
body = json.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}).encode()
request = (f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
async def one():
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), 120)
        writer.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        return status if (status != "200" or b'"done":true' in rest) else "200-incomplete"
    except Exception as err:
        return type(err).__name__
async def main():
    results = await asyncio.gather(*(one() for _ in range(n)))
    counts = {}
    for r in results:
        counts[r] = counts.get(r, 0) + 1
    print(" ".join(f"{k}:{v}" for k, v in sorted(counts.items())))
asyncio.run(main())
PY
)"
log "streams: $STREAM_RESULT"

BREAKERS=$(curl -fs "http://127.0.0.1:$KEEL_PORT/keel/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("breakers", "not reported"))')

echo "| measurement | result |"
echo "|---|---|"
echo "| $STREAMS concurrent streams, keel started with \`ulimit -Sn 1024\` | $STREAM_RESULT |"
echo "| /metrics at idle → after $NAMES made-up names | $IDLE_METRICS → $AFTER_METRICS bytes |"
echo "| keel RSS at idle → after | $((IDLE_RSS / 1024)) → $((AFTER_RSS / 1024)) MiB |"
echo "| breakers after | $BREAKERS |"
