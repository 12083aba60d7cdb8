//! The embedded SQLite backend (`sqlite://PATH`).
//!
//! - **One writer thread** owns the only writing connection. Callers send it commands over a
//!   channel and await a oneshot answer. It drains whatever is queued (up to [`MAX_BATCH`]),
//!   runs it in one `BEGIN IMMEDIATE` transaction (each command in its own savepoint, so one
//!   failing command does not undo the others), commits once, and only then answers each waiter:
//!   group commit. Appends to one session are thereby serialized without locks in the caller.
//! - **Reads** run on blocking threads over a small pool of reader connections; WAL lets them run
//!   while the writer writes, and they see every committed (acknowledged) write.
//! - **Durability**: WAL with `synchronous=NORMAL` (the default) writes each commit to the WAL file
//!   before answering, without `fsync`: an acknowledged write survives the keel process being
//!   killed (`kill -9`, a crash), not a power loss or kernel crash. `?synchronous=full` fsyncs
//!   every group commit and survives those too, at the cost of one fsync per group.
//! - **Participants** live in their own table, one row per name, ordered by an integer primary
//!   key; adds are upserts run by the writer thread like every write, so none is lost.
//! - **Other stores on the database** (the API keys of `keys/sqlite.rs`, the incidents of
//!   `incidents/sqlite.rs`, the jobs of `jobs/sqlite.rs`) write through the same writer thread
//!   with [`SqliteStore::write_with`] and read with the same readers.
//! - **Migrations**: embedded SQL files, applied in order; `PRAGMA user_version` records how many.
//!   A database of an older keel is upgraded in place when opened.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::StoreError;
use crate::location::Location;
use crate::model::{
    Message, MessageCompletion, NewMessage, NewParticipant, NewSession, Page, Participant, Session, SessionFilter,
    SessionPage, SessionPatch, into_page,
};
use crate::rows::{
    MESSAGE_COLUMNS, MessageRow, PARTICIPANT_COLUMNS, ParticipantRow, SESSION_COLUMNS, SessionRow, clamp_i64,
};
use crate::store::{
    Store, StoreFuture, add_tokens, apply_completion, check_handoff, check_id, check_key, check_message,
    check_participant, check_participant_name, now_millis, to_i64,
};

const BACKEND: &str = "sqlite";

/// The most commands one group commit takes.
const MAX_BATCH: usize = 256;

/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 4;

/// How long a connection waits for a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per entry; `user_version` = how many are applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/001_sessions.sql"),
    include_str!("../migrations/sqlite/002_participants.sql"),
    include_str!("../migrations/sqlite/003_api_keys.sql"),
    include_str!("../migrations/sqlite/004_incidents_jobs.sql"),
    include_str!("../migrations/sqlite/005_history.sql"),
];

/// How SQLite syncs commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synchronous {
    /// Survives a process kill, not a power loss (WAL + NORMAL).
    Normal,
    /// Survives a power loss too (fsync per commit).
    Full,
}

/// What `sqlite://…` says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SqliteConfig {
    path: PathBuf,
    synchronous: Synchronous,
}

impl SqliteConfig {
    fn parse(url: &str) -> Result<Self, StoreError> {
        let mut location = Location::parse(url);
        let synchronous = match location.take("synchronous")?.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("normal") => Synchronous::Normal,
            Some("full") => Synchronous::Full,
            Some(other) => {
                return Err(StoreError::invalid_url(format!("synchronous must be normal or full, got '{other}'")));
            }
        };
        if let Some((key, _)) = location.rest().next() {
            return Err(StoreError::invalid_url(format!("unknown sqlite parameter '{key}' (known: synchronous)")));
        }
        let rest = location.base.strip_prefix("sqlite:").ok_or_else(|| StoreError::invalid_url("not sqlite:"))?;
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() || path == ":memory:" {
            return Err(StoreError::invalid_url(
                "sqlite needs a file path (sqlite://keel.db or sqlite:///abs/path.db)",
            ));
        }
        Ok(SqliteConfig { path: PathBuf::from(path), synchronous })
    }
}

/// Opens (creating if needed) and migrates the database at `url`, and starts its writer thread.
pub(crate) async fn open(url: &str) -> Result<Arc<SqliteStore>, StoreError> {
    let config = SqliteConfig::parse(url)?;
    let store = tokio::task::spawn_blocking(move || SqliteStore::open_blocking(config))
        .await
        .map_err(|e| backend_error(format!("open task failed: {e}")))??;
    Ok(Arc::new(store))
}

fn backend_error(message: String) -> StoreError {
    StoreError::Backend { backend: BACKEND, message }
}

