//! Logs, metrics and traces for keel.
//!
//! [`logging`] installs the `tracing` subscriber (human text or JSON lines on stderr);
//! [`metrics`] installs the Prometheus recorder once per process and names every metric keel
//! emits, so dashboards and alerts have one place to look; [`traces`] sends OpenTelemetry spans
//! to the collectors the standard `OTEL_*` (or `LANGFUSE_*`) variables name.

pub mod logging;
pub mod metrics;
pub mod traces;

pub use logging::{LogFormat, init_logging};
pub use metrics::{names, prometheus};
