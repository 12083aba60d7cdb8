//! Traces end to end: keel in front of fake Ollamas, sending spans to a local OTLP/HTTP receiver
//! that decodes what it gets. One request is one trace continuing the client's `traceparent`,
//! with a span per stage and GenAI spans for the model calls; the upstream gets the call's own
//! `traceparent`; Langfuse gets its path, auth and header; a collector that is down or hangs
//! costs requests nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::collections::HashMap;
use std::time::Duration;

use keel_mock::MockServer;
use keel_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use keel_testkit::{TestGateway, config_from_toml_with_env, post_json, scenario};
use serde_json::{Value, json};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

async fn mock(toml: &str) -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), scenario(toml)).await.unwrap()
}

fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

/// keel with route `m` → `primary`, `backup`, the given variables as its environment.
async fn keel(primary: &str, backup: &str, extra: &str, env: &[(&str, String)]) -> TestGateway {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let toml = format!(
        "[[upstream]]\nname = \"primary\"\nurl = \"{primary}\"\n[[upstream]]\nname = \"backup\"\nurl = \"{backup}\"\n\
         [[route]]\nmodel = \"m\"\ntargets = [\"primary\", \"backup\"]\n{extra}"
    );
    TestGateway::start(config_from_toml_with_env(&toml, &|name| env.get(name).cloned())).await
}

/// The environment that sends traces to `receiver` over OTLP, in batches every 100 ms.
fn otlp_env(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url()), ("OTEL_BSP_SCHEDULE_DELAY", "100".into())]
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"label": {"enum": ["bug", "billing"]}, "confidence": {"type": "number"}},
        "required": ["label", "confidence"]
    })
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one span named {name:?} expected; got {spans:#?}");
    found[0]
}

#[tokio::test]
async fn a_fallback_and_a_repair_arrive_as_one_trace_with_genai_spans() {
    let receiver = OtlpReceiver::start().await;
    let backup =
        mock("[[model]]\nname = \"m\"\njson_replies = [\"Sure! {'label': 'bug', confidence: '0.9',}\"]\n").await;
    let mut env = otlp_env(&receiver);
    env.push(("AGENT_KEY", "s3cret-agent-key".into()));
    let auth = "[auth]\nkeys = [{ name = \"agent\", key_env = \"AGENT_KEY\", scopes = [\"inference\"] }]\n";
    let keel = keel(&dead_url(), &backup.url(), auth, &env).await;

    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", keel.url()))
        .bearer_auth("s3cret-agent-key")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "classify"}], "format": schema(), "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(response.headers()["x-keel-repair"], "none");
    // The answer names the trace (W3C `traceresponse`): the client's trace, keel's root span.
    let traceresponse = response.headers()["traceresponse"].to_str().unwrap().to_owned();
    assert!(traceresponse.starts_with(&format!("00-{CLIENT_TRACE}-")), "{traceresponse}");

    let spans =
        receiver.wait_for("the request's root span", |spans| spans.iter().any(|s| s.name == "POST /api/chat")).await;
    // One trace: the client's.
    assert!(spans.iter().all(|s| s.trace_id == CLIENT_TRACE), "{spans:#?}");
    assert!(spans.iter().all(|s| s.service == "keel"), "{spans:#?}");
    let root = one(&spans, "POST /api/chat");
    assert_eq!(root.parent_span_id, CLIENT_SPAN, "the root continues the client's span");
    assert_eq!(traceresponse, format!("00-{CLIENT_TRACE}-{}-01", root.span_id));
    assert_eq!(root.kind, 2, "server");
    assert_eq!(root.attr("user.id"), Some("agent"));
    assert_eq!(root.attr("http.response.status_code"), Some("200"));
    let auth = one(&spans, "keel.auth");
    assert_eq!(auth.parent_span_id, root.span_id);
    let guard = one(&spans, "keel.guard");
    assert_eq!(guard.parent_span_id, root.span_id);

    // Two model calls under the guard: the dead primary (failed), the backup (answered).
    let calls = named(&spans, "chat m");
    assert_eq!(calls.len(), 2, "{spans:#?}");
    for call in &calls {
        assert_eq!(call.kind, 3, "client");
        assert_eq!(call.parent_span_id, guard.span_id);
        assert_eq!(call.attr("gen_ai.operation.name"), Some("chat"));
        assert_eq!(call.attr("gen_ai.provider.name"), Some("ollama"));
        assert_eq!(call.attr("gen_ai.request.model"), Some("m"));
        assert_eq!(call.attr("server.address"), Some("127.0.0.1"));
        assert!(call.attr("gen_ai.input.messages").is_none(), "no content unless [tracing] content = true");
    }
    let failed = calls.iter().find(|c| c.attr("keel.upstream") == Some("primary")).unwrap();
    assert_eq!(failed.status, 2, "error");
    assert_eq!(failed.attr("error.type"), Some("refused"));
    let answered = calls.iter().find(|c| c.attr("keel.upstream") == Some("backup")).unwrap();
    assert_eq!(answered.status, 0, "{answered:#?}");
    assert_eq!(answered.attr("gen_ai.response.model"), Some("m"));
    assert!(answered.attr("gen_ai.usage.input_tokens").unwrap().parse::<u64>().unwrap() > 0, "{answered:#?}");
    assert!(answered.attr("gen_ai.usage.output_tokens").unwrap().parse::<u64>().unwrap() > 0, "{answered:#?}");
    assert!(answered.attr("gen_ai.response.time_to_first_chunk").is_some(), "{answered:#?}");
    assert_eq!(answered.attr("server.port"), Some(backup.url().rsplit(':').next().unwrap()));

    let repair = one(&spans, "keel.repair");
    assert_eq!(repair.parent_span_id, guard.span_id);
    assert!(repair.attr("keel.repair").unwrap().contains("fixed-syntax"), "{repair:#?}");

    // The backup was called with the answering call's own span as parent.
    let chat = backup.requests().into_iter().find(|r| r.path == "/api/chat").unwrap();
    assert_eq!(chat.header("traceparent"), Some(format!("00-{CLIENT_TRACE}-{}-01", answered.span_id).as_str()));
}