pub(crate) fn db_error(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(failure.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            StoreError::Unavailable {
                backend: BACKEND,
                message: format!("{error} (another process holds the database lock)"),
            }
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => {
            StoreError::Corrupt { backend: BACKEND, message: error.to_string() }
        }
        _ => backend_error(error.to_string()),
    }
}

/// The SQLite store: a writer thread behind a channel, and a pool of readers.
pub(crate) struct SqliteStore {
    writer: mpsc::Sender<Command>,
    readers: Arc<Readers>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.readers.config.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// [`Store::complete_message`], or with `partial` [`Store::save_partial`], through the writer.
    async fn finish_message(
        &self,
        session_id: &str,
        seq: u64,
        completion: MessageCompletion,
        partial: bool,
    ) -> Result<Message, StoreError> {
        check_id(session_id)?;
        if let Some(tokens) = completion.token_count {
            to_i64(tokens, "token count")?;
        }
        self.write(|reply| Command::Complete { id: session_id.to_owned(), seq, completion, partial, reply }).await
    }

    fn open_blocking(config: SqliteConfig) -> Result<Self, StoreError> {
        let path = config.path.as_path();
        prepare(path)?;
        let mut conn = Connection::open(path).map_err(|e| open_failure(path, e))?;
        configure(&conn, &config).map_err(|e| open_failure(path, e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(|e| open_failure(path, e))?;
        // A write lock needs the -wal and -shm files beside the database: fail here, naming the
        // file, rather than at the first append.
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK").map_err(|e| open_failure(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(backend_error(format!(
                "{} cannot use WAL mode (journal_mode is {mode}); use a local file system",
                config.path.display()
            )));
        }
        migrate(&mut conn)?;
        let (writer, commands) = mpsc::channel();
        std::thread::Builder::new()
            .name("keel-sqlite-writer".into())
            .spawn(move || writer_loop(&conn, &commands))
            .map_err(|e| backend_error(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore { writer, readers: Arc::new(Readers { config, idle: Mutex::new(Vec::new()) }) })
    }

    /// Sends a command to the writer and waits for its answer (after the commit).
    async fn write<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(command(reply)).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `work` on the writer thread like any write of the session store (in the next group
    /// commit, in its own savepoint: an `Err` undoes what `work` wrote) and returns its answer
    /// after the commit. `work` gets the connection and the batch's clock. For the other stores
    /// of the crate sharing this database (the key store).
    pub(crate) async fn write_with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
    {
        self.write(|reply| {
            Command::Job(Box::new(move |ready| {
                hold(reply, ready.map_err(StoreError::clone).and_then(|(conn, now)| work(conn, now)))
            }))
        })
        .await
    }

    /// Runs `read` on a blocking thread with a reader connection.
    pub(crate) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(read))
            .await
            .map_err(|e| backend_error(format!("read task failed: {e}")))?
    }
}

/// Makes `path` ready for SQLite: creates its missing directories (with a log line), and opens
/// (creating) the file once, so that a failure says what the OS said — SQLite itself only says
/// "unable to open database file".
fn prepare(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| os_open_error(path, &e))?;
        tracing::info!(directory = %dir.display(), "keel-session: created the directory of the sqlite store");
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| os_open_error(path, &e))?;
    Ok(())
}

/// The error for a database file the OS would not open or create.
fn os_open_error(path: &Path, error: &std::io::Error) -> StoreError {
    StoreError::Backend { backend: BACKEND, message: os_open_message(path, error) }
}

/// `cannot open the SQLite store FILE: REASON; WHAT TO DO`.
fn os_open_message(path: &Path, error: &std::io::Error) -> String {
    let file = path.display();
    let dir = directory(path);
    let (reason, fix) = match error.kind() {
        ErrorKind::PermissionDenied => (
            format!("permission denied ({error})"),
            format!(
                "let the user keel runs as create and write files in {dir} (SQLite keeps {file}-wal and \
                 {file}-shm beside the database), or point the store URL at a place it may write"
            ),
        ),
        ErrorKind::NotADirectory => match path.ancestors().skip(1).find(|a| a.is_file()) {
            Some(file) => (
                format!("{} is a file, not a directory", file.display()),
                format!("move {} away, or choose another path in the store URL", file.display()),
            ),
            None => (
                format!("a part of {dir} is not a directory ({error})"),
                "choose another path in the store URL".to_owned(),
            ),
        },
        ErrorKind::IsADirectory => {
            (format!("{file} is a directory"), format!("name a file in it, e.g. sqlite://{}/keel.db", path.display()))
        }
        ErrorKind::NotFound => {
            (format!("no such directory {dir}"), "create it, or correct the path in the store URL".to_owned())
        }
        ErrorKind::ReadOnlyFilesystem => (
            format!("{dir} is on a read-only file system"),
            "point the store URL at a writable disk (e.g. sqlite:///var/lib/keel/keel.db)".to_owned(),
        ),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            (format!("no space left ({error})"), format!("free space on the disk of {dir}"))
        }
        _ => (error.to_string(), "check the path in the store URL (sqlite://FILE)".to_owned()),
    };
    format!("cannot open the SQLite store {file}: {reason}; {fix}")
}

