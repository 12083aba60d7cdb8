//! The data model: sessions, messages, what callers pass in to create or change them, and the
//! filters and pages of [`Store::list_sessions`](crate::Store::list_sessions).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;

/// Where a session stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Messages are being exchanged (the state of a new session).
    #[default]
    Active,
    /// No traffic for a while; the session may resume at any time.
    Idle,
    /// Closed on purpose by its owner or an operator.
    Ended,
    /// Closed by keel after a timeout.
    TimedOut,
}

impl SessionStatus {
    /// Every status, in declaration order.
    pub const ALL: [SessionStatus; 4] =
        [SessionStatus::Active, SessionStatus::Idle, SessionStatus::Ended, SessionStatus::TimedOut];

    /// The stored and serialized name: `active`, `idle`, `ended` or `timed_out`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Idle => "idle",
            SessionStatus::Ended => "ended",
            SessionStatus::TimedOut => "timed_out",
        }
    }
}

/// `Display` and `FromStr` for an enum known by the names its `as_str` gives to each of `ALL`;
/// an unknown name is [`StoreError::InvalidInput`] naming `$what`.
macro_rules! stored_names {
    ($enum:ident, $what:literal) => {
        impl fmt::Display for $enum {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $enum {
            type Err = StoreError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $enum::ALL
                    .into_iter()
                    .find(|value| value.as_str() == s)
                    .ok_or_else(|| StoreError::InvalidInput(format!("unknown {} '{s}'", $what)))
            }
        }
    };
}

stored_names!(SessionStatus, "session status");

/// A durable conversation.
///
/// Timestamps are UTC unix milliseconds taken from the clock of the keel process that wrote them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The caller's id (`X-Keel-Session`), unique in the store.
    pub id: String,
    /// Who the session belongs to (an API key name, a user), if known.
    pub owner: Option<String>,
    /// The model the session talks to, if known.
    pub model: Option<String>,
    /// Where the session stands.
    pub status: SessionStatus,
    /// When the session was created (unix milliseconds, UTC).
    pub created_at: i64,
    /// When the session or one of its messages last changed (unix milliseconds, UTC; never goes
    /// backwards).
    pub updated_at: i64,
    /// Bumped by one on every change (create = 1, each append, update, completion); the token of
    /// optimistic concurrency for [`Store::update_session`](crate::Store::update_session).
    pub version: u64,
    /// The sum of the `token_count` of every message of the session.
    pub token_count: u64,
    /// How many messages the session holds, which is also the `seq` of the last one.
    pub message_count: u64,
    /// Free-form data of the caller (an object by default).
    pub metadata: Value,
}

/// What [`Store::create_session`](crate::Store::create_session) and
/// [`Store::ensure_session`](crate::Store::ensure_session) need to create a session.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    /// The session id: 1 to 255 bytes, no control characters.
    pub id: String,
    /// Who the session belongs to.
    pub owner: Option<String>,
    /// The model the session talks to.
    pub model: Option<String>,
    /// The initial status ([`SessionStatus::Active`] by default).
    pub status: SessionStatus,
    /// Free-form data (an empty object by default).
    pub metadata: Value,
}

impl NewSession {
    /// A session with this id, no owner or model, active, with empty metadata.
    pub fn new(id: impl Into<String>) -> Self {
        NewSession {
            id: id.into(),
            owner: None,
            model: None,
            status: SessionStatus::Active,
            metadata: Value::Object(serde_json::Map::new()),
        }
    }

    /// A session with a fresh time-ordered id (UUID v7).
    pub fn generated() -> Self {
        NewSession::new(uuid::Uuid::now_v7().to_string())
    }

    /// Sets the owner.
    #[must_use]
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets the model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the initial status.
    #[must_use]
    pub fn with_status(mut self, status: SessionStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// The session this would create at `now` (unix milliseconds).
    pub(crate) fn into_session(self, now: i64) -> Session {
        Session {
            id: self.id,
            owner: self.owner,
            model: self.model,
            status: self.status,
            created_at: now,
            updated_at: now,
            version: 1,
            token_count: 0,
            message_count: 0,
            metadata: self.metadata,
        }
    }
}

/// A change to a session's own fields for [`Store::update_session`](crate::Store::update_session).
/// `None` leaves a field as it is; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionPatch {
    /// A new owner, or `Some(None)` to clear it.
    pub owner: Option<Option<String>>,
    /// A new model, or `Some(None)` to clear it.
    pub model: Option<Option<String>>,
    /// A new status.
    pub status: Option<SessionStatus>,
    /// New metadata (replaces the old value whole).
    pub metadata: Option<Value>,
}

