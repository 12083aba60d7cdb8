//! Per-minute samples of keel's counters kept in keel's store, for the dashboard's timeline: the
//! [`HistoryStore`] trait and its data ([`Sample`]).
//!
//! Once a minute each keel instance (a *source*) stores one JSON object, the totals of its
//! counters, for that minute; storing again for the same source and minute replaces it. The
//! dashboard reads a source's samples from a minute on, and a periodic prune deletes the old ones
//! of every source.
//!
//! - SQLite and PostgreSQL: table `metric_minutes` (migration 5), one row per source and minute
//!   (primary key `(source, minute)`, the sample as JSON text), indexed by minute for prunes. A
//!   put is one `INSERT … ON CONFLICT (source, minute) DO UPDATE`.
//! - Redis: per source the sorted set `P history:SOURCE` (score the minute, member
//!   `MINUTE JSON`), and the set `P history-sources` of the sources, for prunes (see
//!   `history/redis.rs`).

mod postgres;
mod redis;
mod sqlite;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;
use crate::store::{StoreFuture, check_name};

/// The most samples [`HistoryStore::samples`] returns: a week of minutes.
pub const MAX_SAMPLES: usize = 10_080;

/// [`MAX_SAMPLES`] as the SQL backends' `LIMIT`.
pub(crate) const MAX_SAMPLES_I64: i64 = MAX_SAMPLES as i64;

/// The largest sample a store accepts, serialized as JSON, in bytes.
pub const MAX_SAMPLE_BYTES: usize = 16 * 1024;

/// The greatest minute a sample may have: 2^53 − 1, the greatest integer Redis keeps exactly as
/// a score (Unix minutes reach it in some 17 billion years).
pub(crate) const MAX_MINUTE: i64 = (1 << 53) - 1;

/// Per-minute samples of keel's counters, for the dashboard's timeline.
///
/// Every method is one atomic step of the backend, shared by every keel instance using the
/// store. Minutes are Unix minutes (Unix seconds / 60) from the caller's clock.
pub trait HistoryStore: Send + Sync + fmt::Debug {
    /// Stores `sample` (a JSON object, at most [`MAX_SAMPLE_BYTES`] serialized) of `source` (a
    /// keel instance's name, checked like an id: 1 to 255 bytes, no control characters) for
    /// `minute` (Unix minutes, 0 to 2^53 − 1), replacing one stored for the same source and
    /// minute. [`StoreError::InvalidInput`] for anything else.
    fn put_sample<'a>(&'a self, source: &'a str, minute: i64, sample: Value) -> StoreFuture<'a, ()>;

    /// The samples of `source` from `since_minute` on, oldest first, at most [`MAX_SAMPLES`] —
    /// the newest ones when there are more.
    fn samples<'a>(&'a self, source: &'a str, since_minute: i64) -> StoreFuture<'a, Vec<Sample>>;

    /// Deletes every source's samples older than `before_minute`; returns how many.
    fn prune_samples(&self, before_minute: i64) -> StoreFuture<'_, u64>;
}

/// One stored sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Its minute (Unix minutes).
    pub minute: i64,
    /// The counters' totals as stored (a JSON object).
    pub sample: Value,
}

/// Checks a source's name (like an id).
pub(crate) fn check_source(source: &str) -> Result<(), StoreError> {
    check_name("history source", source)
}

/// Checks the arguments of [`HistoryStore::put_sample`] and returns the sample serialized, as
/// every backend stores it.
pub(crate) fn check_sample(source: &str, minute: i64, sample: &Value) -> Result<String, StoreError> {
    check_source(source)?;
    if !(0..=MAX_MINUTE).contains(&minute) {
        return Err(StoreError::InvalidInput(format!("a sample's minute must be 0 to {MAX_MINUTE}, got {minute}")));
    }
    if !sample.is_object() {
        return Err(StoreError::InvalidInput("a sample must be a JSON object".to_owned()));
    }
    let json = serde_json::to_string(sample)
        .map_err(|e| StoreError::InvalidInput(format!("a sample cannot be stored: {e}")))?;
    if json.len() > MAX_SAMPLE_BYTES {
        return Err(StoreError::InvalidInput(format!(
            "a sample must be at most {MAX_SAMPLE_BYTES} bytes of JSON, got {}",
            json.len()
        )));
    }
    Ok(json)
}

/// A stored sample parsed from its JSON text.
pub(crate) fn parse_sample(backend: &'static str, source: &str, minute: i64, json: &str) -> Result<Sample, StoreError> {
    let sample = serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        backend,
        message: format!("history sample of '{source}' at minute {minute} is not JSON: {e}"),
    })?;
    Ok(Sample { minute, sample })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn samples_are_checked() {
        assert_eq!(check_sample("gw-1", 5, &json!({"requests": 3})).unwrap(), r#"{"requests":3}"#);
        assert!(check_sample("gw-1", MAX_MINUTE, &json!({})).is_ok());
        let big = json!({ "x": "y".repeat(MAX_SAMPLE_BYTES) });
        let just = json!({ "x": "y".repeat(MAX_SAMPLE_BYTES - r#"{"x":""}"#.len()) });
        assert!(check_sample("gw-1", 5, &just).is_ok());
        for (source, minute, sample) in [
            ("", 5, json!({})),
            ("a\nb", 5, json!({})),
            (&*"x".repeat(256), 5, json!({})),
            ("gw-1", -1, json!({})),
            ("gw-1", MAX_MINUTE + 1, json!({})),
            ("gw-1", 5, json!([1])),
            ("gw-1", 5, json!(1)),
            ("gw-1", 5, Value::Null),
            ("gw-1", 5, big),
        ] {
            assert!(
                matches!(check_sample(source, minute, &sample), Err(StoreError::InvalidInput(_))),
                "{source:?} {minute} {sample}"
            );
        }
    }

    #[test]
    fn stored_samples_that_are_not_json_are_corrupt() {
        assert_eq!(parse_sample("sqlite", "s", 1, "{}").unwrap(), Sample { minute: 1, sample: json!({}) });
        assert!(matches!(parse_sample("sqlite", "s", 1, "{"), Err(StoreError::Corrupt { .. })));
    }
}
