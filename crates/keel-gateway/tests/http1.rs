//! keel's own HTTP/1.1 server, spoken to over raw sockets through the whole gateway: a client
//! that waits for `100 Continue`, a chunked upload, pipelined requests on one connection, and
//! requests keel cannot read — each reaches the model server whole, or gets an answer saying
//! what was wrong.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::time::Duration;

use keel_testkit::Stack;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A chat body for the basic stack's model whose message is `content`.
fn chat(content: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"model": "llama3.2", "messages": [{"role": "user", "content": content}], "stream": false}),
    )
    .unwrap()
}

/// Reads from `socket` until what was read contains `needle` `times` times.
async fn read_until(socket: &mut TcpStream, needle: &str, times: usize) -> String {
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while String::from_utf8_lossy(&text).matches(needle).count() < times {
            let mut piece = [0u8; 8192];
            let n = socket.read(&mut piece).await.unwrap();
            assert!(n > 0, "keel closed the connection; read so far: {:?}", String::from_utf8_lossy(&text));
            text.extend_from_slice(&piece[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} ×{times} in {:?}", String::from_utf8_lossy(&text)));
    String::from_utf8(text).unwrap()
}

/// The message the mock received in its `index`-th request.
fn message_received(stack: &Stack, index: usize) -> String {
    let requests = stack.mock.requests();
    let body: Value = serde_json::from_slice(&requests[index].body).unwrap();
    body["messages"][0]["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_gets_it_and_its_body_arrives_whole() {
    let stack = Stack::basic().await;
    let content = "x".repeat(300_000);
    let body = chat(&content);
    let mut socket = TcpStream::connect(stack.keel.addr()).await.unwrap();
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    read_until(&mut socket, "HTTP/1.1 100 Continue\r\n\r\n", 1).await;
    socket.write_all(&body).await.unwrap();
    let answer = read_until(&mut socket, "\"done\":true", 1).await;
    assert!(answer.contains("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(message_received(&stack, 0), content);
}

#[tokio::test]
async fn a_chunked_upload_arrives_whole() {
    let stack = Stack::basic().await;
    let body = chat("sent in three chunks");
    let mut socket = TcpStream::connect(stack.keel.addr()).await.unwrap();
    socket
        .write_all(b"POST /api/chat HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for piece in body.chunks(body.len() / 3 + 1) {
        socket.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await.unwrap();
        socket.write_all(piece).await.unwrap();
        socket.write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    socket.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_until(&mut socket, "\"done\":true", 1).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(message_received(&stack, 0), "sent in three chunks");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let stack = Stack::basic().await;
    let mut socket = TcpStream::connect(stack.keel.addr()).await.unwrap();
    let mut requests = Vec::new();
    for content in ["first", "second"] {
        let body = chat(content);
        requests.extend_from_slice(
            format!("POST /api/chat HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
        );
        requests.extend_from_slice(&body);
    }
    requests.extend_from_slice(b"GET /keel/health HTTP/1.1\r\nhost: localhost\r\n\r\n");
    socket.write_all(&requests).await.unwrap();
    let answers = read_until(&mut socket, "HTTP/1.1 200 OK\r\n", 3).await;
    let answers = if answers.contains("\"status\"") { answers } else { read_until(&mut socket, "\"status\"", 1).await };
    let (first, rest) = answers.split_once("\"done\":true").unwrap();
    assert!(first.contains("HTTP/1.1 200 OK") && rest.contains("\"done\":true"), "{answers}");
    assert_eq!(message_received(&stack, 0), "first");
    assert_eq!(message_received(&stack, 1), "second");
}

#[tokio::test]
async fn requests_keel_cannot_read_get_an_error_saying_why() {
    let stack = Stack::basic().await;
    for (request, status, says) in [
        (&b"POST /api/chat HTTP/1.1\r\ncontent-length: ten\r\n\r\n"[..], 400, "content-length is not a number"),
        (&b"GET /api/tags HTTP/7.0\r\n\r\n"[..], 400, "not HTTP/1.1"),
        (&b"POST /api/chat HTTP/1.1\r\nexpect: tea\r\ncontent-length: 2\r\n\r\n{}"[..], 417, "100-continue"),
    ] {
        let mut socket = TcpStream::connect(stack.keel.addr()).await.unwrap();
        socket.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        let body: Value = serde_json::from_str(body).unwrap();
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }
    assert!(stack.mock.requests().is_empty(), "nothing unreadable reached the model server");
}
