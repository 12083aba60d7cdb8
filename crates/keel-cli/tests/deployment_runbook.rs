//! `keel runbook deployment` with a config in a temp directory: without a running keel (the
//! runbook says there are no probe results, the rules pass `promtool check rules` and a
//! `promtool test rules` unit test of one rule), and with one in front of a fake Ollama and a
//! dead llama-server (the probes' findings are in the runbook). promtool comes from
//! `scripts/install-promtool.sh`; with `KEEL_REQUIRE_TOOLS=1` a missing promtool fails the test
//! instead of skipping its part.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use keel_incident::runbook::deployment::{FAILURES, RULE_GROUP};
use keel_incident::runbook::placeholders;
use keel_testkit::process::{KeelProcess, free_port};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Runs `keel ARGS` in `dir` (no inherited store, config, keel address or key).
fn keel(dir: &Path, args: &[&str]) -> Output {
    Command::new(KEEL)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("KEEL_STORE")
        .env_remove("KEEL_CONFIG")
        .env_remove("KEEL_URL")
        .env_remove("KEEL_HOST")
        .env_remove("KEEL_KEY")
        .env_remove("KEEL_API_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    (String::from_utf8(out.stdout.clone()).unwrap(), stderr)
}

/// promtool from PATH or `target/test-tools/bin`; `None` (after saying so) when it is missing and
/// not required.
fn promtool() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/bin/promtool");
    if local.exists() {
        return Some(local);
    }
    if Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from("promtool"));
    }
    if std::env::var("KEEL_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("promtool is missing: run scripts/test.sh, which installs it");
    }
    eprintln!("SKIP: promtool is not installed (scripts/test.sh installs it)");
    None
}

fn run(tool: &Path, args: &[&str], dir: &Path) -> String {
    let output = Command::new(tool).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{} {args:?} failed:\n{text}", tool.display());
    text
}

/// A config with two upstreams (an Ollama at `ollama`, a llama-server at `openai`) and two
/// routes, keel listening on `port`, runbooks under `runbooks/`.
fn config(port: u16, ollama: &str, openai: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\
         [store]\nurl = \"sqlite://keel.db\"\n\
         [[upstream]]\nname = \"gpu\"\nurl = \"{ollama}\"\nhealth_interval = \"1s\"\n\
         [[upstream]]\nname = \"cpu\"\nurl = \"{openai}\"\ndialect = \"openai\"\nhealth_interval = \"1s\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"gpu\", \"cpu:qwen2.5\"]\n\
         [[route]]\nmodel = \"coder\"\ntargets = [\"gpu:qwen2.5-coder\"]\n\
         [incidents]\nrunbook_dir = \"runbooks\"\n"
    )
}

/// The rule of `alert` whose labels include `label` (e.g. `upstream: 'gpu'`), as written.
fn rule<'a>(yaml: &'a str, alert: &str, label: &str) -> &'a str {
    yaml.split("      - alert: ")
        .find(|rule| rule.starts_with(&format!("'{alert}'\n")) && rule.contains(&format!("\n          {label}\n")))
        .unwrap_or_else(|| panic!("no {alert} rule with {label}:\n{yaml}"))
}

/// The value of `key` in a rule, as written (a quoted scalar).
fn field<'a>(rule: &'a str, key: &str) -> &'a str {
    let line = rule.lines().find(|line| line.trim_start().starts_with(&format!("{key}: "))).unwrap();
    line.trim_start()[key.len() + 2..].trim_end()
}

