//! Real-client compatibility: the official Ollama Python and JavaScript clients, the OpenAI
//! Python SDK (chat completions and the Responses API) and the Anthropic Python SDK, unchanged,
//! pointed at keel (and, as a control, straight at keel-mock).
//!
//! The clients are installed (pinned) by `scripts/install-test-clients.sh` into
//! `target/test-clients/`; the driver scripts live in `tests/clients/`. A missing install skips
//! these tests with a note, unless `KEEL_REQUIRE_CLIENTS=1` (the test script and CI), which makes
//! it a failure.
//!
//! Each driver prints `ok NAME` / `FAIL NAME: reason` per check and ends with `N passed, M failed`.
//! The `*_directly_against_mock` tests run the same drivers against keel-mock without keel: when
//! those pass and the `*_through_keel` ones fail, the fault is keel's.

#![allow(
    clippy::panic,
    clippy::print_stdout,
    reason = "test helpers: a failed driver must stop the test loudly and show its output"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use keel_mock::Scenario;
use keel_testkit::{Stack, client_tool, workspace_root};

/// What `llama3.2` answers to plain requests; the drivers check it verbatim.
const REPLY: &str = "Hello from keel-mock: the quick brown fox jumps over the lazy dog.";

/// The fake Ollama behind keel: one model answering [`REPLY`], a `get_weather` tool call when tools
/// are offered, schema-conforming JSON when a format is asked for, loaded (listed by `/api/ps`).
fn scenario_toml() -> String {
    format!(
        r#"
seed = 7

[[model]]
name = "llama3.2"
reply = "{REPLY}"
token_delay = "0ms"
embedding_dim = 16
loaded = true
tool_call = {{ name = "get_weather", arguments = {{ city = "Paris" }} }}
"#
    )
}

fn scenario() -> Scenario {
    match Scenario::from_toml_str(&scenario_toml()) {
        Ok(s) => s,
        Err(err) => panic!("invalid test scenario: {err}"),
    }
}

/// How long one driver script may run (it makes a few dozen requests to a local mock).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

const PYTHON: &str = "target/test-clients/venv/bin/python";
const NODE_DIR: &str = "target/test-clients/node";
const NODE_CLIENT: &str = "target/test-clients/node/node_modules/ollama";

/// Which server a driver talks to.
#[derive(Debug, Clone, Copy)]
enum Via {
    Keel,
    MockDirectly,
    /// keel in front of a mock that speaks only the OpenAI dialect (as llama.cpp's
    /// `llama-server`): every other API is translated by keel.
    KeelOpenAiUpstream,
}

