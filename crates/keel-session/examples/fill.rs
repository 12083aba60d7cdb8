//! Fills a store with sessions (one user message and one answer each) as fast as 64 concurrent
//! writers can, and prints the durable appends per second: `cargo run --release -p keel-session
//! --example fill -- sqlite:///tmp/keel.db 100000`. Used by `bench/sessions.sh`.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line example")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use keel_session::{NewMessage, NewSession};

const WRITERS: usize = 64;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: fill STORE_URL SESSIONS")?;
    let sessions: usize = args.next().ok_or("usage: fill STORE_URL SESSIONS")?.parse()?;
    let store = keel_session::open(&url).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (store, next) = (Arc::clone(&store), Arc::clone(&next));
        writers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= sessions {
                    return Ok::<(), keel_session::StoreError>(());
                }
                let id = format!("bench-{n}");
                store.ensure_session(NewSession::new(&id).with_model("llama3.2")).await?;
                store.append(&id, NewMessage::user(format!("question {n}")).with_tokens(3)).await?;
                store.append(&id, NewMessage::assistant(format!("answer {n}")).with_tokens(3)).await?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let writes = sessions * 3;
    println!(
        "{sessions} sessions, {writes} durable writes (session + 2 appends each) in {seconds:.1} s: {:.0} writes/s, {:.0} appends/s",
        writes as f64 / seconds,
        (sessions * 2) as f64 / seconds
    );
    Ok(())
}
