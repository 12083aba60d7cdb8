#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! Dialect translation: Ollama requests to OpenAI requests, OpenAI answers (whole and streamed)
//! back to Ollama's shapes, checked field by field against Ollama's `api/types.go`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::StatusCode;
use keel_types::FailureClass;
use keel_upstream::translate::{
    CHAT_COMPLETIONS_PATH, COMPLETIONS_PATH, OllamaEndpoint, SseToNdjson, TranslateError, ollama_chat_to_openai,
    ollama_error_line, ollama_generate_to_openai, ollama_preload_response, openai_chat_to_ollama_chat,
    openai_chat_to_ollama_generate, openai_error_message, openai_error_to_ollama, openai_response_to_ollama,
};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Ollama's answer types, as the official clients read them (api/types.go). `deny_unknown_fields`
// makes sure nothing is emitted that Ollama would not send.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OllamaChatResponse {
    model: String,
    created_at: String,
    message: OllamaMessage,
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<Vec<Value>>,
    #[serde(default)]
    total_duration: Option<u64>,
    #[serde(default)]
    load_duration: Option<u64>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    prompt_eval_duration: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    eval_duration: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OllamaGenerateResponse {
    model: String,
    created_at: String,
    response: String,
    #[serde(default)]
    thinking: Option<String>,
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    context: Option<Vec<i64>>,
    #[serde(default)]
    tool_calls: Option<Vec<OllamaToolCall>>,
    #[serde(default)]
    logprobs: Option<Vec<Value>>,
    #[serde(default)]
    total_duration: Option<u64>,
    #[serde(default)]
    load_duration: Option<u64>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    prompt_eval_duration: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    eval_duration: Option<u64>,
}

/// `api.Metrics`, which both answers embed (Go struct embedding: the fields sit at the top level).
#[derive(Debug, Default, PartialEq, Eq)]
struct OllamaMetrics {
    total_duration: Option<u64>,
    load_duration: Option<u64>,
    prompt_eval_count: Option<u64>,
    prompt_eval_duration: Option<u64>,
    eval_count: Option<u64>,
    eval_duration: Option<u64>,
}

macro_rules! metrics_of {
    ($r:expr) => {
        OllamaMetrics {
            total_duration: $r.total_duration,
            load_duration: $r.load_duration,
            prompt_eval_count: $r.prompt_eval_count,
            prompt_eval_duration: $r.prompt_eval_duration,
            eval_count: $r.eval_count,
            eval_duration: $r.eval_duration,
        }
    };
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OllamaMessage {
    role: String,
    content: String,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(default)]
    tool_calls: Option<Vec<OllamaToolCall>>,
    #[serde(default)]
    tool_name: Option<String>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OllamaToolCall {
    #[serde(default)]
    id: Option<String>,
    function: OllamaToolCallFunction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OllamaToolCallFunction {
    #[serde(default)]
    index: i64,
    name: String,
    arguments: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OllamaError {
    error: String,
}

/// RFC 3339 as Go's `time.Time` parses it: `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
fn assert_rfc3339(s: &str) {
    let b = s.as_bytes();
    assert!(b.len() >= 20, "{s}");
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    assert!(digits(0..4) && digits(5..7) && digits(8..10) && digits(11..13) && digits(14..16) && digits(17..19), "{s}");
    assert_eq!((b[4], b[7], b[10], b[13], b[16]), (b'-', b'-', b'T', b':', b':'), "{s}");
    assert_eq!(*b.last().unwrap(), b'Z', "{s}");
    if b.len() > 20 {
        assert_eq!(b[19], b'.', "{s}");
        assert!(digits(20..b.len() - 1), "{s}");
    }
}

/// Parses one NDJSON line as the official client would for `endpoint`; returns it as a Value.
fn check_line(endpoint: OllamaEndpoint, line: &[u8]) -> Value {
    assert_eq!(line.last(), Some(&b'\n'), "line must end with a newline: {:?}", String::from_utf8_lossy(line));
    let body = &line[..line.len() - 1];
    assert!(!body.contains(&b'\n'), "one JSON value per line");
    let value: Value = serde_json::from_slice(body).unwrap();
    if value.get("error").is_some() {
        let _: OllamaError = serde_json::from_value(value.clone()).unwrap();
        return value;
    }
    check_answer(endpoint, &value);
    value
}

fn check_answer(endpoint: OllamaEndpoint, value: &Value) {
    match endpoint {
        OllamaEndpoint::Chat => {
            let r: OllamaChatResponse = serde_json::from_value(value.clone()).unwrap();
            assert_rfc3339(&r.created_at);
            assert_eq!(r.message.role, "assistant");
            assert!(r.message.images.is_none() && r.message.tool_name.is_none() && r.message.tool_call_id.is_none());
            let _ = (&r.model, &r.message.content, &r.message.thinking, &r.logprobs);
            let metrics = metrics_of!(r);
            if r.done {
                check_done(r.done_reason.as_deref(), &metrics);
            } else {
                assert!(r.done_reason.is_none());
                assert_eq!(metrics, OllamaMetrics::default());
            }
            for tc in r.message.tool_calls.iter().flatten() {
                assert!(!tc.function.name.is_empty());
                let _ = (&tc.id, tc.function.index, &tc.function.arguments);
            }
        }
        OllamaEndpoint::Generate => {
            let r: OllamaGenerateResponse = serde_json::from_value(value.clone()).unwrap();
            assert_rfc3339(&r.created_at);
            let _ = (&r.model, &r.response, &r.thinking, &r.context, &r.tool_calls, &r.logprobs);
            let metrics = metrics_of!(r);
            if r.done {
                check_done(r.done_reason.as_deref(), &metrics);
            } else {
                assert!(r.done_reason.is_none());
                assert_eq!(metrics, OllamaMetrics::default());
            }
        }
    }
}

/// A final answer: a generation end with its metrics, or a load/unload answer without.
fn check_done(done_reason: Option<&str>, metrics: &OllamaMetrics) {
    match done_reason {
        Some("stop" | "length") => assert!(metrics.eval_count.is_some() && metrics.total_duration.is_some()),
        Some("load" | "unload") => assert_eq!(*metrics, OllamaMetrics::default()),
        other => panic!("unexpected done_reason {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

#[test]
fn chat_request_basics_and_stream_default() {
    let t = ollama_chat_to_openai(&json!({
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "User", "content": "Hi"}
        ],
        "keep_alive": "5m",
        "truncate": true,
        "whatever": {"x": 1}
    }))
    .unwrap();
    assert_eq!(t.path, CHAT_COMPLETIONS_PATH);
    assert!(t.stream);
    assert_eq!(
        t.body,
        json!({
            "model": "llama3.2",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
    // key order as well (serde_json preserve_order)
    let keys: Vec<&String> = t.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["model", "messages", "stream", "stream_options"]);
}

#[test]
fn chat_request_stream_false_and_null() {
    let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "stream": false})).unwrap();
    assert!(!t.stream);
    assert_eq!(t.body["stream"], json!(false));
    assert!(t.body.get("stream_options").is_none());

    let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "stream": null})).unwrap();
    assert!(t.stream);
    assert_eq!(t.body["stream_options"], json!({"include_usage": true}));
}

