#!/usr/bin/env bash
# End-to-end against a real model: the official Ollama Python client → keel → llama.cpp's
# llama-server (OpenAI dialect) running SmolLM2-135M, all on 127.0.0.1. Builds llama-server once
# (~4 min on 2 cores) with ../shared/tools/real-llm/setup.sh, then runs a few checks and prints
# what the model answered. Not part of the test suite: it needs the model build.
#
# Usage: bench/real-model.sh [ROUNDS]      (default 60 structured-output requests per path)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-60}"
TOOLS="${REAL_LLM_TOOLS:-../shared/tools/real-llm}"
LLAMA_PORT=18080; KEEL_PORT=18090
WORK="$(mktemp -d /tmp/keel-real.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# Weight repacking selects llama.cpp's AMX kernels on CPUs that report AMX; in VMs that do not
# grant AMX tile state they crash at load (SIGSEGV in ggml_backend_amx_mul_mat). --no-repack
# avoids them at a small speed cost.
export REAL_LLM_ARGS="${REAL_LLM_ARGS:---no-repack}"
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
[[upstream]]
name = "unconstrained"             # the same server, but keel keeps format to itself
url = "http://127.0.0.1:$LLAMA_PORT"
dialect = "openai"
forward_format = false
[[route]]
model = "smollm2"
targets = ["llamacpp:$MODEL"]
[[route]]
model = "smollm2-free"
targets = ["unconstrained:$MODEL"]
[guard]
reasks = 2
CONF
target/release/keel serve --config "$WORK/keel.toml" --store "sqlite://$WORK/keel.db" 2>"$WORK/keel.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$KEEL_PORT/keel/health" >/dev/null && break; sleep 0.1; done

target/test-clients/venv/bin/python - "http://127.0.0.1:$KEEL_PORT" "$ROUNDS" "http://127.0.0.1:$LLAMA_PORT" "$MODEL" <<'PY'
import json, sys, time
import ollama
url, rounds, llama, model = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
client = ollama.Client(host=url)
t = time.time()
r = client.chat(model="smollm2", messages=[{"role": "user", "content": "Say hello in five words."}], options={"num_predict": 24})
print(f"chat (non-stream): {r.message.content!r} [{r.eval_count} tokens, {time.time()-t:.2f}s]")
parts = [c.message.content for c in client.chat(model="smollm2", messages=[{"role": "user", "content": "Count to five."}], stream=True, options={"num_predict": 24})]
print(f"chat (stream): {len(parts)} chunks: {''.join(parts)!r}")
g = client.generate(model="smollm2", prompt="The capital of France is", options={"num_predict": 8})
print(f"generate: {g.response!r}")
# Structured output: the same questions three ways. A schema with an enum, a number and a string,
# as an agent classifying support tickets would use.
schema = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "account", "other"]},
        "urgency": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string"},
    },
    "required": ["category", "urgency", "summary"],
}
tickets = [
    "I was charged twice for my subscription this month.",
    "The app crashes when I upload a photo.",
    "I forgot my password and the reset email never arrives.",
    "Can you add a dark mode?",
    "My invoice shows the wrong company name.",
    "Login fails with error 500 since this morning.",
]
def valid(text):
    try:
        v = json.loads(text)
    except Exception:
        return False
    return (isinstance(v, dict) and v.get("category") in schema["properties"]["category"]["enum"]
            and isinstance(v.get("urgency"), int) and not isinstance(v.get("urgency"), bool)
            and 1 <= v["urgency"] <= 5 and isinstance(v.get("summary"), str))
def prompt(i):
    return ("Classify this support ticket. Reply only with JSON matching this schema: "
            + json.dumps(schema) + "\nTicket: " + tickets[i % len(tickets)])
opts = lambda i: {"num_predict": 96, "seed": i, "temperature": 0.8}

from openai import OpenAI
direct = OpenAI(base_url=llama + "/v1", api_key="unused")
def direct_ask(i, constrained):
    extra = {"response_format": {"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema}}} if constrained else {}
    r = direct.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt(i)}],
                                       max_tokens=96, seed=i, temperature=0.8, **extra)
    return r.choices[0].message.content or ""

rows = []
for label, ask in [
    ("llama-server directly, prompt only (no constraint)", lambda i: direct_ask(i, False)),
    ("llama-server directly, response_format json_schema", lambda i: direct_ask(i, True)),
    ("Ollama client → keel → llama-server, format=schema", lambda i: client.chat(model="smollm2",
        messages=[{"role": "user", "content": prompt(i)}], format=schema, options=opts(i)).message.content),
    ("Ollama client → keel (forward_format = false) → llama-server, format=schema", lambda i: client.chat(
        model="smollm2-free", messages=[{"role": "user", "content": prompt(i)}], format=schema,
        options=opts(i)).message.content),
]:
    ok, errors, t = 0, 0, time.time()
    for i in range(rounds):
        try:
            ok += valid(ask(i))
        except Exception as e:
            errors += 1
    rows.append((label, ok, errors, time.time() - t))
print()
print(f"| path ({rounds} ticket classifications, SmolLM2-135M, temperature 0.8) | schema-valid | errors | time |")
print("|---|---|---|---|")
for label, ok, errors, secs in rows:
    print(f"| {label} | {ok}/{rounds} ({100*ok/rounds:.0f}%) | {errors} | {secs:.1f} s |")
metrics = __import__("urllib.request").request.urlopen(url + "/metrics").read().decode()
outcomes = [l for l in metrics.splitlines() if l.startswith("keel_structured_outputs_total")]
print()
print("keel's guard outcomes: " + ", ".join(l.split('outcome="')[1].split('"')[0] + " " + l.rsplit(" ", 1)[1] for l in outcomes))
fixes = [l for l in metrics.splitlines() if l.startswith("keel_repair_fixes_total")]
print("repair fixes: " + (", ".join(l.split('strategy="')[1].split('"')[0] + " " + l.rsplit(" ", 1)[1] for l in fixes) or "none"))
try:
    client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
except ollama.ResponseError as e:
    print(f"unknown model: ResponseError {e.status_code}: {e.error}")
PY
