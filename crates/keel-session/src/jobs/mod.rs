//! Durable jobs kept in keel's store: the [`JobStore`] trait and its data ([`NewJob`], [`Job`],
//! [`JobStatus`], [`JobCounts`]).
//!
//! A job is a kind, a key, a JSON payload and a time to run. Delivery is at least once: a worker
//! claims a due job with a lease ([`JobStore::claim`]); if it neither completes nor retries the
//! job before the lease ends (keel was killed), the job is claimed again, while it has attempts
//! left (then the claim fails it instead). Handlers must therefore be idempotent. `(kind, key)`
//! is unique: enqueueing a job whose kind and key exist returns the stored one, so a job is
//! made once however often its cause is seen.
//!
//! Why a table of keel's own instead of a queue crate: apalis, the maintained Rust queue, keeps
//! its SQLite and PostgreSQL jobs through sqlx, whose `libsqlite3-sys` cannot be linked beside
//! rusqlite's bundled one in one build, and it has no Redis backend sharing keel's keys. A job
//! table in the store keel already opens is a few hundred lines and shares its durability.
//!
//! - SQLite: table `jobs` (migration 4); the writer thread makes each claim atomic.
//! - PostgreSQL: table `jobs`; a claim is one `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP
//!   LOCKED)`, so several keel instances claim different jobs without waiting on each other.
//! - Redis: one Lua script per step (see `jobs/redis.rs`).

mod postgres;
mod redis;
mod sqlite;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;
use crate::store::{StoreFuture, check_name};

/// The largest payload a job may carry, serialized, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// The longest error message kept with a job, in bytes (longer ones are cut).
pub const MAX_ERROR_LEN: usize = 2_000;

/// Durable jobs, shared by every keel instance using the store.
///
/// Every method is one atomic step of the backend. Times are Unix milliseconds from the caller's
/// clock (`now` arguments), so tests can drive them; instances sharing a store should keep their
/// clocks in step (NTP), as a lease is judged by the claimer's clock.
pub trait JobStore: Send + Sync + fmt::Debug {
    /// Enqueues a job, or returns the stored one with the same kind and key (`created` false).
    /// [`StoreError::InvalidInput`] for a bad kind or key (1 to 255 bytes, no control
    /// characters), a payload over [`MAX_PAYLOAD_BYTES`] or `max_attempts` of 0.
    fn enqueue(&self, job: NewJob) -> StoreFuture<'_, Enqueued>;

    /// Claims the job due first (`run_at <= now`, status `queued`; or status `running` with its
    /// lease ended before `now`), of one of `kinds` (any kind when empty): sets it `running`
    /// for `worker` until `now + lease_ms` and counts the attempt. `None` when nothing is due.
    /// Two claims never get the same job while its lease lasts.
    ///
    /// A `running` job whose lease ended and which has used its `max_attempts` is not claimed
    /// again: in the same step it becomes `failed` (`last_error` "gave up: its lease ended N
    /// times without the job finishing (keel stopped or the handler hung)", N its attempts;
    /// `updated_at` `now`; no lease; `worker` kept), and the claim goes on to the next job. So
    /// a job whose handler crashes keel, or hangs past its lease, every time is not run forever.
    /// Queued jobs are never given up here ([`JobStore::retry`] fails those out of attempts).
    fn claim<'a>(
        &'a self,
        worker: &'a str,
        kinds: &'a [String],
        now: i64,
        lease_ms: i64,
    ) -> StoreFuture<'a, Option<Job>>;

    /// Marks the job done, if `worker` still holds it (`false` otherwise: its lease ended and
    /// another worker took it).
    fn complete<'a>(&'a self, id: &'a str, worker: &'a str, now: i64) -> StoreFuture<'a, bool>;

    /// Gives the job back to run again at `run_at` with `error` kept, if `worker` still holds it;
    /// a job that has used `max_attempts` becomes `failed` instead.
    fn retry<'a>(
        &'a self,
        id: &'a str,
        worker: &'a str,
        error: &'a str,
        run_at: i64,
        now: i64,
    ) -> StoreFuture<'a, bool>;

    /// Marks the job `failed` for good with `error` kept, if `worker` still holds it.
    fn fail<'a>(&'a self, id: &'a str, worker: &'a str, error: &'a str, now: i64) -> StoreFuture<'a, bool>;

    /// The job with this id, if any.
    fn job<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Job>>;

    /// Jobs, most recently created first, at most `limit`; with `status`, only those.
    fn list_jobs(&self, status: Option<JobStatus>, limit: usize) -> StoreFuture<'_, Vec<Job>>;

    /// How many jobs are in each status.
    fn count_jobs(&self) -> StoreFuture<'_, JobCounts>;

    /// Deletes jobs `done` or `failed` last updated before `before`; returns how many.
    fn prune_jobs(&self, before: i64) -> StoreFuture<'_, u64>;
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for its `run_at`.
    Queued,
    /// Claimed by a worker until its lease ends.
    Running,
    /// Finished.
    Done,
    /// Gave up: its attempts ran out or its handler refused it.
    Failed,
}

