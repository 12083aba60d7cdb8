#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! Rate limits (`[limits]` and a key's own): requests per minute per client address or key,
//! tokens per minute reserved before the call and settled from the server's counts after it,
//! 429 in the endpoint's dialect with `Retry-After` and `RateLimit-*` headers, a request larger
//! than a whole minute's tokens refused without `Retry-After`, and what happens when the shared
//! store (Redis) cannot be reached.

use std::time::Duration;

use keel_testkit::Stack;
use serde_json::{Value, json};

fn chat(max_tokens: Option<u64>) -> Value {
    let mut body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    if let Some(n) = max_tokens {
        body["options"] = json!({"num_predict": n});
    }
    body
}

async fn post(client: &reqwest::Client, url: String, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = client.post(url).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// Sends `body` `times` times: each answered, none under a limit (no `RateLimit-*` headers).
async fn assert_unlimited(client: &reqwest::Client, url: &str, body: &Value, key: Option<&str>, times: usize) {
    for _ in 0..times {
        let response = post(client, url.to_owned(), body, key).await;
        assert_eq!(response.status(), 200);
        assert!(header(&response, "ratelimit-limit").is_none());
    }
}

/// The value of `series` in a `/metrics` text (0 when absent).
fn counter(metrics: &str, series: &str) -> u64 {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_client_over_its_requests_per_minute_gets_429_in_dialect_with_retry_after() {
    let stack = Stack::basic_with("[limits]\nrequests_per_minute = 3\n").await;
    let client = reqwest::Client::new();
    for remaining in [2, 1, 0] {
        let response = post(&client, format!("{}/api/chat", stack.keel.url()), &chat(None), None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(header(&response, "ratelimit-remaining"), Some(remaining.to_string()));
        assert!(header(&response, "ratelimit-reset").is_some());
    }
    let limited = post(&client, format!("{}/api/chat", stack.keel.url()), &chat(None), None).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = header(&limited, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "a request comes back every 20 s: {retry_after}");
    assert_eq!(header(&limited, "ratelimit-remaining").as_deref(), Some("0"));
    let body: Value = limited.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("3 requests per minute") && message.contains("requests_per_minute"), "{message}");

    // The OpenAI dialect's shape on /v1.
    let openai = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]});
    let limited = post(&client, format!("{}/v1/chat/completions", stack.keel.url()), &openai, None).await;
    assert_eq!(limited.status(), 429);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");

    // keel's own endpoints are not limited.
    let health = client.get(format!("{}/keel/health", stack.keel.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = client.get(format!("{}/metrics", stack.keel.url())).send().await.unwrap().text().await.unwrap();
    // The recorder is the test process's: other tests here are refused for requests too.
    let refused = counter(&metrics, "keel_rate_limited_total{limit=\"requests\"}");
    assert!(refused >= 2, "both refusals counted: {refused}\n{metrics}");
    let _mock = &stack.mock;
}

/// keel with two keys: `agent` with its own 2 requests per minute, `ops` under `[limits]` (none).
async fn keyed(extra: &str) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent"), "agent-secret-1\n").unwrap();
    std::fs::write(dir.path().join("ops"), "ops-secret-22\n").unwrap();
    let auth = format!(
        "[auth]\nkeys = [{{ name = \"agent\", key_file = \"{}\", scopes = [\"inference\"], requests_per_minute = 2 }}, {{ name = \"ops\", key_file = \"{}\", scopes = [\"inference\"] }}]\n{extra}",
        dir.path().join("agent").display(),
        dir.path().join("ops").display()
    );
    let stack =
        Stack::start_with(keel_mock::Scenario::single_model("llama3.2", "Hello from keel-mock."), "", &auth).await;
    (stack, dir)
}

#[tokio::test]
async fn each_key_has_its_own_budget_and_its_own_limit_wins() {
    let (stack, _dir) = keyed("").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    for _ in 0..2 {
        assert_eq!(post(&client, url.clone(), &chat(None), Some("agent-secret-1")).await.status(), 200);
    }
    let limited = post(&client, url.clone(), &chat(None), Some("agent-secret-1")).await;
    assert_eq!(limited.status(), 429);
    let message = limited.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("key 'agent'") && message.contains("the key's requests_per_minute"), "{message}");
    assert!(!message.contains("agent-secret"), "the secret never shows: {message}");
    // Another key is not affected, and without a limit of its own or in [limits] it has none.
    assert_unlimited(&client, &url, &chat(None), Some("ops-secret-22"), 5).await;
    let _mock = &stack.mock;
}

