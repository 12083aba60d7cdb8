//! No acknowledged session message is lost when keel is killed: many clients append to their
//! sessions through a real `keel serve` process, keel gets SIGKILL mid-run, restarts on the same
//! SQLite file, and every message a client got a 200 for is there exactly once, in order — five
//! kills in a row on the same file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
const CLIENTS: usize = 8;
/// Kill-and-restart rounds on the same store file.
const ROUNDS: usize = 5;
/// How long the clients append before each kill.
const RUN_FOR: Duration = Duration::from_millis(700);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn serve(port: u16, upstream: &str, store: &str) -> Child {
    Command::new(KEEL)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--upstream", upstream, "--store", store])
        .env("KEEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(url: &str) {
    let started = Instant::now();
    while reqwest::get(format!("{url}/keel/health")).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "keel did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_session_messages_survive_sigkill() {
    let mock = keel_mock::MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        keel_mock::Scenario::from_toml_str("record_requests = false\n[[model]]\nname = \"m\"\nreply = \"ok\"\n")
            .unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("keel.db").display());
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // Every acknowledged message of every round, per session ("c<i>-r<round>-<j>").
    let mut acknowledged: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    for round in 0..ROUNDS {
        let mut keel = serve(port, &mock.url(), &store);
        wait_healthy(&url).await;
        let acked = append_until_killed(&url, round, &mut keel).await;
        for (i, messages) in acked.into_iter().enumerate() {
            acknowledged[i].extend(messages);
        }
    }
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(total >= CLIENTS * ROUNDS, "too few requests were acknowledged before the kills: {total}");

    let mut keel = serve(port, &mock.url(), &store);
    wait_healthy(&url).await;
    for (i, acked) in acknowledged.iter().enumerate() {
        let body: Value =
            reqwest::get(format!("{url}/keel/sessions/c{i}/messages")).await.unwrap().json().await.unwrap();
        let messages = body["messages"].as_array().unwrap();
        for (n, message) in messages.iter().enumerate() {
            assert_eq!(message["seq"], n as u64 + 1, "seqs without gaps: {body}");
        }
        let users: Vec<&str> =
            messages.iter().filter(|m| m["role"] == "user").map(|m| m["content"].as_str().unwrap()).collect();
        for text in acked {
            assert_eq!(users.iter().filter(|u| **u == text.as_str()).count(), 1, "{text} must be stored exactly once");
            // Its answer, acknowledged too, follows it complete.
            let at = messages.iter().position(|m| m["content"] == text.as_str()).unwrap();
            let answer = &messages[at + 1];
            assert_eq!(
                (answer["role"].as_str(), answer["complete"].as_bool()),
                (Some("assistant"), Some(true)),
                "{body}"
            );
            assert_eq!(answer["content"], "ok");
        }
        // In order: the acknowledged messages appear in the order they were sent.
        let positions: Vec<usize> =
            acked.iter().map(|t| users.iter().position(|u| *u == t.as_str()).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "out of order: {positions:?}");
    }
    keel.kill().unwrap();
    keel.wait().unwrap();
    eprintln!("{total} acknowledged messages across {CLIENTS} sessions survived {ROUNDS} SIGKILLs");
}

/// Each client appends to its session until keel dies; returns the messages keel acknowledged.
async fn append_until_killed(url: &str, round: usize, keel: &mut Child) -> Vec<Vec<String>> {
    let acknowledged: Arc<tokio::sync::Mutex<Vec<Vec<String>>>> =
        Arc::new(tokio::sync::Mutex::new(vec![Vec::new(); CLIENTS]));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (url, acknowledged) = (url.to_owned(), Arc::clone(&acknowledged));
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for j in 0.. {
                let text = format!("c{i}-r{round}-{j}");
                let body = json!({"model": "m", "stream": j % 2 == 0, "messages": [{"role": "user", "content": text}]});
                let sent = http
                    .post(format!("{url}/api/chat"))
                    .header("x-keel-session", format!("c{i}"))
                    .json(&body)
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                if response.status() != 200 {
                    return;
                }
                // A stream is acknowledged by its final chunk.
                let Ok(reply) = response.text().await else { return };
                if !reply.contains("\"done\":true") || reply.contains("\"error\"") {
                    return;
                }
                acknowledged.lock().await[i].push(text);
            }
        }));
    }
    tokio::time::sleep(RUN_FOR).await;
    keel.kill().unwrap(); // SIGKILL
    keel.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    acknowledged.lock().await.clone()
}
