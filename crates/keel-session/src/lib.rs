//! Durable sessions for keel: conversations and their messages, stored so that an agent, keel or
//! the model server can restart mid-conversation and the conversation resumes by id.
//!
//! One [`Store`] trait, three backends chosen by URL with [`open`] (and, in the same store, keel's
//! API keys: see [API keys](#api-keys)):
//!
//! | URL | backend | for |
//! |---|---|---|
//! | `sqlite://keel.db`, `sqlite:///abs/path.db` | embedded SQLite (WAL) | the default: one file, no server |
//! | `postgres://user@host/db?schema=keel` | PostgreSQL | several keel instances sharing sessions |
//! | `redis://host:6379/0?prefix=keel:` | Redis | sessions next to shared rate-limit state |
//!
//! # Guarantees
//!
//! - **Order.** A session's messages have `seq` 1, 2, 3… in append order, without gaps or
//!   duplicates, however many tasks or keel instances append concurrently.
//! - **Exact counters.** Every append bumps the session's `version` by one, its `token_count` by
//!   the message's and its `message_count` to the new `seq`, in the same atomic step.
//! - **Idempotency.** An append with an idempotency key already used in the session returns the
//!   stored message instead of appending again (also when the retries race each other).
//! - **Optimistic concurrency.** [`Store::update_session`] takes the version the caller read and
//!   fails with [`StoreError::Conflict`] if the session changed since.
//! - **Durability.** When an append's future resolves `Ok`, the message is stored:
//!   - SQLite: WAL with `synchronous=NORMAL` — survives the keel process being killed
//!     (`kill -9`, a panic, the OOM killer), not a power loss or OS crash;
//!     `sqlite://keel.db?synchronous=full` survives those too (one fsync per group commit).
//!     Writes go through one writer thread that commits whatever is queued in one transaction
//!     (group commit), so concurrent appends share the cost of a commit.
//!   - PostgreSQL: committed with the server's `synchronous_commit` (on by default: fsynced).
//!   - Redis: as durable as the server's persistence settings (`appendonly yes` +
//!     `appendfsync everysec` loses at most about a second on a crash; no persistence loses all).
//!
//! A future that is dropped before it resolves may or may not have taken effect: retry with the
//! same idempotency key to find out without appending twice.
//!
//! # Participants and handoff
//!
//! The agents and people attached to a session are its [`Participant`]s: a name (unique per
//! session), a [`ParticipantKind`] (agent or human) and a free-text role (`owner`, `assistant`,
//! `reviewer`, …), listed in the order they were first added.
//! [`Store::add_participant`] is idempotent by name (re-adding updates kind and role in place),
//! [`Store::remove_participant`] detaches one. Each is one atomic step of the backend — never a
//! read of the list and a write back — so concurrent adds and removes all take effect. They do
//! not change the session's `version` or `updated_at`.
//!
//! [`Store::handoff`] passes the session from one participant to another and records it in the
//! transcript: in one atomic step it adds the target (if not there yet) and appends a message
//! with role [`HANDOFF_ROLE`] and content `from <from> to <to>: <note>`, which takes the next
//! `seq` and bumps `version` and `message_count` like any append. A `from` that is not a
//! participant fails with [`StoreError::ParticipantNotFound`] and changes nothing. Deleting a
//! session deletes its participants.
//!
//! # API keys
//!
//! The store also keeps keel's API keys, through a second trait, [`KeyStore`], on the same
//! connection(s): [`open_with_keys`] gives both from one URL ([`open_key_store`] only the keys).
//! A key is a name, the SHA-256 hash of its secret ([`hash_secret`]), the secret's first
//! characters, scopes, optional per-minute limits and a priority; the secret itself
//! ([`generate_secret`]) is never stored. [`KeyStore::create_key`] refuses a name an unrevoked
//! key has ([`StoreError::KeyExists`]); a revoked key stays listed with its `revoked_at`, and its
//! name may be given to a new key. [`KeyStore::active_keys`] is one cheap read, for a gateway
//! that refreshes its cache of keys a few times a second.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use keel_session::{NewKey, generate_secret, hash_secret, open_with_keys};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (_sessions, keys) = open_with_keys(&format!("sqlite://{}", dir.path().join("keel.db").display())).await?;
//!
//! let secret = generate_secret(); // keel_ + 64 hex digits: show it once
//! let key = keys.create_key(NewKey::new("ci-bot", &secret).with_requests_per_minute(60)).await?;
//! assert_eq!((key.prefix.as_str(), key.scopes.as_slice()), (&secret[..8], &["inference".to_owned()][..]));
//!
//! let active = keys.active_keys().await?;
//! assert!(active.iter().any(|k| k.hash == hash_secret(&secret) && k.verify(&secret)));
//! assert!(keys.revoke_key("ci-bot").await?);
//! assert!(keys.active_keys().await?.is_empty());
//! assert!(keys.list_keys().await?[0].revoked_at.is_some());
//! # Ok::<(), keel_session::StoreError>(())
//! # }).unwrap();
//! ```
//!
//! # Metric history
//!
//! [`HistoryStore`] ([`Stores::history`] of [`open_stores`]) keeps one JSON sample of keel's
//! counters per keel instance and minute, for the dashboard's timeline across restarts: a put
//! replaces the sample of its source and minute, a read returns a source's samples from a minute
//! on (at most [`MAX_SAMPLES`], a week), a prune deletes the old ones of every source.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use keel_session::{NewMessage, NewSession, open};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = open(&format!("sqlite://{}", dir.path().join("keel.db").display())).await?;
//!
//! let session = store.ensure_session(NewSession::new("chat-42").with_model("llama3.2")).await?;
//! assert_eq!(session.version, 1);
//! let first = store.append("chat-42", NewMessage::user("hello").with_tokens(2)).await?;
//! let retry = store.append("chat-42", NewMessage::user("hello").with_idempotency_key("req-1")).await?;
//! let again = store.append("chat-42", NewMessage::user("hello").with_idempotency_key("req-1")).await?;
//! assert_eq!((first.seq, retry.seq, again.seq), (1, 2, 2));
//!
//! let messages = store.messages("chat-42", 0, 100).await?;
//! assert_eq!(messages.len(), 2);
//! let session = store.get_session("chat-42").await?.unwrap();
//! assert_eq!((session.version, session.token_count, session.message_count), (3, 2, 2));
//!
//! use keel_session::NewParticipant;
//! store.add_participant("chat-42", NewParticipant::human("alice").with_role("owner")).await?;
//! store.add_participant("chat-42", NewParticipant::agent("triage").with_role("assistant")).await?;
//! let handoff = store
//!     .handoff("chat-42", "triage", NewParticipant::agent("billing").with_role("assistant"), Some("invoice".into()))
//!     .await?;
//! assert_eq!((handoff.seq, handoff.role.as_str()), (3, "handoff"));
//! assert_eq!(handoff.content, "from triage to billing: invoice");
//! let names: Vec<String> = store.participants("chat-42").await?.into_iter().map(|p| p.name).collect();
//! assert_eq!(names, ["alice", "triage", "billing"]);
//! # Ok::<(), keel_session::StoreError>(())
//! # }).unwrap();
//! ```

