//! A client that goes away cancels the upstream request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::time::Duration;

use keel_testkit::Stack;
use serde_json::json;

async fn wait_for(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn dropping_a_stream_cancels_the_upstream() {
    let scenario = keel_testkit::scenario(
        "[[model]]\nname = \"m\"\nreply = \"one two three four five six seven eight nine ten\"\ntoken_delay = \"200ms\"\n",
    );
    let stack = Stack::start(scenario).await;
    let mut response = reqwest::Client::new()
        .post(format!("{}/api/chat", stack.keel.url()))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let _first = response.chunk().await.unwrap().unwrap();
    drop(response);
    assert!(wait_for(|| stack.mock.stats().cancelled == 1).await, "upstream not cancelled: {:?}", stack.mock.stats());
    assert_eq!(stack.mock.stats().completed, 0);
}

#[tokio::test]
async fn abandoning_a_waiting_request_cancels_the_upstream() {
    let scenario = keel_testkit::scenario("[[model]]\nname = \"m\"\n[[model.fault]]\nkind = \"hang\"\n");
    let stack = Stack::start(scenario).await;
    let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let result = client
        .post(format!("{}/api/chat", stack.keel.url()))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false}))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert!(wait_for(|| stack.mock.stats().cancelled == 1).await, "upstream not cancelled: {:?}", stack.mock.stats());
}
