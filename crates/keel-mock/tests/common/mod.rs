//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use keel_mock::{MockServer, Scenario};
use serde_json::Value;

pub async fn start(scenario: Scenario) -> MockServer {
    MockServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), scenario).await.expect("mock starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

/// Status, content type and body text of a POST with a JSON body.
pub async fn post(server: &MockServer, path: &str, body: Value) -> (u16, String, String) {
    let resp = client().post(format!("{}{path}", server.url())).json(&body).send().await.expect("request");
    parts(resp).await
}

/// Status, content type and body text of a request with a raw body.
pub async fn post_raw(server: &MockServer, path: &str, body: &'static str) -> (u16, String, String) {
    let resp = client().post(format!("{}{path}", server.url())).body(body).send().await.expect("request");
    parts(resp).await
}

pub async fn get(server: &MockServer, path: &str) -> (u16, String, String) {
    let resp = client().get(format!("{}{path}", server.url())).send().await.expect("request");
    parts(resp).await
}

pub async fn parts(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = resp.text().await.expect("body");
    (status, ct, text)
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Parses NDJSON into values (every line must be JSON).
pub fn ndjson(text: &str) -> Vec<Value> {
    assert!(text.ends_with('\n'), "NDJSON ends with a newline: {text:?}");
    text.lines().map(json).collect()
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "SSE ends with a blank line: {text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not an SSE data event: {e:?}")).to_owned())
        .collect()
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}

/// The named events of an SSE body (`event: NAME\ndata: JSON`), in order.
pub fn sse_named(text: &str) -> Vec<(String, Value)> {
    assert!(text.ends_with("\n\n"), "SSE ends with a blank line: {text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap_or_else(|| panic!("not a named event: {e:?}"));
            let name = name.strip_prefix("event: ").unwrap_or_else(|| panic!("no event name: {e:?}"));
            let data = data.strip_prefix("data: ").unwrap_or_else(|| panic!("no data: {e:?}"));
            (name.to_owned(), json(data))
        })
        .collect()
}

/// Status, content type and body of a request with extra headers.
pub async fn send(
    server: &MockServer,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String, String) {
    let mut req = client().request(method, format!("{}{path}", server.url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    parts(req.send().await.expect("request")).await
}
