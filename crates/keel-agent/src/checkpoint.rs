//! Run checkpoints and where they are kept: a [`keel_session::Store`] session per run.

use std::sync::Arc;

use keel_session::{Message, NewMessage, NewSession, SessionPatch, SessionStatus, Store, StoreError, now_millis};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::step::{Phase, StepError};

/// The checkpoint format written by this version ([`Checkpoint::version`]).
pub const CHECKPOINT_VERSION: u32 = 1;

/// The longest run id, in bytes (the run's session id and ledger keys must fit the store's
/// 255-byte limit).
pub const MAX_RUN_ID_LEN: usize = 200;

/// How often [`CheckpointStore::save`] re-reads the session when its version moved underneath.
const MAX_CONFLICT_RETRIES: usize = 16;

/// Where an agent run stands: everything needed to continue it after a failure or a restart.
///
/// Serialized as JSON with exactly these fields:
/// `{"version", "run_id", "history", "last_completed_iteration", "original_input",
/// "checkpointed_at", "failure_point": {"iteration", "phase", "kind", "message"} | null}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The format version ([`CHECKPOINT_VERSION`]).
    pub version: u32,
    /// The run's id (its session in the store is `run:{run_id}`).
    pub run_id: String,
    /// The chat messages after the last completed iteration (before the first: the messages
    /// built from the input), in the dialect the caller's model speaks.
    pub history: Vec<Value>,
    /// The last iteration that completed (0-based); `None` before the first completes.
    pub last_completed_iteration: Option<u32>,
    /// The input the run was started with.
    pub original_input: Value,
    /// When this checkpoint was taken (unix milliseconds, UTC).
    pub checkpointed_at: i64,
    /// Where the run failed, if it did; `None` while it runs and once it finished.
    pub failure_point: Option<FailurePoint>,
}

impl Checkpoint {
    /// The checkpoint of a run that has not completed an iteration yet, taken now.
    #[must_use]
    pub fn new(run_id: impl Into<String>, original_input: Value, history: Vec<Value>) -> Self {
        Self {
            version: CHECKPOINT_VERSION,
            run_id: run_id.into(),
            history,
            last_completed_iteration: None,
            original_input,
            checkpointed_at: now_millis(),
            failure_point: None,
        }
    }

    /// The iteration a resumed run starts with: the one after the last completed, or 0.
    #[must_use]
    pub fn next_iteration(&self) -> u32 {
        self.last_completed_iteration.map_or(0, |last| last.saturating_add(1))
    }
}

/// Where a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailurePoint {
    /// The iteration that failed (0-based; the one after
    /// [`Checkpoint::last_completed_iteration`]).
    pub iteration: u32,
    /// The part of it that failed, from the error's type ([`StepError::phase`]).
    pub phase: Phase,
    /// A short machine-readable kind: the model call's failure class (`refused`,
    /// `model_not_found`, `busy`, …), `circuit_open`, `tool_error`, `iteration_error`, or `store`.
    pub kind: String,
    /// The error's message, for people.
    pub message: String,
}

impl FailurePoint {
    /// The failure point of `error` in `iteration`.
    #[must_use]
    pub fn from_error(iteration: u32, error: &StepError) -> Self {
        Self { iteration, phase: error.phase(), kind: error.kind().to_owned(), message: error.to_string() }
    }
}

/// Keeps run checkpoints and tool-call ledgers in a [`Store`].
///
/// A run is the session `run:{run_id}`: its checkpoint is the `"checkpoint"` field of the
/// session's metadata (written with the session's optimistic version), its ledger is the
/// session's messages — one `assistant` message per model answer and one `tool` message per
/// completed tool call, each appended with its idempotency key. The session's status becomes
/// `ended` when the run finishes.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn Store>,
}

impl CheckpointStore {
    /// The metadata field holding the checkpoint.
    pub const METADATA_KEY: &'static str = "checkpoint";

    /// Checkpoints kept in `store` (any backend of [`keel_session::open`]).
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The underlying store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The session id of a run: `run:{run_id}`.
    #[must_use]
    pub fn session_id(run_id: &str) -> String {
        format!("run:{run_id}")
    }

