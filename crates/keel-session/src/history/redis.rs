//! [`HistoryStore`] on the Redis store, on its connection and under its prefix `P`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P history:SOURCE` | sorted set | the source's samples: score the minute, member `MINUTE JSON` |
//! | `P history-sources` | set | the sources that may have samples, for prunes |
//!
//! (The set is not `P history:sources`, which is the sorted set of a source named `sources`.)
//!
//! A put is one script: `ZREMRANGEBYSCORE` of its minute, then `ZADD` (so a minute holds one
//! sample, also when puts for it race) and `SADD` of the source. A read is one
//! `ZREVRANGEBYSCORE … LIMIT 0 MAX_SAMPLES` (the newest, turned around). A prune is one script
//! that removes the samples before the minute from every source's sorted set and drops the
//! sources left without samples from the set.

use std::sync::LazyLock;

use redis::Script;
use serde_json::Value;

use super::{HistoryStore, MAX_SAMPLES, Sample, check_sample, check_source, parse_sample};
use crate::StoreError;
use crate::redis_store::{RedisStore, corrupt, redis_error};
use crate::store::StoreFuture;

const BACKEND: &str = "redis";

/// `KEYS` the source's sorted set, the sources set; `ARGV` minute, member, source.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
",
    )
});

/// `KEYS` the sources set; `ARGV` the prefix of the sorted sets (`P history:`), the minute
/// before which samples go. Returns how many were removed.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = 0
for _, source in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. source
  removed = removed + redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[2])
  if redis.call('EXISTS', key) == 0 then redis.call('SREM', KEYS[1], source) end
end
return removed
",
    )
});

impl RedisStore {
    /// The prefix of the per-source sorted sets.
    fn history_prefix(&self) -> String {
        format!("{}history:", self.prefix)
    }

    /// The sorted set of `source`'s samples.
    fn history_key(&self, source: &str) -> String {
        format!("{}history:{source}", self.prefix)
    }

    /// The set of the sources.
    fn history_sources_key(&self) -> String {
        format!("{}history-sources", self.prefix)
    }
}

impl HistoryStore for RedisStore {
    fn put_sample<'a>(&'a self, source: &'a str, minute: i64, sample: Value) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let json = check_sample(source, minute, &sample)?;
            let _: i64 = PUT
                .key(self.history_key(source))
                .key(self.history_sources_key())
                .arg(minute)
                .arg(format!("{minute} {json}"))
                .arg(source)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            Ok(())
        })
    }

    fn samples<'a>(&'a self, source: &'a str, since_minute: i64) -> StoreFuture<'a, Vec<Sample>> {
        Box::pin(async move {
            check_source(source)?;
            let members: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(self.history_key(source))
                .arg("+inf")
                .arg(since_minute)
                .arg("LIMIT")
                .arg(0)
                .arg(MAX_SAMPLES)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            members.iter().rev().map(|member| decode(source, member)).collect()
        })
    }

    fn prune_samples(&self, before_minute: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let removed: u64 = PRUNE
                .key(self.history_sources_key())
                .arg(self.history_prefix())
                .arg(before_minute)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            Ok(removed)
        })
    }
}

/// A member `MINUTE JSON` of `source`'s sorted set.
fn decode(source: &str, member: &str) -> Result<Sample, StoreError> {
    let bad = || corrupt(format!("history sample of '{source}' {member:?}"));
    let (minute, json) = member.split_once(' ').ok_or_else(bad)?;
    let minute = minute.parse().map_err(|_| bad())?;
    parse_sample(BACKEND, source, minute, json)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_are_decoded() {
        assert_eq!(decode("s", r#"7 {"a":1}"#).unwrap(), Sample { minute: 7, sample: json!({"a": 1}) });
        for bad in ["7", "x {}", "7 {", ""] {
            assert!(matches!(decode("s", bad), Err(StoreError::Corrupt { .. })), "{bad:?}");
        }
    }
}
