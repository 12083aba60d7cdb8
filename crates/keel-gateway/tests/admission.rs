#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! Admission control (`[admission]`): at most `max_concurrent` requests per `upstream:model` reach
//! the server, the rest wait in a bounded queue (answers that waited carry
//! `X-Keel-Queue-Wait-Ms`), a full queue, a wait past `max_wait` or a deadline that cannot be met
//! is shed with 503 + `Retry-After` in the endpoint's dialect (or goes to the route's next target,
//! held against no breaker), a client that leaves the queue frees its place, priorities come from
//! the key and `X-Keel-Priority` (which may lower a key's priority, never raise it), a batch key
//! with 20 requests in flight does not hold up an interactive key, and `/keel/status` and
//! `/metrics` show the queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keel_testkit::{Stack, TestGateway};
use serde_json::{Value, json};

/// A mock whose `llama3.2` answers after `latency`, and keel in front with `[admission]` set to
/// `admission` (TOML lines) plus `extra` sections.
async fn stack(latency: &str, admission: &str, extra: &str) -> Stack {
    let scenario = keel_testkit::scenario(&format!(
        "[[model]]\nname = \"llama3.2\"\nreply = \"Hello from keel-mock.\"\nlatency = \"{latency}\"\n"
    ));
    Stack::start_with(scenario, "", &format!("[admission]\n{admission}\n{extra}")).await
}

fn chat() -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

/// POSTs `body` with `headers`; the request is built at once, so the future borrows nothing (it
/// can be spawned).
fn post(
    client: &reqwest::Client,
    url: String,
    body: &Value,
    headers: &[(&str, &str)],
) -> impl Future<Output = reqwest::Response> + Send + 'static {
    let mut request = client.post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let sent = request.send();
    async move { sent.await.unwrap() }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// `X-Keel-Queue-Wait-Ms` of an answer: `None` for one admitted at once.
fn queue_wait(response: &reqwest::Response) -> Option<u64> {
    header(response, "x-keel-queue-wait-ms").map(|v| v.parse().unwrap())
}

async fn status(client: &reqwest::Client, keel: &TestGateway) -> Value {
    client.get(format!("{}/keel/status", keel.url())).send().await.unwrap().json().await.unwrap()
}