#[tokio::test]
async fn langfuse_gets_its_path_auth_header_and_with_content_the_messages() {
    let receiver = OtlpReceiver::start().await;
    let up = mock("[[model]]\nname = \"m\"\nreply = \"Paris\"\n").await;
    let env = vec![
        ("LANGFUSE_PUBLIC_KEY", "pk-lf-test".to_owned()),
        ("LANGFUSE_SECRET_KEY", "sk-lf-test".to_owned()),
        ("LANGFUSE_HOST", receiver.url()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let keel = keel(&up.url(), &up.url(), "[tracing]\ncontent = true\n", &env).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "Capital of France?"}]});
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", keel.url()))
        .header("x-keel-session", "trace-session-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let streamed = response.text().await.unwrap();
    assert!(streamed.contains("Paris"), "{streamed}");

    let spans = receiver.wait_for("the model call", |spans| spans.iter().any(|s| s.name == "chat m")).await;
    let exports = receiver.exports();
    for export in &exports {
        assert_eq!(export.path, "/api/public/otel/v1/traces");
        // base64("pk-lf-test:sk-lf-test")
        assert_eq!(export.headers["authorization"], "Basic cGstbGYtdGVzdDpzay1sZi10ZXN0");
        assert_eq!(export.headers["x-langfuse-ingestion-version"], "4");
    }
    let call = one(&spans, "chat m");
    assert_eq!(call.attr("gen_ai.conversation.id"), Some("trace-session-1"));
    let input: Value = serde_json::from_str(call.attr("gen_ai.input.messages").unwrap()).unwrap();
    assert_eq!(input.as_array().unwrap().last().unwrap()["parts"][0]["content"], "Capital of France?");
    let output: Value = serde_json::from_str(call.attr("gen_ai.output.messages").unwrap()).unwrap();
    assert_eq!(output[0]["role"], "assistant");
    assert!(output[0]["parts"][0]["content"].as_str().unwrap().contains("Paris"), "{output}");
    let session = one(&spans, "keel.session");
    assert_eq!(call.parent_span_id, session.span_id);
    let root = spans.iter().find(|s| s.name == "POST /api/chat");
    if let Some(root) = root {
        assert_eq!(root.attr("gen_ai.conversation.id"), Some("trace-session-1"));
    }
}

#[tokio::test]
async fn without_an_exporter_the_clients_traceparent_goes_upstream_unchanged() {
    let up = mock("[[model]]\nname = \"m\"\nreply = \"hi\"\n").await;
    let keel = keel(&up.url(), &up.url(), "", &[]).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", keel.url()))
        .header("traceparent", &traceparent)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let chat = up.requests().into_iter().find(|r| r.path == "/api/chat").unwrap();
    assert_eq!(chat.header("traceparent"), Some(traceparent.as_str()));
}

#[tokio::test]
async fn a_stream_continued_on_the_next_target_has_a_continuation_span() {
    let receiver = OtlpReceiver::start().await;
    let primary = mock(
        "[[model]]\nname = \"m\"\nreply = \"Once upon a time there was a proxy\"\n[[model.fault]]\nkind = \"cut\"\nafter_chunks = 3\n",
    )
    .await;
    let backup = mock("[[model]]\nname = \"m\"\nreply = \" that never dropped a story.\"\n").await;
    let keel = keel(&primary.url(), &backup.url(), "", &otlp_env(&receiver)).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "Tell me a story"}]});
    let text = keel_testkit::post_json(&format!("{}/api/chat", keel.url()), &body).await.text().await.unwrap();
    assert!(text.contains("\" dropped\"") && text.contains("\"done\":true"), "{text}");
    let spans = receiver
        .wait_for("the continuation and the root", |spans| {
            spans.iter().any(|s| s.name == "keel.continuation") && spans.iter().any(|s| s.name == "POST /api/chat")
        })
        .await;
    let root = one(&spans, "POST /api/chat");
    let continuation = one(&spans, "keel.continuation");
    assert_eq!(continuation.parent_span_id, root.span_id);
    let calls = named(&spans, "chat m");
    assert_eq!(calls.len(), 2, "{spans:#?}");
    let broken = calls.iter().find(|c| c.attr("keel.upstream") == Some("primary")).unwrap();
    assert_eq!(broken.status, 2);
    assert_eq!(broken.parent_span_id, root.span_id);
    let continued = calls.iter().find(|c| c.attr("keel.upstream") == Some("backup")).unwrap();
    assert_eq!(continued.parent_span_id, continuation.span_id);
}

