//! `/metrics` exposes requests, latency histograms per route, model and status, and upstream
//! errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_testkit::{Stack, TestGateway, config_for};
use serde_json::json;

#[tokio::test]
async fn requests_and_upstream_errors_are_counted() {
    let stack = Stack::start(keel_mock::Scenario::single_model("metrics-model", "hi")).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client
            .post(format!("{}/api/chat", stack.keel.url()))
            .json(&json!({"model": "metrics-model", "messages": [], "stream": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = TestGateway::start(config_for(&format!("http://127.0.0.1:{port}"))).await;
    let _ = client
        .post(format!("{}/api/chat", dead.url()))
        .body(r#"{"model":"metrics-dead","messages":[]}"#)
        .send()
        .await
        .unwrap();

    let response = client.get(format!("{}/metrics", stack.keel.url())).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(text.contains(r#"keel_requests_total{route="/api/chat",model="metrics-model",status="200"} 3"#), "{text}");
    assert!(
        text.contains(
            r#"keel_request_duration_seconds_bucket{route="/api/chat",model="metrics-model",status="200",le="#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"keel_response_duration_seconds_count{route="/api/chat",model="metrics-model",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"keel_upstream_errors_total{upstream="default",class="refused"}"#), "{text}");
    // A model name that never got an answer shares the "other" label: made-up names cannot grow
    // /metrics.
    assert!(text.contains(r#"keel_requests_total{route="/api/chat",model="other",status="502"}"#), "{text}");
    assert!(!text.contains("metrics-dead"), "{text}");
}

/// Every series dashboards and alerts use is on `/metrics` right after start-up, at zero, for the
/// configured routes, upstreams and targets (alerts on a series that does not exist yet never fire).
#[tokio::test]
async fn every_series_exists_right_after_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("keel.db").display());
    let keel = TestGateway::start(keel_testkit::config_from_toml(&format!(
        "[store]\nurl = \"{store}\"\n[[upstream]]\nname = \"startup-up\"\nurl = \"http://127.0.0.1:9\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"startup-model\"\ntargets = [\"startup-up\"]\n"
    )))
    .await;
    let text = reqwest::get(format!("{}/metrics", keel.url())).await.unwrap().text().await.unwrap();
    let expected = [
        r#"keel_requests_total{route="/api/chat",model="startup-model",status="200"} 0"#,
        r#"keel_request_duration_seconds_count{route="/api/chat",model="startup-model",status="200"} 0"#,
        r#"keel_response_duration_seconds_count{route="/v1/chat/completions",model="startup-model",status="503"} 0"#,
        r#"keel_time_to_first_chunk_seconds_count{route="/api/generate",model="startup-model"} 0"#,
        r#"keel_upstream_requests_total{upstream="startup-up"} 0"#,
        r#"keel_upstream_errors_total{upstream="startup-up",class="refused"} 0"#,
        r#"keel_upstream_errors_total{upstream="startup-up",class="busy"} 0"#,
        r#"keel_breaker_state{target="startup-up:startup-model"} 0"#,
        r#"keel_breaker_transitions_total{target="startup-up:startup-model",from="closed",to="open",reason="consecutive_failures"} 0"#,
        r#"keel_breaker_transitions_total{target="startup-up",from="half_open",to="closed",reason="probe_succeeded"} 0"#,
        r#"keel_retries_total{route="/api/chat"} 0"#,
        r#"keel_fallbacks_total{route="/api/chat"} 0"#,
        r#"keel_stream_continuations_total{route="/api/chat"} 0"#,
        r#"keel_structured_outputs_total{route="/api/chat",model="startup-model",outcome="repaired"} 0"#,
        r#"keel_structured_outputs_total{route="/api/chat",model="startup-model",outcome="canned"} 0"#,
        r#"keel_structured_reasks_total{route="/api/chat"} 0"#,
        r#"keel_repair_fixes_total{strategy="trailing_comma",model="startup-model"} 0"#,
        "keel_sessions_active 0",
        "keel_session_messages_appended_total 0",
        r#"keel_rate_limited_total{limit="requests"} 0"#,
        "keel_client_connections ",
        r#"keel_incidents_open{kind="upstream_down",status="open"} 0"#,
        r#"keel_jobs{status="queued"} 0"#,
        r#"keel_job_runs_total{kind="notify",outcome="failed"} 0"#,
        r#"keel_runbooks_total{source="template",outcome="written"} 0"#,
    ];
    let missing: Vec<&str> = expected.iter().copied().filter(|series| !text.contains(series)).collect();
    assert!(missing.is_empty(), "missing right after start-up: {missing:#?}\n{text}");
}

#[tokio::test]
async fn answers_carry_server_timing_with_keels_and_the_upstreams_time() {
    let stack = Stack::start(keel_mock::Scenario::single_model("timing-model", "hi")).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", stack.keel.url()))
        .json(&json!({"model": "timing-model", "messages": [], "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let timing = response.headers()["server-timing"].to_str().unwrap().to_owned();
    let parts: Vec<(&str, f64)> = timing
        .split(", ")
        .map(|part| {
            let (name, dur) = part.split_once(";dur=").unwrap();
            (name, dur.parse().unwrap())
        })
        .collect();
    assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), ["keel", "upstream"], "{timing}");
    assert!(parts.iter().all(|p| p.1 >= 0.0), "{timing}");
}
