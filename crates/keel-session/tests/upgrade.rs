//! Stores created by an older keel (schema version 1: sessions and messages, no participants,
//! API keys, incidents, jobs or metric history) are upgraded in place when opened: their sessions
//! and messages stay, participants, API keys, incidents, jobs and metric history work.
//!
//! PostgreSQL is expected where `tests/conformance.rs` expects it (`KEEL_TEST_POSTGRES_URL`,
//! skipped when unreachable unless `KEEL_REQUIRE_SERVICES=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use keel_session::{
    Effect, INCIDENT_CHANGED_JOB, KeyStore, NewIncidentEvent, NewKey, NewMessage, NewParticipant, Store, StoreError,
    open, open_stores, open_with_keys,
};

const SQLITE_V1: &str = include_str!("../migrations/sqlite/001_sessions.sql");
const SQLITE_V2: &str = include_str!("../migrations/sqlite/002_participants.sql");
const POSTGRES_V1: &str = include_str!("../migrations/postgres/001_sessions.sql");
/// How many migrations this keel has (what an upgraded store is at).
const LATEST: i64 = 5;

/// A version-1 session `old` with one message, as keel wrote them before participants.
const OLD_ROWS: &str = "
    INSERT INTO sessions (id, owner, model, status, created_at, updated_at, version, token_count, last_seq, metadata)
    VALUES ('old', 'o', 'm', 'active', 1000, 2000, 2, 3, 1, '{}');
    INSERT INTO messages (session_id, seq, role, content, tool_calls, token_count, idempotency_key, complete, created_at)
    VALUES ('old', 1, 'user', 'from before', NULL, 3, 'k1', true, 2000);";

/// What every upgraded store must do with the old session, and its new API keys table.
async fn check_upgraded(store: &dyn Store, keys: &dyn KeyStore) {
    assert_eq!(keys.list_keys().await.unwrap(), vec![]);
    keys.create_key(NewKey::new("after-upgrade", "keel_secret")).await.unwrap();
    assert!(keys.active_keys().await.unwrap()[0].verify("keel_secret"));
    let session = store.get_session("old").await.unwrap().expect("the old session survives");
    assert_eq!((session.version, session.token_count, session.message_count), (2, 3, 1));
    assert_eq!(store.messages("old", 0, 10).await.unwrap()[0].content, "from before");
    assert_eq!(store.participants("old").await.unwrap(), vec![]);
    store.add_participant("old", NewParticipant::human("alice")).await.unwrap();
    let handoff = store.handoff("old", "alice", NewParticipant::agent("bot"), None).await.unwrap();
    assert_eq!(handoff.seq, 2);
    assert_eq!(store.append("old", NewMessage::user("after")).await.unwrap().seq, 3);
    let names: Vec<String> = store.participants("old").await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["alice", "bot"]);
}

/// What every upgraded store must do with incidents and jobs (migration 4) and metric history
/// (migration 5).
async fn check_incidents_and_jobs(url: &str) {
    let stores = open_stores(url).await.unwrap();
    let event = NewIncidentEvent {
        fingerprint: "fp".into(),
        kind: "upstream_down".into(),
        title: "down".into(),
        upstream: None,
        model: None,
        event: "breaker.opened".into(),
        effect: Effect::Open,
        detail: serde_json::json!({}),
    };
    let recorded = stores.incidents.record_event(event).await.unwrap();
    assert!(recorded.changed());
    let jobs = stores.jobs.list_jobs(None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].kind, INCIDENT_CHANGED_JOB);
    stores.history.put_sample("gw", 7, serde_json::json!({"requests": 1})).await.unwrap();
    assert_eq!(stores.history.samples("gw", 0).await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_version_1_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(SQLITE_V1).unwrap();
        conn.execute_batch(OLD_ROWS).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let url = format!("sqlite://{}", path.display());
    let (store, keys) = open_with_keys(&url).await.unwrap();
    check_upgraded(&*store, &*keys).await;
    drop((store, keys));
    check_incidents_and_jobs(&url).await;
    // Opened again: nothing to apply, everything still there.
    let store = open(&url).await.unwrap();
    assert_eq!(store.participants("old").await.unwrap().len(), 2);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
    assert_eq!(version, LATEST);
}

#[tokio::test]
async fn sqlite_migration_2_is_idempotent() {
    // A database at version 1 that already has the participants table (created by hand, or by
    // a migration whose user_version bump was lost): opening it applies migration 2 again.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1-with-table.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(SQLITE_V1).unwrap();
        conn.execute_batch(SQLITE_V2).unwrap();
        conn.execute_batch(OLD_ROWS).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let (store, keys) = open_with_keys(&format!("sqlite://{}", path.display())).await.unwrap();
    check_upgraded(&*store, &*keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_version_1_is_upgraded_in_place() {
    let base = std::env::var("KEEL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("keel_upgrade_{}", uuid::Uuid::now_v7().simple());
    let client = match tokio_postgres::connect(&base, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(error) if std::env::var("KEEL_REQUIRE_SERVICES").as_deref() != Ok("1") => {
            eprintln!("SKIP postgres_version_1_is_upgraded_in_place: {error} — set KEEL_REQUIRE_SERVICES=1 to fail");
            return;
        }
        Err(error) => panic!("postgres unreachable: {error}"),
    };
    // Schema version 1, as keel created it before participants.
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             SET search_path TO {schema};
             CREATE TABLE keel_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL);
             {POSTGRES_V1}
             INSERT INTO keel_migrations VALUES (1, 0);
             {OLD_ROWS}"
        ))
        .await
        .unwrap();
    let outcome = async {
        let url = format!("{base}?schema={schema}&pool_size=2");
        let (store, keys) = open_with_keys(&url).await?;
        check_upgraded(&*store, &*keys).await;
        drop((store, keys));
        check_incidents_and_jobs(&url).await;
        let store = open(&url).await?;
        assert_eq!(store.participants("old").await?.len(), 2);
        Ok::<_, StoreError>(())
    };
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    let versions: Vec<i32> = client
        .query(&format!("SELECT version FROM {schema}.keel_migrations ORDER BY version"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic)).unwrap();
    assert_eq!(versions, (1..=LATEST).map(|v| i32::try_from(v).unwrap()).collect::<Vec<_>>());
}
