//! Circuit breakers for keel: one per target (an upstream plus a model), so a dead, overloaded or
//! runaway target is taken out of rotation quickly and probed back carefully.
//!
//! Two layers:
//! - [`Breaker`] — the state machine of one target, CLOSED → OPEN → HALF_OPEN → CLOSED. Pure: no
//!   I/O, no async, no clock of its own; every method takes `now` ([`Nanos`]) and returns the
//!   [`Transition`] it caused.
//! - [`Registry`] — breakers keyed by target name, created on first use from a shared
//!   [`BreakerConfig`] (plus per-target overrides), safe to share across serving threads, reading
//!   an injected [`Clock`]. Every transition is also queued for [`Registry::drain_events`], which
//!   the proxy turns into metrics, log lines and incidents.
//!
//! **Invariant:** this crate performs no I/O and reads time only through [`Clock`].
//!
//! # The call protocol
//!
//! [`Registry::try_acquire`] (or [`BreakerHandle::try_acquire`]) before sending a call; then
//! [`Permit::record`] with the classified [`Outcome`]. A rejection says how long to wait.
//!
//! ```
//! use std::time::Duration;
//! use keel_breaker::{BreakerConfig, ManualClock, Outcome, Reason, Registry, State};
//! use keel_types::FailureClass;
//!
//! let clock = ManualClock::new();
//! let config = BreakerConfig { failure_threshold: 3, ..BreakerConfig::default() };
//! let registry = Registry::builder(config).clock(clock.clone()).build()?;
//!
//! // Three failures in a row open the breaker of this target, and only this one.
//! for _ in 0..3 {
//!     let permit = registry.try_acquire("local:llama3.2").expect("closed: admitted");
//!     permit.record(Outcome::failure(FailureClass::Busy, Duration::from_millis(5)));
//! }
//! let rejected = registry.try_acquire("local:llama3.2").unwrap_err();
//! assert_eq!(rejected.state, State::Open);
//! assert_eq!(rejected.retry_after, Duration::from_secs(30));
//! assert!(registry.try_acquire("backup:llama3.2").is_ok());
//!
//! // After the cooldown one probe is admitted; its success closes the breaker.
//! clock.advance(Duration::from_secs(30));
//! let probe = registry.try_acquire("local:llama3.2").expect("half-open: one probe");
//! assert!(probe.is_probe());
//! assert!(registry.try_acquire("local:llama3.2").is_err(), "only one probe at a time");
//! let closed = probe.record(Outcome::success(Duration::from_millis(40))).expect("closes");
//! assert_eq!((closed.from, closed.to, closed.reason), (State::HalfOpen, State::Closed, Reason::ProbeSucceeded));
//!
//! // The proxy drains every transition for metrics, logs and incidents.
//! let reasons: Vec<&str> = registry.drain_events().iter().map(|t| t.reason.as_str()).collect();
//! assert_eq!(reasons, ["consecutive_failures", "cooldown_elapsed", "probe_succeeded"]);
//! # Ok::<(), keel_breaker::Error>(())
//! ```
//!
//! # What counts
//!
//! Timeouts, refused and reset connections, server errors, busy (503) and broken streams are
//! failures. `bad_request` and `model_not_found` are the client's fault and are ignored
//! ([`BreakerConfig::ignore`]). `invalid_output` is a *quality failure*
//! ([`BreakerConfig::quality_failures`]): the server answered, so it does not count toward
//! consecutive failures or the failure rate, but it lowers the success ratio that
//! `min_success_ratio` watches.
//!
//! # Threads and cost
//!
//! Deciding in CLOSED and rejecting in OPEN read one atomic word (plus the clock in OPEN): no lock.
//! Recording takes the target's `parking_lot::Mutex` for a few counter updates; admitting a
//! HALF_OPEN probe takes it too, which is what makes "exactly N probes in flight" hold under
//! concurrency. A dropped [`Permit`] counts as nothing and releases its probe slot.

mod clock;
mod config;
mod error;
mod event;
mod machine;
mod registry;
mod window;

pub use clock::{Clock, ManualClock, Nanos, SystemClock};
pub use config::{BreakerConfig, CooldownStrategy, HalfOpenMode};
pub use error::Error;
pub use event::{LastTransition, Reason, State, Transition};
pub use machine::{Acquire, Breaker, Outcome, Rejected, Snapshot, Ticket, WindowStats};
pub use registry::{BreakerHandle, DEFAULT_EVENT_CAPACITY, Permit, Registry, RegistryBuilder};
