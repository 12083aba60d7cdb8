//! keel relays every Ollama and OpenAI endpoint unchanged: same status, same body shape, unknown
//! fields untouched in both directions, `Host` rewritten, request ids added.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_testkit::{MODEL_MANAGEMENT, Stack};
use serde_json::{Value, json};

/// Removes fields that legitimately differ between two calls (timestamps, durations, ids).
fn normalize(mut value: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for key in [
                    "created_at",
                    "created",
                    "id",
                    "total_duration",
                    "load_duration",
                    "prompt_eval_duration",
                    "eval_duration",
                    "expires_at",
                    "modified_at",
                ] {
                    map.remove(key);
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

async fn both(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> ((u16, String), (u16, String)) {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for base in [stack.mock.url(), stack.keel.url()] {
        let mut request = client.request(method.clone(), format!("{base}{path}"));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        out.push((response.status().as_u16(), response.text().await.unwrap()));
    }
    let keel = out.pop().unwrap();
    let direct = out.pop().unwrap();
    (direct, keel)
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let l = l.strip_prefix("data: ").unwrap_or(l);
            if l == "[DONE]" { json!("[DONE]") } else { normalize(serde_json::from_str(l).unwrap()) }
        })
        .collect()
}

#[tokio::test]
async fn every_endpoint_answers_like_direct() {
    // Model management (`/api/pull`) is in the list: opened, as an operator would.
    let stack = Stack::basic_with(MODEL_MANAGEMENT).await;
    let chat = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]});
    let gen_ = json!({"model": "llama3.2", "prompt": "hi"});
    let cases: Vec<(reqwest::Method, &str, Option<Value>)> = vec![
        (reqwest::Method::GET, "/", None),
        (reqwest::Method::GET, "/api/version", None),
        (reqwest::Method::GET, "/api/tags", None),
        (reqwest::Method::GET, "/api/ps", None),
        (reqwest::Method::POST, "/api/show", Some(json!({"model": "llama3.2"}))),
        (reqwest::Method::POST, "/api/chat", Some(chat.clone())),
        (
            reqwest::Method::POST,
            "/api/chat",
            Some(json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false})),
        ),
        (reqwest::Method::POST, "/api/generate", Some(gen_.clone())),
        (reqwest::Method::POST, "/api/generate", Some(json!({"model": "llama3.2", "prompt": "hi", "stream": false}))),
        (reqwest::Method::POST, "/api/embed", Some(json!({"model": "llama3.2", "input": ["a", "b"]}))),
        (reqwest::Method::POST, "/api/embeddings", Some(json!({"model": "llama3.2", "prompt": "a"}))),
        (reqwest::Method::POST, "/api/pull", Some(json!({"model": "llama3.2"}))),
        (reqwest::Method::POST, "/api/pull", Some(json!({"model": "llama3.2", "stream": false}))),
        (reqwest::Method::POST, "/v1/chat/completions", Some(chat.clone())),
        (
            reqwest::Method::POST,
            "/v1/chat/completions",
            Some(json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": true})),
        ),
        (reqwest::Method::POST, "/v1/completions", Some(json!({"model": "llama3.2", "prompt": "hi"}))),
        (reqwest::Method::POST, "/v1/embeddings", Some(json!({"model": "llama3.2", "input": "hi"}))),
        (reqwest::Method::GET, "/v1/models", None),
        (reqwest::Method::GET, "/v1/models/llama3.2", None),
        (
            reqwest::Method::POST,
            "/api/chat",
            Some(json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})),
        ),
        (
            reqwest::Method::POST,
            "/v1/chat/completions",
            Some(json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})),
        ),
        (reqwest::Method::GET, "/v1/models/nope", None),
        (reqwest::Method::GET, "/no/such/path", None),
    ];
    for (method, path, body) in cases {
        let label = format!("{method} {path} {}", body.as_ref().map(|b| b.to_string()).unwrap_or_default());
        let (direct, keel) = both(&stack, method, path, body).await;
        assert_eq!(direct.0, keel.0, "status differs for {label}: direct {direct:?} keel {keel:?}");
        if direct.1.trim_start().starts_with('{') || direct.1.starts_with("data: ") {
            assert_eq!(parse_lines(&direct.1), parse_lines(&keel.1), "body differs for {label}");
        } else {
            assert_eq!(direct.1, keel.1, "body differs for {label}");
        }
    }
}

#[tokio::test]
async fn head_requests_pass() {
    let stack = Stack::basic().await;
    let response = reqwest::Client::new().head(format!("{}/", stack.keel.url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unknown_request_fields_reach_the_upstream_byte_for_byte() {
    let stack = Stack::basic().await;
    let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi","x_future":[1,2]}],"stream":false,"options":{"num_ctx":2048,"brand_new_option":true},"x_unknown":{"nested":"ok"}}"#;
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", stack.keel.url()))
        .header("content-type", "application/json")
        .header("x-custom-header", "kept")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let recorded = stack.mock.requests().into_iter().find(|r| r.path == "/api/chat").unwrap();
    assert_eq!(&recorded.body[..], body.as_bytes());
    let header =
        |name: &str| recorded.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    assert_eq!(header("x-custom-header").as_deref(), Some("kept"));
    assert_eq!(header("host").unwrap(), stack.mock.addr().to_string(), "Host must be the upstream's own");
    assert!(header("x-request-id").is_some(), "a request id is sent upstream");
}

#[tokio::test]
async fn unknown_response_fields_reach_the_client() {
    let stack = Stack::basic().await;
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/api/chat", stack.keel.url()))
        .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(reply.get("x_mock").is_some(), "unknown response field dropped: {reply}");
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let stack = Stack::basic().await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/api/version", stack.keel.url()))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let response = client.get(format!("{}/api/version", stack.keel.url())).send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"].len(), 36);
    let recorded = stack.mock.requests();
    assert!(recorded.iter().any(|r| r.headers.iter().any(|(k, v)| k == "x-request-id" && v == "trace-me-42")));
}

#[tokio::test]
async fn model_rename_targets_rewrite_only_the_model() {
    let mock = keel_mock::MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        keel_testkit::scenario("[[model]]\nname = \"qwen2.5:0.5b\"\nreply = \"small model here\"\n"),
    )
    .await
    .unwrap();
    let config = keel_testkit::config_from_toml(&format!(
        "[[upstream]]\nname = \"local\"\nurl = \"{}\"\n[[route]]\nmodel = \"llama3.2\"\ntargets = [\"local:qwen2.5:0.5b\"]\n",
        mock.url()
    ));
    let keel = keel_testkit::TestGateway::start(config).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", keel.url()))
        .body(r#"{"model":"llama3.2","messages":[],"stream":false,"keep":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-target"], "local:qwen2.5:0.5b");
    let recorded = mock.requests().into_iter().find(|r| r.path == "/api/chat").unwrap();
    assert_eq!(&recorded.body[..], br#"{"model":"qwen2.5:0.5b","messages":[],"stream":false,"keep":1}"#);
    // Unrouted names get Ollama's 404 without an upstream call (there is no "*" route).
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", keel.url()))
        .body(r#"{"model":"mistral","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.text().await.unwrap(), r#"{"error":"model 'mistral' not found"}"#);
}

#[tokio::test]
async fn large_uploads_stream_through() {
    let stack = Stack::basic_with(MODEL_MANAGEMENT).await;
    let blob = vec![b'x'; 3 << 20];
    let response = reqwest::Client::new()
        .post(format!("{}/api/blobs/sha256:{}", stack.keel.url(), "a".repeat(64)))
        .body(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}
