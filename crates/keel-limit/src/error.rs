//! The crate's error: a store that cannot answer, or one that cannot be set up.

/// Why a limit could not be decided. The local store never fails; these come from Redis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The shared store was unreachable, too slow or failed the script. Nothing is known about
    /// the budget: the caller admits or rejects as its `on_store_error` setting says.
    #[error("Redis at {addr} {problem}; the limit is applied as `[limits] on_store_error` says")]
    Store {
        /// The server, as `host:port` (never the password).
        addr: String,
        /// What went wrong, e.g. "did not answer within 250 ms".
        problem: String,
    },
    /// The store cannot be set up at all (a malformed URL, or no Tokio runtime to run it on).
    #[error("cannot set up the rate-limit store: {problem}")]
    Setup {
        /// What is wrong and what to write instead.
        problem: String,
    },
}

impl LimitError {
    /// Whether this is a [`LimitError::Store`] failure (transient: later calls may succeed).
    pub fn is_store(&self) -> bool {
        matches!(self, LimitError::Store { .. })
    }
}
