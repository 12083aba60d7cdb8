#!/usr/bin/env python3
"""Drives the Anthropic Python SDK against a server's Anthropic Messages API (`/v1/messages`).

Usage: anthropic_client_test.py URL [EXPECTED_REPLY]

URL is the server's base URL (keel, keel-mock or a real Ollama, which serves the Messages API).
The server must know the model `llama3.2` (answering EXPECTED_REPLY, when given, to plain
requests; a `get_weather` tool use with a string `city` argument when tools are offered, and text
once the conversation ends with the tool's result) and must not know `no-such-model`.

Prints one line per check (`ok NAME` or `FAIL NAME: reason`) and ends with exactly
`N passed, M failed`; exits 1 if any check failed. Run by crates/keel-gateway/tests/clients.rs
with the venv from scripts/install-test-clients.sh.
"""

import asyncio
import importlib.metadata
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import CheckFailed, check  # noqa: E402

import anthropic
import httpx

MODEL = "llama3.2"
UNKNOWN = "no-such-model"
URL = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:11434").rstrip("/")
EXPECTED_REPLY = sys.argv[2] if len(sys.argv) > 2 else None
# What answers behind URL: "ollama" (serves the Messages API itself) or "openai" (keel translates).
UPSTREAM_DIALECT = os.environ.get("KEEL_UPSTREAM_DIALECT", "ollama")
TIMEOUT = 30.0
MAX_TOKENS = 256

# No retries: a proxy that answers an error must not be hidden by the SDK retrying.
client = anthropic.Anthropic(base_url=URL, api_key="unused", max_retries=0, timeout=TIMEOUT)

USER = [{"role": "user", "content": "Say hello."}]

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
    "required": ["city", "temperature"],
    "additionalProperties": False,
}


def check_reply_text(text, what):
    check(isinstance(text, str) and text != "", f"{what}: empty text {text!r}")
    if EXPECTED_REPLY is not None:
        check(text == EXPECTED_REPLY, f"{what}: text {text!r} != expected {EXPECTED_REPLY!r}")


def is_model(name):
    return name in (MODEL, MODEL + ":latest")


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def check_usage(usage, what):
    check(usage is not None, f"{what}: usage missing")
    check(usage.input_tokens > 0, f"{what}: input_tokens {usage.input_tokens}")
    check(usage.output_tokens > 0, f"{what}: output_tokens {usage.output_tokens}")


# ---------------------------------------------------------------------------------------------
# checks


def check_messages_create():
    msg = client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=USER)
    check(msg.type == "message", f"type {msg.type!r}")
    check(msg.id.startswith("msg_"), f"id {msg.id!r}")
    check(msg.role == "assistant", f"role {msg.role!r}")
    check(is_model(msg.model), f"model {msg.model!r}")
    check(msg.stop_reason == "end_turn", f"stop_reason {msg.stop_reason!r}")
    check([b.type for b in msg.content] == ["text"], f"content blocks {[b.type for b in msg.content]!r}")
    check_reply_text(text_of(msg), "messages.create")
    check_usage(msg.usage, "messages.create")


def check_messages_create_system_and_params():
    msg = client.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        system="Be terse.",
        messages=USER,
        stop_sequences=["\n\n"],
        metadata={"user_id": "keel-test"},
    )
    check_reply_text(text_of(msg), "messages.create with system and params")


def check_messages_stream_helper():
    with client.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, messages=USER) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    check(len(pieces) >= 2, f"only {len(pieces)} text piece(s): not streamed")
    check_reply_text("".join(pieces), "messages.stream")
    check(final.stop_reason == "end_turn", f"final stop_reason {final.stop_reason!r}")
    check_reply_text(text_of(final), "messages.stream final message")
    check(final.usage.output_tokens > 0, f"final output_tokens {final.usage.output_tokens}")


def check_messages_create_stream_events():
    events = list(client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=USER, stream=True))
    types = [e.type for e in events]
    check(types[0] == "message_start", f"first event {types[0]!r}")
    check(types[-1] == "message_stop", f"last event {types[-1]!r}")
    for t in ("content_block_start", "content_block_delta", "content_block_stop", "message_delta"):
        check(t in types, f"no {t} event in {types!r}")
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    check_reply_text(text, "create(stream=True)")
    delta = next(e for e in events if e.type == "message_delta")
    check(delta.delta.stop_reason == "end_turn", f"message_delta stop_reason {delta.delta.stop_reason!r}")


