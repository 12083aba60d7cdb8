//! keel never makes a failure worse: a failure is held against what failed (one model, or the
//! server as a whole, or nobody when keel itself ran short), partial failures still reach the
//! server, answers cut short go to the next target, and made-up model names cannot grow memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::time::Duration;

use keel_mock::MockServer;
use keel_testkit::{TestGateway, config_for, config_from_toml, post_json, scenario};
use serde_json::{Value, json};

async fn mock(toml: &str) -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), scenario(toml)).await.unwrap()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

async fn status(keel: &TestGateway) -> Value {
    reqwest::get(format!("{}/keel/status", keel.url())).await.unwrap().json().await.unwrap()
}

const NO_MEMORY: &str = "model requires more system memory (12.5 GiB) than is available (4.1 GiB)";

#[tokio::test]
async fn a_model_that_cannot_load_never_refuses_another_model_on_the_same_server() {
    let mock = mock(&format!(
        "[[model]]\nname = \"good\"\n[[model]]\nname = \"broken\"\n\
         [[model.fault]]\nkind = \"server_error\"\nmessage = \"{NO_MEMORY}\"\n"
    ))
    .await;
    // The default set-up: one upstream, the "*" route (what `keel serve --upstream` builds).
    let keel = TestGateway::start(config_for(&mock.url())).await;
    let url = format!("{}/api/chat", keel.url());
    let (mut good, mut broken_own_error, mut broken_own_breaker) = (0, 0, 0);
    for _ in 0..100 {
        let response = post_json(&url, &chat("good")).await;
        assert_eq!(response.status(), 200);
        good += 1;
        let response = post_json(&url, &chat("broken")).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        let message = body["error"].as_str().unwrap().to_owned();
        match status {
            500 => {
                assert!(message.contains(NO_MEMORY), "{message}");
                assert!(message.contains("could not load or run model 'broken'"), "{message}");
                broken_own_error += 1;
            }
            503 => {
                assert!(message.contains("default:broken: circuit open since"), "{message}");
                assert!(message.contains("(last: model_load: upstream answered 500"), "{message}");
                assert!(message.contains(NO_MEMORY), "the root cause is kept: {message}");
                broken_own_breaker += 1;
            }
            other => panic!("unexpected {other}: {message}"),
        }
    }
    assert_eq!(good, 100);
    assert_eq!(broken_own_error + broken_own_breaker, 100);
    // A load failure is not retried on the same server: five calls opened the model's breaker.
    assert_eq!(broken_own_error, 5, "{broken_own_error} own errors, {broken_own_breaker} refusals");
    let calls = mock.requests().iter().filter(|r| r.path == "/api/chat").count();
    assert_eq!(calls, 100 + 5);
    let status = status(&keel).await;
    let names: Vec<&str> = status["targets"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default:broken", "default:good"]);
    assert_eq!(status["upstreams"][0]["breaker"]["state"], "closed");
}

#[tokio::test]
async fn a_dead_server_fails_every_model_fast_and_one_probe_brings_them_all_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"default\"\nurl = \"http://127.0.0.1:{port}\"\nhealth_interval = \"100ms\"\n\
         [breaker]\ncooldown = \"10m\"\n"
    )))
    .await;
    let url = format!("{}/api/chat", keel.url());
    // Five refused connections (each request tries twice) open the upstream's breaker.
    for model in ["a", "b", "a"] {
        let response = post_json(&url, &chat(model)).await;
        assert!(response.status().is_server_error());
    }
    // Now a model never asked for fails fast too, saying why.
    let response = post_json(&url, &chat("c")).await;
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let message = response.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("default: circuit open since"), "{message}");
    assert!(message.contains("(last: refused: tcp connect error"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains(&format!("Retry after {retry_after}s")), "{message}");
    assert_eq!(message.matches("etry after").count(), 1, "one retry time: {message}");

    // The server comes up on that address; one health probe lets every model through again,
    // long before the ten-minute cooldown.
    let mock = MockServer::start(
        ([127, 0, 0, 1], port).into(),
        scenario("[[model]]\nname = \"a\"\n[[model]]\nname = \"b\"\n[[model]]\nname = \"c\"\n"),
    )
    .await
    .unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if post_json(&url, &chat("a")).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the upstream was not tried again after a successful probe");
    for model in ["b", "c"] {
        assert_eq!(post_json(&url, &chat(model)).await.status(), 200, "{model}");
    }
    drop(mock);
}