#[test]
fn chat_request_format_json_and_schema() {
    let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "format": "json"})).unwrap();
    assert_eq!(t.body["response_format"], json!({"type": "json_object"}));

    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"]
    });
    let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "format": schema})).unwrap();
    assert_eq!(
        t.body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": true}})
    );

    for none in [json!(""), json!(null)] {
        let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "format": none})).unwrap();
        assert!(t.body.get("response_format").is_none());
    }

    let err = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "format": "xml"})).unwrap_err();
    assert_eq!(err.to_string(), r#"invalid format: "xml"; expected "json" or a valid JSON Schema object"#);
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert_eq!(err.failure_class(), FailureClass::BadRequest);
    assert!(ollama_chat_to_openai(&json!({"model": "m", "messages": [], "format": 3})).is_err());
}

#[test]
fn chat_request_images_become_data_url_parts() {
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    let jpeg = "/9j/4AAQSkZJRgABAQEASABIAAD";
    let t = ollama_chat_to_openai(&json!({
        "model": "llava",
        "messages": [
            {"role": "user", "content": "What is in these?", "images": [png, jpeg]},
            {"role": "user", "content": "", "images": ["data:image/webp;base64,UklGRg=="]}
        ]
    }))
    .unwrap();
    assert_eq!(
        t.body["messages"][0],
        json!({"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
            {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{jpeg}")}}
        ]})
    );
    // no empty text part; an image given as a data URL stays as it is
    assert_eq!(
        t.body["messages"][1],
        json!({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}}
        ]})
    );
    assert!(ollama_chat_to_openai(&json!({"model": "m", "messages": [{"role": "user", "images": [1]}]})).is_err());
}

#[test]
fn chat_request_tools_and_tool_results_round_trip() {
    let tools = json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }
    }]);
    let t = ollama_chat_to_openai(&json!({
        "model": "qwen3",
        "tools": tools,
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome, and the time?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"index": 1, "name": "get_weather", "arguments": {"city": "Rome", "units": {"t": "C"}}}},
                {"id": "call_given", "function": {"name": "get_time", "arguments": {}}}
            ]},
            // answered out of order, by name and by id, as Ollama clients do
            {"role": "tool", "tool_name": "get_time", "content": "12:00"},
            {"role": "tool", "tool_name": "get_weather", "content": "18C"},
            {"role": "tool", "content": "21C"},
            {"role": "assistant", "content": "Paris 18C, Rome 21C, noon."},
            {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_2", "content": "-3C"}
        ]
    }))
    .unwrap();
    assert_eq!(t.body["tools"], tools);
    let m = t.body["messages"].as_array().unwrap();
    assert_eq!(
        m[1],
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\",\"units\":{\"t\":\"C\"}}"}},
            {"id": "call_given", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ]})
    );
    assert_eq!(m[2], json!({"role": "tool", "content": "12:00", "tool_call_id": "call_given", "name": "get_time"}));
    assert_eq!(m[3], json!({"role": "tool", "content": "18C", "tool_call_id": "call_0", "name": "get_weather"}));
    assert_eq!(m[4], json!({"role": "tool", "content": "21C", "tool_call_id": "call_1", "name": "get_weather"}));
    assert_eq!(m[5], json!({"role": "assistant", "content": "Paris 18C, Rome 21C, noon."}));
    // arguments already a string pass through; a given tool_call_id is kept and names the tool
    assert_eq!(m[6]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
    assert_eq!(m[6]["tool_calls"][0]["id"], "call_2");
    assert_eq!(m[7], json!({"role": "tool", "content": "-3C", "tool_call_id": "call_2", "name": "get_weather"}));

    // the OpenAI arguments string holds exactly the Ollama object
    let args: Value = serde_json::from_str(m[1]["tool_calls"][1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Rome", "units": {"t": "C"}}));

    // empty tools are not sent
    let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "tools": []})).unwrap();
    assert!(t.body.get("tools").is_none());
}

#[test]
fn chat_request_options_mapping() {
    let t = ollama_chat_to_openai(&json!({
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "options": {
            "temperature": 0.2, "top_p": 0.9, "top_k": 40, "seed": 42, "stop": ["\n\n", "User:"],
            "num_predict": 128, "frequency_penalty": 0.5, "presence_penalty": 0.25,
            "repeat_penalty": 1.1, "min_p": 0.05, "typical_p": 0.7, "repeat_last_n": 64,
            "num_ctx": 8192, "num_gpu": 99, "mirostat": 2, "unknown_option": true, "num_keep": 5
        }
    }))
    .unwrap();
    let b = t.body.as_object().unwrap();
    let sampling: BTreeMap<&str, &Value> = b
        .iter()
        .filter(|(k, _)| !["model", "messages", "stream", "stream_options"].contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let expected = json!({
        "temperature": 0.2, "top_p": 0.9, "top_k": 40, "seed": 42, "stop": ["\n\n", "User:"],
        "max_tokens": 128, "frequency_penalty": 0.5, "presence_penalty": 0.25,
        "repeat_penalty": 1.1, "min_p": 0.05, "typical_p": 0.7, "repeat_last_n": 64
    });
    let expected: BTreeMap<&str, &Value> = expected.as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v)).collect();
    assert_eq!(sampling, expected);

    // no limit: -1, -2 (and 0, which Ollama's runner also treats as no limit) omit max_tokens
    for n in [-1, -2, 0] {
        let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "options": {"num_predict": n}})).unwrap();
        assert!(t.body.get("max_tokens").is_none(), "{n}");
    }
    // integers given as floats are truncated like Ollama; null options are skipped
    let t = ollama_chat_to_openai(
        &json!({"model": "m", "messages": [], "options": {"seed": 7.9, "top_k": null, "stop": "END"}}),
    )
    .unwrap();
    assert_eq!(t.body["seed"], json!(7));
    assert!(t.body.get("top_k").is_none());
    assert_eq!(t.body["stop"], json!(["END"]));

    // type errors in Ollama's words
    let err = |options: Value| {
        ollama_chat_to_openai(&json!({"model": "m", "messages": [], "options": options})).unwrap_err().to_string()
    };
    assert_eq!(err(json!({"temperature": "hot"})), "option \"temperature\" must be of type float32");
    assert_eq!(err(json!({"seed": "x"})), "option \"seed\" must be of type integer");
    assert_eq!(err(json!({"stop": 3})), "option \"stop\" must be of type array");
    assert_eq!(err(json!({"stop": ["a", 1]})), "option \"stop\" must be of an array of strings");
    assert!(ollama_chat_to_openai(&json!({"model": "m", "messages": [], "options": [1]})).is_err());
}