def check_tool_use_round_trip():
    msg = client.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
    )
    check(msg.stop_reason == "tool_use", f"stop_reason {msg.stop_reason!r}")
    uses = [b for b in msg.content if b.type == "tool_use"]
    check(len(uses) == 1, f"{len(uses)} tool_use blocks: {msg.content!r}")
    use = uses[0]
    check(use.name == "get_weather", f"tool name {use.name!r}")
    check(isinstance(use.input, dict) and isinstance(use.input.get("city"), str), f"tool input {use.input!r}")
    check(isinstance(use.id, str) and use.id, f"tool_use id {use.id!r}")
    follow_up = client.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C, sunny"}]},
        ],
    )
    check(follow_up.stop_reason == "end_turn", f"after the tool result: stop_reason {follow_up.stop_reason!r}")
    check_reply_text(text_of(follow_up), "after the tool result")


def check_tool_use_stream():
    with client.messages.stream(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    check(final.stop_reason == "tool_use", f"stop_reason {final.stop_reason!r}")
    uses = [b for b in final.content if b.type == "tool_use"]
    check(len(uses) == 1, f"{len(uses)} tool_use blocks: {final.content!r}")
    check(uses[0].name == "get_weather", f"tool name {uses[0].name!r}")
    check(isinstance(uses[0].input.get("city"), str), f"streamed tool input {uses[0].input!r}")


def check_structured_output():
    msg = client.messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": "Weather in Paris as JSON."}],
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
    )
    try:
        value = json.loads(text_of(msg))
    except json.JSONDecodeError as e:
        raise CheckFailed(f"text is not JSON ({e}): {text_of(msg)!r}")
    check(isinstance(value, dict) and isinstance(value.get("city"), str), f"not the schema's shape: {value!r}")
    check(isinstance(value.get("temperature"), (int, float)), f"temperature not a number: {value!r}")


def check_count_tokens():
    if UPSTREAM_DIALECT == "openai":
        # An OpenAI-dialect server has no token counting: keel says so instead of guessing.
        try:
            client.messages.count_tokens(model=MODEL, messages=USER)
        except anthropic.BadRequestError as e:
            check("count_tokens" in str(e), f"message {e}")
            return
        check(False, "no BadRequestError for count_tokens behind an OpenAI-dialect upstream")
        return
    count = client.messages.count_tokens(model=MODEL, messages=USER)
    check(isinstance(count.input_tokens, int) and count.input_tokens > 0, f"input_tokens {count.input_tokens!r}")


def check_unknown_model_not_found():
    try:
        client.messages.create(model=UNKNOWN, max_tokens=MAX_TOKENS, messages=USER)
    except anthropic.NotFoundError as e:
        check(e.status_code == 404, f"status {e.status_code}")
        check(isinstance(e.body, dict) and e.body.get("type") == "error", f"body {e.body!r}")
        check(e.body["error"].get("type") == "not_found_error", f"error type {e.body['error']!r}")
        return
    check(False, "no NotFoundError for an unknown model")


def check_missing_max_tokens_400():
    r = httpx.post(URL + "/v1/messages", json={"model": MODEL, "messages": USER},
                   headers={"anthropic-version": "2023-06-01", "x-api-key": "unused"}, timeout=TIMEOUT)
    check(r.status_code == 400, f"status {r.status_code}: {r.text!r}")
    body = r.json()
    check(body.get("type") == "error" and body["error"].get("type") == "invalid_request_error", f"body {body!r}")


def check_async_stream():
    async def run():
        aclient = anthropic.AsyncAnthropic(base_url=URL, api_key="unused", max_retries=0, timeout=TIMEOUT)
        async with aclient.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, messages=USER) as stream:
            text = "".join([t async for t in stream.text_stream])
        await aclient.close()
        return text

    check_reply_text(asyncio.run(run()), "async messages.stream")


CHECKS = [
    check_messages_create,
    check_messages_create_system_and_params,
    check_messages_stream_helper,
    check_messages_create_stream_events,
    check_tool_use_round_trip,
    check_tool_use_stream,
    check_structured_output,
    check_count_tokens,
    check_unknown_model_not_found,
    check_missing_max_tokens_400,
    check_async_stream,
]


def main():
    return harness.run(f"anthropic-python {importlib.metadata.version('anthropic')} against {URL}", CHECKS)


if __name__ == "__main__":
    sys.exit(main())