impl SessionPatch {
    /// A patch that only sets the status.
    pub fn status(status: SessionStatus) -> Self {
        SessionPatch { status: Some(status), ..SessionPatch::default() }
    }

    /// Applies the patch as of `now`: fields, version + 1, `updated_at` (never backwards).
    pub(crate) fn apply(self, session: &mut Session, now: i64) {
        if let Some(owner) = self.owner {
            session.owner = owner;
        }
        if let Some(model) = self.model {
            session.model = model;
        }
        if let Some(status) = self.status {
            session.status = status;
        }
        if let Some(metadata) = self.metadata {
            session.metadata = metadata;
        }
        session.version += 1;
        session.updated_at = session.updated_at.max(now);
    }
}

/// One stored message of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The session it belongs to.
    pub session_id: String,
    /// Its position: 1, 2, 3… per session, strictly increasing, without gaps.
    pub seq: u64,
    /// `system`, `user`, `assistant`, `tool` or whatever the client sent.
    pub role: String,
    /// The text of the message.
    pub content: String,
    /// Tool calls of an assistant message, as the client or model wrote them.
    pub tool_calls: Option<Value>,
    /// Tokens this message counts for (added to the session's `token_count`).
    pub token_count: u64,
    /// The caller's idempotency key, unique per session when present.
    pub idempotency_key: Option<String>,
    /// `false` for a partial answer (a stream cut by a crash or a broken upstream) until
    /// [`Store::complete_message`](crate::Store::complete_message) finishes it.
    pub complete: bool,
    /// When it was stored (unix milliseconds, UTC).
    pub created_at: i64,
}

/// A message to append with [`Store::append`](crate::Store::append).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// `system`, `user`, `assistant`, `tool`, …
    pub role: String,
    /// The text of the message.
    pub content: String,
    /// Tool calls of an assistant message.
    pub tool_calls: Option<Value>,
    /// Tokens the message counts for.
    pub token_count: u64,
    /// Makes the append idempotent: a second append with the same key in the same session
    /// returns the first message and stores nothing (even if the rest differs).
    pub idempotency_key: Option<String>,
    /// `false` stores a partial message (see [`Message::complete`]).
    pub complete: bool,
}

impl NewMessage {
    /// A complete message with this role and content, no tokens, no key.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        NewMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            token_count: 0,
            idempotency_key: None,
            complete: true,
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        NewMessage::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        NewMessage::new("assistant", content)
    }

    /// Sets the token count.
    #[must_use]
    pub fn with_tokens(mut self, token_count: u64) -> Self {
        self.token_count = token_count;
        self
    }

    /// Sets the idempotency key.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the tool calls.
    #[must_use]
    pub fn with_tool_calls(mut self, tool_calls: Value) -> Self {
        self.tool_calls = Some(tool_calls);
        self
    }

    /// Marks the message partial (`complete = false`).
    #[must_use]
    pub fn partial(mut self) -> Self {
        self.complete = false;
        self
    }

    /// The stored message at `seq`, created at `now`.
    pub(crate) fn into_message(self, session_id: &str, seq: u64, now: i64) -> Message {
        Message {
            session_id: session_id.to_owned(),
            seq,
            role: self.role,
            content: self.content,
            tool_calls: self.tool_calls,
            token_count: self.token_count,
            idempotency_key: self.idempotency_key,
            complete: self.complete,
            created_at: now,
        }
    }
}

/// What a participant of a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantKind {
    /// A program: a model-driven agent, a tool runner, a bot.
    Agent,
    /// A person.
    Human,
}

impl ParticipantKind {
    /// Every kind, in declaration order.
    pub const ALL: [ParticipantKind; 2] = [ParticipantKind::Agent, ParticipantKind::Human];

    /// The stored and serialized name: `agent` or `human`.
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantKind::Agent => "agent",
            ParticipantKind::Human => "human",
        }
    }
}

stored_names!(ParticipantKind, "participant kind");

/// An agent or person attached to a session (see
/// [`Store::add_participant`](crate::Store::add_participant)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The session it belongs to.
    pub session_id: String,
    /// Its name, unique per session (an agent's name, a user id).
    pub name: String,
    /// Agent or human.
    pub kind: ParticipantKind,
    /// What it does in the session: free text such as `owner`, `assistant`, `reviewer`.
    pub role: String,
    /// When it was first added (unix milliseconds, UTC); re-adding keeps it.
    pub added_at: i64,
}