#[test]
fn chat_request_think_and_logprobs() {
    let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "think": false})).unwrap();
    assert_eq!(t.body["chat_template_kwargs"], json!({"enable_thinking": false}));
    let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "think": "high"})).unwrap();
    assert_eq!(t.body["chat_template_kwargs"], json!({"enable_thinking": true, "reasoning_effort": "high"}));
    let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "logprobs": true, "top_logprobs": 3})).unwrap();
    assert_eq!((&t.body["logprobs"], &t.body["top_logprobs"]), (&json!(true), &json!(3)));
    let t = ollama_chat_to_openai(&json!({"model": "m", "messages": [], "top_logprobs": 3})).unwrap();
    assert!(t.body.get("logprobs").is_none() && t.body.get("top_logprobs").is_none());
}

#[test]
fn chat_request_invalid_bodies() {
    let err = |body: Value| ollama_chat_to_openai(&body).unwrap_err();
    assert_eq!(err(json!({"messages": []})).to_string(), "model is required");
    assert_eq!(err(json!({"model": "", "messages": []})).to_string(), "model is required");
    assert!(matches!(err(json!([1, 2])), TranslateError::InvalidRequest(_)));
    assert!(matches!(err(json!({"model": "m", "stream": "yes"})), TranslateError::InvalidRequest(_)));
    assert!(matches!(err(json!({"model": "m", "messages": {}})), TranslateError::InvalidRequest(_)));
    assert!(matches!(
        err(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})),
        TranslateError::InvalidRequest(_)
    ));
    assert!(matches!(err(json!({"model": "m", "messages": ["hi"]})), TranslateError::InvalidRequest(_)));
    // the legacy `name` field names the model
    assert_eq!(ollama_chat_to_openai(&json!({"name": "old", "messages": []})).unwrap().body["model"], "old");
}

#[test]
fn generate_request_becomes_chat_messages() {
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB";
    let t = ollama_generate_to_openai(&json!({
        "model": "llama3.2",
        "system": "You are terse.",
        "prompt": "Why is the sky blue?",
        "images": [png],
        "format": "json",
        "options": {"temperature": 0, "num_predict": 64},
        "stream": false,
        "context": [1, 2, 3],
        "template": "{{ .Prompt }}",
        "suffix": "ignored without raw",
        "keep_alive": 0
    }))
    .unwrap();
    assert_eq!(t.path, CHAT_COMPLETIONS_PATH);
    assert!(!t.stream);
    assert_eq!(
        t.body,
        json!({
            "model": "llama3.2",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Why is the sky blue?"},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}
                ]}
            ],
            "stream": false,
            "response_format": {"type": "json_object"},
            "temperature": 0,
            "max_tokens": 64
        })
    );

    // no system: one user message; stream defaults to true
    let t = ollama_generate_to_openai(&json!({"model": "m", "prompt": "hi"})).unwrap();
    assert_eq!(t.body["messages"], json!([{"role": "user", "content": "hi"}]));
    assert!(t.stream);
    assert_eq!(t.body["stream_options"], json!({"include_usage": true}));
}

#[test]
fn generate_raw_uses_legacy_completions() {
    let t = ollama_generate_to_openai(&json!({
        "model": "m", "prompt": "<|im_start|>user\nhi<|im_end|>\n", "raw": true, "suffix": "END",
        "options": {"stop": ["<|im_end|>"]}, "think": true, "logprobs": true
    }))
    .unwrap();
    assert_eq!(t.path, COMPLETIONS_PATH);
    assert_eq!(
        t.body,
        json!({
            "model": "m",
            "prompt": "<|im_start|>user\nhi<|im_end|>\n",
            "suffix": "END",
            "stream": true,
            "stream_options": {"include_usage": true},
            "stop": ["<|im_end|>"]
        })
    );
    let err = ollama_generate_to_openai(&json!({"model": "m", "prompt": "p", "raw": true, "system": "s"})).unwrap_err();
    assert_eq!(err.to_string(), "raw mode does not support template, system, or context");
    assert!(ollama_generate_to_openai(&json!({"model": "m", "prompt": "p", "raw": true, "context": [1]})).is_err());
    assert!(ollama_generate_to_openai(&json!({"model": "m", "prompt": "p", "raw": true, "images": ["iVBO"]})).is_err());
    assert!(ollama_generate_to_openai(&json!({"model": "m", "prompt": 5})).is_err());
}

#[test]
fn preload_requests_are_answered_locally() {
    let chat = ollama_preload_response(OllamaEndpoint::Chat, &json!({"model": "llama3.2"})).unwrap();
    check_answer(OllamaEndpoint::Chat, &chat);
    assert_eq!(chat["model"], "llama3.2");
    assert_eq!(chat["message"], json!({"role": "assistant", "content": ""}));
    assert_eq!((&chat["done"], &chat["done_reason"]), (&json!(true), &json!("load")));

    let unload =
        ollama_preload_response(OllamaEndpoint::Chat, &json!({"model": "m", "messages": [], "keep_alive": 0})).unwrap();
    assert_eq!(unload["done_reason"], "unload");

    let generate = ollama_preload_response(OllamaEndpoint::Generate, &json!({"model": "m", "prompt": ""})).unwrap();
    assert_eq!(generate["response"], "");
    assert_eq!(generate["done_reason"], "load");
    let unload = ollama_preload_response(OllamaEndpoint::Generate, &json!({"model": "m", "keep_alive": "0s"})).unwrap();
    assert_eq!(unload["done_reason"], "unload");

    assert!(
        ollama_preload_response(OllamaEndpoint::Chat, &json!({"model": "m", "messages": [{"role": "user"}]})).is_none()
    );
    assert!(ollama_preload_response(OllamaEndpoint::Generate, &json!({"model": "m", "prompt": "hi"})).is_none());
}

// ---------------------------------------------------------------------------------------------
// Whole responses

