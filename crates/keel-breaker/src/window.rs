//! A sliding window of call counts: a ring of fixed buckets with running totals.
//!
//! Adding a call is O(1) (amortized; a jump over the whole window clears the ring once), reading
//! the totals is O(1), and memory is fixed. The window slides in steps of one bucket, so it covers
//! between `(buckets - 1) / buckets` and all of its nominal length.

use crate::clock::Nanos;
use crate::config::WINDOW_BUCKETS;

/// Counts of one bucket, or of a whole window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Calls that say something about the target (ignored classes excluded).
    pub(crate) calls: u32,
    /// Calls that counted as failures.
    pub(crate) failures: u32,
    /// Calls slower than the slow-call duration.
    pub(crate) slow: u32,
    /// Good answers (for the success ratio).
    pub(crate) good: u32,
    /// Tokens reported.
    pub(crate) tokens: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failures = self.failures.saturating_add(other.failures);
        self.slow = self.slow.saturating_add(other.slow);
        self.good = self.good.saturating_add(other.good);
        self.tokens = self.tokens.saturating_add(other.tokens);
    }

    fn sub(&mut self, other: Counts) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.failures = self.failures.saturating_sub(other.failures);
        self.slow = self.slow.saturating_sub(other.slow);
        self.good = self.good.saturating_sub(other.good);
        self.tokens = self.tokens.saturating_sub(other.tokens);
    }

    pub(crate) fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

/// The ring. `head` is the index (time / width) of the newest bucket; slot `i % N` holds index `i`.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    width: u64,
    head: u64,
    /// Where the head bucket ends: readings before it need no division.
    head_end: u64,
    /// `head`'s slot.
    head_slot: usize,
    buckets: [Counts; WINDOW_BUCKETS],
    total: Counts,
}

const N: u64 = WINDOW_BUCKETS as u64;

impl Ring {
    /// A ring whose buckets are `width` nanoseconds wide (at least 1).
    pub(crate) fn new(width: u64) -> Ring {
        Ring {
            width: width.max(1),
            head: 0,
            head_end: width.max(1),
            head_slot: 0,
            buckets: [Counts::default(); WINDOW_BUCKETS],
            total: Counts::default(),
        }
    }

    fn slot(index: u64) -> usize {
        (index % N) as usize
    }

    /// Moves the head to `now`, expiring buckets that fell out of the window. A reading older
    /// than the head (threads racing to the lock) lands in the head bucket.
    fn advance(&mut self, now: Nanos) -> usize {
        if now.0 < self.head_end {
            return self.head_slot;
        }
        let index = now.0 / self.width;
        if index > self.head {
            let gap = index - self.head;
            if gap >= N {
                self.buckets = [Counts::default(); WINDOW_BUCKETS];
                self.total = Counts::default();
            } else {
                for step in 1..=gap {
                    let slot = Ring::slot(self.head + step);
                    self.total.sub(self.buckets[slot]);
                    self.buckets[slot] = Counts::default();
                }
            }
            self.head = index;
            self.head_end = index.saturating_add(1).saturating_mul(self.width);
            self.head_slot = Ring::slot(index);
        }
        self.head_slot
    }

    /// Adds `counts` at `now` and returns the totals of the window ending at `now`.
    pub(crate) fn add(&mut self, now: Nanos, counts: Counts) -> Counts {
        let slot = self.advance(now);
        self.buckets[slot].add(counts);
        self.total.add(counts);
        self.total
    }

    /// The totals of the window ending at `now`, without changing the ring.
    pub(crate) fn totals_at(&self, now: Nanos) -> Counts {
        let index = now.0 / self.width;
        if index <= self.head {
            return self.total;
        }
        let gap = index - self.head;
        if gap >= N {
            return Counts::default();
        }
        let mut total = self.total;
        for step in 1..=gap {
            total.sub(self.buckets[Ring::slot(self.head + step)]);
        }
        total
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.buckets = [Counts::default(); WINDOW_BUCKETS];
        self.total = Counts::default();
    }

    /// Whether the ring holds no counts at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.total.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(failed: bool) -> Counts {
        Counts { calls: 1, failures: u32::from(failed), good: u32::from(!failed), ..Counts::default() }
    }

    #[test]
    fn counts_slide_out_bucket_by_bucket() {
        // 10 buckets of 1 ns: a 10 ns window.
        let mut ring = Ring::new(1);
        for t in 0..10 {
            ring.add(Nanos(t), call(t % 2 == 0));
        }
        assert_eq!(ring.totals_at(Nanos(9)).calls, 10);
        assert_eq!(ring.totals_at(Nanos(9)).failures, 5);
        // At t = 10 the bucket of t = 0 (a failure) has left.
        assert_eq!(ring.totals_at(Nanos(10)).calls, 9);
        assert_eq!(ring.totals_at(Nanos(10)).failures, 4);
        let total = ring.add(Nanos(12), call(false));
        assert_eq!(total.calls, 8);
        assert_eq!(total.failures, 3);
        assert_eq!(ring.totals_at(Nanos(12)), total);
    }

    #[test]
    fn a_long_silence_empties_the_window() {
        let mut ring = Ring::new(1_000);
        for t in 0..50 {
            ring.add(Nanos(t * 100), call(true));
        }
        assert_eq!(ring.totals_at(Nanos(4_999)).calls, 50);
        assert!(ring.totals_at(Nanos(1_000_000)).is_zero());
        let total = ring.add(Nanos(1_000_000), call(false));
        assert_eq!(total, call(false));
    }

    #[test]
    fn late_readings_land_in_the_newest_bucket() {
        let mut ring = Ring::new(10);
        ring.add(Nanos(500), call(false));
        let total = ring.add(Nanos(3), call(true));
        assert_eq!(total.calls, 2);
        assert_eq!(ring.totals_at(Nanos(599)).calls, 2);
        assert_eq!(ring.totals_at(Nanos(600)).calls, 0);
    }

    #[test]
    fn matches_a_naive_window() {
        // Deterministic pseudo-random walk compared against recounting from a log.
        let width = 7;
        let mut ring = Ring::new(width);
        let mut log: Vec<(u64, bool)> = Vec::new();
        let mut t = 0u64;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            t += seed % 20;
            let failed = seed.is_multiple_of(3);
            ring.add(Nanos(t), call(failed));
            log.push((t, failed));
            let head = t / width;
            let oldest = head.saturating_sub(N - 1);
            let expected: Vec<_> = log.iter().filter(|(at, _)| at / width >= oldest).collect();
            let totals = ring.totals_at(Nanos(t));
            assert_eq!(totals.calls as usize, expected.len());
            assert_eq!(totals.failures as usize, expected.iter().filter(|(_, f)| *f).count());
        }
    }

    #[test]
    fn clear_empties() {
        let mut ring = Ring::new(5);
        ring.add(Nanos(3), call(true));
        assert!(!ring.is_empty());
        ring.clear();
        assert!(ring.is_empty());
        assert!(ring.totals_at(Nanos(4)).is_zero());
    }
}