/// A participant to add with [`Store::add_participant`](crate::Store::add_participant) or to hand
/// off to with [`Store::handoff`](crate::Store::handoff).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewParticipant {
    /// The name: 1 to 255 bytes, no control characters.
    pub name: String,
    /// Agent or human.
    pub kind: ParticipantKind,
    /// Its role: 1 to 255 bytes, no control characters ([`NewParticipant::DEFAULT_ROLE`] unless
    /// set).
    pub role: String,
}

impl NewParticipant {
    /// The role of a participant made without [`NewParticipant::with_role`].
    pub const DEFAULT_ROLE: &'static str = "member";

    /// A participant of this name and kind, with the role `member`.
    pub fn new(name: impl Into<String>, kind: ParticipantKind) -> Self {
        NewParticipant { name: name.into(), kind, role: NewParticipant::DEFAULT_ROLE.to_owned() }
    }

    /// An agent.
    pub fn agent(name: impl Into<String>) -> Self {
        NewParticipant::new(name, ParticipantKind::Agent)
    }

    /// A person.
    pub fn human(name: impl Into<String>) -> Self {
        NewParticipant::new(name, ParticipantKind::Human)
    }

    /// Sets the role (`owner`, `assistant`, `reviewer`, …).
    #[must_use]
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// The stored participant of `session_id`, added at `added_at`.
    pub(crate) fn into_participant(self, session_id: &str, added_at: i64) -> Participant {
        Participant { session_id: session_id.to_owned(), name: self.name, kind: self.kind, role: self.role, added_at }
    }
}

/// The role of the message [`Store::handoff`](crate::Store::handoff) appends.
pub const HANDOFF_ROLE: &str = "handoff";

/// The message that records a handoff: role `handoff`, content `from <from> to <to>` and
/// `: <note>` when there is a note.
pub(crate) fn handoff_message(from: &str, to: &str, note: Option<&str>) -> NewMessage {
    let content = match note.filter(|note| !note.is_empty()) {
        Some(note) => format!("from {from} to {to}: {note}"),
        None => format!("from {from} to {to}"),
    };
    NewMessage::new(HANDOFF_ROLE, content)
}

/// How [`Store::complete_message`](crate::Store::complete_message) finishes a partial message.
/// `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageCompletion {
    /// The final content.
    pub content: Option<String>,
    /// The final token count (the session's `token_count` moves by the difference).
    pub token_count: Option<u64>,
    /// The tool calls the message makes (a streamed answer's, known at its end).
    pub tool_calls: Option<Value>,
}

/// Which sessions [`Store::list_sessions`](crate::Store::list_sessions) returns; every set field
/// must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionFilter {
    /// Only sessions of this owner.
    pub owner: Option<String>,
    /// Only sessions in this status.
    pub status: Option<SessionStatus>,
    /// Only sessions of this model (exact name).
    pub model: Option<String>,
    /// Only sessions updated at or after this time (unix milliseconds).
    pub updated_since: Option<i64>,
}

impl SessionFilter {
    /// Whether `session` passes the filter.
    pub fn matches(&self, session: &Session) -> bool {
        self.owner.as_ref().is_none_or(|owner| session.owner.as_ref() == Some(owner))
            && self.status.is_none_or(|status| session.status == status)
            && self.model.as_ref().is_none_or(|model| session.model.as_ref() == Some(model))
            && self.updated_since.is_none_or(|since| session.updated_at >= since)
    }
}

/// One page request of [`Store::list_sessions`](crate::Store::list_sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// At most this many sessions (1 to [`Page::MAX_LIMIT`]).
    pub limit: usize,
    /// Where the previous page ended ([`SessionPage::next_cursor`]); `None` for the first page.
    pub cursor: Option<String>,
}

impl Page {
    /// The largest page.
    pub const MAX_LIMIT: usize = 1_000;

    /// The first page, of at most `limit` sessions.
    pub fn first(limit: usize) -> Self {
        Page { limit, cursor: None }
    }

    /// The page after `cursor`.
    pub fn after(cursor: impl Into<String>, limit: usize) -> Self {
        Page { limit, cursor: Some(cursor.into()) }
    }

    /// The first page of sessions last updated before `millis` (unix milliseconds), in list
    /// order: what an idle sweep needs, found through the store's order instead of by reading
    /// every session.
    pub fn updated_before(millis: i64, limit: usize) -> Self {
        Page { limit, cursor: Some(Cursor { updated_at: millis, id: String::new() }.encode()) }
    }

