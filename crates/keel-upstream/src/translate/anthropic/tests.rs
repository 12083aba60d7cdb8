//! Tests of the Anthropic ⇄ chat translations.

use bytes::Bytes;
use http::StatusCode;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::translate::sse::{SseEvent, SseReader};
use crate::translate::{Chain, OllamaEndpoint, SseToNdjson, StreamTranslator, TranslateError};

fn run(translator: &mut dyn StreamTranslator, pieces: &[&[u8]]) -> (Vec<u8>, Result<(), TranslateError>) {
    let mut out = Vec::new();
    for piece in pieces {
        for bytes in translator.push(piece) {
            out.extend_from_slice(&bytes);
        }
    }
    match translator.finish() {
        Ok(last) => {
            out.extend(last.iter().flat_map(|b| b.to_vec()));
            (out, Ok(()))
        }
        Err(e) => (out, Err(e)),
    }
}

fn events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut reader = SseReader::new();
    let mut events = Vec::new();
    reader.push(bytes, &mut events).unwrap();
    assert_eq!(reader.finish(), None, "output ends with a complete event");
    events
}

/// `(event name, data)` of every event; the data must be JSON (or `[DONE]`).
fn parsed(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    events(bytes)
        .into_iter()
        .map(|e| {
            let data = if e.data == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(&e.data).unwrap() };
            (e.event, data)
        })
        .collect()
}

fn to_messages() -> ChatSseToMessagesSse {
    ChatSseToMessagesSse::new("claude-local".into()).with_id("msg_test".into())
}

fn to_chat() -> MessagesSseToChatSse {
    MessagesSseToChatSse::new().with_created(1_700_000_000)
}

// ---------------------------------------------------------------------------------------------
// Requests

