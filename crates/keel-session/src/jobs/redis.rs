//! [`JobStore`] on the Redis store, on its connection and under its prefix `P`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P job:ID` | hash | the job's fields (`kind`, `key`, `payload` as JSON, `status`, `attempts`, `run_at`, …; `worker`, `lease_until` and `last_error` only when set) |
//! | `P jobs:keys` | hash | `KIND \0 KEY` → id: a kind and key are one job |
//! | `P jobs:all` | sorted set | every job's id scored by `created_at`, for listing |
//! | `P jobs:status:STATUS` | sorted set | the ids in that status scored by `created_at`, for listing and counting |
//! | `P jobs:due:KIND` | sorted set | the queued jobs of that kind scored by `run_at` |
//! | `P jobs:leased:KIND` | sorted set | the running jobs of that kind scored by `lease_until` |
//! | `P jobs:kinds` | set | the kinds that may have jobs queued or running |
//! | `P jobs:finished` | sorted set | the done and failed jobs scored by `updated_at`, for pruning |
//!
//! Every step is one Lua script (a single Redis server is assumed, as for sessions: the scripts
//! build the names of the keys they touch from `P` and the ids they read). A claim looks at the
//! first job of `jobs:leased:KIND` (lease ended) and then of `jobs:due:KIND` (due) of each kind
//! asked for (of each kind of `jobs:kinds` when none is), and takes the one due first, ties
//! going to the older id; so a claim costs a few sorted-set reads per kind however many jobs
//! wait. Ids are UUID v7, so they sort by creation. A lease-ended job that has used its
//! attempts is failed instead (moved to `jobs:status:failed` and `jobs:finished`) and the claim
//! looks again; one claim drops or gives up at most 100 jobs (then it returns none, and the
//! next claim goes on). The incident scripts (`incidents/redis.rs`) enqueue their change jobs
//! with the same Lua function, [`RedisStore::JOB_LUA`].
//!
//! [`JobStore::prune_jobs`] deletes in scripts of [`PRUNE_BATCH`] jobs, so a large prune does not
//! hold the server for long; each job is deleted with its index entries in one step.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;

use super::{
    Enqueued, GAVE_UP_AFTER, GAVE_UP_BEFORE, Job, JobCounts, JobStatus, JobStore, NewJob, check_claim, check_job_id,
    check_new_job, check_worker, cut_error, new_job_id,
};
use crate::StoreError;
use crate::redis_store::{RedisStore, corrupt, redis_error};
use crate::store::{StoreFuture, now_millis};

/// Jobs deleted per script by [`JobStore::prune_jobs`].
const PRUNE_BATCH: u64 = 500;

/// A hash as read from Redis.
type Fields = HashMap<String, String>;

impl RedisStore {
    /// Lua functions keeping the job keys of the module docs, shared by the job scripts and the
    /// incident scripts (which enqueue change jobs in the same step):
    ///
    /// - `index_job(P, id, kind, status, created_at, score)` and `unindex_job(P, id, kind,
    ///   status)` add the job to (remove it from) the sets of its status; `score` is `run_at`
    ///   (queued), `lease_until` (running) or `updated_at` (done, failed).
    /// - `enqueue_job(P, id, kind, key, payload, run_at, max_attempts, now)` stores a queued job
    ///   unless one of its kind and key exists; returns the job's id and 1 if it was created.
    pub(crate) const JOB_LUA: &'static str = r"
local function index_job(P, id, kind, status, created_at, score)
  redis.call('ZADD', P .. 'jobs:status:' .. status, created_at, id)
  if status == 'queued' then
    redis.call('ZADD', P .. 'jobs:due:' .. kind, score, id)
    redis.call('SADD', P .. 'jobs:kinds', kind)
  elseif status == 'running' then
    redis.call('ZADD', P .. 'jobs:leased:' .. kind, score, id)
    redis.call('SADD', P .. 'jobs:kinds', kind)
  else
    redis.call('ZADD', P .. 'jobs:finished', score, id)
  end
end

local function unindex_job(P, id, kind, status)
  redis.call('ZREM', P .. 'jobs:status:' .. status, id)
  if status == 'queued' then
    redis.call('ZREM', P .. 'jobs:due:' .. kind, id)
  elseif status == 'running' then
    redis.call('ZREM', P .. 'jobs:leased:' .. kind, id)
  else
    redis.call('ZREM', P .. 'jobs:finished', id)
  end
end

local function enqueue_job(P, id, kind, key, payload, run_at, max_attempts, now)
  local field = kind .. '\0' .. key
  local existing = redis.call('HGET', P .. 'jobs:keys', field)
  if existing and redis.call('EXISTS', P .. 'job:' .. existing) == 1 then return existing, 0 end
  redis.call('HSET', P .. 'job:' .. id, 'id', id, 'kind', kind, 'key', key, 'payload', payload,
    'status', 'queued', 'attempts', 0, 'max_attempts', max_attempts, 'run_at', run_at,
    'created_at', now, 'updated_at', now)
  redis.call('HSET', P .. 'jobs:keys', field, id)
  redis.call('ZADD', P .. 'jobs:all', now, id)
  index_job(P, id, kind, 'queued', now, run_at)
  return id, 1
end
";

