//! Durable incident jobs survive `kill -9`: keel is killed while the model writes an
//! incident's runbook; after a restart on the same store the job runs again once its lease
//! ends, and the runbook is produced once — by the model, with the incident's one webhook
//! delivered once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::process::Command;
use std::time::{Duration, Instant};

use keel_mock::MockServer;
use keel_testkit::process::{KeelProcess, free_port};
use keel_testkit::scenario;
use keel_testkit::webhooks::WebhookReceiver;
use serde_json::{Value, json};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

const RUNBOOK_ANSWER: &str = r#"{"what_broke": "The disk of the model server is almost full.", "affected": "Every agent.", "keel_did": "Recorded the alert.", "todo": ["Free disk space."], "cause": {"known": true, "text": "Old model files fill the disk.", "tell_apart": null}, "failure_modes": [{"name": "Disk full", "signs": "df shows 100%", "fix": "remove unused models"}], "alerts": [{"name": "DiskFull", "when": "node_filesystem_avail_bytes < 1e9"}], "response": [{"action": "See what fills the disk", "command": "du -sh /usr/share/ollama"}], "health_checks": [{"command": "df -h /", "expect": "less than 90% used"}]}"#;

fn writer(latency: &str) -> keel_mock::Scenario {
    scenario(&format!("[[model]]\nname = \"writer\"\nlatency = \"{latency}\"\njson_reply = '{RUNBOOK_ANSWER}'\n"))
}

async fn start(dir: &std::path::Path, port: u16, round: u32) -> KeelProcess {
    let mut command = Command::new(KEEL);
    command
        .args(["serve", "--config", dir.join("keel.toml").to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("RUST_LOG")
        .env_remove("KEEL_STORE");
    KeelProcess::start(command, port, &dir.join(format!("keel-{round}.log"))).await
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

async fn wait_until<F, Fut>(what: &str, within: Duration, keel: &KeelProcess, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < within, "no {what} within {within:?}; keel logged:\n{}", keel.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_runbook_job_cut_by_kill_9_is_produced_once_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(([127, 0, 0, 1], 0).into(), writer("30s")).await.unwrap();
    let receiver = WebhookReceiver::start().await;
    std::fs::write(
        dir.path().join("keel.toml"),
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[[upstream]]\nname = \"local\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
             [[route]]\nmodel = \"writer\"\ntargets = [\"local\"]\n\
             [incidents]\nmodel = \"writer\"\nrunbook_dir = \"runbooks\"\njob_lease = \"3s\"\nmodel_retry = \"1s\"\n\
             [[notify]]\nurl = \"{}\"\n",
            dir.path().join("keel.db").display(),
            mock.url(),
            receiver.url()
        ),
    )
    .unwrap();
    let port = free_port();
    let keel = start(dir.path(), port, 1).await;
    let posted: Value = reqwest::Client::new()
        .post(format!("{}/keel/events", keel.base))
        .json(
            &json!({"type": "alert.firing", "fingerprint": "disk-1", "title": "disk almost full on the model server"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = posted["incidents"][0].as_str().unwrap().to_owned();
    let runbook_url = format!("{}/keel/incidents/{id}/runbook", keel.base);

    // The template's runbook is there, and the model is being asked (it takes 30 s): kill -9.
    wait_until("the model asked", Duration::from_secs(15), &keel, || async {
        mock.requests().iter().any(|request| request.path == "/api/chat")
    })
    .await;
    let template = get(&runbook_url).await.text().await.unwrap();
    assert!(template.contains("by template"), "{template}");
    drop(keel);
    let asked_before = mock.requests().iter().filter(|request| request.path == "/api/chat").count();
    assert_eq!(asked_before, 1);

    // The model answers at once now; keel restarts on the same store.
    mock.set_scenario(writer("0s"));
    let keel = start(dir.path(), port, 2).await;
    let runbook_url = format!("{}/keel/incidents/{id}/runbook", keel.base);
    wait_until("the model's runbook", Duration::from_secs(20), &keel, || async {
        get(&runbook_url).await.text().await.unwrap().contains("by model:writer")
    })
    .await;
    let runbook = get(&runbook_url).await.text().await.unwrap();
    assert!(runbook.contains("Old model files fill the disk."), "{runbook}");

    // Produced once: one file, one runbook job (done, claimed twice), one more model call.
    let files: Vec<_> =
        std::fs::read_dir(dir.path().join("runbooks")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, [std::ffi::OsString::from(format!("{id}.md"))]);
    assert_eq!(std::fs::read_to_string(dir.path().join("runbooks").join(format!("{id}.md"))).unwrap(), runbook);
    let jobs: Value = get(&format!("{}/keel/jobs", keel.base)).await.json().await.unwrap();
    let runbook_jobs: Vec<&Value> =
        jobs["jobs"].as_array().unwrap().iter().filter(|job| job["kind"] == "runbook").collect();
    assert_eq!(runbook_jobs.len(), 1, "{jobs}");
    assert_eq!(
        (runbook_jobs[0]["status"].as_str(), runbook_jobs[0]["attempts"].as_u64()),
        (Some("done"), Some(2)),
        "{jobs}"
    );
    assert_eq!(jobs["counts"]["failed"], 0, "{jobs}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mock.requests().iter().filter(|request| request.path == "/api/chat").count(), 2);
    let opened: Vec<String> = receiver.accepted().iter().map(|d| d.header("webhook-id").to_owned()).collect();
    assert_eq!(opened.len(), 1, "one state change, one delivery: {opened:?}");
}
