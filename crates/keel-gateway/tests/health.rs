//! Health probes: a healthy probe lets an open breaker try again early, and routes that prefer
//! loaded models go to the upstream that has the model in memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::time::Duration;

use keel_mock::MockServer;
use keel_testkit::{TestGateway, config_from_toml, post_json, scenario};
use serde_json::{Value, json};

async fn mock(toml: &str) -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), scenario(toml)).await.unwrap()
}

fn chat() -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

async fn status(keel: &TestGateway) -> Value {
    reqwest::get(format!("{}/keel/status", keel.url())).await.unwrap().json().await.unwrap()
}

/// Polls `check` every 50 ms for up to 5 s.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_healthy_probe_lets_an_open_breaker_retry_before_its_cooldown() {
    let primary = mock("[[model]]\nname = \"llama3.2\"\nreply = \"primary\"\n[[model.fault]]\nkind = \"busy\"\n").await;
    let backup = mock("[[model]]\nname = \"llama3.2\"\nreply = \"backup\"\n").await;
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"primary\"\nurl = \"{}\"\nhealth_interval = \"100ms\"\n\
         [[upstream]]\nname = \"backup\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"primary\", \"backup\"]\n\
         [breaker]\nfailure_threshold = 1\ncooldown = \"10m\"\n",
        primary.url(),
        backup.url()
    )))
    .await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    assert_eq!(response.headers()["x-keel-target"], "backup:llama3.2");
    // The primary recovers. Its breaker's cooldown is ten minutes, but the health probe sees the
    // server answer and lets a request probe it right away.
    primary.set_scenario(scenario("[[model]]\nname = \"llama3.2\"\nreply = \"primary\"\n"));
    let url = format!("{}/api/chat", keel.url());
    assert!(
        eventually(async || post_json(&url, &chat()).await.headers()["x-keel-target"] == "primary:llama3.2").await,
        "the primary was not tried again before its cooldown"
    );
    let status = status(&keel).await;
    let primary_status =
        status["targets"].as_array().unwrap().iter().find(|t| t["name"] == "primary:llama3.2").unwrap();
    assert_eq!(primary_status["breaker"], "closed");
    let health = &status["upstreams"][0]["health"];
    assert_eq!(health["ok"], true, "{health}");
    assert_eq!(health["version"], "0.12.6", "{health}");
}

#[tokio::test]
async fn routes_can_prefer_the_upstream_with_the_model_loaded() {
    let cold = mock("[[model]]\nname = \"llama3.2\"\nreply = \"cold\"\nloaded = false\n").await;
    let warm = mock("[[model]]\nname = \"llama3.2\"\nreply = \"warm\"\nloaded = true\n").await;
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"cold\"\nurl = \"{}\"\nhealth_interval = \"100ms\"\n\
         [[upstream]]\nname = \"warm\"\nurl = \"{}\"\nhealth_interval = \"100ms\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"cold\", \"warm\"]\nprefer_loaded = true\n",
        cold.url(),
        warm.url()
    )))
    .await;
    assert!(
        eventually(async || status(&keel).await["upstreams"][1]["health"]["loaded_models"][0] == "llama3.2:latest")
            .await,
        "the warm upstream's loaded models were never probed"
    );
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    assert_eq!(response.headers()["x-keel-target"], "warm:llama3.2");
    assert!(cold.requests().iter().all(|r| r.path != "/api/chat"), "the cold upstream got the chat");
}

#[tokio::test]
async fn probe_failures_show_in_status_without_tripping_breakers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"gone\"\nurl = \"http://127.0.0.1:{port}\"\nhealth_interval = \"100ms\"\n\
         [breaker]\nfailure_threshold = 1\n"
    )))
    .await;
    assert!(eventually(async || status(&keel).await["upstreams"][0]["health"]["ok"] == false).await);
    let status = status(&keel).await;
    assert!(status["upstreams"][0]["health"]["error"].as_str().unwrap().contains("refused"), "{status}");
    assert_eq!(status["upstreams"][0]["state"], "down", "{status}");
    assert_eq!(status["upstreams"][0]["breaker"]["state"], "closed", "{status}");
}
