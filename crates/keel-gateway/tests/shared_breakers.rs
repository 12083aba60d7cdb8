//! Shared breaker state through the real Redis on 127.0.0.1:6379: when one keel instance opens a
//! target's breaker, the others open theirs within a second, and an instance that starts later
//! learns it too. Each test uses its own key prefix and deletes its keys.
//!
//! With `KEEL_REQUIRE_SERVICES=1` (set by `.ci/run`) an unreachable Redis fails the tests;
//! otherwise they are skipped with a note.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::time::{Duration, Instant};

use keel_mock::MockServer;
use keel_testkit::{TestGateway, config_from_toml, post_json, scenario};
use serde_json::{Value, json};

const REDIS: &str = "redis://127.0.0.1:6379";

/// A connection to the test Redis, or `None` (skip) when it is down and not required.
async fn redis() -> Option<redis::aio::MultiplexedConnection> {
    let connected = match redis::Client::open(REDIS) {
        Ok(client) => client.get_multiplexed_async_connection().await.map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match connected {
        Ok(conn) => Some(conn),
        Err(err) if std::env::var("KEEL_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("Redis at {REDIS} is required (KEEL_REQUIRE_SERVICES=1): {err}")
        }
        Err(err) => {
            eprintln!("skipping: Redis at {REDIS} unreachable ({err}); set KEEL_REQUIRE_SERVICES=1 to fail instead");
            None
        }
    }
}

/// Deletes the test's keys when dropped.
struct Prefix(String, redis::aio::MultiplexedConnection);

impl Prefix {
    async fn new() -> Option<Prefix> {
        let conn = redis().await?;
        Some(Prefix(format!("keel-test-{}", uuid::Uuid::new_v4().simple()), conn))
    }

    async fn cleanup(mut self) {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.0)).query_async(&mut self.1).await.unwrap_or_default();
        for key in keys {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query_async(&mut self.1).await;
        }
    }
}

fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

async fn keel(prefix: &str, primary: &str, backup: &MockServer) -> TestGateway {
    TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"primary\"\nurl = \"{primary}\"\nhealth_interval = \"0s\"\n\
         [[upstream]]\nname = \"backup\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"m\"\ntargets = [\"primary\", \"backup\"]\n\
         [breaker]\nfailure_threshold = 2\ncooldown = \"30s\"\nshared = \"{REDIS}\"\nshared_prefix = \"{prefix}\"\n",
        backup.url()
    )))
    .await
}

/// The dead primary's server-wide breaker (a refused connection is the server's failure) and the
/// requests its target was sent.
async fn primary_breaker(keel: &TestGateway) -> Value {
    let status: Value = reqwest::get(format!("{}/keel/status", keel.url())).await.unwrap().json().await.unwrap();
    let upstream = status["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == "primary").unwrap();
    let target = status["targets"].as_array().unwrap().iter().find(|t| t["name"] == "primary:m");
    json!({
        "breaker": upstream["breaker"]["state"],
        "breaker_detail": upstream["breaker"],
        "requests": target.map_or(json!(0), |t| t["requests"].clone()),
    })
}

/// Polls until the primary's breaker is open; returns how long it took.
async fn wait_open(keel: &TestGateway, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if primary_breaker(keel).await["breaker"] == "open" {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "breaker not open after {limit:?}: {}", primary_breaker(keel).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn chat() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

#[tokio::test]
async fn redis_an_opening_on_one_instance_reaches_the_others() {
    let Some(prefix) = Prefix::new().await else { return };
    let backup = MockServer::start(([127, 0, 0, 1], 0).into(), scenario("[[model]]\nname = \"m\"\n")).await.unwrap();
    let primary = dead_url();
    let a = keel(&prefix.0, &primary, &backup).await;
    let b = keel(&prefix.0, &primary, &backup).await;
    // Let B subscribe before A opens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(primary_breaker(&b).await["breaker"], "closed");

    for _ in 0..2 {
        let response = post_json(&format!("{}/api/chat", a.url()), &chat()).await;
        assert_eq!(response.headers()["x-keel-target"], "backup:m");
    }
    wait_open(&a, Duration::from_secs(1)).await;
    let took = wait_open(&b, Duration::from_secs(1)).await;
    eprintln!("instance B learned of the opening after {took:?}");
    let detail = primary_breaker(&b).await;
    assert_eq!(detail["breaker_detail"]["last_transition"]["reason"], "opened by another keel instance", "{detail}");
    // B never called the dead primary: its requests go straight to the backup.
    let response = post_json(&format!("{}/api/chat", b.url()), &chat()).await;
    assert_eq!(response.headers()["x-keel-target"], "backup:m");
    assert_eq!(primary_breaker(&b).await["requests"], 0);

    // An instance that starts now learns the opening from the stored key.
    let c = keel(&prefix.0, &primary, &backup).await;
    wait_open(&c, Duration::from_secs(1)).await;
    prefix.cleanup().await;
}

#[tokio::test]
async fn redis_instances_with_other_prefixes_are_not_affected() {
    let Some(prefix) = Prefix::new().await else { return };
    let Some(other) = Prefix::new().await else { return };
    let backup = MockServer::start(([127, 0, 0, 1], 0).into(), scenario("[[model]]\nname = \"m\"\n")).await.unwrap();
    let primary = dead_url();
    let a = keel(&prefix.0, &primary, &backup).await;
    let b = keel(&other.0, &primary, &backup).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        post_json(&format!("{}/api/chat", a.url()), &chat()).await;
    }
    wait_open(&a, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(primary_breaker(&b).await["breaker"], "closed");
    prefix.cleanup().await;
    other.cleanup().await;
}