    /// The hash of job `id`.
    fn job_key(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }

    /// The hashes `HASH_PREFIX ID` of the `limit` ids scored highest in the sorted set `index`,
    /// highest first (ties: the greater id first), read in one step; ids whose hash is gone are
    /// skipped. Shared with `incidents/redis.rs`.
    pub(crate) async fn newest_hashes(
        &self,
        index: String,
        hash_prefix: String,
        limit: usize,
    ) -> Result<Vec<Fields>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let last = i64::try_from(limit - 1).unwrap_or(i64::MAX);
        NEWEST.key(index).arg(hash_prefix).arg(last).invoke_async(&mut self.conn.clone()).await.map_err(redis_error)
    }
}

/// `KEYS[1]` a sorted set; `ARGV` the prefix of the hashes, the last rank. Returns the hashes of
/// the ids ranked first, highest score first.
static NEWEST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZREVRANGE', KEYS[1], 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local hash = redis.call('HGETALL', ARGV[1] .. id)
  if #hash > 0 then out[#out + 1] = hash end
end
return out
",
    )
});

/// `ARGV` P, id, kind, key, payload, run_at, max_attempts, now. Returns `{created, job hash}`.
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        RedisStore::JOB_LUA,
        r"
local P = ARGV[1]
local id, created = enqueue_job(P, ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return {created, redis.call('HGETALL', P .. 'job:' .. id)}
"
    ))
});

/// `ARGV` P, worker, now, lease_until, the two parts of the error of a job given up on
/// ([`GAVE_UP_BEFORE`], [`GAVE_UP_AFTER`]), then the kinds (none: any). Returns the claimed
/// job's hash, or an empty array.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        RedisStore::JOB_LUA,
        r"
local P, worker, now, lease_until = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local gave_up_before, gave_up_after = ARGV[5], ARGV[6]
local kinds = {}
if #ARGV > 6 then
  for i = 7, #ARGV do kinds[#kinds + 1] = ARGV[i] end
else
  kinds = redis.call('SMEMBERS', P .. 'jobs:kinds')
  for _, kind in ipairs(kinds) do
    if redis.call('EXISTS', P .. 'jobs:due:' .. kind, P .. 'jobs:leased:' .. kind) == 0 then
      redis.call('SREM', P .. 'jobs:kinds', kind)
    end
  end
end

local function first(set, max)
  local best, best_score, best_kind
  for _, kind in ipairs(kinds) do
    local got = redis.call('ZRANGEBYSCORE', P .. set .. kind, '-inf', max, 'WITHSCORES', 'LIMIT', 0, 1)
    if got[1] then
      local score = tonumber(got[2])
      if not best or score < best_score or (score == best_score and got[1] < best) then
        best, best_score, best_kind = got[1], score, kind
      end
    end
  end
  return best, best_kind
end

-- An id left in an index by a job whose hash is gone is dropped, and a running job whose lease
-- ended with no attempt left is failed; then the next one is looked at.
for _ = 1, 100 do
  local from = 'running'
  local id, kind = first('jobs:leased:', '(' .. now)
  if not id then
    from = 'queued'
    id, kind = first('jobs:due:', now)
  end
  if not id then return {} end
  local key = P .. 'job:' .. id
  local job = redis.call('HMGET', key, 'created_at', 'attempts', 'max_attempts')
  local created_at, attempts, max_attempts = job[1], tonumber(job[2]), tonumber(job[3])
  unindex_job(P, id, kind, from)
  if created_at then
    if from == 'running' and attempts and max_attempts and attempts >= max_attempts then
      redis.call('HDEL', key, 'lease_until')
      redis.call('HSET', key, 'status', 'failed', 'last_error', gave_up_before .. job[2] .. gave_up_after,
        'updated_at', now)
      index_job(P, id, kind, 'failed', created_at, now)
    else
      redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('HSET', key, 'status', 'running', 'worker', worker, 'lease_until', lease_until, 'updated_at', now)
      index_job(P, id, kind, 'running', created_at, lease_until)
      return redis.call('HGETALL', key)
    end
  end
