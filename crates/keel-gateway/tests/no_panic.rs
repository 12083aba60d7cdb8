//! No request, however malformed, makes keel panic or answer outside its error contract.
//!
//! Property test over methods, paths, headers and bodies (random bytes and JSON-ish text) sent
//! through the real router to a live fake Ollama.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use axum::body::Body;
use http::Request;
use keel_gateway::{Gateway, app};
use proptest::prelude::*;
use tower::ServiceExt;

fn method() -> impl Strategy<Value = http::Method> {
    prop_oneof![
        Just(http::Method::GET),
        Just(http::Method::POST),
        Just(http::Method::HEAD),
        Just(http::Method::DELETE),
        Just(http::Method::PUT),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/api/chat".to_owned()),
        Just("/api/generate".to_owned()),
        Just("/api/embed".to_owned()),
        Just("/api/show".to_owned()),
        Just("/v1/chat/completions".to_owned()),
        Just("/v1/embeddings".to_owned()),
        Just("/v1/models/llama3.2".to_owned()),
        Just("/keel/status".to_owned()),
        Just("/keel/nope".to_owned()),
        "/[a-z0-9/%.:]{0,24}".prop_map(|p| p),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        r#"\{("model"|"stream"|"messages"|"name"|"x")?:? ?("llama3.2"|true|false|null|1|\[|\{|"")?,?\}?"#
            .prop_map(String::into_bytes),
        Just(br#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}"#.to_vec()),
        Just(br#"{"model":"llama3.2","prompt":"hi","stream":"yes"}"#.to_vec()),
        Just(br#"{"model":["x"]}"#.to_vec()),
        // Valid JSON that is not an object, and bytes that are not UTF-8 where keel does not look.
        prop_oneof![Just("[]"), Just(r#"["llama3.2"]"#), Just("null"), Just("1"), Just(r#""x""#)]
            .prop_map(|b| b.as_bytes().to_vec()),
        proptest::collection::vec(128u8..=255, 1..4).prop_map(|bad| {
            let mut body = br#"{"model":"llama3.2","prompt":""#.to_vec();
            body.extend(bad);
            body.extend(br#"","stream":false}"#);
            body
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn any_request_gets_a_well_formed_answer(
        method in method(),
        path in path(),
        body in body(),
        deadline in proptest::option::weighted(0.25, header_value()),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let head = method == http::Method::HEAD;
        runtime.block_on(async {
            let result: Result<(), TestCaseError> = async {
            let mock = shared_mock().await;
            let gateway = Gateway::new(keel_testkit::config_for(&mock)).unwrap();
            let mut builder = Request::builder().method(method).uri(&path);
            if let Some(deadline) = deadline {
                let Ok(deadline) = http::HeaderValue::from_bytes(&deadline) else { return Ok(()) };
                builder = builder.header("x-keel-deadline", deadline);
            }
            let Ok(request) = builder.body(Body::from(body)) else {
                return Ok(()); // not a request a client could send
            };
            let response = app(gateway).oneshot(request).await.unwrap();
            let status = response.status();
            let is_v1 = path.starts_with("/v1/");
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            prop_assert!(status.as_u16() < 600);
            // keel's own paths are never forwarded: an unknown one is keel's 404, in JSON.
            if path.starts_with("/keel/") && status == http::StatusCode::NOT_FOUND && !head {
                let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                prop_assert!(value["error"].is_string(), "{value}");
            }
            if status.is_client_error() && !bytes.is_empty() && bytes[0] == b'{' {
                let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                if is_v1 {
                    prop_assert!(value["error"]["message"].is_string() || value["error"].is_string(), "{value}");
                } else {
                    prop_assert!(value["error"].is_string() || value["error"]["message"].is_string(), "{value}");
                }
            }
            Ok(())
            }.await;
            result
        })?;
    }
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z0-9._:-]{1,12}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(b"record".to_vec()),
        Just(b"managed".to_vec()),
        Just(vec![b'x'; 200]),
    ]
}

fn session_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        body(),
        Just(br#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#.to_vec()),
        Just(br#"{"model":"llama3.2","messages":"nope","stream":false}"#.to_vec()),
        Just(br#"{"model":"llama3.2","messages":[{"role":7,"content":{"a":1}}],"stream":false}"#.to_vec()),
        Just(br#"{"model":"llama3.2","messages":[],"options":{"num_ctx":-1}}"#.to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// Session headers and bodies of any shape: never a panic, never a 500, errors in dialect.
    #[test]
    fn any_session_request_gets_a_well_formed_answer(
        path in prop_oneof![Just("/api/chat"), Just("/v1/chat/completions"), Just("/api/generate")],
        id in header_value(),
        mode in proptest::option::of(header_value()),
        key in proptest::option::of(header_value()),
        body in session_body(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let result: Result<(), TestCaseError> = async {
            let mock = shared_mock().await;
            let dir = std::env::temp_dir().join(format!("keel-no-panic-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let store = keel_session::open(&format!("sqlite://{}", dir.join("s.db").display())).await.unwrap();
            let gateway = Gateway::with_store(keel_testkit::config_for(&mock), store).unwrap();
            let mut builder = Request::builder().method(http::Method::POST).uri(path);
            let Ok(id) = http::HeaderValue::from_bytes(&id) else { return Ok(()) };
            builder = builder.header("x-keel-session", id);
            for (name, value) in [("x-keel-session-mode", mode), ("x-keel-idempotency-key", key)] {
                if let Some(value) = value {
                    let Ok(value) = http::HeaderValue::from_bytes(&value) else { return Ok(()) };
                    builder = builder.header(name, value);
                }
            }
            let request = builder.body(Body::from(body)).unwrap();
            let response = app(gateway).oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            prop_assert!(status != http::StatusCode::INTERNAL_SERVER_ERROR, "{status}: {}", String::from_utf8_lossy(&bytes));
            if status.is_client_error() {
                let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                prop_assert!(value["error"].is_string() || value["error"]["message"].is_string(), "{value}");
            }
            Ok(())
            }.await;
            result
        })?;
    }
}

/// One fake Ollama for all cases, on its own runtime thread so each case can use a fresh runtime.
async fn shared_mock() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let mock = keel_mock::MockServer::start(
                    ([127, 0, 0, 1], 0).into(),
                    keel_mock::Scenario::single_model("llama3.2", "hi"),
                )
                .await
                .unwrap();
                tx.send(mock.url()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    })
    .clone()
}
