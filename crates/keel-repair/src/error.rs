//! Why the engine refused to produce a value.

/// Why no value came out. Every variant is a refusal: the engine returns no data rather than
/// invented data, and the message says what was wrong so a re-ask can quote it to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    /// The output is empty (or only whitespace, an empty think block or an empty code fence).
    #[error("empty output: the model returned no content")]
    Empty,
    /// The output is prose with no JSON object or array in it.
    #[error("no JSON found: the output is prose without an object or array")]
    NoJson,
    /// The output has braces or brackets, but they hold templates or code, not JSON.
    #[error("no JSON found: {fragments} brace or bracket fragment(s) are not JSON (templates, code or prose)")]
    NotJson {
        /// How many fragments were tried.
        fragments: usize,
    },
    /// The JSON found cannot satisfy the schema without inventing data.
    #[error("the output does not satisfy the schema and cannot be repaired without inventing data: {}", reasons.join("; "))]
    Schema {
        /// One line per problem, each with its JSON pointer (`missing required field "subject" at /`).
        reasons: Vec<String>,
    },
    /// The schema itself is not a valid JSON Schema.
    #[error("invalid JSON Schema: {message}")]
    InvalidSchema {
        /// What the schema compiler said.
        message: String,
    },
    /// The output is nested deeper than keel reads: [`crate::MAX_DEPTH`] levels for JSON passed as
    /// written, [`crate::MAX_VALUE_DEPTH`] for JSON that is repaired, extracted from around other
    /// text or checked against a schema. Refused as a whole: no shallower piece of it is offered
    /// instead.
    #[error("nested deeper than {limit} levels; keel does not repair JSON this deep")]
    TooDeep {
        /// The limit that was passed.
        limit: usize,
    },
    /// The repaired value does not deserialize into the requested Rust type.
    #[error("the repaired value does not fit the Rust type: {message}")]
    Deserialize {
        /// What serde said.
        message: String,
    },
}

impl RepairError {
    /// A short machine-readable kind (`empty`, `no_json`, `not_json`, `schema`, `invalid_schema`,
    /// `too_deep`, `deserialize`) for metric labels.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NoJson => "no_json",
            Self::NotJson { .. } => "not_json",
            Self::Schema { .. } => "schema",
            Self::InvalidSchema { .. } => "invalid_schema",
            Self::TooDeep { .. } => "too_deep",
            Self::Deserialize { .. } => "deserialize",
        }
    }
}
