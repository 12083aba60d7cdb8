//! Nothing bad is silently ignored, nothing ends bare: malformed keel headers, unknown `/keel/...`
//! paths, bodies that are not JSON objects, oversized headers and streams cut by a shutdown all
//! get an answer from keel in the endpoint's dialect that says what to send instead — and none of
//! them reaches the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::time::Duration;

use keel_mock::MockServer;
use keel_testkit::{MODEL_MANAGEMENT, Stack, TestGateway, config_from_toml, scenario};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Request headers as raw bytes (some are not UTF-8 on purpose).
type Headers<'a> = Vec<(&'a str, &'a [u8])>;

/// A chat body for `model`.
fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

/// Sends `method path` with raw header values and body; the status and the body.
async fn send_raw(url: &str, method: &str, path: &str, headers: &[(&str, &[u8])], body: Vec<u8>) -> (u16, Vec<u8>) {
    let mut request = reqwest::Client::new().request(method.parse().unwrap(), format!("{url}{path}")).body(body);
    for (name, value) in headers {
        request = request.header(*name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// [`send_raw`], the body as JSON (the test fails when it is not JSON).
async fn send(url: &str, method: &str, path: &str, headers: &[(&str, &[u8])], body: Vec<u8>) -> (u16, Value) {
    let (status, bytes) = send_raw(url, method, path, headers, body).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|err| panic!("{method} {path}: {status} with a body that is not JSON ({err}): {bytes:?}"));
    (status, value)
}

/// The error message of `body`, checked to be in the dialect of `path`: `{"error": "..."}` for
/// `/api/*` and keel's own, `{"error": {"message", "type", "param", "code"}}` for `/v1/*`.
fn message_in_dialect(path: &str, body: &Value) -> String {
    if path.starts_with("/v1/") {
        let error = &body["error"];
        assert!(error["type"].is_string() && error["param"].is_null() && error["code"].is_null(), "{path}: {body}");
        error["message"].as_str().unwrap_or_else(|| panic!("{path}: {body}")).to_owned()
    } else {
        body["error"].as_str().unwrap_or_else(|| panic!("{path}: {body}")).to_owned()
    }
}

/// Asserts nothing reached the upstream (the mock records every request).
fn nothing_forwarded(mock: &MockServer) {
    let seen: Vec<String> = mock.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(seen.is_empty(), "forwarded upstream: {seen:?}");
}

#[tokio::test]
async fn malformed_deadlines_are_400_on_every_path() {
    let stack = Stack::basic_with(MODEL_MANAGEMENT).await;
    let url = stack.keel.url();
    let structured = json!({"model": "llama3.2", "messages": [], "format": {"type": "object"}, "stream": false});
    // (path, extra header, body): plain, session, structured-output guard, OpenAI, passthrough.
    let paths: [(&str, Headers<'_>, Value); 5] = [
        ("/api/chat", vec![], chat("llama3.2")),
        ("/api/chat", vec![("x-keel-session", b"deadline-test")], chat("llama3.2")),
        ("/api/chat", vec![], structured),
        ("/v1/chat/completions", vec![], chat("llama3.2")),
        ("/api/pull", vec![], json!({"model": "llama3.2"})),
    ];
    for bad in [&b"soon"[..], b"-1", b"0", b"0s", b"NaN", b"inf", b"", b"30\xff"] {
        for (path, extra, body) in &paths {
            let mut headers = vec![("x-keel-deadline", bad)];
            headers.extend(extra.iter().copied());
            let (status, answer) = send(&url, "POST", path, &headers, serde_json::to_vec(body).unwrap()).await;
            let message = message_in_dialect(path, &answer);
            assert_eq!(status, 400, "{path} {:?}: {answer}", String::from_utf8_lossy(bad));
            assert!(message.starts_with("X-Keel-Deadline \""), "{message}");
            assert!(message.contains("\"30s\"") && message.contains("\"2.5\""), "says what is accepted: {message}");
        }
    }
    let (status, answer) =
        send(&url, "GET", "/api/tags", &[("x-keel-deadline", b"30s"), ("x-keel-deadline", b"1m")], Vec::new()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(message_in_dialect("/api/tags", &answer).contains("more than once"), "{answer}");
    nothing_forwarded(&stack.mock);
    // Well-formed deadlines pass.
    for good in [&b"30s"[..], b"2.5", b"1500ms"] {
        let (status, answer) = send(
            &url,
            "POST",
            "/api/chat",
            &[("x-keel-deadline", good)],
            serde_json::to_vec(&chat("llama3.2")).unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
}

#[tokio::test]
async fn malformed_session_headers_are_400_in_dialect() {
    let stack = Stack::basic().await;
    let url = stack.keel.url();
    let long = vec![b'a'; 129];
    // (headers, what the message must mention)
    let cases: Vec<(Headers<'_>, &str)> = vec![
        (vec![("x-keel-session", b"")], "X-Keel-Session \"\" is not a session id"),
        (vec![("x-keel-session", b"has space")], "X-Keel-Session \"has space\" is not a session id"),
        (vec![("x-keel-session", &long)], "1 to 128 characters"),
        (vec![("x-keel-session", b"s\xff")], "X-Keel-Session \"s\\xff\" is not a session id"),
        (vec![("x-keel-session", b"s1"), ("x-keel-session", b"s2")], "X-Keel-Session is sent more than once"),
        (vec![("x-keel-session", b"s1"), ("x-keel-session-mode", b"Record")], "use \"managed\""),
        (vec![("x-keel-session", b"s1"), ("x-keel-session-mode", b"rec\xffrd")], "\"rec\\xffrd\" is not a mode"),
        (vec![("x-keel-session", b"s1"), ("x-keel-idempotency-key", b"a/b")], "\"a/b\" is not a key"),
        (vec![("x-keel-session", b"s1"), ("x-keel-idempotency-key", b"k\x80")], "\"k\\x80\" is not a key"),
        (vec![("x-keel-idempotency-key", b"k1")], "X-Keel-Idempotency-Key needs X-Keel-Session"),
        (vec![("x-keel-session-mode", b"record")], "X-Keel-Session-Mode needs X-Keel-Session"),
    ];
    for path in ["/api/chat", "/v1/chat/completions"] {
        for (headers, expected) in &cases {
            let (status, answer) =
                send(&url, "POST", path, headers, serde_json::to_vec(&chat("llama3.2")).unwrap()).await;
            let message = message_in_dialect(path, &answer);
            assert_eq!(status, 400, "{path} {headers:?}: {answer}");
            assert!(message.contains(expected), "{path}: {message:?} should mention {expected:?}");
        }
    }
    // Sessions belong to chat endpoints only.
    let generate = json!({"model": "llama3.2", "prompt": "hi", "stream": false});
    let (status, answer) =
        send(&url, "POST", "/api/generate", &[("x-keel-session", b"s1")], serde_json::to_vec(&generate).unwrap()).await;
    assert_eq!(status, 400);
    assert!(message_in_dialect("/api/generate", &answer).contains("/api/chat"), "{answer}");
    let (status, answer) = send(&url, "POST", "/v1/completions", &[("x-keel-idempotency-key", b"k")], Vec::new()).await;
    assert_eq!(status, 400);
    assert!(message_in_dialect("/v1/completions", &answer).contains("needs X-Keel-Session"), "{answer}");
    nothing_forwarded(&stack.mock);
}

#[tokio::test]
async fn unknown_keel_paths_are_answered_by_keel_never_forwarded() {
    let stack = Stack::basic().await;
    let url = stack.keel.url();
    let mut listed = String::new();
    for (method, path) in [
        ("GET", "/keel/nope"),
        ("POST", "/keel/nope"),
        ("GET", "/keel/"),
        ("GET", "/keel/status/extra"),
        ("DELETE", "/keel/sessions/s1/messages/7"),
        ("PUT", "/keel/health/x"),
        ("GET", "/keel"),
    ] {
        let (status, answer) = send(&url, method, path, &[], Vec::new()).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        let message = message_in_dialect(path, &answer);
        assert!(
            message.starts_with(&format!("keel has no endpoint {method} {path}; its own endpoints are: ")),
            "{message}"
        );
        listed = message.split("its own endpoints are: ").nth(1).unwrap().to_owned();
    }
    // A method an endpoint does not take: 405, JSON saying which it takes.
    for (method, path, takes) in [
        ("POST", "/keel/status", "GET"),
        ("DELETE", "/keel/health", "GET"),
        ("GET", "/keel/sessions/s1/handoff", "POST"),
        ("GET", "/keel/breakers/default:*/open", "POST"),
    ] {
        let (status, answer) = send(&url, method, path, &[], b"{}".to_vec()).await;
        assert_eq!(status, 405, "{method} {path}: {answer}");
        let message = message_in_dialect(path, &answer);
        assert!(message.starts_with(&format!("{path} does not take {method}; it takes {takes}")), "{message}");
    }
    // A query the endpoint cannot read: JSON too, not axum's plain text.
    let (status, answer) = send(&url, "GET", "/keel/sessions?limit=lots", &[], Vec::new()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(message_in_dialect("/keel/sessions", &answer).contains("limit"), "{answer}");
    nothing_forwarded(&stack.mock);

    // Every endpoint the answer lists is served (none falls through to the "no endpoint" answer).
    for endpoint in listed.split(", ") {
        let (methods, template) = endpoint.split_once(' ').unwrap();
        let path = template.replace("{target}", "default:*").replace("{open|close|reset}", "reset");
        let path = path.replace("{id}", "s1").replace("{name}", "n1");
        for method in methods.split('|') {
            let (status, answer) = send_raw(&url, method, &path, &[], b"{}".to_vec()).await;
            let served = String::from_utf8_lossy(&answer);
            assert!(!served.contains("keel has no endpoint"), "{method} {path} is listed but not served: {served}");
            assert_ne!(status, 405, "{method} {path}: {served}");
        }
    }
    nothing_forwarded(&stack.mock);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_400() {
    let stack = Stack::basic().await;
    let url = stack.keel.url();
    for path in ["/api/chat", "/api/generate", "/v1/chat/completions", "/v1/embeddings"] {
        for (body, what) in [
            (&b"[]"[..], "an array"),
            (b"[\"llama3.2\"]", "an array"),
            (b"\"x\"", "a string"),
            (b"1", "a number"),
            (b"null", "null"),
            (b" true ", "a boolean"),
        ] {
            let (status, answer) = send(&url, "POST", path, &[], body.to_vec()).await;
            assert_eq!(status, 400, "{path} {body:?}: {answer}");
            let message = message_in_dialect(path, &answer);
            assert!(message.starts_with(&format!("request body must be a JSON object, not {what}")), "{message}");
        }
        // Not UTF-8, even inside a string keel does not read.
        let body = b"{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"}]}".to_vec();
        let (status, answer) = send(&url, "POST", path, &[], body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let message = message_in_dialect(path, &answer);
        assert!(message.contains("not valid UTF-8") && message.contains("encoded as UTF-8"), "{message}");
        // The existing checks still hold.
        let (status, answer) = send(&url, "POST", path, &[], br#"{"messages": []}"#.to_vec()).await;
        assert_eq!((status, message_in_dialect(path, &answer)), (400, "model is required".to_owned()));
        let (status, answer) = send(&url, "POST", path, &[], b"{\"model\": ".to_vec()).await;
        assert_eq!(status, 400);
        assert!(message_in_dialect(path, &answer).contains("invalid JSON"), "{answer}");
    }
    nothing_forwarded(&stack.mock);
    let (status, _) = send(&url, "POST", "/api/chat", &[], serde_json::to_vec(&chat("llama3.2")).unwrap()).await;
    assert_eq!(status, 200);
}

/// Sends a raw HTTP/1.1 request head (then nothing) and reads the answer until keel closes.
async fn raw_request(keel: &TestGateway, head: &[u8]) -> (u16, String, Vec<u8>) {
    let mut socket = tokio::net::TcpStream::connect(keel.addr()).await.unwrap();
    // keel may answer before it has read everything; a reset on write is not the test's concern.
    let _ = socket.write_all(head).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("keel kept the connection open")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head: {text:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.as_bytes().to_vec())
}

#[tokio::test]
async fn oversized_headers_are_431_with_a_body_in_dialect() {
    let stack = Stack::basic().await;
    let big = "x".repeat(100 * 1024);
    // One 100 KB header, and 100 KB over 50 headers.
    let many: String = (0..50).map(|i| format!("x-filler-{i}: {}\r\n", "y".repeat(2048))).collect();
    for (path, filler) in [
        ("/api/chat", format!("x-big: {big}\r\n")),
        ("/v1/chat/completions", many.clone()),
        ("/keel/status", many.clone()),
        ("/api/tags", format!("cookie: {big}\r\n")),
    ] {
        let head = format!("POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n{filler}\r\n");
        let (status, head, body) = raw_request(&stack.keel, head.as_bytes()).await;
        assert_eq!(status, 431, "{path}: {head}");
        let body: Value = serde_json::from_slice(&body).unwrap_or_else(|err| panic!("{path}: {err}: {head}"));
        let message = message_in_dialect(path, &body);
        assert!(
            message.contains("more than keel's limit of 65536") && message.contains("send fewer or smaller"),
            "{message}"
        );
    }
    // Headers within the limit pass.
    let head =
        format!("GET /api/tags HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nx-ok: {}\r\n\r\n", "z".repeat(8000));
    let (status, head, _) = raw_request(&stack.keel, head.as_bytes()).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(stack.mock.requests().len(), 1, "only the request within the limit reached the upstream");
}

/// A keel with `shutdown_grace = "1s"` in front of `mock`, the route `m` going to `targets` of it.
async fn keel_with_short_grace(mock: &MockServer, targets: usize) -> TestGateway {
    let mut toml = "[server]\nshutdown_grace = \"1s\"\n".to_owned();
    let mut names = Vec::new();
    for i in 0..targets {
        toml.push_str(&format!("[[upstream]]\nname = \"u{i}\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n", mock.url()));
        names.push(format!("\"u{i}\""));
    }
    toml.push_str(&format!("[[route]]\nmodel = \"*\"\ntargets = [{}]\n", names.join(", ")));
    TestGateway::start(config_from_toml(&toml)).await
}

/// Starts a stream, shuts keel down once its first chunk arrived, and returns all it received.
async fn stream_through_shutdown(mut keel: TestGateway, path: &str, body: Value) -> String {
    let mut response = reqwest::Client::new().post(format!("{}{path}", keel.url())).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = response.chunk().await.unwrap().unwrap().to_vec();
    keel.begin_shutdown();
    // The stream must end (with keel's error line) well before the mock's 30 s of tokens.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = response.chunk().await.expect("the stream ended with a transport error") {
            received.extend_from_slice(&chunk);
        }
    });
    rest.await.expect("the stream was not ended when the shutdown grace ran out");
    tokio::time::timeout(Duration::from_secs(10), keel.stopped()).await.expect("keel did not stop");
    String::from_utf8(received).unwrap()
}

fn slow_stream_mock_scenario() -> keel_mock::Scenario {
    scenario(&format!("[[model]]\nname = \"m\"\nreply = \"{}\"\ntoken_delay = \"300ms\"\n", "word ".repeat(100)))
}

#[tokio::test]
async fn ndjson_streams_open_when_the_grace_runs_out_end_with_an_error_line() {
    let mock = MockServer::start(([127, 0, 0, 1], 0).into(), slow_stream_mock_scenario()).await.unwrap();
    // One target (relayed as is) and two (relayed through the tap that can continue a stream).
    for targets in [1, 2] {
        let keel = keel_with_short_grace(&mock, targets).await;
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let text = stream_through_shutdown(keel, "/api/chat", body).await;
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 2, "{text}");
        for line in &lines[..lines.len() - 1] {
            let chunk: Value = serde_json::from_str(line).unwrap();
            assert_eq!(chunk["done"], false, "{text}");
        }
        let last: Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
        assert_eq!(last, json!({"error": "keel is shutting down; retry the request"}), "{targets} target(s): {text}");
        assert!(text.ends_with('\n'));
    }
}

#[tokio::test]
async fn sse_streams_open_when_the_grace_runs_out_end_with_an_error_event() {
    let mock = MockServer::start(([127, 0, 0, 1], 0).into(), slow_stream_mock_scenario()).await.unwrap();
    let keel = keel_with_short_grace(&mock, 1).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let text = stream_through_shutdown(keel, "/v1/chat/completions", body).await;
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() >= 2, "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    let last: Value = serde_json::from_str(events[events.len() - 1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["message"], "keel is shutting down; retry the request", "{text}");
    assert!(last["error"]["type"].is_string(), "{last}");
    assert!(text.ends_with("\n\n"));
}

#[tokio::test]
async fn requests_still_waiting_when_the_grace_runs_out_get_a_503() {
    let scenario = scenario("[[model]]\nname = \"m\"\n[[model.fault]]\nkind = \"slow_first_byte\"\ndelay = \"30s\"\n");
    let mock = MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let mut keel = keel_with_short_grace(&mock, 1).await;
    let url = keel.url();
    let waiting = tokio::spawn(async move {
        send(&url, "POST", "/v1/chat/completions", &[], serde_json::to_vec(&chat("m")).unwrap()).await
    });
    // Wait until the request reached the upstream, then shut down.
    for _ in 0..100 {
        if !mock.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    keel.begin_shutdown();
    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(message_in_dialect("/v1/chat/completions", &answer), "keel is shutting down; retry the request");
    tokio::time::timeout(Duration::from_secs(10), keel.stopped()).await.expect("keel did not stop");
}
