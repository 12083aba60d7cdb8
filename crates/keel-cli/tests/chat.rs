//! `keel chat` as a user runs it, against `keel-mock`: one answer with --non-interactive, the
//! REPL fed through a pipe, session mode (X-Keel-Session, only the new message) and the errors
//! that tell the user what to do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use keel_mock::{MockServer, Scenario};
use keel_testkit::process::KeelProcess;
use serde_json::{Value, json};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
const REPLY: &str = "Hello from keel-mock.";

/// Runs `keel chat ARGS` with `stdin` piped in, off the async runtime (the mock runs on it), in
/// an empty working directory.
async fn chat(args: &[&str], stdin: &str) -> Output {
    chat_in(None, args, stdin).await
}

/// [`chat`] in `dir` (e.g. one with a keel.toml).
async fn chat_in(dir: Option<&std::path::Path>, args: &[&str], stdin: &str) -> Output {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    let stdin = stdin.to_owned();
    let dir = dir.map(std::path::Path::to_owned);
    tokio::task::spawn_blocking(move || {
        let state = tempfile::tempdir().unwrap();
        let mut child = Command::new(KEEL)
            .arg("chat")
            .args(&args)
            .current_dir(dir.as_deref().unwrap_or(state.path()))
            .env_remove("RUST_LOG")
            .env_remove("KEEL_MODEL")
            .env_remove("KEEL_URL")
            .env_remove("KEEL_HOST")
            .env_remove("KEEL_CONFIG")
            .env_remove("KEEL_KEY")
            .env_remove("KEEL_API_KEY")
            .env("XDG_STATE_HOME", state.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

async fn mock() -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), Scenario::single_model("llama3.2", REPLY)).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The chat requests the mock got, as JSON bodies with their X-Keel-Session header.
fn chats(server: &MockServer) -> Vec<(Option<String>, Value)> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/chat")
        .map(|r| (r.header("x-keel-session").map(str::to_owned), r.json().unwrap()))
        .collect()
}

#[tokio::test]
async fn non_interactive_prints_the_answer() {
    let server = mock().await;
    let host = server.url();
    let out = chat(&["--non-interactive", "--prompt", "hi", "--model", "llama3.2", "--url", &host], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{REPLY}\n"));
    let requests = chats(&server);
    assert_eq!(requests.len(), 1);
    let (session, body) = &requests[0];
    assert_eq!(session, &None);
    assert_eq!(body["model"], "llama3.2");
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    server.shutdown().await;
}

#[tokio::test]
async fn the_prompt_can_come_from_stdin_and_the_model_from_the_environment() {
    let server = mock().await;
    let host = server.url();
    let args = ["chat", "--non-interactive", "--prompt", "-", "--system", "be brief", "--url", &host];
    let out = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        move || {
            let mut child = Command::new(KEEL)
                .args(&args)
                .env("KEEL_MODEL", "llama3.2")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(b"a question\nover two lines\n").unwrap();
            child.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, body) = chats(&server).pop().unwrap();
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "a question\nover two lines"}])
    );
    server.shutdown().await;
}

