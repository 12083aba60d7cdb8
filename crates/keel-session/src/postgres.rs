//! The PostgreSQL backend (`postgres://…?schema=NAME`).
//!
//! Tables live in their own schema (default `keel`), created with the tables on first open, so
//! several stores (or test runs) share one database without seeing each other; every pooled
//! connection gets `search_path=NAME` at startup. Migrations are embedded SQL files applied in
//! order under a transaction-scoped advisory lock, recorded in `keel_migrations`.
//!
//! Appends lock the session row (`SELECT … FOR UPDATE`) for the length of a short transaction:
//! appends to one session are serialized across every keel instance, the idempotency check runs
//! under that lock, and a unique index on `(session_id, idempotency_key)` backs it up.
//!
//! Participants are rows of their own (primary key `(session_id, name)`, ordered by an identity
//! column): an add is one `INSERT … ON CONFLICT DO UPDATE`, a remove one `DELETE`, so concurrent
//! changes never overwrite each other. A handoff locks the session row like an append, checks
//! `from` (locking its row against a concurrent remove), inserts `to` and appends, in one
//! transaction.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::StoreError;
use crate::location::Location;
use crate::model::{
    Message, MessageCompletion, NewMessage, NewParticipant, NewSession, Page, Participant, Session, SessionFilter,
    SessionPage, SessionPatch, into_page,
};
use crate::rows::{MESSAGE_COLUMNS, MessageRow, ParticipantRow, SESSION_COLUMNS, SessionRow, clamp_i64};
use crate::store::{
    Store, StoreFuture, add_tokens, apply_completion, check_handoff, check_id, check_key, check_message,
    check_participant, check_participant_name, get_or_insert, now_millis, to_i64,
};

const BACKEND: &str = "postgres";
const DEFAULT_SCHEMA: &str = "keel";
const DEFAULT_POOL_SIZE: usize = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one migration per entry; `keel_migrations` records which are applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/001_sessions.sql"),
    include_str!("../migrations/postgres/002_participants.sql"),
    include_str!("../migrations/postgres/003_api_keys.sql"),
    include_str!("../migrations/postgres/004_incidents_jobs.sql"),
    include_str!("../migrations/postgres/005_history.sql"),
];

/// What `postgres://…` says.
#[derive(Debug, Clone)]
struct PgConfig {
    pg: tokio_postgres::Config,
    schema: String,
    pool_size: usize,
}

impl PgConfig {
    fn parse(url: &str) -> Result<Self, StoreError> {
        let mut location = Location::parse(url);
        let schema = location.take("schema")?.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        let valid = schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(StoreError::invalid_url(format!(
                "schema must be 1 to 63 characters of a-z, 0-9 and _ (not starting with a digit), got '{schema}'"
            )));
        }
        let pool_size =
            match location.take("pool_size")? {
                None => DEFAULT_POOL_SIZE,
                Some(size) => size.parse().ok().filter(|size| *size > 0).ok_or_else(|| {
                    StoreError::invalid_url(format!("pool_size must be a positive number, got '{size}'"))
                })?,
            };
        let mut pg: tokio_postgres::Config =
            location.to_url().parse().map_err(|e| StoreError::invalid_url(format!("postgres: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("keel");
        }
        let options = match pg.get_options() {
            Some(options) => format!("{options} -c search_path={schema}"),
            None => format!("-c search_path={schema}"),
        };
        pg.options(options);
        Ok(PgConfig { pg, schema, pool_size })
    }
}

/// Connects, creates the schema and tables if missing, and returns the store.
pub(crate) async fn open(url: &str) -> Result<Arc<PostgresStore>, StoreError> {
    let config = PgConfig::parse(url)?;
    let manager = Manager::from_config(config.pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| backend_error(format!("cannot build the connection pool: {e}")))?;
    let store = PostgresStore { pool, schema: config.schema };
    let mut client = store.client().await?;
    migrate(&mut client, &store.schema).await?;
    drop(client);
    Ok(Arc::new(store))
}

fn backend_error(message: String) -> StoreError {
    StoreError::Backend { backend: BACKEND, message }
}

pub(crate) fn db_error(error: tokio_postgres::Error) -> StoreError {
    if let Some(db) = error.as_db_error() {
        let mut message = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        return backend_error(message);
    }
    // Not an answer of the server: the connection broke or could not be made.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    StoreError::Unavailable { backend: BACKEND, message }
}

fn pool_error(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => db_error(error),
        other => StoreError::Unavailable { backend: BACKEND, message: other.to_string() },
    }
}