    /// Checks the limit and decodes the cursor.
    pub(crate) fn parse(&self) -> Result<(usize, Option<Cursor>), StoreError> {
        if self.limit == 0 || self.limit > Page::MAX_LIMIT {
            return Err(StoreError::InvalidInput(format!(
                "page limit must be 1 to {}, got {}",
                Page::MAX_LIMIT,
                self.limit
            )));
        }
        let cursor = self.cursor.as_deref().map(Cursor::decode).transpose()?;
        Ok((self.limit, cursor))
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::first(50)
    }
}

/// One page of sessions, most recently updated first (ties by id, descending).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionPage {
    /// The sessions of this page.
    pub sessions: Vec<Session>,
    /// Pass to [`Page::after`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A position in the `(updated_at DESC, id DESC)` order of sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) updated_at: i64,
    pub(crate) id: String,
}

impl Cursor {
    /// The cursor just after `session`.
    pub(crate) fn after(session: &Session) -> Self {
        Cursor { updated_at: session.updated_at, id: session.id.clone() }
    }

    pub(crate) fn encode(&self) -> String {
        format!("{}:{}", self.updated_at, self.id)
    }

    pub(crate) fn decode(text: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidInput(format!("invalid page cursor '{text}'"));
        let (updated_at, id) = text.split_once(':').ok_or_else(invalid)?;
        let updated_at = updated_at.parse().map_err(|_| invalid())?;
        Ok(Cursor { updated_at, id: id.to_owned() })
    }

    /// Whether a session at `(updated_at, id)` comes after this cursor in list order.
    pub(crate) fn precedes(&self, updated_at: i64, id: &str) -> bool {
        updated_at < self.updated_at || (updated_at == self.updated_at && id.as_bytes() < self.id.as_bytes())
    }
}

/// Cuts a list of `limit + 1` candidates (in list order) into a page.
pub(crate) fn into_page(mut sessions: Vec<Session>, limit: usize) -> SessionPage {
    let next_cursor = if sessions.len() > limit {
        sessions.truncate(limit);
        sessions.last().map(|last| Cursor::after(last).encode())
    } else {
        None
    };
    SessionPage { sessions, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in SessionStatus::ALL {
            assert_eq!(status.as_str().parse::<SessionStatus>().unwrap(), status);
            assert_eq!(serde_json::to_value(status).unwrap(), Value::String(status.as_str().into()));
        }
        assert!("closed".parse::<SessionStatus>().is_err());
    }

    #[test]
    fn participant_kinds_round_trip() {
        for kind in ParticipantKind::ALL {
            assert_eq!(kind.as_str().parse::<ParticipantKind>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), Value::String(kind.as_str().into()));
        }
        assert!("robot".parse::<ParticipantKind>().is_err());
    }

    #[test]
    fn handoff_messages_name_both_sides() {
        let message = handoff_message("triage", "billing", Some("invoice question"));
        assert_eq!(
            (message.role.as_str(), message.content.as_str()),
            ("handoff", "from triage to billing: invoice question")
        );
        assert_eq!(handoff_message("a", "b", None).content, "from a to b");
        assert_eq!(handoff_message("a", "b", Some("")).content, "from a to b");
        let new = NewParticipant::human("alice");
        assert_eq!((new.kind, new.role.as_str()), (ParticipantKind::Human, "member"));
    }

    #[test]
    fn cursor_round_trips_ids_with_colons() {
        let cursor = Cursor { updated_at: 1_700_000_000_123, id: "a:b:c".into() };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode("nonsense").is_err());
        assert!(Cursor::decode("x:y").is_err());
    }

    #[test]
    fn cursor_order_is_updated_then_id_descending() {
        let cursor = Cursor { updated_at: 10, id: "m".into() };
        assert!(cursor.precedes(9, "z"));
        assert!(cursor.precedes(10, "l"));
        assert!(!cursor.precedes(10, "m"));
        assert!(!cursor.precedes(10, "n"));
        assert!(!cursor.precedes(11, "a"));
    }

    #[test]
    fn page_limits_are_checked() {
        assert!(Page::first(0).parse().is_err());
        assert!(Page::first(Page::MAX_LIMIT + 1).parse().is_err());
        assert_eq!(Page::first(3).parse().unwrap(), (3, None));
    }

    #[test]
    fn patch_bumps_version_and_never_moves_time_back() {
        let mut session = NewSession::new("s").with_owner("o").into_session(100);
        SessionPatch { owner: Some(None), ..SessionPatch::default() }.apply(&mut session, 50);
        assert_eq!(session.owner, None);
        assert_eq!(session.version, 2);
        assert_eq!(session.updated_at, 100);
    }
}