/// Runs `program args.. URL REPLY` with a timeout and asserts it passed every check;
/// `KEEL_UPSTREAM_DIALECT` tells the driver what serves the answers behind `url` (checks of
/// endpoints only some upstreams have depend on it).
async fn run_driver(label: &str, program: &Path, args: &[&Path], url: &str, via: Via) {
    let dialect = match via {
        Via::KeelOpenAiUpstream => "openai",
        Via::Keel | Via::MockDirectly => "ollama",
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .arg(url)
        .arg(REPLY)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // The clients must reach the URL given, not a host or key from the environment, and never
        // through an HTTP proxy.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONUNBUFFERED", "1")
        .env("KEEL_UPSTREAM_DIALECT", dialect)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    for var in [
        "OLLAMA_HOST",
        "OLLAMA_API_KEY",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "NODE_OPTIONS",
    ] {
        cmd.env_remove(var);
    }
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => panic!("{label}: cannot start {}: {err}", program.display()),
    };
    let output = match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => panic!("{label}: waiting for {} failed: {err}", program.display()),
        Err(_) => panic!("{label}: {} did not finish within {SCRIPT_TIMEOUT:?} (killed)", program.display()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!(
        "{label} ({url}) exited with {}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}--------------",
        output.status
    );
    println!("{report}");
    let summary = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let counts = parse_summary(summary);
    assert!(output.status.success(), "{label}: driver failed\n{report}");
    match counts {
        Some((passed, 0)) if passed > 0 => {}
        _ => panic!("{label}: driver exited 0 but its last line is not `N passed, 0 failed` with N > 0\n{report}"),
    }
}

/// Parses the drivers' final line `N passed, M failed`.
fn parse_summary(line: &str) -> Option<(u32, u32)> {
    let (passed, failed) = line.trim().split_once(" passed, ")?;
    let failed = failed.strip_suffix(" failed")?;
    Some((passed.parse().ok()?, failed.parse().ok()?))
}

fn script(relative: &str) -> PathBuf {
    let path = workspace_root().join(relative);
    assert!(path.is_file(), "driver script {} is missing", path.display());
    path
}

/// The URL the drivers get: keel's, or the mock's own.
fn target_url(stack: &Stack, via: Via) -> String {
    match via {
        Via::Keel | Via::KeelOpenAiUpstream => stack.keel.url(),
        Via::MockDirectly => stack.mock.url(),
    }
}

/// The mock and keel for `via`.
async fn stack(via: Via) -> Stack {
    match via {
        Via::Keel | Via::MockDirectly => Stack::start(scenario()).await,
        Via::KeelOpenAiUpstream => {
            let scenario = scenario().with_api(keel_mock::ApiSurface::Openai);
            let mock = match keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await {
                Ok(mock) => mock,
                Err(err) => panic!("cannot start keel-mock: {err}"),
            };
            let config = format!(
                "[[upstream]]\nname = \"llamacpp\"\nurl = \"{}\"\ndialect = \"openai\"\nhealth_interval = \"0s\"\n",
                mock.url()
            );
            let keel = keel_testkit::TestGateway::start(keel_testkit::config_from_toml(&config)).await;
            Stack { mock, keel }
        }
    }
}

async fn python_driver(driver: &str, via: Via) {
    let Some(python) = client_tool(PYTHON) else {
        println!(
            "SKIP: {PYTHON} is not installed; run scripts/install-test-clients.sh (KEEL_REQUIRE_CLIENTS=1 makes this an error)"
        );
        return;
    };
    let driver = script(driver);
    let stack = stack(via).await;
    let url = target_url(&stack, via);
    let label = format!("{} via {via:?}", driver.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
    run_driver(&label, &python, &[&driver], &url, via).await;
    check_mock_was_reached(&stack, &label);
    stack.keel.shutdown().await;
    stack.mock.shutdown().await;
}

/// The answers the clients accepted really came from the mock (through keel, in the keel runs):
/// guards against a driver that passes without talking to anything.
fn check_mock_was_reached(stack: &Stack, label: &str) {
    let requests = stack.mock.requests();
    let inference = requests
        .iter()
        .filter(|r| r.method == "POST" && (r.path.starts_with("/api/") || r.path.starts_with("/v1/")))
        .count();
    assert!(inference > 0, "{label}: keel-mock recorded no inference request ({} requests in all)", requests.len());
}

/// Finds `node` on `PATH`.
fn find_node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("node")).find(|p| p.is_file())
}

async fn js_driver(via: Via) {
    if client_tool(NODE_CLIENT).is_none() {
        println!(
            "SKIP: {NODE_CLIENT} is not installed; run scripts/install-test-clients.sh (KEEL_REQUIRE_CLIENTS=1 makes this an error)"
        );
        return;
    }
    let Some(node) = find_node() else {
        if std::env::var("KEEL_REQUIRE_CLIENTS").is_ok_and(|v| v == "1") {
            panic!("`node` is not on PATH but KEEL_REQUIRE_CLIENTS=1");
        }
        println!("SKIP: `node` is not on PATH");
        return;
    };
    // The driver imports `ollama` by its bare name: run a copy placed next to the node_modules
    // that holds the pinned client (one copy per test, so parallel tests never share a file).
    let source = script("tests/clients/js/ollama_client_test.mjs");
    let copy = workspace_root().join(NODE_DIR).join(format!("ollama_client_test.{via:?}.{}.mjs", std::process::id()));
    if let Err(err) = std::fs::copy(&source, &copy) {
        panic!("cannot copy {} to {}: {err}", source.display(), copy.display());
    }
    let stack = Stack::start(scenario()).await;
    let url = target_url(&stack, via);
    let label = format!("ollama_client_test.mjs via {via:?}");
    run_driver(&label, &node, &[&copy], &url, via).await;
    let _ = std::fs::remove_file(&copy);
    check_mock_was_reached(&stack, &label);
    stack.keel.shutdown().await;
    stack.mock.shutdown().await;
}