fn llama_server_completion(message: Value, finish_reason: &str) -> Value {
    json!({
        "choices": [{"finish_reason": finish_reason, "index": 0, "message": message}],
        "created": 1_721_680_341,
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "system_fingerprint": "b6000-abcdef01",
        "object": "chat.completion",
        "usage": {"completion_tokens": 9, "prompt_tokens": 31, "total_tokens": 40},
        "id": "chatcmpl-Xyz",
        "timings": {
            "cache_n": 0, "prompt_n": 31, "prompt_ms": 40.5, "prompt_per_token_ms": 1.3, "prompt_per_second": 765.4,
            "predicted_n": 9, "predicted_ms": 52.25, "predicted_per_token_ms": 5.8, "predicted_per_second": 172.2
        }
    })
}

#[test]
fn whole_chat_answer() {
    let resp = llama_server_completion(json!({"role": "assistant", "content": "The sky scatters blue light."}), "stop");
    let out = openai_chat_to_ollama_chat(&resp, "llama3.2").unwrap();
    assert_eq!(
        out,
        json!({
            "model": "llama3.2",
            "created_at": "2024-07-22T20:32:21Z",
            "message": {"role": "assistant", "content": "The sky scatters blue light."},
            "done": true,
            "done_reason": "stop",
            "total_duration": 92_750_000,
            "load_duration": 0,
            "prompt_eval_count": 31,
            "prompt_eval_duration": 40_500_000,
            "eval_count": 9,
            "eval_duration": 52_250_000
        })
    );
    check_answer(OllamaEndpoint::Chat, &out);
    // field order as Ollama writes it
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "model",
            "created_at",
            "message",
            "done",
            "done_reason",
            "total_duration",
            "load_duration",
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration"
        ]
    );
}

#[test]
fn whole_chat_answer_with_tool_calls_and_thinking() {
    let resp = llama_server_completion(
        json!({
            "role": "assistant",
            "content": null,
            "reasoning_content": "The user wants weather.",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":2}"}, "id": "Ab12"},
                {"type": "function", "function": {"name": "get_time", "arguments": ""}, "id": "Cd34"}
            ]
        }),
        "tool_calls",
    );
    let out = openai_chat_to_ollama_chat(&resp, "qwen3").unwrap();
    check_answer(OllamaEndpoint::Chat, &out);
    assert_eq!(out["done_reason"], "stop");
    assert_eq!(
        out["message"],
        json!({
            "role": "assistant",
            "content": "",
            "thinking": "The user wants weather.",
            "tool_calls": [
                {"id": "Ab12", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris", "days": 2}}},
                {"id": "Cd34", "function": {"index": 1, "name": "get_time", "arguments": {}}}
            ]
        })
    );
    // arguments keep their order
    let args: Vec<&String> =
        out["message"]["tool_calls"][0]["function"]["arguments"].as_object().unwrap().keys().collect();
    assert_eq!(args, ["city", "days"]);
}

#[test]
fn whole_answer_length_usage_only_and_elapsed() {
    let resp = json!({
        "id": "cmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "Qwen/Qwen2.5-0.5B",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "cut", "reasoning": "vllm names it reasoning"}, "finish_reason": "length", "logprobs": null}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21}
    });
    let out = openai_chat_to_ollama_chat(&resp, "qwen").unwrap();
    check_answer(OllamaEndpoint::Chat, &out);
    assert_eq!(out["done_reason"], "length");
    assert_eq!(out["message"]["thinking"], "vllm names it reasoning");
    assert_eq!((&out["prompt_eval_count"], &out["eval_count"]), (&json!(5), &json!(16)));
    assert_eq!((&out["total_duration"], &out["eval_duration"]), (&json!(0), &json!(0)));

    let out =
        openai_response_to_ollama(OllamaEndpoint::Chat, &resp, "qwen", Some(std::time::Duration::from_millis(250)))
            .unwrap();
    assert_eq!((&out["total_duration"], &out["eval_duration"]), (&json!(250_000_000), &json!(250_000_000)));
}

#[test]
fn whole_generate_answer() {
    let resp = llama_server_completion(json!({"role": "assistant", "content": "Rayleigh scattering."}), "stop");
    let out = openai_chat_to_ollama_generate(&resp, "llama3.2").unwrap();
    check_answer(OllamaEndpoint::Generate, &out);
    assert_eq!(
        out,
        json!({
            "model": "llama3.2",
            "created_at": "2024-07-22T20:32:21Z",
            "response": "Rayleigh scattering.",
            "done": true,
            "done_reason": "stop",
            "total_duration": 92_750_000,
            "load_duration": 0,
            "prompt_eval_count": 31,
            "prompt_eval_duration": 40_500_000,
            "eval_count": 9,
            "eval_duration": 52_250_000
        })
    );

    // a legacy completion (raw generate)
    let resp = json!({
        "choices": [{"text": " world", "index": 0, "logprobs": null, "finish_reason": "length"}],
        "created": 1_721_680_341, "model": "m", "object": "text_completion",
        "usage": {"completion_tokens": 1, "prompt_tokens": 2, "total_tokens": 3}, "id": "cmpl-2"
    });
    let out = openai_chat_to_ollama_generate(&resp, "m").unwrap();
    check_answer(OllamaEndpoint::Generate, &out);
    assert_eq!((&out["response"], &out["done_reason"]), (&json!(" world"), &json!("length")));
}

