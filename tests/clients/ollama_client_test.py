#!/usr/bin/env python3
"""Drives the official `ollama` Python client against an Ollama-compatible server.

Usage: ollama_client_test.py URL [EXPECTED_REPLY]

URL is the server's base URL (keel, keel-mock or a real Ollama). The server must know the
model `llama3.2` (answering EXPECTED_REPLY, when given, to plain chat/generate requests; a
`get_weather` tool call with a string `city` argument when tools are offered; listed by
`/api/ps`) and must not know `no-such-model`.

Prints one line per check (`ok NAME` or `FAIL NAME: reason`) and ends with exactly
`N passed, M failed`; exits 1 if any check failed. Run by crates/keel-gateway/tests/clients.rs
with the venv from scripts/install-test-clients.sh.
"""

import asyncio
import importlib.metadata
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import CheckFailed, check  # noqa: E402,F401

import ollama

MODEL = "llama3.2"
UNKNOWN = "no-such-model"
URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:11434"
EXPECTED_REPLY = sys.argv[2] if len(sys.argv) > 2 else None
TIMEOUT = 30.0

client = ollama.Client(host=URL, timeout=TIMEOUT)

USER = [{"role": "user", "content": "Say hello."}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temperature": {"type": "number"},
        "conditions": {"type": "string", "enum": ["sunny", "cloudy", "rainy"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "temperature", "conditions"],
}


def check_reply_text(text, what):
    check(isinstance(text, str) and text != "", f"{what}: empty content {text!r}")
    if EXPECTED_REPLY is not None:
        check(text == EXPECTED_REPLY, f"{what}: content {text!r} != expected {EXPECTED_REPLY!r}")


def check_vector(vec, what):
    check(isinstance(vec, (list, tuple)) and len(vec) > 0, f"{what}: not a non-empty list: {vec!r:.80}")
    check(all(isinstance(x, (int, float)) and math.isfinite(x) for x in vec), f"{what}: non-numeric values")


def check_schema_value(value):
    check(isinstance(value, dict), f"not an object: {value!r}")
    for key in SCHEMA["required"]:
        check(key in value, f"required key {key!r} missing from {value!r}")
    check(isinstance(value["city"], str), f"city not a string: {value!r}")
    check(isinstance(value["temperature"], (int, float)) and not isinstance(value["temperature"], bool),
          f"temperature not a number: {value!r}")
    check(value["conditions"] in ("sunny", "cloudy", "rainy"), f"conditions not in enum: {value!r}")
    if "tags" in value:
        check(isinstance(value["tags"], list) and all(isinstance(t, str) for t in value["tags"]),
              f"tags not a list of strings: {value!r}")


def expect_not_found(fn, what):
    try:
        result = fn()
        # A streamed call returns a generator: the error surfaces on iteration.
        if hasattr(result, "__iter__") and not isinstance(result, (dict, str)) and hasattr(result, "__next__"):
            for _ in result:
                pass
    except ollama.ResponseError as e:
        check(e.status_code == 404, f"{what}: status_code {e.status_code} != 404 (error {e.error!r})")
        check("not found" in str(e.error), f"{what}: error {e.error!r} lacks 'not found'")
        check(UNKNOWN in str(e.error), f"{what}: error {e.error!r} does not name the model")
        return
    raise CheckFailed(f"{what}: no ResponseError raised for unknown model")


# ---------------------------------------------------------------------------------------------
# checks


def check_version():
    if hasattr(client, "version"):
        v = client.version()
        version = v.get("version") if isinstance(v, dict) else getattr(v, "version", None)
    else:
        # ollama-python has no version() here: use the client's own transport and headers.
        r = client._client.get("/api/version")
        check(r.status_code == 200, f"GET /api/version status {r.status_code}: {r.text!r}")
        version = r.json().get("version")
    check(isinstance(version, str) and version != "", f"no version string: {version!r}")


def check_list():
    resp = client.list()
    names = [m.model for m in resp.models]
    check(any(n in (MODEL, MODEL + ":latest") for n in names), f"{MODEL} not in {names}")
    m = next(m for m in resp.models if m.model in (MODEL, MODEL + ":latest"))
    check(m.size is not None and m.size > 0, f"size missing: {m!r}")
    check(m.digest, f"digest missing: {m!r}")
    check(m.modified_at is not None, f"modified_at missing: {m!r}")
    check(m.details is not None and m.details.family, f"details.family missing: {m!r}")


def check_show():
    resp = client.show(MODEL)
    check(resp.details is not None, "details missing")
    check(resp.details.family, f"details.family missing: {resp.details!r}")
    check(resp.modelinfo is not None and len(resp.modelinfo) > 0, f"model_info missing: {resp.modelinfo!r}")
    caps = getattr(resp, "capabilities", None)
    if caps is not None:
        check("completion" in caps, f"capabilities lack 'completion': {caps!r}")


def check_show_unknown_404():
    expect_not_found(lambda: client.show(UNKNOWN), "show")


def check_ps():
    resp = client.ps()
    names = [m.model for m in resp.models]
    check(any(n in (MODEL, MODEL + ":latest") for n in names), f"{MODEL} not loaded: {names}")
    m = next(m for m in resp.models if m.model in (MODEL, MODEL + ":latest"))
    check(m.expires_at is not None, f"expires_at missing: {m!r}")
    check(m.size is not None and m.size > 0, f"size missing: {m!r}")


def check_chat():
    resp = client.chat(model=MODEL, messages=USER)
    check(resp.done is True, f"done is {resp.done!r}")
    check(resp.message.role == "assistant", f"role {resp.message.role!r}")
    check_reply_text(resp.message.content, "chat")
    check(resp.done_reason == "stop", f"done_reason {resp.done_reason!r}")
    check(resp.model in (MODEL, MODEL + ":latest"), f"model {resp.model!r}")
    check(resp.eval_count is not None and resp.eval_count > 0, f"eval_count {resp.eval_count!r}")
    check(resp.prompt_eval_count is not None, "prompt_eval_count missing")
    check(resp.total_duration is not None, "total_duration missing")
    check(resp.created_at, "created_at missing")


def check_chat_stream():
    parts = list(client.chat(model=MODEL, messages=USER, stream=True))
    check(len(parts) >= 2, f"only {len(parts)} chunk(s): not streamed")
    check(all(p.done is False for p in parts[:-1]), "a chunk before the last has done=true")
    last = parts[-1]
    check(last.done is True, "last chunk not done")
    check(last.done_reason == "stop", f"done_reason {last.done_reason!r}")
    check(last.eval_count is not None and last.eval_count > 0, f"final eval_count {last.eval_count!r}")
    text = "".join(p.message.content or "" for p in parts)
    check_reply_text(text, "chat stream")
    whole = client.chat(model=MODEL, messages=USER).message.content
    check(text == whole, f"streamed text {text!r} != non-streamed {whole!r}")


def check_chat_options_keep_alive():
    resp = client.chat(
        model=MODEL,
        messages=[{"role": "system", "content": "You are terse."}] + USER,
        options={"temperature": 0, "seed": 42, "num_predict": 64, "num_ctx": 2048},
        keep_alive="5m",
    )
    check(resp.done is True, "not done")
    check_reply_text(resp.message.content, "chat with options")


def check_chat_multiturn_tool_result():
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": '{"temperature": 21}', "tool_name": "get_weather"},
    ]
    resp = client.chat(model=MODEL, messages=messages)
    check(resp.done is True, "not done")
    check_reply_text(resp.message.content, "chat after tool result")


