//! Two keel processes sharing one Redis-backed limit of 60 requests per minute admit 60 at once
//! and then one a second together — also with one process's clock 30 s ahead (`faketime`): the
//! limiter runs on Redis's clock, not the instances'. With the store unreachable, keel logs it and
//! does what `on_store_error` says.
//!
//! Redis is expected on 127.0.0.1:6379 (or `KEEL_TEST_REDIS_URL`); unreachable, the test prints a
//! note and passes unless `KEEL_REQUIRE_SERVICES=1`. libfaketime comes from Debian's `faketime`
//! package (scripts/test.sh installs it).

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::process::Command;
use std::time::{Duration, Instant};

use keel_testkit::process::KeelProcess;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn require_services() -> bool {
    std::env::var("KEEL_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

fn redis_url() -> String {
    std::env::var("KEEL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Starts keel `name` in `dir` with `config` (its clock `clock` ahead when given).
async fn start(dir: &std::path::Path, name: &str, config: &str, clock: Option<&str>) -> KeelProcess {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let mut command = Command::new(KEEL);
    if let Some(offset) = clock {
        // libfaketime preloaded into keel itself (not the `faketime` wrapper, which would
        // outlive a kill of its child): every clock keel reads is `offset` ahead.
        command.env("LD_PRELOAD", libfaketime().unwrap()).env("FAKETIME", offset);
    }
    command
        .args(["serve", "--config"])
        .arg(&config_path)
        .args(["--listen", "127.0.0.1:0", "--store"])
        .arg(format!("sqlite://{}", dir.join(format!("{name}.db")).display()))
        .env("KEEL_AGENT_KEY", "shared-agent-key");
    KeelProcess::start_on_any_port(command, &dir.join(format!("{name}.log"))).await
}

/// keel's config: one upstream, a key named `key_name` (so each test has its own limiter keys in
/// Redis), and `limits` as the `[limits]` section.
fn config(upstream: &str, key_name: &str, limits: &str) -> String {
    format!(
        "[[upstream]]\nname = \"default\"\nurl = \"{upstream}\"\nhealth_interval = \"0s\"\n\
         [auth]\nkeys = [{{ name = \"{key_name}\", key_env = \"KEEL_AGENT_KEY\", scopes = [\"inference\"] }}]\n\
         [limits]\n{limits}"
    )
}

/// libfaketime for multi-threaded programs, where Debian's `faketime` package puts it.
fn libfaketime() -> Option<std::path::PathBuf> {
    ["/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime", "/usr/lib/faketime"]
        .iter()
        .map(|dir| std::path::Path::new(dir).join("libfaketimeMT.so.1"))
        .find(|path| path.exists())
}

async fn redis_is_up() -> bool {
    let reachable = tokio::net::TcpStream::connect(redis_url().trim_start_matches("redis://")).await.is_ok();
    if !reachable {
        assert!(!require_services(), "Redis is not reachable at {} and KEEL_REQUIRE_SERVICES=1", redis_url());
        eprintln!("SKIP: Redis is not reachable at {} — set KEEL_REQUIRE_SERVICES=1 to fail instead", redis_url());
    }
    reachable
}

/// Sends `count` requests alternating between `keels`, `pause` apart; gives how many got 200.
async fn admitted(keels: &[&KeelProcess], count: usize, pause: Duration) -> usize {
    let mut admitted = 0;
    for i in 0..count {
        let response = chat(keels[i % keels.len()]).await;
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected {other}: {}", response.text().await.unwrap_or_default()),
        }
        tokio::time::sleep(pause).await;
    }
    admitted
}

async fn two_instances_share_sixty_a_minute(skewed: Option<&str>) {
    if !redis_is_up().await {
        return;
    }
    if skewed.is_some() && libfaketime().is_none() {
        assert!(!require_services(), "libfaketime is missing (scripts/test.sh installs Debian's faketime)");
        eprintln!("SKIP: libfaketime is missing");
        return;
    }
    let scenario = keel_mock::Scenario::from_toml_str("[[model]]\nname = \"m\"\nreply = \"ok\"\n").unwrap();
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_name = format!("agent-{}", uuid::Uuid::new_v4().simple());
    let limits = format!("requests_per_minute = 60\nstore = \"{}\"\non_store_error = \"closed\"\n", redis_url());
    let text = config(&mock.url(), &key_name, &limits);
    let first = start(dir.path(), "first", &text, None).await;
    let second = start(dir.path(), "second", &text, skewed).await;
    if skewed.is_some() {
        // The skew is real: the second keel's log lines are stamped 30 s ahead.
        let ahead = seconds_of_day(&second.logs()) - seconds_of_day(&first.logs());
        assert!((25..=40).contains(&ahead.rem_euclid(86_400)), "the clock is {ahead} s ahead");
    }

    // The whole minute's budget at once, split between the instances: 60 of 100.
    let started = Instant::now();
    let burst = admitted(&[&first, &second], 100, Duration::ZERO).await;
    let burst_time = started.elapsed();
    // Then one a second comes back: 10 requests a second for 12 s admit about 12.
    let started = Instant::now();
    let sustained = admitted(&[&first, &second], 120, Duration::from_millis(100)).await;
    let sustained_time = started.elapsed().as_secs_f64();
    let refilled_during_burst = burst_time.as_secs_f64();
    assert!(
        (60.0..=61.0 + refilled_during_burst).contains(&(burst as f64)),
        "burst admitted {burst} in {burst_time:?}"
    );
    // One a second, give or take the one in flight at each end of the window (a local clock 30 s
    // off would have let about 30 more through).
    let per_minute = sustained as f64 / sustained_time * 60.0;
    assert!(
        (sustained as f64 - sustained_time).abs() <= 1.5,
        "{sustained} in {sustained_time:.1} s = {per_minute:.1}/min"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keel_processes_on_one_redis_admit_sixty_a_minute_together() {
    two_instances_share_sixty_a_minute(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_thirty_seconds_ahead_changes_nothing() {
    two_instances_share_sixty_a_minute(Some("+30s")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_keel_logs_it_and_follows_on_store_error() {
    let scenario = keel_mock::Scenario::from_toml_str("[[model]]\nname = \"m\"\nreply = \"ok\"\n").unwrap();
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the store is down.
    let open = start(
        dir.path(),
        "open",
        &config(&mock.url(), "agent", "requests_per_minute = 1\nstore = \"redis://127.0.0.1:1\"\n"),
        None,
    )
    .await;
    let closed = start(
        dir.path(),
        "closed",
        &config(
            &mock.url(),
            "agent",
            "requests_per_minute = 1\nstore = \"redis://127.0.0.1:1\"\non_store_error = \"closed\"\n",
        ),
        None,
    )
    .await;
    assert_eq!(admitted(&[&open], 3, Duration::ZERO).await, 3, "open: everything passes");
    assert_eq!(chat(&closed).await.status(), 503, "closed: refused");
    for (keel, says) in [(&open, "requests pass unlimited"), (&closed, "requests get 503")] {
        let logs = keel.logs();
        assert!(logs.contains("rate limits cannot be checked") && logs.contains(says), "{logs}");
    }
}

/// The time of day of a log's first line (`2026-12-04T11:39:56.123Z …`), in seconds.
fn seconds_of_day(log: &str) -> i64 {
    let time = log.split('T').nth(1).unwrap_or_else(|| panic!("no timestamp in {log}"));
    let parts: Vec<i64> = time[..8].split(':').map(|p| p.parse().unwrap()).collect();
    parts[0] * 3600 + parts[1] * 60 + parts[2]
}

/// One chat request with the shared key.
async fn chat(keel: &KeelProcess) -> reqwest::Response {
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let request = reqwest::Client::new().post(format!("{}/api/chat", keel.base)).bearer_auth("shared-agent-key");
    request.json(&body).send().await.unwrap()
}
