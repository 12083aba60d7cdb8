#!/usr/bin/env python3
"""Drives the OpenAI Python SDK's Responses API (`client.responses`) against a server's
`/v1/responses` (stateless, as Ollama serves it).

Usage: openai_responses_test.py URL [EXPECTED_REPLY]

URL is the server's base URL without `/v1` (keel, keel-mock or a real Ollama). The server must
know the model `llama3.2` (answering EXPECTED_REPLY, when given, to plain requests; a
`get_weather` function call with a string `city` argument when tools are offered) and must not
know `no-such-model`.

Prints one line per check (`ok NAME` or `FAIL NAME: reason`) and ends with exactly
`N passed, M failed`; exits 1 if any check failed. Run by crates/keel-gateway/tests/clients.rs
with the venv from scripts/install-test-clients.sh.
"""

import importlib.metadata
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import CheckFailed, check  # noqa: E402

import openai

MODEL = "llama3.2"
UNKNOWN = "no-such-model"
URL = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:11434").rstrip("/")
EXPECTED_REPLY = sys.argv[2] if len(sys.argv) > 2 else None
TIMEOUT = 30.0

# No retries: a proxy that answers an error must not be hidden by the SDK retrying.
client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
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
    check(isinstance(text, str) and text != "", f"{what}: empty text {text!r}")
    if EXPECTED_REPLY is not None:
        check(text == EXPECTED_REPLY, f"{what}: text {text!r} != expected {EXPECTED_REPLY!r}")


def is_model(name):
    return name in (MODEL, MODEL + ":latest")


def parse_json(text, what):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckFailed(f"{what}: output_text is not JSON ({e}): {text!r}")


# ---------------------------------------------------------------------------------------------
# checks


def check_create():
    resp = client.responses.create(model=MODEL, input="Say hello.")
    check(resp.object == "response", f"object {resp.object!r}")
    check(resp.id.startswith("resp_"), f"id {resp.id!r}")
    check(resp.status == "completed", f"status {resp.status!r}")
    check(is_model(resp.model), f"model {resp.model!r}")
    check(resp.error is None, f"error {resp.error!r}")
    check([o.type for o in resp.output] == ["message"], f"output types {[o.type for o in resp.output]!r}")
    check(resp.output[0].role == "assistant", f"role {resp.output[0].role!r}")
    check_reply_text(resp.output_text, "responses.create")
    u = resp.usage
    check(u is not None and u.output_tokens > 0, f"usage {u!r}")
    check(u.total_tokens == u.input_tokens + u.output_tokens, f"total_tokens inconsistent: {u!r}")


def check_create_with_instructions_and_items():
    resp = client.responses.create(
        model=MODEL,
        instructions="Be terse.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}],
        temperature=0,
        top_p=0.9,
        max_output_tokens=64,
    )
    check(resp.instructions == "Be terse.", f"instructions echoed as {resp.instructions!r}")
    check(resp.temperature == 0, f"temperature echoed as {resp.temperature!r}")
    check_reply_text(resp.output_text, "responses.create with instructions")


def check_stream_events():
    events = list(client.responses.create(model=MODEL, input="Say hello.", stream=True))
    types = [e.type for e in events]
    check(types[0] == "response.created", f"first event {types[0]!r}")
    check(types[-1] == "response.completed", f"last event {types[-1]!r}")
    for t in ("response.in_progress", "response.output_item.added", "response.content_part.added",
              "response.output_text.done", "response.content_part.done", "response.output_item.done"):
        check(t in types, f"no {t} event in {types!r}")
    numbers = [e.sequence_number for e in events]
    check(numbers == list(range(len(events))), f"sequence numbers {numbers!r}")
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    check(len(deltas) >= 2, f"only {len(deltas)} delta(s): not streamed")
    check_reply_text("".join(deltas), "streamed deltas")
    done = next(e for e in events if e.type == "response.output_text.done")
    check(done.text == "".join(deltas), f"output_text.done {done.text!r} != deltas")
    check_reply_text(events[-1].response.output_text, "response.completed")


def check_stream_helper():
    with client.responses.stream(model=MODEL, input="Say hello.") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    check(final.status == "completed", f"final status {final.status!r}")
    check_reply_text(final.output_text, "responses.stream")


def check_text_format_json_schema():
    resp = client.responses.create(
        model=MODEL,
        input="Weather in Paris as JSON.",
        text={"format": {"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True}},
    )
    value = parse_json(resp.output_text, "json_schema")
    check(isinstance(value, dict), f"not an object: {value!r}")
    for key in SCHEMA["required"]:
        check(key in value, f"required key {key!r} missing: {value!r}")
    check(isinstance(value["city"], str), f"city not a string: {value!r}")
    check(isinstance(value["temperature"], (int, float)) and not isinstance(value["temperature"], bool),
          f"temperature not a number: {value!r}")
    check(value["conditions"] in ("sunny", "cloudy", "rainy"), f"conditions not in enum: {value!r}")


def check_parse_pydantic():
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        temperature: float

    resp = client.responses.parse(model=MODEL, input="Weather in Paris.", text_format=Weather)
    parsed = resp.output_parsed
    check(isinstance(parsed, Weather), f"output_parsed {parsed!r}")
    check(isinstance(parsed.city, str), f"city {parsed.city!r}")


def check_function_call():
    resp = client.responses.create(model=MODEL, input="What's the weather in Paris?", tools=[WEATHER_TOOL])
    calls = [o for o in resp.output if o.type == "function_call"]
    check(len(calls) == 1, f"{len(calls)} function calls: {resp.output!r}")
    call = calls[0]
    check(call.name == "get_weather", f"name {call.name!r}")
    args = parse_json(call.arguments, "function_call arguments")
    check(isinstance(args.get("city"), str), f"arguments {args!r}")
    follow_up = client.responses.create(
        model=MODEL,
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "What's the weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"},
        ],
    )
    check_reply_text(follow_up.output_text, "after the function output")


def check_function_call_stream():
    events = list(client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER_TOOL],
                                          stream=True))
    types = [e.type for e in events]
    check(types[-1] == "response.completed", f"last event {types[-1]!r}")
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    check(isinstance(parse_json(args, "streamed arguments").get("city"), str), f"arguments {args!r}")
    final = events[-1].response.output
    check([o.type for o in final] == ["function_call"], f"final output {final!r}")


def check_unknown_model_not_found():
    try:
        client.responses.create(model=UNKNOWN, input="hi")
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"status {e.status_code}")
        return
    check(False, "no NotFoundError for an unknown model")


CHECKS = [
    check_create,
    check_create_with_instructions_and_items,
    check_stream_events,
    check_stream_helper,
    check_text_format_json_schema,
    check_parse_pydantic,
    check_function_call,
    check_function_call_stream,
    check_unknown_model_not_found,
]


def main():
    return harness.run(f"openai-python {importlib.metadata.version('openai')} responses against {URL}/v1", CHECKS)


if __name__ == "__main__":
    sys.exit(main())
