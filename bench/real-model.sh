#!/usr/bin/env bash
# End-to-end against a real model: the official Ollama Python client → keel → llama.cpp's
# llama-server (OpenAI dialect) running SmolLM2-135M, all on 127.0.0.1. Builds llama-server once
# (~4 min on 2 cores) with ../shared/tools/real-llm/setup.sh, then runs a few checks and prints
# what the model answered. Not part of the test suite: it needs the model build.
#
# Usage: bench/real-model.sh [ROUNDS]      (default 5 structured-output requests)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
TOOLS="${REAL_LLM_TOOLS:-../shared/tools/real-llm}"
LLAMA_PORT=18080; KEEL_PORT=18090
WORK="$(mktemp -d /tmp/keel-real.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

bash "$TOOLS/setup.sh" >&2
LLAMA_PID=$(bash "$TOOLS/serve.sh" "$LLAMA_PORT"); pids+=("$LLAMA_PID")
MODEL=$(curl -s "http://127.0.0.1:$LLAMA_PORT/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
bash scripts/install-test-clients.sh --python-only
cargo build --release -p keel-cli --locked -q

cat >"$WORK/keel.toml" <<CONF
[server]
listen = "127.0.0.1:$KEEL_PORT"
[[upstream]]
name = "llamacpp"
url = "http://127.0.0.1:$LLAMA_PORT"
dialect = "openai"
[[route]]
model = "smollm2"
targets = ["llamacpp:$MODEL"]
CONF
target/release/keel serve --config "$WORK/keel.toml" --store "sqlite://$WORK/keel.db" 2>"$WORK/keel.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$KEEL_PORT/keel/health" >/dev/null && break; sleep 0.1; done

target/test-clients/venv/bin/python - "http://127.0.0.1:$KEEL_PORT" "$ROUNDS" <<'PY'
import json, sys, time
import ollama
url, rounds = sys.argv[1], int(sys.argv[2])
client = ollama.Client(host=url)
t = time.time()
r = client.chat(model="smollm2", messages=[{"role": "user", "content": "Say hello in five words."}], options={"num_predict": 24})
print(f"chat (non-stream): {r.message.content!r} [{r.eval_count} tokens, {time.time()-t:.2f}s]")
parts = [c.message.content for c in client.chat(model="smollm2", messages=[{"role": "user", "content": "Count to five."}], stream=True, options={"num_predict": 24})]
print(f"chat (stream): {len(parts)} chunks: {''.join(parts)!r}")
g = client.generate(model="smollm2", prompt="The capital of France is", options={"num_predict": 8})
print(f"generate: {g.response!r}")
schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}}, "required": ["city", "population"]}
ok = 0
for i in range(rounds):
    r = client.chat(model="smollm2", messages=[{"role": "user", "content": "Give a city and its population as JSON."}], format=schema, options={"num_predict": 64, "seed": i})
    try:
        value = json.loads(r.message.content)
        ok += isinstance(value.get("city"), str) and isinstance(value.get("population"), int)
    except Exception:
        pass
print(f"format=schema (llama-server constrained decoding): {ok}/{rounds} answers parse and match the schema")
try:
    client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
except ollama.ResponseError as e:
    print(f"unknown model: ResponseError {e.status_code}: {e.error}")
PY