fn anthropic_tool_request() -> Value {
    json!({
        "model": "claude-local",
        "max_tokens": 512,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "timeout", "is_error": true},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
        "tools": [{"name": "weather", "description": "Weather by city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "metadata": {"user_id": "u"},
        "stream": true,
    })
}

#[test]
fn messages_to_chat_translates_everything() {
    let chat = messages_to_chat(&anthropic_tool_request()).unwrap();
    assert_eq!(
        chat,
        json!({
            "model": "claude-local",
            "messages": [
                {"role": "system", "content": "Be brief.\n\nUse tools."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout"},
                {"role": "user", "content": "And tomorrow?"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather by city",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "max_tokens": 512,
            "stop": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}

#[test]
fn messages_to_chat_tool_choices_and_plain_strings() {
    let base = json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}], "system": "sys"});
    let chat = messages_to_chat(&base).unwrap();
    assert_eq!(chat["messages"], json!([{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]));
    assert_eq!(chat["stream"], false);
    assert!(chat.get("stream_options").is_none());
    for (choice, expected) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "none"}), json!("none")),
        (json!({"type": "tool", "name": "f"}), json!({"type": "function", "function": {"name": "f"}})),
    ] {
        let mut req = base.clone();
        req["tool_choice"] = choice;
        assert_eq!(messages_to_chat(&req).unwrap()["tool_choice"], expected);
    }
    let mut req = base.clone();
    req["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    assert_eq!(messages_to_chat(&req).unwrap()["chat_template_kwargs"], json!({"enable_thinking": true}));
    // Structured outputs become a JSON-schema response_format.
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let mut req = base.clone();
    req["output_config"] = json!({"format": {"type": "json_schema", "schema": schema}});
    assert_eq!(messages_to_chat(&req).unwrap()["response_format"]["json_schema"]["schema"], schema);
    // max_tokens is required, as Anthropic requires it.
    let mut req = base;
    req.as_object_mut().unwrap().remove("max_tokens");
    let err = messages_to_chat(&req).unwrap_err().to_string();
    assert!(err.contains("max_tokens"), "{err}");
}

#[test]
fn messages_to_chat_rejects_malformed_requests() {
    let cases = [
        (json!([]), "request body: expected a JSON object"),
        (json!({"model": "m", "messages": {}}), "messages: field required and must be an array"),
        (json!({"messages": []}), "model: field required"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
            "messages.0.content.0.type: field required",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
            "messages.0.content.0.type: \"document\" blocks are not supported",
        ),
        (json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}), "messages.0.role: unexpected role"),
        (json!({"model": "m", "messages": [{"role": "user"}]}), "messages.0.content: field required"),
        (json!({"model": "m", "messages": [], "max_tokens": -1}), "max_tokens: must be a positive integer"),
        (
            json!({"model": "m", "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "tools.0.type",
        ),
        (json!({"model": "m", "messages": [], "tool_choice": {"type": "maybe"}}), "tool_choice.type"),
    ];
    for (request, expected) in cases {
        match messages_to_chat(&request) {
            Err(TranslateError::InvalidRequest(message)) => {
                assert!(message.starts_with(expected), "{message:?} should start with {expected:?}")
            }
            other => panic!("{request}: {other:?}"),
        }
    }
}

#[test]
fn chat_to_messages_request_translates_everything() {
    let chat = json!({
        "model": "claude-sonnet",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}},
                  {"type": "function", "function": {"name": "time", "description": "Now"}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "stop": "END",
        "temperature": 1.4,
        "response_format": {"type": "json_object"},
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    assert_eq!(
        chat_to_messages_request(&chat).unwrap(),
        json!({
            "model": "claude-sonnet",
            "system": "Be brief.\n\nUse tools.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "time", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
                    {"type": "text", "text": "Thanks"},
                ]},
            ],
            "max_tokens": 300,
            "stop_sequences": ["END"],
            "temperature": 1.0,
            "tools": [{"name": "weather", "input_schema": {"type": "object"}},
                      {"name": "time", "description": "Now", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stream": true,
        })
    );
}

#[test]
fn chat_to_messages_request_defaults_and_errors() {
    let out =
        chat_to_messages_request(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(out["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]));
    let out =
        chat_to_messages_request(&json!({"model": "m", "messages": [], "max_tokens": 7, "max_completion_tokens": 9}))
            .unwrap();
    assert_eq!(out["max_tokens"], 7);
    let bad = [
        json!({"model": "m", "messages": "x"}),
        json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
        json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]}),
        json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
        json!({"model": "m", "messages": [], "tools": [{"type": "code_interpreter"}]}),
    ];
    for request in bad {
        assert!(matches!(chat_to_messages_request(&request), Err(TranslateError::InvalidRequest(_))), "{request}");
    }
}

#[test]
fn tool_use_requests_round_trip() {
    let original = anthropic_tool_request();
    let back = chat_to_messages_request(&messages_to_chat(&original).unwrap()).unwrap();
    assert_eq!(back["system"], "Be brief.\n\nUse tools.");
    assert_eq!(back["messages"][1]["content"][1], original["messages"][1]["content"][2]);
    assert_eq!(back["messages"][1]["content"][2], original["messages"][1]["content"][3]);
    assert_eq!(
        back["messages"][2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "Error: timeout"},
            {"type": "text", "text": "And tomorrow?"},
        ])
    );
    assert_eq!(back["messages"][0]["content"][1], original["messages"][0]["content"][1]);
    assert_eq!(back["tools"][0]["input_schema"], original["tools"][0]["input_schema"]);
    assert_eq!(back["tool_choice"], original["tool_choice"]);
    assert_eq!((back["max_tokens"].clone(), back["stop_sequences"].clone()), (json!(512), json!(["END"])));
}

// ---------------------------------------------------------------------------------------------
// Whole responses

fn chat_completion() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream-name",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "reasoning_content": "thinking...",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"type": "function", "function": {"name": "time", "arguments": ""}},
            ]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    })
}

#[test]
fn chat_to_messages_response_shape() {
    let message = chat_to_messages_response(&chat_completion(), "claude-local").unwrap();
    let id = message["id"].as_str().unwrap();
    assert!(id.starts_with("msg_") && id.len() == 28, "{id}");
    let generated = message["content"][2]["id"].as_str().unwrap().to_owned();
    assert!(generated.starts_with("toolu_"), "{generated}");
    assert_eq!(
        message,
        json!({
            "id": id, "type": "message", "role": "assistant", "model": "claude-local",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": generated, "name": "time", "input": {}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 7},
        })
    );
}

