#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// A service made of a function.
struct Fn<F>(F);

impl<F> Service for Fn<F>
where
    F: std::ops::Fn(http::Request<Body>) -> BoxFuture<'static, axum::response::Response>,
{
    fn call(&self, request: http::Request<Body>) -> impl Future<Output = axum::response::Response> + Send + 'static {
        (self.0)(request)
    }
}

/// Answers with the method, path and body it read.
fn echo() -> Fn<impl std::ops::Fn(http::Request<Body>) -> BoxFuture<'static, axum::response::Response>> {
    Fn(|request: http::Request<Body>| -> BoxFuture<'static, axum::response::Response> {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let text = format!("{} {} {}", parts.method, parts.uri.path(), String::from_utf8_lossy(&body));
            axum::response::Response::new(Body::from(text))
        })
    })
}

/// Starts serving one end of a pipe; the other end and the serving task.
fn start<S: Service + Send + Sync + 'static>(
    service: S,
    keep_alive: bool,
    stop: impl Future<Output = Stop> + Send + 'static,
) -> (DuplexStream, tokio::task::JoinHandle<Result<(), ConnectionError>>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move { serve(server, &service, keep_alive, stop).await });
    (client, task)
}

/// Reads until the text read contains `needle` (and returns all of it).
async fn read_until(client: &mut DuplexStream, needle: &str) -> String {
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&text).contains(needle) {
            let mut piece = [0u8; 4096];
            let n = client.read(&mut piece).await.unwrap();
            assert!(n > 0, "closed before {needle:?}; got {:?}", String::from_utf8_lossy(&text));
            text.extend_from_slice(&piece[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&text)));
    String::from_utf8(text).unwrap()
}

async fn read_to_close(client: &mut DuplexStream) -> String {
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut text)).await.unwrap().unwrap();
    String::from_utf8(text).unwrap()
}

