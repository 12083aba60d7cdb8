//! The OpenAI-compatible `/v1` endpoints.

mod common;

use common::{get, json, post, post_raw, sse, start};
use keel_mock::{ModelSpec, Scenario, ToolCall};
use serde_json::json;

const REPLY: &str = "Hello from keel-mock.";

#[tokio::test]
async fn chat_completion_non_stream_by_default() {
    let s = start(Scenario::default().with_seed(9)).await;
    let (status, ct, body) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "llama3.2", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/json; charset=utf-8");
    let v = json(&body);
    assert_eq!(v["id"], "chatcmpl-0");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].is_u64());
    assert_eq!(v["model"], "llama3.2");
    assert_eq!(v["system_fingerprint"], "fp_ollama");
    assert_eq!(
        v["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}])
    );
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}));
    assert_eq!(v["x_mock"]["seed"], 9);
}

#[tokio::test]
async fn chat_completion_stream() {
    let s = start(Scenario::default()).await;
    let (status, ct, body) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "llama3.2", "stream": true, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi you"}]}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "text/event-stream");
    let events = sse(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<_> = events[..events.len() - 1].iter().map(|e| json(e)).collect();
    let (last, content) = chunks.split_last().unwrap();
    let mut text = String::new();
    for c in content {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "chatcmpl-0");
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        assert!(c["choices"][0]["finish_reason"].is_null());
        text.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap());
    }
    assert_eq!(text, REPLY);
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last.get("usage").is_none());

    // include_usage adds a usage chunk with no choices before [DONE].
    let (_, _, body) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "llama3.2", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi you"}]}),
    )
    .await;
    let events = sse(&body);
    let usage = json(&events[events.len() - 2]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}));
}

#[tokio::test]
async fn chat_completion_json_and_tools() {
    let s = start(Scenario {
        models: vec![ModelSpec {
            tool_call: Some(ToolCall { name: "get_weather".into(), arguments: json!({"city": "Paris"}) }),
            ..ModelSpec::new("llama3.2", REPLY)
        }],
        ..Scenario::default()
    })
    .await;
    let (_, _, body) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "llama3.2", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}}, "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    let content = json(&body)["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert_eq!(json(&content), json!({"n": 1}));

    let (_, _, body) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "llama3.2", "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    let content = json(&body)["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert_eq!(json(&content), json!({"answer": REPLY}));

    let (_, _, body) = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "llama3.2", "tools": [{"type": "function", "function": {"name": "get_weather"}}], "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    let v = json(&body);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(json(call["function"]["arguments"].as_str().unwrap()), json!({"city": "Paris"}));
}

#[tokio::test]
async fn completions() {
    let s = start(Scenario::default()).await;
    let (status, _, body) = post(&s, "/v1/completions", json!({"model": "llama3.2", "prompt": "Say hi"})).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["id"], "cmpl-0");
    assert_eq!(v["choices"], json!([{"text": REPLY, "index": 0, "finish_reason": "stop"}]));
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let (_, ct, body) = post(
        &s,
        "/v1/completions",
        json!({"model": "llama3.2", "prompt": "Say hi", "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(ct, "text/event-stream");
    let events = sse(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<_> = events[..events.len() - 1].iter().map(|e| json(e)).collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|ch| ch["text"].as_str()).map(str::to_owned))
        .collect();
    assert_eq!(text, REPLY);
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn embeddings() {
    let s = start(Scenario::default()).await;
    let (status, _, body) = post(&s, "/v1/embeddings", json!({"model": "llama3.2", "input": ["a b", "c"]})).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "llama3.2");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    // Same vector as Ollama's native endpoint for the same text.
    let (_, _, native) = post(&s, "/api/embed", json!({"model": "llama3.2", "input": "c"})).await;
    assert_eq!(json(&native)["embeddings"][0], data[1]["embedding"]);

    let (status, _, body) = post(&s, "/v1/embeddings", json!({"model": "llama3.2", "input": ""})).await;
    assert_eq!(status, 400);
    assert_eq!(json(&body)["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn models() {
    let s = start(Scenario::default()).await;
    let (status, _, body) = get(&s, "/v1/models").await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "llama3.2:latest");
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "library");
    assert!(v["data"][0]["created"].is_u64());

    let (status, _, body) = get(&s, "/v1/models/llama3.2").await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["id"], "llama3.2");

    let (status, _, body) = get(&s, "/v1/models/ghost").await;
    assert_eq!(status, 404);
    assert_eq!(
        json(&body),
        json!({"error": {"message": "model 'ghost' not found", "type": "not_found_error", "param": null, "code": null}})
    );
}

#[tokio::test]
async fn errors_use_the_openai_shape() {
    let s = start(Scenario::default()).await;
    let (status, _, body) = post_raw(&s, "/v1/chat/completions", "").await;
    assert_eq!(status, 400);
    assert_eq!(
        json(&body),
        json!({"error": {"message": "missing request body", "type": "invalid_request_error", "param": null, "code": null}})
    );
    let (status, _, body) = post(&s, "/v1/chat/completions", json!({"messages": []})).await;
    assert_eq!(status, 400);
    assert_eq!(json(&body)["error"]["message"], "model is required");
    let (status, _, body) = post(&s, "/v1/completions", json!({"model": "ghost", "prompt": "x"})).await;
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["message"], "model 'ghost' not found");
    assert_eq!(json(&body)["error"]["type"], "not_found_error");
}