/// The error for a database SQLite would not open, lock or read; other errors as [`db_error`].
fn open_failure(path: &Path, error: rusqlite::Error) -> StoreError {
    let file = path.display();
    let dir = directory(path);
    let code = match &error {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
        _ => None,
    };
    match code {
        Some(ErrorCode::CannotOpen) => StoreError::Backend {
            backend: BACKEND,
            message: format!(
                "cannot open the SQLite store {file}: SQLite cannot open it or create {file}-wal and {file}-shm \
                 beside it ({error}); let the user keel runs as create and write files in {dir}"
            ),
        },
        Some(ErrorCode::ReadOnly) => StoreError::Backend {
            backend: BACKEND,
            message: format!(
                "cannot open the SQLite store {file}: it or {dir} is read-only ({error}); let the user keel runs \
                 as write {file} and create files in {dir}"
            ),
        },
        Some(ErrorCode::NotADatabase) => StoreError::Corrupt {
            backend: BACKEND,
            message: format!(
                "{file} is not a SQLite database ({error}); point the store URL at another file, or move this \
                 one away and keel creates a new store"
            ),
        },
        _ => db_error(error),
    }
}

/// The directory a database file is in, for messages (`.` for a bare file name).
fn directory(path: &Path) -> String {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.display().to_string(),
        _ => ".".to_owned(),
    }
}

fn configure(conn: &Connection, config: &SqliteConfig) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let synchronous = match config.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
}

/// Applies the migrations the database lacks, each in its own `BEGIN IMMEDIATE` transaction (so
/// two processes opening the same new file do not both apply one).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len();
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(db_error)?;
        let applied = usize::try_from(version)
            .map_err(|_| StoreError::Corrupt { backend: BACKEND, message: format!("user_version is {version}") })?;
        if applied > known {
            return Err(StoreError::Corrupt {
                backend: BACKEND,
                message: format!(
                    "the database is at schema version {applied}, this keel knows {known}; upgrade keel to open it"
                ),
            });
        }
        let Some(sql) = MIGRATIONS.get(applied) else {
            return Ok(());
        };
        tx.execute_batch(sql).map_err(db_error)?;
        tx.pragma_update(None, "user_version", i64::try_from(applied + 1).unwrap_or(i64::MAX)).map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        tracing::info!(version = applied + 1, "keel-session: applied sqlite migration");
    }
}

