//! The generic cell rate algorithm on plain integers: no clock, no I/O, no allocation.
//!
//! Times are microseconds on whatever clock the caller reads (this process's monotonic clock for
//! [`LocalLimiter`](crate::LocalLimiter), the Redis server's clock for
//! [`RedisLimiter`](crate::RedisLimiter)). The only state of a key is its TAT, the *theoretical
//! arrival time*: the instant at which the key's bucket would be full again. An absent key is the
//! same as a TAT at or before `now`, so callers pass `0` for it.
//!
//! Both stores run the same three steps: read the TAT, ask [`Gcra`] what the new TAT is (or why
//! there is none), write it. The Redis script repeats [`Gcra::advance`] and the capacity test in
//! Lua so the read-modify-write is atomic on the server; the decision itself is then computed here
//! from the TAT the script read.

/// One minute in microseconds: the window a quota is expressed in.
pub const MINUTE_MICROS: u64 = 60_000_000;

/// The largest change of a TAT by one [`Gcra::settle`], in µs (about 1.1 years).
///
/// Only guards the arithmetic (and Lua's 53-bit numbers) against absurd token counts; no real
/// correction comes near it.
pub const MAX_ADJUST_MICROS: u64 = 1 << 45;

/// The GCRA of one quota: `limit` units per minute, all of them usable at once.
///
/// `interval` (T, the time one unit occupies) is `60 s / limit` rounded *up* to a whole µs, and the
/// capacity is `limit * interval`. Rounding up keeps the arithmetic exact on integers and errs on
/// the safe side: a burst of exactly `limit` units always fits, and the sustained rate never
/// exceeds `limit` per minute (it is lower by less than 1 µs per unit, i.e. under 1 % for limits
/// up to 600 000 per minute). Limits above 60 000 000 per minute run at one unit per µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    limit: u64,
    interval: u64,
    capacity: u64,
}

/// What [`Gcra::check`] decided, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The cost fits: store `tat`.
    Allowed {
        /// The key's new TAT.
        tat: u64,
        /// Whole units still available right after this one.
        remaining: u64,
        /// µs until the bucket is full again (`tat - now`).
        reset: u64,
    },
    /// The cost does not fit now; the TAT is unchanged.
    Limited {
        /// µs until the same cost would fit (exact: allowed at `now + retry_after`, not 1 µs
        /// earlier).
        retry_after: u64,
        /// µs until the bucket is full again with the unchanged TAT.
        reset: u64,
    },
    /// The cost exceeds the whole per-minute budget and can never fit; the TAT is unchanged.
    TooLarge,
}

impl Verdict {
    /// The TAT to store: `Some` only when allowed.
    pub fn new_tat(&self) -> Option<u64> {
        match *self {
            Verdict::Allowed { tat, .. } => Some(tat),
            Verdict::Limited { .. } | Verdict::TooLarge => None,
        }
    }
}

impl Gcra {
    /// The GCRA of `per_minute` units per minute. `0` admits nothing: every cost is
    /// [`Verdict::TooLarge`].
    pub fn new(per_minute: u64) -> Gcra {
        let interval = MINUTE_MICROS.div_ceil(per_minute.max(1));
        Gcra { limit: per_minute, interval, capacity: per_minute.saturating_mul(interval) }
    }

    /// Units per minute.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// µs one unit occupies (T).
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// µs the TAT may run ahead of `now` after an admitted cost: the burst capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// µs that `units` occupy (saturating).
    pub fn span(&self, units: u64) -> u64 {
        units.saturating_mul(self.interval)
    }

    /// Whether `cost` can ever fit (`cost <= limit`).
    pub fn admits(&self, cost: u64) -> bool {
        cost <= self.limit
    }

    /// The TAT after `adjust` µs are charged (positive, counted from `max(tat, now)`) or refunded
    /// (negative); never earlier than `now`, since a full bucket cannot get fuller.
    pub fn advance(tat: u64, now: u64, adjust: i64) -> u64 {
        tat.max(now).saturating_add_signed(adjust).max(now)
    }

    /// Whether `cost` units fit at `now` given the key's `tat` (`0` for an absent key).
    pub fn check(&self, tat: u64, now: u64, cost: u64) -> Verdict {
        if !self.admits(cost) {
            return Verdict::TooLarge;
        }
        let new_tat = Gcra::advance(tat, now, clamp_signed(self.span(cost)));
        let backlog = new_tat - now;
        match backlog.checked_sub(self.capacity) {
            None | Some(0) => Verdict::Allowed { tat: new_tat, remaining: self.room(backlog), reset: backlog },
            Some(retry_after) => Verdict::Limited { retry_after, reset: tat.saturating_sub(now) },
        }
    }

    /// The µs by which [`Gcra::settle`] moves a TAT for a correction of `delta` units (actual
    /// minus reserved), clamped to ±[`MAX_ADJUST_MICROS`].
    pub fn adjustment(&self, delta: i64) -> i64 {
        let micros = self.span(delta.unsigned_abs()).min(MAX_ADJUST_MICROS);
        let micros = clamp_signed(micros);
        if delta < 0 { -micros } else { micros }
    }

