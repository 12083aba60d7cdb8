//! `keel doctor` against real things: a fake Ollama with and without the routed model, a port
//! nothing listens on, a store path that cannot be created, a Redis that is there (127.0.0.1:6379
//! or `KEEL_TEST_REDIS_URL`) and one that is not. Each problem is named with its fix and makes the
//! exit status non-zero; a healthy setup exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::path::Path;
use std::process::{Command, Output};

use keel_mock::MockServer;
use keel_testkit::process::free_port;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

async fn ollama_with(model: &str) -> MockServer {
    let scenario = keel_testkit::scenario(&format!("[[model]]\nname = \"{model}\"\ncontext_length = 8192\n"));
    MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await.unwrap()
}

fn doctor(dir: &Path, config: &str) -> (Output, String) {
    let path = dir.join("keel.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(KEEL)
        .args(["doctor", "--config"])
        .arg(&path)
        .current_dir(dir)
        .env_remove("KEEL_STORE")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output, text)
}

fn redis_url() -> String {
    std::env::var("KEEL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn redis_is_up() -> bool {
    let address = redis_url().trim_start_matches("redis://").split('/').next().unwrap_or_default().to_owned();
    let up = std::net::TcpStream::connect(&address).is_ok();
    if !up && std::env::var("KEEL_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("Redis is not running at {address}; scripts/test.sh starts it");
    }
    up
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_setup_passes() {
    let ollama = ollama_with("llama3.2").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let limits = if redis_is_up() {
        format!("[limits]\nstore = \"{}\"\n", redis_url())
    } else {
        eprintln!("SKIP (Redis part): Redis is not running");
        String::new()
    };
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}\"\n\
         [[upstream]]\nname = \"local\"\nurl = \"{}\"\n[[route]]\nmodel = \"llama3.2\"\ntargets = [\"local\"]\n{limits}",
        dir.path().join("keel.db").display(),
        ollama.url()
    );
    let (output, text) = doctor(dir.path(), &config);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("ok       upstream \"local\""), "{text}");
    assert!(text.contains("model \"llama3.2\" on \"local\": present, context 8192 tokens"), "{text}");
    assert!(text.contains("writable"), "{text}");
    if !limits.is_empty() {
        assert!(text.contains("answers PING"), "{text}");
        assert!(text.contains("ok       clock: agrees with"), "{text}");
    }
    assert!(text.contains("no problems found"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn it_finds_a_dead_upstream_a_missing_model_an_unwritable_store_and_an_unreachable_redis() {
    let ollama = ollama_with("llama3.2").await;
    let dir = tempfile::tempdir().unwrap();
    // A store path under a regular file: no directory can be made there (also for root).
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    let config = format!(
        "[store]\nurl = \"sqlite://{}\"\n\
         [[upstream]]\nname = \"dead\"\nurl = \"http://127.0.0.1:{}\"\n\
         [[upstream]]\nname = \"local\"\nurl = \"{}\"\n\
         [[route]]\nmodel = \"qwen2.5\"\ntargets = [\"dead\", \"local\"]\n\
         [limits]\nstore = \"redis://127.0.0.1:{}\"\n",
        blocker.join("keel.db").display(),
        free_port(),
        ollama.url(),
        free_port()
    );
    let (output, text) = doctor(dir.path(), &config);
    assert!(!output.status.success(), "{text}");
    for expected in [
        "PROBLEM  upstream \"dead\"",
        "not reachable: connection refused",
        "fix: start Ollama",
        "PROBLEM  model \"qwen2.5\" on \"local\": routes send it here but the server does not have it",
        "ollama pull qwen2.5",
        "PROBLEM  store sqlite://",
        "make the file's directory writable",
        "PROBLEM  redis redis://127.0.0.1:",
        "cannot connect",
        "start Redis",
        "4 problem(s) found",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_broken_config_is_a_problem_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (output, text) = doctor(dir.path(), "[server]\nlisten = \"nowhere\"\n");
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("PROBLEM  config") && text.contains("listen"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listening_on_the_network_without_any_key_is_a_problem_until_the_store_holds_one() {
    let ollama = ollama_with("llama3.2").await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"0.0.0.0:{}\"\n[store]\nurl = \"sqlite://{}\"\n\
         [[upstream]]\nname = \"local\"\nurl = \"{}\"\n[[route]]\nmodel = \"llama3.2\"\ntargets = [\"local\"]\n",
        free_port(),
        dir.path().join("keel.db").display(),
        ollama.url()
    );
    let (output, text) = doctor(dir.path(), &config);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("PROBLEM  api keys: keel serve will refuse to start"), "{text}");
    assert!(text.contains("fix: create one: `keel keys create NAME`"), "{text}");
    let created = Command::new(KEEL)
        .args(["keys", "create", "agent", "--config"])
        .arg(dir.path().join("keel.toml"))
        .current_dir(dir.path())
        .env_remove("KEEL_STORE")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let (output, text) = doctor(dir.path(), &config);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("ok       api keys: 0 in [auth], 1 active in the store"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_receivers_are_checked_without_delivering_anything() {
    let ollama = ollama_with("llama3.2").await;
    let receiver = keel_testkit::webhooks::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}/hook", free_port());
    let config = format!(
        "[store]\nurl = \"sqlite://{}\"\n[[upstream]]\nname = \"local\"\nurl = \"{}\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"local\"]\n\
         [[notify]]\nurl = \"{}\"\n[[notify]]\nurl = \"{dead}\"\n",
        dir.path().join("keel.db").display(),
        ollama.url(),
        receiver.url()
    );
    let (output, text) = doctor(dir.path(), &config);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains(&format!("ok       notify #1 {}: reachable", receiver.url())), "{text}");
    assert!(text.contains(&format!("PROBLEM  notify #2 {dead}: not reachable")), "{text}");
    assert!(text.contains("incident notifications would not arrive"), "{text}");
    assert!(text.contains("1 problem(s) found"), "{text}");
    // The check is a bodiless GET: no webhook (no body, no webhook-id) reached the receiver.
    for request in receiver.deliveries() {
        assert!(request.body.is_empty() && request.header("webhook-id").is_empty(), "{request:?}");
    }
}
