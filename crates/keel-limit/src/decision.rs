//! What callers pass in ([`Quota`]) and get back ([`Decision`]).

use std::time::Duration;

use crate::gcra::{Gcra, Verdict};

/// A rate: `per_minute` units per minute (requests, or tokens), all usable at once.
///
/// `0` admits nothing (every check is [`Decision::TooLarge`]); callers with no limit skip the
/// check instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Units per minute.
    pub per_minute: u64,
}

impl Quota {
    /// A quota of `per_minute` units per minute.
    pub const fn per_minute(per_minute: u64) -> Quota {
        Quota { per_minute }
    }

    /// The algorithm for this quota.
    pub fn gcra(self) -> Gcra {
        Gcra::new(self.per_minute)
    }
}

/// The answer to a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The cost was admitted and charged.
    Allowed {
        /// The quota's units per minute.
        limit: u64,
        /// Whole units still available right after this one.
        remaining: u64,
        /// Time until the bucket is full again.
        reset: Duration,
    },
    /// The cost does not fit now; nothing was charged.
    Limited {
        /// The quota's units per minute.
        limit: u64,
        /// Time until the same cost would fit, rounded up to a whole millisecond.
        retry_after: Duration,
        /// Time until the bucket is full again.
        reset: Duration,
    },
    /// The cost exceeds the whole per-minute budget and will never fit; nothing was charged.
    /// (A request estimated at more tokens than the minute allows: reject it, do not retry.)
    TooLarge {
        /// The quota's units per minute.
        limit: u64,
    },
}

impl Decision {
    /// The decision for a core [`Verdict`] of `gcra`.
    pub fn from_verdict(gcra: &Gcra, verdict: Verdict) -> Decision {
        let limit = gcra.limit();
        match verdict {
            Verdict::Allowed { remaining, reset, .. } => {
                Decision::Allowed { limit, remaining, reset: Duration::from_micros(reset) }
            }
            Verdict::Limited { retry_after, reset } => Decision::Limited {
                limit,
                retry_after: Duration::from_millis(retry_after.div_ceil(1000)),
                reset: Duration::from_micros(reset),
            },
            Verdict::TooLarge => Decision::TooLarge { limit },
        }
    }

    /// Whether the cost was admitted.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// The quota's units per minute.
    pub fn limit(&self) -> u64 {
        match *self {
            Decision::Allowed { limit, .. } | Decision::Limited { limit, .. } | Decision::TooLarge { limit } => limit,
        }
    }

    /// Time until the same cost would fit: zero when allowed, `None` when it never will.
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            Decision::Allowed { .. } => Some(Duration::ZERO),
            Decision::Limited { retry_after, .. } => Some(retry_after),
            Decision::TooLarge { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_milliseconds() {
        let gcra = Quota::per_minute(60).gcra();
        let limited = Decision::from_verdict(&gcra, Verdict::Limited { retry_after: 1_001, reset: 7 });
        assert_eq!(
            limited,
            Decision::Limited { limit: 60, retry_after: Duration::from_millis(2), reset: Duration::from_micros(7) }
        );
        assert_eq!(limited.retry_after(), Some(Duration::from_millis(2)));
        let exact = Decision::from_verdict(&gcra, Verdict::Limited { retry_after: 3_000, reset: 0 });
        assert_eq!(exact.retry_after(), Some(Duration::from_millis(3)));
        let too_large = Decision::from_verdict(&gcra, Verdict::TooLarge);
        assert_eq!((too_large.limit(), too_large.retry_after(), too_large.is_allowed()), (60, None, false));
    }
}