mod error;
mod history;
mod incidents;
mod jobs;
mod keys;
mod location;
mod model;
mod postgres;
mod redis_store;
mod rows;
mod sqlite;
mod store;

use std::sync::Arc;

pub use error::StoreError;
pub use history::{HistoryStore, MAX_SAMPLE_BYTES, MAX_SAMPLES, Sample};
pub use incidents::{
    Effect, INCIDENT_CHANGED_JOB, Incident, IncidentEvent, IncidentStatus, IncidentStore, MAX_DETAIL_BYTES,
    MAX_EVENTS_LISTED, MAX_RUNBOOK_BYTES, MAX_TITLE_LEN, NewIncidentEvent, PlaybookEntry, Recorded, Runbook,
};
pub use jobs::{Enqueued, Job, JobCounts, JobStatus, JobStore, MAX_ERROR_LEN, MAX_PAYLOAD_BYTES, NewJob};
pub use keys::{
    DEFAULT_SCOPE, KeyStore, MAX_PREFIX_LEN, NewKey, PREFIX_LEN, SECRET_PREFIX, StoredKey, generate_secret, hash_secret,
};
pub use location::redact_url;
pub use model::{
    HANDOFF_ROLE, Message, MessageCompletion, NewMessage, NewParticipant, NewSession, Page, Participant,
    ParticipantKind, Session, SessionFilter, SessionPage, SessionPatch, SessionStatus,
};
pub use store::{MAX_ID_LEN, Store, StoreFuture, now_millis};

