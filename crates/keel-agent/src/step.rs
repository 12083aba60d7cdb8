//! Typed errors of an agent loop's steps. The [`Phase`] a run failed in is read from the error's
//! type, never from its message.

use std::fmt;
use std::time::Duration;

use keel_types::FailureClass;
use serde::{Deserialize, Serialize};

/// The part of an iteration a run failed in, as recorded in a
/// [`FailurePoint`](crate::FailurePoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The model call ([`StepError::Llm`]): refused, model not found, circuit open, …
    Llm,
    /// A tool call ([`StepError::Tool`]).
    Tool,
    /// The iteration itself ([`StepError::Iteration`]): the agent gave up, or the run reached its
    /// iteration limit.
    Iteration,
    /// Outside the agent's steps (the checkpoint store failed), or a phase this version does not
    /// know (read from a newer checkpoint).
    #[serde(other)]
    Unknown,
}

impl Phase {
    /// The serialized name: `llm`, `tool`, `iteration` or `unknown`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Tool => "tool",
            Self::Iteration => "iteration",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a model call failed: an upstream [`FailureClass`], or a circuit breaker that did not let
/// the call through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The call reached (or tried to reach) the model server and failed.
    #[error("model call failed ({class}): {message}")]
    Failed {
        /// How it failed.
        class: FailureClass,
        /// What the client or server said.
        message: String,
    },
    /// A circuit breaker refused the call without trying the server.
    #[error("model call not attempted, circuit breaker open: {message}")]
    CircuitOpen {
        /// When the breaker admits a call again, if known.
        retry_after: Option<Duration>,
        /// What the breaker said.
        message: String,
    },
}

impl LlmError {
    /// A failed call of this class.
    #[must_use]
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self::Failed { class, message: message.into() }
    }

    /// A call a circuit breaker refused.
    #[must_use]
    pub fn circuit_open(retry_after: Option<Duration>, message: impl Into<String>) -> Self {
        Self::CircuitOpen { retry_after, message: message.into() }
    }

    /// The error for an HTTP status of a complete response head, classified by
    /// [`FailureClass::from_status`] (404 is `model_not_found`, 503 `busy`, …); `None` for
    /// success statuses.
    #[must_use]
    pub fn from_status(status: u16, message: impl Into<String>) -> Option<Self> {
        FailureClass::from_status(status).map(|class| Self::new(class, message))
    }

    /// The failure class; `None` for [`LlmError::CircuitOpen`].
    #[must_use]
    pub const fn class(&self) -> Option<FailureClass> {
        match self {
            Self::Failed { class, .. } => Some(*class),
            Self::CircuitOpen { .. } => None,
        }
    }

    /// A short machine-readable kind: the class's name (`refused`, `model_not_found`, `busy`, …)
    /// or `circuit_open`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Failed { class, .. } => class.as_str(),
            Self::CircuitOpen { .. } => "circuit_open",
        }
    }
}

impl From<FailureClass> for LlmError {
    fn from(class: FailureClass) -> Self {
        Self::new(class, class.as_str())
    }
}

impl From<std::io::Error> for LlmError {
    /// Classifies a transport error by its [`std::io::ErrorKind`]: refused → `refused`, timed out
    /// → `timeout`, anything else (reset, aborted, broken pipe, early EOF, …) → `reset`.
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let class = match err.kind() {
            ErrorKind::ConnectionRefused => FailureClass::Refused,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => FailureClass::Timeout,
            _ => FailureClass::Reset,
        };
        Self::new(class, err.to_string())
    }
}

impl From<keel_breaker::Rejected> for LlmError {
    fn from(rejected: keel_breaker::Rejected) -> Self {
        Self::circuit_open(Some(rejected.retry_after), rejected.to_string())
    }
}

/// Why a tool call failed (its message is recorded in the checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    /// What went wrong.
    pub message: String,
}

