//! Mid-stream recovery: a chat stream whose upstream breaks after bytes reached the client is
//! continued on the route's next target, in the same client stream, which ends well-formed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_mock::MockServer;
use keel_testkit::{TestGateway, config_from_toml, post_json, scenario};
use serde_json::{Value, json};

async fn mock(toml: &str) -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), scenario(toml)).await.unwrap()
}

async fn keel(primary: &MockServer, backup: &MockServer) -> TestGateway {
    TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"primary\"\nurl = \"{}\"\n[[upstream]]\nname = \"backup\"\nurl = \"{}\"\n\
         [[route]]\nmodel = \"m\"\ntargets = [\"primary\", \"backup\"]\n",
        primary.url(),
        backup.url()
    )))
    .await
}

fn broken_primary(fault: &str) -> String {
    format!(
        "[[model]]\nname = \"m\"\nreply = \"Once upon a time there was a proxy\"\n[[model.fault]]\nkind = \"{fault}\"\nafter_chunks = 3\n"
    )
}

const BACKUP: &str = "[[model]]\nname = \"m\"\nreply = \" that never dropped a story.\"\n";

fn requests_to(mock: &MockServer, path: &str) -> Vec<Value> {
    mock.requests().iter().filter(|r| r.path == path).map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

async fn ollama_stream(keel: &TestGateway) -> Vec<Value> {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "Tell me a story"}]});
    let response = post_json(&format!("{}/api/chat", keel.url()), &body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}\n{text}"))).collect()
}

async fn continued_on_the_backup(fault: &str) {
    let primary = mock(&broken_primary(fault)).await;
    let backup = mock(BACKUP).await;
    let keel = keel(&primary, &backup).await;
    let lines = ollama_stream(&keel).await;
    assert!(lines.iter().all(|l| l.get("error").is_none()), "{lines:?}");
    assert_eq!(lines.last().unwrap()["done"], true, "{lines:?}");
    let text: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    // What the primary sent before it broke, then the backup's continuation.
    let sent = requests_to(&backup, "/api/chat");
    assert_eq!(sent.len(), 1);
    let messages = sent[0]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1]["role"], "assistant");
    let partial = messages[1]["content"].as_str().unwrap();
    assert!(partial.starts_with("Once"), "{partial:?}");
    assert!("Once upon a time there was a proxy".starts_with(partial), "{partial:?}");
    assert_eq!(text, format!("{partial} that never dropped a story."));
    let metrics = reqwest::get(format!("{}/metrics", keel.url())).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("keel_stream_continuations_total")), "{metrics}");
}

#[tokio::test]
async fn a_cut_stream_is_continued_on_the_next_target() {
    continued_on_the_backup("cut").await;
}

#[tokio::test]
async fn an_error_line_mid_stream_is_continued_on_the_next_target() {
    continued_on_the_backup("error_line").await;
}

#[tokio::test]
async fn an_openai_stream_is_continued_and_ends_with_done() {
    let primary = mock(&broken_primary("cut")).await;
    let backup = mock(BACKUP).await;
    let keel = keel(&primary, &backup).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "Tell me a story"}], "stream": true});
    let response = post_json(&format!("{}/v1/chat/completions", keel.url()), &body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert!(content.starts_with("Once"), "{content}");
    assert!(content.ends_with(" that never dropped a story."), "{content}");
    assert_eq!(requests_to(&backup, "/v1/chat/completions").len(), 1);
}

#[tokio::test]
async fn when_every_target_breaks_the_stream_ends_with_an_error_line() {
    let primary = mock(&broken_primary("cut")).await;
    let backup = mock(&broken_primary("error_line")).await;
    let keel = keel(&primary, &backup).await;
    let lines = ollama_stream(&keel).await;
    let last = lines.last().unwrap();
    assert!(last["error"].as_str().unwrap().contains("mid-stream"), "{lines:?}");
    assert!(lines.iter().all(|l| l["done"] != true), "{lines:?}");
}

#[tokio::test]
async fn a_complete_stream_is_relayed_untouched() {
    let primary = mock("[[model]]\nname = \"m\"\nreply = \"All good here.\"\n").await;
    let backup = mock(BACKUP).await;
    let keel = keel(&primary, &backup).await;
    let lines = ollama_stream(&keel).await;
    let text: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(text, "All good here.");
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(requests_to(&backup, "/api/chat").is_empty());
}

#[tokio::test]
async fn thirty_streams_through_a_primary_failing_mid_stream_all_succeed_and_its_breaker_opens() {
    let primary = mock(&broken_primary("cut")).await;
    let backup = mock(BACKUP).await;
    let keel = keel(&primary, &backup).await;
    for i in 0..30 {
        let lines = ollama_stream(&keel).await;
        assert!(lines.iter().all(|l| l.get("error").is_none()), "request {i}: {lines:?}");
        assert_eq!(lines.last().unwrap()["done"], true, "request {i}");
        let text: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
        assert!(text.ends_with(" that never dropped a story."), "request {i}: {text}");
    }
    let status: Value = reqwest::get(format!("{}/keel/status", keel.url())).await.unwrap().json().await.unwrap();
    let target = status["targets"].as_array().unwrap().iter().find(|t| t["name"] == "primary:m").unwrap();
    assert_eq!(target["breaker"], "open", "{target}");
    // Only the streams before the breaker opened went to the primary.
    assert_eq!(requests_to(&primary, "/api/chat").len(), 5);
}