/// `db_error`, except that a foreign-key violation (a row inserted for a session deleted
/// concurrently) is [`StoreError::SessionNotFound`].
fn session_error(id: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |error| {
        if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) { StoreError::not_found(id) } else { db_error(error) }
    }
}

pub(crate) fn column_error(error: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt { backend: BACKEND, message: error.to_string() }
}

async fn migrate(client: &mut deadpool_postgres::Object, schema: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    let lock = format!("keel-session:{schema}");
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock]).await.map_err(db_error)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS keel_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL);"
    ))
    .await
    .map_err(db_error)?;
    let applied: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM keel_migrations", &[])
        .await
        .map_err(db_error)?
        .try_get(0)
        .map_err(column_error)?;
    let known = MIGRATIONS.len();
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > known {
        return Err(StoreError::Corrupt {
            backend: BACKEND,
            message: format!(
                "schema {schema} is at version {applied}, this keel knows {known}; upgrade keel to open it"
            ),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql).await.map_err(db_error)?;
        tx.execute("INSERT INTO keel_migrations (version, applied_at) VALUES ($1, $2)", &[&version, &now_millis()])
            .await
            .map_err(db_error)?;
        tracing::info!(version, schema, "keel-session: applied postgres migration");
    }
    tx.commit().await.map_err(db_error)
}

/// The PostgreSQL store: a connection pool and the schema its connections use.
pub(crate) struct PostgresStore {
    pool: Pool,
    schema: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("schema", &self.schema).finish_non_exhaustive()
    }
}

fn session_row(row: &Row) -> Result<Session, StoreError> {
    let row = SessionRow {
        id: row.try_get(0).map_err(column_error)?,
        owner: row.try_get(1).map_err(column_error)?,
        model: row.try_get(2).map_err(column_error)?,
        status: row.try_get(3).map_err(column_error)?,
        created_at: row.try_get(4).map_err(column_error)?,
        updated_at: row.try_get(5).map_err(column_error)?,
        version: row.try_get(6).map_err(column_error)?,
        token_count: row.try_get(7).map_err(column_error)?,
        last_seq: row.try_get(8).map_err(column_error)?,
        metadata: row.try_get(9).map_err(column_error)?,
    };
    row.into_session(BACKEND)
}

fn message_row(row: &Row) -> Result<Message, StoreError> {
    let row = MessageRow {
        session_id: row.try_get(0).map_err(column_error)?,
        seq: row.try_get(1).map_err(column_error)?,
        role: row.try_get(2).map_err(column_error)?,
        content: row.try_get(3).map_err(column_error)?,
        tool_calls: row.try_get(4).map_err(column_error)?,
        token_count: row.try_get(5).map_err(column_error)?,
        idempotency_key: row.try_get(6).map_err(column_error)?,
        complete: row.try_get(7).map_err(column_error)?,
        created_at: row.try_get(8).map_err(column_error)?,
    };
    row.into_message(BACKEND)
}

async fn query_opt<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    client.query_opt(&statement, params).await.map_err(db_error)
}

pub(crate) async fn query<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    client.query(&statement, params).await.map_err(db_error)
}

pub(crate) async fn execute<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    client.execute(&statement, params).await.map_err(db_error)
}

