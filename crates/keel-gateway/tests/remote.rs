//! Remote upstreams as a last resort: an HTTPS upstream speaking the Anthropic API (keel-mock
//! with a test CA and an API key) answers a route whose local upstream is dead — only when the
//! route allows remote targets, with keel's credentials, and within its daily token budget.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_mock::MockServer;
use keel_testkit::{TestGateway, post_json, scenario, test_ca};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-test-0123456789";

/// The cloud: keel-mock over HTTPS speaking only the Anthropic API, wanting `KEY`; and the
/// folder holding its CA's certificate.
async fn cloud() -> (MockServer, tempfile::TempDir) {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.ca_pem).unwrap();
    let toml = format!(
        "api = \"anthropic\"\napi_key = \"{KEY}\"\n[[model]]\nname = \"claude-haiku-4-5\"\nreply = \"Hello from the cloud.\"\n"
    );
    let server = MockServer::start_tls(
        ([127, 0, 0, 1], 0).into(),
        scenario(&toml),
        ca.cert_pem.as_bytes(),
        ca.key_pem.as_bytes(),
    )
    .await
    .unwrap();
    (server, dir)
}

fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

async fn keel(cloud: &MockServer, ca_dir: &std::path::Path, route_extra: &str, upstream_extra: &str) -> TestGateway {
    let toml = format!(
        "[[upstream]]\nname = \"local\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[upstream]]\nname = \"cloud\"\nurl = \"{}\"\ndialect = \"anthropic\"\napi_key_env = \"KEEL_TEST_CLOUD_KEY\"\n\
         ca_file = \"{}\"\nremote = true\nhealth_interval = \"0s\"\n{upstream_extra}\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"cloud:claude-haiku-4-5\", \"local\"]\n{route_extra}\n",
        dead_url(),
        cloud.url(),
        ca_dir.join("ca.pem").display(),
    );
    let env = |name: &str| (name == "KEEL_TEST_CLOUD_KEY").then(|| KEY.to_owned());
    TestGateway::start(keel_testkit::config_from_toml_with_env(&toml, &env)).await
}

fn chat() -> Value {
    json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_dead_local_upstream_falls_back_to_the_cloud_only_when_the_route_allows_it() {
    let (cloud, dir) = cloud().await;
    let allowed = keel(&cloud, dir.path(), "allow_remote = true", "").await;
    // An Ollama-API client, answered by the Anthropic API (translated both ways).
    let response = post_json(&format!("{}/api/chat", allowed.url()), &chat()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-target"], "cloud:claude-haiku-4-5");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"]["content"], "Hello from the cloud.", "{body}");
    let sent = cloud.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/messages");
    // The local target was asked first, although the route lists the cloud first.
    let metrics = reqwest::get(format!("{}/metrics", allowed.url())).await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("keel_remote_requests_total{") && l.contains("upstream=\"cloud\"")),
        "{metrics}"
    );

    let denied = keel(&cloud, dir.path(), "", "").await;
    let response = post_json(&format!("{}/api/chat", denied.url()), &chat()).await;
    assert_eq!(response.status(), 503);
    let message = response.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("allow_remote = true") && message.contains("cloud"), "{message}");
    assert_eq!(cloud.requests().len(), 1, "nothing more was sent to the cloud");
}

#[tokio::test]
async fn keel_sends_its_own_credentials_never_the_clients() {
    let (cloud, dir) = cloud().await;
    let keel = keel(&cloud, dir.path(), "allow_remote = true", "").await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", keel.url()))
        .header("x-api-key", "the-clients-own-key")
        .json(&json!({"model": "llama3.2", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let sent = cloud.requests();
    assert_eq!(sent[0].header("x-api-key"), Some(KEY));
    assert_eq!(sent[0].header("anthropic-version"), Some("2023-06-01"));
}

#[tokio::test]
async fn a_spent_daily_budget_takes_the_cloud_out_until_tomorrow() {
    let (cloud, dir) = cloud().await;
    let keel = keel(&cloud, dir.path(), "allow_remote = true", "tokens_per_day = 5").await;
    let first = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    assert_eq!(first.status(), 200);
    // Its tokens are charged as its body ends.
    first.bytes().await.unwrap();
    let status: Value = reqwest::get(format!("{}/keel/status", keel.url())).await.unwrap().json().await.unwrap();
    assert!(status["upstreams"][1]["tokens_per_day"]["spent_today"].as_u64().unwrap() >= 5, "{status}");
    let second = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    assert_eq!(second.status(), 503);
    let message = second.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("tokens_per_day = 5"), "{message}");
    assert_eq!(cloud.requests().len(), 1);
}
