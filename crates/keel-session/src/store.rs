//! The [`Store`] trait every backend implements, and the checks they share.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;

use crate::StoreError;
use crate::model::{
    Message, MessageCompletion, NewMessage, NewParticipant, NewSession, Page, Participant, Session, SessionFilter,
    SessionPage, SessionPatch,
};

/// The future every [`Store`] method returns (boxed, so a store works as `Arc<dyn Store>`).
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Durable sessions and their messages.
///
/// Every method is atomic: it happens whole or not at all, and when its future resolves `Ok` the
/// change is durable to the guarantee of the backend (see the crate docs). Methods may be called
/// concurrently from any number of tasks; appends to one session are serialized by the store, so
/// `seq`s are 1, 2, 3… without gaps or duplicates, and a session's `version`, `token_count` and
/// `message_count` always match its messages.
///
/// Participants (the agents and people attached to a session) are changed one at a time in one
/// atomic step each, never by reading the list and writing it back: any number of concurrent
/// adds and removes all take effect. Adding or removing a participant does not change the
/// session's `version` or `updated_at`; a [`Store::handoff`] does, since it appends a message.
pub trait Store: Send + Sync + fmt::Debug {
    /// `sqlite`, `postgres` or `redis`.
    fn backend(&self) -> &'static str;

    /// Creates a session; [`StoreError::SessionExists`] if the id is taken.
    fn create_session(&self, new: NewSession) -> StoreFuture<'_, Session>;

    /// Returns the session with `new.id`, creating it from `new` if there is none (for ids a
    /// client names first, such as `X-Keel-Session`). An existing session is returned unchanged.
    fn ensure_session(&self, new: NewSession) -> StoreFuture<'_, Session>;

    /// The session with this id, if any.
    fn get_session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Session>>;

