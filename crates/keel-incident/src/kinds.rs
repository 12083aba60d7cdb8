//! The kinds of incident keel knows, and what each means to a reader.

/// An upstream (model server) does not answer at all: refused, reset, timed out.
pub const UPSTREAM_DOWN: &str = "upstream_down";
/// One model on an upstream fails (not found, fails to load, errors, slow, unusable answers).
pub const MODEL_FAILING: &str = "model_failing";
/// Structured output keeps failing: answers that no repair or re-ask could make valid.
pub const STRUCTURED_OUTPUT: &str = "structured_output";
/// An agent's session went silent past its timeout.
pub const SESSION_TIMEOUT: &str = "session_timeout";
/// Requests were shed: admission queues full.
pub const SHEDDING: &str = "shedding";
/// Many requests were refused by rate limits.
pub const RATE_LIMITED: &str = "rate_limited";
/// Posted from outside (`POST /keel/events` or Alertmanager).
pub const EXTERNAL: &str = "external";

/// Every kind, for help texts and tests.
pub const ALL: [&str; 7] =
    [UPSTREAM_DOWN, MODEL_FAILING, STRUCTURED_OUTPUT, SESSION_TIMEOUT, SHEDDING, RATE_LIMITED, EXTERNAL];