/// 200s out of `n` requests.
async fn answered(url: &str, n: usize) -> usize {
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..n {
        *statuses.entry(post_json(url, &chat("flaky")).await.status().as_u16()).or_insert(0) += 1;
    }
    eprintln!("{url}: {statuses:?}");
    statuses.get(&200).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_lone_server_failing_half_its_requests_is_more_available_through_keel_than_direct() {
    let flaky = "seed = 42\n[[model]]\nname = \"flaky\"\n[[model.fault]]\nkind = \"server_error\"\nrate = 0.5\nmessage = \"boom\"\n";
    let direct = mock(flaky).await;
    let behind = mock(flaky).await;
    let keel = TestGateway::start(config_for(&behind.url())).await;
    let n = 200;
    let direct_ok = answered(&format!("{}/api/chat", direct.url()), n).await;
    let keel_ok = answered(&format!("{}/api/chat", keel.url()), n).await;
    let (direct_pct, keel_pct) = (direct_ok * 100 / n, keel_ok * 100 / n);
    eprintln!("availability with a server failing 50% at random: direct {direct_pct}%, through keel {keel_pct}%");
    assert!(keel_pct >= direct_pct + 15, "direct {direct_pct}%, through keel {keel_pct}%");
}

#[tokio::test]
async fn a_non_streamed_answer_cut_short_goes_to_the_backup_whole() {
    let primary =
        mock("[[model]]\nname = \"m\"\nreply = \"from the primary\"\n[[model.fault]]\nkind = \"cut\"\nrate = 0.5\n")
            .await;
    let backup = mock("[[model]]\nname = \"m\"\nreply = \"from the backup\"\n").await;
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"primary\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[upstream]]\nname = \"backup\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"m\"\ntargets = [\"primary\", \"backup\"]\n",
        primary.url(),
        backup.url()
    )))
    .await;
    for path in ["/api/chat", "/v1/chat/completions"] {
        for i in 0..50 {
            let response = post_json(&format!("{}{path}", keel.url()), &chat("m")).await;
            assert_eq!(response.status(), 200, "{path} request {i}");
            let body: Value = serde_json::from_str(&response.text().await.unwrap())
                .unwrap_or_else(|err| panic!("{path} request {i}: not whole JSON: {err}"));
            let text = body["message"]["content"].as_str().or(body["choices"][0]["message"]["content"].as_str());
            assert!(text.is_some_and(|t| t.starts_with("from the")), "{path} request {i}: {body}");
        }
    }
}

#[tokio::test]
async fn made_up_model_names_cannot_grow_breakers_or_metrics() {
    let mock = mock("[[model]]\nname = \"real\"\n").await;
    let mut config = config_for(&mock.url());
    config.breaker.max_breakers = 50;
    let keel = TestGateway::start(config).await;
    let url = format!("{}/api/chat", keel.url());
    assert_eq!(post_json(&url, &chat("real")).await.status(), 200);
    let metrics = || async { reqwest::get(format!("{}/metrics", keel.url())).await.unwrap().text().await.unwrap() };
    let before = metrics().await.len();
    for i in 0..1000 {
        let response = post_json(&url, &chat(&format!("made-up-{i}"))).await;
        assert_eq!(response.status(), 404);
    }
    let after = metrics().await;
    assert!(!after.contains("made-up-"), "a made-up name got its own series");
    assert!(after.len() < before + 64 * 1024, "/metrics grew from {before} to {} bytes", after.len());
    let status = status(&keel).await;
    let breakers = status["breakers"].as_u64().unwrap();
    // 50 for models asked through "*", plus the upstream's own.
    assert!(breakers <= 51, "{breakers} breakers");
    assert!(status["targets"].as_array().unwrap().len() <= 51);
}

#[tokio::test]
async fn a_time_out_says_how_many_attempts_and_how_long_in_all() {
    let mock = mock("[[model]]\nname = \"m\"\n[[model.fault]]\nkind = \"hang\"\n").await;
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"default\"\nurl = \"{}\"\nresponse_timeout = \"300ms\"\nhealth_interval = \"0s\"\n",
        mock.url()
    )))
    .await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat("m")).await;
    assert_eq!(response.status(), 504);
    assert!(!response.headers().contains_key("retry-after"));
    let message = response.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("no response head within 300ms"), "{message}");
    assert!(message.contains("2 attempt(s) in") && message.contains("in all"), "{message}");
}
