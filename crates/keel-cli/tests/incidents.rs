//! `keel incidents list|show|resolve` and `keel runbook generate` against a SQLite store in a
//! temp directory holding an incident of an upstream that is down (its address refuses).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use keel_session::{Effect, NewIncidentEvent};
use serde_json::{Value, json};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Runs `keel ARGS` in `dir` (no inherited store, config or keel address).
fn keel(dir: &Path, args: &[&str]) -> Output {
    Command::new(KEEL)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("KEEL_STORE")
        .env_remove("KEEL_CONFIG")
        .env_remove("KEEL_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test]
async fn list_show_resolve_and_generate_a_runbook() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: the upstream of the config is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("keel.toml"),
        format!(
            "[store]\nurl = \"sqlite://keel.db\"\n[[upstream]]\nname = \"local\"\nurl = \"http://127.0.0.1:{port}\"\n\
             [[route]]\nmodel = \"llama3.2\"\ntargets = [\"local\"]\n[incidents]\nrunbook_dir = \"runbooks\"\n"
        ),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&keel(dir.path(), &["incidents", "list"]).stderr).contains("no store at"));

    let stores =
        keel_session::open_stores(&format!("sqlite://{}", dir.path().join("keel.db").display())).await.unwrap();
    let event = NewIncidentEvent {
        fingerprint: "upstream_down:local".into(),
        kind: "upstream_down".into(),
        title: "upstream local is not answering".into(),
        upstream: Some("local".into()),
        model: None,
        event: "breaker.opened".into(),
        effect: Effect::Open,
        detail: json!({"why": "refused: connection refused"}),
    };
    let id = stores.incidents.record_event(event).await.unwrap().incident.unwrap().id;

    let listed = ok(&keel(dir.path(), &["incidents", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("open") && listed.contains("upstream local is not answering"),
        "{listed}"
    );
    let json_line: Value =
        serde_json::from_str(ok(&keel(dir.path(), &["incidents", "list", "--json"])).lines().next().unwrap()).unwrap();
    assert_eq!(json_line["id"], id.as_str());
    let shown = ok(&keel(dir.path(), &["incidents", "show", &id]));
    assert!(shown.contains("breaker.opened") && shown.contains("No runbook yet"), "{shown}");

    // The runbook now, template only: the checks run against the dead address.
    let runbook = ok(&keel(dir.path(), &["runbook", "generate", "--incident", &id, "--no-model"]));
    assert!(runbook.contains(&format!("curl -sS --max-time 5 http://127.0.0.1:{port}/api/version")), "{runbook}");
    assert!(runbook.contains("**Cause:** Nothing accepts connections"), "{runbook}");
    assert!(runbook.contains("## Health checks"));
    assert_eq!(std::fs::read_to_string(dir.path().join("runbooks").join(format!("{id}.md"))).unwrap(), runbook);
    assert_eq!(stores.incidents.runbook(&id).await.unwrap().unwrap().markdown, runbook);

    let resolved = ok(&keel(
        dir.path(),
        &["incidents", "resolve", &id, "--fixed-by", "sudo systemctl start ollama", "--by", "sam"],
    ));
    assert!(resolved.contains("is resolved") && resolved.contains("The fix is kept"), "{resolved}");
    assert_eq!(stores.incidents.incident(&id).await.unwrap().unwrap().status.as_str(), "resolved");
    assert_eq!(stores.incidents.playbook("upstream_down:local").await.unwrap()[0].fix, "sudo systemctl start ollama");
    let unknown = keel(dir.path(), &["incidents", "show", "inc_nope"]);
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("keel incidents list"));
}