#[tokio::test]
async fn session_mode_sends_the_header_and_only_the_new_message() {
    let server = mock().await;
    let host = server.url();
    let base = ["--non-interactive", "--model", "llama3.2", "--url", &host, "--session-id", "chat-42"];
    let first = chat(&[&base[..], &["--prompt", "hello", "--system", "be brief"]].concat(), "").await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = chat(&[&base[..], &["--prompt", "and then?"]].concat(), "").await;
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout), format!("{REPLY}\n"));
    let requests = chats(&server);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].0.as_deref(), Some("chat-42"));
    assert_eq!(
        requests[0].1["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    );
    assert_eq!(requests[1].0.as_deref(), Some("chat-42"));
    assert_eq!(requests[1].1["messages"], json!([{"role": "user", "content": "and then?"}]));
    server.shutdown().await;
}

#[tokio::test]
async fn new_session_prints_the_id_it_sends() {
    let server = mock().await;
    let host = server.url();
    let out = chat(&["--non-interactive", "--new-session", "-p", "hi", "-m", "llama3.2", "--url", &host], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{REPLY}\n"), "the id goes to stderr, stdout is the answer");
    let (session, _) = chats(&server).pop().unwrap();
    let id = session.expect("X-Keel-Session");
    assert!(text(&out.stderr).contains(&format!("--session-id {id}")), "{}", text(&out.stderr));
    server.shutdown().await;
}

#[tokio::test]
async fn the_repl_keeps_the_history_in_memory() {
    let server = mock().await;
    let host = server.url();
    let input = "first\n/history\n  \n/unknown\nsecond\n/session\n/new\nthird\n/exit\nnever sent\n";
    let out = chat(&["--model", "llama3.2", "--url", &host, "--system", "be brief"], input).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("user: first\nassistant: Hello from keel-mock.\n"), "{stdout}");
    assert!(stdout.contains("unknown command /unknown"), "{stdout}");
    assert!(stdout.contains("no session"), "{stdout}");
    assert!(stdout.contains("history cleared"), "{stdout}");
    let requests = chats(&server);
    let roles = |i: usize| -> Vec<String> {
        requests[i].1["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(roles(0), ["system", "user"]);
    assert_eq!(roles(1), ["system", "user", "assistant", "user"]);
    assert_eq!(roles(2), ["system", "user"], "/new clears the history");
    assert!(requests.iter().all(|(session, _)| session.is_none()));
    server.shutdown().await;
}

#[tokio::test]
async fn the_repl_in_session_mode() {
    let server = mock().await;
    let host = server.url();
    let input = "/session\nhello\nagain\n/history\n/new\n/session\nthird\n";
    let out = chat(&["--model", "llama3.2", "--url", &host, "--session-id", "s-1"], input).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("s-1\n"), "{stdout}");
    // The mock keeps no sessions: /history says so and shows what this process saw.
    assert!(stdout.contains("keeps no sessions"), "{stdout}");
    let new_id = stdout.lines().find_map(|l| l.strip_prefix("new session ")).unwrap().to_owned();
    let requests = chats(&server);
    assert_eq!(requests.len(), 3);
    for (session, body) in &requests[..2] {
        assert_eq!(session.as_deref(), Some("s-1"));
        assert_eq!(body["messages"].as_array().unwrap().len(), 1, "only the new message: {body}");
    }
    assert_eq!(requests[1].1["messages"][0]["content"], "again");
    assert_eq!(requests[2].0.as_deref(), Some(new_id.as_str()));
    server.shutdown().await;
}

/// Without --url, `keel chat` talks to the keel of ./keel.toml; the older --api-key still
/// carries the key.
#[tokio::test]
async fn without_a_url_the_local_config_file_says_where_keel_is() {
    let server = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let listen = server.url().trim_start_matches("http://").trim_end_matches('/').to_owned();
    std::fs::write(dir.path().join("keel.toml"), format!("[server]\nlisten = \"{listen}\"\n")).unwrap();
    let args = ["--non-interactive", "--prompt", "hi", "--model", "llama3.2", "--api-key", "k1"];
    let out = chat_in(Some(dir.path()), &args, "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{REPLY}\n"));
    let request = server.requests().into_iter().find(|r| r.path == "/api/chat").unwrap();
    assert_eq!(request.header("authorization"), Some("Bearer k1"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_dead_host_says_to_start_keel() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let host = format!("http://127.0.0.1:{port}");
    let out = chat(&["--non-interactive", "--prompt", "hi", "--model", "llama3.2", "--url", &host], "").await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot reach") && stderr.contains("keel serve"), "{stderr}");
}

#[tokio::test]
async fn an_unknown_model_says_to_pull_it() {
    let server = mock().await;
    let host = server.url();
    // --host: the older name of --url.
    let out = chat(&["--non-interactive", "--prompt", "hi", "--model", "nope", "--host", &host], "").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ollama pull nope"), "{stderr}");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_arguments_are_refused() {
    let no_model = chat(&["--non-interactive", "--prompt", "hi"], "").await;
    assert_eq!(no_model.status.code(), Some(2), "{}", text(&no_model.stderr));
    assert!(text(&no_model.stderr).contains("--model"));
    let no_prompt = chat(&["--non-interactive", "--model", "m"], "").await;
    assert_eq!(no_prompt.status.code(), Some(2));
    let both = chat(&["--model", "m", "--session-id", "a", "--new-session"], "").await;
    assert_eq!(both.status.code(), Some(2));
    let bad_id = chat(&["--non-interactive", "-p", "hi", "--model", "m", "--session-id", "a b"], "").await;
    assert!(!bad_id.status.success());
    assert!(text(&bad_id.stderr).contains("--session-id"), "{}", text(&bad_id.stderr));
}

#[test]
fn help_lists_chat_and_sessions_with_examples() {
    let top = Command::new(KEEL).arg("--help").output().unwrap();
    let top = text(&top.stdout);
    assert!(top.contains("chat") && top.contains("sessions"), "{top}");
    for args in [&["chat", "--help"][..], &["sessions", "--help"], &["sessions", "list", "--help"]] {
        let out = Command::new(KEEL).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        if args.len() == 2 {
            assert!(text(&out.stdout).contains("Examples:"), "{args:?}: {}", text(&out.stdout));
        }
    }
}

/// The whole path: `keel serve` with a SQLite store in front of the mock, two `keel chat`
/// processes in one session, `/history` from keel's sessions API, `keel sessions show`.
#[tokio::test]
async fn a_session_kept_by_keel_end_to_end() {
    let server = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("keel.db").display());
    let mut command = Command::new(KEEL);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("KEEL_CONFIG")
        .env("KEEL_UPSTREAM", server.url())
        .env("KEEL_STORE", &store)
        .env("KEEL_LOG", "info");
    let keel = KeelProcess::start_on_any_port(command, &dir.path().join("keel.log")).await;
    let host = keel.base.clone();
    let base = ["--model", "llama3.2", "--url", &host, "--session-id", "e2e-1"];
    let first = chat(&[&base[..], &["--non-interactive", "-p", "first", "--system", "be brief"]].concat(), "").await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    let repl = chat(&base, "second\n/history\n").await;
    assert!(repl.status.success(), "{}", text(&repl.stderr));
    let stdout = text(&repl.stdout);
    assert!(stdout.contains("5 messages stored by keel"), "{stdout}");
    assert!(stdout.contains("   1 system: be brief\n   2 user: first\n"), "{stdout}");
    assert!(stdout.contains("   4 user: second\n   5 assistant: Hello from keel-mock.\n"), "{stdout}");
    // keel sent the model the whole conversation, the client only the new message.
    let (_, last) = chats(&server).pop().unwrap();
    assert_eq!(last["messages"].as_array().unwrap().len(), 4, "{last}");

    let show = tokio::task::spawn_blocking(move || {
        Command::new(KEEL).args(["sessions", "--store", &store, "show", "e2e-1"]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(show.status.success(), "{}", text(&show.stderr));
    assert!(text(&show.stdout).contains("messages  5"), "{}", text(&show.stdout));
    server.shutdown().await;
}
