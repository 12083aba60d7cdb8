//! Injected time: breakers never read a clock themselves.
//!
//! Every decision takes a [`Nanos`] reading, so the state machine is a pure function of its inputs
//! and tests drive time by hand with [`ManualClock`]. The proxy uses [`SystemClock`] (or its own
//! [`Clock`], e.g. one backed by `tokio::time::Instant` so paused-time tests work end to end).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A monotonic instant: nanoseconds since the epoch of the [`Clock`] that produced it.
///
/// Readings from different clocks are not comparable. Serializes as a plain integer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nanos(pub u64);

impl Nanos {
    /// The clock's epoch.
    pub const ZERO: Nanos = Nanos(0);

    /// The instant `duration` after the epoch (saturating at `u64::MAX` nanoseconds, ~584 years).
    pub fn from_duration(duration: Duration) -> Nanos {
        Nanos(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The time since the epoch.
    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// The instant `duration` later, saturating.
    pub fn saturating_add(self, duration: Duration) -> Nanos {
        Nanos(self.0.saturating_add(Nanos::from_duration(duration).0))
    }

    /// The time from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A source of monotonic time for breakers.
///
/// Implementations must be cheap (the open-rejection path reads the clock once) and never go
/// backwards. Small disagreements between threads are tolerated: a reading slightly older than one
/// already seen is treated as "now".
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Nanos;

    /// The wall-clock time of a reading, for logs, incidents and `/keel/status` (`opened_at`),
    /// if this clock knows it. Approximate: the wall clock may have been adjusted since.
    fn wall_time(&self, at: Nanos) -> Option<SystemTime> {
        let _ = at;
        None
    }
}

/// The process's monotonic clock: `std::time::Instant` measured from the moment of creation.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    #[allow(clippy::disallowed_types, reason = "the one place keel-breaker reads real time")]
    origin: std::time::Instant,
    wall_origin: SystemTime,
}

impl SystemClock {
    /// A clock whose epoch is now.
    #[allow(
        clippy::disallowed_types,
        clippy::disallowed_methods,
        reason = "the one place keel-breaker reads real time"
    )]
    pub fn new() -> SystemClock {
        SystemClock { origin: std::time::Instant::now(), wall_origin: SystemTime::now() }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        Nanos::from_duration(self.origin.elapsed())
    }

    fn wall_time(&self, at: Nanos) -> Option<SystemTime> {
        self.wall_origin.checked_add(at.as_duration())
    }
}

/// A clock that moves only when told to: for tests and simulations.
///
/// Clones share the same time, so a test keeps one clone and gives another to a
/// [`Registry`](crate::Registry).
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at its epoch.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = Nanos::from_duration(by).0;
        let _ = self.now.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| Some(now.saturating_add(by)));
    }

    /// Sets the current instant (tests may move it backwards to check tolerance).
    pub fn set(&self, at: Nanos) {
        self.now.store(at.0, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        Nanos(self.now.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new();
        let other = clock.clone();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(other.now(), Nanos(1_500_000_000));
        other.set(Nanos(7));
        assert_eq!(clock.now(), Nanos(7));
    }

    #[test]
    fn nanos_arithmetic_saturates() {
        let at = Nanos(10);
        assert_eq!(at.saturating_since(Nanos(20)), Duration::ZERO);
        assert_eq!(Nanos(u64::MAX - 1).saturating_add(Duration::from_secs(1)), Nanos(u64::MAX));
        assert_eq!(Nanos::from_duration(Duration::MAX), Nanos(u64::MAX));
        assert_eq!(Nanos::from_duration(Duration::from_secs(2)).as_duration(), Duration::from_secs(2));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(clock.wall_time(b).unwrap() >= clock.wall_time(a).unwrap());
        assert_eq!(ManualClock::new().wall_time(a), None);
    }
}
