//! Connections are kept alive and pooled on both sides, and `TCP_NODELAY` keeps kept-alive
//! requests from stalling (Nagle + delayed ACK costs ~40 ms per request without it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::time::{Duration, Instant};

use keel_testkit::Stack;
use serde_json::json;

/// Median wall time of `n` sequential streamed chat requests (Ollama's default) over one kept-alive
/// connection. Streamed answers are chunked: the final chunk is a separate small write, exactly
/// the write Nagle's algorithm holds back until the client's delayed ACK.
async fn median_on_one_connection(base: &str, n: usize) -> (Duration, Vec<Duration>) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = client
            .post(format!("{base}/api/chat"))
            .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("content-length").is_none(), "expected a chunked stream");
        let _ = response.bytes().await.unwrap();
        times.push(started.elapsed());
    }
    let mut sorted = times[1..].to_vec();
    sorted.sort();
    (sorted[sorted.len() / 2], times)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_requests_do_not_stall() {
    let stack = Stack::basic().await;
    // Warm both paths, then measure direct and through keel in the same run.
    let _ = median_on_one_connection(&stack.mock.url(), 3).await;
    let (direct, _) = median_on_one_connection(&stack.mock.url(), 21).await;
    let (through_keel, times) = median_on_one_connection(&stack.keel.url(), 21).await;
    // A Nagle stall would make every request after the first take 40 ms or more: hundreds of
    // times the direct median on loopback. Allow generous noise, not a stall.
    let ratio = through_keel.as_secs_f64() / direct.as_secs_f64().max(50e-6);
    assert!(
        ratio < 20.0 && through_keel < Duration::from_millis(30),
        "second and later requests are slow: keel median {through_keel:?} vs direct {direct:?}; all: {times:?}"
    );
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let stack = Stack::basic().await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let response = client
            .post(format!("{}/api/generate", stack.keel.url()))
            .json(&json!({"model": "llama3.2", "prompt": "hi", "stream": false}))
            .send()
            .await
            .unwrap();
        let _ = response.bytes().await.unwrap();
    }
    assert_eq!(stack.mock.stats().requests, 20);
    assert_eq!(stack.mock.stats().connections, 1, "keel opened a new upstream connection per request");
}
