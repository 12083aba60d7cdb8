//! Nothing bad is silently ignored, nothing ends bare: malformed keel headers, unknown `/keel/...`
//! paths, bodies that are not JSON objects, oversized headers and streams cut by a shutdown all
//! get an answer from keel in the endpoint's dialect that says what to send instead — and none of
//! them reaches the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_mock::MockServer;
use keel_testkit::Stack;
use serde_json::{Value, json};

/// A chat body for `model`.
fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

/// Sends `method path` with raw header values and body; the status and the body.
async fn send_raw(url: &str, method: &str, path: &str, headers: &[(&str, &[u8])], body: Vec<u8>) -> (u16, Vec<u8>) {
    let mut request = reqwest::Client::new().request(method.parse().unwrap(), format!("{url}{path}")).body(body);
    for (name, value) in headers {
        request = request.header(*name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// [`send_raw`], the body as JSON (the test fails when it is not JSON).
async fn send(url: &str, method: &str, path: &str, headers: &[(&str, &[u8])], body: Vec<u8>) -> (u16, Value) {
    let (status, bytes) = send_raw(url, method, path, headers, body).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|err| panic!("{method} {path}: {status} with a body that is not JSON ({err}): {bytes:?}"));
    (status, value)
}

/// The error message of `body`, checked to be in the dialect of `path`: `{"error": "..."}` for
/// `/api/*` and keel's own, `{"error": {"message", "type", "param", "code"}}` for `/v1/*`.
fn message_in_dialect(path: &str, body: &Value) -> String {
    if path.starts_with("/v1/") {
        let error = &body["error"];
        assert!(error["type"].is_string() && error["param"].is_null() && error["code"].is_null(), "{path}: {body}");
        error["message"].as_str().unwrap_or_else(|| panic!("{path}: {body}")).to_owned()
    } else {
        body["error"].as_str().unwrap_or_else(|| panic!("{path}: {body}")).to_owned()
    }
}

/// Asserts nothing reached the upstream (the mock records every request).
fn nothing_forwarded(mock: &MockServer) {
    let seen: Vec<String> = mock.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(seen.is_empty(), "forwarded upstream: {seen:?}");
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_400() {
    let stack = Stack::basic().await;
    let url = stack.keel.url();
    for path in ["/api/chat", "/api/generate", "/v1/chat/completions", "/v1/embeddings"] {
        for (body, what) in [
            (&b"[]"[..], "an array"),
            (b"[\"llama3.2\"]", "an array"),
            (b"\"x\"", "a string"),
            (b"1", "a number"),
            (b"null", "null"),
            (b" true ", "a boolean"),
        ] {
            let (status, answer) = send(&url, "POST", path, &[], body.to_vec()).await;
            assert_eq!(status, 400, "{path} {body:?}: {answer}");
            let message = message_in_dialect(path, &answer);
            assert!(message.starts_with(&format!("request body must be a JSON object, not {what}")), "{message}");
        }
        // Not UTF-8, even inside a string keel does not read.
        let body = b"{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"}]}".to_vec();
        let (status, answer) = send(&url, "POST", path, &[], body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let message = message_in_dialect(path, &answer);
        assert!(message.contains("not valid UTF-8") && message.contains("encoded as UTF-8"), "{message}");
        // The existing checks still hold.
        let (status, answer) = send(&url, "POST", path, &[], br#"{"messages": []}"#.to_vec()).await;
        assert_eq!((status, message_in_dialect(path, &answer)), (400, "model is required".to_owned()));
        let (status, answer) = send(&url, "POST", path, &[], b"{\"model\": ".to_vec()).await;
        assert_eq!(status, 400);
        assert!(message_in_dialect(path, &answer).contains("invalid JSON"), "{answer}");
    }
    nothing_forwarded(&stack.mock);
    let (status, _) = send(&url, "POST", "/api/chat", &[], serde_json::to_vec(&chat("llama3.2")).unwrap()).await;
    assert_eq!(status, 200);
}