#[test]
fn whole_answer_errors() {
    let err =
        openai_chat_to_ollama_chat(&json!({"error": {"code": 500, "message": "boom", "type": "server_error"}}), "m")
            .unwrap_err();
    assert_eq!(err, TranslateError::Upstream("boom".into()));
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let err =
        openai_chat_to_ollama_chat(&json!({"object": "error", "message": "old vllm", "code": 400}), "m").unwrap_err();
    assert_eq!(err, TranslateError::Upstream("old vllm".into()));
    for bad in [json!({}), json!({"choices": []}), json!("text"), json!({"choices": 3})] {
        let err = openai_chat_to_ollama_chat(&bad, "m").unwrap_err();
        assert!(matches!(err, TranslateError::InvalidResponse(_)), "{bad}: {err:?}");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }
    let broken = llama_server_completion(
        json!({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "id": "x", "function": {"name": "f", "arguments": "{\"a\":"}}]}),
        "length",
    );
    let err = openai_chat_to_ollama_chat(&broken, "m").unwrap_err();
    assert!(err.to_string().contains("invalid tool call arguments for \"f\""), "{err}");
    let not_object = llama_server_completion(
        json!({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "id": "x", "function": {"name": "f", "arguments": "[1]"}}]}),
        "tool_calls",
    );
    assert!(openai_chat_to_ollama_chat(&not_object, "m").is_err());
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn error_bodies() {
    let cases: &[(u16, &[u8], &str)] = &[
        (400, br#"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error"}}"#, "the request exceeds the available context size"),
        (404, br#"{"error":{"message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}}"#, "The model `x` does not exist."),
        (503, br#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#, "Loading model"),
        (500, br#"{"error":"plain string"}"#, "plain string"),
        (400, br#"{"object":"error","message":"old vllm","type":"BadRequestError","code":400}"#, "old vllm"),
        (422, br#"{"detail":[{"loc":["body","messages"],"msg":"field required","type":"missing"}]}"#, "[\"body\",\"messages\"]: field required"),
        (502, b"Bad Gateway\n", "Bad Gateway"),
        (503, b"", "upstream answered 503 Service Unavailable"),
        (500, br#"{"error":{"type":"no_message"}}"#, r#"{"type":"no_message"}"#),
    ];
    for (status, body, message) in cases {
        assert_eq!(openai_error_message(*status, body), *message);
        let ollama: OllamaError = serde_json::from_slice(&openai_error_to_ollama(*status, body)).unwrap();
        assert_eq!(ollama.error, *message);
    }
    assert_eq!(
        openai_error_to_ollama(503, br#"{"error":{"message":"busy"}}"#),
        Bytes::from_static(br#"{"error":"busy"}"#)
    );
    assert_eq!(ollama_error_line("x \"y\""), Bytes::from_static(b"{\"error\":\"x \\\"y\\\"\"}\n"));
    let long = "é".repeat(2000);
    assert!(openai_error_message(500, long.as_bytes()).len() <= 1000);
}

// ---------------------------------------------------------------------------------------------
// Streams

fn chunk(created: i64, delta: Value, finish: Option<&str>) -> String {
    let body = json!({
        "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
        "created": created,
        "id": "chatcmpl-Q8uW",
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "system_fingerprint": "b6000-abcdef01",
        "object": "chat.completion.chunk"
    });
    format!("data: {body}\n\n")
}

fn usage_chunk(created: i64, prompt: u64, completion: u64) -> String {
    let body = json!({
        "choices": [],
        "created": created,
        "id": "chatcmpl-Q8uW",
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "system_fingerprint": "b6000-abcdef01",
        "object": "chat.completion.chunk",
        "usage": {"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": prompt + completion},
        "timings": {
            "cache_n": 4, "prompt_n": 8, "prompt_ms": 15.2, "prompt_per_token_ms": 1.9, "prompt_per_second": 526.3,
            "predicted_n": completion, "predicted_ms": 17.6, "predicted_per_token_ms": 5.87, "predicted_per_second": 170.4
        }
    });
    format!("data: {body}\n\n")
}

/// What llama-server writes for a streamed chat with `stream_options.include_usage` (framing from
/// its `format_oai_sse`: one `data: ` event per chunk, blank line after each): the role chunk, the
/// content deltas, the finish chunk with an empty delta, the usage chunk (with `timings`), `[DONE]`.
fn llama_server_transcript() -> String {
    let mut s = String::new();
    s += &chunk(1_721_680_341, json!({"role": "assistant", "content": null}), None);
    s += &chunk(1_721_680_341, json!({"content": "Hello"}), None);
    s += &chunk(1_721_680_341, json!({"content": " wörld 👋, 日本語"}), None);
    s += &chunk(1_721_680_342, json!({"content": "\n\"quoted\"\\"}), None);
    s += &chunk(1_721_680_342, json!({}), Some("stop"));
    s += &usage_chunk(1_721_680_342, 12, 3);
    s += "data: [DONE]\n\n";
    s
}

const TRANSCRIPT_NDJSON: &str = concat!(
    r#"{"model":"smollm2","created_at":"2024-07-22T20:32:21Z","message":{"role":"assistant","content":"Hello"},"done":false}"#,
    "\n",
    r#"{"model":"smollm2","created_at":"2024-07-22T20:32:21Z","message":{"role":"assistant","content":" wörld 👋, 日本語"},"done":false}"#,
    "\n",
    r#"{"model":"smollm2","created_at":"2024-07-22T20:32:22Z","message":{"role":"assistant","content":"\n\"quoted\"\\"},"done":false}"#,
    "\n",
    r#"{"model":"smollm2","created_at":"2024-07-22T20:32:22Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":32800000,"load_duration":0,"prompt_eval_count":12,"prompt_eval_duration":15200000,"eval_count":3,"eval_duration":17600000}"#,
    "\n",
);

/// Runs `input` through a converter in the given pieces; returns everything written (lines and the
/// finish result) and the finish error, if any.
fn run(endpoint: OllamaEndpoint, input: &[u8], sizes: &[usize]) -> (Vec<u8>, Option<TranslateError>) {
    let mut conv = SseToNdjson::new(endpoint, "smollm2".to_owned());
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if sizes.is_empty() { rest.len() } else { sizes[i % sizes.len()].clamp(1, rest.len()) };
        i += 1;
        for line in conv.push(&rest[..n]) {
            out.extend_from_slice(&line);
        }
        rest = &rest[n..];
    }
    match conv.finish() {
        Ok(Some(last)) => {
            out.extend_from_slice(&last);
            (out, None)
        }
        Ok(None) => (out, None),
        Err(e) => (out, Some(e)),
    }
}

fn lines(out: &[u8]) -> Vec<&[u8]> {
    out.split_inclusive(|&b| b == b'\n').collect()
}

#[test]
fn stream_llama_server_transcript() {
    let input = llama_server_transcript();
    let (out, err) = run(OllamaEndpoint::Chat, input.as_bytes(), &[]);
    assert!(err.is_none());
    assert_eq!(String::from_utf8(out.clone()).unwrap(), TRANSCRIPT_NDJSON);
    for line in lines(&out) {
        check_line(OllamaEndpoint::Chat, line);
    }
}

#[test]
fn stream_byte_by_byte_equals_whole() {
    let input = llama_server_transcript();
    let (whole, _) = run(OllamaEndpoint::Chat, input.as_bytes(), &[]);
    let (bytewise, err) = run(OllamaEndpoint::Chat, input.as_bytes(), &[1]);
    assert!(err.is_none());
    assert_eq!(bytewise, whole);
    // every push returns whole lines only
    let mut conv = SseToNdjson::new(OllamaEndpoint::Chat, "smollm2".to_owned());
    for b in input.as_bytes() {
        for line in conv.push(std::slice::from_ref(b)) {
            assert_eq!(line.last(), Some(&b'\n'));
            check_line(OllamaEndpoint::Chat, &line);
        }
    }
    assert!(conv.is_finished());
    assert_eq!(conv.finish().unwrap(), None);
    assert_eq!(conv.push(b"data: {\"choices\":[]}\n\n"), Vec::<Bytes>::new());
}

#[test]
fn stream_generate_shape() {
    let input = llama_server_transcript();
    let (out, err) = run(OllamaEndpoint::Generate, input.as_bytes(), &[7]);
    assert!(err.is_none());
    let ls = lines(&out);
    assert_eq!(ls.len(), 4);
    assert_eq!(
        ls[0],
        br#"{"model":"smollm2","created_at":"2024-07-22T20:32:21Z","response":"Hello","done":false}
"#
    );
    assert_eq!(
        ls[3],
        br#"{"model":"smollm2","created_at":"2024-07-22T20:32:22Z","response":"","done":true,"done_reason":"stop","total_duration":32800000,"load_duration":0,"prompt_eval_count":12,"prompt_eval_duration":15200000,"eval_count":3,"eval_duration":17600000}
"#
    );
    for line in ls {
        check_line(OllamaEndpoint::Generate, line);
    }
}

#[test]
fn stream_legacy_completions_for_raw_generate() {
    let mut input = String::new();
    for (text, finish) in [("Once", None), (" upon", None), ("", Some("length"))] {
        let body = json!({"choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
            "created": 1_721_680_341, "model": "m", "system_fingerprint": "b1", "object": "text_completion", "id": "cmpl-1"});
        input += &format!("data: {body}\n\n");
    }
    input += "data: {\"choices\":[],\"created\":1721680341,\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":1,\"total_tokens\":3}}\n\n";
    input += "data: [DONE]\n\n";
    let (out, err) = run(OllamaEndpoint::Generate, input.as_bytes(), &[3, 11]);
    assert!(err.is_none());
    let values: Vec<Value> = lines(&out).into_iter().map(|l| check_line(OllamaEndpoint::Generate, l)).collect();
    assert_eq!(values.len(), 3);
    assert_eq!((&values[0]["response"], &values[1]["response"]), (&json!("Once"), &json!(" upon")));
    assert_eq!(
        (&values[2]["done_reason"], &values[2]["eval_count"], &values[2]["prompt_eval_count"]),
        (&json!("length"), &json!(2), &json!(1))
    );
}

#[test]
fn stream_reasoning_becomes_thinking() {
    let mut input = String::new();
    input += &chunk(1, json!({"role": "assistant", "content": null}), None);
    input += &chunk(1, json!({"reasoning_content": "Let me think."}), None);
    input += &chunk(1, json!({"reasoning": "vLLM style."}), None);
    input += &chunk(1, json!({"content": "42"}), None);
    input += &chunk(1, json!({}), Some("stop"));
    input += "data: [DONE]\n\n";
    let (out, _) = run(OllamaEndpoint::Chat, input.as_bytes(), &[]);
    let values: Vec<Value> = lines(&out).into_iter().map(|l| check_line(OllamaEndpoint::Chat, l)).collect();
    assert_eq!(values[0]["message"], json!({"role": "assistant", "content": "", "thinking": "Let me think."}));
    assert_eq!(values[1]["message"]["thinking"], "vLLM style.");
    assert_eq!(values[2]["message"], json!({"role": "assistant", "content": "42"}));
    // no usage chunk: counts fall back to the number of deltas, durations to 0
    assert_eq!((&values[3]["eval_count"], &values[3]["prompt_eval_count"]), (&json!(3), &json!(0)));
    let (out, _) = run(OllamaEndpoint::Generate, input.as_bytes(), &[]);
    let first = check_line(OllamaEndpoint::Generate, lines(&out)[0]);
    assert_eq!((&first["response"], &first["thinking"]), (&json!(""), &json!("Let me think.")));
}

fn tool_call_transcript() -> String {
    let mut s = String::new();
    s += &chunk(1_721_680_341, json!({"role": "assistant", "content": null}), None);
    s += &chunk(
        1_721_680_341,
        json!({"tool_calls": [{"index": 0, "id": "aBcD1234", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        None,
    );
    s += &chunk(1_721_680_341, json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), None);
    s += &chunk(
        1_721_680_341,
        json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"Paris\", \"days\": 2}"}}]}),
        None,
    );
    s += &chunk(
        1_721_680_341,
        json!({"tool_calls": [{"index": 1, "id": "eFgH5678", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}]}),
        None,
    );
    s += &chunk(1_721_680_342, json!({}), Some("tool_calls"));
    s += &usage_chunk(1_721_680_342, 50, 20);
    s += "data: [DONE]\n\n";
    s
}

#[test]
fn stream_tool_call_fragments_assembled() {
    let input = tool_call_transcript();
    let (out, err) = run(OllamaEndpoint::Chat, input.as_bytes(), &[]);
    assert!(err.is_none());
    let ls = lines(&out);
    assert_eq!(ls.len(), 2, "{}", String::from_utf8_lossy(&out));
    assert_eq!(
        ls[0],
        concat!(
            r#"{"model":"smollm2","created_at":"2024-07-22T20:32:22Z","message":{"role":"assistant","content":"","tool_calls":["#,
            r#"{"id":"aBcD1234","function":{"index":0,"name":"get_weather","arguments":{"city":"Paris","days":2}}},"#,
            r#"{"id":"eFgH5678","function":{"index":1,"name":"get_time","arguments":{"tz":"CET"}}}]},"done":false}"#,
            "\n"
        )
        .as_bytes()
    );
    let done = check_line(OllamaEndpoint::Chat, ls[1]);
    assert_eq!((&done["done_reason"], &done["eval_count"]), (&json!("stop"), &json!(20)));
    check_line(OllamaEndpoint::Chat, ls[0]);
    let (bytewise, _) = run(OllamaEndpoint::Chat, input.as_bytes(), &[1]);
    assert_eq!(bytewise, out);
}

#[test]
fn stream_tool_calls_vllm_style_and_out_of_order() {
    // vLLM: arguments streamed after a header chunk; calls may interleave by index
    let mut s = String::new();
    s += &chunk(5, json!({"role": "assistant", "content": ""}), None);
    s += &chunk(
        5,
        json!({"tool_calls": [{"index": 1, "id": "chatcmpl-tool-2", "type": "function", "function": {"name": "b"}}]}),
        None,
    );
    s += &chunk(
        5,
        json!({"tool_calls": [{"index": 0, "id": "chatcmpl-tool-1", "type": "function", "function": {"name": "a"}}]}),
        None,
    );
    s += &chunk(5, json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\": 1}"}}]}), None);
    s += &chunk(5, json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}), None);
    // a repeated whole name is not appended
    s += &chunk(5, json!({"tool_calls": [{"index": 1, "function": {"name": "b", "arguments": ""}}]}), None);
    s += &chunk(5, json!({}), Some("tool_calls"));
    // no [DONE]: EOF after the finish chunk still completes
    let (out, err) = run(OllamaEndpoint::Chat, s.as_bytes(), &[5]);
    assert!(err.is_none());
    let values: Vec<Value> = lines(&out).into_iter().map(|l| check_line(OllamaEndpoint::Chat, l)).collect();
    assert_eq!(values.len(), 2);
    let calls = &values[0]["message"]["tool_calls"];
    assert_eq!(calls[0]["function"], json!({"index": 0, "name": "a", "arguments": {"x": 1}}));
    assert_eq!(calls[1]["function"], json!({"index": 1, "name": "b", "arguments": {}}));
    assert_eq!(values[1]["done"], json!(true));
}

