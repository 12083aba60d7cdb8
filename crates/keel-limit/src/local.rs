//! Limits kept in this process: a TAT per key in sharded hash maps.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::decision::{Decision, Quota};

/// Shards of the key map; a power of two well above the number of serving threads keeps lock
/// contention low.
const SHARDS: usize = 16;

type Shard = Mutex<HashMap<Box<str>, u64>>;

/// Rate limits of this process only: each key's TAT in one of 16 mutex-guarded maps.
///
/// Every method is synchronous and takes `now` in µs on [`LocalLimiter::clock`] (tests pass their
/// own readings). Checking or settling a key that exists allocates nothing; a new key allocates its
/// name once. Keys whose bucket is full carry no information, so [`LocalLimiter::sweep`] drops
/// them: memory stays bounded by the keys used within the last minute (plus any still paying off a
/// settled overrun).
#[derive(Debug)]
pub struct LocalLimiter {
    shards: Box<[Shard]>,
    hasher: RandomState,
    clock: Clock,
}

impl LocalLimiter {
    /// An empty limiter with its own [`Clock`] starting now.
    pub fn new() -> LocalLimiter {
        LocalLimiter::with_clock(Clock::new())
    }

    /// An empty limiter whose [`LocalLimiter::now`] reads `clock`.
    pub fn with_clock(clock: Clock) -> LocalLimiter {
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        LocalLimiter { shards, hasher: RandomState::new(), clock }
    }

    /// The clock `now` readings are expected from.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The current time in µs on [`LocalLimiter::clock`].
    pub fn now(&self) -> u64 {
        self.clock.now_micros()
    }

    /// Charges `cost` units to `key` at `now` if they fit (see the crate doc for the rule).
    pub fn check(&self, key: &str, quota: Quota, cost: u64, now: u64) -> Decision {
        let gcra = quota.gcra();
        let verdict = self.update(key, now, |tat| {
            let verdict = gcra.check(tat, now, cost);
            (verdict.new_tat().unwrap_or(tat), verdict)
        });
        Decision::from_verdict(&gcra, verdict)
    }

    /// Corrects a reservation of `key` by `delta` units (actual − reserved) at `now`.
    pub fn settle(&self, key: &str, quota: Quota, delta: i64, now: u64) {
        if delta == 0 {
            return;
        }
        let gcra = quota.gcra();
        self.update(key, now, |tat| (gcra.settle(tat, now, delta), ()));
    }

    /// Drops every key whose bucket is full at `now` (TAT ≤ `now`); returns how many were dropped.
    /// Call it periodically (every few seconds is plenty).
    pub fn sweep(&self, now: u64) -> usize {
        self.shards.iter().map(|shard| sweep_shard(&mut shard.lock(), now)).sum()
    }

    /// Keys currently held (for a gauge).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|shard| shard.lock().is_empty())
    }

    /// Runs `step` on `key`'s TAT (`0` when absent) under its shard's lock and stores the TAT it
    /// returns; a TAT at or before `now` is a full bucket, kept as no entry at all.
    fn update<R>(&self, key: &str, now: u64, step: impl FnOnce(u64) -> (u64, R)) -> R {
        let mut map = self.shard(key).lock();
        match map.get_mut(key) {
            Some(slot) => {
                let (tat, result) = step(*slot);
                *slot = tat;
                if tat <= now {
                    map.remove(key);
                }
                result
            }
            None => {
                let (tat, result) = step(0);
                if tat > now {
                    map.insert(key.into(), tat);
                }
                result
            }
        }
    }

    fn shard(&self, key: &str) -> &Shard {
        // The modulo keeps the index in range whatever the hash; the cast only drops high bits.
        #[allow(clippy::cast_possible_truncation, reason = "any bits of the hash choose a shard")]
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[index]
    }
}

impl Default for LocalLimiter {
    fn default() -> LocalLimiter {
        LocalLimiter::new()
    }
}