#[test]
fn scenario_parses_and_summary_parser_works() {
    let s = scenario();
    assert_eq!(s.models.len(), 1);
    assert!(s.models[0].tool_call.is_some());
    assert_eq!(parse_summary("27 passed, 0 failed"), Some((27, 0)));
    assert_eq!(parse_summary("3 passed, 2 failed\n"), Some((3, 2)));
    assert_eq!(parse_summary("ok chat"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_python_client_through_keel() {
    python_driver("tests/clients/ollama_client_test.py", Via::Keel).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_through_keel() {
    python_driver("tests/clients/openai_client_test.py", Via::Keel).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_js_client_through_keel() {
    js_driver(Via::Keel).await;
}

/// Control: the same driver straight against keel-mock. If this passes and the keel variant fails,
/// keel broke the client; if this fails too, the driver or the mock is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn ollama_python_client_directly_against_mock() {
    python_driver("tests/clients/ollama_client_test.py", Via::MockDirectly).await;
}

/// Control for the OpenAI SDK driver (see [`ollama_python_client_directly_against_mock`]).
#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_directly_against_mock() {
    python_driver("tests/clients/openai_client_test.py", Via::MockDirectly).await;
}

/// Control for the Anthropic SDK driver (`/v1/messages`; see
/// [`ollama_python_client_directly_against_mock`]).
#[tokio::test(flavor = "multi_thread")]
async fn anthropic_python_sdk_directly_against_mock() {
    python_driver("tests/clients/anthropic_client_test.py", Via::MockDirectly).await;
}

/// Control for the OpenAI SDK's Responses API driver (`/v1/responses`; see
/// [`ollama_python_client_directly_against_mock`]).
#[tokio::test(flavor = "multi_thread")]
async fn openai_responses_python_sdk_directly_against_mock() {
    python_driver("tests/clients/openai_responses_test.py", Via::MockDirectly).await;
}

/// The Anthropic SDK (`/v1/messages`) through keel in front of an Ollama that serves the API.
#[tokio::test(flavor = "multi_thread")]
async fn anthropic_python_sdk_through_keel() {
    python_driver("tests/clients/anthropic_client_test.py", Via::Keel).await;
}

/// The Anthropic SDK through keel in front of a server that speaks only the OpenAI dialect:
/// keel translates `/v1/messages` to chat completions and back.
#[tokio::test(flavor = "multi_thread")]
async fn anthropic_python_sdk_through_keel_to_an_openai_upstream() {
    python_driver("tests/clients/anthropic_client_test.py", Via::KeelOpenAiUpstream).await;
}

/// The OpenAI SDK's Responses API through keel in front of an Ollama that serves it.
#[tokio::test(flavor = "multi_thread")]
async fn openai_responses_python_sdk_through_keel() {
    python_driver("tests/clients/openai_responses_test.py", Via::Keel).await;
}

/// The Responses API through keel in front of an OpenAI-dialect-only server (translated).
#[tokio::test(flavor = "multi_thread")]
async fn openai_responses_python_sdk_through_keel_to_an_openai_upstream() {
    python_driver("tests/clients/openai_responses_test.py", Via::KeelOpenAiUpstream).await;
}

/// Control for the JavaScript driver (see [`ollama_python_client_directly_against_mock`]).
#[tokio::test(flavor = "multi_thread")]
async fn ollama_js_client_directly_against_mock() {
    js_driver(Via::MockDirectly).await;
}
