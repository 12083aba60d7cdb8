//! keel running out of its own open files is keel's fault, never the model server's: such
//! requests get keel's own 503 saying so, no breaker opens, and keel serves on once files free up.
//! Idle client connections up to the descriptor limit cannot keep keel from answering.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::process::Command;
use std::time::Duration;

use keel_testkit::process::KeelProcess;
use serde_json::{Value, json};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_open_files_is_keels_own_503_and_opens_no_breaker() {
    let scenario = keel_mock::Scenario::from_toml_str(
        "[[model]]\nname = \"m\"\nreply = \"one two three four five six\"\ntoken_delay = \"100ms\"\n",
    )
    .unwrap();
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // One worker, and no connection cap from the descriptor limit: this test is about keel running
    // short on its upstream side, which the cap (tested below) would otherwise prevent.
    let keel = start_keel(&dir, 48, "[server]\nworkers = 1\nmax_connections = 1000\n", &mock.url()).await;
    let base = &keel.base;
    // No idle keep-alive connections from this client: each would hold one of keel's descriptors.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build().unwrap();

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
                let logs = keel.logs();
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
    let logs = keel.logs();
    assert!(logs.contains("keel ran out of a local resource"), "no error logged:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_descriptor_limit_leave_health_and_chat_answering() {
    let scenario = keel_mock::Scenario::from_toml_str("[[model]]\nname = \"m\"\nreply = \"fine\"\n").unwrap();
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Defaults only: the connection cap comes from the 256-descriptor limit.
    let keel = start_keel(&dir, 256, "", &mock.url()).await;
    let base = &keel.base;
    let address = base.trim_start_matches("http://").to_owned();

    // 300 clients connect, send one complete request each, then sit on their connections.
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(&address)).await
        {
            use tokio::io::AsyncWriteExt as _;
            let request = format!("GET /keel/health HTTP/1.1\r\nHost: {address}\r\n\r\n");
            let _ = stream.write_all(request.as_bytes()).await;
            idle.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).pool_max_idle_per_host(0).build().unwrap();
    let started = std::time::Instant::now();
    let health = client.get(format!("{base}/keel/health")).send().await.expect("health must answer");
    assert_eq!(health.status(), 200);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let chat = client.post(format!("{base}/api/chat")).json(&body).send().await.expect("chat must answer");
    assert_eq!(chat.status(), 200, "{}", chat.text().await.unwrap_or_default());
    assert!(started.elapsed() < Duration::from_secs(5), "answers took {:?}", started.elapsed());

    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let made_room = metrics
        .lines()
        .find(|line| line.starts_with("keel_client_connections_closed_total{reason=\"capacity\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(made_room > 0.0, "no idle connection was closed to make room:\n{metrics}");
    drop(idle);
    let logs = keel.logs();
    let accept_failures = logs.matches("accepting client connections is failing").count();
    assert!(accept_failures <= 3, "the accept loop logged {accept_failures} failures:\n{logs}");
}

/// Starts keel under `ulimit -n open_files` in `dir`, with `config` as its `./keel.toml`; its log
/// goes to `keel.log`.
async fn start_keel(dir: &tempfile::TempDir, open_files: u32, config: &str, upstream: &str) -> KeelProcess {
    std::fs::write(dir.path().join("keel.toml"), config).unwrap();
    let mut command = Command::new("bash");
    command
        .args([
            "-c",
            &format!(
                "ulimit -n {open_files} && exec \"$0\" serve --upstream {upstream} --listen 127.0.0.1:0 --store sqlite://{}",
                dir.path().join("keel.db").display()
            ),
            KEEL,
        ])
        .current_dir(dir.path())
        .env_remove("KEEL_CONFIG");
    KeelProcess::start_on_any_port(command, &dir.path().join("keel.log")).await
}
