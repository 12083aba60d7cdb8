//! The Anthropic Messages API (`/v1/messages`, `/v1/messages/count_tokens`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

mod common;

use common::{json, post, sse_named, start};
use keel_mock::{Fault, FaultKind, ModelSpec, Scenario, ToolCall};
use serde_json::{Value, json};

const REPLY: &str = "Hello from keel-mock.";

fn ask(stream: bool) -> Value {
    json!({"model": "llama3.2", "max_tokens": 64, "stream": stream, "system": "be brief",
           "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]})
}

fn weather_model() -> ModelSpec {
    ModelSpec {
        tool_call: Some(ToolCall { name: "get_weather".into(), arguments: json!({"city": "Paris"}) }),
        ..ModelSpec::new("llama3.2", REPLY)
    }
}

fn with_tools(stream: bool) -> Value {
    json!({"model": "llama3.2", "max_tokens": 64, "stream": stream,
           "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
           "messages": [{"role": "user", "content": "weather?"}]})
}

#[tokio::test]
async fn message_non_stream() {
    let s = start(Scenario::default().with_seed(3)).await;
    let (status, ct, body) = post(&s, "/v1/messages", ask(false)).await;
    assert_eq!((status, ct.as_str()), (200, "application/json; charset=utf-8"));
    let v = json(&body);
    assert_eq!(v["id"], "msg_0");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "llama3.2");
    assert_eq!(v["content"], json!([{"type": "text", "text": REPLY}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    assert_eq!(v["usage"], json!({"input_tokens": 4, "output_tokens": 3}));
    assert_eq!(v["x_mock"]["seed"], 3);
}

#[tokio::test]
async fn message_stream_events() {
    let s = start(Scenario::default()).await;
    let (status, ct, body) = post(&s, "/v1/messages", ask(true)).await;
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
    let events = sse_named(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(events[0].1["message"]["content"], json!([]));
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 4);
    assert_eq!(events[1].1["content_block"], json!({"type": "text", "text": ""}));
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, REPLY);
    assert_eq!(events[7].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[7].1["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn tool_use_whole_and_streamed() {
    let s = start(Scenario { models: vec![weather_model()], ..Scenario::default() }).await;
    let v = json(&post(&s, "/v1/messages", with_tools(false)).await.2);
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"],
        json!([{"type": "tool_use", "id": "toolu_0_0", "name": "get_weather", "input": {"city": "Paris"}}])
    );

    let events = sse_named(&post(&s, "/v1/messages", with_tools(true)).await.2);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "tool_use", "id": "toolu_1_0", "name": "get_weather", "input": {}})
    );
    let partial: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(json(&partial), json!({"city": "Paris"}));
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn tool_result_gets_a_text_answer() {
    let s = start(Scenario { models: vec![weather_model()], ..Scenario::default() }).await;
    let mut req = with_tools(false);
    req["messages"] = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}
    ]);
    let v = json(&post(&s, "/v1/messages", req).await.2);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"][0]["text"], REPLY);
}

#[tokio::test]
async fn structured_output_uses_the_schema() {
    let s = start(Scenario::default()).await;
    let mut req = ask(false);
    req["output_format"] = json!({"type": "json_schema", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}});
    let v = json(&post(&s, "/v1/messages", req).await.2);
    let value = json(v["content"][0]["text"].as_str().unwrap());
    assert!(value["n"].is_i64(), "{value}");
}

#[tokio::test]
async fn errors_in_anthropic_shape() {
    let s = start(Scenario::default()).await;
    let (status, _, body) = post(&s, "/v1/messages", json!({"model": "nope", "max_tokens": 5, "messages": []})).await;
    assert_eq!(status, 404);
    assert_eq!(
        json(&body),
        json!({"type": "error", "error": {"type": "not_found_error", "message": "model 'nope' not found"}})
    );
    let (status, _, body) =
        post(&s, "/v1/messages", json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(status, 400);
    assert_eq!(json(&body)["error"]["type"], "invalid_request_error");
    let (status, _, body) = common::post_raw(&s, "/v1/messages", "{oops").await;
    assert_eq!(status, 400);
    assert_eq!(json(&body)["type"], "error");
}

fn faulty(fault: Fault) -> Scenario {
    Scenario { models: vec![ModelSpec::new("llama3.2", REPLY).with_fault(fault)], ..Scenario::default() }
}

#[tokio::test]
async fn busy_is_529_overloaded_and_server_error_is_api_error() {
    let s = start(faulty(Fault::new(FaultKind::Busy))).await;
    let (status, _, body) = post(&s, "/v1/messages", ask(false)).await;
    assert_eq!(status, 529);
    assert_eq!(json(&body)["error"]["type"], "overloaded_error");
    s.set_scenario(faulty(Fault::new(FaultKind::ServerError).with_message("boom")));
    let (status, _, body) = post(&s, "/v1/messages", ask(false)).await;
    assert_eq!(status, 500);
    assert_eq!(json(&body), json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}));
}

#[tokio::test]
async fn error_line_mid_stream_is_an_error_event() {
    let s = start(faulty(Fault::new(FaultKind::ErrorLine).with_after_chunks(1).with_message("died"))).await;
    let events = sse_named(&post(&s, "/v1/messages", ask(true)).await.2);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["message_start", "content_block_start", "ping", "content_block_delta", "error"]);
    assert_eq!(events[4].1, json!({"type": "error", "error": {"type": "api_error", "message": "died"}}));
}

#[tokio::test]
async fn cut_drops_the_stream_after_n_deltas() {
    let s = start(faulty(Fault::new(FaultKind::Cut).with_after_chunks(2).with_endpoints(&["/v1/messages"]))).await;
    let resp = common::client().post(format!("{}/v1/messages", s.url())).json(&ask(true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    let mut stream = resp.bytes_stream();
    let mut failed = false;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must end with an error");
    let text = String::from_utf8(got).unwrap();
    assert_eq!(text.matches("event: content_block_delta").count(), 2, "{text}");
    assert!(!text.contains("message_stop"));
}

#[tokio::test]
async fn count_tokens_matches_usage() {
    let s = start(Scenario::default()).await;
    let (status, _, body) = post(&s, "/v1/messages/count_tokens", ask(false)).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body), json!({"input_tokens": 4}));
}
