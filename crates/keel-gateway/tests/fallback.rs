//! Routes fall back across their targets, skipping targets whose circuit breaker is open; when
//! every target is out keel fails fast with 503 and `Retry-After`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_mock::MockServer;
use keel_testkit::{TestGateway, config_from_toml, post_json, scenario};
use serde_json::{Value, json};

fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

async fn mock(toml: &str) -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), scenario(toml)).await.unwrap()
}

/// keel with a route `llama3.2` → [primary, backup].
async fn keel_with(primary: &str, backup: &str, extra: &str) -> TestGateway {
    TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"primary\"\nurl = \"{primary}\"\n[[upstream]]\nname = \"backup\"\nurl = \"{backup}\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"primary\", \"backup\"]\n{extra}"
    )))
    .await
}

/// Chat requests a mock received (health probes are not counted).
fn chats(mock: &MockServer) -> usize {
    mock.requests().iter().filter(|r| r.path == "/api/chat").count()
}

fn chat() -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

async fn status_of(keel: &TestGateway, target: &str) -> Value {
    let status: Value = reqwest::get(format!("{}/keel/status", keel.url())).await.unwrap().json().await.unwrap();
    status["targets"].as_array().unwrap().iter().find(|t| t["name"] == target).unwrap().clone()
}

#[tokio::test]
async fn a_dead_primary_is_skipped_and_its_breaker_opens() {
    let backup = mock("[[model]]\nname = \"llama3.2\"\nreply = \"from the backup\"\n").await;
    let keel = keel_with(&dead_url(), &backup.url(), "").await;
    for i in 0..30 {
        let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
        assert_eq!(response.status(), 200, "request {i}");
        assert_eq!(response.headers()["x-keel-target"], "backup:llama3.2");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["message"]["content"], "from the backup");
    }
    // A refused connection is the server's failure: the primary upstream's breaker opened.
    let status: Value = reqwest::get(format!("{}/keel/status", keel.url())).await.unwrap().json().await.unwrap();
    let upstream = status["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == "primary").unwrap();
    assert_eq!(upstream["breaker"]["state"], "open", "{upstream}");
    let reason = upstream["breaker"]["open_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("primary: circuit open since ") && reason.contains("5 consecutive failures"),
        "{reason}"
    );
    assert!(reason.contains("(last: refused: tcp connect error"), "{reason}");
    assert_eq!(upstream["breaker"]["last_transition"]["reason"], "5 consecutive failures", "{upstream}");
    // Only the first five requests paid for the dead primary; the rest skipped it.
    let primary = status_of(&keel, "primary:llama3.2").await;
    assert_eq!(primary["requests"], 5, "{primary}");
    assert_eq!(status_of(&keel, "backup:llama3.2").await["breaker"], "closed");
}

#[tokio::test]
async fn a_busy_primary_falls_back_without_the_client_noticing() {
    let primary = mock("[[model]]\nname = \"llama3.2\"\n[[model.fault]]\nkind = \"busy\"\n").await;
    let backup = mock("[[model]]\nname = \"llama3.2\"\nreply = \"from the backup\"\n").await;
    let keel = keel_with(&primary.url(), &backup.url(), "").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-attempts"], "2");
    // Streams fall back too: nothing was sent to the client before the busy answer.
    let text = keel_testkit::post_json_text(
        &format!("{}/api/chat", keel.url()),
        &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(text.contains("from") && text.lines().last().unwrap().contains("\"done\":true"), "{text}");
    assert_eq!(chats(&primary), 2);
}

#[tokio::test]
async fn when_every_target_is_out_keel_fails_fast_with_retry_after() {
    let keel = keel_with(&dead_url(), &dead_url(), "[breaker]\nfailure_threshold = 2\ncooldown = \"20s\"\n").await;
    for _ in 0..2 {
        let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
        assert_eq!(response.status(), 503);
    }
    // Both breakers are open now: no upstream call, an immediate 503 naming each target.
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    // Each upstream's server-wide breaker is open, and the message says why: the root cause and
    // one retry time.
    assert!(
        message.contains("primary: circuit open since") && message.contains("backup: circuit open since"),
        "{message}"
    );
    assert!(message.contains("after 2 consecutive failures (last: refused: tcp connect error"), "{message}");
    assert_eq!(message.matches("Retry after").count(), 1, "{message}");
    assert!(message.contains(&format!("Retry after {retry_after}s")), "{message}");
    // The OpenAI dialect gets the same, in its own shape.
    let response = post_json(&format!("{}/v1/chat/completions", keel.url()), &chat()).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");
}

#[tokio::test]
async fn operators_can_force_a_target_out_and_back() {
    let primary = mock("[[model]]\nname = \"llama3.2\"\nreply = \"primary\"\n").await;
    let backup = mock("[[model]]\nname = \"llama3.2\"\nreply = \"backup\"\n").await;
    let keel = keel_with(&primary.url(), &backup.url(), "").await;
    let client = reqwest::Client::new();
    let admin = |action: &str| client.post(format!("{}/keel/breakers/primary:llama3.2/{action}", keel.url())).send();
    let response = admin("open").await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["breaker"]["state"], "open");
    assert_eq!(body["breaker"]["forced"], true);
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    assert_eq!(response.headers()["x-keel-target"], "backup:llama3.2");
    assert_eq!(status_of(&keel, "primary:llama3.2").await["breaker"], "open");
    assert_eq!(admin("reset").await.unwrap().status(), 200);
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    assert_eq!(response.headers()["x-keel-target"], "primary:llama3.2");
    assert_eq!(chats(&primary), 1);
    // Unknown targets and actions are clear errors.
    let response = client.post(format!("{}/keel/breakers/nope:x/open", keel.url())).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(admin("explode").await.unwrap().status(), 400);
}