#[test]
fn chat_to_messages_response_stop_reasons_and_errors() {
    let answer = |finish: Value, extra: Value| {
        let mut choice = json!({"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish});
        if let (Some(c), Some(e)) = (choice.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let m = chat_to_messages_response(&json!({"choices": [choice]}), "m").unwrap();
        (m["stop_reason"].clone(), m["stop_sequence"].clone())
    };
    assert_eq!(answer(json!("stop"), json!({})), (json!("end_turn"), json!(null)));
    assert_eq!(answer(json!("length"), json!({})), (json!("max_tokens"), json!(null)));
    assert_eq!(answer(json!("stop"), json!({"stop_reason": "END"})), (json!("stop_sequence"), json!("END")));
    assert_eq!(answer(json!(null), json!({})), (json!("end_turn"), json!(null)));
    let err = chat_to_messages_response(&json!({"error": {"message": "boom"}}), "m");
    assert_eq!(err, Err(TranslateError::Upstream("boom".into())));
    assert!(matches!(chat_to_messages_response(&json!({"x": 1}), "m"), Err(TranslateError::InvalidResponse(_))));
    assert!(matches!(chat_to_messages_response(&json!({"choices": []}), "m"), Err(TranslateError::InvalidResponse(_))));
    let bad_args = json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}}]});
    assert!(matches!(chat_to_messages_response(&bad_args, "m"), Err(TranslateError::InvalidResponse(_))));
}

#[test]
fn messages_to_chat_response_shape() {
    let message = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet",
        "content": [
            {"type": "thinking", "thinking": "Let me think", "signature": "s"},
            {"type": "text", "text": "Checking"},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 3},
    });
    let chat = messages_to_chat_response(&message).unwrap();
    assert!(chat["created"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(
        chat,
        json!({
            "id": "msg_1", "object": "chat.completion", "created": chat["created"], "model": "claude-sonnet",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking", "reasoning_content": "Let me think",
                "tool_calls": [{"id": "toolu_1", "type": "function",
                                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}],
            }}],
            "usage": {"prompt_tokens": 15, "completion_tokens": 3, "total_tokens": 18},
        })
    );
    for (reason, finish) in
        [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")]
    {
        let m = json!({"type": "message", "content": [], "stop_reason": reason});
        assert_eq!(messages_to_chat_response(&m).unwrap()["choices"][0]["finish_reason"], finish);
    }
    let err = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    assert_eq!(messages_to_chat_response(&err), Err(TranslateError::Upstream("Overloaded".into())));
    assert!(matches!(messages_to_chat_response(&json!({"choices": []})), Err(TranslateError::InvalidResponse(_))));
}

