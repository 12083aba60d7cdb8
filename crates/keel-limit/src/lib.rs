//! Rate limits for keel: GCRA on requests and tokens per minute, kept in this process or shared
//! between keel instances through Redis.
//!
//! A limit is a [`Quota`] (`per_minute` units) on a key the caller composes, e.g.
//! `"key:agent:rpm"` for requests (cost 1 each) or `"key:agent:tpm"` for tokens (cost = the
//! request's estimated tokens). Why GCRA: one integer of state per key (no counters, no windows
//! to roll), exact retry times, and a read-modify-write small enough to run as one Redis script.
//!
//! Three layers:
//! - [`gcra`] — the algorithm on plain integers (µs), no clock, no I/O; both stores use it.
//! - [`LocalLimiter`] — this process only: sharded maps, synchronous, `now` passed in.
//! - [`RedisLimiter`] — shared by every keel process on one Redis; time is the Redis server's.
//!
//! [`Limiter`] holds either, with the same async `check`/`settle`.
//!
//! **Invariant:** a key's whole state is its TAT; an absent key and a key whose TAT has passed
//! are the same full bucket, so stores may forget such keys at any time.
//!
//! # The rule
//!
//! The emission interval is `T = 60 s / per_minute` (rounded up to a whole µs, see [`Gcra`]) and
//! the capacity is the whole minute's budget: `per_minute` units may be used at once, and they
//! come back continuously at `per_minute / 60` per second, so sustained load gets exactly
//! `per_minute` per minute. Each key keeps a TAT (theoretical arrival time): the instant its
//! bucket is full again.
//!
//! [`check`](Limiter::check)`(key, quota, cost)` at `now`: `new_tat = max(tat, now) + cost·T`.
//! - If `new_tat − now ≤ capacity` the cost is charged ([`Decision::Allowed`]): `remaining` is the
//!   whole units left after it, `reset` the time until the bucket is full again (`new_tat − now`).
//! - Otherwise nothing changes ([`Decision::Limited`]): `retry_after` is when this cost would fit
//!   (`new_tat − capacity − now`, rounded up to a whole ms), `reset` is `tat − now`.
//! - A cost above `per_minute` can never fit ([`Decision::TooLarge`]); nothing changes.
//!
//! [`settle`](Limiter::settle)`(key, quota, delta)` corrects a token reservation once the real
//! count is known, `delta = actual − reserved`:
//! - `delta > 0` charges the rest: `tat = max(tat, now) + delta·T`, even beyond the capacity (the
//!   overrun just delays later requests of the key);
//! - `delta < 0` refunds: `tat = max(now, tat − |delta|·T)` (never more than a full bucket); on an
//!   absent key there is nothing to refund and nothing is written.
//!
//! ```
//! use std::time::Duration;
//! use keel_limit::{Decision, LocalLimiter, Quota};
//!
//! let limiter = LocalLimiter::new();
//! let rpm = Quota::per_minute(60);
//! let now = 5_000_000; // µs on the limiter's clock; tests pass their own
//! for _ in 0..60 {
//!     assert!(limiter.check("key:agent:rpm", rpm, 1, now).is_allowed());
//! }
//! assert_eq!(
//!     limiter.check("key:agent:rpm", rpm, 1, now),
//!     Decision::Limited { limit: 60, retry_after: Duration::from_secs(1), reset: Duration::from_secs(60) },
//! );
//! assert!(limiter.check("key:agent:rpm", rpm, 1, now + 1_000_000).is_allowed());
//!
//! // Tokens: reserve the estimate, then settle the difference.
//! let tpm = Quota::per_minute(6_000);
//! assert!(limiter.check("key:agent:tpm", tpm, 1_000, now).is_allowed());
//! limiter.settle("key:agent:tpm", tpm, 250 - 1_000, now); // only 250 were used
//! assert!(matches!(limiter.check("key:agent:tpm", tpm, 1, now), Decision::Allowed { remaining: 5_749, .. }));
//! ```
//!
//! # Stores
//!
//! [`LocalLimiter`] never fails and allocates only for a key it has not seen; call
//! [`LocalLimiter::sweep`] every few seconds so keys idle for a minute are forgotten.
//!
//! [`RedisLimiter`] keeps `prefix + key` → TAT (integer µs on the server's clock, expiring when
//! the bucket is full) and changes it with one Lua script run by `EVALSHA` (loaded on first use).
//! Reading the server's `TIME` inside the script makes instances with skewed clocks agree. It is
//! created without waiting for Redis, so keel starts while Redis is down; every call is bounded by
//! a timeout (default [`RedisLimiter::DEFAULT_TIMEOUT`], 250 ms), and a Redis that is down, slow or
//! failing is a [`LimitError::Store`] whose message says so — the caller then admits or rejects as
//! its `[limits] on_store_error` setting says.

pub mod gcra;

mod clock;
mod decision;
mod error;
mod local;
mod redis_store;

pub use clock::Clock;
pub use decision::{Decision, Quota};
pub use error::LimitError;
pub use gcra::Gcra;
pub use local::LocalLimiter;
pub use redis_store::RedisLimiter;

/// A limiter of either kind, for callers that choose by configuration.
///
/// The local variant reads its own [`Clock`] and never fails; it does not allocate or box when
/// the key exists.
#[derive(Debug)]
pub enum Limiter {
    /// Limits of this process only.
    Local(LocalLimiter),
    /// Limits shared through Redis.
    Redis(RedisLimiter),
}

impl Limiter {
    /// Charges `cost` units to `key` if they fit (see the crate doc).
    pub async fn check(&self, key: &str, quota: Quota, cost: u64) -> Result<Decision, LimitError> {
        match self {
            Limiter::Local(local) => Ok(local.check(key, quota, cost, local.now())),
            Limiter::Redis(redis) => redis.check(key, quota, cost).await,
        }
    }

    /// Corrects a reservation of `key` by `delta` units, actual − reserved (see the crate doc).
    pub async fn settle(&self, key: &str, quota: Quota, delta: i64) -> Result<(), LimitError> {
        match self {
            Limiter::Local(local) => {
                local.settle(key, quota, delta, local.now());
                Ok(())
            }
            Limiter::Redis(redis) => redis.settle(key, quota, delta).await,
        }
    }

    /// Keys held locally (`None` for Redis, which expires its own keys).
    pub fn local_len(&self) -> Option<usize> {
        match self {
            Limiter::Local(local) => Some(local.len()),
            Limiter::Redis(_) => None,
        }
    }
}