#[test]
fn stream_invalid_tool_arguments_is_an_error_line() {
    let mut s = String::new();
    s += &chunk(
        5,
        json!({"tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": "{\"a\": tru"}}]}),
        None,
    );
    s += &chunk(5, json!({}), Some("length"));
    s += "data: [DONE]\n\n";
    let mut conv = SseToNdjson::new(OllamaEndpoint::Chat, "m".into());
    let out: Vec<Bytes> = conv.push(s.as_bytes());
    assert_eq!(out.len(), 1);
    let err: OllamaError = serde_json::from_slice(&out[0]).unwrap();
    assert!(err.error.contains("invalid tool call arguments for \"f\""), "{}", err.error);
    assert!(conv.is_finished());
    assert!(conv.error().is_some());
    assert_eq!(conv.finish().unwrap(), None);
}

#[test]
fn stream_error_events() {
    // llama-server: `data: {"error": {...}}` mid-stream
    let mut s = String::new();
    s += &chunk(1, json!({"content": "partial"}), None);
    s += "data: {\"error\":{\"code\":500,\"message\":\"context shift is disabled\",\"type\":\"server_error\"}}\n\n";
    s += &chunk(1, json!({"content": "never"}), None);
    let mut conv = SseToNdjson::new(OllamaEndpoint::Chat, "m".into());
    let out = conv.push(s.as_bytes());
    assert_eq!(out.len(), 2);
    check_line(OllamaEndpoint::Chat, &out[0]);
    assert_eq!(out[1], Bytes::from_static(b"{\"error\":\"context shift is disabled\"}\n"));
    assert_eq!(conv.error(), Some("context shift is disabled"));
    assert!(conv.is_finished());
    assert_eq!(conv.finish().unwrap(), None);

    // the older `error: {...}` line, `event: error`, and vLLM's old `{"object": "error"}`
    for (input, message) in [
        ("error: {\"code\":503,\"message\":\"Loading model\",\"type\":\"unavailable_error\"}\n\n", "Loading model"),
        ("event: error\ndata: {\"message\":\"overloaded\"}\n\n", "overloaded"),
        ("event: error\ndata: not json\n\n", "not json"),
        ("data: {\"object\":\"error\",\"message\":\"bad\",\"type\":\"BadRequestError\",\"code\":400}\n\n", "bad"),
        ("data: {\"error\":\"flat\"}\n\n", "flat"),
    ] {
        let (out, err) = run(OllamaEndpoint::Generate, input.as_bytes(), &[2]);
        assert!(err.is_none(), "{input}");
        let e: OllamaError = serde_json::from_slice(&out).unwrap();
        assert_eq!(e.error, message, "{input}");
    }

    // an unreadable event fails the stream
    let (out, err) = run(OllamaEndpoint::Chat, b"data: {\"choices\": [\n\n", &[]);
    assert!(err.is_none());
    let e: OllamaError = serde_json::from_slice(&out).unwrap();
    assert!(e.error.starts_with("upstream sent an unreadable stream event"), "{}", e.error);
}