#[test]
fn without_a_running_keel_writes_the_runbook_and_rules_promtool_accepts() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on keel's port, nor on the llama-server's.
    let (port, dead) = (free_port(), free_port());
    let config_path = dir.path().join("keel.toml");
    std::fs::write(&config_path, config(port, "http://10.0.0.5:11434", &format!("http://127.0.0.1:{dead}"))).unwrap();

    let (stdout, stderr) = ok(&keel(dir.path(), &["runbook", "deployment", "--config", config_path.to_str().unwrap()]));
    let runbooks = dir.path().join("runbooks");
    let (md_path, yaml_path) = (runbooks.join("deployment-runbook.md"), runbooks.join("keel-alerts.yml"));
    assert_eq!(stdout, format!("{}\n{}\n", md_path.display(), yaml_path.display()));
    assert!(stderr.contains("No probe results") && stderr.contains("cannot reach keel"), "{stderr}");

    let markdown = std::fs::read_to_string(&md_path).unwrap();
    assert!(markdown.starts_with(&format!("# Deployment runbook: keel at http://127.0.0.1:{port}\n")), "{markdown}");
    for section in ["## Upstreams", "## Routes and fallbacks", "## Failure catalogue", "## Alerts", "## Daily checks"] {
        assert!(markdown.contains(&format!("\n{section}\n")), "{section} missing:\n{markdown}");
    }
    assert!(markdown.contains("keel was not running when this was written: no probe results"), "{markdown}");
    assert!(markdown.contains("sqlite://keel.db") && markdown.contains("2 upstreams") && markdown.contains("2 routes"));
    assert!(markdown.contains("curl -sS --max-time 5 http://10.0.0.5:11434/api/version"), "{markdown}");
    assert!(markdown.contains(&format!("curl -sS --max-time 5 http://127.0.0.1:{dead}/health")), "{markdown}");
    assert!(markdown.contains("\nOLLAMA_HOST=10.0.0.5:11434 ollama ps\n"), "{markdown}");
    assert!(
        markdown.contains("1. `gpu`: `llama3.2` on gpu") && markdown.contains("2. `cpu:qwen2.5`: `qwen2.5` on cpu")
    );
    for (index, failure) in FAILURES.iter().enumerate() {
        assert!(markdown.contains(&format!("\n### {}. {failure}\n", index + 1)), "{failure} missing:\n{markdown}");
    }
    assert!(markdown.contains("keel incidents list --status open --config "), "{markdown}");
    assert_eq!(placeholders::find(&markdown), None, "{markdown}");

    let yaml = std::fs::read_to_string(&yaml_path).unwrap();
    assert!(yaml.contains(&format!("  - name: '{RULE_GROUP}'\n")), "{yaml}");
    assert_eq!(
        field(rule(&yaml, "KeelUpstreamOut", "upstream: 'gpu'"), "expr"),
        "'keel_breaker_state{target=\"gpu\"} == 2'"
    );
    assert_eq!(field(rule(&yaml, "KeelUpstreamOut", "upstream: 'cpu'"), "for"), "'2m'");
    assert!(field(rule(&yaml, "KeelModelUnavailable", "model: 'coder'"), "expr").contains("status=\"503\""));
    rule(&yaml, "KeelModelUnavailable", "model: 'llama3.2'");
    for alert in [
        "KeelIncidentOpen",
        "KeelJobsFailed",
        "KeelNotificationsFailing",
        "KeelStructuredOutputFailed",
        "KeelAdmissionShedding",
    ] {
        assert!(yaml.contains(&format!("      - alert: '{alert}'\n")), "{alert} missing:\n{yaml}");
    }

    let Some(promtool) = promtool() else { return };
    let checked = run(&promtool, &["check", "rules", "keel-alerts.yml"], &runbooks);
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");

    // A unit test of one rule: gpu's breaker open for two minutes pages, with the words written.
    let gpu = rule(&yaml, "KeelUpstreamOut", "upstream: 'gpu'");
    let test = format!(
        "rule_files: [keel-alerts.yml]\n\
         evaluation_interval: 1m\n\
         tests:\n\
         \x20 - interval: 1m\n\
         \x20   input_series:\n\
         \x20     - series: 'keel_breaker_state{{instance=\"shop:11435\",target=\"gpu\"}}'\n\
         \x20       values: '0 2 2 2 2 2'\n\
         \x20     - series: 'keel_breaker_state{{instance=\"shop:11435\",target=\"cpu\"}}'\n\
         \x20       values: '0 0 0 0 0 0'\n\
         \x20   alert_rule_test:\n\
         \x20     - eval_time: 2m\n\
         \x20       alertname: KeelUpstreamOut\n\
         \x20       exp_alerts: []\n\
         \x20     - eval_time: 4m\n\
         \x20       alertname: KeelUpstreamOut\n\
         \x20       exp_alerts:\n\
         \x20         - exp_labels: {{ severity: page, upstream: gpu, instance: 'shop:11435', target: gpu }}\n\
         \x20           exp_annotations:\n\
         \x20             summary: {}\n\
         \x20             description: {}\n",
        field(gpu, "summary"),
        field(gpu, "description"),
    );
    std::fs::write(runbooks.join("keel-alerts.test.yml"), test).unwrap();
    let tested = run(&promtool, &["test", "rules", "keel-alerts.test.yml"], &runbooks);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[tokio::test]
async fn with_a_running_keel_the_probes_findings_are_in_the_runbook() {
    let dir = tempfile::tempdir().unwrap();
    let ollama = keel_mock::MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        keel_mock::Scenario::single_model("llama3.2", "Hello from keel-mock."),
    )
    .await
    .unwrap();
    let (port, dead) = (free_port(), free_port());
    let config_path = dir.path().join("keel.toml");
    std::fs::write(&config_path, config(port, &ollama.url(), &format!("http://127.0.0.1:{dead}"))).unwrap();
    let mut command = Command::new(KEEL);
    command
        .args(["serve", "--config", config_path.to_str().unwrap()])
        .current_dir(dir.path())
        .env_remove("KEEL_STORE")
        .env_remove("KEEL_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    let running = KeelProcess::start(command, port, &dir.path().join("keel.log")).await;
    // Wait until keel has probed both upstreams.
    let client = reqwest::Client::new();
    let mut probed = false;
    for _ in 0..100 {
        let status: serde_json::Value =
            client.get(format!("{}/keel/status", running.base)).send().await.unwrap().json().await.unwrap();
        let states: Vec<&str> =
            status["upstreams"].as_array().unwrap().iter().filter_map(|up| up["state"].as_str()).collect();
        if states == ["up", "down"] && status["upstreams"][0]["health"]["models"].is_array() {
            probed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(probed, "keel did not probe its upstreams:\n{}", running.logs());

    let out = dir.path().join("out");
    let (stdout, stderr) = ok(&keel(
        dir.path(),
        &["runbook", "deployment", "--config", config_path.to_str().unwrap(), "--output", out.to_str().unwrap()],
    ));
    assert!(stdout.contains("deployment-runbook.md") && stdout.contains("keel-alerts.yml"), "{stdout}");
    assert!(stderr.contains("probe results of the running keel"), "{stderr}");
    let markdown = std::fs::read_to_string(out.join("deployment-runbook.md")).unwrap();
    assert!(!markdown.contains("no probe results"), "{markdown}");
    assert!(markdown.contains("up at keel's last probe"), "{markdown}");
    assert!(markdown.contains("DOWN at keel's last probe"), "{markdown}");
    assert!(markdown.contains("`qwen2.5-coder` is routed here but is not on gpu"), "{markdown}");
    assert!(!markdown.contains("`llama3.2` is routed here"), "{markdown}");
    assert_eq!(placeholders::find(&markdown), None, "{markdown}");
    drop(running);
}