async fn load_session<C: GenericClient>(client: &C, id: &str, lock: bool) -> Result<Option<Session>, StoreError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1{lock}");
    query_opt(client, &sql, &[&id]).await?.as_ref().map(session_row).transpose()
}

async fn load_message_by_key<C: GenericClient>(client: &C, id: &str, key: &str) -> Result<Option<Message>, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND idempotency_key = $2");
    query_opt(client, &sql, &[&id, &key]).await?.as_ref().map(message_row).transpose()
}

/// Inserts `message` at `last_seq + 1` and bumps the session's counters; the caller holds the
/// session row lock ([`lock_counters`]) and has checked the token total.
async fn insert_message<C: GenericClient>(
    tx: &C,
    session_id: &str,
    message: NewMessage,
    last_seq: u64,
) -> Result<Message, StoreError> {
    let now = now_millis();
    let message = message.into_message(session_id, last_seq + 1, now);
    let seq = to_i64(message.seq, "seq")?;
    let tokens = to_i64(message.token_count, "token count")?;
    execute(
        tx,
        "INSERT INTO messages (session_id, seq, role, content, tool_calls, token_count, idempotency_key, complete, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &session_id,
            &seq,
            &message.role,
            &message.content,
            &message.tool_calls,
            &tokens,
            &message.idempotency_key,
            &message.complete,
            &now,
        ],
    )
    .await?;
    execute(
        tx,
        "UPDATE sessions SET last_seq = $2, version = version + 1, token_count = token_count + $3,
                updated_at = greatest(updated_at, $4)
         WHERE id = $1",
        &[&session_id, &seq, &tokens, &now],
    )
    .await?;
    Ok(message)
}

fn participant_row(row: &Row) -> Result<Participant, StoreError> {
    let row = ParticipantRow {
        session_id: row.try_get(0).map_err(column_error)?,
        name: row.try_get(1).map_err(column_error)?,
        kind: row.try_get(2).map_err(column_error)?,
        role: row.try_get(3).map_err(column_error)?,
        added_at: row.try_get(4).map_err(column_error)?,
    };
    row.into_participant(BACKEND)
}

async fn session_exists<C: GenericClient>(client: &C, id: &str) -> Result<bool, StoreError> {
    Ok(query_opt(client, "SELECT 1 FROM sessions WHERE id = $1", &[&id]).await?.is_some())
}

/// `(last_seq, token_count)` of a session, its row locked until the transaction ends.
async fn lock_counters<C: GenericClient>(client: &C, id: &str) -> Result<(u64, u64), StoreError> {
    let row = query_opt(client, "SELECT last_seq, token_count FROM sessions WHERE id = $1 FOR UPDATE", &[&id])
        .await?
        .ok_or_else(|| StoreError::not_found(id))?;
    let last_seq: i64 = row.try_get(0).map_err(column_error)?;
    let token_count: i64 = row.try_get(1).map_err(column_error)?;
    let corrupt = || StoreError::Corrupt { backend: BACKEND, message: format!("session '{id}' has negative counters") };
    Ok((u64::try_from(last_seq).map_err(|_| corrupt())?, u64::try_from(token_count).map_err(|_| corrupt())?))
}

