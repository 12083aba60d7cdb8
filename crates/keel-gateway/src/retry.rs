//! Retries: budgeted, jittered rounds over a route's targets, within the request's deadline.
//!
//! Why a budget and not just "max N": when a server is struggling every client retries at once,
//! multiplying its load exactly when it can least take it. The budget lets retries add at most
//! `budget_ratio` of the recent request rate (plus a small floor), measured over a sliding 10 s
//! window, whatever each request's own retry allowance says.

use std::time::{Duration, Instant};

use http::HeaderMap;
use parking_lot::Mutex;
use rand::Rng;

/// Header a client sends to shorten its request's deadline (`30s`, `1500ms`, or seconds).
pub(crate) const KEEL_DEADLINE: http::HeaderName = http::HeaderName::from_static("x-keel-deadline");

/// Seconds the budget remembers.
const WINDOW_SECONDS: usize = 10;

/// The retry budget shared by every serving thread.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    started: Instant,
    /// Per second of the window: (second number, requests, retries).
    buckets: Mutex<[(u64, u64, u64); WINDOW_SECONDS]>,
}

impl RetryBudget {
    pub(crate) fn new(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget { ratio, min_per_second, started: Instant::now(), buckets: Mutex::new([(0, 0, 0); WINDOW_SECONDS]) }
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts a request (every request earns its share of retries).
    pub(crate) fn deposit(&self) {
        let now = self.second();
        let mut buckets = self.buckets.lock();
        let bucket = &mut buckets[now as usize % WINDOW_SECONDS];
        if bucket.0 != now {
            *bucket = (now, 0, 0);
        }
        bucket.1 += 1;
    }

    /// Takes one retry from the budget, if the window allows it.
    pub(crate) fn try_withdraw(&self) -> bool {
        let now = self.second();
        let mut buckets = self.buckets.lock();
        let (requests, retries) = buckets
            .iter()
            .filter(|(second, _, _)| now.saturating_sub(*second) < WINDOW_SECONDS as u64)
            .fold((0u64, 0u64), |(req, ret), (_, r, t)| (req + r, ret + t));
        let allowed = self.ratio * requests as f64 + f64::from(self.min_per_second) * WINDOW_SECONDS as f64;
        if (retries as f64) >= allowed {
            return false;
        }
        let bucket = &mut buckets[now as usize % WINDOW_SECONDS];
        if bucket.0 != now {
            *bucket = (now, 0, 0);
        }
        bucket.2 += 1;
        true
    }
}

/// The wait before retry round `round` (1-based): uniformly random up to
/// `min(max, base × 2^(round−1))` ("full jitter").
pub(crate) fn backoff(base: Duration, max: Duration, round: u32) -> Duration {
    let ceiling = base.saturating_mul(1u32.checked_shl(round.saturating_sub(1)).unwrap_or(u32::MAX)).min(max);
    if ceiling.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::rng().random_range(0..=ceiling.as_nanos().min(u128::from(u64::MAX)) as u64))
}

/// The request's deadline: the configured default, shortened by a valid `X-Keel-Deadline`.
pub(crate) fn deadline(headers: &HeaderMap, default: Duration, started: Instant) -> Instant {
    let asked = headers.get(&KEEL_DEADLINE).and_then(|v| v.to_str().ok()).and_then(parse_deadline);
    started + asked.map_or(default, |asked| asked.min(default))
}

/// Checks `X-Keel-Deadline` before anything is sent: a value that is not a positive duration (or
/// is sent twice) is refused, never silently ignored.
pub(crate) fn check_deadline(headers: &HeaderMap) -> Result<(), crate::error::ProxyError> {
    let mut values = headers.get_all(&KEEL_DEADLINE).iter();
    let Some(value) = values.next() else { return Ok(()) };
    if values.next().is_some() {
        return Err(crate::error::ProxyError::BadDeadline("X-Keel-Deadline is sent more than once".into()));
    }
    match value.to_str().ok().and_then(parse_deadline) {
        Some(_) => Ok(()),
        None => Err(crate::error::ProxyError::BadDeadline(format!(
            "X-Keel-Deadline {} is not a deadline",
            crate::error::quoted(value.as_bytes())
        ))),
    }
}

fn parse_deadline(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    keel_types::duration::parse(text).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_a_share_of_traffic() {
        let budget = RetryBudget::new(0.2, 0);
        assert!(!budget.try_withdraw(), "no traffic, no floor: no retries");
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 20);
        let floor = RetryBudget::new(0.0, 1);
        assert_eq!((0..100).filter(|_| floor.try_withdraw()).count(), WINDOW_SECONDS);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            assert!(backoff(Duration::from_millis(100), Duration::from_secs(2), 1) <= Duration::from_millis(100));
            assert!(backoff(Duration::from_millis(100), Duration::from_secs(2), 3) <= Duration::from_millis(400));
            assert!(backoff(Duration::from_millis(100), Duration::from_secs(2), 40) <= Duration::from_secs(2));
        }
        assert_eq!(backoff(Duration::ZERO, Duration::from_secs(2), 3), Duration::ZERO);
    }

    #[test]
    fn malformed_deadlines_are_refused() {
        let mut h = HeaderMap::new();
        assert!(check_deadline(&h).is_ok());
        for good in ["30s", "1500ms", "2.5", " 1h 30m ", "1e3"] {
            h.insert(KEEL_DEADLINE, good.parse().unwrap());
            assert!(check_deadline(&h).is_ok(), "{good}");
        }
        for bad in ["soon", "-1", "0", "0s", "NaN", "inf", "", "-5s"] {
            h.insert(KEEL_DEADLINE, http::HeaderValue::from_str(bad).unwrap());
            let err = check_deadline(&h).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")) && err.contains("\"30s\""), "{bad}: {err}");
        }
        h.insert(KEEL_DEADLINE, http::HeaderValue::from_bytes(b"3\xff").unwrap());
        assert!(check_deadline(&h).unwrap_err().to_string().contains("\"3\\xff\""));
        h.insert(KEEL_DEADLINE, "30s".parse().unwrap());
        h.append(KEEL_DEADLINE, "40s".parse().unwrap());
        assert!(check_deadline(&h).unwrap_err().to_string().contains("more than once"));
    }

    #[test]
    fn deadlines_only_shorten() {
        let started = Instant::now();
        let mut h = HeaderMap::new();
        assert_eq!(deadline(&h, Duration::from_secs(600), started), started + Duration::from_secs(600));
        h.insert(KEEL_DEADLINE, "30s".parse().unwrap());
        assert_eq!(deadline(&h, Duration::from_secs(600), started), started + Duration::from_secs(30));
        h.insert(KEEL_DEADLINE, "2.5".parse().unwrap());
        assert_eq!(deadline(&h, Duration::from_secs(600), started), started + Duration::from_millis(2500));
        h.insert(KEEL_DEADLINE, "1h".parse().unwrap());
        assert_eq!(deadline(&h, Duration::from_secs(600), started), started + Duration::from_secs(600));
        for bad in ["-1", "0", "soon", "NaN"] {
            h.insert(KEEL_DEADLINE, bad.parse().unwrap());
            assert_eq!(deadline(&h, Duration::from_secs(600), started), started + Duration::from_secs(600), "{bad}");
        }
    }
}