/// Polls `/keel/status` until `reached` holds for it (at most 10 s).
async fn until_status(client: &reqwest::Client, keel: &TestGateway, reached: impl Fn(&Value) -> bool) {
    let started = Instant::now();
    loop {
        let status = status(client, keel).await;
        if reached(&status) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never reached: {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `/keel/status`'s admission buckets.
fn buckets(status: &Value) -> &[Value] {
    status["admission"]["buckets"].as_array().unwrap()
}

/// The sum of `field` (`running`, `queued`) over every admission bucket.
fn bucket_total(status: &Value, field: &str) -> u64 {
    buckets(status).iter().map(|b| b[field].as_u64().unwrap()).sum()
}

/// Polls `/keel/status` until the bucket `default:llama3.2` shows `running` and `queued`.
async fn until_bucket(client: &reqwest::Client, keel: &TestGateway, running: u64, queued: u64) {
    until_status(client, keel, |status| {
        let bucket = buckets(status).iter().find(|b| b["upstream"] == "default" && b["model"] == "llama3.2");
        bucket.is_some_and(|b| b["running"] == running && b["queued"] == queued)
    })
    .await;
}

#[tokio::test]
async fn at_most_max_concurrent_reach_the_server_and_the_rest_wait_their_turn() {
    let stack = stack("300ms", "max_concurrent = 2", "").await;
    let client = reqwest::Client::new();
    // Watch the mock: requests it received and has not finished.
    let done = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (done, most, mock) = (Arc::clone(&done), Arc::clone(&most), stack.mock.url());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !done.load(Ordering::Relaxed) {
                let stats: Value = client.get(format!("{mock}/mock/stats")).send().await.unwrap().json().await.unwrap();
                let in_flight = stats["requests"].as_u64().unwrap()
                    - stats["completed"].as_u64().unwrap()
                    - stats["cancelled"].as_u64().unwrap();
                most.fetch_max(in_flight, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let url = format!("{}/api/chat", stack.keel.url());
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let response = post(&client, url, &chat(), &[]).await;
                let waited = queue_wait(&response);
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["message"]["content"], "Hello from keel-mock.");
                waited
            })
        })
        .collect();
    let mut waits = Vec::new();
    for request in requests {
        waits.push(request.await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    assert_eq!(most.load(Ordering::Relaxed), 2, "the mock saw more (or fewer) than 2 at once");
    assert_eq!(stack.mock.stats().requests, 6);
    // Two went straight through; four waited, the last pair for two service times.
    let queued: Vec<u64> = waits.iter().flatten().copied().collect();
    assert_eq!(queued.len(), 4, "{waits:?}");
    assert!(queued.iter().any(|&ms| ms >= 300), "the last ones wait for the first to finish: {waits:?}");
    let status = status(&client, &stack.keel).await;
    let counters = &status["admission"]["counters"];
    assert_eq!((counters["admitted"].as_u64(), counters["admitted_after_queueing"].as_u64()), (Some(6), Some(4)));
    assert_eq!(counters["shed_total"], 0);
}

#[tokio::test]
async fn a_full_queue_is_shed_with_503_and_retry_after_in_each_dialect() {
    let stack = stack("1s", "max_concurrent = 1\nmax_queue = 1", "").await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", stack.keel.url());
    let first = tokio::spawn(post(&client, url("/api/chat"), &chat(), &[]));
    until_bucket(&client, &stack.keel, 1, 0).await;
    let second = tokio::spawn(post(&client, url("/api/chat"), &chat(), &[]));
    until_bucket(&client, &stack.keel, 1, 1).await;

    let shed = post(&client, url("/api/chat"), &chat(), &[]).await;
    assert_eq!(shed.status(), 503);
    let retry_after: u64 = header(&shed, "retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let body: Value = shed.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("default:llama3.2") && message.contains("max_queue"), "{message}");
    assert!(message.contains("max_concurrent") && message.contains("add an upstream"), "{message}");

    let openai = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]});
    let shed = post(&client, url("/v1/chat/completions"), &openai, &[]).await;
    assert_eq!(shed.status(), 503);
    assert!(header(&shed, "retry-after").is_some());
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("max_queue"), "{body}");

    // The two in hand are served; nothing reached the mock for the shed ones.
    assert_eq!(first.await.unwrap().status(), 200);
    let second = second.await.unwrap();
    assert_eq!(second.status(), 200);
    assert!(queue_wait(&second).is_some());
    assert_eq!(stack.mock.stats().requests, 2);
    // Shedding is not the server's fault: its breaker saw two successes and no failure.
    let status = status(&client, &stack.keel).await;
    assert_eq!(status["admission"]["counters"]["shed"]["queue_full"], 2, "{status}");
    let target = status["targets"].as_array().unwrap().iter().find(|t| t["name"] == "default:llama3.2").unwrap();
    assert_eq!((&target["breaker"], &target["failures"]), (&json!("closed"), &json!(0)), "{target}");
}

#[tokio::test]
async fn a_wait_past_max_wait_or_the_deadline_is_shed_with_503() {
    let stack = stack("1500ms", "max_concurrent = 1\nmax_wait = \"300ms\"", "").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    let first = tokio::spawn(post(&client, url.clone(), &chat(), &[]));
    until_bucket(&client, &stack.keel, 1, 0).await;

    let started = Instant::now();
    let shed = post(&client, url.clone(), &chat(), &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "shed before max_wait: {:?}", started.elapsed());
    assert_eq!(shed.status(), 503);
    assert!(header(&shed, "retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(queue_wait(&shed).is_some_and(|ms| ms >= 300), "the 503 says how long it waited");
    let message = shed.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("max_wait") && message.contains("default:llama3.2"), "{message}");

    // A deadline shorter than max_wait ends the wait sooner (or sheds at once when the queue
    // ahead is known to need longer).
    let shed = post(&client, url, &chat(), &[("x-keel-deadline", "100ms")]).await;
    assert_eq!(shed.status(), 503);
    let message = shed.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("deadline"), "{message}");

    assert_eq!(first.await.unwrap().status(), 200);
    assert_eq!(stack.mock.stats().requests, 1);
    let status = status(&client, &stack.keel).await;
    let shed = &status["admission"]["counters"]["shed"];
    assert_eq!(shed["wait_too_long"], 1, "{status}");
    assert_eq!(shed["deadline_passed"].as_u64().unwrap() + shed["deadline_unmeetable"].as_u64().unwrap(), 1);
}

