//! The Redis limiter against a real Redis, plus the failures that need none.
//!
//! Redis is expected on 127.0.0.1:6379, or at `KEEL_TEST_REDIS_URL`. Each test gets its own key
//! prefix, whose keys are deleted afterwards (also when the test fails). When Redis is
//! unreachable the test prints a note and passes — unless `KEEL_REQUIRE_SERVICES=1`, which makes it
//! fail. The unreachable-server tests need no Redis and always run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use keel_limit::{Decision, LimitError, Limiter, Quota, RedisLimiter};
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Generous, so a loaded test machine does not turn into false failures.
const TIMEOUT: Duration = Duration::from_secs(2);
const RPM: Quota = Quota::per_minute(60);

fn services_required() -> bool {
    std::env::var("KEEL_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

fn redis_url() -> String {
    std::env::var("KEEL_TEST_REDIS_URL").unwrap_or_else(|_| REDIS_URL.to_owned())
}

/// What a case gets: a limiter on a fresh prefix, and the means to make more and to look inside.
struct Ctx {
    url: String,
    prefix: String,
    limiter: RedisLimiter,
}

impl Ctx {
    /// A second limiter, as another keel process would have, on the same prefix.
    fn another(&self) -> RedisLimiter {
        RedisLimiter::new(&self.url, &self.prefix, TIMEOUT).unwrap()
    }

    /// A plain connection, to look at the stored keys.
    async fn raw(&self) -> MultiplexedConnection {
        redis::Client::open(self.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    async fn exists(&self, key: &str) -> bool {
        redis::cmd("EXISTS").arg(format!("{}{key}", self.prefix)).query_async(&mut self.raw().await).await.unwrap()
    }

    async fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL").arg(format!("{}{key}", self.prefix)).query_async(&mut self.raw().await).await.unwrap()
    }
}

/// Runs `case` on a fresh prefix, then deletes the prefix's keys (also on failure).
async fn run<F, Fut>(name: &str, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let url = redis_url();
    let prefix = format!("keeltest:limit:{}:", uuid::Uuid::now_v7().simple());
    let limiter = match RedisLimiter::connect(&url, &prefix, TIMEOUT).await {
        Ok(limiter) => limiter,
        Err(error) if !services_required() => {
            eprintln!("SKIP {name}: {error} — set KEEL_REQUIRE_SERVICES=1 to fail instead");
            return;
        }
        Err(error) => panic!("cannot reach the test Redis: {error}"),
    };
    let outcome =
        AssertUnwindSafe(case(Ctx { url: url.clone(), prefix: prefix.clone(), limiter })).catch_unwind().await;
    remove_prefix(&url, &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn remove_prefix(url: &str, prefix: &str) {
    let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    }
}

fn remaining(decision: Decision) -> u64 {
    match decision {
        Decision::Allowed { remaining, .. } => remaining,
        other => panic!("expected allowed, got {other:?}"),
    }
}

fn retry_after(decision: Decision) -> Duration {
    match decision {
        Decision::Limited { retry_after, .. } => retry_after,
        other => panic!("expected limited, got {other:?}"),
    }
}

/// Asserts `value` lies in `low..=high`.
fn assert_within(what: &str, value: Duration, low: Duration, high: Duration) {
    assert!(low <= value && value <= high, "{what}: {value:?} not within {low:?}..={high:?}");
}

macro_rules! redis_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                run(stringify!($case), cases::$case).await;
            }
        )*
    };
}

redis_tests!(
    a_burst_of_the_budget_then_limited_with_exact_values,
    too_large_changes_nothing,
    retry_after_is_exact_within_a_few_ms,
    settle_charges_and_refunds,
    settle_beyond_the_capacity_delays_later_requests,
    keys_expire_when_their_bucket_is_full,
    two_limiters_on_one_prefix_share_one_budget,
    concurrent_checks_across_instances_admit_exactly_the_budget,
    the_limiter_enum_delegates_to_redis,
    a_limiter_made_while_redis_is_down_works_once_it_is_up,
    a_foreign_value_under_the_key_is_a_store_error,
);

mod cases {
    use super::*;

