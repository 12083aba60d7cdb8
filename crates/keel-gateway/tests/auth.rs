//! API keys with scopes, answered in the endpoint's dialect.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_testkit::{TestGateway, config_from_toml};
use serde_json::Value;

#[tokio::test]
async fn keys_and_scopes_are_enforced() {
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), keel_mock::Scenario::single_model("m", "hi"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.key"), "agent-secret-123\n").unwrap();
    std::fs::write(dir.path().join("ops.key"), "ops-secret-456\n").unwrap();
    let config = config_from_toml(&format!(
        "[[upstream]]\nname = \"default\"\nurl = \"{}\"\n[auth]\nkeys = [{{ name = \"agent\", key_file = \"{}\", scopes = [\"inference\"] }}, {{ name = \"ops\", key_file = \"{}\", scopes = [\"inference\", \"admin\"] }}]\n",
        mock.url(),
        dir.path().join("agent.key").display(),
        dir.path().join("ops.key").display(),
    ));
    let keel = TestGateway::start(config).await;
    let client = reqwest::Client::new();
    let chat = |key: Option<&str>| {
        let mut r =
            client.post(format!("{}/api/chat", keel.url())).body(r#"{"model":"m","messages":[],"stream":false}"#);
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        r.send()
    };
    let response = chat(None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Authorization: Bearer"));
    assert_eq!(chat(Some("wrong-key-000")).await.unwrap().status(), 401);
    assert_eq!(chat(Some("agent-secret-123")).await.unwrap().status(), 200);
    // The agent key cannot read the admin API; ops can. Health is open to all.
    let status = |key: &str| client.get(format!("{}/keel/status", keel.url())).bearer_auth(key).send();
    assert_eq!(status("agent-secret-123").await.unwrap().status(), 403);
    assert_eq!(status("ops-secret-456").await.unwrap().status(), 200);
    assert_eq!(client.get(format!("{}/keel/health", keel.url())).send().await.unwrap().status(), 200);
    // OpenAI dialect for /v1.
    let response = client.get(format!("{}/v1/models", keel.url())).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    // keel's keys are consumed by keel, never forwarded to the model server.
    assert!(!mock.requests().is_empty());
    assert!(mock.requests().iter().all(|r| !r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"))));
}