def check_generate():
    resp = client.generate(model=MODEL, prompt="Say hello.")
    check(resp.done is True, f"done is {resp.done!r}")
    check_reply_text(resp.response, "generate")
    check(resp.done_reason == "stop", f"done_reason {resp.done_reason!r}")
    check(resp.eval_count is not None and resp.eval_count > 0, f"eval_count {resp.eval_count!r}")


def check_generate_stream():
    parts = list(client.generate(model=MODEL, prompt="Say hello.", stream=True))
    check(len(parts) >= 2, f"only {len(parts)} chunk(s): not streamed")
    check(parts[-1].done is True, "last chunk not done")
    check(all(p.done is False for p in parts[:-1]), "a chunk before the last has done=true")
    text = "".join(p.response or "" for p in parts)
    check_reply_text(text, "generate stream")
    whole = client.generate(model=MODEL, prompt="Say hello.").response
    check(text == whole, f"streamed text {text!r} != non-streamed {whole!r}")


def check_generate_system_options():
    resp = client.generate(model=MODEL, prompt="Say hello.", system="Be terse.",
                           options={"temperature": 0.2, "stop": ["\n\n"]}, keep_alive=300)
    check(resp.done is True, "not done")
    check_reply_text(resp.response, "generate with system/options")


def check_chat_format_schema():
    resp = client.chat(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris as JSON."}],
                       format=SCHEMA)
    content = resp.message.content
    try:
        value = json.loads(content)
    except json.JSONDecodeError as e:
        raise CheckFailed(f"content is not JSON ({e}): {content!r}")
    check_schema_value(value)


def check_chat_format_schema_stream():
    parts = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "Weather as JSON."}],
                             format=SCHEMA, stream=True))
    check(parts and parts[-1].done is True, "last chunk not done")
    content = "".join(p.message.content or "" for p in parts)
    try:
        value = json.loads(content)
    except json.JSONDecodeError as e:
        raise CheckFailed(f"streamed content is not JSON ({e}): {content!r}")
    check_schema_value(value)


def check_chat_format_json():
    resp = client.chat(model=MODEL, messages=[{"role": "user", "content": "Reply in JSON."}], format="json")
    content = resp.message.content
    try:
        value = json.loads(content)
    except json.JSONDecodeError as e:
        raise CheckFailed(f"content is not JSON ({e}): {content!r}")
    check(isinstance(value, (dict, list)), f"not a JSON object/array: {value!r}")


