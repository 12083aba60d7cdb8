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
    pub async fn start(command: Command, port: u16, log: &Path) -> KeelProcess {
        let mut keel = KeelProcess::start_unchecked(command, log);
        keel.base = format!("http://127.0.0.1:{port}");
        keel.wait_for_health().await;
        keel
    }

    fn start_unchecked(mut command: Command, log: &Path) -> KeelProcess {
        let file = match std::fs::File::create(log) {
            Ok(file) => file,
            Err(err) => panic!("cannot create {}: {err}", log.display()),
        };
        let child = match command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(file)).spawn() {
            Ok(child) => child,
            Err(err) => panic!("cannot start keel: {err}"),
        };
        KeelProcess { child, base: String::new(), log: log.to_owned() }
    }

    async fn wait_for_health(&self) {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap_or_default();
        for _ in 0..200 {
            if client.get(format!("{}/keel/health", self.base)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("keel did not start:\n{}", self.logs())
    }

    /// Spawns `command` (a `keel serve … --listen 127.0.0.1:0`) with its stderr in `log`, reads
    /// the port it got from its start-up line, and waits for `/keel/health` as [`Self::start`]
    /// does. No other process can take the port between choosing and binding it.
    pub async fn start_on_any_port(command: Command, log: &Path) -> KeelProcess {
        let mut keel = KeelProcess::start_unchecked(command, log);
        for _ in 0..400 {
            if let Some(base) = served_at(&keel.logs()) {
                keel.base = base;
                keel.wait_for_health().await;
                return keel;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("keel did not say where it listens:\n{}", keel.logs())
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

/// `http://ADDR` from keel's start-up line ("keel is serving: point agents at http://ADDR"), in
/// either log format.
fn served_at(logs: &str) -> Option<String> {
    const SAYS: &str = "point agents at http://";
    let rest = &logs[logs.find(SAYS)? + SAYS.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')))?;
    Some(format!("http://{}", &rest[..end]))
}

#[cfg(test)]
mod tests {
    use super::served_at;

    #[test]
    fn the_address_is_read_from_either_log_format() {
        let text = "2026-12-05T03:00:00Z  INFO keel is serving: point agents at http://127.0.0.1:40123 listen=127.0.0.1:40123\n";
        assert_eq!(served_at(text).as_deref(), Some("http://127.0.0.1:40123"));
        let json =
            r#"{"fields":{"message":"keel is serving: point agents at http://127.0.0.1:5","listen":"127.0.0.1:5"}}"#;
        assert_eq!(served_at(json).as_deref(), Some("http://127.0.0.1:5"));
        assert_eq!(served_at("starting"), None);
    }
}
