//! Structured output for Rust agents, with fallback tiers: a model's text becomes a value valid
//! against a JSON Schema — repaired if it can be, otherwise the caller's fallback, otherwise a
//! canned default — and the caller hears about every fallback. And [run checkpoints](#run-checkpoints)
//! for agent loops: a failed run resumes where it stopped, without running finished tools again.
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
//! through the `metrics` facade; resumed runs count in `keel_checkpoint_resumes_total`
//! ([`RESUMES_METRIC`]).
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
//!
//! # Run checkpoints
//!
//! [`AgentRun`] drives an agent loop — call the model ([`Agent::llm`]), run the tools it asked
//! for ([`Agent::tool`]), repeat until it asks for none — and keeps a [`Checkpoint`] of it in a
//! [`keel_session::Store`] through a [`CheckpointStore`]:
//!
//! - a checkpoint exists before the first model call, so a run whose very first call fails still
//!   has one (`last_completed_iteration: null`, failure point iteration 0, phase `llm`);
//! - after each completed iteration the checkpoint (history, last completed iteration) is saved;
//! - a failure saves it with a [`FailurePoint`] `{iteration, phase, kind, message}` whose
//!   [`Phase`] (`llm`, `tool`, `iteration`) comes from the type of the [`StepError`] the step
//!   returned — an [`LlmError`] with its [`keel_types::FailureClass`] (`refused`,
//!   `model_not_found`, `busy`, …) or `circuit_open`, a tool's [`ToolError`], or an iteration
//!   error — never from the error's text;
//! - every model answer and tool result is recorded in the run's ledger (the session
//!   `run:{run_id}`'s messages, idempotency keys `{run_id}:{iteration}:llm` and
//!   `{run_id}:{iteration}:{index}`) before the run goes on, and [`AgentRun::resume`] reuses what
//!   the ledger holds: a tool that completed before a failure is not executed again.
//!
//! The checkpoint is plain JSON (`serde`), also returned in [`RunError::Step`], and lives in the
//! run session's metadata; a restarted process finds it with [`CheckpointStore::load`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
//!
//! use keel_agent::{Agent, AgentRun, CheckpointStore, LlmTurn, Phase, StepError, ToolCall, ToolError};
//! use keel_types::FailureClass;
//! use serde_json::{Value, json};
//!
//! struct Checkout { model_down: AtomicBool, charges: AtomicU32 }
//!
//! impl Agent for Checkout {
//!     async fn llm(&self, iteration: u32, _history: &[Value]) -> Result<LlmTurn, StepError> {
//!         if self.model_down.load(Ordering::SeqCst) && iteration == 1 {
//!             return Err(FailureClass::Refused.into()); // typically `?` on the client's error
//!         }
//!         Ok(match iteration {
//!             0 => LlmTurn::from_message(json!({"role": "assistant", "content": "", "tool_calls": [
//!                 {"function": {"name": "charge_card", "arguments": {"cents": 500}}}
//!             ]}))?,
//!             _ => LlmTurn::answer(json!({"role": "assistant", "content": "Paid."})),
//!         })
//!     }
//!
//!     async fn tool(&self, call: &ToolCall, idempotency_key: &str) -> Result<String, ToolError> {
//!         assert_eq!((call.name.as_str(), idempotency_key), ("charge_card", "order-7:0:0"));
//!         self.charges.fetch_add(1, Ordering::SeqCst);
//!         Ok("charged".into())
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = keel_session::open(&format!("sqlite://{}", dir.path().join("runs.db").display())).await?;
//! let agent = Checkout { model_down: AtomicBool::new(true), charges: AtomicU32::new(0) };
//! let run = AgentRun::new(agent, CheckpointStore::new(store));
//!
//! // Iteration 0 charges the card; iteration 1's model call is refused.
//! let err = run.start("order-7", json!("Pay order 7")).await.unwrap_err();
//! let point = err.failure_point().unwrap();
//! assert_eq!((point.iteration, point.phase, point.kind.as_str()), (1, Phase::Llm, "refused"));
//!
//! // Later, or in another process: load the checkpoint and resume from iteration 1.
//! run.agent().model_down.store(false, Ordering::SeqCst);
//! let checkpoint = run.checkpoints().load("order-7").await?.unwrap();
//! assert_eq!(checkpoint.last_completed_iteration, Some(0));
//! let outcome = run.resume(checkpoint).await?;
//! assert_eq!(outcome.output["content"], "Paid.");
//! assert_eq!(run.agent().charges.load(Ordering::SeqCst), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod checkpoint;
mod error;
mod event;
mod output;
mod run;
mod step;

pub use checkpoint::{CHECKPOINT_VERSION, Checkpoint, CheckpointStore, FailurePoint, MAX_RUN_ID_LEN};
pub use error::{BuildError, Failure, FallbackOutcome};
pub use event::Event;
pub use keel_repair::{RepairError, Report};
pub use output::{Builder, Parsed, StructuredOutput, TIER_METRIC, Tier, UntypedOutput};
pub use run::{Agent, AgentRun, DEFAULT_MAX_ITERATIONS, LlmTurn, RESUMES_METRIC, RunError, RunOutcome, ToolCall};
pub use step::{LlmError, Phase, StepError, ToolError};
