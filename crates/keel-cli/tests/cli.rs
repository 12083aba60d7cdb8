//! The `keel` binary as a user runs it: help, init, config errors, serve with env overrides and
//! SIGTERM, and the demo.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn keel(args: &[&str]) -> std::process::Output {
    Command::new(KEEL).args(args).env_remove("RUST_LOG").output().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn help_lists_every_command() {
    let out = keel(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for command in ["serve", "init", "mock", "demo", "status", "repair", "chat", "sessions"] {
        assert!(text.contains(command), "{command} missing from --help:\n{text}");
    }
    for command in ["serve", "init", "mock", "demo", "status", "repair", "chat", "sessions"] {
        assert!(keel(&[command, "--help"]).status.success(), "{command} --help failed");
    }
}

#[test]
fn init_writes_a_config_that_serve_accepts_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.toml");
    let path_str = path.to_str().unwrap();
    assert!(keel(&["init", path_str]).status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[server]") && text.contains("# "), "not a commented config");
    let again = keel(&["init", path_str]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(keel(&["init", "-"]).stdout.starts_with(b"# keel.toml"));
}

#[test]
fn config_errors_name_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n").unwrap();
    let out = keel(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listne") && err.contains("bad.toml"), "{err}");
}

#[test]
fn serve_reads_env_overrides_and_stops_cleanly_on_sigterm() {
    let mock_port = free_port();
    let keel_port = free_port();
    let mut mock = Command::new(KEEL)
        .args(["mock", "--listen", &format!("127.0.0.1:{mock_port}")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(KEEL)
        .arg("serve")
        .current_dir(dir.path())
        .env("KEEL_LISTEN", format!("127.0.0.1:{keel_port}"))
        .env("KEEL_UPSTREAM", format!("http://127.0.0.1:{mock_port}"))
        .env("KEEL_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = plain_http::Client;
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        match client.chat(keel_port) {
            Some(reply) => break reply,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => panic!("keel did not answer on the KEEL_LISTEN port"),
        }
    };
    assert!(reply.contains("Hello from keel-mock."), "{reply}");
    // SIGTERM: keel drains and exits 0.
    assert!(Command::new("kill").args(["-TERM", &serve.id().to_string()]).status().unwrap().success());
    let status = serve.wait().unwrap();
    assert!(status.success(), "keel exited with {status}");
    let mut logs = String::new();
    std::io::Read::read_to_string(serve.stderr.as_mut().unwrap(), &mut logs).unwrap();
    let first: serde_json::Value = serde_json::from_str(logs.lines().next().unwrap()).expect("JSON log lines");
    assert_eq!(first["level"], "INFO");
    assert!(logs.contains("shutting down"), "{logs}");
    mock.kill().unwrap();
    let _ = mock.wait();
}

#[test]
fn demo_runs_end_to_end() {
    let out = keel(&["demo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Scene 1"), "{text}");
    assert!(text.contains("404"), "{text}");
    // Scene 2: the backup serves while the primary's breaker is open.
    assert!(text.contains("primary breaker: open"), "{text}");
    // Scene 3: repaired, then canned.
    assert!(text.contains("X-Keel-Repair: extracted,fixed-syntax"), "{text}");
    assert!(text.contains("X-Keel-Repair: canned"), "{text}");
    // Scene 4: the conversation came back after the restart; the card was charged once.
    assert!(text.contains("\"Your name is Ada.\""), "{text}");
    assert!(text.contains("card charged 1 time(s)"), "{text}");
}

/// A tiny blocking HTTP/1.1 client over std, so this test needs no async runtime.
mod plain_http {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub(super) struct Client;

    impl Client {
        /// A non-streamed chat through keel; `None` if nothing listens yet.
        pub(super) fn chat(&self, port: u16) -> Option<String> {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}"#;
            let request = format!(
                "POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            response.starts_with("HTTP/1.1 200").then_some(response)
        }
    }
}