#[tokio::test]
async fn a_client_that_leaves_the_queue_frees_its_place() {
    let stack = stack("1500ms", "max_concurrent = 1\nmax_queue = 1", "").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    let first = tokio::spawn(post(&client, url.clone(), &chat(), &[]));
    until_bucket(&client, &stack.keel, 1, 0).await;
    // This one queues, then its client gives up (the connection closes).
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    assert!(impatient.post(url.clone()).json(&chat()).send().await.is_err());
    until_bucket(&client, &stack.keel, 1, 0).await;
    // Its place is free: the next one queues instead of being shed.
    let next = post(&client, url, &chat(), &[]).await;
    assert_eq!(next.status(), 200);
    assert!(queue_wait(&next).is_some());
    assert_eq!(first.await.unwrap().status(), 200);
    assert_eq!(stack.mock.stats().requests, 2, "the one that left never reached the server");
    let status = status(&client, &stack.keel).await;
    assert_eq!(status["admission"]["counters"]["cancelled"], 1, "{status}");
    assert_eq!(status["admission"]["counters"]["shed_total"], 0, "{status}");
}

#[tokio::test]
async fn a_streamed_answer_holds_its_slot_until_the_stream_ends_and_its_body_is_untouched() {
    let scenario = keel_testkit::scenario(
        "[[model]]\nname = \"llama3.2\"\nreply = \"one two three four five six\"\ntoken_delay = \"100ms\"\n",
    );
    let stack = Stack::start_with(scenario, "", "[admission]\nmax_concurrent = 1\n").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    let streamed = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let first = post(&client, url.clone(), &streamed, &[]).await;
    assert_eq!(first.status(), 200);
    // The first stream has its head; its body is still coming. The second waits for all of it.
    let second = tokio::spawn(post(&client, url, &streamed, &[]));
    let first_body = first.text().await.unwrap();
    let second = second.await.unwrap();
    let waited = queue_wait(&second).expect("the second request waited for the first stream");
    assert!(waited >= 300, "released before the first stream ended: waited {waited} ms");
    let second_body = second.text().await.unwrap();
    for body in [&first_body, &second_body] {
        assert!(body.lines().all(|line| serde_json::from_str::<Value>(line).is_ok()), "{body}");
        assert!(!body.contains("queue") && !body.contains("keel"), "keel wrote into the stream: {body}");
        assert!(body.lines().last().unwrap().contains("\"done\":true"), "{body}");
    }
}

/// A mock answering after `latency`, and keel routing `llama3.2` to two upstreams that are both
/// that mock (`default`, then `second`), with `admission` as its `[admission]` section.
async fn two_targets(latency: &str, admission: &str) -> (keel_mock::MockServer, TestGateway) {
    let scenario = keel_testkit::scenario(&format!("[[model]]\nname = \"llama3.2\"\nlatency = \"{latency}\"\n"));
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let config = keel_testkit::config_with(
        &mock.url(),
        "",
        &format!(
            "[[upstream]]\nname = \"second\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
             [[route]]\nmodel = \"llama3.2\"\ntargets = [\"default\", \"second\"]\n\
             [admission]\n{admission}",
            mock.url()
        ),
    );
    let keel = TestGateway::start(config).await;
    (mock, keel)
}

#[tokio::test]
async fn a_target_that_sheds_passes_the_request_to_the_next_target() {
    let (_mock, keel) = two_targets("800ms", "max_concurrent = 1\nmax_queue = 0\n").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", keel.url());
    let first = tokio::spawn(post(&client, url.clone(), &chat(), &[]));
    until_status(&client, &keel, |status| buckets(status).iter().any(|b| b["running"] == 1)).await;
    let second = post(&client, url.clone(), &chat(), &[]).await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-keel-target").as_deref(), Some("second:llama3.2"));
    assert_eq!(header(&second, "x-keel-attempts"), None, "a shed target is not an upstream call");
    let first = first.await.unwrap();
    assert_eq!(header(&first, "x-keel-target").as_deref(), Some("default:llama3.2"));
    // Both targets busy: the third is shed by both, 503 naming each.
    let (a, b) = (
        tokio::spawn(post(&client, url.clone(), &chat(), &[])),
        tokio::spawn(post(&client, url.clone(), &chat(), &[])),
    );
    until_status(&client, &keel, |status| bucket_total(status, "running") == 2).await;
    let third = post(&client, url, &chat(), &[]).await;
    assert_eq!(third.status(), 503);
    assert!(header(&third, "retry-after").is_some());
    let message = third.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("default:llama3.2") && message.contains("second:llama3.2"), "{message}");
    assert!(message.contains("admission limit"), "{message}");
    assert_eq!((a.await.unwrap().status().as_u16(), b.await.unwrap().status().as_u16()), (200, 200));
    let status = status(&client, &keel).await;
    for target in status["targets"].as_array().unwrap() {
        assert_eq!((&target["breaker"], &target["failures"]), (&json!("closed"), &json!(0)), "{target}");
    }
}