impl JobStatus {
    /// `queued`, `running`, `done` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = StoreError;

    fn from_str(value: &str) -> Result<Self, StoreError> {
        match value {
            "queued" => Ok(JobStatus::Queued),
            "running" => Ok(JobStatus::Running),
            "done" => Ok(JobStatus::Done),
            "failed" => Ok(JobStatus::Failed),
            other => Err(StoreError::InvalidInput(format!(
                "unknown job status '{other}' (expected queued, running, done or failed)"
            ))),
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// What handles it (`incident.changed`, `notify`, `runbook`, …).
    pub kind: String,
    /// Unique per kind: the same kind and key are one job.
    pub key: String,
    /// What its handler needs.
    pub payload: Value,
    /// When it may run first (Unix milliseconds).
    pub run_at: i64,
    /// How many attempts before it fails for good (at least 1).
    pub max_attempts: u32,
}

impl NewJob {
    /// A job of `kind` with `key` and `payload`, due now, with 10 attempts.
    pub fn new(kind: impl Into<String>, key: impl Into<String>, payload: Value) -> Self {
        NewJob { kind: kind.into(), key: key.into(), payload, run_at: crate::now_millis(), max_attempts: 10 }
    }

    /// Sets when it may run first.
    #[must_use]
    pub fn at(mut self, run_at: i64) -> Self {
        self.run_at = run_at;
        self
    }

    /// Sets how many attempts it gets.
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }
}

/// What [`JobStore::enqueue`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The job as stored.
    pub job: Job,
    /// `false` if a job of this kind and key existed (and is returned unchanged).
    pub created: bool,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id (`job_` + a UUID v7 in hex).
    pub id: String,
    /// What handles it.
    pub kind: String,
    /// Unique per kind.
    pub key: String,
    /// What its handler needs.
    pub payload: Value,
    /// Where it stands.
    pub status: JobStatus,
    /// Attempts made so far (claims).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it may run next (Unix milliseconds).
    pub run_at: i64,
    /// The worker holding it, while `running` (kept afterwards: who finished it).
    pub worker: Option<String>,
    /// Until when that worker holds it, while `running`.
    pub lease_until: Option<i64>,
    /// The last error a handler gave, if any.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// How many jobs are in each status ([`JobStore::count_jobs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    /// Waiting.
    pub queued: u64,
    /// Claimed.
    pub running: u64,
    /// Finished.
    pub done: u64,
    /// Given up.
    pub failed: u64,
}

/// Checks a job to enqueue (see [`JobStore::enqueue`]).
pub(crate) fn check_new_job(job: &NewJob) -> Result<(), StoreError> {
    check_name("job kind", &job.kind)?;
    check_name("job key", &job.key)?;
    if job.max_attempts == 0 {
        return Err(StoreError::InvalidInput("a job needs at least one attempt".to_owned()));
    }
    let size = serde_json::to_vec(&job.payload).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(StoreError::InvalidInput(format!(
            "a job's payload must be at most {MAX_PAYLOAD_BYTES} bytes of JSON, got {size}"
        )));
    }
    Ok(())
}

/// A new job id: `job_` + a UUID v7 in hex.
pub(crate) fn new_job_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}

/// `error` cut to [`MAX_ERROR_LEN`] bytes at a character boundary.
pub(crate) fn cut_error(error: &str) -> String {
    let mut end = error.len().min(MAX_ERROR_LEN);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_owned()
}

/// The `last_error` of a running job [`JobStore::claim`] gives up on (its lease ended and its
/// attempts are used up) is `GAVE_UP_BEFORE`, its attempts, `GAVE_UP_AFTER`. The backends join
/// them in the claim's own step (SQL `||`, Lua `..`), where [`cut_error`] cannot run; the
/// assertion below shows that it would never cut (an attempt count has at most 20 digits).
pub(crate) const GAVE_UP_BEFORE: &str = "gave up: its lease ended ";
/// See [`GAVE_UP_BEFORE`].
pub(crate) const GAVE_UP_AFTER: &str = " times without the job finishing (keel stopped or the handler hung)";
const _: () = assert!(GAVE_UP_BEFORE.len() + 20 + GAVE_UP_AFTER.len() <= MAX_ERROR_LEN);

/// The columns of `jobs`, in the order the SQL backends select them.
pub(crate) const JOB_COLUMNS: &str = "id, kind, key, payload, status, attempts, max_attempts, run_at, worker, lease_until, last_error, created_at, updated_at";

/// Checks a worker's name (1 to 255 bytes, no control characters).
pub(crate) fn check_worker(worker: &str) -> Result<(), StoreError> {
    check_name("worker", worker)
}

