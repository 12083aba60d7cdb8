//! `keel keys create|list|revoke` against a SQLite store in a temp directory: the secret is
//! printed once (alone on stdout), never listed, and verifies against what the store keeps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Runs `keel keys ARGS` in `dir` (no inherited store or config).
fn keel(dir: &Path, args: &[&str]) -> Output {
    Command::new(KEEL)
        .arg("keys")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("KEEL_STORE")
        .env_remove("KEEL_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> (String, String) {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    (String::from_utf8(out.stdout.clone()).unwrap(), String::from_utf8(out.stderr.clone()).unwrap())
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[tokio::test]
async fn create_list_and_revoke_against_a_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state").join("keel.db").display());
    let store = ["--store", url.as_str()];
    let with_store = |args: &[&str]| -> Vec<String> { store.iter().chain(args).map(|a| (*a).to_owned()).collect() };
    let run = |args: &[&str]| {
        let args = with_store(args);
        keel(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Nothing to list before the store exists; the error names the file.
    let error = failed(&run(&["list"]));
    assert!(error.contains("no store at") && error.contains("keel.db"), "{error}");

    // create: the secret alone on stdout, the explanation on stderr, the secret once in all.
    let (stdout, stderr) = ok(&run(&["create", "ci-bot", "--requests-per-minute", "60", "--priority", "batch"]));
    let secret = stdout.trim().to_owned();
    assert_eq!(stdout, format!("{secret}\n"));
    assert!(secret.starts_with("keel_") && secret.len() == 69, "{secret}");
    assert!(!stderr.contains(&secret), "the secret is printed once: {stderr}");
    assert!(stderr.contains("only time the secret is shown"), "{stderr}");
    assert!(stderr.contains("Authorization: Bearer ") && stderr.contains("X-API-Key: "), "{stderr}");
    assert!(stderr.contains("within a second"), "{stderr}");
    assert!(stderr.contains("scopes inference"), "{stderr}");

    let (stdout, _) = ok(&run(&["create", "ops", "--scope", "admin", "--scope", "models,inference"]));
    let ops_secret = stdout.trim().to_owned();
    assert_ne!(ops_secret, secret);

    // A taken name, a bad scope, a bad priority and a zero limit are refused with clear errors.
    let error = failed(&run(&["create", "ci-bot"]));
    assert!(error.contains("a key named 'ci-bot' exists") && error.contains("keel keys revoke ci-bot"), "{error}");
    let error = failed(&run(&["create", "x", "--scope", "root"]));
    assert!(error.contains("invalid value 'root'") && error.contains("inference, admin, models"), "{error}");
    let error = failed(&run(&["create", "x", "--priority", "urgent"]));
    assert!(error.contains("interactive, normal, batch"), "{error}");
    assert!(!run(&["create", "x", "--tokens-per-minute", "0"]).status.success());

    // list: a table with the prefix, scopes, limits, priority, readable times; never a secret.
    let (table, _) = ok(&run(&["list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for column in ["NAME", "PREFIX", "SCOPES", "REQ/MIN", "TOKENS/MIN", "PRIORITY", "CREATED", "REVOKED"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(lines[1].starts_with("ci-bot ") && lines[1].contains(&format!("{}…", &secret[..8])), "{table}");
    assert!(lines[1].contains(" 60 ") && lines[1].contains("batch") && lines[1].contains(" UTC"), "{table}");
    assert!(lines[1].trim_end().ends_with(" -"), "not revoked: {table}");
    assert!(lines[2].starts_with("ops ") && lines[2].contains("admin,models,inference"), "{table}");
    assert!(!table.contains(&secret[8..]) && !table.contains(&ops_secret[8..]), "{table}");

    // revoke: gone from the active keys, listed with its time; a second revoke fails.
    let (stdout, _) = ok(&run(&["revoke", "ci-bot"]));
    assert!(stdout.contains("Revoked API key 'ci-bot'"), "{stdout}");
    let error = failed(&run(&["revoke", "ci-bot"]));
    assert!(error.contains("no active key named 'ci-bot'"), "{error}");
    let error = failed(&run(&["revoke", "nobody"]));
    assert!(error.contains("no active key named 'nobody'"), "{error}");

    let (json, _) = ok(&run(&["list", "--json"]));
    let keys: Vec<Value> = json.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(keys.len(), 2, "{json}");
    assert_eq!(keys[0]["name"], "ci-bot");
    assert!(keys[0]["revoked_at"].is_i64(), "{json}");
    assert_eq!(keys[0]["requests_per_minute"], 60);
    assert_eq!(keys[0]["prefix"], &secret[..8]);
    assert!(keys[1]["revoked_at"].is_null(), "{json}");
    assert!(!json.contains(&secret[8..]) && !json.contains(&ops_secret[8..]), "{json}");
    let (table, _) = ok(&run(&["list"]));
    assert!(!table.lines().nth(1).unwrap().trim_end().ends_with(" -"), "revoked time shown: {table}");

    // The name can be given to a new key once the old one is revoked.
    let (stdout, _) = ok(&run(&["create", "ci-bot"]));
    let new_secret = stdout.trim().to_owned();

    // What the store keeps: hashes that verify the printed secrets, and the revoked key inactive.
    let keys = keel_session::open_key_store(&url).await.unwrap();
    let active = keys.active_keys().await.unwrap();
    let names: Vec<&str> = active.iter().map(|key| key.name.as_str()).collect();
    assert_eq!(names, ["ci-bot", "ops"]);
    assert!(active[0].verify(&new_secret) && !active[0].verify(&secret));
    assert!(active[1].verify(&ops_secret));
    assert_eq!(active[1].scopes, ["admin", "models", "inference"]);
    let all = keys.list_keys().await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[0].verify(&secret) && all[0].is_revoked());
    assert_eq!((all[0].requests_per_minute, all[0].priority.as_deref()), (Some(60), Some("batch")));
}

#[test]
fn the_store_comes_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-config.db");
    std::fs::write(dir.path().join("keel.toml"), format!("[store]\nurl = \"sqlite://{}\"\n", db.display())).unwrap();
    let (stdout, stderr) = ok(&keel(dir.path(), &["create", "local"]));
    assert!(stdout.starts_with("keel_"), "{stdout}");
    assert!(stderr.contains("from-config.db"), "the store is named: {stderr}");
    assert!(db.exists());
    let (table, _) = ok(&keel(dir.path(), &["list"]));
    assert!(table.lines().nth(1).unwrap().starts_with("local "), "{table}");
}

/// `keel serve` on the store `keel keys` writes: a created key admits requests (and keys are then
/// required), its name is in the request's log lines, and `keel keys revoke` refuses it within a
/// second, without a restart.
#[tokio::test]
async fn keel_serve_admits_the_stores_keys_and_refuses_revoked_ones_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keel.db").display());
    let (stdout, _) = ok(&keel(dir.path(), &["--store", &url, "create", "agent"]));
    let secret = stdout.trim().to_owned();
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), keel_mock::Scenario::single_model("m", "hi"))
        .await
        .unwrap();
    let mut command = Command::new(KEEL);
    command
        .args(["serve", "--upstream", &mock.url(), "--listen", "127.0.0.1:0", "--store", &url])
        .current_dir(dir.path())
        .env_remove("KEEL_CONFIG")
        .env_remove("KEEL_STORE")
        .env_remove("RUST_LOG")
        .env("KEEL_LOG", "info");
    let serve = keel_testkit::process::KeelProcess::start_on_any_port(command, &dir.path().join("keel.log")).await;
    let base = serve.base.clone();
    let client = reqwest::Client::new();
    let chat = |key: Option<&str>| {
        let mut request = client
            .post(format!("{base}/api/chat"))
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":false}"#);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(chat(Some(&secret)).await, 200);
    assert_eq!(chat(None).await, 401);
    assert_eq!(chat(Some("keel_not_a_key")).await, 401);

    let revoked = std::time::Instant::now();
    ok(&keel(dir.path(), &["--store", &url, "revoke", "agent"]));
    loop {
        let status = chat(Some(&secret)).await;
        if status == 401 {
            break;
        }
        assert!(revoked.elapsed() < std::time::Duration::from_millis(1500), "still {status} after the revocation");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let log = serve.logs();
    drop(serve);
    assert!(log.contains(r#"key="agent""#), "the key's name is logged:\n{log}");
    assert!(!log.contains(&secret[8..]), "the secret is never logged:\n{log}");
}

/// Off loopback without `[auth]`, keel serves only once the store holds a key (`keel keys`): the
/// refusal says how, and a key created afterwards lets the same command start.
#[tokio::test]
async fn serving_off_loopback_needs_a_key_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keel.db").display());
    let port = keel_testkit::process::free_port();
    let serve = || {
        let mut command = Command::new(KEEL);
        command
            .args([
                "serve",
                "--store",
                &url,
                "--listen",
                &format!("0.0.0.0:{port}"),
                "--upstream",
                "http://127.0.0.1:9",
            ])
            .current_dir(dir.path())
            .env_remove("KEEL_CONFIG")
            .env_remove("RUST_LOG");
        command
    };
    let refused = serve().stdin(Stdio::null()).output().unwrap();
    let error = failed(&refused);
    assert!(
        error.contains("with no API keys would let anyone on the network") && error.contains("keel keys create"),
        "{error}"
    );

    ok(&keel(dir.path(), &["--store", &url, "create", "office-agent"]));
    let log = dir.path().join("serve.log");
    let keel = keel_testkit::process::KeelProcess::start(serve(), port, &log).await;
    let refused_without_key = reqwest::Client::new()
        .post(format!("{}/api/chat", keel.base))
        .json(&serde_json::json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused_without_key.status(), 401);
}
