//! Logs and metrics for keel.
//!
//! [`logging`] installs the `tracing` subscriber (human text or JSON lines on stderr);
//! [`metrics`] installs the Prometheus recorder once per process and names every metric keel
//! emits, so dashboards and alerts have one place to look.

pub mod logging;
pub mod metrics;

pub use logging::{LogFormat, init_logging};
pub use metrics::{names, prometheus};
