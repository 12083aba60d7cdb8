//! `keel sessions list|show|export|delete` against a SQLite store filled with `keel-session`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use keel_session::{NewMessage, NewSession, SessionStatus, Store};
use serde_json::Value;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// A temp directory with a store holding two sessions:
/// `chat-1` (llama3.2, alice, active, 2 messages) and `chat-2` (qwen3, ended, a question and a cut-off answer).
struct Fixture {
    dir: tempfile::TempDir,
    url: String,
    store: Arc<dyn Store>,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keel.db").display());
        let store = keel_session::open(&url).await.unwrap();
        store.create_session(NewSession::new("chat-1").with_model("llama3.2").with_owner("alice")).await.unwrap();
        store.append("chat-1", NewMessage::user("hello").with_tokens(2)).await.unwrap();
        store.append("chat-1", NewMessage::assistant("hi!\nhow can I help?").with_tokens(5)).await.unwrap();
        store
            .create_session(NewSession::new("chat-2").with_model("qwen3").with_status(SessionStatus::Ended))
            .await
            .unwrap();
        store.append("chat-2", NewMessage::user("bye")).await.unwrap();
        store.append("chat-2", NewMessage::assistant("Good").partial()).await.unwrap();
        Fixture { dir, url, store }
    }

    /// Runs `keel sessions --store URL ARGS` in the temp directory.
    async fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["sessions".to_owned(), "--store".to_owned(), self.url.clone()];
        full.extend(args.iter().map(|&a| a.to_owned()));
        keel(full, self.dir.path().to_owned()).await
    }
}

async fn keel(args: Vec<String>, cwd: PathBuf) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(KEEL)
            .args(&args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .env_remove("KEEL_STORE")
            .env_remove("KEEL_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn list_shows_a_table_filters_and_json_lines() {
    let fx = Fixture::new().await;
    let table = stdout(&fx.run(&["list"]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("TOKENS") && lines[0].contains("UPDATED"), "{table}");
    // Most recently updated first.
    assert!(lines[1].starts_with("chat-2") && lines[1].contains("ended") && lines[1].contains("qwen3"), "{table}");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&row[..5], ["chat-1", "llama3.2", "active", "2", "7"], "{table}");
    assert!(row[5].ends_with('Z'), "{table}");

    let ended = stdout(&fx.run(&["list", "--status", "ended"]).await);
    assert!(ended.contains("chat-2") && !ended.contains("chat-1"), "{ended}");
    let by_model = stdout(&fx.run(&["list", "--model", "llama3.2"]).await);
    assert!(by_model.contains("chat-1") && !by_model.contains("chat-2"), "{by_model}");
    let by_owner = stdout(&fx.run(&["list", "--owner", "bob"]).await);
    assert_eq!(by_owner, "no sessions\n");

    let json = stdout(&fx.run(&["list", "--json", "--limit", "1"]).await);
    let sessions: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["id"], "chat-2");
    let all = stdout(&fx.run(&["list", "--json"]).await);
    assert_eq!(all.lines().count(), 2);

    let bad = fx.run(&["list", "--status", "closed"]).await;
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn show_prints_the_header_and_messages() {
    let fx = Fixture::new().await;
    let text = stdout(&fx.run(&["show", "chat-1"]).await);
    assert!(text.contains("session   chat-1"), "{text}");
    assert!(text.contains("model     llama3.2") && text.contains("owner     alice"), "{text}");
    assert!(text.contains("messages  2 (7 tokens)"), "{text}");
    assert!(text.contains("   1 user: hello\n"), "{text}");
    assert!(text.contains("   2 assistant: hi!\n                how can I help?\n"), "{text}");

    let missing = fx.run(&["show", "nope"]).await;
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no session 'nope'"), "{}", stderr(&missing));
}

#[tokio::test]
async fn export_in_each_format() {
    let fx = Fixture::new().await;
    let json: Value = serde_json::from_str(&stdout(&fx.run(&["export", "chat-1"]).await)).unwrap();
    assert_eq!(json["session"]["id"], "chat-1");
    assert_eq!(json["session"]["token_count"], 7);
    assert_eq!(json["messages"][1]["content"], "hi!\nhow can I help?");
    assert_eq!(json["messages"][1]["seq"], 2);

    let jsonl = stdout(&fx.run(&["export", "chat-1", "--format", "jsonl"]).await);
    let messages: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");

    let markdown = stdout(&fx.run(&["export", "chat-1", "--format", "markdown"]).await);
    assert!(markdown.starts_with("# Session chat-1\n"), "{markdown}");
    assert!(
        markdown.contains("\n## 1 user\n\nhello\n") && markdown.contains("\n## 2 assistant\n\nhi!\n"),
        "{markdown}"
    );

    let cut = stdout(&fx.run(&["export", "chat-2", "--format", "markdown"]).await);
    assert!(cut.contains("\n## 1 user\n") && cut.contains("\n## 2 assistant (cut off)\n\nGood\n"), "{cut}");
    let shown = stdout(&fx.run(&["show", "chat-2"]).await);
    assert!(shown.contains("   2 assistant: Good [cut off]\n"), "{shown}");

    assert!(!fx.run(&["export", "nope"]).await.status.success());
}

#[tokio::test]
async fn delete_needs_yes_without_a_terminal() {
    let fx = Fixture::new().await;
    let refused = fx.run(&["delete", "chat-1"]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert!(fx.store.get_session("chat-1").await.unwrap().is_some());

    let deleted = stdout(&fx.run(&["delete", "chat-1", "--yes"]).await);
    assert!(deleted.contains("deleted session 'chat-1' (2 messages)"), "{deleted}");
    assert!(fx.store.get_session("chat-1").await.unwrap().is_none());
    assert!(fx.store.get_session("chat-2").await.unwrap().is_some());

    let again = fx.run(&["delete", "chat-1", "--yes"]).await;
    assert!(!again.status.success());
    assert!(stderr(&again).contains("no session 'chat-1'"), "{}", stderr(&again));
}

#[tokio::test]
async fn the_store_comes_from_the_config_file_and_a_missing_file_is_not_created() {
    let fx = Fixture::new().await;
    let config = fx.dir.path().join("other.toml");
    std::fs::write(&config, format!("[store]\nurl = \"{}\"\n", fx.url)).unwrap();
    let args = |rest: &[&str]| -> Vec<String> {
        ["sessions", "--config", config.to_str().unwrap()].iter().chain(rest).map(|&a| a.to_owned()).collect()
    };
    let listed = stdout(&keel(args(&["list"]), fx.dir.path().to_owned()).await);
    assert!(listed.contains("chat-1"), "{listed}");

    // ./keel.toml is used like `keel serve` uses it.
    std::fs::copy(&config, fx.dir.path().join("keel.toml")).unwrap();
    let local = stdout(&keel(vec!["sessions".into(), "list".into()], fx.dir.path().to_owned()).await);
    assert!(local.contains("chat-1"), "{local}");

    let empty = tempfile::tempdir().unwrap();
    let out = keel(vec!["sessions".into(), "list".into()], empty.path().to_owned()).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no session store at keel.db"), "{}", stderr(&out));
    assert!(!Path::new(&empty.path().join("keel.db")).exists(), "the default store must not be created");
}
