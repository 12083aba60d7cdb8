//! Structured output for Rust agents, with fallback tiers: a model's text becomes a value valid
//! against a JSON Schema — repaired if it can be, otherwise the caller's fallback, otherwise a
//! canned default — and the caller hears about every fallback.
//!
//! [`StructuredOutput::parse`] tries, in order:
//!
//! 1. **Primary** — the raw text is repaired against the schema by [`keel_repair`] (code fences,
//!    prose, broken syntax, wrong types and key spellings fixed; missing data never invented) and
//!    deserialized into `T`.
//! 2. **Fallback** — the caller's function, given the raw text and the primary [`RepairError`].
//!    Its value is serialized and **re-validated** against the schema: an invalid value is
//!    discarded ([`Event::FallbackRejected`]), never returned.
//! 3. **Canned** — a default value, validated against the schema by [`Builder::build`], so a bad
//!    canned value is a startup error ([`BuildError`]) rather than a surprise in production.
//!
//! Whatever the tier, the returned value satisfies the schema. When every tier fails, the
//! [`Failure`] says why each did. Fallback and canned use, a rejected fallback value and total
//! failure are [`Event`]s delivered to the [`Builder::on_event`] handlers, logged with `tracing`
//! at warn level (target `keel_agent`), and every parse increments the counter
//! `keel_agent_structured_tier_total{tier="primary|fallback|canned|failed"}` ([`TIER_METRIC`])
//! through the `metrics` facade.
//!
//! The schema comes from `T`'s [`schemars::JsonSchema`] ([`StructuredOutput::builder`]) or is
//! given as a [`serde_json::Value`] ([`StructuredOutput::with_schema`]; with
//! `T = serde_json::Value` that is [`UntypedOutput`]). It is compiled once, at build time.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! use keel_agent::{BuildError, Event, StructuredOutput, Tier};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
//! #[serde(rename_all = "snake_case")]
//! enum Label { Bug, Billing, Other }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
//! struct Verdict {
//!     label: Label,
//!     #[schemars(range(min = 0, max = 1))]
//!     confidence: f64,
//! }
//!
//! let fallbacks = Arc::new(AtomicUsize::new(0));
//! let seen = Arc::clone(&fallbacks);
//! let triage = StructuredOutput::<Verdict>::builder()
//!     // Tier 2: the caller's own reading of the raw text; re-validated against the schema.
//!     .fallback(|raw, _error| {
//!         raw.contains("invoice").then_some(Verdict { label: Label::Billing, confidence: 0.5 })
//!     })
//!     // Tier 3: validated here, in build().
//!     .canned(Verdict { label: Label::Other, confidence: 0.0 })
//!     .on_event(move |event| {
//!         if matches!(event, Event::Fallback { .. }) {
//!             seen.fetch_add(1, Ordering::Relaxed);
//!         }
//!     })
//!     .build()?;
//!
//! // Tier 1: the model's output, repaired.
//! let parsed = triage.parse("Sure! ```json\n{'Label': 'BUG', confidence: '0.9',}\n```")?;
//! assert_eq!((parsed.tier, parsed.value), (Tier::Primary, Verdict { label: Label::Bug, confidence: 0.9 }));
//!
//! let parsed = triage.parse("This looks like an invoice question.")?;
//! assert_eq!(parsed.tier, Tier::Fallback);
//! assert_eq!(fallbacks.load(Ordering::Relaxed), 1);
//!
//! assert_eq!(triage.parse("no idea")?.value.label, Label::Other);
//!
//! // A canned value the schema rejects is caught at build time.
//! let bad = StructuredOutput::<Verdict>::builder().canned(Verdict { label: Label::Bug, confidence: 7.0 }).build();
//! assert!(matches!(bad, Err(BuildError::InvalidCanned { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod event;
mod output;

pub use error::{BuildError, Failure, FallbackOutcome};
pub use event::Event;
pub use keel_repair::{RepairError, Report};
pub use output::{Builder, Parsed, StructuredOutput, TIER_METRIC, Tier, UntypedOutput};