#[test]
fn tool_use_responses_round_trip() {
    let message = chat_to_messages_response(&chat_completion(), "m").unwrap();
    let chat = messages_to_chat_response(&message).unwrap();
    let original = &chat_completion()["choices"][0]["message"];
    let back = &chat["choices"][0]["message"];
    assert_eq!(back["content"], original["content"]);
    assert_eq!(back["tool_calls"][0], original["tool_calls"][0]);
    assert_eq!(back["tool_calls"][1]["function"], json!({"name": "time", "arguments": "{}"}));
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chat["usage"], json!({"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}));
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn errors_in_anthropic_shape() {
    let cases: [(&[u8], &str); 4] = [
        (br#"{"error":"model 'x' not found"}"#, "model 'x' not found"),
        (br#"{"error":{"message":"bad things","type":"invalid_request_error"}}"#, "bad things"),
        (b"plain text", "plain text"),
        (b"", "upstream answered 404 Not Found"),
    ];
    for (body, message) in cases {
        let out: Value = serde_json::from_slice(&error_to_anthropic(StatusCode::NOT_FOUND, body)).unwrap();
        assert_eq!(out, json!({"type": "error", "error": {"type": "not_found_error", "message": message}}));
    }
    let status = StatusCode::from_u16(529).unwrap();
    let out: Value = serde_json::from_slice(&error_to_anthropic(status, b"{}")).unwrap();
    assert_eq!(out["error"]["type"], "overloaded_error");
    let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    assert_eq!(anthropic_error_message(body).as_deref(), Some("slow down"));
    assert_eq!(anthropic_error_message(b"{\"error\":\"x\"}"), None);
    assert_eq!(anthropic_error_message(b"nope"), None);
    assert_eq!(MESSAGES_PATH, "/v1/messages");
}

// ---------------------------------------------------------------------------------------------
// Streams: chat → Anthropic

const CHAT_TEXT_STREAM: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    ": keep-alive\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n",
    "data: [DONE]\n\n",
);

const CHAT_TOOL_STREAM: &str = concat!(
    "data: {\"choices\":[{\"delta\":{\"content\":\"Sure.\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"time\",\"arguments\":\"{}\"}}]}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":11}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn chat_text_stream_to_anthropic_events() {
    let (out, result) = run(&mut to_messages(), &[CHAT_TEXT_STREAM.as_bytes()]);
    assert_eq!(result, Ok(()));
    let expected = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_test\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-local\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":9,\"output_tokens\":2}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn chat_tool_stream_to_anthropic_events() {
    let (out, result) = run(&mut to_messages(), &[CHAT_TOOL_STREAM.as_bytes()]);
    assert_eq!(result, Ok(()));
    let data: Vec<Value> = parsed(&out).into_iter().map(|(_, d)| d).collect();
    let names: Vec<String> =
        parsed(&out).into_iter().map(|(e, d)| format!("{}={}", e.unwrap(), d["type"].as_str().unwrap())).collect();
    assert!(
        names.iter().all(|n| {
            let (a, b) = n.split_once('=').unwrap();
            a == b
        }),
        "{names:?}"
    );
    assert_eq!(
        data[1..].to_vec(),
        vec![
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Sure."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_a", "name": "weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "call_b", "name": "time", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"input_tokens": 20, "output_tokens": 11}}),
            json!({"type": "message_stop"}),
        ]
    );
}

#[test]
fn chat_stream_late_tool_names_ids_and_eof_after_finish() {
    let input = concat!(
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\":1}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}",
    );
    let (out, result) = run(&mut to_messages(), &[input.as_bytes()]);
    assert_eq!(result, Ok(()));
    let data: Vec<Value> = parsed(&out).into_iter().map(|(_, d)| d).collect();
    assert_eq!(
        data[1..].to_vec(),
        vec![
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_test_0", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_test_1", "name": "", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"input_tokens": 0, "output_tokens": 3}}),
            json!({"type": "message_stop"}),
        ]
    );
}

#[test]
fn chat_stream_errors_become_anthropic_error_events() {
    let expected_error = |message: &str| json!({"type": "error", "error": {"type": "api_error", "message": message}});
    for (input, message) in [
        ("data: {\"error\":{\"message\":\"out of memory\"}}\n\ndata: [DONE]\n\n", "out of memory"),
        ("event: error\ndata: {\"message\":\"boom\"}\n\n", "boom"),
        ("data: {nope\n\n", "upstream sent an unreadable stream event"),
    ] {
        let mut conv = to_messages();
        let (out, result) = run(&mut conv, &[input.as_bytes()]);
        assert_eq!(result, Ok(()));
        let (name, data) = parsed(&out).pop().unwrap();
        assert_eq!(name.as_deref(), Some("error"));
        assert!(data["error"]["message"].as_str().unwrap().starts_with(message), "{data}");
        assert!(conv.is_finished());
        assert!(conv.error().unwrap().starts_with(message));
        assert!(conv.push(b"data: [DONE]\n\n").is_empty());
    }
    let conv = to_messages();
    let event = conv.error_event("keel gave up").unwrap();
    assert_eq!(parsed(&event), vec![(Some("error".to_owned()), expected_error("keel gave up"))]);
}

#[test]
fn chat_stream_ended_early_or_interleaved() {
    let mut conv = to_messages();
    let (_, result) = run(&mut conv, &[b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"]);
    assert_eq!(result, Err(TranslateError::StreamEndedEarly));
    assert!(conv.is_finished());
    assert!(conv.error().is_some());
    let interleaved = concat!(
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"g\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
    );
    let mut conv = to_messages();
    let (out, _) = run(&mut conv, &[interleaved.as_bytes()]);
    assert_eq!(parsed(&out).pop().unwrap().0.as_deref(), Some("error"));
    assert!(conv.error().unwrap().contains("resumed a tool call"));
}

#[test]
fn chat_stream_caps_tool_calls() {
    let calls: Vec<String> = (0..=MAX_TOOL_CALLS)
        .map(|i| format!("{{\"index\":{i},\"id\":\"c{i}\",\"function\":{{\"name\":\"f\",\"arguments\":\"{{}}\"}}}}"))
        .collect();
    let input = format!("data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{}]}}}}]}}\n\n", calls.join(","));
    let mut conv = to_messages();
    let (out, _) = run(&mut conv, &[input.as_bytes()]);
    assert_eq!(parsed(&out).pop().unwrap().0.as_deref(), Some("error"));
    assert_eq!(conv.error(), Some("upstream sent more than 1024 tool calls"));
}

// ---------------------------------------------------------------------------------------------
// Streams: Anthropic → chat

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm.\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

#[test]
fn anthropic_stream_to_chat_chunks() {
    let (out, result) = run(&mut to_chat(), &[ANTHROPIC_STREAM.as_bytes()]);
    assert_eq!(result, Ok(()));
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "claude-sonnet",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let data: Vec<Value> = parsed(&out)
        .into_iter()
        .map(|(e, d)| {
            assert_eq!(e, None);
            d
        })
        .collect();
    assert_eq!(
        data,
        vec![
            chunk(json!({"role": "assistant", "content": ""}), json!(null)),
            chunk(json!({"reasoning_content": "Hmm."}), json!(null)),
            chunk(json!({"content": "Checking"}), json!(null)),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
                json!(null)
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Paris\"}"}}]}),
                json!(null)
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "claude-sonnet",
                   "choices": [], "usage": {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}}),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn anthropic_stream_errors_and_early_end() {
    let input = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"x\",\"usage\":{}}}\n\n",
        "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
    );
    let mut conv = to_chat();
    let (out, result) = run(&mut conv, &[input.as_bytes()]);
    assert_eq!(result, Ok(()));
    let last = parsed(&out).pop().unwrap().1;
    assert_eq!(
        last,
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
    );
    assert_eq!(conv.error(), Some("Overloaded"));
    assert!(conv.is_finished());

    let mut conv = to_chat();
    let (_, result) = run(&mut conv, &[&ANTHROPIC_STREAM.as_bytes()[..ANTHROPIC_STREAM.len() - 40]]);
    assert_eq!(result, Err(TranslateError::StreamEndedEarly));
    assert_eq!(conv.error_event("x").map(|e| parsed(&e)[0].1["error"]["message"].clone()), Some(json!("x")));
}

