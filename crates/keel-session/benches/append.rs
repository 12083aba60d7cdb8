//! Cost of one append as a session grows, and of appends that arrive together.
//!
//! - `append/sqlite/N` (also `postgres`, `redis` when their servers answer on 127.0.0.1): one
//!   append awaited at a time to a session that already holds N messages. The session is
//!   replaced by a fresh one, prefilled to N outside the measurement, whenever it has grown by
//!   max(N, 100), so it holds N to 2N messages (10 to 110 for N = 10) while measured.
//! - `append_concurrent/sqlite/64`: 64 appends in flight at once to one session (group commit:
//!   the SQLite writer commits whatever is queued in one transaction); per-element time.
//! - `tail/sqlite/10000`: reading the last 20 messages of a 10 000-message session (a resume).
//!
//! Run: `cargo bench -p keel-session -- --warm-up-time 1 --measurement-time 3`.
//! PostgreSQL/Redis URLs: `KEEL_BENCH_POSTGRES_URL`, `KEEL_BENCH_REDIS_URL` (defaults on
//! 127.0.0.1; the schema / key prefix is random and removed afterwards).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "bench setup")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keel_session::{NewMessage, NewSession, Store, open};
use tokio::runtime::Runtime;

/// A typical chat turn.
fn message() -> NewMessage {
    NewMessage::user(
        "Summarize the ticket below in two sentences and say whether it is a billing or a technical \
         problem. Ticket: my invoice shows a charge twice for March and the app logs me out.",
    )
    .with_tokens(48)
}

/// Creates a session holding `n` messages, appending with 64 tasks at once.
fn prefilled(runtime: &Runtime, store: &Arc<dyn Store>, n: u64) -> String {
    runtime.block_on(async {
        let id = store.create_session(NewSession::generated()).await.unwrap().id;
        let tasks: Vec<_> = (0..64)
            .map(|task| {
                let store = Arc::clone(store);
                let id = id.clone();
                tokio::spawn(async move {
                    for _ in (task..n).step_by(64) {
                        store.append(&id, message()).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        id
    })
}

fn bench_append(c: &mut Criterion, runtime: &Runtime, backend: &str, store: &Arc<dyn Store>, sizes: &[u64]) {
    let mut group = c.benchmark_group(format!("append/{backend}"));
    group.throughput(Throughput::Elements(1));
    for &n in sizes {
        let slack = n.max(100);
        let mut id = prefilled(runtime, store, n);
        let mut held = n;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    if held >= n + slack {
                        id = prefilled(runtime, store, n);
                        held = n;
                    }
                    let start = Instant::now();
                    black_box(runtime.block_on(store.append(&id, message())).unwrap());
                    measured += start.elapsed();
                    held += 1;
                }
                measured
            });
        });
    }
    group.finish();
}

fn bench_concurrent(c: &mut Criterion, runtime: &Runtime, backend: &str, store: &Arc<dyn Store>) {
    const IN_FLIGHT: u64 = 64;
    let mut group = c.benchmark_group(format!("append_concurrent/{backend}"));
    group.throughput(Throughput::Elements(IN_FLIGHT));
    let id: Arc<str> = prefilled(runtime, store, 10).into();
    group.bench_function(BenchmarkId::from_parameter(IN_FLIGHT), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tasks: Vec<_> = (0..IN_FLIGHT)
                    .map(|_| {
                        let store = Arc::clone(store);
                        let id = Arc::clone(&id);
                        tokio::spawn(async move { store.append(&id, message()).await.unwrap() })
                    })
                    .collect();
                for task in tasks {
                    black_box(task.await.unwrap());
                }
            });
        });
    });
    group.finish();
}

fn bench_tail(c: &mut Criterion, runtime: &Runtime, backend: &str, store: &Arc<dyn Store>) {
    let id = prefilled(runtime, store, 10_000);
    let mut group = c.benchmark_group(format!("tail/{backend}"));
    group.bench_function(BenchmarkId::from_parameter(10_000), |b| {
        b.iter(|| black_box(runtime.block_on(store.messages(&id, 10_000 - 20, 20)).unwrap()));
    });
    group.finish();
}

fn sessions(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = runtime.block_on(open(&url)).unwrap();
    bench_append(c, &runtime, "sqlite", &sqlite, &[10, 1_000, 10_000]);
    bench_concurrent(c, &runtime, "sqlite", &sqlite);
    bench_tail(c, &runtime, "sqlite", &sqlite);
    drop(sqlite);

    let unique = uuid::Uuid::now_v7().simple().to_string();
    let postgres_base = std::env::var("KEEL_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("keel_bench_{unique}");
    match runtime.block_on(open(&format!("{postgres_base}?schema={schema}"))) {
        Ok(store) => {
            bench_append(c, &runtime, "postgres", &store, &[10, 1_000]);
            bench_concurrent(c, &runtime, "postgres", &store);
            drop(store);
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&postgres_base, tokio_postgres::NoTls).await.unwrap();
                let task = tokio::spawn(connection);
                client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
                drop(client);
                let _ = task.await;
            });
        }
        Err(error) => eprintln!("skipping postgres: {error}"),
    }

    let redis_base = std::env::var("KEEL_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let prefix = format!("keelbench:{unique}:");
    match runtime.block_on(open(&format!("{redis_base}?prefix={prefix}"))) {
        Ok(store) => {
            bench_append(c, &runtime, "redis", &store, &[10, 1_000, 10_000]);
            bench_concurrent(c, &runtime, "redis", &store);
            drop(store);
            runtime.block_on(async {
                let client = redis::Client::open(redis_base.as_str()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let keys: Vec<String> =
                    redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
                if !keys.is_empty() {
                    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
                }
            });
        }
        Err(error) => eprintln!("skipping redis: {error}"),
    }
}

criterion_group!(benches, sessions);
criterion_main!(benches);