/// Opens the store at `url` (creating and migrating its tables or keys as needed).
///
/// - `sqlite://PATH[?synchronous=normal|full]` — the file and its missing directories are
///   created (the directories with a log line). `sqlite:///abs/path.db` for an absolute path.
///   A file that cannot be opened is a [`StoreError::Backend`] naming the file, the OS's reason
///   (permission denied, a directory, …) and what to do; a file that is not a SQLite database
///   is [`StoreError::Corrupt`].
/// - `postgres://…` or `postgresql://…` — any libpq-style URL tokio-postgres accepts, plus
///   `schema=NAME` (default `keel`; created if missing) to keep stores apart in one database,
///   and `pool_size=N` (default 16).
/// - `redis://host:port/db[?prefix=P]` — every key starts with `P` (default `keel:`).
///
/// Fails with [`StoreError::InvalidUrl`] for a malformed URL or unknown scheme and
/// [`StoreError::Unavailable`] when the server cannot be reached.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(open_with_keys(url).await?.0)
}

/// Every trait of one opened store: sessions, API keys, incidents, jobs and metric history, all
/// one backend object (one SQLite writer thread, one PostgreSQL pool or one Redis connection).
#[derive(Debug, Clone)]
pub struct Stores {
    /// Sessions and their messages.
    pub sessions: Arc<dyn Store>,
    /// keel's API keys.
    pub keys: Arc<dyn KeyStore>,
    /// The incident log, runbooks and playbook.
    pub incidents: Arc<dyn IncidentStore>,
    /// Durable jobs.
    pub jobs: Arc<dyn JobStore>,
    /// Per-minute samples of keel's counters, for the dashboard's timeline.
    pub history: Arc<dyn HistoryStore>,
}

/// Opens the store at `url` like [`open`], and returns every trait of it ([`Stores`]).
pub async fn open_stores(url: &str) -> Result<Stores, StoreError> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme.to_ascii_lowercase()).unwrap_or_default();
    match scheme.as_str() {
        "sqlite" => Ok(all(sqlite::open(url).await?)),
        "postgres" | "postgresql" => Ok(all(postgres::open(url).await?)),
        "redis" => Ok(all(redis_store::open(url).await?)),
        "rediss" => Err(StoreError::invalid_url("rediss:// (TLS) is not supported by this build; use redis://")),
        "" => Err(StoreError::invalid_url("no scheme")),
        other => Err(StoreError::invalid_url(format!("unknown scheme '{other}'"))),
    }
}

/// Opens the store at `url` like [`open`], and returns it twice: as the session [`Store`] and as
/// the [`KeyStore`] of keel's API keys. Both are one backend object: one SQLite writer thread,
/// one PostgreSQL pool or one Redis connection, kept open while either `Arc` lives.
pub async fn open_with_keys(url: &str) -> Result<(Arc<dyn Store>, Arc<dyn KeyStore>), StoreError> {
    let stores = open_stores(url).await?;
    Ok((stores.sessions, stores.keys))
}

/// Opens the store at `url` like [`open`] (creating and migrating it as needed) for its API keys
/// only, e.g. for `keel keys`.
pub async fn open_key_store(url: &str) -> Result<Arc<dyn KeyStore>, StoreError> {
    Ok(open_with_keys(url).await?.1)
}

/// One backend object as every trait.
fn all<S: Store + KeyStore + IncidentStore + JobStore + HistoryStore + 'static>(store: Arc<S>) -> Stores {
    Stores {
        sessions: Arc::clone(&store) as Arc<dyn Store>,
        keys: Arc::clone(&store) as Arc<dyn KeyStore>,
        incidents: Arc::clone(&store) as Arc<dyn IncidentStore>,
        jobs: Arc::clone(&store) as Arc<dyn JobStore>,
        history: store,
    }
}
