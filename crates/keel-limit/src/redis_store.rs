//! Limits shared by several keel processes: each key's TAT in Redis, changed by one Lua script.
//!
//! The script reads the server's clock (`TIME`), so keel instances whose clocks disagree still
//! share one budget; Redis 7 replicates the script's effects, not the script, so reading the time
//! inside it is safe. The script only applies [`Gcra::advance`](crate::Gcra::advance) and the
//! capacity test; the [`Decision`] is computed here by the same core from the TAT and time the
//! script read. Redis runs scripts one at a time, so concurrent checks from any number of
//! processes never overspend.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult, Script};

use crate::decision::{Decision, Quota};
use crate::error::LimitError;

/// Moves a key's TAT: the Lua twin of [`Gcra::advance`](crate::Gcra::advance), then the capacity
/// test.
///
/// KEYS[1]: the key. ARGV[1]: µs to charge from max(TAT, now) (negative: refund). ARGV[2]: the
/// most the new TAT may be ahead of now for the change to be written (-1: no bound). A TAT at or
/// before now is a full bucket and is deleted; a written TAT expires 1 ms after it passes. Returns
/// {TAT before (0 if absent), now}, in µs of the server's clock. All numbers stay below 2^53, so
/// Lua's doubles are exact.
const ADVANCE: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local cap = tonumber(ARGV[2])
local new = math.max(math.max(tat, now) + tonumber(ARGV[1]), now)
if cap < 0 or new - now <= cap then
  if new > now then
    local ttl = math.floor((new - now) / 1000) + 1
    redis.call('SET', KEYS[1], string.format('%d', new), 'PX', string.format('%d', ttl))
  else
    redis.call('DEL', KEYS[1])
  end
end
return {tat, now}
";

/// Limits shared through Redis: `prefix` + key holds the key's TAT (integer µs, server clock).
///
/// Created without waiting for Redis ([`RedisLimiter::new`]): the connection is made on first use
/// and remade after failures, so keel starts even while Redis is down. Every call is bounded by
/// the timeout; a call that cannot reach Redis in time is a [`LimitError::Store`]. A failed call
/// starts a new connection attempt, so once Redis is back the next call or two succeed again.
/// Cloning is cheap and clones share the connection.
#[derive(Debug, Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: Script,
    prefix: Box<str>,
    addr: Box<str>,
    timeout: Duration,
}

impl RedisLimiter {
    /// The timeout of a call when the configuration names none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

    /// A limiter on the Redis at `url` (`redis://[user:password@]host:port/db`) whose keys start
    /// with `prefix`. Does not wait for Redis: the connection is made lazily, and each call fails
    /// with [`LimitError::Store`] until it exists ([`RedisLimiter::ping`] tells whether it does).
    ///
    /// Fails only when the URL is malformed or when called outside a Tokio runtime.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisLimiter, LimitError> {
        let client = Client::open(url).map_err(|e| LimitError::Setup {
            problem: format!("the Redis URL is not valid ({e}); write redis://[user:password@]host:port/db"),
        })?;
        let addr = client.get_connection_info().addr().to_string().into_boxed_str();
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(LimitError::Setup {
                problem: "the Redis limiter must be created inside a Tokio runtime".to_owned(),
            });
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| LimitError::Setup { problem: format!("the Redis connection cannot be set up: {e}") })?;
        Ok(RedisLimiter { conn, script: Script::new(ADVANCE), prefix: prefix.into(), addr, timeout })
    }

    /// [`RedisLimiter::new`], then a [`RedisLimiter::ping`]: for callers that would rather not
    /// start without Redis. Returns within about the timeout either way.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<RedisLimiter, LimitError> {
        let limiter = RedisLimiter::new(url, prefix, timeout)?;
        limiter.ping().await?;
        Ok(limiter)
    }

    /// Whether Redis answers within the timeout (for start-up logs and health checks).
    pub async fn ping(&self) -> Result<(), LimitError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { redis::cmd("PING").query_async::<()>(&mut conn).await }).await
    }

    /// The prefix of every key this limiter writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Charges `cost` units to `key` if they fit, on the server's clock (see the crate doc).
    /// A cost above the quota is [`Decision::TooLarge`] without asking Redis.
    pub async fn check(&self, key: &str, quota: Quota, cost: u64) -> Result<Decision, LimitError> {
        let gcra = quota.gcra();
        if !gcra.admits(cost) {
            return Ok(Decision::TooLarge { limit: gcra.limit() });
        }
        let charge = i64::try_from(gcra.span(cost)).unwrap_or(i64::MAX);
        let capacity = i64::try_from(gcra.capacity()).unwrap_or(i64::MAX);
        let (tat, now) = self.advance(key, charge, capacity).await?;
        Ok(Decision::from_verdict(&gcra, gcra.check(tat, now, cost)))
    }

    /// Corrects a reservation of `key` by `delta` units (actual − reserved), on the server's clock.
    /// An absent key with a refund is left absent.
    pub async fn settle(&self, key: &str, quota: Quota, delta: i64) -> Result<(), LimitError> {
        if delta == 0 {
            return Ok(());
        }
        self.advance(key, quota.gcra().adjustment(delta), -1).await.map(drop)
    }

    /// Runs [`ADVANCE`] on `key`; returns the TAT it found and the server's time, in µs.
    async fn advance(&self, key: &str, adjust: i64, cap: i64) -> Result<(u64, u64), LimitError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.prepare_invoke();
        invocation.key(format!("{}{key}", self.prefix)).arg(adjust).arg(cap);
        self.bounded(async move { invocation.invoke_async(&mut conn).await }).await
    }

    /// Awaits `call` for at most the timeout, turning every failure into [`LimitError::Store`].
    async fn bounded<T>(&self, call: impl Future<Output = RedisResult<T>>) -> Result<T, LimitError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.store_error(problem(&error, self.timeout))),
            Err(_elapsed) => Err(self.store_error(no_answer(self.timeout))),
        }
    }

    fn store_error(&self, problem: String) -> LimitError {
        LimitError::Store { addr: self.addr.to_string(), problem }
    }
}

fn no_answer(timeout: Duration) -> String {
    format!("did not answer within {} ms", timeout.as_millis())
}

/// What a Redis error means to an operator.
fn problem(error: &RedisError, timeout: Duration) -> String {
    if error.is_timeout() {
        no_answer(timeout)
    } else if error.is_connection_refusal() {
        "refused the connection (is it running and listening there?)".to_owned()
    } else if error.is_io_error() || error.is_connection_dropped() {
        format!("could not be reached ({error})")
    } else {
        format!("answered with an error ({error})")
    }
}