    /// Applies `patch` if the session is still at `expected_version`; returns the updated session
    /// (version + 1), or [`StoreError::Conflict`] with the current version.
    fn update_session<'a>(
        &'a self,
        id: &'a str,
        expected_version: u64,
        patch: SessionPatch,
    ) -> StoreFuture<'a, Session>;

    /// Deletes the session and all its messages; `false` if there was no such session.
    fn delete_session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// Sessions matching `filter`, most recently updated first, one page at a time.
    fn list_sessions(&self, filter: SessionFilter, page: Page) -> StoreFuture<'_, SessionPage>;

    /// Appends a message to an existing session ([`StoreError::SessionNotFound`] otherwise) at
    /// the next `seq`, bumping the session's `version`, `updated_at`, `token_count` and
    /// `message_count`. If the message has an idempotency key already used in this session, the
    /// stored message is returned and nothing changes.
    fn append<'a>(&'a self, session_id: &'a str, message: NewMessage) -> StoreFuture<'a, Message>;

    /// Marks a partial message complete, optionally with its final content and token count (the
    /// session's `token_count` moves by the difference, its version by one). A message that is
    /// already complete is returned unchanged.
    fn complete_message<'a>(
        &'a self,
        session_id: &'a str,
        seq: u64,
        completion: MessageCompletion,
    ) -> StoreFuture<'a, Message>;

    /// Saves the text received so far of a message that is not complete yet (a streamed answer
    /// in progress), so that a crash leaves the partial answer, still marked incomplete. The
    /// message keeps `complete: false`; the session's `token_count` moves by the difference, like
    /// [`Store::complete_message`], but its `version` and `message_count` do not (`updated_at`
    /// may move).
    ///
    /// [`StoreError::MessageNotFound`] for an unknown `seq`, [`StoreError::SessionNotFound`] if
    /// the session does not exist, [`StoreError::InvalidInput`] if the message is already
    /// complete (nothing changes).
    fn save_partial<'a>(
        &'a self,
        session_id: &'a str,
        seq: u64,
        completion: MessageCompletion,
    ) -> StoreFuture<'a, Message>;

    /// Up to `limit` messages with `seq > after_seq`, in `seq` order
    /// ([`StoreError::SessionNotFound`] if the session does not exist).
    fn messages<'a>(&'a self, session_id: &'a str, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<Message>>;

    /// The message appended with this idempotency key in this session, if any.
    fn message_by_key<'a>(&'a self, session_id: &'a str, key: &'a str) -> StoreFuture<'a, Option<Message>>;

    /// Attaches a participant to an existing session ([`StoreError::SessionNotFound`] otherwise)
    /// and returns it. Idempotent by name: if the session already has a participant of this
    /// name, its kind and role are set to `participant`'s and it keeps its place and `added_at`;
    /// there is never more than one participant of a name.
    fn add_participant<'a>(&'a self, session_id: &'a str, participant: NewParticipant) -> StoreFuture<'a, Participant>;

    /// Detaches the participant of this name; `false` if the session has none
    /// ([`StoreError::SessionNotFound`] if there is no such session).
    fn remove_participant<'a>(&'a self, session_id: &'a str, name: &'a str) -> StoreFuture<'a, bool>;

    /// The session's participants in the order they were first added
    /// ([`StoreError::SessionNotFound`] if the session does not exist).
    fn participants<'a>(&'a self, session_id: &'a str) -> StoreFuture<'a, Vec<Participant>>;

    /// Hands the session over from the participant `from` to `to`, in one atomic step: `to`
    /// becomes a participant if it is not one already (an existing participant of that name is
    /// kept as it is), and a message with role [`HANDOFF_ROLE`](crate::HANDOFF_ROLE) (`handoff`)
    /// and content `from <from> to <to>` (`: <note>` appended when there is a note) is appended
    /// like [`Store::append`] does — next `seq`, `version` + 1, `updated_at`, `message_count`;
    /// no tokens — and returned. `from` stays a participant (remove it if it leaves).
    ///
    /// [`StoreError::ParticipantNotFound`] if `from` is not a participant (nothing changes),
    /// [`StoreError::SessionNotFound`] if the session does not exist,
    /// [`StoreError::InvalidInput`] if `from` and `to` are the same name.
    fn handoff<'a>(
        &'a self,
        session_id: &'a str,
        from: &'a str,
        to: NewParticipant,
        note: Option<String>,
    ) -> StoreFuture<'a, Message>;

    /// `Ok` when the backend answers reads and writes.
    fn health(&self) -> StoreFuture<'_, ()>;
}

/// The longest session id or idempotency key, in bytes.
pub const MAX_ID_LEN: usize = 255;

/// Checks a session id: 1 to [`MAX_ID_LEN`] bytes, no control characters.
pub(crate) fn check_id(id: &str) -> Result<(), StoreError> {
    check_name("session id", id)
}

/// Checks an idempotency key like an id.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    check_name("idempotency key", key)
}

/// Checks a name of any kind (`what` names it in the error): 1 to [`MAX_ID_LEN`] bytes, no
/// control characters.
pub(crate) fn check_name(what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(StoreError::InvalidInput(format!("{what} must be 1 to {MAX_ID_LEN} bytes, got {}", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput(format!("{what} must not contain control characters")));
    }
    Ok(())
}

/// Checks a participant's name like an id.
pub(crate) fn check_participant_name(name: &str) -> Result<(), StoreError> {
    check_name("participant name", name)
}

/// Checks a participant to add: its name and role like ids.
pub(crate) fn check_participant(participant: &NewParticipant) -> Result<(), StoreError> {
    check_participant_name(&participant.name)?;
    check_name("participant role", &participant.role)
}

/// Checks a handoff's arguments and returns the message that records it.
pub(crate) fn check_handoff(from: &str, to: &NewParticipant, note: Option<&str>) -> Result<NewMessage, StoreError> {
    check_participant_name(from)?;
    check_participant(to)?;
    if from == to.name {
        return Err(StoreError::InvalidInput(format!("cannot hand off from '{from}' to itself")));
    }
    Ok(crate::model::handoff_message(from, &to.name, note))
}

/// Checks what an append stores.
pub(crate) fn check_message(message: &NewMessage) -> Result<(), StoreError> {
    if let Some(key) = &message.idempotency_key {
        check_key(key)?;
    }
    to_i64(message.token_count, "token count")?;
    Ok(())
}

/// A count as the signed 64-bit integer the backends store.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidInput(format!("{what} {value} is out of range")))
}

