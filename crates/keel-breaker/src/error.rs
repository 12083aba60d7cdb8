//! The crate's error: a config that cannot work.

/// A breaker config that does not validate. The message names the key and what to write instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A key of `[breaker]` has an unusable value.
    #[error("[breaker] {key} {problem}")]
    InvalidConfig {
        /// The key, as written in the config file.
        key: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A per-target override does not validate.
    #[error("breaker override for target {target:?}: {source}")]
    InvalidTargetConfig {
        /// The target whose override is wrong.
        target: String,
        /// What is wrong with it.
        source: Box<Error>,
    },
}
