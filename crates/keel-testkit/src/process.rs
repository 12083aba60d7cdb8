//! A `keel serve` process for tests that need the real binary (descriptor limits, two instances,
//! a shifted clock): started from a command the test builds, waited for until `/keel/health`
//! answers, its log kept in a file, and killed when dropped — also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `keel serve`; killed on drop.
pub struct KeelProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: PathBuf,
}

/// A free port on 127.0.0.1 for a process to listen on.
pub fn free_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(err) => panic!("no free port: {err}"),
    }
}

impl KeelProcess {
    /// Spawns `command` (a `keel serve … --listen 127.0.0.1:{port}`, or a shell that execs one)
    /// with its stderr in `log`, and waits up to 10 s for `/keel/health` to answer.
    pub async fn start(mut command: Command, port: u16, log: &Path) -> KeelProcess {
        let file = match std::fs::File::create(log) {
            Ok(file) => file,
            Err(err) => panic!("cannot create {}: {err}", log.display()),
        };
        let child = match command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(file)).spawn() {
            Ok(child) => child,
            Err(err) => panic!("cannot start keel: {err}"),
        };
        let keel = KeelProcess { child, base: format!("http://127.0.0.1:{port}"), log: log.to_owned() };
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap_or_default();
        for _ in 0..200 {
            if client.get(format!("{}/keel/health", keel.base)).send().await.is_ok() {
                return keel;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("keel did not start:\n{}", keel.logs())
    }

    /// What keel has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KeelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
