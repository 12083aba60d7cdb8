//! API surfaces (`api = "ollama" | "openai" | "anthropic"`) and credentials (`api_key`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

mod common;

use common::{json, send, start};
use keel_mock::{ApiSurface, Scenario};
use reqwest::Method;
use serde_json::json;

const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

fn chat() -> serde_json::Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false, "max_tokens": 8})
}

#[tokio::test]
async fn ollama_serves_everything_but_health() {
    let s = start(Scenario::default()).await;
    for path in ["/api/chat", "/v1/chat/completions", "/v1/messages"] {
        assert_eq!(send(&s, Method::POST, path, &[], Some(chat())).await.0, 200, "{path}");
    }
    assert_eq!(
        send(&s, Method::POST, "/v1/responses", &[], Some(json!({"model": "llama3.2", "input": "hi"}))).await.0,
        200
    );
    let (status, _, body) = send(&s, Method::GET, "/health", &[], None).await;
    assert_eq!((status, body.as_str()), (404, "404 page not found"));
}

#[tokio::test]
async fn openai_mode_is_llama_server() {
    let s = start(Scenario::default().with_api(ApiSurface::Openai)).await;
    assert_eq!(send(&s, Method::POST, "/v1/chat/completions", &[], Some(chat())).await.0, 200);
    assert_eq!(send(&s, Method::GET, "/v1/models", &[], None).await.0, 200);
    let (status, _, body) = send(&s, Method::GET, "/health", &[], None).await;
    assert_eq!((status, json(&body)), (200, json!({"status": "ok"})));
    for (method, path) in [
        (Method::POST, "/api/chat"),
        (Method::GET, "/api/tags"),
        (Method::POST, "/v1/messages"),
        (Method::POST, "/v1/responses"),
        (Method::GET, "/"),
    ] {
        let (status, _, body) = send(&s, method, path, &[], Some(chat())).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(json(&body)["error"]["type"], "not_found_error", "{path}");
    }
}

#[tokio::test]
async fn anthropic_mode_needs_the_version_header() {
    let s = start(Scenario::default().with_api(ApiSurface::Anthropic)).await;
    let (status, _, body) = send(&s, Method::POST, "/v1/messages", &[], Some(chat())).await;
    assert_eq!(status, 400);
    assert_eq!(json(&body)["error"]["message"], "anthropic-version: header is required");
    let (status, _, body) = send(&s, Method::POST, "/v1/messages", &[VERSION], Some(chat())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["type"], "message");
    let (status, _, body) = send(&s, Method::POST, "/v1/messages/count_tokens", &[VERSION], Some(chat())).await;
    assert_eq!((status, json(&body)), (200, json!({"input_tokens": 1})));
    let (status, _, body) = send(&s, Method::GET, "/v1/models", &[VERSION], None).await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        json!({"data": [{"type": "model", "id": "llama3.2:latest", "display_name": "llama3.2:latest",
                         "created_at": "2026-01-01T00:00:00Z"}],
               "has_more": false, "first_id": "llama3.2:latest", "last_id": "llama3.2:latest"})
    );
    for path in ["/api/chat", "/v1/chat/completions", "/v1/responses"] {
        let (status, _, body) = send(&s, Method::POST, path, &[VERSION], Some(chat())).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(json(&body), json!({"type": "error", "error": {"type": "not_found_error", "message": "Not Found"}}));
    }
}

#[tokio::test]
async fn api_key_bearer_in_ollama_and_openai_modes() {
    for api in [ApiSurface::Ollama, ApiSurface::Openai] {
        let s = start(Scenario::default().with_api(api).with_api_key("sk-test")).await;
        let (status, _, body) = send(&s, Method::POST, "/v1/chat/completions", &[], Some(chat())).await;
        assert_eq!(status, 401, "{api:?}");
        assert_eq!(json(&body)["error"]["type"], "invalid_request_error");
        let wrong = [("authorization", "Bearer nope")];
        assert_eq!(send(&s, Method::POST, "/v1/chat/completions", &wrong, Some(chat())).await.0, 401);
        let right = [("authorization", "Bearer sk-test")];
        assert_eq!(send(&s, Method::POST, "/v1/chat/completions", &right, Some(chat())).await.0, 200);
        let seen = s.requests();
        assert_eq!(seen.last().unwrap().header("Authorization"), Some("Bearer sk-test"));
        assert_eq!(seen.len(), 3, "refused requests are recorded too");
    }
    let s = start(Scenario::default().with_api_key("sk-test")).await;
    let (status, _, body) = send(&s, Method::POST, "/api/chat", &[], Some(chat())).await;
    assert_eq!((status, json(&body)), (401, json!({"error": "unauthorized"})));
    let (status, _, body) = send(&s, Method::POST, "/v1/messages", &[], Some(chat())).await;
    assert_eq!(status, 401);
    assert_eq!(json(&body)["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn api_key_x_api_key_in_anthropic_mode() {
    let s = start(Scenario::default().with_api(ApiSurface::Anthropic).with_api_key("sk-ant")).await;
    let bearer = [VERSION, ("authorization", "Bearer sk-ant")];
    let (status, _, body) = send(&s, Method::POST, "/v1/messages", &bearer, Some(chat())).await;
    assert_eq!(status, 401);
    assert_eq!(
        json(&body),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
    );
    let key = [VERSION, ("x-api-key", "sk-ant")];
    assert_eq!(send(&s, Method::POST, "/v1/messages", &key, Some(chat())).await.0, 200);
    assert_eq!(s.requests().last().unwrap().header("x-api-key"), Some("sk-ant"));
}

#[test]
fn api_and_api_key_round_trip_through_toml() {
    let s = Scenario::from_toml_str("api = \"anthropic\"\napi_key = \"k\"").unwrap();
    assert_eq!(s.api, ApiSurface::Anthropic);
    assert_eq!(s.api_key.as_deref(), Some("k"));
    assert_eq!(Scenario::from_toml_str(&s.to_toml_string().unwrap()).unwrap(), s);
    assert_eq!(Scenario::default().api, ApiSurface::Ollama);
    assert!(Scenario::from_toml_str("api = \"vllm\"").is_err());
    assert!(Scenario::from_toml_str("api_key = \" \"").is_err());
}
