//! Streams are relayed chunk by chunk, and a stream that breaks ends with an error line, never a
//! bare EOF.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::time::Duration;

use keel_testkit::{Stack, TestGateway, config_from_toml, post_json_text, scenario};
use serde_json::{Value, json};

fn lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn chunks_arrive_before_the_stream_ends() {
    // 12 words, 150 ms apart: the whole answer takes ~1.8 s upstream.
    let scenario = scenario(
        "[[model]]\nname = \"slow\"\nreply = \"one two three four five six seven eight nine ten eleven twelve\"\ntoken_delay = \"150ms\"\n",
    );
    let stack = Stack::start(scenario).await;
    let mut response = reqwest::Client::new()
        .post(format!("{}/api/chat", stack.keel.url()))
        .json(&json!({"model": "slow", "messages": [{"role": "user", "content": "count"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let first = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await.unwrap().unwrap().unwrap();
    let first: Value = serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["done"], false);
    // The first chunk reached the client while the upstream was still generating.
    assert_eq!(stack.mock.stats().completed, 0, "keel buffered the stream instead of relaying it");
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let last = lines(std::str::from_utf8(&rest).unwrap()).pop().unwrap();
    assert_eq!(last["done"], true);
}

#[tokio::test]
async fn openai_streams_are_sse_and_end_with_done() {
    let stack = Stack::basic().await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", stack.keel.url()))
        .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": true}))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_line() {
    let scenario = scenario(
        "[[model]]\nname = \"m\"\nreply = \"a b c d e f\"\n[[model.fault]]\nkind = \"cut\"\nafter_chunks = 2\n",
    );
    let stack = Stack::start(scenario).await;
    let text = post_json_text(
        &format!("{}/api/chat", stack.keel.url()),
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let lines = lines(&text);
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[..2].iter().all(|l| l["done"] == false));
    let error = lines[2]["error"].as_str().unwrap();
    assert!(error.contains("incomplete"), "{error}");

    let status: Value = reqwest::get(format!("{}/keel/status", stack.keel.url())).await.unwrap().json().await.unwrap();
    let target = status["targets"].as_array().unwrap().iter().find(|t| t["name"] == "default:m").unwrap();
    assert_eq!(target["last_failure"]["class"], "stream_broken");
}

#[tokio::test]
async fn an_sse_stream_cut_midway_ends_with_an_error_event() {
    let scenario = scenario(
        "[[model]]\nname = \"m\"\nreply = \"a b c d e f\"\n[[model.fault]]\nkind = \"cut\"\nafter_chunks = 2\n",
    );
    let stack = Stack::start(scenario).await;
    let text = post_json_text(
        &format!("{}/v1/chat/completions", stack.keel.url()),
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}),
    )
    .await;
    let last = text.trim_end().lines().last().unwrap();
    let event: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(event["error"]["message"].as_str().unwrap().contains("incomplete"), "{text}");
}

#[tokio::test]
async fn upstream_error_lines_pass_through() {
    let scenario = scenario(
        "[[model]]\nname = \"m\"\nreply = \"a b c d\"\n[[model.fault]]\nkind = \"error_line\"\nafter_chunks = 1\nmessage = \"out of memory\"\n",
    );
    let stack = Stack::start(scenario).await;
    let text =
        post_json_text(&format!("{}/api/generate", stack.keel.url()), &json!({"model": "m", "prompt": "x"})).await;
    let lines = lines(&text);
    assert_eq!(lines.last().unwrap()["error"], "out of memory");
}

#[tokio::test]
async fn a_silent_stream_is_ended_after_the_idle_timeout() {
    let scenario = scenario("[[model]]\nname = \"m\"\nreply = \"a b c\"\ntoken_delay = \"5s\"\n");
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let config = config_from_toml(&format!(
        "[[upstream]]\nname = \"default\"\nurl = \"{}\"\nidle_timeout = \"300ms\"\n",
        mock.url()
    ));
    let keel = TestGateway::start(config).await;
    let text = post_json_text(
        &format!("{}/api/chat", keel.url()),
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let last = lines(&text).pop().unwrap();
    assert!(last["error"].as_str().unwrap().contains("idle_timeout"), "{text}");
}
