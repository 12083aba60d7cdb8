//! What the tiers beyond the primary parse report.

use keel_repair::RepairError;

use crate::error::FallbackOutcome;

/// Something a caller may want to know about: a tier beyond the primary parse fired, the
/// fallback's value was rejected, or every tier failed. Delivered to the
/// [`on_event`](crate::Builder::on_event) handlers in the order it happened, also logged with
/// `tracing` at warn level.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The primary parse failed and the fallback function's value (valid against the schema) was
    /// used.
    Fallback {
        /// Why the primary parse failed.
        primary_error: RepairError,
    },
    /// The fallback function returned a value that does not satisfy the schema; it was discarded
    /// and the next tier is tried.
    FallbackRejected {
        /// Why the primary parse failed.
        primary_error: RepairError,
        /// Why the fallback's value is invalid.
        problems: Vec<String>,
    },
    /// The canned value was used.
    Canned {
        /// Why the primary parse failed.
        primary_error: RepairError,
        /// What became of the fallback tier.
        fallback: FallbackOutcome,
    },
    /// Every tier failed; [`parse`](crate::StructuredOutput::parse) returns a
    /// [`Failure`](crate::Failure).
    Failed {
        /// Why the primary parse failed.
        primary_error: RepairError,
        /// What became of the fallback tier.
        fallback: FallbackOutcome,
    },
}

impl Event {
    /// A short machine-readable kind: `fallback`, `fallback_rejected`, `canned` or `failed`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Fallback { .. } => "fallback",
            Self::FallbackRejected { .. } => "fallback_rejected",
            Self::Canned { .. } => "canned",
            Self::Failed { .. } => "failed",
        }
    }

    /// Why the primary parse failed (every event follows a failed primary parse).
    #[must_use]
    pub const fn primary_error(&self) -> &RepairError {
        match self {
            Self::Fallback { primary_error }
            | Self::FallbackRejected { primary_error, .. }
            | Self::Canned { primary_error, .. }
            | Self::Failed { primary_error, .. } => primary_error,
        }
    }

    /// Writes the event as a `tracing` warning; `output` names the Rust type being parsed.
    pub(crate) fn log(&self, output: &str) {
        let error = self.primary_error();
        match self {
            Self::Fallback { .. } => tracing::warn!(
                target: "keel_agent",
                output,
                error_kind = error.kind(),
                %error,
                "structured output: primary parse failed, using the fallback's value"
            ),
            Self::FallbackRejected { problems, .. } => tracing::warn!(
                target: "keel_agent",
                output,
                error_kind = error.kind(),
                %error,
                problems = %problems.join("; "),
                "structured output: the fallback's value does not satisfy the schema, discarded"
            ),
            Self::Canned { fallback, .. } => tracing::warn!(
                target: "keel_agent",
                output,
                error_kind = error.kind(),
                %error,
                fallback = fallback.kind(),
                "structured output: primary parse and fallback failed, using the canned value"
            ),
            Self::Failed { fallback, .. } => tracing::warn!(
                target: "keel_agent",
                output,
                error_kind = error.kind(),
                %error,
                fallback = fallback.kind(),
                "structured output: every tier failed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_primary_error() {
        let events = [
            Event::Fallback { primary_error: RepairError::Empty },
            Event::FallbackRejected { primary_error: RepairError::Empty, problems: vec![] },
            Event::Canned { primary_error: RepairError::Empty, fallback: FallbackOutcome::Declined },
            Event::Failed { primary_error: RepairError::Empty, fallback: FallbackOutcome::Absent },
        ];
        assert_eq!(events.each_ref().map(Event::kind), ["fallback", "fallback_rejected", "canned", "failed"]);
        for event in &events {
            assert_eq!(event.primary_error(), &RepairError::Empty);
            event.log("test");
        }
    }
}