// ---------------------------------------------------------------------------------------------
// Chains

#[test]
fn anthropic_upstream_to_ollama_client() {
    let mut chain = Chain::new(to_chat(), SseToNdjson::new(OllamaEndpoint::Chat, "local".into()));
    let (out, result) = run(&mut chain, &[ANTHROPIC_STREAM.as_bytes()]);
    assert_eq!(result, Ok(()));
    let lines: Vec<Value> =
        out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    assert_eq!(lines[0]["message"]["thinking"], "Hmm.");
    assert_eq!(lines[1]["message"]["content"], "Checking");
    assert_eq!(
        lines[2]["message"]["tool_calls"],
        json!([{"id": "toolu_1", "function": {"index": 0, "name": "weather", "arguments": {"city": "Paris"}}}])
    );
    let last = lines.last().unwrap();
    assert_eq!((last["done"].clone(), last["done_reason"].clone()), (json!(true), json!("stop")));
    assert_eq!((last["prompt_eval_count"].clone(), last["eval_count"].clone()), (json!(25), json!(15)));
    assert!(chain.is_finished());

    let mut chain = Chain::new(to_chat(), SseToNdjson::new(OllamaEndpoint::Chat, "local".into()));
    let (out, _) = run(
        &mut chain,
        &[b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"bad\"}}\n\n"],
    );
    assert_eq!(out, b"{\"error\":\"bad\"}\n");
    assert_eq!(chain.error(), Some("bad"));
}