#[test]
fn stream_early_eof_is_an_error() {
    let full = llama_server_transcript();
    let cut = &full[..full.find("\"stop\"").unwrap()];
    let (out, err) = run(OllamaEndpoint::Chat, cut.as_bytes(), &[9]);
    let err = err.unwrap();
    assert_eq!(err, TranslateError::StreamEndedEarly);
    assert!(err.to_string().starts_with("stream ended early"));
    assert_eq!(err.failure_class(), FailureClass::StreamBroken);
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    // the content delivered before the cut was forwarded
    assert_eq!(lines(&out).len(), 3);
    let line = ollama_error_line(&err.to_string());
    check_line(OllamaEndpoint::Chat, &line);

    // nothing at all
    let mut conv = SseToNdjson::new(OllamaEndpoint::Chat, "m".into());
    assert_eq!(conv.finish(), Err(TranslateError::StreamEndedEarly));
    assert!(conv.is_finished());
    assert!(conv.error().unwrap().starts_with("stream ended early"));
}

#[test]
fn stream_finish_processes_an_unterminated_last_event() {
    let full = llama_server_transcript();
    // without the final blank line, and without the last newline
    let trimmed = full.trim_end();
    let (out, err) = run(OllamaEndpoint::Chat, trimmed.as_bytes(), &[13]);
    assert!(err.is_none());
    assert_eq!(String::from_utf8(out).unwrap(), TRANSCRIPT_NDJSON);
    // the finish chunk and usage arrived but [DONE] did not: done at EOF
    let no_done = full.replace("data: [DONE]\n\n", "");
    let (out, err) = run(OllamaEndpoint::Chat, no_done.as_bytes(), &[]);
    assert!(err.is_none());
    assert_eq!(String::from_utf8(out).unwrap(), TRANSCRIPT_NDJSON);
    // cut inside `[DONE]`: the answer had finished, so it completes
    let cut = &full[..full.len() - 4];
    let (out, err) = run(OllamaEndpoint::Chat, cut.as_bytes(), &[]);
    assert!(err.is_none());
    assert_eq!(String::from_utf8(out).unwrap(), TRANSCRIPT_NDJSON);
    // cut inside the usage chunk: completes, with the counts it has (one per delta)
    let cut = &full[..full.find("\"usage\"").unwrap()];
    let (out, err) = run(OllamaEndpoint::Chat, cut.as_bytes(), &[]);
    assert!(err.is_none());
    let last = check_line(OllamaEndpoint::Chat, lines(&out)[3]);
    assert_eq!(
        (&last["done_reason"], &last["eval_count"], &last["prompt_eval_count"]),
        (&json!("stop"), &json!(3), &json!(0))
    );
    // cut inside a content chunk: ended early
    let cut = &full[..full.find("wörld").unwrap()];
    let (out, err) = run(OllamaEndpoint::Chat, cut.as_bytes(), &[]);
    assert_eq!(err, Some(TranslateError::StreamEndedEarly));
    assert_eq!(lines(&out).len(), 1);
}

