#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! Connections cannot be held hostage by slow clients: 100 connections dribbling their headers a
//! byte at a time (slowloris) are closed once `[server] header_timeout` passes, connections left
//! idle after a request once `[server] idle_timeout` passes, while `/keel/health` and ordinary
//! requests keep answering; a body dribbled past `[server] body_timeout` gets 408 in the
//! endpoint's dialect; beyond `[server] max_connections` the connection idle the longest makes
//! room, and with none idle newcomers get 503 while `/keel/health` still answers.

use std::time::{Duration, Instant};

use keel_testkit::Stack;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// keel with a 1 s header timeout in front of a mock.
async fn with_header_timeout() -> Stack {
    Stack::basic_with_server("header_timeout = \"1s\"\n").await
}

/// Writes one byte of a never-ending header every 100 ms until keel closes the connection;
/// gives how long that took (or `None` if it stayed open for 10 s).
async fn dribble(addr: std::net::SocketAddr) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    if stream.write_all(b"GET /api/tags HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ").await.is_err() {
        return Some(started.elapsed());
    }
    while started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(b"a").await.is_err() {
            return Some(started.elapsed());
        }
        let mut buf = [0u8; 512];
        // keel may answer 408 before closing; the close (a read of 0 bytes, or an error) follows.
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn slowloris_connections_are_closed_while_keel_keeps_answering() {
    // (the whole stack is kept: its mock answers the chat requests)
    let Stack { keel, mock: _mock } = with_header_timeout().await;
    let addr = keel.addr();
    let slow: Vec<_> = (0..100).map(|_| tokio::spawn(dribble(addr))).collect();
    // While they dribble, keel answers others.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(client.get(format!("{}/keel/health", keel.url())).send().await.unwrap().status(), 200);
        let chat =
            serde_json::json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false});
        let response = client.post(format!("{}/api/chat", keel.url())).json(&chat).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    for handle in slow {
        let closed_after = handle.await.unwrap().expect("a slowloris connection stayed open for 10 s");
        assert!(closed_after < Duration::from_secs(5), "closed only after {closed_after:?}");
    }
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed_after_the_idle_timeout() {
    let Stack { keel, mock: _mock } = Stack::basic_with_server("idle_timeout = \"1s\"\n").await;
    let addr = keel.addr();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /keel/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    // Then silence: keel closes the connection (a 408 may come first).
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle connection stayed open for 10 s");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_dribbled_body_gets_408_in_dialect_after_the_body_timeout() {
    let Stack { mock, keel } = Stack::basic_with_server("body_timeout = \"1s\"\n").await;
    let addr = keel.addr();
    for (path, dialect_error) in
        [("/api/chat", "\"error\":\"the request body"), ("/v1/chat/completions", "\"message\":\"the request body")]
    {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let dribbling = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b" ").await.is_err() {
                    break;
                }
            }
        };
        let mut answer = Vec::new();
        // keel answers and closes; writing then fails, which ends the dribbling.
        tokio::select! {
            () = dribbling => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains(dialect_error) && answer.contains("body_timeout"), "{path}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}: answered after {:?}", started.elapsed());
    }
    assert!(mock.requests().is_empty(), "nothing reached the model server");
}

/// Sends a request on a new connection and reads the start of the answer.
async fn ask(addr: std::net::SocketAddr, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    (stream, String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Whether keel closed `stream` within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            if let Ok(0) | Err(_) = stream.read(&mut buf).await {
                break;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn at_the_connection_limit_the_longest_idle_connection_makes_room() {
    let Stack { keel, mock: _mock } = Stack::basic_with_server("max_connections = 3\n").await;
    let addr = keel.addr();
    let mut oldest = ask(addr, "/keel/health").await.0;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_second, _) = ask(addr, "/keel/health").await;
    let (_third, _) = ask(addr, "/keel/health").await;
    // The fourth is served; the oldest idle one was closed to make room.
    let (_fourth, answer) = ask(addr, "/api/tags").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed_within(&mut oldest, Duration::from_secs(2)).await, "the oldest idle connection stayed open");
}

#[tokio::test]
async fn with_every_connection_busy_newcomers_get_503_but_health_answers() {
    let scenario = keel_testkit::scenario("[[model]]\nname = \"slow\"\nreply = \"done\"\nlatency = \"3s\"\n");
    let Stack { keel, mock: _mock } = Stack::start_with(scenario, "max_connections = 2\n", "").await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let chat = serde_json::json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let request = client.post(format!("{}/api/chat", keel.url())).json(&chat).send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_refused, answer) = ask(keel.addr(), "/api/tags").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("max_connections") && answer.to_lowercase().contains("retry-after: 1"), "{answer}");
    let (_health, answer) = ask(keel.addr(), "/keel/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for request in busy {
        assert_eq!(request.await.unwrap().unwrap().status(), 200, "the busy connections were not disturbed");
    }
}