impl PostgresStore {
    /// [`Store::complete_message`], or with `partial` [`Store::save_partial`] (the message stays
    /// incomplete and the session's version is not bumped), in one transaction holding the
    /// session's row lock.
    async fn finish_message(
        &self,
        session_id: &str,
        seq: u64,
        completion: MessageCompletion,
        partial: bool,
    ) -> Result<Message, StoreError> {
        check_id(session_id)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let (_, token_count) = lock_counters(&tx, session_id).await?;
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq = $2");
        let mut message = query_opt(&tx, &sql, &[&session_id, &clamp_i64(seq)])
            .await?
            .as_ref()
            .map(message_row)
            .transpose()?
            .ok_or_else(|| StoreError::MessageNotFound { id: session_id.to_owned(), seq })?;
        let Some(total) = apply_completion(&mut message, &completion, partial, token_count)? else {
            return Ok(message);
        };
        let total = to_i64(total, "tokens")?;
        let tokens = to_i64(message.token_count, "token count")?;
        execute(
            &tx,
            "UPDATE messages SET content = $3, token_count = $4, complete = $5, tool_calls = $6 \
             WHERE session_id = $1 AND seq = $2",
            &[&session_id, &clamp_i64(seq), &message.content, &tokens, &message.complete, &message.tool_calls],
        )
        .await?;
        execute(
            &tx,
            "UPDATE sessions SET token_count = $2, version = version + $4, updated_at = greatest(updated_at, $3)
             WHERE id = $1",
            &[&session_id, &total, &now_millis(), &i64::from(!partial)],
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(message)
    }

    /// A pooled connection (its `search_path` is the store's schema).
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn insert_session(&self, new: NewSession) -> Result<Result<Session, NewSession>, StoreError> {
        let client = self.client().await?;
        let now = now_millis();
        let inserted = execute(
            &client,
            "INSERT INTO sessions (id, owner, model, status, created_at, updated_at, version, token_count, last_seq, metadata)
             VALUES ($1, $2, $3, $4, $5, $5, 1, 0, 0, $6)
             ON CONFLICT (id) DO NOTHING",
            &[&new.id, &new.owner, &new.model, &new.status.as_str(), &now, &new.metadata],
        )
        .await?;
        Ok(if inserted == 1 { Ok(new.into_session(now)) } else { Err(new) })
    }
}

impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn create_session(&self, new: NewSession) -> StoreFuture<'_, Session> {
        Box::pin(async move {
            check_id(&new.id)?;
            self.insert_session(new).await?.map_err(|new| StoreError::SessionExists { id: new.id })
        })
    }

    fn ensure_session(&self, new: NewSession) -> StoreFuture<'_, Session> {
        Box::pin(async move {
            check_id(&new.id)?;
            let get = |id: String| async move { self.get_session(&id).await };
            get_or_insert(BACKEND, new, get, |new| self.insert_session(new)).await
        })
    }

    fn get_session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move {
            check_id(id)?;
            let client = self.client().await?;
            load_session(&client, id, false).await
        })
    }

    fn update_session<'a>(
        &'a self,
        id: &'a str,
        expected_version: u64,
        patch: SessionPatch,
    ) -> StoreFuture<'a, Session> {
        Box::pin(async move {
            check_id(id)?;
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let mut session = load_session(&tx, id, true).await?.ok_or_else(|| StoreError::not_found(id))?;
            if session.version != expected_version {
                return Err(StoreError::Conflict { current_version: session.version });
            }
            patch.apply(&mut session, now_millis());
            let version = to_i64(session.version, "version")?;
            execute(
                &tx,
                "UPDATE sessions SET owner = $2, model = $3, status = $4, metadata = $5, version = $6, updated_at = $7
                 WHERE id = $1",
                &[
                    &id,
                    &session.owner,
                    &session.model,
                    &session.status.as_str(),
                    &session.metadata,
                    &version,
                    &session.updated_at,
                ],
            )
            .await?;
            tx.commit().await.map_err(db_error)?;
            Ok(session)
        })
    }

    fn delete_session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_id(id)?;
            let client = self.client().await?;
            // Messages go with it (ON DELETE CASCADE); the row lock waits for running appends.
            Ok(execute(&client, "DELETE FROM sessions WHERE id = $1", &[&id]).await? > 0)
        })
    }

    fn list_sessions(&self, filter: SessionFilter, page: Page) -> StoreFuture<'_, SessionPage> {
        Box::pin(async move {
            let (limit, cursor) = page.parse()?;
            let client = self.client().await?;
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE ($1::text IS NULL OR owner = $1) AND ($2::text IS NULL OR status = $2)
                   AND ($3::text IS NULL OR model = $3) AND ($4::bigint IS NULL OR updated_at >= $4)
                   AND ($5::bigint IS NULL OR updated_at < $5 OR (updated_at = $5 AND id < $6::text))
                 ORDER BY updated_at DESC, id DESC
                 LIMIT $7"
            );
            let rows = query(
                &client,
                &sql,
                &[
                    &filter.owner,
                    &filter.status.map(|status| status.as_str()),
                    &filter.model,
                    &filter.updated_since,
                    &cursor.as_ref().map(|cursor| cursor.updated_at),
                    &cursor.as_ref().map(|cursor| cursor.id.as_str()),
                    &clamp_i64(limit as u64 + 1),
                ],
            )
            .await?;
            let sessions = rows.iter().map(session_row).collect::<Result<Vec<_>, _>>()?;
            Ok(into_page(sessions, limit))
        })
    }

    fn append<'a>(&'a self, session_id: &'a str, message: NewMessage) -> StoreFuture<'a, Message> {
        Box::pin(async move {
            check_id(session_id)?;
            check_message(&message)?;
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let (last_seq, token_count) = lock_counters(&tx, session_id).await?;
            if let Some(key) = &message.idempotency_key
                && let Some(stored) = load_message_by_key(&tx, session_id, key).await?
            {
                return Ok(stored);
            }
            add_tokens(token_count, message.token_count)?;
            let message = insert_message(&tx, session_id, message, last_seq).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(message)
        })
    }

    fn complete_message<'a>(
        &'a self,
        session_id: &'a str,
        seq: u64,
        completion: MessageCompletion,
    ) -> StoreFuture<'a, Message> {
        Box::pin(self.finish_message(session_id, seq, completion, false))
    }

    fn save_partial<'a>(
        &'a self,
        session_id: &'a str,
        seq: u64,
        completion: MessageCompletion,
    ) -> StoreFuture<'a, Message> {
        Box::pin(self.finish_message(session_id, seq, completion, true))
    }

    fn messages<'a>(&'a self, session_id: &'a str, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<Message>> {
        Box::pin(async move {
            check_id(session_id)?;
            let client = self.client().await?;
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            );
            let rows = query(&client, &sql, &[&session_id, &clamp_i64(after_seq), &clamp_i64(limit as u64)]).await?;
            // Messages exist only in existing sessions (foreign key); none may mean no session.
            if rows.is_empty() && !session_exists(&client, session_id).await? {
                return Err(StoreError::not_found(session_id));
            }
            rows.iter().map(message_row).collect()
        })
    }

    fn message_by_key<'a>(&'a self, session_id: &'a str, key: &'a str) -> StoreFuture<'a, Option<Message>> {
        Box::pin(async move {
            check_id(session_id)?;
            check_key(key)?;
            let client = self.client().await?;
            load_message_by_key(&client, session_id, key).await
        })
    }

    fn add_participant<'a>(&'a self, session_id: &'a str, participant: NewParticipant) -> StoreFuture<'a, Participant> {
        Box::pin(async move {
            check_id(session_id)?;
            check_participant(&participant)?;
            let client = self.client().await?;
            // One statement: no row back = no session; a session deleted between the check and
            // the insert fails the foreign key. An existing name keeps position and added_at.
            let statement = client
                .prepare_cached(
                    "INSERT INTO participants (session_id, name, kind, role, added_at)
                     SELECT $1::text, $2::text, $3::text, $4::text, $5::bigint
                     WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1::text)
                     ON CONFLICT (session_id, name) DO UPDATE SET kind = EXCLUDED.kind, role = EXCLUDED.role
                     RETURNING added_at",
                )
                .await
                .map_err(db_error)?;
            let row = client
                .query_opt(
                    &statement,
                    &[&session_id, &participant.name, &participant.kind.as_str(), &participant.role, &now_millis()],
                )
                .await
                .map_err(session_error(session_id))?
                .ok_or_else(|| StoreError::not_found(session_id))?;
            let added_at: i64 = row.try_get(0).map_err(column_error)?;
            Ok(participant.into_participant(session_id, added_at))
        })
    }

    fn remove_participant<'a>(&'a self, session_id: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_id(session_id)?;
            check_participant_name(name)?;
            let client = self.client().await?;
            let removed =
                execute(&client, "DELETE FROM participants WHERE session_id = $1 AND name = $2", &[&session_id, &name])
                    .await?;
            if removed == 0 && !session_exists(&client, session_id).await? {
                return Err(StoreError::not_found(session_id));
            }
            Ok(removed > 0)
        })
    }

    fn participants<'a>(&'a self, session_id: &'a str) -> StoreFuture<'a, Vec<Participant>> {
        Box::pin(async move {
            check_id(session_id)?;
            let client = self.client().await?;
            // One statement, one snapshot: the session's row (none = no session) joined with its
            // participants (NULLs when it has none).
            let rows = query(
                &client,
                "SELECT p.session_id, p.name, p.kind, p.role, p.added_at
                 FROM sessions s LEFT JOIN participants p ON p.session_id = s.id
                 WHERE s.id = $1
                 ORDER BY p.position",
                &[&session_id],
            )
            .await?;
            if rows.is_empty() {
                return Err(StoreError::not_found(session_id));
            }
            let mut participants = Vec::with_capacity(rows.len());
            for row in &rows {
                let name: Option<String> = row.try_get(1).map_err(column_error)?;
                if name.is_some() {
                    participants.push(participant_row(row)?);
                }
            }
            Ok(participants)
        })
    }

    fn handoff<'a>(
        &'a self,
        session_id: &'a str,
        from: &'a str,
        to: NewParticipant,
        note: Option<String>,
    ) -> StoreFuture<'a, Message> {
        Box::pin(async move {
            check_id(session_id)?;
            let message = check_handoff(from, &to, note.as_deref())?;
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let (last_seq, _) = lock_counters(&tx, session_id).await?;
            // FOR SHARE: a concurrent remove of `from` waits for the handoff (or the handoff sees
            // it gone).
            let from_present = query_opt(
                &tx,
                "SELECT 1 FROM participants WHERE session_id = $1 AND name = $2 FOR SHARE",
                &[&session_id, &from],
            )
            .await?
            .is_some();
            if !from_present {
                return Err(StoreError::ParticipantNotFound { id: session_id.to_owned(), name: from.to_owned() });
            }
            execute(
                &tx,
                "INSERT INTO participants (session_id, name, kind, role, added_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (session_id, name) DO NOTHING",
                &[&session_id, &to.name, &to.kind.as_str(), &to.role, &now_millis()],
            )
            .await?;
            let message = insert_message(&tx, session_id, message, last_seq).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(message)
        })
    }

    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            query(&client, "SELECT 1 FROM sessions LIMIT 1", &[]).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let config = PgConfig::parse("postgres://postgres@127.0.0.1:5432/test?schema=t_1&pool_size=4").unwrap();
        assert_eq!(config.schema, "t_1");
        assert_eq!(config.pool_size, 4);
        assert_eq!(config.pg.get_options(), Some("-c search_path=t_1"));
        assert_eq!(config.pg.get_dbname(), Some("test"));
        let config = PgConfig::parse("postgresql://u@h/db").unwrap();
        assert_eq!((config.schema.as_str(), config.pool_size), ("keel", DEFAULT_POOL_SIZE));
        assert!(PgConfig::parse("postgres://u@h/db?schema=Bad-Name").is_err());
        assert!(PgConfig::parse("postgres://u@h/db?schema=1x").is_err());
        assert!(PgConfig::parse("postgres://u@h/db?pool_size=0").is_err());
    }
}
