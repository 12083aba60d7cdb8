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
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn any_request_gets_a_well_formed_answer(method in method(), path in path(), body in body()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let result: Result<(), TestCaseError> = async {
            let mock = shared_mock().await;
            let gateway = Gateway::new(keel_testkit::config_for(&mock)).unwrap();
            let Ok(request) = Request::builder().method(method).uri(&path).body(Body::from(body)) else {
                return Ok(()); // not a request a client could send
            };
            let response = app(gateway).oneshot(request).await.unwrap();
            let status = response.status();
            let is_v1 = path.starts_with("/v1/");
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            prop_assert!(status.as_u16() < 600);
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