    pub(crate) async fn a_burst_of_the_budget_then_limited_with_exact_values(ctx: Ctx) {
        let started = Instant::now();
        for used in 1..=60u64 {
            let decision = ctx.limiter.check("rpm", RPM, 1).await.unwrap();
            let Decision::Allowed { limit, remaining, reset } = decision else { panic!("{used}: {decision:?}") };
            assert_eq!((limit, remaining), (60, 60 - used));
            let full = Duration::from_secs(used);
            assert_within("reset", reset, full.saturating_sub(started.elapsed()), full);
        }
        let before = Instant::now();
        let decision = ctx.limiter.check("rpm", RPM, 1).await.unwrap();
        let since_start = started.elapsed();
        let Decision::Limited { limit, retry_after, reset } = decision else { panic!("{decision:?}") };
        assert_eq!(limit, 60);
        // The 61st fits once the first unit has come back: 1 s after the burst began.
        assert_within("retry_after", retry_after, Duration::from_secs(1) - since_start, Duration::from_secs(1));
        assert_within("reset", reset, Duration::from_secs(60) - since_start, Duration::from_secs(60));
        assert!(before.elapsed() < TIMEOUT);
    }

    pub(crate) async fn too_large_changes_nothing(ctx: Ctx) {
        assert_eq!(ctx.limiter.check("tpm", RPM, 61).await.unwrap(), Decision::TooLarge { limit: 60 });
        assert!(!ctx.exists("tpm").await);
        assert_eq!(remaining(ctx.limiter.check("tpm", RPM, 60).await.unwrap()), 0);
        assert!(!ctx.limiter.check("tpm", RPM, 1).await.unwrap().is_allowed());
        assert_eq!(ctx.limiter.check("tpm", RPM, 61).await.unwrap(), Decision::TooLarge { limit: 60 });
    }

    pub(crate) async fn retry_after_is_exact_within_a_few_ms(ctx: Ctx) {
        assert_eq!(remaining(ctx.limiter.check("k", RPM, 60).await.unwrap()), 0);
        // Two limited checks: the second's retry_after is the first's minus the time between them,
        // bracketed by when each call was sent and answered (±1 ms of rounding).
        let first_sent = Instant::now();
        let first = retry_after(ctx.limiter.check("k", RPM, 1).await.unwrap());
        let first_answered = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second_sent = Instant::now();
        let second = retry_after(ctx.limiter.check("k", RPM, 1).await.unwrap());
        let second_answered = Instant::now();
        let ms = Duration::from_millis(1);
        let low = first.saturating_sub(second_answered - first_sent).saturating_sub(ms);
        let high = first.saturating_sub(second_sent - first_answered) + ms;
        assert_within("second retry_after", second, low, high);
        // Waiting exactly that long is enough.
        tokio::time::sleep(second).await;
        assert_eq!(remaining(ctx.limiter.check("k", RPM, 1).await.unwrap()), 0);
    }

    pub(crate) async fn settle_charges_and_refunds(ctx: Ctx) {
        // 60 per minute: one unit per second, so the few ms this takes refill nothing.
        assert_eq!(remaining(ctx.limiter.check("t", RPM, 10).await.unwrap()), 50);
        ctx.limiter.settle("t", RPM, 20).await.unwrap(); // 30 used, not 10
        assert_eq!(remaining(ctx.limiter.check("t", RPM, 1).await.unwrap()), 29);
        ctx.limiter.settle("t", RPM, -25).await.unwrap();
        assert_eq!(remaining(ctx.limiter.check("t", RPM, 1).await.unwrap()), 53);
        // A refund bigger than the backlog leaves a full bucket: the key is gone.
        ctx.limiter.settle("t", RPM, -1_000).await.unwrap();
        assert!(!ctx.exists("t").await);
        // A refund on an absent key is nothing, and writes nothing.
        ctx.limiter.settle("absent", RPM, -5).await.unwrap();
        assert!(!ctx.exists("absent").await);
        ctx.limiter.settle("absent", RPM, 0).await.unwrap();
        assert!(!ctx.exists("absent").await);
    }

