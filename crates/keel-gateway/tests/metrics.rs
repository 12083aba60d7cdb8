//! `/metrics` exposes requests, latency histograms per route, model and status, and upstream
//! errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_testkit::{Stack, TestGateway, config_for};
use serde_json::json;

#[tokio::test]
async fn requests_and_upstream_errors_are_counted() {
    let stack = Stack::start(keel_mock::Scenario::single_model("metrics-model", "hi")).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client
            .post(format!("{}/api/chat", stack.keel.url()))
            .json(&json!({"model": "metrics-model", "messages": [], "stream": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = TestGateway::start(config_for(&format!("http://127.0.0.1:{port}"))).await;
    let _ = client
        .post(format!("{}/api/chat", dead.url()))
        .body(r#"{"model":"metrics-dead","messages":[]}"#)
        .send()
        .await
        .unwrap();

    let response = client.get(format!("{}/metrics", stack.keel.url())).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(text.contains(r#"keel_requests_total{route="/api/chat",model="metrics-model",status="200"} 3"#), "{text}");
    assert!(
        text.contains(
            r#"keel_request_duration_seconds_bucket{route="/api/chat",model="metrics-model",status="200",le="#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"keel_response_duration_seconds_count{route="/api/chat",model="metrics-model",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"keel_upstream_errors_total{upstream="default",class="refused"}"#), "{text}");
    // A model name that never got an answer shares the "other" label: made-up names cannot grow
    // /metrics.
    assert!(text.contains(r#"keel_requests_total{route="/api/chat",model="other",status="502"}"#), "{text}");
    assert!(!text.contains("metrics-dead"), "{text}");
}
