//! Rows as the SQL backends read them (signed integers, status as text), checked into the model.

use serde_json::Value;

use crate::StoreError;
use crate::model::{Message, Participant, Session};

/// The columns of `sessions`, in the order every query selects them.
pub(crate) const SESSION_COLUMNS: &str =
    "id, owner, model, status, created_at, updated_at, version, token_count, last_seq, metadata";

/// The columns of `messages`, in the order every query selects them.
pub(crate) const MESSAGE_COLUMNS: &str =
    "session_id, seq, role, content, tool_calls, token_count, idempotency_key, complete, created_at";

/// The columns of `participants`, in the order every query selects them.
pub(crate) const PARTICIPANT_COLUMNS: &str = "session_id, name, kind, role, added_at";

/// A `sessions` row.
#[derive(Debug)]
pub(crate) struct SessionRow {
    pub(crate) id: String,
    pub(crate) owner: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) status: String,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) version: i64,
    pub(crate) token_count: i64,
    pub(crate) last_seq: i64,
    pub(crate) metadata: Value,
}

impl SessionRow {
    pub(crate) fn into_session(self, backend: &'static str) -> Result<Session, StoreError> {
        let corrupt = |message: String| StoreError::Corrupt { backend, message };
        let status = self
            .status
            .parse()
            .map_err(|_| corrupt(format!("session '{}' has unknown status '{}'", self.id, self.status)))?;
        let count = |value: i64, what: &str| {
            u64::try_from(value).map_err(|_| corrupt(format!("session '{}' has negative {what} {value}", self.id)))
        };
        Ok(Session {
            version: count(self.version, "version")?,
            token_count: count(self.token_count, "token count")?,
            message_count: count(self.last_seq, "last seq")?,
            id: self.id,
            owner: self.owner,
            model: self.model,
            status,
            created_at: self.created_at,
            updated_at: self.updated_at,
            metadata: self.metadata,
        })
    }
}

/// A `messages` row.
#[derive(Debug)]
pub(crate) struct MessageRow {
    pub(crate) session_id: String,
    pub(crate) seq: i64,
    pub(crate) role: String,
    pub(crate) content: String,
    pub(crate) tool_calls: Option<Value>,
    pub(crate) token_count: i64,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) complete: bool,
    pub(crate) created_at: i64,
}

impl MessageRow {
    pub(crate) fn into_message(self, backend: &'static str) -> Result<Message, StoreError> {
        let corrupt = |what: &str, value: i64| StoreError::Corrupt {
            backend,
            message: format!("a message of session '{}' has negative {what} {value}", self.session_id),
        };
        Ok(Message {
            seq: u64::try_from(self.seq).map_err(|_| corrupt("seq", self.seq))?,
            token_count: u64::try_from(self.token_count).map_err(|_| corrupt("token count", self.token_count))?,
            session_id: self.session_id,
            role: self.role,
            content: self.content,
            tool_calls: self.tool_calls,
            idempotency_key: self.idempotency_key,
            complete: self.complete,
            created_at: self.created_at,
        })
    }
}

/// A `participants` row.
#[derive(Debug)]
pub(crate) struct ParticipantRow {
    pub(crate) session_id: String,
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) role: String,
    pub(crate) added_at: i64,
}

impl ParticipantRow {
    pub(crate) fn into_participant(self, backend: &'static str) -> Result<Participant, StoreError> {
        let kind = self.kind.parse().map_err(|_| StoreError::Corrupt {
            backend,
            message: format!(
                "participant '{}' of session '{}' has unknown kind '{}'",
                self.name, self.session_id, self.kind
            ),
        })?;
        Ok(Participant { session_id: self.session_id, name: self.name, kind, role: self.role, added_at: self.added_at })
    }
}

/// A `u64` argument clamped into the signed range of the SQL backends (for bounds such as
/// `after_seq` and `limit`, where clamping does not change the answer).
pub(crate) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