#[test]
fn stream_sse_framing_variants() {
    let full = llama_server_transcript();
    // CRLF and lone CR line ends, `data:` without a space, comments, event/id/retry lines, a BOM
    let crlf = full.replace('\n', "\r\n");
    let cr = full.replace('\n', "\r");
    let nospace = full.replace("data: ", "data:");
    let noisy = format!(
        "\u{feff}: keep-alive\n\nretry: 1000\n\n{}",
        full.replace("data: ", ": ping\nevent: message\nid: 7\ndata: ")
    );
    for variant in [crlf, cr, nospace, noisy] {
        for sizes in [&[][..], &[1][..], &[2, 3, 5][..]] {
            let (out, err) = run(OllamaEndpoint::Chat, variant.as_bytes(), sizes);
            assert!(err.is_none());
            assert_eq!(String::from_utf8(out).unwrap(), TRANSCRIPT_NDJSON, "{variant:?} {sizes:?}");
        }
    }
    // a JSON value spread over several data lines of one event
    let multi = "data: {\"choices\":[{\"index\":0,\n data: \"delta\":{\"content\":\"hi\"}}],\ndata: \"created\":1}\n\ndata: [DONE]\n\n";
    let (out, _) = run(OllamaEndpoint::Chat, multi.replace(" data:", "data:").as_bytes(), &[1]);
    let values: Vec<Value> = lines(&out).into_iter().map(|l| check_line(OllamaEndpoint::Chat, l)).collect();
    assert_eq!(values[0]["message"]["content"], "hi");
    assert_eq!(values[1]["done"], json!(true));
}

#[test]
fn stream_ignores_other_choices_and_keeps_logprobs() {
    let mut s = String::new();
    s += "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other\"}},{\"index\":0,\"delta\":{\"content\":\"mine\"},\"logprobs\":{\"content\":[{\"token\":\"mine\",\"logprob\":-0.1,\"bytes\":[109,105,110,101],\"top_logprobs\":[]}]}}],\"created\":3}\n\n";
    s += "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"created\":3}\n\n";
    s += "data: [DONE]\n\n";
    let (out, _) = run(OllamaEndpoint::Chat, s.as_bytes(), &[]);
    let values: Vec<Value> = lines(&out).into_iter().map(|l| check_line(OllamaEndpoint::Chat, l)).collect();
    assert_eq!(values.len(), 2);
    assert_eq!(values[0]["message"]["content"], "mine");
    assert_eq!(values[0]["logprobs"][0]["token"], "mine");
}

#[test]
fn stream_with_start_measures_durations_without_timings() {
    let mut s = String::new();
    s += &chunk(1, json!({"content": "a"}), None);
    s += &chunk(1, json!({}), Some("stop"));
    s += "data: {\"choices\":[],\"created\":1,\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
    s += "data: [DONE]\n\n";
    let mut conv = SseToNdjson::new(OllamaEndpoint::Chat, "m".into()).with_start(std::time::Instant::now());
    let out = conv.push(s.as_bytes());
    let done = check_line(OllamaEndpoint::Chat, out.last().unwrap());
    let total = done["total_duration"].as_u64().unwrap();
    let prompt = done["prompt_eval_duration"].as_u64().unwrap();
    let eval = done["eval_duration"].as_u64().unwrap();
    assert!(total >= prompt + eval);
    assert_eq!((&done["prompt_eval_count"], &done["eval_count"]), (&json!(3), &json!(1)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any split of the llama-server transcripts gives exactly the same NDJSON.
    #[test]
    fn stream_any_split_gives_identical_output(sizes in proptest::collection::vec(1usize..64, 1..40)) {
        for (input, endpoint) in [
            (llama_server_transcript(), OllamaEndpoint::Chat),
            (llama_server_transcript(), OllamaEndpoint::Generate),
            (tool_call_transcript(), OllamaEndpoint::Chat),
        ] {
            let (whole, e1) = run(endpoint, input.as_bytes(), &[]);
            let (split, e2) = run(endpoint, input.as_bytes(), &sizes);
            prop_assert!(e1.is_none() && e2.is_none());
            prop_assert_eq!(split, whole);
        }
    }

    /// Arbitrary bytes never panic, and whatever comes out is whole lines of valid Ollama JSON.
    #[test]
    fn stream_never_panics_on_arbitrary_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        sizes in proptest::collection::vec(1usize..32, 1..8),
    ) {
        let (out, _) = run(OllamaEndpoint::Chat, &input, &sizes);
        for line in lines(&out) {
            check_line(OllamaEndpoint::Chat, line);
        }
    }

    /// SSE-looking noise built from real fragments never panics either.
    #[test]
    fn stream_never_panics_on_sse_like_noise(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("data: ".to_owned()), Just("data:".to_owned()), Just("\n".to_owned()), Just("\r\n".to_owned()),
                Just("[DONE]".to_owned()), Just("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}".to_owned()),
                Just("{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{\"}}]}}]}".to_owned()),
                Just("{\"choices\":[{\"finish_reason\":\"stop\",\"delta\":{}}]}".to_owned()),
                Just("{\"error\":{\"message\":\"e\"}}".to_owned()), Just("event: error".to_owned()), Just(": c".to_owned()),
                Just("{\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":1e400}}".to_owned()),
                "[ -~]{0,12}",
            ],
            0..40,
        ),
        sizes in proptest::collection::vec(1usize..16, 1..6),
    ) {
        let input = parts.concat();
        for endpoint in [OllamaEndpoint::Chat, OllamaEndpoint::Generate] {
            let (out, _) = run(endpoint, input.as_bytes(), &sizes);
            for line in lines(&out) {
                check_line(endpoint, line);
            }
        }
    }

    /// Content with any characters survives the trip, split anywhere (inside UTF-8 too).
    #[test]
    fn stream_content_round_trips(pieces in proptest::collection::vec(".{0,8}", 1..12), size in 1usize..9) {
        let mut input = String::new();
        for p in &pieces {
            input += &chunk(1, json!({"content": p}), None);
        }
        input += &chunk(1, json!({}), Some("stop"));
        input += "data: [DONE]\n\n";
        let (out, err) = run(OllamaEndpoint::Chat, input.as_bytes(), &[size]);
        prop_assert!(err.is_none());
        let mut text = String::new();
        for line in lines(&out) {
            let v = check_line(OllamaEndpoint::Chat, line);
            text += v["message"]["content"].as_str().unwrap();
        }
        prop_assert_eq!(text, pieces.concat());
    }
}
