//! Incidents end to end: the only upstream dies → an incident opens within seconds of the
//! breaker opening, a signed webhook is delivered (after the receiver failed twice, with the same
//! `webhook-id`), the runbook (template) names the upstream and shows the checks keel ran; the
//! upstream returns → the incident resolves. Events posted from outside and from Alertmanager
//! open and resolve incidents; a model route writes the runbook when it answers the schema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::time::{Duration, Instant};

use keel_mock::MockServer;
use keel_testkit::webhooks::WebhookReceiver;
use keel_testkit::{TestGateway, config_from_toml_with_env, post_json, scenario};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

async fn get_json(url: &str) -> Value {
    let response = reqwest::get(url).await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.json().await.unwrap()
}

/// Polls `what` until it gives `Some`, for at most `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(start.elapsed() < within, "no {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn keel_config(
    mock_url: &str,
    receiver: &WebhookReceiver,
    runbook_dir: &std::path::Path,
    extra: &str,
) -> keel_gateway::config::Config {
    let toml = format!(
        "[[upstream]]\nname = \"local\"\nurl = \"{mock_url}\"\nhealth_interval = \"200ms\"\n\
         [[route]]\nmodel = \"*\"\ntargets = [\"local\"]\n\
         [breaker]\nfailure_threshold = 2\ncooldown = \"300ms\"\n\
         [incidents]\nrunbook_dir = \"{}\"\n{extra}\n\
         [[notify]]\nurl = \"{}\"\nformat = \"json\"\nsecret_env = \"KEEL_WEBHOOK_SECRET\"\n",
        runbook_dir.display(),
        receiver.url()
    );
    config_from_toml_with_env(&toml, &|name| (name == "KEEL_WEBHOOK_SECRET").then(|| SECRET.to_owned()))
}

