//! The one error type of the crate.

/// Why a [`Store`](crate::Store) or [`KeyStore`](crate::KeyStore) operation failed.
///
/// The variants a caller acts on are typed ([`StoreError::SessionNotFound`],
/// [`StoreError::Conflict`], …); backend failures carry the backend's message, never the
/// connection URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No session has this id.
    #[error("session '{id}' not found")]
    SessionNotFound {
        /// The id asked for.
        id: String,
    },
    /// [`Store::create_session`](crate::Store::create_session) with an id already in use.
    #[error("session '{id}' already exists")]
    SessionExists {
        /// The id asked for.
        id: String,
    },
    /// The session has no message with this `seq`.
    #[error("session '{id}' has no message {seq}")]
    MessageNotFound {
        /// The session.
        id: String,
        /// The seq asked for.
        seq: u64,
    },
    /// The session has no participant with this name (the `from` of
    /// [`Store::handoff`](crate::Store::handoff)).
    #[error("session '{id}' has no participant '{name}'")]
    ParticipantNotFound {
        /// The session.
        id: String,
        /// The name asked for.
        name: String,
    },
    /// [`Store::update_session`](crate::Store::update_session) with a stale version: someone
    /// changed the session since it was read. Re-read it and retry.
    #[error("session changed concurrently (now at version {current_version}); re-read it and retry")]
    Conflict {
        /// The version the session is at now.
        current_version: u64,
    },
    /// [`KeyStore::create_key`](crate::KeyStore::create_key) with a name an unrevoked key has.
    /// Revoke that key first, or pick another name.
    #[error("an API key named '{name}' exists (revoke it first or choose another name)")]
    KeyExists {
        /// The name asked for.
        name: String,
    },
    /// The store URL is malformed or names an unknown backend.
    #[error("invalid store URL: {reason} (expected sqlite://PATH, postgres://… or redis://…)")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// An argument is out of range (empty id, page limit 0, bad cursor, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend cannot be reached (connection refused, timed out, pool exhausted).
    #[error("{backend} store unavailable: {message}; check that the server runs and the URL is right")]
    Unavailable {
        /// `sqlite`, `postgres` or `redis`.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The backend refused or failed an operation.
    #[error("{backend} store error: {message}")]
    Backend {
        /// `sqlite`, `postgres` or `redis`.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The store holds data this version of keel cannot read (a newer schema, a broken row).
    #[error("{backend} store holds data keel cannot read: {message}")]
    Corrupt {
        /// `sqlite`, `postgres` or `redis`.
        backend: &'static str,
        /// What could not be read.
        message: String,
    },
    /// The store was shut down (its SQLite writer thread is gone).
    #[error("the session store is closed")]
    Closed,
}

impl StoreError {
    /// A short stable name of the variant, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::SessionNotFound { .. } => "session_not_found",
            StoreError::SessionExists { .. } => "session_exists",
            StoreError::MessageNotFound { .. } => "message_not_found",
            StoreError::ParticipantNotFound { .. } => "participant_not_found",
            StoreError::Conflict { .. } => "conflict",
            StoreError::KeyExists { .. } => "key_exists",
            StoreError::InvalidUrl { .. } => "invalid_url",
            StoreError::InvalidInput(_) => "invalid_input",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Backend { .. } => "backend",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Closed => "closed",
        }
    }

    /// Whether the same call may succeed later unchanged (the backend was unreachable or busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. } | StoreError::Closed)
    }

    pub(crate) fn not_found(id: &str) -> Self {
        StoreError::SessionNotFound { id: id.to_owned() }
    }

    pub(crate) fn invalid_url(reason: impl Into<String>) -> Self {
        StoreError::InvalidUrl { reason: reason.into() }
    }
}
