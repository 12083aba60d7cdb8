//! keel's incidents: what failures and outside events mean, and what is done about them.
//!
//! The store (`keel-session`'s `IncidentStore` and `JobStore`) keeps the log and the jobs; this
//! crate decides and acts:
//!
//! - [`rules`]: breaker transitions, fallback answers and session timeouts as incident events
//!   (fingerprints, effects); [`bursts`]: failures that are an incident only when they keep
//!   coming; [`intake`]: bodies of `POST /keel/events` and Alertmanager's webhook.
//! - [`recorder`]: the gateway's side: signals sent without waiting, recorded in order by one task.
//! - [`worker`]: the durable job worker: fan-out of state changes, webhook deliveries
//!   ([`notify`], http or https through `keel-outbound`; signed per Standard Webhooks by
//!   [`webhook`]) and runbooks.
//! - [`runbook`]: evidence, the template's words by incident kind, the model's words, Markdown.

pub mod bursts;
pub mod intake;
pub mod kinds;
pub mod notify;
pub mod recorder;
pub mod rules;
pub mod runbook;
pub mod webhook;
pub mod worker;

pub use recorder::{OpenIncident, Recorder, Recording};
pub use worker::{Worker, WorkerConfig};