    pub(crate) async fn settle_beyond_the_capacity_delays_later_requests(ctx: Ctx) {
        ctx.limiter.settle("over", RPM, 120).await.unwrap();
        let wait = retry_after(ctx.limiter.check("over", RPM, 1).await.unwrap());
        // 121 units owed, 60 fit: the next one fits after 61 s.
        assert_within("retry_after", wait, Duration::from_millis(60_500), Duration::from_secs(61));
        let ttl = ctx.pttl("over").await;
        assert!((119_000..=120_001).contains(&ttl), "PTTL {ttl}");
        // An absurd overrun is clamped (about a year), not an overflow in Lua.
        ctx.limiter.settle("absurd", RPM, i64::MAX).await.unwrap();
        let wait = retry_after(ctx.limiter.check("absurd", RPM, 1).await.unwrap());
        let clamped = Duration::from_micros(keel_limit::gcra::MAX_ADJUST_MICROS);
        assert_within("retry_after", wait, clamped - Duration::from_secs(60), clamped);
        assert!(ctx.pttl("absurd").await > 1 << 34, "expires with its TAT");
    }

    pub(crate) async fn keys_expire_when_their_bucket_is_full(ctx: Ctx) {
        let Decision::Allowed { reset, .. } = ctx.limiter.check("e", RPM, 30).await.unwrap() else { panic!() };
        let ttl = ctx.pttl("e").await;
        let reset_ms = i64::try_from(reset.as_millis()).unwrap();
        assert!((reset_ms - 500..=reset_ms + 1).contains(&ttl), "PTTL {ttl}, reset {reset:?}");
        let stored: String =
            redis::cmd("GET").arg(format!("{}e", ctx.prefix)).query_async(&mut ctx.raw().await).await.unwrap();
        assert!(stored.parse::<u64>().is_ok(), "TAT stored as integer µs, got {stored:?}");
        assert_eq!(ctx.limiter.prefix(), ctx.prefix);
    }

    pub(crate) async fn two_limiters_on_one_prefix_share_one_budget(ctx: Ctx) {
        let other = ctx.another();
        for i in 0..60 {
            let limiter = if i % 2 == 0 { &ctx.limiter } else { &other };
            assert!(limiter.check("shared", RPM, 1).await.unwrap().is_allowed(), "check {i}");
        }
        assert!(!ctx.limiter.check("shared", RPM, 1).await.unwrap().is_allowed());
        assert!(!other.check("shared", RPM, 1).await.unwrap().is_allowed());
        // Another prefix is another budget.
        let elsewhere = RedisLimiter::new(&ctx.url, &format!("{}other:", ctx.prefix), TIMEOUT).unwrap();
        assert_eq!(remaining(elsewhere.check("shared", RPM, 1).await.unwrap()), 59);
    }

    pub(crate) async fn concurrent_checks_across_instances_admit_exactly_the_budget(ctx: Ctx) {
        let quota = Quota::per_minute(50); // 1.2 s per unit
        let limiters = [ctx.limiter.clone(), ctx.another()];
        let started = Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let limiter = limiters[i % 2].clone();
                tokio::spawn(async move { limiter.check("race", quota, 1).await.unwrap().is_allowed() })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += u32::from(task.await.unwrap());
        }
        let refilled = u32::try_from(started.elapsed().as_millis() / 1_200).unwrap();
        assert!((50..=50 + refilled).contains(&admitted), "admitted {admitted}, refilled {refilled}");
    }

    pub(crate) async fn the_limiter_enum_delegates_to_redis(ctx: Ctx) {
        let limiter = Limiter::Redis(ctx.another());
        assert_eq!(limiter.local_len(), None);
        assert_eq!(remaining(limiter.check("enum", RPM, 59).await.unwrap()), 1);
        limiter.settle("enum", RPM, -9).await.unwrap();
        assert_eq!(remaining(ctx.limiter.check("enum", RPM, 1).await.unwrap()), 9);
    }

    pub(crate) async fn a_limiter_made_while_redis_is_down_works_once_it_is_up(ctx: Ctx) {
        let redis_addr = redis::Client::open(ctx.url.as_str()).unwrap().get_connection_info().addr().to_string();
        if !ctx.url.contains(&redis_addr) {
            eprintln!("SKIP: cannot put a proxy into {}", ctx.url);
            return;
        }
        // A port where nothing listens yet.
        let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let url = ctx.url.replace(&redis_addr, &port.to_string());
        let limiter = RedisLimiter::new(&url, &ctx.prefix, Duration::from_millis(250)).unwrap();
        assert!(limiter.check("late", RPM, 1).await.unwrap_err().is_store());
        // Redis "comes up" on that port: a proxy to the real one.
        let listener = tokio::net::TcpListener::bind(port).await.unwrap();
        let proxy = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut server = tokio::net::TcpStream::connect(&redis_addr).await.unwrap();
                tokio::spawn(async move { tokio::io::copy_bidirectional(&mut client, &mut server).await });
            }
        });
        let mut outcome = limiter.check("late", RPM, 1).await;
        for _ in 0..10 {
            if outcome.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            outcome = limiter.check("late", RPM, 1).await;
        }
        assert_eq!(remaining(outcome.unwrap()), 59);
        proxy.abort();
    }

    pub(crate) async fn a_foreign_value_under_the_key_is_a_store_error(ctx: Ctx) {
        let _: () = redis::cmd("SET")
            .arg(format!("{}foreign", ctx.prefix))
            .arg("not a number")
            .query_async(&mut ctx.raw().await)
            .await
            .unwrap();
        let (addr, problem) = store_error(ctx.limiter.check("foreign", RPM, 1).await);
        assert!(ctx.url.contains(&addr), "{addr}");
        assert!(problem.starts_with("answered with an error ("), "{problem}");
    }
}