/// keel with two keys, `bulk` (priority batch) and `human` (priority interactive), and one
/// without a priority, `plain`.
async fn keyed(latency: &str, admission: &str) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for (name, priority) in [("bulk", Some("batch")), ("human", Some("interactive")), ("plain", None)] {
        let file = dir.path().join(name);
        std::fs::write(&file, format!("{name}-secret-key\n")).unwrap();
        let priority = priority.map(|p| format!(", priority = \"{p}\"")).unwrap_or_default();
        keys.push(format!(
            "{{ name = \"{name}\", key_file = \"{}\", scopes = [\"inference\", \"admin\"]{priority} }}",
            file.display()
        ));
    }
    let auth = format!("[auth]\nkeys = [{}]\n", keys.join(", "));
    (stack(latency, admission, &auth).await, dir)
}

fn bearer(name: &str) -> String {
    format!("Bearer {name}-secret-key")
}

async fn keyed_status(client: &reqwest::Client, keel: &TestGateway) -> Value {
    let request = client.get(format!("{}/keel/status", keel.url())).header("authorization", bearer("human"));
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_batch_key_with_20_requests_in_flight_does_not_hold_up_an_interactive_key() {
    const SERVICE_MS: u64 = 200;
    let (stack, _keys) = keyed(&format!("{SERVICE_MS}ms"), "max_concurrent = 2").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    // The batch agent keeps 20 requests in flight until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let batch: Vec<_> = (0..20)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    let response = post(&client, url.clone(), &chat(), &[("authorization", &bearer("bulk"))]).await;
                    assert_eq!(response.status(), 200, "a batch request was not served");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let started = Instant::now();
    loop {
        let status = keyed_status(&client, &stack.keel).await;
        let queued = status["admission"]["buckets"][0]["queued"].as_u64().unwrap_or(0);
        if queued >= 15 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the batch requests never queued: {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The interactive agent's requests arrive at varied moments of the batch requests' service.
    let mut waits = Vec::new();
    for pause in [37, 113, 71, 149, 5, 91, 131, 59, 17, 103] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let response = post(&client, url.clone(), &chat(), &[("authorization", &bearer("human"))]).await;
        assert_eq!(response.status(), 200);
        waits.push(queue_wait(&response).unwrap_or(0));
    }
    let queued_meanwhile = keyed_status(&client, &stack.keel).await["admission"]["buckets"][0]["queued"].clone();
    stop.store(true, Ordering::Relaxed);
    let mut batch_answered = 0;
    for task in batch {
        batch_answered += task.await.unwrap();
    }
    waits.sort_unstable();
    let median = waits[waits.len() / 2];
    // Behind the batch queue (first come, first served) it would wait ~9 service times.
    assert!(
        median <= SERVICE_MS,
        "the interactive key's median wait {median} ms is above one service time ({SERVICE_MS} ms): {waits:?}"
    );
    assert!(queued_meanwhile.as_u64().unwrap_or(0) >= 10, "the batch queue drained meanwhile: {queued_meanwhile}");
    assert!(batch_answered >= 20, "every batch request is answered: {batch_answered}");
    let status = keyed_status(&client, &stack.keel).await;
    assert_eq!(status["admission"]["counters"]["shed_total"], 0, "{status}");
}

#[tokio::test]
async fn x_keel_priority_is_checked_and_cannot_raise_a_keys_priority() {
    let (stack, _keys) = keyed("600ms", "max_concurrent = 1").await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", stack.keel.url());
    let plain = bearer("plain");

    // A priority that is none of the three: 400 in the endpoint's dialect, naming them.
    let bad =
        post(&client, url("/api/chat"), &chat(), &[("authorization", &plain), ("x-keel-priority", "urgent")]).await;
    assert_eq!(bad.status(), 400);
    let message = bad.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("\"urgent\"") && message.contains("interactive, normal or batch"), "{message}");
    let openai = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]});
    let bad =
        post(&client, url("/v1/chat/completions"), &openai, &[("authorization", &plain), ("x-keel-priority", "")])
            .await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(stack.mock.stats().requests, 0);

    // One running; then the batch key asks for interactive, then a normal-priority key queues
    // behind it. Had the header raised the batch key, it would go first.
    let running = tokio::spawn(post(&client, url("/api/chat"), &chat(), &[("authorization", &plain)]));
    until_bucket_keyed(&client, &stack.keel, 1, 0).await;
    let raised = tokio::spawn(post(
        &client.clone(),
        url("/api/chat"),
        &chat(),
        &[("authorization", &bearer("bulk")), ("x-keel-priority", "interactive")],
    ));
    until_bucket_keyed(&client, &stack.keel, 1, 1).await;
    let normal = tokio::spawn(post(&client, url("/api/chat"), &chat(), &[("authorization", &plain)]));
    until_bucket_keyed(&client, &stack.keel, 1, 2).await;
    assert_eq!(running.await.unwrap().status(), 200);
    let (raised, normal) = (raised.await.unwrap(), normal.await.unwrap());
    assert_eq!((raised.status().as_u16(), normal.status().as_u16()), (200, 200));
    let (raised_wait, normal_wait) = (queue_wait(&raised).unwrap(), queue_wait(&normal).unwrap());
    assert!(
        normal_wait < raised_wait,
        "the batch key went first ({raised_wait} ms) before the normal one ({normal_wait} ms) that came later"
    );
}