/// Reader connections, opened on demand and kept when idle.
struct Readers {
    config: SqliteConfig,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.config.path).map_err(db_error)?;
                configure(&conn, &self.config).map_err(db_error)?;
                conn.pragma_update(None, "query_only", true).map_err(db_error)?;
                conn
            }
        };
        let result = read(&conn);
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------
// The writer thread.

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write for the writer thread. `Complete` with `partial` is [`Store::save_partial`] (the
/// message stays incomplete, no version bump); `Job` is a write of another store sharing the
/// database ([`SqliteStore::write_with`]).
enum Command {
    Create { new: NewSession, ensure: bool, reply: Reply<Session> },
    Update { id: String, expected: u64, patch: SessionPatch, reply: Reply<Session> },
    Delete { id: String, reply: Reply<bool> },
    Append { id: String, message: NewMessage, reply: Reply<Message> },
    Complete { id: String, seq: u64, completion: MessageCompletion, partial: bool, reply: Reply<Message> },
    AddParticipant { id: String, participant: NewParticipant, reply: Reply<Participant> },
    RemoveParticipant { id: String, name: String, reply: Reply<bool> },
    Handoff { id: String, from: String, to: NewParticipant, message: NewMessage, reply: Reply<Message> },
    Ping { reply: Reply<()> },
    Job(Job),
}

/// A write handed to the writer by [`SqliteStore::write_with`]: called with the connection and
/// the clock to run it, or with the error that keeps it from running.
type Job = Box<dyn FnOnce(Result<(&Connection, i64), &StoreError>) -> (bool, Finish) + Send>;

/// A command's answer, held back until its transaction commits; called with the commit error,
/// if any.
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// Whether the command succeeded (its savepoint is kept) and how to answer it.
fn hold<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> (bool, Finish) {
    let ok = result.is_ok();
    let finish = Box::new(move |commit_error: Option<&StoreError>| {
        let result = match (commit_error, result) {
            (Some(error), Ok(_)) => Err(error.clone()),
            (_, result) => result,
        };
        answer(reply, result);
    });
    (ok, finish)
}

impl Command {
    fn execute(self, conn: &Connection, now: i64) -> (bool, Finish) {
        match self {
            Command::Create { new, ensure, reply } => hold(reply, exec_create(conn, new, ensure, now)),
            Command::Update { id, expected, patch, reply } => hold(reply, exec_update(conn, &id, expected, patch, now)),
            Command::Delete { id, reply } => hold(reply, exec_delete(conn, &id)),
            Command::Append { id, message, reply } => hold(reply, exec_append(conn, &id, message, now)),
            Command::Complete { id, seq, completion, partial, reply } => {
                hold(reply, exec_complete(conn, &id, seq, completion, partial, now))
            }
            Command::AddParticipant { id, participant, reply } => {
                hold(reply, exec_add_participant(conn, &id, participant, now))
            }
            Command::RemoveParticipant { id, name, reply } => hold(reply, exec_remove_participant(conn, &id, &name)),
            Command::Handoff { id, from, to, message, reply } => {
                hold(reply, exec_handoff(conn, &id, &from, to, message, now))
            }
            Command::Ping { reply } => hold(reply, Ok(())),
            Command::Job(job) => job(Ok((conn, now))),
        }
    }

    fn fail(self, error: &StoreError) {
        match self {
            Command::Create { reply, .. } | Command::Update { reply, .. } => answer(reply, Err(error.clone())),
            Command::Delete { reply, .. } | Command::RemoveParticipant { reply, .. } => {
                answer(reply, Err(error.clone()));
            }
            Command::Append { reply, .. } | Command::Complete { reply, .. } | Command::Handoff { reply, .. } => {
                answer(reply, Err(error.clone()));
            }
            Command::AddParticipant { reply, .. } => answer(reply, Err(error.clone())),
            Command::Ping { reply } => answer(reply, Err(error.clone())),
            Command::Job(job) => {
                let (_, finish) = job(Err(error));
                finish(None);
            }
        }
    }
}

fn answer<T>(reply: Reply<T>, result: Result<T, StoreError>) {
    // The caller may have stopped waiting; the outcome stands either way.
    let _ = reply.send(result);
}

fn writer_loop(conn: &Connection, commands: &mpsc::Receiver<Command>) {
    while let Ok(first) = commands.recv() {
        let mut batch = Vec::with_capacity(8);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        group_commit(conn, batch);
    }
    tracing::debug!("keel-session: sqlite writer stops (store dropped)");
}

/// Runs `batch` in one transaction and answers each command after the commit.
fn group_commit(conn: &Connection, batch: Vec<Command>) {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = db_error(error);
        tracing::error!(%error, commands = batch.len(), "keel-session: sqlite cannot begin a write transaction");
        for command in batch {
            command.fail(&error);
        }
        return;
    }
    let now = now_millis();
    let mut finishes = Vec::with_capacity(batch.len());
    let mut broken = None;
    for command in batch {
        if broken.is_some() {
            finishes.push(hold_failed(command));
            continue;
        }
        if let Err(error) = conn.execute_batch("SAVEPOINT command") {
            broken = Some(db_error(error));
            finishes.push(hold_failed(command));
            continue;
        }
        let (ok, finish) = command.execute(conn, now);
        let end = if ok { "RELEASE command" } else { "ROLLBACK TO command; RELEASE command" };
        if let Err(error) = conn.execute_batch(end) {
            broken = Some(db_error(error));
        }
        finishes.push(finish);
    }
    let outcome = match broken {
        Some(error) => Err(error),
        None => conn.execute_batch("COMMIT").map_err(db_error),
    };
    if let Err(error) = &outcome {
        tracing::error!(%error, commands = finishes.len(), "keel-session: sqlite group commit failed");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    let commit_error = outcome.err();
    for finish in finishes {
        finish(commit_error.as_ref());
    }
}

/// A command skipped because its transaction already broke; answered with the commit error.
fn hold_failed(command: Command) -> Finish {
    Box::new(move |error: Option<&StoreError>| {
        let error = error.cloned().unwrap_or_else(|| backend_error("transaction aborted".into()));
        command.fail(&error);
    })
}

fn exec_create(conn: &Connection, new: NewSession, ensure: bool, now: i64) -> Result<Session, StoreError> {
    if let Some(existing) = load_session(conn, &new.id)? {
        return if ensure { Ok(existing) } else { Err(StoreError::SessionExists { id: new.id }) };
    }
    let session = new.into_session(now);
    conn.prepare_cached(
        "INSERT INTO sessions (id, owner, model, status, created_at, updated_at, version, token_count, last_seq, metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1, 0, 0, ?6)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            session.id,
            session.owner,
            session.model,
            session.status.as_str(),
            now,
            session.metadata.to_string()
        ])
    })
    .map_err(db_error)?;
    Ok(session)
}

