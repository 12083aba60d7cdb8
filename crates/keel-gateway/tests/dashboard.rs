//! The dashboard at `/keel/ui` in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `scripts/test.sh`) driven by `playwright-core` (`tests/clients/js`). The page
//! loads with keys on (the key given as the browser's password) without console errors or failed
//! requests, shows the targets, shows a breaker opening within 2 s of it happening, and lists a
//! session whose transcript opens on a click. The
//! screenshot is kept in `target/test-artifacts/dashboard.png`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::process::Stdio;
use std::time::{Duration, Instant};

use keel_testkit::{TestGateway, client_tool, config_from_toml_with_env, workspace_root};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const ADMIN_KEY: &str = "dashboard-admin-key-1";

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_loads_clean_and_shows_a_breaker_opening_within_two_seconds() {
    let Some(modules) = client_tool("target/test-clients/node/node_modules/playwright-core") else {
        eprintln!("SKIP: playwright-core is not installed; run scripts/install-test-clients.sh");
        return;
    };
    // Debian's chromium (an absolute path: `client_tool` takes it as it is), or KEEL_CHROMIUM.
    let chromium = std::env::var("KEEL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let Some(chromium) = client_tool(&chromium) else {
        eprintln!("SKIP: {chromium} is not installed (scripts/test.sh installs it)");
        return;
    };
    let mock = keel_mock::MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        keel_testkit::scenario("[[model]]\nname = \"m\"\nreply = \"hi\"\n"),
    )
    .await
    .unwrap();
    // A store with two hours of this instance's timeline in it (an instance is HOSTNAME:PORT of
    // its listen address; the test gateway's port is 0).
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("keel.db").display());
    let stores = keel_session::open_stores(&store_url).await.unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap();
    let now = keel_session::now_millis() / 60_000;
    for minute in 0..120 {
        let sample = serde_json::json!({"requests": minute * minute, "errors": minute});
        stores.history.put_sample(&format!("{host}:0"), now - 120 + minute, sample).await.unwrap();
    }
    let toml = format!(
        "[store]\nurl = \"{store_url}\"\n[[upstream]]\nname = \"local\"\nurl = \"{}\"\n[[route]]\nmodel = \"m\"\ntargets = [\"local\"]\n\
         [auth]\nkeys = [{{ name = \"ops\", key_env = \"DASHBOARD_KEY\", scopes = [\"inference\", \"admin\"] }}]\n",
        mock.url()
    );
    let keel = TestGateway::start(config_from_toml_with_env(&toml, &|name| {
        (name == "DASHBOARD_KEY").then(|| ADMIN_KEY.to_owned())
    }))
    .await;
    let client = reqwest::Client::new();
    // Without the key the page asks the browser for one.
    let refused = client.get(format!("{}/keel/ui", keel.url())).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));

    // A conversation in the store, for the sessions list and its transcript.
    let chat = client
        .post(format!("{}/api/chat", keel.url()))
        .bearer_auth(ADMIN_KEY)
        .header("x-keel-session", "dashboard-session-1")
        .json(&serde_json::json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "Where is my parcel?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);

    let artifacts = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = workspace_root().join("tests/clients/js/dashboard_test.cjs");
    let mut driver = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("{}/keel/ui", keel.url()))
        .arg("local:m")
        .arg(&screenshot)
        .arg(ADMIN_KEY)
        .env("KEEL_NODE_MODULES", modules.parent().unwrap())
        .env("KEEL_CHROMIUM", &chromium)
        .env("KEEL_SESSION", "dashboard-session-1")
        .env("KEEL_EXPECT_INCIDENT", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut opened_at = None;
    let mut errors = None;
    let mut transcript = None;
    let mut runbook = None;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.unwrap().unwrap() {
        match line.as_str() {
            "READY" => {
                let opened = client
                    .post(format!("{}/keel/breakers/local:m/open", keel.url()))
                    .bearer_auth(ADMIN_KEY)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(opened.status(), 200);
                opened_at = Some(Instant::now());
                // An incident for the incidents table (a forced breaker is an operator's act, not one).
                let posted = client
                    .post(format!("{}/keel/events", keel.url()))
                    .bearer_auth(ADMIN_KEY)
                    .json(&serde_json::json!({"type": "upstream.down", "upstream": "local", "message": "drill"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(posted.status(), 202);
            }
            "OPEN_SEEN" => {
                let shown_after = opened_at.expect("OPEN_SEEN before the breaker was opened").elapsed();
                assert!(
                    shown_after <= Duration::from_secs(2),
                    "the page showed the open breaker after {shown_after:?}"
                );
            }
            other => {
                if let Some(json) = other.strip_prefix("TRANSCRIPT ") {
                    transcript = Some(serde_json::from_str::<String>(json).unwrap());
                }
                if let Some(json) = other.strip_prefix("RUNBOOK ") {
                    runbook = Some(serde_json::from_str::<Value>(json).unwrap());
                }
                if let Some(json) = other.strip_prefix("ERRORS ") {
                    errors = Some(serde_json::from_str::<Vec<String>>(json).unwrap());
                }
            }
        }
    }
    let status = driver.wait().await.unwrap();
    let errors = errors.expect("the driver reported nothing");
    assert!(errors.is_empty(), "the dashboard had errors: {errors:#?}");
    assert!(status.success());
    assert!(opened_at.is_some(), "the page never showed the target");
    let transcript = transcript.expect("the session's transcript was not shown");
    assert!(transcript.contains("Where is my parcel?") && transcript.contains("assistant"), "{transcript}");
    let runbook = runbook.expect("the incident's runbook was not shown");
    let headings: Vec<&str> = runbook["headings"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    for section in ["Failure modes", "Alerts", "Incident response", "Health checks", "Evidence"] {
        assert!(headings.contains(&section), "{section} is not a heading: {runbook}");
    }
    let commands = runbook["commands"].as_array().unwrap();
    assert!(
        commands.iter().any(|c| c.as_str().unwrap().contains("/api/version")),
        "steps' commands as code: {runbook}"
    );
    let text = runbook["text"].as_str().unwrap();
    assert!(
        text.contains("upstream local") && !text.contains("## ") && !text.contains("**"),
        "rendered, not raw: {text}"
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "no screenshot at {}", screenshot.display());
}