/// Checks the arguments of [`JobStore::claim`].
pub(crate) fn check_claim(worker: &str, kinds: &[String]) -> Result<(), StoreError> {
    check_worker(worker)?;
    kinds.iter().try_for_each(|kind| check_name("job kind", kind))
}

/// Checks a job id given to a read or a step of a worker.
pub(crate) fn check_job_id(id: &str) -> Result<(), StoreError> {
    check_name("job id", id)
}

/// The job [`JobStore::enqueue`] stores for `job` at `now` (not yet run, no attempts).
pub(crate) fn new_job(job: NewJob, now: i64) -> Job {
    Job {
        id: new_job_id(),
        kind: job.kind,
        key: job.key,
        payload: job.payload,
        status: JobStatus::Queued,
        attempts: 0,
        max_attempts: job.max_attempts,
        run_at: job.run_at,
        worker: None,
        lease_until: None,
        last_error: None,
        created_at: now,
        updated_at: now,
    }
}

/// A `jobs` row as the SQL backends read it (`payload` already parsed).
#[derive(Debug)]
pub(crate) struct JobRow {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) key: String,
    pub(crate) payload: Value,
    pub(crate) status: String,
    pub(crate) attempts: i64,
    pub(crate) max_attempts: i64,
    pub(crate) run_at: i64,
    pub(crate) worker: Option<String>,
    pub(crate) lease_until: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl JobRow {
    /// The row checked into a [`Job`].
    pub(crate) fn into_job(self, backend: &'static str) -> Result<Job, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt { backend, message: format!("job '{}': {what}", self.id) };
        let status = self.status.parse().map_err(|_| corrupt(format!("unknown status '{}'", self.status)))?;
        let count =
            |what: &str, value: i64| u32::try_from(value).map_err(|_| corrupt(format!("{what} {value} out of range")));
        Ok(Job {
            attempts: count("attempts", self.attempts)?,
            max_attempts: count("max attempts", self.max_attempts)?,
            id: self.id,
            kind: self.kind,
            key: self.key,
            payload: self.payload,
            status,
            run_at: self.run_at,
            worker: self.worker,
            lease_until: self.lease_until,
            last_error: self.last_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Adds a job of `status` (a stored status string) to `counts`.
pub(crate) fn add_count(
    counts: &mut JobCounts,
    status: &str,
    count: i64,
    backend: &'static str,
) -> Result<(), StoreError> {
    let count = u64::try_from(count)
        .map_err(|_| StoreError::Corrupt { backend, message: format!("negative job count {count}") })?;
    let slot = match status.parse() {
        Ok(JobStatus::Queued) => &mut counts.queued,
        Ok(JobStatus::Running) => &mut counts.running,
        Ok(JobStatus::Done) => &mut counts.done,
        Ok(JobStatus::Failed) => &mut counts.failed,
        Err(_) => {
            return Err(StoreError::Corrupt { backend, message: format!("jobs with unknown status '{status}'") });
        }
    };
    *slot += count;
    Ok(())
}

pub(crate) use postgres::insert_job as insert_job_postgres;
pub(crate) use sqlite::insert_job as insert_job_sqlite;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_cut_at_a_character_boundary() {
        assert_eq!(cut_error("short"), "short");
        let cut = cut_error(&"é".repeat(MAX_ERROR_LEN));
        assert_eq!(cut.len(), MAX_ERROR_LEN);
        let cut = cut_error(&format!("x{}", "é".repeat(MAX_ERROR_LEN)));
        assert_eq!(cut.len(), MAX_ERROR_LEN - 1);
    }

    #[test]
    fn corrupt_rows_and_counts_are_reported() {
        let row = || JobRow {
            id: "job_1".into(),
            kind: "k".into(),
            key: "1".into(),
            payload: Value::Null,
            status: "queued".into(),
            attempts: 0,
            max_attempts: 10,
            run_at: 1,
            worker: None,
            lease_until: None,
            last_error: None,
            created_at: 1,
            updated_at: 1,
        };
        assert_eq!(row().into_job("sqlite").unwrap().status, JobStatus::Queued);
        for bad in [
            JobRow { status: "lost".into(), ..row() },
            JobRow { attempts: -1, ..row() },
            JobRow { max_attempts: i64::from(u32::MAX) + 1, ..row() },
        ] {
            assert!(matches!(bad.into_job("sqlite"), Err(StoreError::Corrupt { .. })));
        }
        let mut counts = JobCounts::default();
        add_count(&mut counts, "done", 3, "sqlite").unwrap();
        add_count(&mut counts, "done", 1, "sqlite").unwrap();
        add_count(&mut counts, "queued", 2, "sqlite").unwrap();
        assert_eq!(counts, JobCounts { queued: 2, running: 0, done: 4, failed: 0 });
        assert!(matches!(add_count(&mut counts, "lost", 1, "sqlite"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(add_count(&mut counts, "done", -1, "sqlite"), Err(StoreError::Corrupt { .. })));
    }
}
