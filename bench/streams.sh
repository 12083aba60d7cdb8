#!/usr/bin/env bash
# keel holding many long streams at once, and what that costs in memory. keel mock streams a
# slow answer (one word every TOKEN_DELAY_MS, DURATION seconds in all); STREAMS clients ask for it
# through keel at once (streamed /api/chat, one connection each) and read it to the end. Every
# stream must end with a `"done":true` line, carry every word and no error line.
# keel's memory (/proc/PID/status) is read when idle after start-up, every second while the
# streams are open, its peak (VmHWM) when they have ended, and again idle SETTLE seconds later;
# keel mock's for comparison.
#
# Usage: bench/streams.sh          (STREAMS=1000 DURATION=60 by default)
# Env:   STREAMS, DURATION (seconds each stream lasts), TOKEN_DELAY_MS=500, SETTLE=5 (seconds
#        idle before the last reading), WORKERS (keel's `[server] workers`; unset: its default,
#        one per core). The environment reaches keel, so allocator knobs can be tried too.
# Needs: Python 3 (the client: asyncio, one socket per stream).
# Output: a Markdown table on stdout, progress on stderr, keel's log in bench/results/streams-keel.log.
# Exits non-zero if any stream failed.
set -euo pipefail
cd "$(dirname "$0")/.."

STREAMS="${STREAMS:-1000}"
DURATION="${DURATION:-60}"
TOKEN_DELAY_MS="${TOKEN_DELAY_MS:-500}"
SETTLE="${SETTLE:-5}"
WORKERS="${WORKERS:-}"
MOCK_PORT=18421
KEEL_PORT=18422
source bench/lib.sh
need python3 curl

# Each stream is two sockets in keel (client, model server) and one each in the client and the
# mock, which inherit this limit. keel raises its own soft limit to the hard one at start-up, but
# the client and the mock do not: raise the soft limit here, to at least 8,192.
WANT_FILES=$((2 * STREAMS + 512)); [ "$WANT_FILES" -lt 8192 ] && WANT_FILES=8192
HARD_FILES="$(ulimit -Hn)"
if [ "$HARD_FILES" != unlimited ] && [ "$HARD_FILES" -lt "$WANT_FILES" ]; then
  [ "$HARD_FILES" -lt $((2 * STREAMS + 64)) ] &&
    log "warning: the hard open-file limit ($HARD_FILES) is below the $((2 * STREAMS + 64)) files $STREAMS streams need in keel; expect keel's own 503s (raise it as root, or lower STREAMS)"
  WANT_FILES="$HARD_FILES"
fi
ulimit -Sn "$WANT_FILES"

# One word per TOKEN_DELAY_MS for DURATION seconds (the mock waits between chunks, not before
# the first one), then the `done` line.
WORDS=$((DURATION * 1000 / TOKEN_DELAY_MS)); [ "$WORDS" -lt 1 ] && WORDS=1
{
  echo 'record_requests = false'
  echo '[[model]]'
  echo 'name = "llama3.2"'
  echo "token_delay = \"${TOKEN_DELAY_MS}ms\""
  echo "reply = \"$(seq -f 'word%g' -s ' ' "$WORDS")\""
} >"$WORK/scenario.toml"
"$KEEL" mock --listen "127.0.0.1:$MOCK_PORT" --scenario "$WORK/scenario.toml" >/dev/null &
MOCK_PID=$!
pids+=("$MOCK_PID")

keel_toml "$WORK/keel.toml" "${WORKERS:+workers = $WORKERS}"
"$KEEL" serve --config "$WORK/keel.toml" 2>"$RESULTS/streams-keel.log" &
KEEL_PID=$!
pids+=("$KEEL_PID")
wait_up "http://127.0.0.1:$MOCK_PORT/api/version"
wait_up "http://127.0.0.1:$KEEL_PORT/keel/health"
sleep 1
IDLE_KIB=$(vm_kib "$KEEL_PID" VmRSS)
MOCK_IDLE_KIB=$(vm_kib "$MOCK_PID" VmRSS)
IDLE_ANON_KIB=$(vm_kib "$KEEL_PID" RssAnon)
IDLE_FILE_KIB=$(vm_kib "$KEEL_PID" RssFile)
log "keel idle after start-up: $(mib "$IDLE_KIB") MiB (pid $KEEL_PID, $(awk '/Max open files/ {print $4}' "/proc/$KEEL_PID/limits") open files, $(ls "/proc/$KEEL_PID/task" | wc -l) threads)"
log "$STREAMS streams of $WORDS words, one every ${TOKEN_DELAY_MS} ms (~${DURATION} s each)"