/// A collector that accepts connections and never answers.
async fn hanging_collector() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

fn dropped(reason: &str) -> f64 {
    let text = keel_telemetry::prometheus().render();
    text.lines()
        .filter(|l| l.starts_with("keel_trace_spans_dropped_total{") && l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_collector_that_hangs_or_fails_costs_requests_nothing_and_spans_are_counted_as_dropped() {
    let (hanging, _task) = hanging_collector().await;
    let up = mock("[[model]]\nname = \"m\"\nreply = \"hi\"\n").await;
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", hanging),
        ("OTEL_BSP_SCHEDULE_DELAY", "10".to_owned()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "4".to_owned()),
        ("OTEL_BSP_EXPORT_TIMEOUT", "60000".to_owned()),
    ];
    let keel = keel(&up.url(), &up.url(), "", &env).await;
    let before = dropped("queue_full");
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false});
        let response = keel_testkit::post_json(&format!("{}/api/chat", keel.url()), &body).await;
        assert_eq!(response.status(), 200);
    }
    // The export waits on the silent collector; requests do not wait for it.
    assert!(started.elapsed() < Duration::from_secs(20), "requests waited for the collector: {:?}", started.elapsed());
    assert!(dropped("queue_full") > before, "a full queue drops spans and counts them");

    // A collector that refuses: the batch is dropped and counted, requests go on.
    let failing = OtlpReceiver::start().await;
    failing.set_failing(true);
    let env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", failing.url()), ("OTEL_BSP_SCHEDULE_DELAY", "10".to_owned())];
    let keel = keel_inner(&up, &env).await;
    let before = dropped("export_failed");
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    assert_eq!(keel_testkit::post_json(&format!("{}/api/chat", keel.url()), &body).await.status(), 200);
    for _ in 0..100 {
        if dropped("export_failed") > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a refused export was not counted in keel_trace_spans_dropped_total");
}

async fn keel_inner(up: &MockServer, env: &[(&str, String)]) -> TestGateway {
    keel(&up.url(), &up.url(), "", env).await
}

#[tokio::test]
async fn a_rate_limited_request_has_a_failed_limit_span_and_a_429_root() {
    let receiver = OtlpReceiver::start().await;
    let up = mock("[[model]]\nname = \"m\"\nreply = \"hi\"\n").await;
    let keel = keel(&up.url(), &up.url(), "[limits]\nrequests_per_minute = 1\n", &otlp_env(&receiver)).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let first = keel_testkit::post_json(&format!("{}/api/chat", keel.url()), &body).await;
    assert_eq!(first.status(), 200);
    let second = keel_testkit::post_json(&format!("{}/api/chat", keel.url()), &body).await;
    assert_eq!(second.status(), 429);
    let refused_trace = second.headers()["traceresponse"].to_str().unwrap().split('-').nth(1).unwrap().to_owned();
    let spans = receiver
        .wait_for("the refused request's root", |spans| {
            spans.iter().any(|s| s.trace_id == refused_trace && s.name == "POST /api/chat")
        })
        .await;
    let in_trace: Vec<ReceivedSpan> = spans.into_iter().filter(|s| s.trace_id == refused_trace).collect();
    let root = one(&in_trace, "POST /api/chat");
    assert_eq!(root.attr("http.response.status_code"), Some("429"));
    let limit = one(&in_trace, "keel.limit");
    assert_eq!(limit.status, 2);
    assert_eq!(limit.attr("error.type"), Some("rate_limited"));
    assert!(named(&in_trace, "chat m").is_empty(), "a refused request calls no model");
    assert!(named(&in_trace, "keel.auth").is_empty(), "no key check without keys");
}

#[tokio::test]
async fn traces_reach_an_https_collector_whose_ca_is_named_by_the_standard_variable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("collector-ca.pem");
    let receiver = OtlpReceiver::start_tls(&ca).await;
    assert!(receiver.url().starts_with("https://"));
    let up = mock("[[model]]\nname = \"m\"\nreply = \"hi\"\n").await;
    let mut env = otlp_env(&receiver);
    env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.display().to_string()));
    let keel = keel(&up.url(), &up.url(), "", &env).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    assert_eq!(post_json(&format!("{}/api/chat", keel.url()), &body).await.status(), 200);
    let spans = receiver.wait_for("a span over https", |spans| spans.iter().any(|s| s.name == "chat m")).await;
    assert_eq!(one(&spans, "chat m").attr("gen_ai.request.model"), Some("m"));
    assert_eq!(receiver.exports()[0].path, "/v1/traces");
}