#[tokio::test]
async fn client_errors_do_not_trip_breakers() {
    let primary = mock("[[model]]\nname = \"other\"\n").await;
    let backup = mock("[[model]]\nname = \"llama3.2\"\n").await;
    let keel = keel_with(&primary.url(), &backup.url(), "[breaker]\nfailure_threshold = 1\n").await;
    for _ in 0..3 {
        // The primary does not have the model: 404 is the client's answer, not a failure.
        let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
        assert_eq!(response.status(), 404);
    }
    assert_eq!(status_of(&keel, "primary:llama3.2").await["breaker"], "closed");
}

#[tokio::test]
async fn breaker_transitions_become_metrics() {
    // Metrics are process-wide: this test's target names are its own.
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"metered\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"metered\"]\n[breaker]\nfailure_threshold = 1\n",
        dead_url()
    )))
    .await;
    let _ = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    // The event pump runs every 200 ms.
    let mut text = String::new();
    for _ in 0..50 {
        text = reqwest::get(format!("{}/metrics", keel.url())).await.unwrap().text().await.unwrap();
        if text.contains("keel_breaker_state{target=\"metered\"} 2") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        text.contains(r#"keel_breaker_transitions_total{target="metered",from="closed",to="open",reason="consecutive_failures"} 1"#),
        "{text}"
    );
    // A dead server opens its upstream's breaker (every model there fails fast), not a model's.
    assert!(text.contains(r#"keel_breaker_state{target="metered"} 2"#), "{text}");
}

#[tokio::test]
async fn a_failed_round_is_retried_once_by_default_then_relayed() {
    let busy = mock("[[model]]\nname = \"llama3.2\"\n[[model.fault]]\nkind = \"busy\"\n").await;
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"only\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n",
        busy.url()
    )))
    .await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    // The last attempt's answer is Ollama's own busy answer, relayed as it is.
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-keel-attempts"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "server busy, please try again.  maximum pending requests exceeded");
    assert_eq!(chats(&busy), 2);
}

#[tokio::test]
async fn retries_can_be_turned_off() {
    let busy = mock("[[model]]\nname = \"llama3.2\"\n[[model.fault]]\nkind = \"busy\"\n").await;
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"only\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n[retry]\nattempts = 0\n",
        busy.url()
    )))
    .await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(chats(&busy), 1);
}

#[tokio::test]
async fn the_client_deadline_bounds_the_wait() {
    let hung = mock("[[model]]\nname = \"llama3.2\"\n[[model.fault]]\nkind = \"hang\"\n").await;
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"only\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n",
        hung.url()
    )))
    .await;
    // response_timeout is ten minutes, but the client allows 300 ms.
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", keel.url()))
        .header("x-keel-deadline", "300ms")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("did not answer in time"), "{body}");
    // No retry was started past the deadline.
    assert_eq!(chats(&hung), 1);
}

#[tokio::test]
async fn reads_that_name_no_model_fall_back_but_writes_do_not() {
    let backup = mock("[[model]]\nname = \"llama3.2\"\n").await;
    let keel = keel_with(&dead_url(), &backup.url(), keel_testkit::MODEL_MANAGEMENT).await;
    let client = reqwest::Client::new();
    // The default upstream is down: listing models and the version still answer, from the backup.
    for path in ["/api/tags", "/api/version", "/api/ps", "/v1/models"] {
        let response = client.get(format!("{}{path}", keel.url())).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers()["x-keel-target"].to_str().unwrap().starts_with("backup"), "{path}");
        // Tried after the default, or first once a health probe has seen the default down.
        let attempts = response.headers().get("x-keel-attempts").map(|v| v.to_str().unwrap().to_owned());
        assert!(matches!(attempts.as_deref(), None | Some("2")), "{path}: {attempts:?}");
    }
    let tags: Value = client.get(format!("{}/api/tags", keel.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(tags["models"][0]["name"], "llama3.2:latest", "{tags}");
    // Model management changes one server's state: it goes to the default upstream only.
    let response =
        client.delete(format!("{}/api/delete", keel.url())).json(&json!({"model": "llama3.2"})).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(!backup.requests().iter().any(|r| r.path == "/api/delete"));
}