def check_generate_format_schema():
    resp = client.generate(model=MODEL, prompt="Weather in Paris as JSON.", format=SCHEMA)
    try:
        value = json.loads(resp.response)
    except json.JSONDecodeError as e:
        raise CheckFailed(f"response is not JSON ({e}): {resp.response!r}")
    check_schema_value(value)


def check_tool_call(calls, what):
    check(calls, f"{what}: no tool_calls")
    fn = calls[0].function
    check(fn.name == "get_weather", f"{what}: tool name {fn.name!r}")
    args = fn.arguments
    check(isinstance(args, dict), f"{what}: arguments not an object: {args!r}")
    check(isinstance(args.get("city"), str) and args["city"], f"{what}: no string city in {args!r}")


def check_chat_tools():
    resp = client.chat(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
                       tools=[WEATHER_TOOL])
    check(resp.done is True, "not done")
    check(resp.message.role == "assistant", f"role {resp.message.role!r}")
    check_tool_call(resp.message.tool_calls, "chat tools")


def check_chat_tools_python_function():
    def get_weather(city: str) -> str:
        """
        Get the current weather for a city.

        Args:
          city: The city name

        Returns:
          str: The weather
        """
        return "sunny"

    resp = client.chat(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
                       tools=[get_weather])
    check_tool_call(resp.message.tool_calls, "chat tools (python function)")


def check_chat_tools_stream():
    parts = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
                             tools=[WEATHER_TOOL], stream=True))
    check(parts and parts[-1].done is True, "last chunk not done")
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    check_tool_call(calls, "chat tools stream")


def check_embed_single():
    resp = client.embed(model=MODEL, input="hello world")
    check(len(resp.embeddings) == 1, f"{len(resp.embeddings)} embeddings for one input")
    check_vector(resp.embeddings[0], "embed single")
    check(resp.model in (MODEL, MODEL + ":latest"), f"model {resp.model!r}")
    again = client.embed(model=MODEL, input="hello world")
    check(again.embeddings[0] == resp.embeddings[0], "same input gave a different vector")


def check_embed_list():
    inputs = ["first", "second", "third"]
    resp = client.embed(model=MODEL, input=inputs)
    check(len(resp.embeddings) == len(inputs), f"{len(resp.embeddings)} embeddings for {len(inputs)} inputs")
    dims = {len(v) for v in resp.embeddings}
    check(len(dims) == 1, f"vectors of different lengths: {dims}")
    for i, v in enumerate(resp.embeddings):
        check_vector(v, f"embed list [{i}]")


def check_embeddings_legacy():
    if not hasattr(client, "embeddings"):
        return
    resp = client.embeddings(model=MODEL, prompt="hello world")
    check_vector(list(resp.embedding), "embeddings")


def check_chat_unknown_404():
    expect_not_found(lambda: client.chat(model=UNKNOWN, messages=USER), "chat")


def check_chat_stream_unknown_404():
    expect_not_found(lambda: client.chat(model=UNKNOWN, messages=USER, stream=True), "chat stream")


def check_generate_unknown_404():
    expect_not_found(lambda: client.generate(model=UNKNOWN, prompt="hi"), "generate")


def check_embed_unknown_404():
    expect_not_found(lambda: client.embed(model=UNKNOWN, input="hi"), "embed")


def check_async_chat_stream():
    async def run():
        aclient = ollama.AsyncClient(host=URL, timeout=TIMEOUT)
        parts = []
        async for part in await aclient.chat(model=MODEL, messages=USER, stream=True):
            parts.append(part)
        whole = await aclient.chat(model=MODEL, messages=USER)
        return parts, whole

    parts, whole = asyncio.run(run())
    check(len(parts) >= 2, f"only {len(parts)} chunk(s): not streamed")
    check(parts[-1].done is True, "last chunk not done")
    text = "".join(p.message.content or "" for p in parts)
    check_reply_text(text, "async chat stream")
    check(text == whole.message.content, f"streamed {text!r} != non-streamed {whole.message.content!r}")


CHECKS = [
    check_version,
    check_list,
    check_show,
    check_show_unknown_404,
    check_ps,
    check_chat,
    check_chat_stream,
    check_chat_options_keep_alive,
    check_chat_multiturn_tool_result,
    check_generate,
    check_generate_stream,
    check_generate_system_options,
    check_chat_format_schema,
    check_chat_format_schema_stream,
    check_chat_format_json,
    check_generate_format_schema,
    check_chat_tools,
    check_chat_tools_python_function,
    check_chat_tools_stream,
    check_embed_single,
    check_embed_list,
    check_embeddings_legacy,
    check_chat_unknown_404,
    check_chat_stream_unknown_404,
    check_generate_unknown_404,
    check_embed_unknown_404,
    check_async_chat_stream,
]


def main():
    return harness.run(f"ollama-python {importlib.metadata.version('ollama')} against {URL}", CHECKS)


if __name__ == "__main__":
    sys.exit(main())
