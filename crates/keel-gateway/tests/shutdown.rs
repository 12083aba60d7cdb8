//! On shutdown keel stops accepting but lets in-flight streams finish.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::time::Duration;

use keel_testkit::Stack;
use serde_json::{Value, json};

#[tokio::test]
async fn in_flight_streams_finish_during_shutdown() {
    let scenario = keel_testkit::scenario(
        "[[model]]\nname = \"m\"\nreply = \"one two three four five\"\ntoken_delay = \"100ms\"\n",
    );
    let Stack { mock, mut keel } = Stack::start(scenario).await;
    let url = keel.url();
    let mut response = reqwest::Client::new()
        .post(format!("{url}/api/chat"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let mut body = response.chunk().await.unwrap().unwrap().to_vec();
    keel.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New connections are refused once shutdown began.
    let refused = reqwest::Client::new().get(format!("{url}/api/version")).send().await;
    assert!(refused.is_err(), "keel still accepts new connections during shutdown");
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true, "the in-flight stream was cut: {text}");
    tokio::time::timeout(Duration::from_secs(5), keel.stopped())
        .await
        .expect("keel did not stop after the stream ended");
    assert_eq!(mock.stats().completed, 1);
}