async fn incidents(keel: &TestGateway) -> Vec<Value> {
    get_json(&format!("{}/keel/incidents", keel.url())).await["incidents"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_only_upstream_dying_opens_an_incident_with_a_runbook_and_its_return_resolves_it() {
    let mock =
        MockServer::start(([127, 0, 0, 1], 0).into(), scenario("[[model]]\nname = \"llama3.2\"\n")).await.unwrap();
    let addr = mock.addr();
    let receiver = WebhookReceiver::start().await;
    receiver.answer_next(&[(500, None), (503, None)]);
    let dir = tempfile::tempdir().unwrap();
    let keel = TestGateway::start(keel_config(&mock.url(), &receiver, dir.path(), "")).await;
    let url = format!("{}/api/chat", keel.url());
    assert_eq!(post_json(&url, &chat("llama3.2")).await.status(), 200);
    assert!(incidents(&keel).await.is_empty());

    // The upstream dies: requests fail until the breaker opens.
    mock.shutdown().await;
    let opened = eventually("open breaker", Duration::from_secs(10), || async {
        let status = post_json(&url, &chat("llama3.2")).await.status();
        let body = get_json(&format!("{}/keel/status", keel.url())).await;
        (status == 503 && body.to_string().contains("\"open\"")).then(Instant::now)
    })
    .await;
    let incident = eventually("incident", Duration::from_secs(10), || async {
        incidents(&keel).await.into_iter().find(|incident| incident["kind"] == "upstream_down")
    })
    .await;
    assert!(opened.elapsed() < Duration::from_secs(10));
    assert_eq!(incident["status"], "open");
    assert_eq!(incident["upstream"], "local");
    assert!(incident["opened_at"].as_i64().unwrap() > 0);
    let id = incident["id"].as_str().unwrap().to_owned();

    // The runbook, from the template: the four sections, the address, the checks' output.
    let runbook = eventually("runbook", Duration::from_secs(10), || async {
        let response = reqwest::get(format!("{}/keel/incidents/{id}/runbook", keel.url())).await.unwrap();
        if response.status() != 200 {
            return None;
        }
        assert_eq!(response.headers()["content-type"], "text/markdown; charset=utf-8");
        Some(response.text().await.unwrap())
    })
    .await;
    for section in ["## Failure modes", "## Alerts", "## Incident response", "## Health checks"] {
        assert!(runbook.contains(section), "no {section}:\n{runbook}");
    }
    assert!(runbook.contains(&format!("http://{addr}")), "the upstream's address:\n{runbook}");
    assert!(runbook.contains(&format!("curl -sS --max-time 5 http://{addr}/api/version")), "{runbook}");
    assert!(runbook.contains("### Checks keel ran") && runbook.contains("Connection refused"), "{runbook}");
    for placeholder in ["undefined", "null", "[object Object]", "{{", "TODO"] {
        assert!(!runbook.contains(placeholder), "{placeholder:?} in\n{runbook}");
    }
    assert!(runbook.contains("by template"));
    let file = std::fs::read_to_string(dir.path().join(format!("{id}.md"))).unwrap();
    assert_eq!(file, runbook, "the same runbook is written under runbook_dir");

    // The receiver failed twice; the third try got through with the same webhook-id, signed.
    let deliveries = receiver
        .wait_for("opened notification", Duration::from_secs(15), |d| {
            !d.is_empty() && d.iter().any(|d| d.answered == 204)
        })
        .await;
    assert_eq!(deliveries.iter().map(|d| d.answered).collect::<Vec<_>>(), [500, 503, 204]);
    let webhook_id = deliveries[0].header("webhook-id").to_owned();
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    assert!(deliveries.iter().all(|d| d.header("webhook-id") == webhook_id), "one id on every try");
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    for delivery in &deliveries {
        verifier.verify(&delivery.body, &delivery.headers).unwrap();
    }
    let opened_body = deliveries[2].json();
    assert_eq!(opened_body["type"], "incident.opened");
    assert_eq!(opened_body["data"]["incident"]["id"], id.as_str());

    // The upstream returns: the breaker closes and the incident resolves by itself.
    let _mock = MockServer::start(addr, scenario("[[model]]\nname = \"llama3.2\"\n")).await.unwrap();
    eventually("answer after the return", Duration::from_secs(15), || async {
        (post_json(&url, &chat("llama3.2")).await.status() == 200).then_some(())
    })
    .await;
    let resolved = eventually("resolved incident", Duration::from_secs(10), || async {
        incidents(&keel)
            .await
            .into_iter()
            .find(|incident| incident["id"] == id.as_str() && incident["status"] == "resolved")
    })
    .await;
    assert!(resolved["resolved_at"].as_i64().unwrap() >= resolved["opened_at"].as_i64().unwrap());
    let deliveries = receiver
        .wait_for("resolved notification", Duration::from_secs(10), |d| {
            d.iter().filter(|d| d.answered == 204).count() == 2
        })
        .await;
    let accepted: Vec<Value> = deliveries.iter().filter(|d| d.answered == 204).map(|d| d.json()).collect();
    assert_eq!(accepted[1]["type"], "incident.resolved");
    // Exactly one delivery per state change: no more arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.accepted().len(), 2, "{:?}", receiver.accepted().iter().map(|d| d.json()).collect::<Vec<_>>());

    let shown = get_json(&format!("{}/keel/incidents/{id}", keel.url())).await;
    let events: Vec<&str> = shown["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"breaker.opened"), "{events:?}");
    assert_eq!(events.last(), Some(&"breaker.closed"), "{events:?}");
    let jobs = get_json(&format!("{}/keel/jobs", keel.url())).await;
    assert_eq!(jobs["counts"]["failed"], 0, "{jobs}");
    keel.shutdown().await;
}

#[tokio::test]
async fn posted_events_and_alertmanager_open_and_resolve_incidents() {
    let mock =
        MockServer::start(([127, 0, 0, 1], 0).into(), scenario("[[model]]\nname = \"llama3.2\"\n")).await.unwrap();
    let receiver = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keel = TestGateway::start(keel_config(&mock.url(), &receiver, dir.path(), "")).await;
    let events = format!("{}/keel/events", keel.url());

    let response =
        post_json(&events, &json!({"type": "session.timeout", "session_id": "chat-7", "agent": "triage"})).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 1);
    let id = body["incidents"][0].as_str().unwrap().to_owned();
    let shown = get_json(&format!("{}/keel/incidents/{id}", keel.url())).await;
    assert_eq!(
        (shown["incident"]["kind"].as_str(), shown["incident"]["status"].as_str()),
        (Some("session_timeout"), Some("open"))
    );

    // The same session again joins the incident; unknown types and fields are refused.
    let again: Value =
        post_json(&events, &json!({"type": "session.timeout", "session_id": "chat-7"})).await.json().await.unwrap();
    assert_eq!(again["incidents"][0], id.as_str());
    let unknown = post_json(&events, &json!({"type": "disk.full"})).await;
    assert_eq!(unknown.status(), 400);
    let message = unknown.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("accepted types: session.timeout"), "{message}");
    assert_eq!(post_json(&events, &json!({"type": "session.timeout", "session": "x"})).await.status(), 400);

    // Alertmanager: firing opens by its fingerprint, resolved resolves.
    let alert = |status: &str| {
        json!({"version": "4", "groupKey": "{}", "truncatedAlerts": 0, "status": status, "receiver": "keel",
               "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
               "alerts": [{"status": status, "labels": {"alertname": "DiskFull"}, "annotations": {"summary": "Disk almost full"},
                           "startsAt": "2026-12-04T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom", "fingerprint": "d15c"}]})
    };
    let am = format!("{}/keel/events/alertmanager", keel.url());
    let firing: Value = post_json(&am, &alert("firing")).await.json().await.unwrap();
    let alert_id = firing["incidents"][0].as_str().unwrap().to_owned();
    assert_eq!(post_json(&am, &alert("resolved")).await.status(), 202);
    let resolved = get_json(&format!("{}/keel/incidents/{alert_id}", keel.url())).await;
    assert_eq!(resolved["incident"]["status"], "resolved");
    assert_eq!(resolved["incident"]["title"], "Disk almost full");
    let open = get_json(&format!("{}/keel/incidents?status=open", keel.url())).await;
    assert_eq!(open["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(reqwest::get(format!("{}/keel/incidents?status=nope", keel.url())).await.unwrap().status(), 400);

    // Resolved by hand, with the fix remembered for the next incident of that fingerprint.
    let client = reqwest::Client::new();
    let done = client
        .post(format!("{}/keel/incidents/{id}/resolve", keel.url()))
        .json(&json!({"fixed_by": "restarted the triage agent", "by": "sam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let next: Value =
        post_json(&events, &json!({"type": "session.timeout", "session_id": "chat-7"})).await.json().await.unwrap();
    let next_id = next["incidents"][0].as_str().unwrap().to_owned();
    assert_ne!(next_id, id, "a resolved incident is not reopened: a new one opens");
    let runbook = eventually("runbook", Duration::from_secs(10), || async {
        let response = reqwest::get(format!("{}/keel/incidents/{next_id}/runbook", keel.url())).await.unwrap();
        (response.status() == 200).then_some(response)
    })
    .await
    .text()
    .await
    .unwrap();
    assert!(runbook.contains("**Fixed before**") && runbook.contains("restarted the triage agent"), "{runbook}");
    assert_eq!(reqwest::get(format!("{}/keel/incidents/inc_nope", keel.url())).await.unwrap().status(), 404);
    keel.shutdown().await;
}

const RUNBOOK_ANSWER: &str = r#"{"what_broke": "The Ollama server stopped answering.", "affected": "Every agent.", "keel_did": "Opened the breaker.", "todo": ["Restart Ollama with systemctl."], "cause": {"known": false, "text": "Stopped or hung.", "tell_apart": "curl the version endpoint"}, "failure_modes": [{"name": "Stopped", "signs": "refused", "fix": "restart"}], "alerts": [{"name": "KeelBreakerOpen", "when": "keel_breaker_state == 2"}], "response": [{"action": "Restart it", "command": "sudo systemctl restart ollama"}], "health_checks": [{"command": "curl http://127.0.0.1:11434/api/version", "expect": "a version"}]}"#;

/// Opens an incident by posting an event and returns its runbook once written by `source`.
async fn runbook_by(keel: &TestGateway, source: &str) -> String {
    let events = format!("{}/keel/events", keel.url());
    let body: Value =
        post_json(&events, &json!({"type": "upstream.down", "upstream": "local"})).await.json().await.unwrap();
    let id = body["incidents"][0].as_str().unwrap().to_owned();
    eventually(&format!("runbook by {source}"), Duration::from_secs(15), || async {
        let response = reqwest::get(format!("{}/keel/incidents/{id}/runbook", keel.url())).await.unwrap();
        let text = if response.status() == 200 { response.text().await.unwrap() } else { return None };
        text.contains(&format!("by {source}")).then_some(text)
    })
    .await
}

#[tokio::test]
async fn a_model_that_answers_the_schema_writes_the_runbook() {
    let writer = format!("[[model]]\nname = \"writer\"\njson_reply = '{RUNBOOK_ANSWER}'\n");
    let mock = MockServer::start(([127, 0, 0, 1], 0).into(), scenario(&writer)).await.unwrap();
    let receiver = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keel = TestGateway::start(keel_config(&mock.url(), &receiver, dir.path(), "model = \"writer\"")).await;
    let runbook = runbook_by(&keel, "model:writer").await;
    assert!(runbook.contains("The Ollama server stopped answering."), "{runbook}");
    assert!(runbook.contains("**Cause unknown.** Stopped or hung."), "{runbook}");
    assert!(runbook.contains("### Checks keel ran"), "the evidence is keel's, not the model's:\n{runbook}");
    // The model was asked once, through the guard, with the runbook schema as `format`.
    let asked: Vec<Value> = mock
        .requests()
        .iter()
        .filter(|r| r.path == "/api/chat")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert!(asked.iter().any(|body| body["format"]["required"].as_array().is_some_and(|r| r.len() == 9)), "{asked:?}");
    keel.shutdown().await;
}

#[tokio::test]
async fn a_model_that_answers_garbage_leaves_the_template_standing() {
    let mock = MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        scenario("[[model]]\nname = \"writer\"\njson_reply = 'no idea, sorry'\n"),
    )
    .await
    .unwrap();
    let receiver = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keel = TestGateway::start(keel_config(&mock.url(), &receiver, dir.path(), "model = \"writer\"")).await;
    let runbook = runbook_by(&keel, "template").await;
    assert!(runbook.contains("## Incident response"));
    // The model was asked and refused; the runbook job waits to ask again, the template stands.
    eventually("a refused model runbook", Duration::from_secs(10), || async {
        let jobs = get_json(&format!("{}/keel/jobs?status=queued", keel.url())).await;
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|job| job["kind"] == "runbook" && job["last_error"].is_string())
            .cloned()
    })
    .await;
    keel.shutdown().await;
}

#[tokio::test]
async fn structured_answers_that_keep_failing_open_an_incident_that_ends_when_quiet() {
    let mock = MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        scenario("[[model]]\nname = \"tiny\"\njson_reply = 'I cannot do JSON'\n"),
    )
    .await
    .unwrap();
    let receiver = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keel = TestGateway::start(keel_config(
        &mock.url(),
        &receiver,
        dir.path(),
        "burst_threshold = 3\nburst_quiet = \"1s\"",
    ))
    .await;
    let url = format!("{}/api/chat", keel.url());
    let ask = json!({"model": "tiny", "messages": [{"role": "user", "content": "a ticket"}], "stream": false,
                     "format": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}});
    for _ in 0..2 {
        assert_eq!(post_json(&url, &ask).await.status(), 422);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(incidents(&keel).await.is_empty(), "two failures are not a burst");
    assert_eq!(post_json(&url, &ask).await.status(), 422);
    let incident = eventually("structured output incident", Duration::from_secs(10), || async {
        incidents(&keel).await.into_iter().find(|incident| incident["kind"] == "structured_output")
    })
    .await;
    assert_eq!(incident["model"], "tiny");
    assert_eq!(incident["status"], "open");
    let id = incident["id"].as_str().unwrap().to_owned();
    eventually("the burst to end", Duration::from_secs(10), || async {
        let shown = get_json(&format!("{}/keel/incidents/{id}", keel.url())).await;
        (shown["incident"]["status"] == "resolved").then_some(())
    })
    .await;
    let runbook = eventually("runbook", Duration::from_secs(10), || async {
        let response = reqwest::get(format!("{}/keel/incidents/{id}/runbook", keel.url())).await.unwrap();
        (response.status() == 200).then_some(response)
    })
    .await
    .text()
    .await
    .unwrap();
    assert!(runbook.contains("Structured answers from tiny could not be made valid"), "{runbook}");
    keel.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_gone_receiver_is_not_called_again() {
    let mock =
        MockServer::start(([127, 0, 0, 1], 0).into(), scenario("[[model]]\nname = \"llama3.2\"\n")).await.unwrap();
    let busy = WebhookReceiver::start().await;
    busy.answer_next(&[(429, Some(1))]);
    let gone = WebhookReceiver::start().await;
    gone.answer_next(&[(410, None)]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = keel_config(&mock.url(), &busy, dir.path(), "");
    let second =
        config_from_toml_with_env(&format!("[[notify]]\nurl = \"{}\"\nformat = \"slack\"\n", gone.url()), &|_| None);
    config.incidents.notify.extend(second.incidents.notify);
    let keel = TestGateway::start(config).await;
    let events = format!("{}/keel/events", keel.url());
    let started = Instant::now();
    let body: Value =
        post_json(&events, &json!({"type": "upstream.down", "upstream": "local"})).await.json().await.unwrap();
    let id = body["incidents"][0].as_str().unwrap().to_owned();

    let busy_got =
        busy.wait_for("delivery after 429", Duration::from_secs(10), |d| d.iter().any(|d| d.answered == 204)).await;
    assert_eq!(busy_got.iter().map(|d| d.answered).collect::<Vec<_>>(), [429, 204]);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was waited out");
    assert_eq!(busy_got[0].header("webhook-id"), busy_got[1].header("webhook-id"));
    let gone_got = gone.wait_for("the 410", Duration::from_secs(10), |d| !d.is_empty()).await;
    assert!(gone_got[0].json()["text"].as_str().unwrap().starts_with("[keel] "), "a Slack body");
    eventually("the disabled receiver on the timeline", Duration::from_secs(10), || async {
        let shown = get_json(&format!("{}/keel/incidents/{id}", keel.url())).await;
        shown["events"].as_array().unwrap().iter().find(|e| e["event"] == "notify.endpoint_disabled").cloned()
    })
    .await;

    // The next state change reaches the busy receiver only.
    post_json(&events, &json!({"type": "upstream.up", "upstream": "local"})).await;
    busy.wait_for("resolved", Duration::from_secs(10), |d| d.iter().filter(|d| d.answered == 204).count() == 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(gone.deliveries().len(), 1, "410 Gone: no more deliveries");
    keel.shutdown().await;
}

#[tokio::test]
async fn an_https_receiver_is_trusted_through_its_ca_file_and_refused_without_it() {
    let mock =
        MockServer::start(([127, 0, 0, 1], 0).into(), scenario("[[model]]\nname = \"llama3.2\"\n")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trusted = WebhookReceiver::start_tls(&dir.path().join("trusted-ca.pem")).await;
    let stranger = WebhookReceiver::start_tls(&dir.path().join("stranger-ca.pem")).await;
    let toml = format!(
        "[[upstream]]\nname = \"local\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [incidents]\nrunbook_dir = \"\"\n\
         [[notify]]\nurl = \"{}\"\nsecret_env = \"KEEL_WEBHOOK_SECRET\"\nca_file = \"{}\"\n\
         [[notify]]\nurl = \"{}\"\n",
        mock.url(),
        trusted.url(),
        dir.path().join("trusted-ca.pem").display(),
        stranger.url()
    );
    let config = config_from_toml_with_env(&toml, &|name| (name == "KEEL_WEBHOOK_SECRET").then(|| SECRET.to_owned()));
    let keel = TestGateway::start(config).await;
    post_json(&format!("{}/keel/events", keel.url()), &json!({"type": "upstream.down", "upstream": "local"})).await;

    let got = trusted.wait_for("an https delivery", Duration::from_secs(10), |d| !d.is_empty()).await;
    assert!(trusted.url().starts_with("https://localhost:"));
    standardwebhooks::Webhook::new(SECRET).unwrap().verify(&got[0].body, &got[0].headers).unwrap();
    assert_eq!(got[0].json()["type"], "incident.opened");
    // The other receiver's certificate is from a CA keel was not told to trust: never delivered,
    // and the job says why.
    let why = eventually("the refused TLS handshake", Duration::from_secs(10), || async {
        let jobs = get_json(&format!("{}/keel/jobs", keel.url())).await;
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|job| job["last_error"].as_str().filter(|e| e.contains("TLS")).map(str::to_owned))
    })
    .await;
    assert!(why.contains("certificate"), "{why}");
    assert!(stranger.deliveries().is_empty());
    keel.shutdown().await;
}
