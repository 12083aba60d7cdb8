//! Bad input and failing upstreams get clear errors in the endpoint's dialect.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_testkit::{Stack, TestGateway, config_for, config_from_toml};
use serde_json::{Value, json};

async fn post_raw(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response =
        reqwest::Client::new().post(url).header("content-type", "application/json").body(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn malformed_json_is_400_in_dialect() {
    let stack = Stack::basic().await;
    let (status, body) = post_raw(&format!("{}/api/chat", stack.keel.url()), "{\"model\": ").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("invalid JSON"), "{body}");
    let (status, body) = post_raw(&format!("{}/v1/chat/completions", stack.keel.url()), "[not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].is_string());
    assert!(body["error"]["param"].is_null() && body["error"]["code"].is_null());
    let (status, body) = post_raw(&format!("{}/api/generate", stack.keel.url()), "").await;
    assert_eq!((status, body), (400, json!({"error": "missing request body"})));
    let (status, body) = post_raw(&format!("{}/api/chat", stack.keel.url()), r#"{"messages": []}"#).await;
    assert_eq!((status, body), (400, json!({"error": "model is required"})));
    // Nothing malformed reached the upstream.
    assert!(stack.mock.requests().is_empty());
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), keel_mock::Scenario::single_model("m", "hi"))
        .await
        .unwrap();
    let config = config_from_toml(&format!(
        "[server]\nmax_request_body = \"1KiB\"\n[[upstream]]\nname = \"default\"\nurl = \"{}\"\n",
        mock.url()
    ));
    let keel = TestGateway::start(config).await;
    let big = format!(r#"{{"model":"m","prompt":"{}"}}"#, "x".repeat(4096));
    let (status, body) = post_raw(&format!("{}/api/generate", keel.url()), big.clone()).await;
    assert_eq!(status, 413);
    assert!(body["error"].as_str().unwrap().contains("max_request_body"), "{body}");
    let (status, body) = post_raw(&format!("{}/v1/completions", keel.url()), big.clone()).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // Without Content-Length (chunked), the limit is enforced while reading.
    let stream = futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 512])));
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", keel.url()))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn upstream_errors_keep_ollamas_exact_bodies() {
    let scenario = keel_testkit::scenario(
        "[[model]]\nname = \"busy\"\n[[model.fault]]\nkind = \"busy\"\n[[model]]\nname = \"broken\"\n[[model.fault]]\nkind = \"server_error\"\n",
    );
    let stack = Stack::start(scenario).await;
    let (status, body) = post_raw(&format!("{}/api/chat", stack.keel.url()), r#"{"model":"busy","messages":[]}"#).await;
    assert_eq!(status, 503);
    assert_eq!(body, json!({"error": "server busy, please try again.  maximum pending requests exceeded"}));
    let (status, body) =
        post_raw(&format!("{}/api/generate", stack.keel.url()), r#"{"model":"nope","prompt":"x"}"#).await;
    assert_eq!((status, body), (404, json!({"error": "model 'nope' not found"})));
    let (status, _) =
        post_raw(&format!("{}/api/generate", stack.keel.url()), r#"{"model":"broken","prompt":"x"}"#).await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn a_dead_upstream_is_a_clear_502_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let keel = TestGateway::start(config_for(&format!("http://127.0.0.1:{port}"))).await;
    let (status, body) = post_raw(&format!("{}/api/chat", keel.url()), r#"{"model":"m","messages":[]}"#).await;
    assert_eq!(status, 502);
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("connection refused") && message.contains(&port.to_string()), "{message}");
    let (status, body) =
        post_raw(&format!("{}/v1/chat/completions", keel.url()), r#"{"model":"m","messages":[]}"#).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["type"], "api_error");
    let response = reqwest::get(format!("{}/api/tags", keel.url())).await.unwrap();
    assert_eq!(response.status(), 502);
    let status: Value = reqwest::get(format!("{}/keel/status", keel.url())).await.unwrap().json().await.unwrap();
    let target = &status["targets"][0];
    assert_eq!(target["name"], "default:m");
    assert_eq!(target["upstream"], "default");
    assert_eq!(target["model"], "m");
    // Two requests, each tried twice (one retry round by default): four failures, below the
    // default threshold of five, so still closed. A refused connection is the server's failure:
    // it counts against the upstream's breaker, not the model's.
    assert_eq!(target["breaker"], "closed");
    assert_eq!(target["consecutive_failures"], 4);
    assert_eq!(target["breaker_detail"]["consecutive_failures"], 0);
    assert_eq!(target["last_failure"]["class"], "refused");
    let upstream = &status["upstreams"][0];
    assert_eq!(upstream["breaker"]["state"], "closed");
    assert_eq!(upstream["breaker"]["consecutive_failures"], 4);
    assert_eq!(upstream["last_error"]["class"], "refused");
    assert!(upstream["last_error"]["at"].as_str().unwrap().ends_with('Z'), "{upstream}");
}

#[tokio::test]
async fn a_hung_upstream_times_out_with_504() {
    let scenario = keel_testkit::scenario("[[model]]\nname = \"m\"\n[[model.fault]]\nkind = \"hang\"\n");
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let config = config_from_toml(&format!(
        "[[upstream]]\nname = \"default\"\nurl = \"{}\"\nresponse_timeout = \"300ms\"\n",
        mock.url()
    ));
    let keel = TestGateway::start(config).await;
    let (status, body) = post_raw(&format!("{}/api/chat", keel.url()), r#"{"model":"m","messages":[]}"#).await;
    assert_eq!(status, 504);
    assert!(body["error"].as_str().unwrap().contains("did not answer in time"), "{body}");
}

#[tokio::test]
async fn unknown_models_on_v1_paths_are_404_in_openai_dialect() {
    let stack = Stack::basic().await;
    let response = reqwest::get(format!("{}/v1/models/nope", stack.keel.url())).await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error");
}