#[test]
fn anthropic_upstream_through_chat_back_to_anthropic() {
    let mut chain = Chain::new(to_chat(), to_messages());
    let (out, result) = run(&mut chain, &[ANTHROPIC_STREAM.as_bytes()]);
    assert_eq!(result, Ok(()));
    let data: Vec<Value> = parsed(&out).into_iter().map(|(_, d)| d).collect();
    let types: Vec<&str> = data.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(data[4]["content_block"], json!({"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}));
    assert_eq!(data[5]["delta"]["partial_json"], "{\"city\": \"Paris\"}");
    assert_eq!(data[7]["delta"]["stop_reason"], "tool_use");
    assert_eq!(data[7]["usage"], json!({"input_tokens": 25, "output_tokens": 15}));
    assert!(chain.is_finished());

    let mut chain = Chain::new(to_chat(), to_messages());
    let (_, result) = run(&mut chain, &[b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"]);
    assert_eq!(result, Err(TranslateError::StreamEndedEarly));
}

// ---------------------------------------------------------------------------------------------
// Properties

fn split_runs(make: &dyn Fn() -> Box<dyn StreamTranslator>, bytes: &[u8], cut: usize) -> [(Vec<u8>, bool); 3] {
    let whole = run(&mut *make(), &[bytes]);
    let two = run(&mut *make(), &[&bytes[..cut], &bytes[cut..]]);
    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    let single = run(&mut *make(), &bytewise);
    [(whole.0, whole.1.is_ok()), (two.0, two.1.is_ok()), (single.0, single.1.is_ok())]
}

fn makers() -> Vec<Box<dyn Fn() -> Box<dyn StreamTranslator>>> {
    vec![
        Box::new(|| Box::new(to_messages())),
        Box::new(|| Box::new(to_chat())),
        Box::new(|| Box::new(Chain::new(to_chat(), to_messages()))),
    ]
}

/// Fragments of both kinds of stream, in any order.
fn fragments() -> impl Strategy<Value = String> {
    let pieces: Vec<String> = CHAT_TOOL_STREAM
        .split_inclusive("\n\n")
        .chain(ANTHROPIC_STREAM.split_inclusive("\n\n"))
        .chain(CHAT_TEXT_STREAM.split_inclusive("\n\n"))
        .map(str::to_owned)
        .chain(["\r\n".to_owned(), "data: {\"error\":\"x\"}\n\n".to_owned(), "data: {".to_owned()])
        .collect();
    prop::collection::vec(prop::sample::select(pieces), 0..16).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn any_split_gives_the_same_output(text in fragments(), cut in any::<prop::sample::Index>()) {
        let bytes = text.as_bytes();
        let cut = cut.index(bytes.len() + 1);
        for make in makers() {
            let [whole, two, single] = split_runs(&*make, bytes, cut);
            prop_assert_eq!(&whole, &two);
            prop_assert_eq!(&whole, &single);
            events(&whole.0);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(bytes.len() + 1);
        for make in makers() {
            let [whole, two, _] = split_runs(&*make, &bytes, cut);
            prop_assert_eq!(whole, two);
        }
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            let _ = messages_to_chat(&value);
            let _ = chat_to_messages_request(&value);
            let _ = chat_to_messages_response(&value, "m");
            let _ = messages_to_chat_response(&value);
        }
        let _: Bytes = error_to_anthropic(StatusCode::BAD_GATEWAY, &bytes);
        let _ = anthropic_error_message(&bytes);
    }

    #[test]
    fn arbitrary_json_bodies_never_panic(value in json_value()) {
        let _ = messages_to_chat(&value);
        let _ = chat_to_messages_request(&value);
        let _ = chat_to_messages_response(&value, "m");
        let _ = messages_to_chat_response(&value);
    }
}

/// JSON values shaped somewhat like requests and responses.
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "tool_calls",
        "function",
        "name",
        "arguments",
        "tool_use_id",
        "input",
        "source",
        "system",
        "tools",
        "tool_choice",
        "choices",
        "message",
        "error",
        "id",
        "image_url",
        "url",
        "stop",
        "max_tokens",
        "usage",
        "delta",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![
            "user",
            "assistant",
            "tool",
            "system",
            "text",
            "image",
            "tool_use",
            "tool_result",
            "function",
            "base64",
            "data:x;base64,AA",
            "{}",
            "any",
            "auto"
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}