fn sweep_shard(map: &mut HashMap<Box<str>, u64>, now: u64) -> usize {
    let before = map.len();
    map.retain(|_, tat| *tat > now);
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
    before - map.len()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SEC: u64 = 1_000_000;
    const RPM: Quota = Quota::per_minute(60);

    fn allowed(decision: Decision) -> u64 {
        match decision {
            Decision::Allowed { remaining, .. } => remaining,
            other => panic!("expected allowed, got {other:?}"),
        }
    }

    #[test]
    fn a_burst_of_the_whole_minute_then_one_per_interval() {
        let limiter = LocalLimiter::new();
        let now = 10 * SEC;
        for expected in (0..60).rev() {
            assert_eq!(allowed(limiter.check("k", RPM, 1, now)), expected);
        }
        assert_eq!(
            limiter.check("k", RPM, 1, now),
            Decision::Limited { limit: 60, retry_after: Duration::from_secs(1), reset: Duration::from_secs(60) }
        );
        assert!(!limiter.check("k", RPM, 1, now + SEC - 1).is_allowed());
        assert_eq!(allowed(limiter.check("k", RPM, 1, now + SEC)), 0);
        // A minute of quiet refills everything.
        assert_eq!(allowed(limiter.check("k", RPM, 1, now + 61 * SEC)), 59);
    }

    #[test]
    fn keys_are_independent() {
        let limiter = LocalLimiter::new();
        assert!(limiter.check("a", RPM, 60, SEC).is_allowed());
        assert!(!limiter.check("a", RPM, 1, SEC).is_allowed());
        assert_eq!(allowed(limiter.check("b", RPM, 1, SEC)), 59);
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn too_large_and_limited_change_nothing() {
        let limiter = LocalLimiter::new();
        assert_eq!(limiter.check("k", RPM, 61, SEC), Decision::TooLarge { limit: 60 });
        assert!(limiter.is_empty());
        assert!(limiter.check("k", RPM, 50, SEC).is_allowed());
        assert!(!limiter.check("k", RPM, 11, SEC).is_allowed());
        assert_eq!(allowed(limiter.check("k", RPM, 10, SEC)), 0);
    }

    #[test]
    fn settle_charges_and_refunds() {
        let limiter = LocalLimiter::new();
        let tpm = Quota::per_minute(6_000); // 10 ms per token
        let now = SEC;
        assert_eq!(allowed(limiter.check("t", tpm, 1_000, now)), 5_000);
        limiter.settle("t", tpm, 2_000, now); // used 3 000, not 1 000
        assert_eq!(allowed(limiter.check("t", tpm, 1, now)), 2_999);
        limiter.settle("t", tpm, -1_500, now);
        assert_eq!(allowed(limiter.check("t", tpm, 1, now)), 4_498);
        // Overrun beyond the capacity delays later requests.
        limiter.settle("t", tpm, 10_000, now);
        let Decision::Limited { retry_after, .. } = limiter.check("t", tpm, 1, now) else { panic!() };
        assert_eq!(retry_after, Duration::from_micros((1_502 + 10_000 + 1 - 6_000) * 10_000));
        // A refund larger than the backlog empties the bucket and forgets the key.
        limiter.settle("t", tpm, -1_000_000, now);
        assert!(limiter.is_empty());
        // A refund on an absent key is nothing; a charge creates it.
        limiter.settle("x", tpm, -5, now);
        assert!(limiter.is_empty());
        limiter.settle("x", tpm, 5, now);
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn sweep_drops_full_buckets_only() {
        let limiter = LocalLimiter::new();
        for i in 0..1_000 {
            let _ = limiter.check(&format!("key-{i}"), RPM, 1 + i % 2, 0);
        }
        assert_eq!(limiter.len(), 1_000);
        assert_eq!(limiter.sweep(SEC - 1), 0);
        assert_eq!(limiter.sweep(SEC), 500);
        assert_eq!(limiter.len(), 500);
        assert_eq!(limiter.sweep(2 * SEC), 500);
        assert!(limiter.is_empty());
        assert_eq!(allowed(limiter.check("key-1", RPM, 1, 2 * SEC)), 59);
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_budget() {
        let limiter = LocalLimiter::new();
        let quota = Quota::per_minute(1_000);
        let admitted: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| (0..500).filter(|_| limiter.check("shared", quota, 1, SEC).is_allowed()).count())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap() as u64).sum()
        });
        assert_eq!(admitted, 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn now_reads_the_limiters_clock() {
        let limiter = LocalLimiter::new();
        assert!(limiter.check("k", RPM, 60, limiter.now()).is_allowed());
        assert!(!limiter.check("k", RPM, 1, limiter.now()).is_allowed());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check("k", RPM, 1, limiter.now()).is_allowed());
        assert_eq!(limiter.clock().now_micros(), SEC);
    }
}
