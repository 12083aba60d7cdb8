//! Every fault kind, rates, endpoint filters and garbling.

mod common;

use std::time::Duration;

use common::{client, eventually, json, ndjson, post, sse, start};
use keel_mock::{Fault, FaultKind, GarbleKind, ModelSpec, Scenario};
use serde_json::{Value, json};

const BUSY: &str = r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#;

fn with_fault(fault: Fault) -> Scenario {
    Scenario {
        models: vec![ModelSpec::new("llama3.2", "one two three four five six").with_fault(fault)],
        ..Scenario::default()
    }
}

fn chat(stream: bool) -> Value {
    json!({"model": "llama3.2", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn busy() {
    let s = start(with_fault(Fault::new(FaultKind::Busy))).await;
    let (status, ct, body) = post(&s, "/api/chat", chat(true)).await;
    assert_eq!((status, body.as_str()), (503, BUSY));
    assert_eq!(ct, "application/json; charset=utf-8");
    let (status, _, body) = post(&s, "/v1/chat/completions", chat(false)).await;
    assert_eq!(status, 503);
    assert_eq!(
        json(&body),
        json!({"error": {"message": "server busy, please try again.  maximum pending requests exceeded", "type": "api_error", "param": null, "code": null}})
    );
    // Non-inference endpoints are unaffected.
    let (status, _, _) = post(&s, "/api/show", json!({"model": "llama3.2"})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn not_found_server_error_and_status() {
    let s = start(with_fault(Fault::new(FaultKind::NotFound))).await;
    let (status, _, body) = post(&s, "/api/generate", json!({"model": "llama3.2", "prompt": "x"})).await;
    assert_eq!((status, body.as_str()), (404, r#"{"error":"model 'llama3.2' not found"}"#));

    let s = start(with_fault(Fault::new(FaultKind::ServerError))).await;
    let (status, _, body) = post(&s, "/api/chat", chat(false)).await;
    assert_eq!((status, body.as_str()), (500, r#"{"error":"llama runner process has terminated: exit status 2"}"#));
    let s = start(with_fault(Fault::new(FaultKind::ServerError).with_message("CUDA error: out of memory"))).await;
    let (status, _, body) = post(&s, "/api/embed", json!({"model": "llama3.2", "input": "x"})).await;
    assert_eq!((status, body.as_str()), (500, r#"{"error":"CUDA error: out of memory"}"#));

    let s = start(with_fault(Fault::new(FaultKind::Status).with_status(429, r#"{"error":"slow down"}"#))).await;
    let (status, ct, body) = post(&s, "/api/chat", chat(true)).await;
    assert_eq!((status, body.as_str()), (429, r#"{"error":"slow down"}"#));
    assert_eq!(ct, "application/json; charset=utf-8");
    let s = start(with_fault(Fault::new(FaultKind::Status).with_status(502, "Bad Gateway"))).await;
    let (status, ct, body) = post(&s, "/api/chat", chat(true)).await;
    assert_eq!((status, ct.as_str(), body.as_str()), (502, "text/plain; charset=utf-8", "Bad Gateway"));
}

#[tokio::test]
async fn hang_until_the_client_gives_up() {
    let s = start(with_fault(Fault::new(FaultKind::Hang))).await;
    let c = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let err = c.post(format!("{}/api/chat", s.url())).json(&chat(true)).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(eventually(|| s.stats().cancelled == 1).await, "{:?}", s.stats());
    let st = s.stats();
    assert_eq!((st.requests, st.completed), (1, 0));
    // Shutdown does not wait for hung requests.
    let _hung = tokio::spawn(c.post(format!("{}/api/chat", s.url())).json(&chat(true)).send());
    assert!(eventually(|| s.stats().requests == 2).await);
    s.shutdown().await;
}

#[tokio::test]
async fn reset_drops_the_connection() {
    let s = start(with_fault(Fault::new(FaultKind::Reset).with_endpoints(&["/api/chat"]))).await;
    let err = client().post(format!("{}/api/chat", s.url())).json(&chat(false)).send().await.unwrap_err();
    assert!(!err.is_timeout(), "{err}");
    assert!(err.is_request() || err.is_connect() || err.to_string().contains("error"), "{err}");
    // The server itself keeps serving.
    let (status, _, _) = post(&s, "/api/generate", json!({"model": "llama3.2", "prompt": "x", "stream": false})).await;
    assert_eq!(status, 200);
    assert_eq!(s.stats().cancelled, 0);
}

#[tokio::test]
async fn cut_streams_and_whole_bodies() {
    let s = start(with_fault(Fault::new(FaultKind::Cut).with_after_chunks(2))).await;
    for (path, body) in [
        ("/api/chat", chat(true)),
        ("/api/chat", chat(false)),
        ("/api/generate", json!({"model": "llama3.2", "prompt": "x"})),
        ("/v1/chat/completions", json!({"model": "llama3.2", "stream": true, "messages": []})),
        ("/v1/chat/completions", json!({"model": "llama3.2", "messages": []})),
        ("/api/embed", json!({"model": "llama3.2", "input": "x"})),
    ] {
        let resp = client().post(format!("{}{path}", s.url())).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let err = resp.bytes().await.unwrap_err();
        assert!(err.is_body() || err.is_decode() || err.is_request(), "{path}: {err:?}");
    }
    // The chunks before the cut arrive.
    let mut resp = client().post(format!("{}/api/chat", s.url())).json(&chat(true)).send().await.unwrap();
    let mut got = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(b)) => got.extend_from_slice(&b),
            Ok(None) => panic!("the body must not end cleanly"),
            Err(_) => break,
        }
    }
    let text = String::from_utf8(got).unwrap();
    let lines = ndjson(&text);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["done"] == false));
}

#[tokio::test]
async fn error_line_mid_stream() {
    let s = start(with_fault(Fault::new(FaultKind::ErrorLine).with_after_chunks(2).with_message("boom"))).await;
    let (status, _, body) = post(&s, "/api/chat", chat(true)).await;
    assert_eq!(status, 200);
    let lines = ndjson(&body);
    assert_eq!(lines.len(), 3, "{body}");
    assert_eq!(lines[0]["message"]["content"], "one");
    assert_eq!(lines[1]["message"]["content"], " two");
    assert_eq!(lines[2], json!({"error": "boom"}));

    let (status, _, body) = post(&s, "/api/chat", chat(false)).await;
    assert_eq!((status, body.as_str()), (500, r#"{"error":"boom"}"#));

    let (status, _, body) =
        post(&s, "/v1/chat/completions", json!({"model": "llama3.2", "stream": true, "messages": []})).await;
    assert_eq!(status, 200);
    let events = sse(&body);
    assert_eq!(events.len(), 3);
    assert_eq!(
        json(&events[2]),
        json!({"error": {"message": "boom", "type": "api_error", "param": null, "code": null}})
    );
}

#[tokio::test]
async fn slow_first_byte_and_latency() {
    let s = start(with_fault(Fault::new(FaultKind::SlowFirstByte).with_delay(Duration::from_secs(30)))).await;
    let c = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let err = c.post(format!("{}/api/chat", s.url())).json(&chat(true)).send().await.unwrap_err();
    assert!(err.is_timeout());
    assert!(eventually(|| s.stats().cancelled == 1).await);

    let mut scenario = with_fault(Fault::new(FaultKind::SlowFirstByte).with_delay(Duration::from_millis(20)));
    scenario.models[0].latency = Duration::from_millis(5);
    scenario.models[0].token_delay = Duration::from_millis(2);
    let s = start(scenario).await;
    let (status, _, body) = post(&s, "/api/chat", chat(true)).await;
    assert_eq!(status, 200);
    assert_eq!(ndjson(&body).last().unwrap()["done"], true);
    assert_eq!(s.stats().completed, 1);
}

#[tokio::test]
async fn endpoint_filter_and_zero_rate() {
    let s = start(with_fault(Fault::new(FaultKind::Busy).with_endpoints(&["/v1/chat/completions"]))).await;
    let (status, _, _) = post(&s, "/api/chat", chat(false)).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(&s, "/v1/chat/completions", chat(false)).await;
    assert_eq!(status, 503);

    let s = start(with_fault(Fault::new(FaultKind::Busy).with_rate(0.0))).await;
    for _ in 0..10 {
        assert_eq!(post(&s, "/api/chat", chat(false)).await.0, 200);
    }
}

#[tokio::test]
async fn rates_are_seeded() {
    let scenario = with_fault(Fault::new(FaultKind::Busy).with_rate(0.5)).with_seed(42);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let s = start(scenario.clone()).await;
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(post(&s, "/api/chat", chat(false)).await.0);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&200) && runs[0].contains(&503), "{:?}", runs[0]);

    let s = start(scenario.with_seed(43)).await;
    let mut other = Vec::new();
    for _ in 0..30 {
        other.push(post(&s, "/api/chat", chat(false)).await.0);
    }
    assert_ne!(other, runs[0], "a different seed gives a different sequence");
}

fn json_chat() -> Value {
    json!({"model": "llama3.2", "stream": false, "format": "json", "messages": [{"role": "user", "content": "q"}]})
}

#[tokio::test]
async fn garble_mangles_json_replies_only() {
    let mut scenario = with_fault(Fault::new(FaultKind::Garble)).with_seed(5);
    scenario.models[0].json_reply = Some(r#"{"name": "Ada", "admin": true, "boss": null, "tags": ["x"]}"#.into());
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let s = start(scenario.clone()).await;
        let mut run = Vec::new();
        for _ in 0..12 {
            let (status, _, body) = post(&s, "/api/chat", json_chat()).await;
            assert_eq!(status, 200);
            let content = json(&body)["message"]["content"].as_str().unwrap().to_owned();
            assert!(
                serde_json::from_str::<Value>(&content).is_err(),
                "garbled content must not be valid JSON: {content}"
            );
            run.push(content);
        }
        // Plain-text requests are not garbled.
        let (_, _, body) = post(&s, "/api/chat", chat(false)).await;
        assert_eq!(json(&body)["message"]["content"], "one two three four five six");
        outputs.push(run);
    }
    assert_eq!(outputs[0], outputs[1], "same seed, same garbling");
    let distinct: std::collections::HashSet<_> = outputs[0].iter().collect();
    assert!(distinct.len() >= 3, "several garble kinds appear: {:?}", outputs[0]);
}

#[tokio::test]
async fn garble_kinds() {
    let cases = [
        (GarbleKind::Fence, "```json\n{\"a\": 1}\n```"),
        (GarbleKind::TrailingComma, "{\"a\": 1,}"),
        (GarbleKind::SingleQuotes, "{'a': 1}"),
        (GarbleKind::PythonLiterals, "{'a': 1}"),
    ];
    for (kind, expected) in cases {
        let mut scenario = with_fault(Fault::new(FaultKind::Garble).with_garble(&[kind]));
        scenario.models[0].json_reply = Some(r#"{"a": 1}"#.into());
        let s = start(scenario).await;
        let (_, _, body) = post(
            &s,
            "/v1/chat/completions",
            json!({"model": "llama3.2", "response_format": {"type": "json_object"}, "messages": []}),
        )
        .await;
        assert_eq!(json(&body)["choices"][0]["message"]["content"], expected, "{kind:?}");
    }
    let mut scenario = with_fault(Fault::new(FaultKind::Garble).with_garble(&[GarbleKind::Truncate]));
    scenario.models[0].json_reply = Some(r#"{"a": 1, "b": [1, 2, 3]}"#.into());
    let s = start(scenario).await;
    let (_, _, body) = post(&s, "/api/chat", json_chat()).await;
    let content = json(&body)["message"]["content"].as_str().unwrap().to_owned();
    assert!(r#"{"a": 1, "b": [1, 2, 3]}"#.starts_with(&content) && !content.is_empty());

    let mut scenario = with_fault(Fault::new(FaultKind::Garble).with_garble(&[GarbleKind::Prose]));
    scenario.models[0].json_reply = Some(r#"{"a": 1}"#.into());
    let s = start(scenario).await;
    let (_, _, body) = post(&s, "/api/chat", json_chat()).await;
    let content = json(&body)["message"]["content"].as_str().unwrap().to_owned();
    assert!(content.contains(r#"{"a": 1}"#) && content.len() > 20, "{content}");
}

#[tokio::test]
async fn first_hitting_fault_wins() {
    let scenario = Scenario {
        models: vec![
            ModelSpec::new("llama3.2", "x")
                .with_fault(Fault::new(FaultKind::Busy).with_rate(0.0))
                .with_fault(Fault::new(FaultKind::ServerError))
                .with_fault(Fault::new(FaultKind::NotFound)),
        ],
        ..Scenario::default()
    };
    let s = start(scenario).await;
    assert_eq!(post(&s, "/api/chat", chat(false)).await.0, 500);
}

#[tokio::test]
async fn client_leaving_mid_stream_counts_as_cancelled() {
    let mut scenario = Scenario::single_model("llama3.2", "a b c d e f g h i j k l m n o p");
    scenario.models[0].token_delay = Duration::from_millis(50);
    let s = start(scenario).await;
    let mut resp = client().post(format!("{}/api/chat", s.url())).json(&chat(true)).send().await.unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"done\":false"));
    drop(resp);
    assert!(eventually(|| s.stats().cancelled == 1).await, "{:?}", s.stats());
    assert_eq!(s.stats().completed, 0);
}