// ---- failures that need no Redis ----

fn store_error(result: Result<impl std::fmt::Debug, LimitError>) -> (String, String) {
    match result {
        Err(LimitError::Store { addr, problem }) => (addr, problem),
        other => panic!("expected a store error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_a_store_error_within_the_timeout() {
    let timeout = Duration::from_millis(200);
    // Nothing listens on port 1: created anyway (keel starts), every call fails fast.
    let limiter = RedisLimiter::new("redis://127.0.0.1:1/0", "keeltest:", timeout).unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let error = limiter.check("k", RPM, 1).await.unwrap_err();
        assert!(started.elapsed() < timeout + Duration::from_millis(500), "took {:?}", started.elapsed());
        assert!(error.is_store());
        let message = error.to_string();
        assert!(message.starts_with("Redis at 127.0.0.1:1 "), "{message}");
        assert!(message.ends_with("the limit is applied as `[limits] on_store_error` says"), "{message}");
    }
    let (addr, problem) = store_error(limiter.settle("k", RPM, 3).await);
    assert_eq!(addr, "127.0.0.1:1");
    assert!(problem.contains("refused") || problem.contains("did not answer"), "{problem}");
    store_error(limiter.ping().await);
    store_error(RedisLimiter::connect("redis://127.0.0.1:1/0", "keeltest:", timeout).await);
    // A cost that can never fit needs no store.
    assert_eq!(limiter.check("k", RPM, 61).await.unwrap(), Decision::TooLarge { limit: 60 });
}

#[tokio::test]
async fn a_silent_server_is_a_timeout_not_a_hang() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(150);
    let limiter = RedisLimiter::new(&format!("redis://{addr}/0"), "keeltest:", timeout).unwrap();
    let started = Instant::now();
    let (_, problem) = store_error(limiter.check("k", RPM, 1).await);
    let took = started.elapsed();
    assert_eq!(problem, "did not answer within 150 ms");
    assert!(took >= timeout && took < Duration::from_secs(1), "took {took:?}");
    let (_, problem) = store_error(Limiter::Redis(limiter).settle("k", RPM, -1).await);
    assert_eq!(problem, "did not answer within 150 ms");
    holder.abort();
}

#[tokio::test]
async fn a_malformed_url_is_a_setup_error() {
    let error = RedisLimiter::new("http://127.0.0.1:6379", "keeltest:", TIMEOUT).unwrap_err();
    assert!(matches!(error, LimitError::Setup { .. }), "{error:?}");
    assert!(error.to_string().contains("redis://"), "{error}");
    assert!(!error.is_store());
}

#[test]
fn outside_a_runtime_is_a_setup_error_not_a_panic() {
    let error = RedisLimiter::new(REDIS_URL, "keeltest:", TIMEOUT).unwrap_err();
    assert!(error.to_string().contains("Tokio runtime"), "{error}");
}