    /// The TAT after correcting a reservation by `delta` units: a positive delta is charged even
    /// beyond the capacity (later requests wait for it), a negative one is refunded down to `now`.
    pub fn settle(&self, tat: u64, now: u64, delta: i64) -> u64 {
        Gcra::advance(tat, now, self.adjustment(delta))
    }

    /// Whole units available at `now` without changing anything (never more than `limit`).
    pub fn remaining(&self, tat: u64, now: u64) -> u64 {
        self.room(tat.saturating_sub(now))
    }

    /// Whole units that fit beside a backlog of `backlog` µs.
    fn room(&self, backlog: u64) -> u64 {
        self.capacity.saturating_sub(backlog) / self.interval
    }
}

/// `micros` as an `i64`, saturating.
fn clamp_signed(micros: u64) -> i64 {
    i64::try_from(micros).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    /// Admits `count` costs of 1 at `now`, returning the TAT.
    fn burst(gcra: &Gcra, mut tat: u64, now: u64, count: u64) -> u64 {
        for _ in 0..count {
            match gcra.check(tat, now, 1) {
                Verdict::Allowed { tat: next, .. } => tat = next,
                other => panic!("expected allowed, got {other:?}"),
            }
        }
        tat
    }

    #[test]
    fn sixty_per_minute_is_one_per_second_with_a_full_minute_of_burst() {
        let gcra = Gcra::new(60);
        assert_eq!((gcra.interval(), gcra.capacity()), (SEC, 60 * SEC));
        let now = 1000 * SEC;
        assert_eq!(gcra.check(0, now, 1), Verdict::Allowed { tat: now + SEC, remaining: 59, reset: SEC });
        let tat = burst(&gcra, 0, now, 60);
        assert_eq!(tat, now + 60 * SEC);
        assert_eq!(gcra.check(tat, now, 1), Verdict::Limited { retry_after: SEC, reset: 60 * SEC });
        // Half a second later, still half a unit short.
        assert_eq!(
            gcra.check(tat, now + SEC / 2, 1),
            Verdict::Limited { retry_after: SEC / 2, reset: 59 * SEC + SEC / 2 }
        );
        assert!(matches!(gcra.check(tat, now + SEC, 1), Verdict::Allowed { remaining: 0, .. }));
    }

    #[test]
    fn limits_that_do_not_divide_a_minute_still_allow_the_whole_burst() {
        for per_minute in [7, 9, 11, 13, 700, 7_000_000] {
            let gcra = Gcra::new(per_minute);
            let tat = burst(&gcra, 0, SEC, per_minute.min(10_000));
            if per_minute <= 10_000 {
                assert!(matches!(gcra.check(tat, SEC, 1), Verdict::Limited { .. }), "{per_minute}");
            }
        }
        let gcra = Gcra::new(7);
        assert!(matches!(gcra.check(0, SEC, 7), Verdict::Allowed { remaining: 0, .. }));
    }

    #[test]
    fn a_cost_above_the_limit_is_too_large_and_zero_admits_nothing() {
        assert_eq!(Gcra::new(10).check(0, SEC, 11), Verdict::TooLarge);
        assert!(matches!(Gcra::new(10).check(0, SEC, 10), Verdict::Allowed { remaining: 0, .. }));
        assert_eq!(Gcra::new(0).check(0, SEC, 1), Verdict::TooLarge);
    }

    #[test]
    fn tokens_are_charged_by_cost() {
        let gcra = Gcra::new(6_000); // 10 ms per token
        let now = 5 * SEC;
        let Verdict::Allowed { tat, remaining, reset } = gcra.check(0, now, 1_500) else { panic!() };
        assert_eq!((remaining, reset), (4_500, 15 * SEC));
        assert_eq!(gcra.check(tat, now, 4_501), Verdict::Limited { retry_after: 10_000, reset: 15 * SEC });
    }

    #[test]
    fn settle_charges_beyond_capacity_and_refunds_down_to_now() {
        let gcra = Gcra::new(60);
        let now = 100 * SEC;
        // Charging from an old TAT counts from now.
        assert_eq!(gcra.settle(0, now, 3), now + 3 * SEC);
        assert_eq!(gcra.settle(now + 59 * SEC, now, 10), now + 69 * SEC);
        assert_eq!(gcra.remaining(now + 69 * SEC, now), 0);
        assert_eq!(gcra.settle(now + 10 * SEC, now, -4), now + 6 * SEC);
        assert_eq!(gcra.settle(now + 10 * SEC, now, -40), now);
        assert_eq!(gcra.settle(0, now, -5), now);
        assert_eq!(gcra.settle(now + SEC, now, 0), now + SEC);
    }

    #[test]
    fn arithmetic_saturates_instead_of_overflowing() {
        let gcra = Gcra::new(u64::MAX);
        assert_eq!(gcra.interval(), 1);
        assert!(matches!(gcra.check(0, u64::MAX - 5, u64::MAX), Verdict::Allowed { .. }));
        assert_eq!(Gcra::new(60).adjustment(i64::MAX), MAX_ADJUST_MICROS as i64);
        assert_eq!(Gcra::new(60).adjustment(i64::MIN), -(MAX_ADJUST_MICROS as i64));
        assert_eq!(Gcra::advance(u64::MAX, 0, i64::MAX), u64::MAX);
    }
}
