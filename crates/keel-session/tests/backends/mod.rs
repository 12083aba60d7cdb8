//! The backends every store suite runs on, and each test's private place in them: a SQLite file
//! in a temporary directory, a PostgreSQL schema with a random name (dropped afterwards) or a
//! Redis key prefix (its keys deleted afterwards). PostgreSQL and Redis are expected on 127.0.0.1
//! (5432, database `test`, user `postgres`; 6379), or at `KEEL_TEST_POSTGRES_URL` /
//! `KEEL_TEST_REDIS_URL`. When a server is unreachable a test prints a note and passes — unless
//! `KEEL_REQUIRE_SERVICES=1`, which makes it fail.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use keel_session::StoreError;

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// A backend a suite runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL schema.
    Postgres,
    /// A Redis key prefix.
    Redis,
}

/// A test's private place in a backend, removed when the test ends.
enum Place {
    Sqlite(#[allow(dead_code, reason = "held for its Drop")] tempfile::TempDir),
    Postgres { base: String, schema: String },
    Redis { base: String, prefix: String },
}

fn services_required() -> bool {
    std::env::var("KEEL_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

fn postgres_base() -> String {
    std::env::var("KEEL_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_URL.to_owned())
}

fn redis_base() -> String {
    std::env::var("KEEL_TEST_REDIS_URL").unwrap_or_else(|_| REDIS_URL.to_owned())
}

fn unique() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl Place {
    fn new(backend: Backend) -> (Place, String) {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("store.db").display());
                (Place::Sqlite(dir), url)
            }
            Backend::Postgres => {
                let base = postgres_base();
                let schema = format!("keel_test_{}", unique());
                let url = format!("{base}?schema={schema}&pool_size=8");
                (Place::Postgres { base, schema }, url)
            }
            Backend::Redis => {
                let base = redis_base();
                let prefix = format!("keeltest:{}:", unique());
                let url = format!("{base}?prefix={prefix}");
                (Place::Redis { base, prefix }, url)
            }
        }
    }

    async fn remove(self) {
        match self {
            Place::Sqlite(dir) => drop(dir),
            Place::Postgres { base, schema } => {
                let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await.unwrap();
                let task = tokio::spawn(connection);
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
                drop(client);
                let _ = task.await;
            }
            Place::Redis { base, prefix } => {
                let client = redis::Client::open(base).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    if !keys.is_empty() {
                        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                let left: Vec<String> =
                    redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
                assert!(left.is_empty(), "keys left behind: {left:?}");
            }
        }
    }
}

/// Runs `case` on what `open` makes of a fresh place in `backend` (given its URL), then removes
/// the place's data (also when the case fails). An unreachable server skips the test unless
/// `KEEL_REQUIRE_SERVICES=1`.
pub(crate) async fn run<S, Open, Opened, Case, Done>(backend: Backend, name: &str, open: Open, case: Case)
where
    Open: FnOnce(String) -> Opened,
    Opened: Future<Output = Result<S, StoreError>>,
    Case: FnOnce(S) -> Done,
    Done: Future<Output = ()>,
{
    let (place, url) = Place::new(backend);
    let opened = match open(url).await {
        Ok(opened) => opened,
        Err(error @ StoreError::Unavailable { .. }) if !services_required() => {
            eprintln!("SKIP {name} ({backend:?}): {error} — set KEEL_REQUIRE_SERVICES=1 to fail instead");
            return;
        }
        Err(error) => panic!("cannot open the {backend:?} store: {error}"),
    };
    let outcome = AssertUnwindSafe(case(opened)).catch_unwind().await;
    place.remove().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// One test per case and backend: `backend_suite!(sqlite_mod, postgres_mod, redis_mod: case, …)`
/// makes `sqlite_mod::case` etc., each calling `crate::run(backend, name, crate::cases::case)`.
macro_rules! backend_suite {
    ($sqlite:ident, $postgres:ident, $redis:ident: $($case:ident),* $(,)?) => {
        mod $sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::run(crate::backends::Backend::Sqlite, stringify!($case), crate::cases::$case).await;
                }
            )*
        }
        mod $postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::run(crate::backends::Backend::Postgres, stringify!($case), crate::cases::$case).await;
                }
            )*
        }
        mod $redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::run(crate::backends::Backend::Redis, stringify!($case), crate::cases::$case).await;
                }
            )*
        }
    };
}