    /// Writes `checkpoint` as its run's current one (creating the run's session if needed).
    /// The last write wins: drive each run from one place at a time.
    ///
    /// # Errors
    /// The store's error; [`StoreError::Conflict`] if the session kept changing underneath.
    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.write(checkpoint, None).await
    }

    /// The current checkpoint of run `run_id`; `None` if the store knows no such run.
    ///
    /// # Errors
    /// The store's error; [`StoreError::Corrupt`] for a checkpoint that cannot be read or was
    /// written by a newer format version.
    pub async fn load(&self, run_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        let Some(session) = self.store.get_session(&Self::session_id(run_id)).await? else {
            return Ok(None);
        };
        let Some(value) = session.metadata.get(Self::METADATA_KEY) else {
            return Ok(None);
        };
        let checkpoint: Checkpoint = serde_json::from_value(value.clone())
            .map_err(|err| self.corrupt(format!("checkpoint of run '{run_id}': {err}")))?;
        if checkpoint.version > CHECKPOINT_VERSION {
            return Err(self.corrupt(format!(
                "checkpoint of run '{run_id}' has format version {}; this keel-agent reads up to {CHECKPOINT_VERSION}",
                checkpoint.version
            )));
        }
        Ok(Some(checkpoint))
    }

    /// Whether run `run_id` finished (its session is `ended`).
    ///
    /// # Errors
    /// The store's error.
    pub async fn is_finished(&self, run_id: &str) -> Result<bool, StoreError> {
        Ok(self.status(run_id).await? == Some(SessionStatus::Ended))
    }

    /// The status of the run's session; `None` if the store knows no such run.
    pub(crate) async fn status(&self, run_id: &str) -> Result<Option<SessionStatus>, StoreError> {
        let session = self.store.get_session(&Self::session_id(run_id)).await?;
        Ok(session.map(|session| session.status))
    }

    /// Creates the run's session with its first checkpoint; [`StoreError::SessionExists`] if the
    /// run id is taken.
    pub(crate) async fn create(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let metadata = Value::Object(Map::from_iter([(Self::METADATA_KEY.to_owned(), self.encode(checkpoint)?)]));
        self.store
            .create_session(NewSession::new(Self::session_id(&checkpoint.run_id)).with_metadata(metadata))
            .await?;
        Ok(())
    }

    /// Writes the final checkpoint and marks the run finished.
    pub(crate) async fn finish(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.write(checkpoint, Some(SessionStatus::Ended)).await
    }

    /// The ledger entry recorded under `key` in the run, if any.
    pub(crate) async fn recorded(&self, run_id: &str, key: &str) -> Result<Option<Message>, StoreError> {
        self.store.message_by_key(&Self::session_id(run_id), key).await
    }

    /// Records a ledger entry (idempotent by its key: the first recorded entry is returned).
    pub(crate) async fn record(&self, run_id: &str, entry: NewMessage) -> Result<Message, StoreError> {
        self.store.append(&Self::session_id(run_id), entry).await
    }

    /// A [`StoreError::Corrupt`] of this store's backend.
    pub(crate) fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt { backend: self.store.backend(), message }
    }

    fn encode(&self, checkpoint: &Checkpoint) -> Result<Value, StoreError> {
        serde_json::to_value(checkpoint)
            .map_err(|err| StoreError::InvalidInput(format!("checkpoint cannot be serialized: {err}")))
    }

    /// Read-modify-write of the session's metadata under its optimistic version, retried when an
    /// append (or another writer) moved the version.
    async fn write(&self, checkpoint: &Checkpoint, status: Option<SessionStatus>) -> Result<(), StoreError> {
        let id = Self::session_id(&checkpoint.run_id);
        let value = self.encode(checkpoint)?;
        let mut last = StoreError::Conflict { current_version: 0 };
        for _ in 0..MAX_CONFLICT_RETRIES {
            let session = self.store.ensure_session(NewSession::new(&id)).await?;
            let mut metadata = match session.metadata {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            metadata.insert(Self::METADATA_KEY.to_owned(), value.clone());
            let patch = SessionPatch { metadata: Some(Value::Object(metadata)), status, ..SessionPatch::default() };
            match self.store.update_session(&id, session.version, patch).await {
                Ok(_) => return Ok(()),
                Err(err @ StoreError::Conflict { .. }) => last = err,
                Err(err) => return Err(err),
            }
        }
        Err(last)
    }
}

/// Checks a run id: 1 to [`MAX_RUN_ID_LEN`] bytes, no control characters.
pub(crate) fn check_run_id(run_id: &str) -> Result<(), StoreError> {
    if run_id.is_empty() || run_id.len() > MAX_RUN_ID_LEN {
        return Err(StoreError::InvalidInput(format!(
            "run id must be 1 to {MAX_RUN_ID_LEN} bytes, got {}",
            run_id.len()
        )));
    }
    if run_id.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput("run id must not contain control characters".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_checked() {
        assert!(check_run_id("order-42").is_ok());
        assert!(check_run_id("").is_err());
        assert!(check_run_id(&"x".repeat(MAX_RUN_ID_LEN + 1)).is_err());
        assert!(check_run_id("a\tb").is_err());
    }

    #[test]
    fn the_next_iteration_follows_the_last_completed() {
        let mut checkpoint = Checkpoint::new("r", Value::Null, vec![]);
        assert_eq!(checkpoint.next_iteration(), 0);
        checkpoint.last_completed_iteration = Some(3);
        assert_eq!(checkpoint.next_iteration(), 4);
    }
}