fn exec_update(
    conn: &Connection,
    id: &str,
    expected: u64,
    patch: SessionPatch,
    now: i64,
) -> Result<Session, StoreError> {
    let mut session = load_session(conn, id)?.ok_or_else(|| StoreError::not_found(id))?;
    if session.version != expected {
        return Err(StoreError::Conflict { current_version: session.version });
    }
    patch.apply(&mut session, now);
    let version = to_i64(session.version, "version")?;
    conn.prepare_cached(
        "UPDATE sessions SET owner = ?2, model = ?3, status = ?4, metadata = ?5, version = ?6, updated_at = ?7
         WHERE id = ?1",
    )
    .and_then(|mut update| {
        update.execute(params![
            id,
            session.owner,
            session.model,
            session.status.as_str(),
            session.metadata.to_string(),
            version,
            session.updated_at
        ])
    })
    .map_err(db_error)?;
    Ok(session)
}

fn exec_delete(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let deleted = conn
        .prepare_cached("DELETE FROM sessions WHERE id = ?1")
        .and_then(|mut delete| delete.execute([id]))
        .map_err(db_error)?;
    conn.prepare_cached("DELETE FROM messages WHERE session_id = ?1")
        .and_then(|mut delete| delete.execute([id]))
        .map_err(db_error)?;
    conn.prepare_cached("DELETE FROM participants WHERE session_id = ?1")
        .and_then(|mut delete| delete.execute([id]))
        .map_err(db_error)?;
    Ok(deleted > 0)
}

/// [`StoreError::SessionNotFound`] unless the session exists.
fn require_session(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM sessions WHERE id = ?1")
        .and_then(|mut select| select.exists([id]))
        .map_err(db_error)?;
    if exists { Ok(()) } else { Err(StoreError::not_found(id)) }
}

fn exec_add_participant(
    conn: &Connection,
    id: &str,
    participant: NewParticipant,
    now: i64,
) -> Result<Participant, StoreError> {
    require_session(conn, id)?;
    // An existing name keeps its row (position, added_at); only kind and role change.
    let added_at: i64 = conn
        .prepare_cached(
            "INSERT INTO participants (session_id, name, kind, role, added_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (session_id, name) DO UPDATE SET kind = excluded.kind, role = excluded.role
             RETURNING added_at",
        )
        .and_then(|mut upsert| {
            upsert.query_row(params![id, participant.name, participant.kind.as_str(), participant.role, now], |row| {
                row.get(0)
            })
        })
        .map_err(db_error)?;
    Ok(participant.into_participant(id, added_at))
}

fn exec_remove_participant(conn: &Connection, id: &str, name: &str) -> Result<bool, StoreError> {
    require_session(conn, id)?;
    let removed = conn
        .prepare_cached("DELETE FROM participants WHERE session_id = ?1 AND name = ?2")
        .and_then(|mut delete| delete.execute([id, name]))
        .map_err(db_error)?;
    Ok(removed > 0)
}

fn exec_handoff(
    conn: &Connection,
    id: &str,
    from: &str,
    to: NewParticipant,
    message: NewMessage,
    now: i64,
) -> Result<Message, StoreError> {
    require_session(conn, id)?;
    let from_present = conn
        .prepare_cached("SELECT 1 FROM participants WHERE session_id = ?1 AND name = ?2")
        .and_then(|mut select| select.exists([id, from]))
        .map_err(db_error)?;
    if !from_present {
        return Err(StoreError::ParticipantNotFound { id: id.to_owned(), name: from.to_owned() });
    }
    conn.prepare_cached(
        "INSERT INTO participants (session_id, name, kind, role, added_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (session_id, name) DO NOTHING",
    )
    .and_then(|mut insert| insert.execute(params![id, to.name, to.kind.as_str(), to.role, now]))
    .map_err(db_error)?;
    // The command's savepoint undoes the insert if the append fails.
    exec_append(conn, id, message, now)
}

/// `(last_seq, token_count)` of a session.
fn session_counters(conn: &Connection, id: &str) -> Result<(u64, u64), StoreError> {
    let counters: Option<(i64, i64)> = conn
        .prepare_cached("SELECT last_seq, token_count FROM sessions WHERE id = ?1")
        .and_then(|mut select| select.query_row([id], |row| Ok((row.get(0)?, row.get(1)?))).optional())
        .map_err(db_error)?;
    let (last_seq, token_count) = counters.ok_or_else(|| StoreError::not_found(id))?;
    let corrupt = || StoreError::Corrupt { backend: BACKEND, message: format!("session '{id}' has negative counters") };
    Ok((u64::try_from(last_seq).map_err(|_| corrupt())?, u64::try_from(token_count).map_err(|_| corrupt())?))
}