impl ToolError {
    /// A tool error with this message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        Self { message }
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// Why a step of an agent loop failed. Its variant decides the [`Phase`] recorded in the
/// checkpoint ([`StepError::phase`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// The model call failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// A tool call failed.
    #[error("tool '{name}' failed: {message}")]
    Tool {
        /// The tool's name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The iteration failed outside the model and tool calls (the agent gave up, the iteration
    /// limit was reached).
    #[error("iteration failed: {0}")]
    Iteration(String),
}

impl StepError {
    /// The phase this error belongs to: [`Phase::Llm`], [`Phase::Tool`] or [`Phase::Iteration`].
    #[must_use]
    pub const fn phase(&self) -> Phase {
        match self {
            Self::Llm(_) => Phase::Llm,
            Self::Tool { .. } => Phase::Tool,
            Self::Iteration(_) => Phase::Iteration,
        }
    }

    /// A short machine-readable kind: [`LlmError::kind`] for model calls, `tool_error` or
    /// `iteration_error`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Llm(err) => err.kind(),
            Self::Tool { .. } => "tool_error",
            Self::Iteration(_) => "iteration_error",
        }
    }

    /// The model call's failure class, if this is a [`StepError::Llm`] that has one.
    #[must_use]
    pub const fn class(&self) -> Option<FailureClass> {
        match self {
            Self::Llm(err) => err.class(),
            _ => None,
        }
    }
}

impl From<FailureClass> for StepError {
    fn from(class: FailureClass) -> Self {
        Self::Llm(class.into())
    }
}

impl From<std::io::Error> for StepError {
    /// A transport error of the model call (see [`LlmError`]'s `From<std::io::Error>`).
    fn from(err: std::io::Error) -> Self {
        Self::Llm(err.into())
    }
}

impl From<keel_breaker::Rejected> for StepError {
    fn from(rejected: keel_breaker::Rejected) -> Self {
        Self::Llm(rejected.into())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn phases_come_from_the_variant() {
        let refused = StepError::from(Error::from(ErrorKind::ConnectionRefused));
        assert_eq!((refused.phase(), refused.class()), (Phase::Llm, Some(FailureClass::Refused)));
        let missing = StepError::from(LlmError::from_status(404, "model 'x' not found").unwrap());
        assert_eq!((missing.phase(), missing.kind()), (Phase::Llm, "model_not_found"));
        assert_eq!(LlmError::from_status(200, "ok"), None);
        let open = StepError::from(LlmError::circuit_open(None, "open"));
        assert_eq!((open.phase(), open.kind(), open.class()), (Phase::Llm, "circuit_open", None));
        let tool = StepError::Tool { name: "t".into(), message: "connection refused".into() };
        assert_eq!((tool.phase(), tool.kind()), (Phase::Tool, "tool_error"));
        let iteration = StepError::Iteration("model not found".into());
        assert_eq!((iteration.phase(), iteration.kind()), (Phase::Iteration, "iteration_error"));
    }

    #[test]
    fn io_errors_classify_by_kind() {
        let class = |kind| LlmError::from(Error::from(kind)).class();
        assert_eq!(class(ErrorKind::TimedOut), Some(FailureClass::Timeout));
        assert_eq!(class(ErrorKind::ConnectionReset), Some(FailureClass::Reset));
        assert_eq!(class(ErrorKind::UnexpectedEof), Some(FailureClass::Reset));
        assert_eq!(LlmError::from(FailureClass::Busy).kind(), "busy");
    }

    #[test]
    fn breaker_rejections_are_circuit_open() {
        let rejected = keel_breaker::Rejected {
            state: keel_breaker::State::Open,
            forced: false,
            retry_after: Duration::from_secs(12),
        };
        let err = LlmError::from(rejected);
        assert_eq!(err.kind(), "circuit_open");
        assert!(matches!(err, LlmError::CircuitOpen { retry_after: Some(d), .. } if d == Duration::from_secs(12)));
    }

    #[test]
    fn phase_names_round_trip_and_unknown_names_read_as_unknown() {
        for phase in [Phase::Llm, Phase::Tool, Phase::Iteration, Phase::Unknown] {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{phase}\""));
            assert_eq!(serde_json::from_str::<Phase>(&json).unwrap(), phase);
        }
        assert_eq!(serde_json::from_str::<Phase>("\"network\"").unwrap(), Phase::Unknown);
    }
}
