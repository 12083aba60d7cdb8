//! Why a build or a parse failed.

use std::fmt;

use keel_repair::RepairError;

/// Why [`Builder::build`](crate::Builder::build) refused the configuration. Both are startup
/// errors: a bad schema or a bad canned value is caught when the program starts, not when the
/// model first misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The schema is not a valid JSON Schema.
    #[error("invalid JSON Schema: {message}")]
    InvalidSchema {
        /// What the schema compiler said.
        message: String,
    },
    /// The canned value does not satisfy the schema (or cannot be serialized to JSON).
    #[error("the canned value does not satisfy the schema: {}", problems.join("; "))]
    InvalidCanned {
        /// One line per problem, each with its JSON pointer.
        problems: Vec<String>,
    },
}

/// What became of the fallback tier when it did not produce the value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackOutcome {
    /// No fallback function is configured.
    Absent,
    /// The fallback function returned `None`.
    Declined,
    /// The fallback function returned a value that does not satisfy the schema; it was discarded.
    Rejected {
        /// One line per problem, each with its JSON pointer.
        problems: Vec<String>,
    },
}

impl FallbackOutcome {
    /// A short machine-readable kind: `absent`, `declined` or `rejected`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Declined => "declined",
            Self::Rejected { .. } => "rejected",
        }
    }
}

impl fmt::Display for FallbackOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("no fallback configured"),
            Self::Declined => f.write_str("the fallback returned nothing"),
            Self::Rejected { problems } => {
                write!(f, "the fallback's value was rejected: {}", problems.join("; "))
            }
        }
    }
}

/// Every tier failed: the primary parse, then the fallback, and no canned value is configured.
/// (With a canned value, [`StructuredOutput::parse`](crate::StructuredOutput::parse) never fails.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no structured output: primary parse failed ({primary}); {fallback}; no canned value configured")]
#[non_exhaustive]
pub struct Failure {
    /// Why the model's output could not be repaired into a valid value.
    pub primary: RepairError,
    /// Why the fallback tier did not help.
    pub fallback: FallbackOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_every_tier() {
        let failure = Failure {
            primary: RepairError::NoJson,
            fallback: FallbackOutcome::Rejected { problems: vec!["-1 is less than the minimum of 0 at /n".into()] },
        };
        let text = failure.to_string();
        assert!(text.contains("prose without an object or array"), "{text}");
        assert!(text.contains("the fallback's value was rejected: -1 is less than the minimum of 0 at /n"), "{text}");
        assert!(text.ends_with("no canned value configured"), "{text}");
        assert_eq!(FallbackOutcome::Absent.to_string(), "no fallback configured");
        assert_eq!(FallbackOutcome::Declined.kind(), "declined");
    }

    #[test]
    fn build_error_lists_the_problems() {
        let err = BuildError::InvalidCanned { problems: vec!["a at /x".into(), "b at /y".into()] };
        assert_eq!(err.to_string(), "the canned value does not satisfy the schema: a at /x; b at /y");
    }
}