fn never() -> impl Future<Output = Stop> + Send + 'static {
    std::future::pending()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (mut client, task) = start(echo(), true, never());
    client
        .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = read_until(&mut client, "GET /b ").await;
    let first = text.find("POST /a hello").unwrap();
    assert!(first < text.find("GET /b ").unwrap());
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-length: 13\r\n") && text.contains("\r\ndate: "), "{text}");
    drop(client);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn chunked_bodies_arrive_in_pieces_after_100_continue() {
    let (mut client, task) = start(echo(), true, never());
    client.write_all(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
    read_until(&mut client, "HTTP/1.1 100 Continue\r\n\r\n").await;
    client.write_all(b"3\r\nabc\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.write_all(b"2;ext=1\r\nde\r\n0\r\n\r\n").await.unwrap();
    read_until(&mut client, "POST /up abcde").await;
    drop(client);
    task.await.unwrap().unwrap();
}

/// A streamed answer: a piece now, then one per `pause`, for as long as it is polled; `dropped`
/// turns true when it is dropped.
fn streaming(
    pause: Duration,
    dropped: Arc<AtomicBool>,
) -> Fn<impl std::ops::Fn(http::Request<Body>) -> BoxFuture<'static, axum::response::Response>> {
    Fn(move |_request: http::Request<Body>| -> BoxFuture<'static, axum::response::Response> {
        let dropped = Arc::clone(&dropped);
        Box::pin(async move {
            struct Guard(Arc<AtomicBool>);
            impl Drop for Guard {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let guard = Guard(dropped);
            let pieces = futures_util::stream::unfold((0u32, guard), move |(n, guard)| async move {
                if n > 0 {
                    tokio::time::sleep(pause).await;
                }
                (n < 3).then(|| (Ok::<_, std::io::Error>(format!("piece{n}\n")), (n + 1, guard)))
            });
            axum::response::Response::new(Body::from_stream(pieces))
        })
    })
}

#[tokio::test]
async fn streamed_answers_are_chunked_and_end() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (mut client, task) = start(streaming(Duration::from_millis(5), Arc::clone(&dropped)), true, never());
    client.write_all(b"GET /s HTTP/1.1\r\n\r\n").await.unwrap();
    let text = read_until(&mut client, "0\r\n\r\n").await;
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(text.contains("7\r\npiece0\n\r\n7\r\npiece1\n\r\n7\r\npiece2\n\r\n0\r\n\r\n"), "{text}");
    drop(client);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_drops_the_answer() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (mut client, task) = start(streaming(Duration::from_secs(30), Arc::clone(&dropped)), true, never());
    client.write_all(b"GET /s HTTP/1.1\r\n\r\n").await.unwrap();
    read_until(&mut client, "piece0").await;
    drop(client);
    let result = tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    assert!(matches!(result, Err(ConnectionError::ClientGone)), "{result:?}");
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn malformed_and_oversized_heads_get_an_error_body_and_a_close() {
    let (mut client, task) = start(echo(), true, never());
    client.write_all(b"GET / HTTP/9\r\n\r\n").await.unwrap();
    let text = read_to_close(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("connection: close") && text.contains("{\"error\":"), "{text}");
    assert!(matches!(task.await.unwrap(), Err(ConnectionError::Refused(_))));

    let (mut client, _task) = start(echo(), true, never());
    let long = format!("GET / HTTP/1.1\r\nx-long: {}\r\n", "a".repeat(MAX_HEAD));
    let writer = tokio::spawn(async move {
        let _ = client.write_all(long.as_bytes()).await;
        read_to_close(&mut client).await
    });
    let text = writer.await.unwrap();
    assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{text}");
}

#[tokio::test]
async fn an_unread_body_closes_the_connection_after_the_answer() {
    let service = Fn(|_request: http::Request<Body>| -> BoxFuture<'static, axum::response::Response> {
        Box::pin(async { axum::response::Response::new(Body::from("no")) })
    });
    let (mut client, task) = start(service, true, never());
    client.write_all(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\nstart").await.unwrap();
    let text = read_to_close(&mut client).await;
    assert!(text.contains("connection: close\r\n") && text.ends_with("\r\n\r\nno"), "{text}");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn http_1_0_heads_and_no_keep_alive() {
    let (mut client, task) = start(echo(), true, never());
    client.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    let text = read_to_close(&mut client).await;
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n") && text.ends_with("GET /old "), "{text}");
    task.await.unwrap().unwrap();

    let (mut client, task) = start(echo(), true, never());
    client.write_all(b"HEAD /h HTTP/1.1\r\n\r\n").await.unwrap();
    let text = read_until(&mut client, "\r\n\r\n").await;
    assert!(text.contains("content-length: 8\r\n") && text.ends_with("\r\n\r\n"), "{text}");
    drop(client);
    task.await.unwrap().unwrap();

    let (mut client, task) = start(echo(), false, never());
    client.write_all(b"GET /one HTTP/1.1\r\n\r\n").await.unwrap();
    let text = read_to_close(&mut client).await;
    assert!(text.contains("connection: close\r\n") && text.ends_with("GET /one "), "{text}");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stop_closes_an_idle_connection_and_lets_a_busy_one_finish() {
    let (_client, task) = start(echo(), true, std::future::ready(Stop::AfterRequest));
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let _ = rx.await;
        Stop::AfterRequest
    };
    let dropped = Arc::new(AtomicBool::new(false));
    let (mut client, task) = start(streaming(Duration::from_millis(50), Arc::clone(&dropped)), true, stop);
    client.write_all(b"GET /s HTTP/1.1\r\n\r\n").await.unwrap();
    read_until(&mut client, "piece0").await;
    tx.send(()).unwrap();
    let text = read_to_close(&mut client).await;
    assert!(text.ends_with("piece2\n\r\n0\r\n\r\n"), "{text}");
    task.await.unwrap().unwrap();

    let (mut client, task) = start(streaming(Duration::from_secs(30), Arc::new(AtomicBool::new(false))), true, async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Stop::Now
    });
    client.write_all(b"GET /s HTTP/1.1\r\n\r\n").await.unwrap();
    read_to_close(&mut client).await;
    task.await.unwrap().unwrap();
}

/// Requests made of pieces that matter to the reader, so that random cases get past the first
/// line: heads, framing headers, chunk lines, bodies and junk.
fn request_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        Just(b"POST /api/chat HTTP/1.1\r\n".to_vec()),
        Just(b"GET / HTTP/1.0\r\n".to_vec()),
        Just(b"HEAD /x HTTP/1.1\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Expect: 100-continue\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"3\r\nabc\r\n0\r\n\r\n".to_vec()),
        Just(b"hello".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 128, ..proptest::test_runner::Config::default() })]

    /// Any bytes, in any split, end with the connection closed (no panic, no hang), and what
    /// keel wrote back is HTTP answers.
    #[test]
    fn any_bytes_in_any_split_finish_with_http_answers(input in request_bytes(), step in 1usize..64) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let answers = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), crate::http1::serve_bytes(&input, step)).await
        });
        let answers = answers.expect("the server finished");
        proptest::prop_assert!(answers.is_empty() || answers.starts_with(b"HTTP/1."), "{:?}", String::from_utf8_lossy(&answers));
    }
}