end
return {}
"
    ))
});

/// `ARGV` P, id, worker, now, what (`done`, `failed` or `retry`), error, run_at. Returns 1 if
/// `worker` held the job (and it moved on), else 0.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        RedisStore::JOB_LUA,
        r"
local P, id, worker, now, what = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = P .. 'job:' .. id
local job = redis.call('HMGET', key, 'status', 'worker', 'kind', 'created_at', 'attempts', 'max_attempts')
if job[1] ~= 'running' or job[2] ~= worker then return 0 end
local to = what
if what == 'retry' then
  if tonumber(job[5]) >= tonumber(job[6]) then to = 'failed' else to = 'queued' end
end
unindex_job(P, id, job[3], 'running')
redis.call('HDEL', key, 'lease_until')
redis.call('HSET', key, 'status', to, 'updated_at', now)
if what ~= 'done' then redis.call('HSET', key, 'last_error', ARGV[6]) end
if to == 'queued' then
  redis.call('HSET', key, 'run_at', ARGV[7])
  index_job(P, id, job[3], to, job[4], ARGV[7])
else
  index_job(P, id, job[3], to, job[4], now)
end
return 1
"
    ))
});

/// `ARGV` P, before, batch size. Deletes up to a batch of done and failed jobs updated before
/// `before`; returns how many.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        RedisStore::JOB_LUA,
        r"
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P .. 'jobs:finished', '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  local key = P .. 'job:' .. id
  local job = redis.call('HMGET', key, 'kind', 'key', 'status')
  redis.call('ZREM', P .. 'jobs:finished', id)
  if job[1] and job[2] and job[3] then
    unindex_job(P, id, job[1], job[3])
    local field = job[1] .. '\0' .. job[2]
    if redis.call('HGET', P .. 'jobs:keys', field) == id then redis.call('HDEL', P .. 'jobs:keys', field) end
  end
  redis.call('ZREM', P .. 'jobs:all', id)
  redis.call('DEL', key)
end
return #ids
"
    ))
});

/// A job from its hash.
fn decode_job(mut hash: Fields) -> Result<Job, StoreError> {
    let mut take = |field: &str| hash.remove(field).ok_or_else(|| corrupt(format!("job hash lacks '{field}'")));
    let id = take("id")?;
    let bad = |field: &str, text: &str| corrupt(format!("job '{id}' has {field} '{text}'"));
    let number = |field: &str, text: String| text.parse::<i64>().map_err(|_| bad(field, &text));
    let count = |field: &str, text: String| text.parse::<u32>().map_err(|_| bad(field, &text));
    let status = take("status")?;
    let status = status.parse().map_err(|_| bad("status", &status))?;
    let payload = take("payload")?;
    let payload = serde_json::from_str(&payload).map_err(|e| corrupt(format!("job '{id}' has a bad payload: {e}")))?;
    let job = Job {
        kind: take("kind")?,
        key: take("key")?,
        payload,
        status,
        attempts: count("attempts", take("attempts")?)?,
        max_attempts: count("max_attempts", take("max_attempts")?)?,
        run_at: number("run_at", take("run_at")?)?,
        created_at: number("created_at", take("created_at")?)?,
        updated_at: number("updated_at", take("updated_at")?)?,
        lease_until: hash.remove("lease_until").map(|text| number("lease_until", text)).transpose()?,
        worker: hash.remove("worker"),
        last_error: hash.remove("last_error"),
        id: id.clone(),
    };
    Ok(job)
}

/// What `finish` does with a job its worker holds.
#[derive(Debug, Clone, Copy)]
enum Finish {
    Done,
    Failed,
    Retry,
}

impl RedisStore {
    /// Runs the `FINISH` script: `true` if `worker` held the job.
    async fn finish(
        &self,
        id: &str,
        worker: &str,
        now: i64,
        what: Finish,
        error: &str,
        run_at: i64,
    ) -> Result<bool, StoreError> {
        check_job_id(id)?;
        check_worker(worker)?;
        let what = match what {
            Finish::Done => "done",
            Finish::Failed => "failed",
            Finish::Retry => "retry",
        };
        let moved: i64 = FINISH
            .arg(&self.prefix)
            .arg(id)
            .arg(worker)
            .arg(now)
            .arg(what)
            .arg(cut_error(error))
            .arg(run_at)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(moved == 1)
    }
}