#[tokio::test]
async fn token_reservations_are_settled_from_the_servers_counts() {
    // Each request reserves its size/4 + 200 answer tokens (~225); the mock reports a handful.
    // Without settling, the third would not fit in 600 tokens.
    let stack = Stack::basic_with("[limits]\ntokens_per_minute = 600\n").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    for round in 0..6 {
        let response = post(&client, url.clone(), &chat(Some(200)), None).await;
        assert_eq!(response.status(), 200, "request {round}: {:?}", response.text().await);
        let answer: Value = response.json().await.unwrap();
        assert!(answer["eval_count"].as_u64().unwrap() < 50);
        // The settlement runs as the answer's body ends.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Streams are settled too.
    let mut streamed = chat(Some(200));
    streamed["stream"] = json!(true);
    for _ in 0..3 {
        let response = post(&client, url.clone(), &streamed, None).await;
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("\"done\":true"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _mock = &stack.mock;
}

#[tokio::test]
async fn without_counts_a_reservation_stands_and_the_budget_runs_out() {
    // The same 225-token reservations with an answer cut short (no counts): the third is refused.
    let scenario = keel_testkit::scenario(
        "[[model]]\nname = \"llama3.2\"\nreply = \"one two three four\"\n[[model.fault]]\nkind = \"cut\"\nafter_chunks = 1\nrate = 1.0\n",
    );
    let stack = Stack::start_with(scenario, "", "[limits]\ntokens_per_minute = 600\n").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    let mut streamed = chat(Some(200));
    streamed["stream"] = json!(true);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = post(&client, url.clone(), &streamed, None).await;
        statuses.push(response.status().as_u16());
        let _ = response.text().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(statuses, [200, 200, 429]);
    let _mock = &stack.mock;
}

#[tokio::test]
async fn a_request_larger_than_the_whole_budget_is_refused_without_retry_after() {
    let stack = Stack::basic_with("[limits]\ntokens_per_minute = 1000\n").await;
    let client = reqwest::Client::new();
    let response = post(&client, format!("{}/api/chat", stack.keel.url()), &chat(Some(5000)), None).await;
    assert_eq!(response.status(), 429);
    assert!(header(&response, "retry-after").is_none(), "it will never fit: no retry time");
    assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("1000"));
    let message = response.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("can never pass") && message.contains("num_predict"), "{message}");
    // It was not charged: a normal request still passes.
    let response = post(&client, format!("{}/api/chat", stack.keel.url()), &chat(Some(100)), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(stack.mock.requests().len(), 1, "the refused request never reached the server");
}

#[tokio::test]
async fn an_unreachable_store_lets_requests_through_when_open() {
    let stack = Stack::basic_with("[limits]\nrequests_per_minute = 1\nstore = \"redis://127.0.0.1:1\"\n").await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = post(&client, format!("{}/api/chat", stack.keel.url()), &chat(None), None).await;
        assert_eq!(response.status(), 200);
    }
    let metrics = client.get(format!("{}/metrics", stack.keel.url())).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("keel_rate_limit_store_errors_total{outcome=\"allowed\"} 3"), "{metrics}");
    let _mock = &stack.mock;
}

#[tokio::test]
async fn an_unreachable_store_refuses_requests_with_503_when_closed() {
    let stack = Stack::basic_with(
        "[limits]\nrequests_per_minute = 100\nstore = \"redis://127.0.0.1:1\"\non_store_error = \"closed\"\n",
    )
    .await;
    let client = reqwest::Client::new();
    let response = post(&client, format!("{}/api/chat", stack.keel.url()), &chat(None), None).await;
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("1"));
    let message = response.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("on_store_error") && message.contains("Redis"), "{message}");
    assert_eq!(stack.mock.requests().len(), 0);
}

#[tokio::test]
async fn a_route_with_its_own_limit_is_limited_per_client_and_others_are_not() {
    let scenario = keel_testkit::scenario(
        "[[model]]\nname = \"llama3.2\"\nreply = \"hi\"\n[[model]]\nname = \"qwen2.5\"\nreply = \"hi\"\n",
    );
    let routes = "[[route]]\nmodel = \"llama3.2\"\ntargets = [\"default\"]\nrequests_per_minute = 2\n\
                  [[route]]\nmodel = \"*\"\ntargets = [\"default\"]\n";
    let stack = Stack::start_with(scenario, "", routes).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    for _ in 0..2 {
        let response = post(&client, url.clone(), &chat(None), None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("2"));
    }
    let limited = post(&client, url.clone(), &chat(None), None).await;
    assert_eq!(limited.status(), 429);
    let message = limited.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains("on route 'llama3.2'") && message.contains("the route's requests_per_minute"),
        "{message}"
    );
    // Another model, through the "*" route, has no limit.
    let mut other = chat(None);
    other["model"] = json!("qwen2.5");
    assert_unlimited(&client, &url, &other, None, 4).await;
    let _mock = &stack.mock;
}

#[tokio::test]
async fn a_refused_request_is_given_back_and_its_429_names_the_limit_that_refused_it() {
    let stack = Stack::basic_with("[limits]\nrequests_per_minute = 2\ntokens_per_minute = 1000\n").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", stack.keel.url());
    let too_large = post(&client, url.clone(), &chat(Some(5000)), None).await;
    assert_eq!(too_large.status(), 429);
    assert_eq!(header(&too_large, "ratelimit-limit").as_deref(), Some("1000"), "the tokens limit refused it");
    // The refused request's place was given back: two more pass, then the requests limit holds.
    for _ in 0..2 {
        assert_eq!(post(&client, url.clone(), &chat(Some(100)), None).await.status(), 200);
    }
    let limited = post(&client, url, &chat(Some(100)), None).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "ratelimit-limit").as_deref(), Some("2"));
    let _mock = &stack.mock;
}
