//! The files in `deploy/` work with what keel really serves: the Prometheus rules pass promtool
//! (syntax and their unit tests), every keel series the rules and the Grafana dashboard use is on
//! a freshly started keel's `/metrics`, and the systemd unit passes `systemd-analyze verify`.
//! promtool comes from `scripts/install-promtool.sh` (run by `scripts/test.sh`); with
//! `KEEL_REQUIRE_TOOLS=1` a missing tool fails the test instead of skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_testkit::process::{KeelProcess, free_port};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

/// A tool from PATH or `target/test-tools/bin`; `None` (after saying so) when it is missing and
/// not required.
fn tool(name: &str) -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/bin").join(name);
    if local.exists() {
        return Some(local);
    }
    if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from(name));
    }
    if std::env::var("KEEL_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{name} is missing: run scripts/test.sh, which installs it");
    }
    eprintln!("SKIP: {name} is not installed (scripts/test.sh installs it)");
    None
}

fn run(tool: &Path, args: &[&str], dir: &Path) -> String {
    let output = Command::new(tool).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{} {args:?} failed:\n{text}", tool.display());
    text
}

#[test]
fn the_prometheus_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = tool("promtool") else { return };
    let dir = deploy("prometheus");
    let checked = run(&promtool, &["check", "rules", "keel-rules.yml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run(&promtool, &["test", "rules", "keel-rules.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every `keel_…` metric name in `text` (histogram suffixes removed).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("keel_") {
        let start = at + found;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            text[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |e| start + e);
        if boundary {
            let name = &text[start..end];
            let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.insert(base.to_owned());
        }
        at = end;
    }
    names
}

#[tokio::test]
async fn every_series_the_rules_and_dashboard_use_is_served_from_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(
        &config,
        "[[upstream]]\nname = \"local\"\nurl = \"http://127.0.0.1:9\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"local\"]\n[admission]\n",
    )
    .unwrap();
    let mut command = Command::new(KEEL);
    command
        .args(["serve", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--store", &format!("sqlite://{}", dir.path().join("keel.db").display())])
        .current_dir(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", free_port()));
    let keel = KeelProcess::start_on_any_port(command, &dir.path().join("keel.log")).await;
    let served = reqwest::get(format!("{}/metrics", keel.base)).await.unwrap().text().await.unwrap();
    let served = metric_names(&served);

    for file in ["prometheus/keel-rules.yml", "grafana/keel-dashboard.json"] {
        let text = std::fs::read_to_string(deploy(file)).unwrap();
        let used = metric_names(&text);
        assert!(used.len() >= 8, "{file} uses too few keel series: {used:?}");
        let missing: Vec<&String> = used.difference(&served).collect();
        assert!(missing.is_empty(), "{file} uses series keel does not serve at start-up: {missing:?}");
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/keel-dashboard.json")).unwrap()).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else { return };
    let dir = tempfile::tempdir().unwrap();
    // The unit as installed, with keel's path pointing at this build.
    let unit = std::fs::read_to_string(deploy("systemd/keel.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/keel serve"), "{unit}");
    let unit = unit.replace("/usr/local/bin/keel", KEEL);
    let path = dir.path().join("keel.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new(&analyze).args(["verify", path.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Warnings about units the test machine lacks (ollama.service) are not the unit's fault.
    let problems: Vec<&str> =
        stderr.lines().filter(|l| !l.trim().is_empty() && !l.contains("ollama.service")).collect();
    assert!(output.status.success() && problems.is_empty(), "systemd-analyze verify:\n{stderr}");
}