impl JobStore for RedisStore {
    fn enqueue(&self, job: NewJob) -> StoreFuture<'_, Enqueued> {
        Box::pin(async move {
            check_new_job(&job)?;
            let payload = serde_json::to_string(&job.payload)
                .map_err(|e| StoreError::InvalidInput(format!("job payload cannot be stored: {e}")))?;
            let (created, hash): (i64, Fields) = ENQUEUE
                .arg(&self.prefix)
                .arg(new_job_id())
                .arg(&job.kind)
                .arg(&job.key)
                .arg(payload)
                .arg(job.run_at)
                .arg(job.max_attempts)
                .arg(now_millis())
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            Ok(Enqueued { job: decode_job(hash)?, created: created == 1 })
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        kinds: &'a [String],
        now: i64,
        lease_ms: i64,
    ) -> StoreFuture<'a, Option<Job>> {
        Box::pin(async move {
            check_claim(worker, kinds)?;
            let mut invocation = CLAIM.prepare_invoke();
            invocation
                .arg(&self.prefix)
                .arg(worker)
                .arg(now)
                .arg(now.saturating_add(lease_ms.max(0)))
                .arg(GAVE_UP_BEFORE)
                .arg(GAVE_UP_AFTER);
            for kind in kinds {
                invocation.arg(kind);
            }
            let hash: Fields = invocation.invoke_async(&mut self.conn.clone()).await.map_err(redis_error)?;
            if hash.is_empty() {
                return Ok(None);
            }
            decode_job(hash).map(Some)
        })
    }

    fn complete<'a>(&'a self, id: &'a str, worker: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move { self.finish(id, worker, now, Finish::Done, "", 0).await })
    }

    fn retry<'a>(
        &'a self,
        id: &'a str,
        worker: &'a str,
        error: &'a str,
        run_at: i64,
        now: i64,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move { self.finish(id, worker, now, Finish::Retry, error, run_at).await })
    }

    fn fail<'a>(&'a self, id: &'a str, worker: &'a str, error: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move { self.finish(id, worker, now, Finish::Failed, error, 0).await })
    }

    fn job<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Job>> {
        Box::pin(async move {
            check_job_id(id)?;
            let hash: Fields = redis::cmd("HGETALL")
                .arg(self.job_key(id))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if hash.is_empty() {
                return Ok(None);
            }
            decode_job(hash).map(Some)
        })
    }

    fn list_jobs(&self, status: Option<JobStatus>, limit: usize) -> StoreFuture<'_, Vec<Job>> {
        Box::pin(async move {
            let index = match status {
                Some(status) => format!("{}jobs:status:{status}", self.prefix),
                None => format!("{}jobs:all", self.prefix),
            };
            let hashes = self.newest_hashes(index, format!("{}job:", self.prefix), limit).await?;
            hashes.into_iter().map(decode_job).collect()
        })
    }

    fn count_jobs(&self) -> StoreFuture<'_, JobCounts> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for status in [JobStatus::Queued, JobStatus::Running, JobStatus::Done, JobStatus::Failed] {
                pipe.cmd("ZCARD").arg(format!("{}jobs:status:{status}", self.prefix));
            }
            let (queued, running, done, failed): (u64, u64, u64, u64) =
                pipe.query_async(&mut self.conn.clone()).await.map_err(redis_error)?;
            Ok(JobCounts { queued, running, done, failed })
        })
    }

    fn prune_jobs(&self, before: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut pruned = 0;
            loop {
                let deleted: u64 = PRUNE
                    .arg(&self.prefix)
                    .arg(before)
                    .arg(PRUNE_BATCH)
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(redis_error)?;
                pruned += deleted;
                if deleted < PRUNE_BATCH {
                    return Ok(pruned);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn jobs_decode_from_their_hash() {
        let mut fields = hash(&[
            ("id", "job_1"),
            ("kind", "k"),
            ("key", "a:b"),
            ("payload", r#"{"x":1}"#),
            ("status", "running"),
            ("attempts", "1"),
            ("max_attempts", "3"),
            ("run_at", "5"),
            ("worker", "w"),
            ("lease_until", "9"),
            ("created_at", "4"),
            ("updated_at", "6"),
        ]);
        let job = decode_job(fields.clone()).unwrap();
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!((job.attempts, job.max_attempts, job.lease_until, job.last_error), (1, 3, Some(9), None));
        assert_eq!(job.payload, serde_json::json!({"x": 1}));
        fields.insert("attempts".into(), "-1".into());
        assert!(decode_job(fields.clone()).is_err());
        fields.remove("kind");
        assert!(decode_job(fields).is_err());
    }
}