/// The error of [`Store::save_partial`] on a message that is already complete.
pub(crate) fn already_complete(id: &str, seq: u64) -> StoreError {
    StoreError::InvalidInput(format!("message {seq} of session '{id}' is already complete"))
}

/// Applies a completion — or, with `partial`, a save of the text so far — to a loaded message.
/// `Ok(None)` when the message is already complete and this is a completion (nothing to write:
/// completing is idempotent); otherwise the session's token total after the change. A partial save
/// of a complete message is refused.
pub(crate) fn apply_completion(
    message: &mut Message,
    completion: &MessageCompletion,
    partial: bool,
    session_tokens: u64,
) -> Result<Option<u64>, StoreError> {
    if message.complete {
        return if partial { Err(already_complete(&message.session_id, message.seq)) } else { Ok(None) };
    }
    let old_tokens = message.token_count;
    if let Some(content) = &completion.content {
        message.content.clone_from(content);
    }
    if let Some(tokens) = completion.token_count {
        message.token_count = tokens;
    }
    if let Some(calls) = &completion.tool_calls {
        message.tool_calls = Some(calls.clone());
    }
    message.complete = !partial;
    add_tokens(session_tokens.saturating_sub(old_tokens), message.token_count).map(Some)
}

/// Adds a token delta to a session total, refusing overflow.
/// [`Store::ensure_session`] for backends that read and insert in separate steps: the stored
/// session, or the new one inserted. `insert` hands `new` back when another writer inserted the
/// session first; it is then read again. Retried a few times only if the session is deleted
/// between the insert and the read.
pub(crate) async fn get_or_insert<Get, Got, Insert, Inserted>(
    backend: &'static str,
    mut new: NewSession,
    get: Get,
    insert: Insert,
) -> Result<Session, StoreError>
where
    Get: Fn(String) -> Got,
    Got: Future<Output = Result<Option<Session>, StoreError>>,
    Insert: Fn(NewSession) -> Inserted,
    Inserted: Future<Output = Result<Result<Session, NewSession>, StoreError>>,
{
    for _ in 0..3 {
        if let Some(session) = get(new.id.clone()).await? {
            return Ok(session);
        }
        new = match insert(new).await? {
            Ok(session) => return Ok(session),
            Err(new) => new,
        };
    }
    Err(StoreError::Backend {
        backend,
        message: format!("session '{}' is being created and deleted concurrently", new.id),
    })
}

pub(crate) fn add_tokens(total: u64, add: u64) -> Result<u64, StoreError> {
    total
        .checked_add(add)
        .filter(|sum| i64::try_from(*sum).is_ok())
        .ok_or_else(|| StoreError::InvalidInput("session token count would overflow".into()))
}

/// Now, in unix milliseconds (UTC): the clock of every timestamp the store keeps.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("abc-123:x").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id(&"x".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(check_id("a\nb").is_err());
    }

    #[test]
    fn handoffs_are_checked() {
        let to = NewParticipant::agent("billing");
        assert_eq!(check_handoff("triage", &to, None).unwrap().content, "from triage to billing");
        assert!(check_handoff("billing", &to, None).is_err());
        assert!(check_handoff("", &to, None).is_err());
        assert!(check_handoff("triage", &NewParticipant::agent("b").with_role(""), None).is_err());
        assert!(check_handoff("triage", &NewParticipant::agent("b\u{7}"), None).is_err());
    }

    #[test]
    fn token_totals_do_not_overflow() {
        assert_eq!(add_tokens(1, 2).unwrap(), 3);
        assert!(add_tokens(i64::MAX as u64, 1).is_err());
    }
}