fn exec_append(conn: &Connection, id: &str, message: NewMessage, now: i64) -> Result<Message, StoreError> {
    let (last_seq, token_count) = session_counters(conn, id)?;
    if let Some(key) = &message.idempotency_key
        && let Some(stored) = load_message_by_key(conn, id, key)?
    {
        return Ok(stored);
    }
    add_tokens(token_count, message.token_count)?;
    let message = message.into_message(id, last_seq + 1, now);
    let seq = to_i64(message.seq, "seq")?;
    let tokens = to_i64(message.token_count, "token count")?;
    conn.prepare_cached(
        "INSERT INTO messages (session_id, seq, role, content, tool_calls, token_count, idempotency_key, complete, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            id,
            seq,
            message.role,
            message.content,
            message.tool_calls.as_ref().map(Value::to_string),
            tokens,
            message.idempotency_key,
            message.complete,
            now
        ])
    })
    .map_err(db_error)?;
    conn.prepare_cached(
        "UPDATE sessions SET last_seq = ?2, version = version + 1, token_count = token_count + ?3,
                updated_at = max(updated_at, ?4)
         WHERE id = ?1",
    )
    .and_then(|mut update| update.execute(params![id, seq, tokens, now]))
    .map_err(db_error)?;
    Ok(message)
}

fn exec_complete(
    conn: &Connection,
    id: &str,
    seq: u64,
    completion: MessageCompletion,
    partial: bool,
    now: i64,
) -> Result<Message, StoreError> {
    let (_, token_count) = session_counters(conn, id)?;
    let mut message =
        load_message(conn, id, seq)?.ok_or_else(|| StoreError::MessageNotFound { id: id.to_owned(), seq })?;
    let Some(total) = apply_completion(&mut message, &completion, partial, token_count)? else {
        return Ok(message);
    };
    let tokens = to_i64(message.token_count, "token count")?;
    conn.prepare_cached(
        "UPDATE messages SET content = ?3, token_count = ?4, complete = ?5, tool_calls = ?6 \
         WHERE session_id = ?1 AND seq = ?2",
    )
    .and_then(|mut update| {
        let calls = message.tool_calls.as_ref().map(Value::to_string);
        update.execute(params![id, clamp_i64(seq), message.content, tokens, message.complete, calls])
    })
    .map_err(db_error)?;
    let total = to_i64(total, "token count")?;
    conn.prepare_cached(
        "UPDATE sessions SET token_count = ?2, version = version + ?4, updated_at = max(updated_at, ?3) WHERE id = ?1",
    )
    .and_then(|mut update| update.execute(params![id, total, now, i64::from(!partial)]))
    .map_err(db_error)?;
    Ok(message)
}

// ---------------------------------------------------------------------------------------------
// Reads, shared by the writer (inside its transaction) and the readers.

fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e)))
    })
    .transpose()
}

fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: row.get(0)?,
        owner: row.get(1)?,
        model: row.get(2)?,
        status: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        version: row.get(6)?,
        token_count: row.get(7)?,
        last_seq: row.get(8)?,
        metadata: json_column(row, 9)?.unwrap_or(Value::Null),
    })
}

fn message_row(row: &Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        session_id: row.get(0)?,
        seq: row.get(1)?,
        role: row.get(2)?,
        content: row.get(3)?,
        tool_calls: json_column(row, 4)?,
        token_count: row.get(5)?,
        idempotency_key: row.get(6)?,
        complete: row.get(7)?,
        created_at: row.get(8)?,
    })
}

fn load_session(conn: &Connection, id: &str) -> Result<Option<Session>, StoreError> {
    conn.prepare_cached(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"))
        .and_then(|mut select| select.query_row([id], session_row).optional())
        .map_err(db_error)?
        .map(|row| row.into_session(BACKEND))
        .transpose()
}

fn load_message(conn: &Connection, id: &str, seq: u64) -> Result<Option<Message>, StoreError> {
    conn.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ?1 AND seq = ?2"))
        .and_then(|mut select| select.query_row(params![id, clamp_i64(seq)], message_row).optional())
        .map_err(db_error)?
        .map(|row| row.into_message(BACKEND))
        .transpose()
}

fn load_message_by_key(conn: &Connection, id: &str, key: &str) -> Result<Option<Message>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ?1 AND idempotency_key = ?2"
    ))
    .and_then(|mut select| select.query_row([id, key], message_row).optional())
    .map_err(db_error)?
    .map(|row| row.into_message(BACKEND))
    .transpose()
}