# The client. Prints "completed failed most_open keel_during_kib (RSS, anon, file) keel_max_kib
# mock_during_kib" on stdout; progress and the failures (grouped by reason) on stderr.
cat >"$WORK/client.py" <<'PY'
import asyncio, json, statistics, sys, time
port, n, words, duration, keel_pid, mock_pid = map(int, sys.argv[1:7])
body = json.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
request = (f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
started = 0    # streams whose first line arrived
finished = 0   # streams ended, either way
lines = 0

def rss_kib(pid):
    """(VmRSS, RssAnon, RssFile) in KiB: the resident set, its anonymous (heap, stacks) and
    file-backed (the binary's code and data, shared with other processes mapping it) parts;
    zeros for a process that has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(row.split(":", 1) for row in f)
    except FileNotFoundError:
        fields = {}
    return tuple(int(fields.get(k, "0").split()[0]) for k in ("VmRSS", "RssAnon", "RssFile"))

async def body_chunks(reader, chunked):
    if not chunked:
        while data := await reader.read(65536):
            yield data
        return
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # the (empty) trailer
            return
        yield (await reader.readexactly(size + 2))[:-2]

async def stream():
    """One streamed chat; returns None if it was whole, else what went wrong."""
    global started, finished, lines
    first = False
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        status = head.split(b" ", 2)[1].decode()
        chunked = b"\r\ntransfer-encoding: chunked" in head
        pending, tokens, done, error = b"", 0, False, None
        async for data in body_chunks(reader, chunked):
            pending += data
            *whole, pending = pending.split(b"\n")
            for line in whole:
                if not line.strip():
                    continue
                lines += 1
                if not first:
                    first = True
                    started += 1
                obj = json.loads(line)
                if "error" in obj:
                    error = f"error line: {obj['error']}"[:120]
                elif done:
                    error = "a line after done"
                elif obj.get("done") is True:
                    done = True
                else:
                    tokens += 1
        writer.close()
        if status != "200":
            return f"status {status}"
        if error:
            return error
        if not done:
            return "no done line"
        if tokens != words:
            return f"{tokens} of {words} words"
        return None
    except Exception as err:
        return f"{type(err).__name__}: {err}"[:120]
    finally:
        if first:
            finished += 1

async def main():
    t0 = time.monotonic()
    samples = []  # (streams open, keel (RSS, anon, file), mock (RSS, anon, file))
    tasks = [asyncio.create_task(asyncio.wait_for(stream(), duration + 120)) for _ in range(n)]
    all_done = asyncio.gather(*tasks, return_exceptions=True)
    tick = 0
    while not all_done.done():
        await asyncio.wait([all_done], timeout=1)
        tick += 1
        samples.append((started - finished, rss_kib(keel_pid), rss_kib(mock_pid)))
        if tick % 5 == 0 or all_done.done():
            print(f"[client {time.monotonic() - t0:5.0f}s] open {started - finished}, ended {finished}, "
                  f"{lines} lines, keel RSS {samples[-1][1][0] / 1024:.1f} MiB", file=sys.stderr)
    outcomes = [r if not isinstance(r, BaseException) else f"{type(r).__name__}" for r in all_done.result()]
    failed = {}
    for r in outcomes:
        if r is not None:
            failed[r] = failed.get(r, 0) + 1
    for reason, count in sorted(failed.items(), key=lambda kv: -kv[1]):
        print(f"[client] {count} × {reason}", file=sys.stderr)
    max_open = max(s[0] for s in samples)
    # "during": the median over the seconds when the most streams were open together.
    hold = [s for s in samples if s[0] >= max_open * 0.95] or samples
    median = lambda which, i: int(statistics.median(s[which][i] for s in hold))
    print(n - sum(failed.values()), sum(failed.values()), max_open, median(1, 0), median(1, 1), median(1, 2),
          max(s[1][0] for s in samples), median(2, 0))

asyncio.run(main())
PY
CLIENT="$(python3 "$WORK/client.py" "$KEEL_PORT" "$STREAMS" "$WORDS" "$DURATION" "$KEEL_PID" "$MOCK_PID")"
kill -0 "$KEEL_PID" 2>/dev/null || { log "keel exited during the run; see $RESULTS/streams-keel.log"; exit 1; }
read -r COMPLETED FAILED MAX_OPEN DURING_KIB DURING_ANON_KIB DURING_FILE_KIB MAX_SAMPLED_KIB MOCK_DURING_KIB <<<"$CLIENT"
PEAK_KIB=$(vm_kib "$KEEL_PID" VmHWM)
MOCK_PEAK_KIB=$(vm_kib "$MOCK_PID" VmHWM)
log "streams ended; keel idle for ${SETTLE} s"
sleep "$SETTLE"
AFTER_KIB=$(vm_kib "$KEEL_PID" VmRSS)
ERRORS=$(grep -cE ' (ERROR|WARN) ' "$RESULTS/streams-keel.log" || true)

echo "| streams | completed | errors | most open at once | keel RSS idle before | peak (VmHWM) | during the hold (median) | idle ${SETTLE} s after | keel mock: idle, during, peak |"
echo "|---|---|---|---|---|---|---|---|---|"
echo "| $STREAMS × ${DURATION} s | $COMPLETED | $FAILED | $MAX_OPEN | $(mib "$IDLE_KIB") MiB | $(mib "$PEAK_KIB") MiB | $(mib "$DURING_KIB") MiB | $(mib "$AFTER_KIB") MiB | $(mib "$MOCK_IDLE_KIB"), $(mib "$MOCK_DURING_KIB"), $(mib "$MOCK_PEAK_KIB") MiB |"
echo
echo "- keel: workers ${WORKERS:-default ($(nproc) cores)}, $ERRORS WARN or ERROR lines in its log; highest RSS sampled each second $(mib "$MAX_SAMPLED_KIB") MiB"
echo "- keel RSS split into anonymous (heap, stacks) + file-backed (its binary's pages, shared): idle $(mib "$IDLE_ANON_KIB") + $(mib "$IDLE_FILE_KIB") MiB, during the hold $(mib "$DURING_ANON_KIB") + $(mib "$DURING_FILE_KIB") MiB; $(( (DURING_ANON_KIB - IDLE_ANON_KIB) / STREAMS )) KiB anonymous per stream"
echo "- machine: $(nproc) cores, $(uname -r); open-file limit $(ulimit -Sn) (keel: $(awk '/Max open files/ {print $4}' "/proc/$KEEL_PID/limits"))"
[ "$FAILED" -eq 0 ]
