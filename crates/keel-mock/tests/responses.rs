//! The OpenAI Responses API (`/v1/responses`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

mod common;

use common::{json, post, sse_named, start};
use keel_mock::{Fault, FaultKind, ModelSpec, Scenario, ToolCall};
use serde_json::{Value, json};

const REPLY: &str = "Hello from keel-mock.";

fn ask(stream: bool) -> Value {
    json!({"model": "llama3.2", "input": "hi there", "instructions": "be brief", "stream": stream, "temperature": 0.5})
}

fn weather() -> Scenario {
    let model = ModelSpec {
        tool_call: Some(ToolCall { name: "get_weather".into(), arguments: json!({"city": "Paris"}) }),
        ..ModelSpec::new("llama3.2", REPLY)
    };
    Scenario { models: vec![model], ..Scenario::default() }
}

fn tools() -> Value {
    json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}])
}

#[tokio::test]
async fn response_non_stream() {
    let s = start(Scenario::default().with_seed(4)).await;
    let (status, _, body) = post(&s, "/v1/responses", ask(false)).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["id"], "resp_0");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["created_at"].is_u64());
    assert_eq!(
        v["output"],
        json!([{"type": "message", "id": "msg_0", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": REPLY, "annotations": [], "logprobs": []}]}])
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 4, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7})
    );
    assert_eq!(v["instructions"], "be brief");
    assert_eq!(v["temperature"], 0.5);
    assert_eq!(v["tools"], json!([]));
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["text"], json!({"format": {"type": "text"}}));
    assert_eq!(v["parallel_tool_calls"], true);
    assert!(v["error"].is_null() && v["incomplete_details"].is_null());
    assert_eq!(v["metadata"], json!({}));
    assert_eq!(v["x_mock"]["seed"], 4);
}

#[tokio::test]
async fn response_stream_events() {
    let s = start(Scenario::default()).await;
    let (status, ct, body) = post(&s, "/v1/responses", ask(true)).await;
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
    let events = sse_named(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert!(events[0].1["response"]["usage"].is_null());
    let text: String = events[4..7].iter().map(|(_, d)| d["delta"].as_str().unwrap().to_owned()).collect();
    assert_eq!(text, REPLY);
    assert_eq!(events[7].1["text"], REPLY);
    assert_eq!(events[10].1["response"]["output"][0]["content"][0]["text"], REPLY);
    assert_eq!(events[10].1["response"]["status"], "completed");
}

#[tokio::test]
async fn json_schema_format_answers_conforming_json() {
    let s = start(Scenario::default()).await;
    let mut req = ask(false);
    req["text"] = json!({"format": {"type": "json_schema", "name": "x", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}});
    let v = json(&post(&s, "/v1/responses", req.clone()).await.2);
    assert!(json(v["output"][0]["content"][0]["text"].as_str().unwrap())["ok"].is_boolean());
    assert_eq!(v["text"], req["text"]);
}

#[tokio::test]
async fn function_call_whole_streamed_and_after_output() {
    let s = start(weather()).await;
    let mut req = ask(false);
    req["tools"] = tools();
    let v = json(&post(&s, "/v1/responses", req.clone()).await.2);
    assert_eq!(
        v["output"],
        json!([{"type": "function_call", "id": "fc_0_0", "call_id": "call_0_0", "name": "get_weather",
                "arguments": "{\"city\":\"Paris\"}", "status": "completed"}])
    );
    req["stream"] = json!(true);
    let events = sse_named(&post(&s, "/v1/responses", req.clone()).await.2);
    let args: String = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(json(&args), json!({"city": "Paris"}));
    assert!(events.iter().any(|(n, d)| n == "response.function_call_arguments.done" && d["name"] == "get_weather"));
    assert_eq!(events.last().unwrap().0, "response.completed");

    req["stream"] = json!(false);
    req["input"] = json!([{"role": "user", "content": "weather?"},
                          {"type": "function_call_output", "call_id": "call_0_0", "output": "sunny"}]);
    let v = json(&post(&s, "/v1/responses", req).await.2);
    assert_eq!(v["output"][0]["type"], "message");
}

#[tokio::test]
async fn errors_and_faults() {
    let s = start(Scenario::default()).await;
    let (status, _, body) = post(&s, "/v1/responses", json!({"model": "nope", "input": "x"})).await;
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["type"], "not_found_error");
    let (status, _, _) =
        post(&s, "/v1/responses", json!({"model": "llama3.2", "input": "x", "previous_response_id": "resp_1"})).await;
    assert_eq!(status, 400);

    let fault = Fault::new(FaultKind::ErrorLine).with_after_chunks(1).with_message("died");
    s.set_scenario(Scenario {
        models: vec![ModelSpec::new("llama3.2", REPLY).with_fault(fault)],
        ..Scenario::default()
    });
    let events = sse_named(&post(&s, "/v1/responses", ask(true)).await.2);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["message"], "died");
    assert_eq!(data["sequence_number"], events.len() - 1);
    assert_eq!(events.iter().filter(|(n, _)| n == "response.output_text.delta").count(), 1);
    let (status, _, _) = post(&s, "/v1/responses", ask(false)).await;
    assert_eq!(status, 500);

    s.set_scenario(Scenario {
        models: vec![ModelSpec::new("llama3.2", REPLY).with_fault(Fault::new(FaultKind::Busy))],
        ..Scenario::default()
    });
    let (status, _, body) = post(&s, "/v1/responses", ask(false)).await;
    assert_eq!(status, 503);
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("server busy"));
}