/// [`until_bucket`] with the `human` key for `/keel/status`.
async fn until_bucket_keyed(client: &reqwest::Client, keel: &TestGateway, running: u64, queued: u64) {
    let started = Instant::now();
    loop {
        let status = keyed_status(client, keel).await;
        let bucket = &status["admission"]["buckets"][0];
        if bucket["running"] == running && bucket["queued"] == queued {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never {running} running and {queued} queued: {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn status_and_metrics_show_the_queues_from_start_up() {
    // Off: one line in /keel/status says so.
    let off = Stack::basic().await;
    let client = reqwest::Client::new();
    assert_eq!(status(&client, &off.keel).await["admission"], json!({"enabled": false}));

    // On, with an upstream name of its own so that no other test sets these series.
    let scenario = keel_testkit::scenario("[[model]]\nname = \"llama3.2\"\nlatency = \"800ms\"\n");
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let config = keel_testkit::config_from_toml(&format!(
        "[[upstream]]\nname = \"metered\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"metered\"]\n\
         [admission]\nmax_concurrent = 1\nmax_queue = 3\nmax_wait = \"20s\"\nupstream_max_concurrent = 2\n",
        mock.url()
    ));
    let keel = TestGateway::start(config).await;
    let metrics = |keel_url: String| async move {
        reqwest::get(format!("{keel_url}/metrics")).await.unwrap().text().await.unwrap()
    };
    let text = metrics(keel.url()).await;
    for reason in ["queue_full", "displaced", "wait_too_long", "deadline_unmeetable", "deadline_passed"] {
        assert!(text.contains(&format!("keel_admission_shed_total{{reason=\"{reason}\"}} ")), "{reason}: {text}");
    }
    assert!(text.contains("keel_admission_admitted_total "), "{text}");
    assert!(text.contains("keel_admission_running{upstream=\"metered\",model=\"llama3.2\"} 0"), "{text}");
    assert!(text.contains("keel_admission_queue_depth{upstream=\"metered\",model=\"llama3.2\"} 0"), "{text}");

    let idle = status(&client, &keel).await["admission"].clone();
    assert_eq!(idle["enabled"], true);
    assert_eq!(
        (&idle["max_concurrent"], &idle["max_queue"], &idle["max_wait_ms"]),
        (&json!(1), &json!(3), &json!(20_000))
    );
    assert_eq!(idle["upstream_max_concurrent"], 2);
    assert_eq!(idle["buckets"], json!([]));
    assert_eq!(idle["counters"]["shed"]["queue_full"], 0);

    let url = format!("{}/api/chat", keel.url());
    let running = tokio::spawn(post(&client, url.clone(), &chat(), &[]));
    let waiting = tokio::spawn(post(&client, url, &chat(), &[]));
    let started = Instant::now();
    let bucket = loop {
        let status = status(&client, &keel).await;
        let bucket = status["admission"]["buckets"][0].clone();
        if bucket["queued"] == 1 {
            break bucket;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((&bucket["upstream"], &bucket["model"]), (&json!("metered"), &json!("llama3.2")));
    assert_eq!(
        (&bucket["running"], &bucket["max_concurrent"], &bucket["max_queue"]),
        (&json!(1), &json!(1), &json!(3))
    );
    assert!(bucket["oldest_wait_ms"].is_u64(), "{bucket}");
    assert_eq!((&bucket["upstream_running"], &bucket["upstream_max_concurrent"]), (&json!(1), &json!(2)));
    let text = metrics(keel.url()).await;
    assert!(text.contains("keel_admission_running{upstream=\"metered\",model=\"llama3.2\"} 1"), "{text}");
    assert!(text.contains("keel_admission_queue_depth{upstream=\"metered\",model=\"llama3.2\"} 1"), "{text}");

    assert_eq!(running.await.unwrap().status(), 200);
    assert_eq!(waiting.await.unwrap().status(), 200);
    let text = metrics(keel.url()).await;
    assert!(text.contains("keel_admission_running{upstream=\"metered\",model=\"llama3.2\"} 0"), "{text}");
    assert!(text.contains("keel_admission_queue_depth{upstream=\"metered\",model=\"llama3.2\"} 0"), "{text}");
    assert!(text.contains("keel_admission_queue_wait_seconds_bucket"), "{text}");
    let counters = status(&client, &keel).await["admission"]["counters"].clone();
    assert_eq!((&counters["admitted"], &counters["admitted_after_queueing"]), (&json!(2), &json!(1)));
}

#[tokio::test]
async fn a_structured_answer_the_guard_checked_reports_its_queue_wait_too() {
    let stack = stack("400ms", "max_concurrent = 1", "").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    let structured = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "format": "json", "stream": false});
    let first = tokio::spawn(post(&client, url.clone(), &structured, &[]));
    until_bucket(&client, &stack.keel, 1, 0).await;
    let second = post(&client, url, &structured, &[]).await;
    assert_eq!(second.status(), 200);
    let waited = queue_wait(&second).expect("the guarded answer says it waited");
    assert!(waited >= 100, "{waited}");
    assert!(header(&second, "x-keel-repair").is_some());
    let first = first.await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(queue_wait(&first), None);
}

#[tokio::test]
async fn an_upstream_may_serve_fewer_at_once_than_admission_max_concurrent() {
    let scenario = keel_testkit::scenario(
        "[[model]]\nname = \"llama3.2\"\nreply = \"Hello from keel-mock.\"\nlatency = \"300ms\"\n",
    );
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let keel = TestGateway::start(keel_testkit::config_from_toml(&format!(
        "[[upstream]]\nname = \"default\"\nurl = \"{}\"\nhealth_interval = \"0s\"\nmax_concurrent = 1\n\
         [admission]\nmax_concurrent = 4\n",
        mock.url()
    )))
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", keel.url());
    let requests: Vec<_> = (0..3).map(|_| tokio::spawn(post(&client, url.clone(), &chat(), &[]))).collect();
    until_bucket(&client, &keel, 1, 2).await;
    for request in requests {
        assert_eq!(request.await.unwrap().status(), 200);
    }
    let status = status(&client, &keel).await;
    assert_eq!(status["admission"]["max_concurrent"], 4, "{status}");
}

#[tokio::test]
async fn max_wait_bounds_the_wait_over_all_targets_together() {
    let (_mock, keel) = two_targets("4s", "max_concurrent = 1\nmax_queue = 4\nmax_wait = \"1s\"\n").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", keel.url());
    // One request on each target holds its only slot for 4 s.
    let busy: Vec<_> = (0..2).map(|_| tokio::spawn(post(&client, url.clone(), &chat(), &[]))).collect();
    until_status(&client, &keel, |status| bucket_total(status, "running") == 2).await;
    // The third waits 1 s at the first target, then is shed at once by the second: 1 s in all,
    // not 1 s per target.
    let asked = Instant::now();
    let third = post(&client, url, &chat(), &[]).await;
    let took = asked.elapsed();
    assert_eq!(third.status(), 503);
    assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(1800), "{took:?}");
    let message = third.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("default:llama3.2") && message.contains("second:llama3.2"), "{message}");
    for request in busy {
        assert_eq!(request.await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn a_half_open_breakers_probe_is_not_held_while_its_request_waits_for_a_slot() {
    let models = |faulty: bool| {
        let fault = if faulty { "[[model.fault]]\nkind = \"status\"\nstatus = 500\n" } else { "" };
        keel_testkit::scenario(&format!(
            "[[model]]\nname = \"slow\"\nlatency = \"1500ms\"\n[[model]]\nname = \"flaky\"\n{fault}"
        ))
    };
    let stack = Stack::start_with(
        models(true),
        "",
        "[admission]\nmax_concurrent = 4\nupstream_max_concurrent = 1\nmax_wait = \"10s\"\n\
         [breaker]\nfailure_threshold = 1\ncooldown = \"200ms\"\ncooldown_strategy = \"fixed\"\nhalf_open = \"single\"\n",
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    let flaky = json!({"model": "flaky", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let slow = json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    // One failure opens flaky's breaker; after the cooldown it lets one probe through.
    assert!(post(&client, url.clone(), &flaky, &[]).await.status().is_server_error());
    stack.mock.set_scenario(models(false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `slow` takes the server's only slot; two flaky requests queue behind it. The first holds
    // the probe only once it has the slot, so the second is not refused meanwhile ("a probe is
    // in flight") but waits its turn and is answered once the probe closed the breaker.
    let holder = tokio::spawn(post(&client, url.clone(), &slow, &[]));
    let running_and_queued = |queued: u64| {
        move |status: &Value| bucket_total(status, "running") == 1 && bucket_total(status, "queued") == queued
    };
    until_status(&client, &stack.keel, running_and_queued(0)).await;
    let probe = tokio::spawn(post(&client, url.clone(), &flaky, &[]));
    until_status(&client, &stack.keel, running_and_queued(1)).await;
    let after = post(&client, url.clone(), &flaky, &[]).await;
    assert_eq!(after.status(), 200, "{:?}", after.text().await);
    assert_eq!(probe.await.unwrap().status(), 200);
    assert_eq!(holder.await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_llama_server_says_how_many_requests_it_serves_at_once() {
    // Two llama-server-like upstreams with 3 slots; `pinned` sets its own max_concurrent.
    let scenario = keel_testkit::scenario(
        "api = \"openai\"\nslots = 3\n[[model]]\nname = \"llama3.2\"\nreply = \"hi\"\nlatency = \"500ms\"\n",
    );
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let upstream = |name: &str, own: &str| {
        format!(
            "[[upstream]]\nname = \"{name}\"\nurl = \"{}\"\ndialect = \"openai\"\nhealth_interval = \"50ms\"\n{own}",
            mock.url()
        )
    };
    let keel = TestGateway::start(keel_testkit::config_from_toml(&format!(
        "{}{}[[route]]\nmodel = \"llama3.2\"\ntargets = [\"served\"]\n[admission]\nmax_concurrent = 1\n",
        upstream("served", ""),
        upstream("pinned", "max_concurrent = 2\n"),
    )))
    .await;
    let client = reqwest::Client::new();
    until_status(&client, &keel, |status| status["admission"]["max_concurrent_from_servers"] == json!({"served": 3}))
        .await;
    // Four at once: three run on the server's three slots, one waits.
    let url = format!("{}/api/chat", keel.url());
    let requests: Vec<_> = (0..4).map(|_| tokio::spawn(post(&client, url.clone(), &chat(), &[]))).collect();
    until_status(&client, &keel, |status| {
        buckets(status).iter().any(|b| b["upstream"] == "served" && b["running"] == 3 && b["queued"] == 1)
    })
    .await;
    let mut waited = 0;
    for request in requests {
        let response = request.await.unwrap();
        assert_eq!(response.status(), 200);
        waited += usize::from(queue_wait(&response).is_some());
    }
    assert_eq!(waited, 1);
}
