//! keel running out of its own open files is keel's fault, never the model server's: such
//! requests get keel's own 503 saying so, no breaker opens, and keel serves on once files free up.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_open_files_is_keels_own_503_and_opens_no_breaker() {
    let scenario = keel_mock::Scenario::from_toml_str(
        "[[model]]\nname = \"m\"\nreply = \"one two three four five six\"\ntoken_delay = \"100ms\"\n",
    )
    .unwrap();
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("keel.log")).unwrap();
    // 48 open files in all (soft and hard): every stream through keel takes two.
    let mut keel = Command::new("bash")
        .args([
            "-c",
            &format!(
                "ulimit -n 48 && exec \"$0\" serve --upstream {} --listen 127.0.0.1:{port} --store sqlite://{}",
                mock.url(),
                dir.path().join("keel.db").display()
            ),
            KEEL,
        ])
        .current_dir(dir.path())
        .env("KEEL_SERVER_WORKERS", "1")
        .env_remove("KEEL_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // No idle keep-alive connections from this client: each would hold one of keel's descriptors.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/keel/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "keel did not start");

    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let (client, url, body) = (client.clone(), format!("{base}/api/chat"), body.clone());
        streams.spawn(async move {
            match client.post(url).json(&body).send().await {
                Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
                Err(err) => (0, err.to_string()),
            }
        });
    }
    let (mut answered, mut keels_own) = (0, 0);
    while let Some(result) = streams.join_next().await {
        let (status, text) = result.unwrap();
        match status {
            200 => answered += 1,
            503 if text.contains("keel itself ran out of a local resource") => keels_own += 1,
            other => {
                let logs = std::fs::read_to_string(dir.path().join("keel.log")).unwrap_or_default();
                let tail: Vec<&str> = logs.lines().rev().take(30).collect();
                panic!("unexpected answer {other}: {text}\n{}", tail.join("\n"))
            }
        }
    }
    assert!(keels_own > 0, "keel never ran short: the test proves nothing ({answered} answered)");

    // No breaker opened and nothing was held against the server: keel serves on.
    let status: Value = client.get(format!("{base}/keel/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["upstreams"][0]["breaker"]["state"], "closed", "{status}");
    assert_eq!(status["upstreams"][0]["breaker"]["consecutive_failures"], 0, "{status}");
    for target in status["targets"].as_array().unwrap() {
        assert_eq!(target["breaker"], "closed", "{target}");
    }
    let response = client.post(format!("{base}/api/chat")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let logs = std::fs::read_to_string(dir.path().join("keel.log")).unwrap();
    assert!(logs.contains("keel ran out of a local resource"), "no error logged:\n{logs}");
    keel.kill().unwrap();
    keel.wait().unwrap();
}
