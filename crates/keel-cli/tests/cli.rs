//! The `keel` binary as a user runs it: help, init, config errors, status, serve with env
//! overrides and SIGTERM, and the demo.

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
    let commands = ["serve", "init", "mock", "demo", "status", "repair", "chat", "sessions", "keys", "doctor"];
    for command in commands {
        assert!(text.contains(command), "{command} missing from --help:\n{text}");
    }
    for command in commands {
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
    // Both listen on port 0 and say which port they got: no other test can take it in between.
    let mut mock = Command::new(KEEL).args(["mock", "--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut said = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(mock.stdout.take().unwrap()), &mut said).unwrap();
    let mock_url = said.split_whitespace().find(|word| word.starts_with("http://")).unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(KEEL)
        .arg("serve")
        .current_dir(dir.path())
        .env("KEEL_LISTEN", "127.0.0.1:0")
        .env("KEEL_UPSTREAM", &mock_url)
        .env("KEEL_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // keel's log, line by line, from a thread (it is read to the end after keel exits).
    let (lines, logged) = std::sync::mpsc::channel();
    let stderr = serve.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let keel_port = loop {
        let line = logged.recv_timeout(Duration::from_secs(20)).expect("keel logged where it listens");
        if let Some((_, rest)) = line.split_once("point agents at http://127.0.0.1:") {
            break rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse::<u16>().unwrap();
        }
    };
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
    let logs = reader.join().unwrap();
    let first: serde_json::Value = serde_json::from_str(logs.lines().next().unwrap()).expect("JSON log lines");
    assert_eq!(first["level"], "INFO");
    assert!(logs.contains("shutting down"), "{logs}");
    mock.kill().unwrap();
    let _ = mock.wait();
}

/// `keel serve` started with a low soft open-file limit raises it to the hard limit and logs
/// both; with a low hard limit it warns and says what to do. keel exits right after (its port is
/// taken), which is enough: the limit is raised and logged before it listens.
#[cfg(unix)]
#[test]
fn serve_raises_the_open_file_limit_and_logs_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let serve_under = |ulimits: &str| {
        let out = Command::new("bash")
            .args(["-c", &format!("{ulimits} && exec \"$0\" serve --listen {listen}"), KEEL])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env_remove("KEEL_CONFIG")
            .env("KEEL_LOG_FORMAT", "json")
            .env("KEEL_STORE", format!("sqlite://{}", dir.path().join("keel.db").display()))
            .output()
            .unwrap();
        assert!(!out.status.success(), "keel served on a taken port");
        let logs = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<serde_json::Value> = logs.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        let limits = lines
            .iter()
            .find(|line| line["fields"]["open_files_soft_before"].is_u64())
            .unwrap_or_else(|| panic!("no open-file limit logged:\n{logs}"))
            .clone();
        assert_eq!(limits["level"], "INFO", "{limits}");
        let warning = lines
            .iter()
            .find(|line| {
                line["level"] == "WARN" && line["fields"]["message"].as_str().is_some_and(|m| m.contains("open-file"))
            })
            .cloned();
        (limits["fields"].clone(), warning, logs)
    };
    let hard: u64 = {
        let out = Command::new("bash").args(["-c", "ulimit -Hn"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap_or(u64::MAX)
    };
    if hard > 4096 && hard != u64::MAX {
        let (fields, warning, logs) = serve_under("ulimit -Sn 256");
        assert_eq!(fields["open_files_soft_before"], 256, "{logs}");
        assert_eq!(fields["open_files_soft"], hard, "{logs}");
        assert_eq!(fields["open_files_hard"], hard, "{logs}");
        assert!(warning.is_none(), "{logs}");
    }
    let (fields, warning, logs) = serve_under("ulimit -Sn 256 && ulimit -Hn 1024");
    assert_eq!(fields["open_files_soft_before"], 256, "{logs}");
    assert_eq!(fields["open_files_soft"], 1024, "{logs}");
    assert_eq!(fields["open_files_hard"], 1024, "{logs}");
    let warning = warning.unwrap_or_else(|| panic!("no warning about a limit of 1024:\n{logs}"));
    let message = warning["fields"]["message"].as_str().unwrap();
    assert!(message.contains("only 1024") && message.contains("LimitNOFILE"), "{message}");
    drop(taken);
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

/// `keel status` with no flags finds keel through ./keel.toml (a 0.0.0.0 listen is reached on
/// 127.0.0.1), sends the key of the older KEEL_API_KEY, and prints the sections; a flag wins
/// over the file; an unreachable keel is reported with where its address came from.
#[test]
fn status_finds_keel_through_the_local_config_file() {
    let server = plain_http::Server::start(
        r#"{"version":"0.1.0","uptime_seconds":7385,"listen":"0.0.0.0:11435","store":"sqlite://keel.db",
            "config_file":"keel.toml","auth":true,
            "upstreams":[{"name":"default","url":"http://127.0.0.1:11434","dialect":"ollama","health":null}],
            "routes":[{"model":"*","targets":["default"]}],
            "targets":[{"name":"default:llama3.2","breaker":"closed","requests":5,"failures":0}]}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keel.toml"), format!("[server]\nlisten = \"0.0.0.0:{}\"\n", server.port)).unwrap();
    let status = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(KEEL);
        command.arg("status").args(args).current_dir(dir.path());
        for var in ["RUST_LOG", "KEEL_URL", "KEEL_HOST", "KEEL_CONFIG", "KEEL_KEY", "KEEL_API_KEY"] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied()).output().unwrap()
    };

    let out = status(&[], &[("KEEL_API_KEY", "ops-key")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("keel 0.1.0 on 0.0.0.0:11435, up 2h 3m\n"), "{text}");
    for part in ["\nupstreams:\n", "not checked yet", "\nroutes:\n", "→ default", "\ntargets:\n", "default:llama3.2"]
    {
        assert!(text.contains(part), "{part:?} missing:\n{text}");
    }
    let request = server.requests().pop().unwrap();
    assert!(request.starts_with("GET /keel/status HTTP/1.1\r\n"), "{request}");
    assert!(request.to_ascii_lowercase().contains("authorization: bearer ops-key\r\n"), "{request}");

    let out = status(&["--json", "--key", "k2"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["uptime_seconds"], 7385);
    assert!(server.requests().pop().unwrap().to_ascii_lowercase().contains("bearer k2\r\n"));

    // A flag (or KEEL_URL) wins over the file: nothing listens there.
    let dead = free_port();
    let out = status(&[], &[("KEEL_URL", &format!("127.0.0.1:{dead}"))]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot reach keel at http://127.0.0.1:{dead}/ ")), "{err}");
    assert!(err.contains("KEEL_URL") && err.contains("keel serve"), "{err}");
    assert_eq!(server.requests().len(), 2, "the file's address was used anyway");

    // The file's address, when nothing listens, says it came from the file.
    drop(server);
    let out = status(&[], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[server] listen in keel.toml"), "{err}");

    // A broken config file is named.
    std::fs::write(dir.path().join("keel.toml"), "[server]\nlistne = 1\n").unwrap();
    let err = String::from_utf8(status(&[], &[]).stderr).unwrap();
    assert!(err.contains("keel.toml") && err.contains("listne"), "{err}");
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

    /// A server that answers every request with the same JSON body and records the request
    /// heads; stops when dropped.
    pub(super) struct Server {
        pub(super) port: u16,
        heads: std::sync::mpsc::Receiver<String>,
        seen: std::cell::RefCell<Vec<String>>,
        thread: Option<std::thread::JoinHandle<()>>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Server {
        pub(super) fn start(body: &'static str) -> Server {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let (send, heads) = std::sync::mpsc::channel();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stopped = stop.clone();
            let thread = std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let mut head = Vec::new();
                    let mut byte = [0_u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let _ = send.send(String::from_utf8_lossy(&head).into_owned());
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes());
                }
            });
            Server { port, heads, seen: std::cell::RefCell::default(), thread: Some(thread), stop }
        }

        /// Every request head so far, oldest first.
        pub(super) fn requests(&self) -> Vec<String> {
            let mut seen = self.seen.borrow_mut();
            seen.extend(self.heads.try_iter());
            seen.clone()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            // Wake the accept loop so it sees the flag and closes the listener.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
