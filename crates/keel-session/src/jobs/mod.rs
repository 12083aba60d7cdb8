//! Durable jobs kept in keel's store: the [`JobStore`] trait and its data ([`NewJob`], [`Job`],
//! [`JobStatus`], [`JobCounts`]).
//!
//! A job is a kind, a key, a JSON payload and a time to run. Delivery is at least once: a worker
//! claims a due job with a lease ([`JobStore::claim`]); if it neither completes nor retries the
//! job before the lease ends (keel was killed), the job is claimed again. Handlers must therefore
//! be idempotent. `(kind, key)` is unique: enqueueing a job whose kind and key exist returns the
//! stored one, so a job is made once however often its cause is seen.
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
