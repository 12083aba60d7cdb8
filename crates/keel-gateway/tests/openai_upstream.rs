//! Ollama-API clients served by an OpenAI-dialect upstream (`dialect = "openai"`): keel translates
//! `/api/chat` and `/api/generate` to `/v1/chat/completions` and the answers back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_mock::MockServer;
use keel_testkit::{TestGateway, config_from_toml, post_json, post_json_text, scenario};
use serde_json::{Value, json};

/// A fake server (only its `/v1` side is used) and keel treating it as an OpenAI upstream.
async fn stack() -> (MockServer, TestGateway) {
    let mock = MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        scenario(
            "[[model]]\nname = \"llama3.2\"\nreply = \"Hello from the OpenAI side.\"\n\
             tool_call = { name = \"get_weather\", arguments = { city = \"Paris\" } }\n",
        ),
    )
    .await
    .unwrap();
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"llamacpp\"\nurl = \"{}\"\ndialect = \"openai\"\nhealth_interval = \"0s\"\n",
        mock.url()
    )))
    .await;
    (mock, keel)
}

#[tokio::test]
async fn chat_without_stream_is_translated_both_ways() {
    let (mock, keel) = stack().await;
    let response = post_json(
        &format!("{}/api/chat", keel.url()),
        &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false, "options": {"temperature": 0.2, "num_predict": 50}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "llama3.2");
    assert_eq!(body["message"]["role"], "assistant");
    assert_eq!(body["message"]["content"], "Hello from the OpenAI side.");
    assert_eq!(body["done"], true);
    assert!(body["eval_count"].as_u64().unwrap() > 0, "{body}");
    // The upstream got an OpenAI request.
    let sent = mock.requests().into_iter().find(|r| r.path == "/v1/chat/completions").unwrap();
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["stream"], false);
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["max_tokens"], 50);
}

#[tokio::test]
async fn streamed_chat_becomes_ndjson() {
    let (_mock, keel) = stack().await;
    let text = post_json_text(
        &format!("{}/api/chat", keel.url()),
        &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() > 2, "{text}");
    let content: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(content, "Hello from the OpenAI side.");
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{text}");
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
}

#[tokio::test]
async fn generate_and_tools_are_translated() {
    let (_mock, keel) = stack().await;
    let body: Value = post_json(
        &format!("{}/api/generate", keel.url()),
        &json!({"model": "llama3.2", "prompt": "hi", "system": "be brief", "stream": false}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["response"], "Hello from the OpenAI side.", "{body}");
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body: Value = post_json(
        &format!("{}/api/chat", keel.url()),
        &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "weather?"}], "tools": tools, "stream": false}),
    )
    .await
    .json()
    .await
    .unwrap();
    let call = &body["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather", "{body}");
    assert_eq!(call["arguments"]["city"], "Paris", "{body}");
}

#[tokio::test]
async fn upstream_errors_come_back_in_ollamas_shape() {
    let (_mock, keel) = stack().await;
    let response = post_json(
        &format!("{}/api/chat", keel.url()),
        &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], "stream": false}),
    )
    .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("not found"), "{body}");
    // A load request (no messages) is answered by keel, as Ollama does, without a model call.
    let body: Value = post_json(&format!("{}/api/chat", keel.url()), &json!({"model": "llama3.2", "messages": []}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["done_reason"], "load", "{body}");
}
