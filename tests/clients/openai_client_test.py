#!/usr/bin/env python3
"""Drives the OpenAI Python SDK against an Ollama-compatible server's `/v1` endpoints.

Usage: openai_client_test.py URL [EXPECTED_REPLY]

URL is the server's base URL without `/v1` (keel, keel-mock or a real Ollama). The server must
know the model `llama3.2` (answering EXPECTED_REPLY, when given, to plain requests; a
`get_weather` tool call with a string `city` argument when tools are offered) and must not know
`no-such-model`.

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

import httpx
import openai

MODEL = "llama3.2"
UNKNOWN = "no-such-model"
URL = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:11434").rstrip("/")
EXPECTED_REPLY = sys.argv[2] if len(sys.argv) > 2 else None
TIMEOUT = 30.0

# No retries: a proxy that answers an error must not be hidden by the SDK retrying.
client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)

USER = [{"role": "user", "content": "Say hello."}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temperature": {"type": "number"},
        "conditions": {"type": "string", "enum": ["sunny", "cloudy", "rainy"]},
    },
    "required": ["city", "temperature", "conditions"],
    "additionalProperties": False,
}


def check_reply_text(text, what):
    check(isinstance(text, str) and text != "", f"{what}: empty content {text!r}")
    if EXPECTED_REPLY is not None:
        check(text == EXPECTED_REPLY, f"{what}: content {text!r} != expected {EXPECTED_REPLY!r}")


def check_vector(vec, what):
    check(isinstance(vec, list) and len(vec) > 0, f"{what}: not a non-empty list: {vec!r:.80}")
    check(all(isinstance(x, (int, float)) and math.isfinite(x) for x in vec), f"{what}: non-numeric values")


def is_model(name):
    return name in (MODEL, MODEL + ":latest")


def parse_json(content, what):
    try:
        return json.loads(content)
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckFailed(f"{what}: content is not JSON ({e}): {content!r}")


def check_v1_error_body(body, what):
    check(isinstance(body, dict), f"{what}: body not a JSON object: {body!r}")
    err = body.get("error")
    check(isinstance(err, dict), f"{what}: `error` is not an object: {body!r}")
    check(isinstance(err.get("message"), str) and err["message"], f"{what}: no error.message: {body!r}")
    return err


# ---------------------------------------------------------------------------------------------
# checks


def check_chat():
    resp = client.chat.completions.create(model=MODEL, messages=USER)
    check(resp.object == "chat.completion", f"object {resp.object!r}")
    check(resp.id, "id missing")
    check(is_model(resp.model), f"model {resp.model!r}")
    check(len(resp.choices) == 1, f"{len(resp.choices)} choices")
    choice = resp.choices[0]
    check(choice.index == 0, f"index {choice.index}")
    check(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}")
    check(choice.message.role == "assistant", f"role {choice.message.role!r}")
    check_reply_text(choice.message.content, "chat")
    check(resp.usage is not None, "usage missing")
    check(resp.usage.completion_tokens > 0, f"completion_tokens {resp.usage.completion_tokens}")
    check(resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens,
          f"total_tokens inconsistent: {resp.usage!r}")


def check_chat_params():
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be terse."}] + USER,
        temperature=0,
        top_p=0.9,
        max_tokens=64,
        seed=7,
        stop=["\n\n"],
        frequency_penalty=0.1,
        presence_penalty=0.1,
    )
    check_reply_text(resp.choices[0].message.content, "chat with params")


def check_chat_stream():
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
    check(len(chunks) >= 2, f"only {len(chunks)} chunk(s): not streamed")
    check(all(c.object == "chat.completion.chunk" for c in chunks), "a chunk has the wrong object type")
    check(len({c.id for c in chunks}) == 1, "chunk ids differ")
    content_chunks = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    check_reply_text(text, "chat stream")
    finish = [c.choices[0].finish_reason for c in content_chunks if c.choices[0].finish_reason]
    check(finish == ["stop"], f"finish reasons {finish!r}")
    whole = client.chat.completions.create(model=MODEL, messages=USER).choices[0].message.content
    check(text == whole, f"streamed {text!r} != non-streamed {whole!r}")


def check_chat_stream_include_usage():
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    usage_chunks = [c for c in chunks if c.usage is not None]
    check(len(usage_chunks) == 1, f"{len(usage_chunks)} chunks carry usage (want 1)")
    u = usage_chunks[0]
    check(u is chunks[-1], "usage chunk is not the last chunk")
    check(u.choices == [], f"usage chunk has choices: {u.choices!r}")
    check(u.usage.completion_tokens > 0, f"completion_tokens {u.usage.completion_tokens}")
    check(u.usage.total_tokens == u.usage.prompt_tokens + u.usage.completion_tokens,
          f"total_tokens inconsistent: {u.usage!r}")


def check_chat_response_format_json_schema():
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}},
    )
    value = parse_json(resp.choices[0].message.content, "json_schema")
    check(isinstance(value, dict), f"not an object: {value!r}")
    for key in SCHEMA["required"]:
        check(key in value, f"required key {key!r} missing: {value!r}")
    check(isinstance(value["city"], str), f"city not a string: {value!r}")
    check(isinstance(value["temperature"], (int, float)) and not isinstance(value["temperature"], bool),
          f"temperature not a number: {value!r}")
    check(value["conditions"] in ("sunny", "cloudy", "rainy"), f"conditions not in enum: {value!r}")


def check_chat_response_format_json_object():
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Reply in JSON."}],
        response_format={"type": "json_object"},
    )
    value = parse_json(resp.choices[0].message.content, "json_object")
    check(isinstance(value, dict), f"not a JSON object: {value!r}")


def check_chat_parse_pydantic():
    # The SDK's structured-output helper: sends a json_schema built from a pydantic model.
    try:
        from pydantic import BaseModel
    except ImportError:
        return

    class Weather(BaseModel):
        city: str
        temperature: float

    parse = getattr(client.chat.completions, "parse", None)
    if parse is None:
        parse = client.beta.chat.completions.parse
    resp = parse(model=MODEL, messages=[{"role": "user", "content": "Weather?"}], response_format=Weather)
    parsed = resp.choices[0].message.parsed
    check(isinstance(parsed, Weather), f"parsed is {parsed!r}")


def check_tool_calls(calls, what):
    check(calls, f"{what}: no tool_calls")
    call = calls[0]
    check(call.type == "function", f"{what}: type {call.type!r}")
    check(call.id, f"{what}: tool call id missing")
    check(call.function.name == "get_weather", f"{what}: name {call.function.name!r}")
    args = parse_json(call.function.arguments, f"{what} arguments")
    check(isinstance(args, dict) and isinstance(args.get("city"), str), f"{what}: arguments {args!r}")


def check_chat_tools():
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL])
    choice = resp.choices[0]
    check(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}")
    check_tool_calls(choice.message.tool_calls, "chat tools")


def check_chat_tools_stream():
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL],
        stream=True))
    # Reassemble tool calls from deltas the way SDK users do.
    calls = {}
    finish = None
    for c in chunks:
        if not c.choices:
            continue
        ch = c.choices[0]
        finish = ch.finish_reason or finish
        for tc in ch.delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "type": None, "name": "", "arguments": ""})
            slot["id"] = tc.id or slot["id"]
            slot["type"] = tc.type or slot["type"]
            if tc.function:
                slot["name"] += tc.function.name or ""
                slot["arguments"] += tc.function.arguments or ""
    check(calls, "no tool call deltas")
    first = calls[min(calls)]
    check(first["name"] == "get_weather", f"name {first['name']!r}")
    check(first["id"], "tool call id missing")
    args = parse_json(first["arguments"], "streamed arguments")
    check(isinstance(args, dict) and isinstance(args.get("city"), str), f"arguments {args!r}")
    check(finish == "tool_calls", f"finish_reason {finish!r}")


def check_chat_tool_result_roundtrip():
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    resp = client.chat.completions.create(model=MODEL, messages=messages)
    check_reply_text(resp.choices[0].message.content, "chat after tool result")


def check_completions_legacy():
    resp = client.completions.create(model=MODEL, prompt="Say hello.")
    check(resp.object == "text_completion", f"object {resp.object!r}")
    check(len(resp.choices) == 1, f"{len(resp.choices)} choices")
    check_reply_text(resp.choices[0].text, "completions")
    check(resp.choices[0].finish_reason == "stop", f"finish_reason {resp.choices[0].finish_reason!r}")
    check(resp.usage is not None and resp.usage.completion_tokens > 0, f"usage {resp.usage!r}")


def check_completions_legacy_stream():
    chunks = list(client.completions.create(model=MODEL, prompt="Say hello.", stream=True))
    check(len(chunks) >= 2, f"only {len(chunks)} chunk(s): not streamed")
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    check_reply_text(text, "completions stream")


def check_embeddings_default_base64():
    # The SDK asks for base64 by default and decodes it; a float list must also work.
    resp = client.embeddings.create(model=MODEL, input="hello world")
    check(resp.object == "list", f"object {resp.object!r}")
    check(len(resp.data) == 1, f"{len(resp.data)} embeddings")
    check(resp.data[0].object == "embedding", f"data object {resp.data[0].object!r}")
    check_vector(resp.data[0].embedding, "embedding")
    check(is_model(resp.model), f"model {resp.model!r}")


def check_embeddings_float_list():
    inputs = ["first", "second", "third"]
    resp = client.embeddings.create(model=MODEL, input=inputs, encoding_format="float")
    check(len(resp.data) == len(inputs), f"{len(resp.data)} embeddings for {len(inputs)} inputs")
    check([d.index for d in resp.data] == [0, 1, 2], f"indexes {[d.index for d in resp.data]}")
    dims = {len(d.embedding) for d in resp.data}
    check(len(dims) == 1, f"vectors of different lengths: {dims}")
    for d in resp.data:
        check_vector(d.embedding, f"embedding[{d.index}]")
    single = client.embeddings.create(model=MODEL, input="first", encoding_format="float")
    check(single.data[0].embedding == resp.data[0].embedding, "same input gave a different vector")


def check_models_list():
    models = list(client.models.list())
    ids = [m.id for m in models]
    check(any(is_model(i) for i in ids), f"{MODEL} not in {ids}")
    m = next(m for m in models if is_model(m.id))
    check(m.object == "model", f"object {m.object!r}")
    check(isinstance(m.created, int), f"created {m.created!r}")
    check(m.owned_by, "owned_by missing")


def check_models_retrieve():
    m = client.models.retrieve(MODEL)
    check(is_model(m.id), f"id {m.id!r}")
    check(m.object == "model", f"object {m.object!r}")


def expect_not_found(fn, what):
    try:
        result = fn()
        if hasattr(result, "__iter__") and hasattr(result, "__next__"):
            for _ in result:
                pass
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"{what}: status {e.status_code}")
        body = e.body if isinstance(e.body, dict) else {}
        msg = body.get("message") or str(e)
        check("not found" in msg, f"{what}: message {msg!r} lacks 'not found'")
        return
    except openai.APIStatusError as e:
        raise CheckFailed(f"{what}: {type(e).__name__} status {e.status_code} instead of NotFoundError: {e}")
    raise CheckFailed(f"{what}: no error for an unknown model")


def check_chat_unknown_404():
    expect_not_found(lambda: client.chat.completions.create(model=UNKNOWN, messages=USER), "chat")


def check_chat_stream_unknown_404():
    expect_not_found(lambda: client.chat.completions.create(model=UNKNOWN, messages=USER, stream=True),
                     "chat stream")


def check_embeddings_unknown_404():
    expect_not_found(lambda: client.embeddings.create(model=UNKNOWN, input="hi"), "embeddings")


def check_models_retrieve_unknown_404():
    expect_not_found(lambda: client.models.retrieve(UNKNOWN), "models.retrieve")


def check_unknown_404_body_shape():
    r = httpx.post(URL + "/v1/chat/completions", json={"model": UNKNOWN, "messages": USER}, timeout=TIMEOUT)
    check(r.status_code == 404, f"status {r.status_code}: {r.text!r}")
    check("application/json" in r.headers.get("content-type", ""), f"content-type {r.headers.get('content-type')!r}")
    err = check_v1_error_body(r.json(), "404 body")
    check("not found" in err["message"] and UNKNOWN in err["message"], f"message {err['message']!r}")
    for key in ("type", "param", "code"):
        check(key in err, f"error object lacks {key!r}: {err!r}")


def check_malformed_json_400():
    r = httpx.post(URL + "/v1/chat/completions", content=b'{"model": "llama3.2", "messages": [',
                   headers={"Content-Type": "application/json", "Authorization": "Bearer unused"},
                   timeout=TIMEOUT)
    check(r.status_code == 400, f"status {r.status_code}: {r.text!r}")
    try:
        body = r.json()
    except ValueError:
        raise CheckFailed(f"400 body is not JSON: {r.text!r}")
    err = check_v1_error_body(body, "400 body")
    for key in ("type", "param", "code"):
        check(key in err, f"error object lacks {key!r}: {err!r}")


def check_malformed_request_sdk_400():
    # A well-formed JSON body the server must reject: the SDK maps it to BadRequestError.
    try:
        client.chat.completions.create(model=MODEL, messages="not a list")  # type: ignore[arg-type]
    except openai.BadRequestError as e:
        check(e.status_code == 400, f"status {e.status_code}")
        return
    except openai.APIStatusError as e:
        raise CheckFailed(f"{type(e).__name__} status {e.status_code} instead of BadRequestError: {e}")
    raise CheckFailed("no error for messages that are not a list")


def check_async_chat_stream():
    async def run():
        aclient = openai.AsyncOpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
        try:
            stream = await aclient.chat.completions.create(model=MODEL, messages=USER, stream=True)
            text = ""
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
            return text
        finally:
            await aclient.close()

    text = asyncio.run(run())
    check_reply_text(text, "async chat stream")


CHECKS = [
    check_chat,
    check_chat_params,
    check_chat_stream,
    check_chat_stream_include_usage,
    check_chat_response_format_json_schema,
    check_chat_response_format_json_object,
    check_chat_parse_pydantic,
    check_chat_tools,
    check_chat_tools_stream,
    check_chat_tool_result_roundtrip,
    check_completions_legacy,
    check_completions_legacy_stream,
    check_embeddings_default_base64,
    check_embeddings_float_list,
    check_models_list,
    check_models_retrieve,
    check_chat_unknown_404,
    check_chat_stream_unknown_404,
    check_embeddings_unknown_404,
    check_models_retrieve_unknown_404,
    check_unknown_404_body_shape,
    check_malformed_json_400,
    check_malformed_request_sdk_400,
    check_async_chat_stream,
]


def main():
    return harness.run(f"openai-python {importlib.metadata.version('openai')} against {URL}/v1", CHECKS)


if __name__ == "__main__":
    sys.exit(main())