fn load_messages(conn: &Connection, id: &str, after_seq: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
    // One read transaction: the existence check and the messages come from one snapshot.
    let tx = conn.unchecked_transaction().map_err(db_error)?;
    let exists = tx
        .prepare_cached("SELECT 1 FROM sessions WHERE id = ?1")
        .and_then(|mut select| select.exists([id]))
        .map_err(db_error)?;
    if !exists {
        return Err(StoreError::not_found(id));
    }
    let rows = tx
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        ))
        .and_then(|mut select| {
            select
                .query_map(params![id, clamp_i64(after_seq), clamp_i64(limit as u64)], message_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    rows.into_iter().map(|row| row.into_message(BACKEND)).collect()
}

fn participant_row(row: &Row<'_>) -> rusqlite::Result<ParticipantRow> {
    Ok(ParticipantRow {
        session_id: row.get(0)?,
        name: row.get(1)?,
        kind: row.get(2)?,
        role: row.get(3)?,
        added_at: row.get(4)?,
    })
}

fn load_participants(conn: &Connection, id: &str) -> Result<Vec<Participant>, StoreError> {
    // One read transaction: the existence check and the list come from one snapshot.
    let tx = conn.unchecked_transaction().map_err(db_error)?;
    require_session(&tx, id)?;
    let rows = tx
        .prepare_cached(&format!(
            "SELECT {PARTICIPANT_COLUMNS} FROM participants WHERE session_id = ?1 ORDER BY position"
        ))
        .and_then(|mut select| select.query_map([id], participant_row)?.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_error)?;
    rows.into_iter().map(|row| row.into_participant(BACKEND)).collect()
}

fn load_sessions(conn: &Connection, filter: &SessionFilter, page: &Page) -> Result<SessionPage, StoreError> {
    let (limit, cursor) = page.parse()?;
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions
             WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR model = ?3)
               AND (?4 IS NULL OR updated_at >= ?4)
               AND (?5 IS NULL OR updated_at < ?5 OR (updated_at = ?5 AND id < ?6))
             ORDER BY updated_at DESC, id DESC
             LIMIT ?7"
        ))
        .and_then(|mut select| {
            select
                .query_map(
                    params![
                        filter.owner,
                        filter.status.map(|status| status.as_str()),
                        filter.model,
                        filter.updated_since,
                        cursor.as_ref().map(|cursor| cursor.updated_at),
                        cursor.as_ref().map(|cursor| cursor.id.as_str()),
                        clamp_i64(limit as u64 + 1)
                    ],
                    session_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    let sessions = rows.into_iter().map(|row| row.into_session(BACKEND)).collect::<Result<Vec<_>, _>>()?;
    Ok(into_page(sessions, limit))
}

// ---------------------------------------------------------------------------------------------

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn create_session(&self, new: NewSession) -> StoreFuture<'_, Session> {
        Box::pin(async move {
            check_id(&new.id)?;
            self.write(|reply| Command::Create { new, ensure: false, reply }).await
        })
    }

    fn ensure_session(&self, new: NewSession) -> StoreFuture<'_, Session> {
        Box::pin(async move {
            check_id(&new.id)?;
            // Most calls find the session: answer those from a reader, without queueing a write.
            let id = new.id.clone();
            if let Some(session) = self.read(move |conn| load_session(conn, &id)).await? {
                return Ok(session);
            }
            self.write(|reply| Command::Create { new, ensure: true, reply }).await
        })
    }

    fn get_session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move {
            check_id(id)?;
            let id = id.to_owned();
            self.read(move |conn| load_session(conn, &id)).await
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
            self.write(|reply| Command::Update { id: id.to_owned(), expected: expected_version, patch, reply }).await
        })
    }

    fn delete_session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_id(id)?;
            self.write(|reply| Command::Delete { id: id.to_owned(), reply }).await
        })
    }

    fn list_sessions(&self, filter: SessionFilter, page: Page) -> StoreFuture<'_, SessionPage> {
        Box::pin(async move {
            page.parse()?;
            self.read(move |conn| load_sessions(conn, &filter, &page)).await
        })
    }

    fn append<'a>(&'a self, session_id: &'a str, message: NewMessage) -> StoreFuture<'a, Message> {
        Box::pin(async move {
            check_id(session_id)?;
            check_message(&message)?;
            self.write(|reply| Command::Append { id: session_id.to_owned(), message, reply }).await
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
            let id = session_id.to_owned();
            self.read(move |conn| load_messages(conn, &id, after_seq, limit)).await
        })
    }

    fn message_by_key<'a>(&'a self, session_id: &'a str, key: &'a str) -> StoreFuture<'a, Option<Message>> {
        Box::pin(async move {
            check_id(session_id)?;
            check_key(key)?;
            let (id, key) = (session_id.to_owned(), key.to_owned());
            self.read(move |conn| load_message_by_key(conn, &id, &key)).await
        })
    }

    fn add_participant<'a>(&'a self, session_id: &'a str, participant: NewParticipant) -> StoreFuture<'a, Participant> {
        Box::pin(async move {
            check_id(session_id)?;
            check_participant(&participant)?;
            self.write(|reply| Command::AddParticipant { id: session_id.to_owned(), participant, reply }).await
        })
    }

    fn remove_participant<'a>(&'a self, session_id: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_id(session_id)?;
            check_participant_name(name)?;
            self.write(|reply| Command::RemoveParticipant { id: session_id.to_owned(), name: name.to_owned(), reply })
                .await
        })
    }

    fn participants<'a>(&'a self, session_id: &'a str) -> StoreFuture<'a, Vec<Participant>> {
        Box::pin(async move {
            check_id(session_id)?;
            let id = session_id.to_owned();
            self.read(move |conn| load_participants(conn, &id)).await
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
            self.write(|reply| Command::Handoff {
                id: session_id.to_owned(),
                from: from.to_owned(),
                to,
                message,
                reply,
            })
            .await
        })
    }

    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.read(|conn| conn.query_row("SELECT count(*) FROM sessions", [], |_| Ok(())).map_err(db_error)).await?;
            self.write(|reply| Command::Ping { reply }).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let config = SqliteConfig::parse("sqlite://keel.db").unwrap();
        assert_eq!(config, SqliteConfig { path: "keel.db".into(), synchronous: Synchronous::Normal });
        let config = SqliteConfig::parse("sqlite:///var/lib/keel/keel.db?synchronous=FULL").unwrap();
        assert_eq!(config, SqliteConfig { path: "/var/lib/keel/keel.db".into(), synchronous: Synchronous::Full });
        assert_eq!(SqliteConfig::parse("sqlite:rel/k.db").unwrap().path, PathBuf::from("rel/k.db"));
        assert!(SqliteConfig::parse("sqlite://").is_err());
        assert!(SqliteConfig::parse("sqlite://:memory:").is_err());
        assert!(SqliteConfig::parse("sqlite://k.db?synchronous=off").is_err());
        assert!(SqliteConfig::parse("sqlite://k.db?cache=shared").is_err());
    }

    fn open_path(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_blocking(SqliteConfig { path: path.to_owned(), synchronous: Synchronous::Normal })
    }

    #[test]
    fn creates_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("keel.db");
        open_path(&path).unwrap();
        assert!(path.is_file());
    }

    #[test]
    fn a_directory_on_the_way_that_is_a_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "x").unwrap();
        let path = file.join("keel.db");
        let message = open_path(&path).unwrap_err().to_string();
        assert!(message.contains(&format!("cannot open the SQLite store {}", path.display())), "{message}");
        assert!(message.contains(&format!("{} is a file, not a directory", file.display())), "{message}");
        // Deeper: the missing directories cannot be created under a file either.
        let message = open_path(&file.join("sub").join("keel.db")).unwrap_err().to_string();
        assert!(message.contains(&format!("{} is a file, not a directory", file.display())), "{message}");
    }

    #[test]
    fn a_directory_given_as_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let message = open_path(dir.path()).unwrap_err().to_string();
        assert!(message.contains(&format!("{} is a directory", dir.path().display())), "{message}");
        assert!(message.contains("name a file in it"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:11435\"\n".repeat(20)).unwrap();
        let error = open_path(&path).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains(&format!("{} is not a SQLite database", path.display())), "{message}");
    }

    #[test]
    fn os_reasons_say_what_to_do() {
        let path = Path::new("/var/lib/keel/keel.db");
        let message = |kind: ErrorKind| os_open_message(path, &std::io::Error::from(kind));
        let denied = message(ErrorKind::PermissionDenied);
        assert!(
            denied.starts_with("cannot open the SQLite store /var/lib/keel/keel.db: permission denied"),
            "{denied}"
        );
        assert!(denied.contains("create and write files in /var/lib/keel"), "{denied}");
        let missing = message(ErrorKind::NotFound);
        assert!(missing.contains("no such directory /var/lib/keel; create it"), "{missing}");
        assert!(message(ErrorKind::ReadOnlyFilesystem).contains("/var/lib/keel is on a read-only file system"));
        assert!(message(ErrorKind::StorageFull).contains("no space left"));
        let bare = os_open_message(Path::new("keel.db"), &std::io::Error::from(ErrorKind::PermissionDenied));
        assert!(bare.contains("create and write files in ."), "{bare}");
        let locked = open_failure(
            path,
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY), None),
        );
        assert!(locked.to_string().contains("read-only"), "{locked}");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let error = SqliteStore::open_blocking(SqliteConfig { path, synchronous: Synchronous::Normal }).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }
}
