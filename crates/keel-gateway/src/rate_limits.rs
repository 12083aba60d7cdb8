//! Rate limiting's shared state: the limiter (in this process or on Redis), the `[limits]`
//! defaults and what to do when the shared store cannot be reached. The request-path stage that
//! uses it is `stages::limit`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use keel_limit::{Decision, LimitError, Limiter, LocalLimiter, Quota, RedisLimiter};
use keel_telemetry::names;

use crate::config::Config;
use crate::config::raw::OnStoreError;
use crate::error::ProxyError;

/// How often local limiter state idle for a minute is forgotten.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The gateway's rate limiter with the `[limits]` defaults.
pub(crate) struct RateLimits {
    limiter: Limiter,
    /// `[limits] requests_per_minute` (0: none).
    pub(crate) requests_per_minute: u64,
    /// `[limits] tokens_per_minute` (0: none).
    pub(crate) tokens_per_minute: u64,
    /// Some `[[route]]` has limits of its own.
    pub(crate) routes_limited: bool,
    on_store_error: OnStoreError,
    /// When a store failure was last logged (seconds since the Unix epoch): one line per 10 s.
    last_store_log: AtomicU64,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("requests_per_minute", &self.requests_per_minute)
            .field("tokens_per_minute", &self.tokens_per_minute)
            .field("shared", &matches!(self.limiter, Limiter::Redis(_)))
            .finish_non_exhaustive()
    }
}

impl RateLimits {
    /// The limiter `[limits]` describes: in this process, or on Redis (connected on first use).
    pub(crate) fn from_config(config: &Config) -> Result<RateLimits, LimitError> {
        let limits = &config.limits;
        let limiter = match &limits.store {
            Some(url) => Limiter::Redis(RedisLimiter::new(url, "keel:limit:", RedisLimiter::DEFAULT_TIMEOUT)?),
            None => Limiter::Local(LocalLimiter::new()),
        };
        for limit in ["requests", "tokens", "too_large"] {
            metrics::counter!(names::RATE_LIMITED_TOTAL, "limit" => limit).increment(0);
        }
        for outcome in ["allowed", "refused"] {
            metrics::counter!(names::RATE_LIMIT_STORE_ERRORS_TOTAL, "outcome" => outcome).increment(0);
        }
        Ok(RateLimits {
            limiter,
            requests_per_minute: limits.requests_per_minute,
            tokens_per_minute: limits.tokens_per_minute,
            routes_limited: config.routes.iter().any(|r| r.requests_per_minute > 0 || r.tokens_per_minute > 0),
            on_store_error: limits.on_store_error,
            last_store_log: AtomicU64::new(0),
        })
    }

    /// The `[limits]` defaults for `/keel/status`: per minute, where the state lives, and what a
    /// store failure does.
    pub(crate) fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "routes_limited": self.routes_limited,
            "shared": matches!(self.limiter, Limiter::Redis(_)),
            "on_store_error": match self.on_store_error {
                OnStoreError::Open => "open",
                OnStoreError::Closed => "closed",
            },
        })
    }

    /// Forgets local state idle for a minute, every [`SWEEP_INTERVAL`], until dropped.
    pub(crate) async fn sweep(self: Arc<RateLimits>) {
        let Limiter::Local(local) = &self.limiter else {
            return;
        };
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            local.sweep(local.now());
        }
    }

    /// One check; a store failure is handled as `on_store_error` says (`Ok(None)`: let through).
    pub(crate) async fn check(&self, key: &str, quota: Quota, cost: u64) -> Result<Option<Decision>, ProxyError> {
        match self.limiter.check(key, quota, cost).await {
            Ok(decision) => Ok(Some(decision)),
            Err(err) => self.store_failed(err).map(|()| None),
        }
    }

    /// Counts and logs (once per 10 s) a store failure; `Err` when `on_store_error = "closed"`.
    fn store_failed(&self, err: LimitError) -> Result<(), ProxyError> {
        let open = self.on_store_error == OnStoreError::Open;
        let outcome = if open { "allowed" } else { "refused" };
        metrics::counter!(names::RATE_LIMIT_STORE_ERRORS_TOTAL, "outcome" => outcome).increment(1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.last_store_log.load(Relaxed);
        if now >= last + 10 && self.last_store_log.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            if open {
                tracing::warn!(error = %err, "rate limits cannot be checked: their store cannot be reached; requests pass unlimited until it answers ([limits] on_store_error = \"open\"). Start Redis again");
            } else {
                tracing::error!(error = %err, "rate limits cannot be checked: their store cannot be reached; requests get 503 until it answers ([limits] on_store_error = \"closed\"). Start Redis again, or set on_store_error = \"open\"");
            }
        }
        if open { Ok(()) } else { Err(ProxyError::LimitStoreDown { problem: err.to_string() }) }
    }

    /// Corrects a reservation once the real count is known (on a task: the answer is gone).
    pub(crate) fn settle(self: &Arc<RateLimits>, key: String, quota: Quota, delta: i64) {
        if delta == 0 {
            return;
        }
        let limits = Arc::clone(self);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = limits.limiter.settle(&key, quota, delta).await {
                    tracing::debug!(error = %err, "a token reservation could not be settled");
                }
            });
        }
    }
}
