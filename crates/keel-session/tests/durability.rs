//! An append acknowledged by the SQLite store survives `kill -9` of the process.
//!
//! The test re-runs its own binary as a child (`durability_child`, which does nothing unless
//! `KEEL_SESSION_DURABILITY_CHILD` names a database file). The child appends from several tasks
//! and prints `ack SEQ CONTENT` after each append resolves; the parent SIGKILLs it mid-run,
//! reopens the file and checks that every acknowledged message is there exactly once, at its seq,
//! in order. Three rounds on one file: each round also recovers the previous crash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use keel_session::{NewMessage, NewSession, open};

const CHILD_ENV: &str = "KEEL_SESSION_DURABILITY_CHILD";
const ROUND_ENV: &str = "KEEL_SESSION_DURABILITY_ROUND";
const SESSION: &str = "durable";
const WRITERS: usize = 4;
/// Acknowledgments the parent waits for before it kills the child.
const ACKS_BEFORE_KILL: usize = 300;

/// The child: appends until killed. A no-op in a normal test run.
#[test]
fn durability_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round = std::env::var(ROUND_ENV).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let store = open(&format!("sqlite://{path}")).await.unwrap();
        store.ensure_session(NewSession::new(SESSION)).await.unwrap();
        let out = Arc::new(parking_lot::Mutex::new(std::io::stdout()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = Arc::clone(&store);
                let out = Arc::clone(&out);
                let round = round.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let content = format!("r{round}-w{writer}-{i}");
                        let message = NewMessage::user(content.clone()).with_tokens(1);
                        let seq = store.append(SESSION, message).await.unwrap().seq;
                        let mut out = out.lock();
                        writeln!(out, "ack {seq} {content}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

/// Runs one child until it acknowledged `ACKS_BEFORE_KILL` appends, kills it, and returns every
/// acknowledgment it printed (seq → content).
fn run_and_kill(path: &str, round: usize) -> BTreeMap<u64, String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["durability_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = BTreeMap::new();
    let mut killed = false;
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let Some(ack) = line.strip_prefix("ack ") else { continue };
                let (seq, content) = ack.split_once(' ').unwrap();
                let previous = acks.insert(seq.parse::<u64>().unwrap(), content.to_owned());
                assert_eq!(previous, None, "seq {seq} acknowledged twice");
                if !killed && acks.len() >= ACKS_BEFORE_KILL {
                    child.kill().unwrap(); // SIGKILL
                    killed = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("the child stopped acknowledging appends ({} so far)", acks.len());
            }
        }
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(killed, "the child exited on its own: {status}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "the child must die of SIGKILL, got {status}");
    }
    acks
}

#[test]
fn sqlite_acknowledged_appends_survive_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("durable.db").display().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut acknowledged = BTreeMap::new();
    for round in 0..3 {
        let acks = run_and_kill(&path, round);
        assert!(acks.len() >= ACKS_BEFORE_KILL);
        acknowledged.extend(acks);

        let (session, messages) = runtime.block_on(async {
            let store = open(&format!("sqlite://{path}")).await.unwrap();
            let session = store.get_session(SESSION).await.unwrap().unwrap();
            (session, store.messages(SESSION, 0, usize::MAX).await.unwrap())
        });
        // In order, without gaps: seq n is the n-th message.
        for (index, message) in messages.iter().enumerate() {
            assert_eq!(message.seq, index as u64 + 1);
        }
        // Every acknowledged append is there, at the seq it was acknowledged with.
        for (seq, content) in &acknowledged {
            let message = messages.get(*seq as usize - 1).unwrap_or_else(|| {
                panic!("round {round}: acknowledged seq {seq} is missing ({} stored)", messages.len())
            });
            assert_eq!(&message.content, content, "round {round}: seq {seq}");
        }
        // Exactly once: no content twice (unacknowledged in-flight appends may be there, once).
        let mut seen = HashSet::new();
        for message in &messages {
            assert!(seen.insert(&message.content), "{} stored twice", message.content);
        }
        // The counters agree with the messages after the crash.
        assert_eq!(session.message_count, messages.len() as u64);
        assert_eq!(session.token_count, messages.len() as u64);
        assert_eq!(session.version, 1 + messages.len() as u64);
        eprintln!(
            "round {round}: {} acknowledged in total, {} stored (the rest were in flight at the kill)",
            acknowledged.len(),
            messages.len()
        );
    }
}
