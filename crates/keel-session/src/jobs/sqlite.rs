//! [`JobStore`] on the SQLite store: writes go through its writer thread
//! ([`SqliteStore::write_with`]: one writer, so a claim is atomic without locks), reads through
//! its readers. A claim is two statements in the writer's transaction: the running jobs of its
//! kinds whose lease ended with no attempt left are failed, then the due job first is taken.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Enqueued, GAVE_UP_AFTER, GAVE_UP_BEFORE, JOB_COLUMNS, Job, JobCounts, JobRow, JobStatus, JobStore, NewJob,
    add_count, check_claim, check_job_id, check_new_job, check_worker, cut_error, new_job,
};
use crate::StoreError;
use crate::rows::clamp_i64;
use crate::sqlite::{SqliteStore, db_error};
use crate::store::StoreFuture;

const BACKEND: &str = "sqlite";

impl JobStore for SqliteStore {
    fn enqueue(&self, job: NewJob) -> StoreFuture<'_, Enqueued> {
        Box::pin(async move {
            check_new_job(&job)?;
            self.write_with(move |conn, now| insert_job(conn, job, now)).await
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
            let worker = worker.to_owned();
            // The kinds as a JSON array, read with json_each: one statement for any number.
            let kinds = (!kinds.is_empty())
                .then(|| serde_json::to_string(kinds))
                .transpose()
                .map_err(|e| StoreError::InvalidInput(format!("job kinds cannot be stored: {e}")))?;
            // Both statements run in the writer's transaction: one atomic step.
            self.write_with(move |conn, _| {
                // Running jobs of these kinds whose lease ended with no attempt left: given up,
                // so the claim below goes on to the next job.
                conn.prepare_cached(
                    "UPDATE jobs SET status = 'failed', last_error = ?3 || attempts || ?4, lease_until = NULL,
                            updated_at = ?1
                     WHERE status = 'running' AND lease_until < ?1 AND attempts >= max_attempts
                       AND (?2 IS NULL OR kind IN (SELECT value FROM json_each(?2)))",
                )
                .and_then(|mut give_up| give_up.execute(params![now, kinds, GAVE_UP_BEFORE, GAVE_UP_AFTER]))
                .map_err(db_error)?;
                let sql = format!(
                    "UPDATE jobs SET status = 'running', worker = ?1, lease_until = ?2, attempts = attempts + 1,
                            updated_at = ?3
                     WHERE id = (
                         SELECT id FROM jobs
                         WHERE ((status = 'queued' AND run_at <= ?3)
                                OR (status = 'running' AND lease_until < ?3 AND attempts < max_attempts))
                           AND (?4 IS NULL OR kind IN (SELECT value FROM json_each(?4)))
                         ORDER BY run_at, id
                         LIMIT 1)
                     RETURNING {JOB_COLUMNS}"
                );
                conn.prepare_cached(&sql)
                    .and_then(|mut claim| {
                        claim.query_row(params![worker, now.saturating_add(lease_ms), now, kinds], job_row).optional()
                    })
                    .map_err(db_error)?
                    .map(into_job)
                    .transpose()
            })
            .await
        })
    }

    fn complete<'a>(&'a self, id: &'a str, worker: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_job_id(id)?;
            check_worker(worker)?;
            let (id, worker) = (id.to_owned(), worker.to_owned());
            self.write_with(move |conn, _| {
                conn.prepare_cached(
                    "UPDATE jobs SET status = 'done', lease_until = NULL, updated_at = ?3
                     WHERE id = ?1 AND status = 'running' AND worker = ?2",
                )
                .and_then(|mut update| update.execute(params![id, worker, now]))
                .map(|changed| changed > 0)
                .map_err(db_error)
            })
            .await
        })
    }

    fn retry<'a>(
        &'a self,
        id: &'a str,
        worker: &'a str,
        error: &'a str,
        run_at: i64,
        now: i64,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_job_id(id)?;
            check_worker(worker)?;
            let (id, worker, error) = (id.to_owned(), worker.to_owned(), cut_error(error));
            self.write_with(move |conn, _| {
                conn.prepare_cached(
                    "UPDATE jobs SET
                        status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                        run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE ?4 END,
                        last_error = ?3, lease_until = NULL, updated_at = ?5
                     WHERE id = ?1 AND status = 'running' AND worker = ?2",
                )
                .and_then(|mut update| update.execute(params![id, worker, error, run_at, now]))
                .map(|changed| changed > 0)
                .map_err(db_error)
            })
            .await
        })
    }

    fn fail<'a>(&'a self, id: &'a str, worker: &'a str, error: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_job_id(id)?;
            check_worker(worker)?;
            let (id, worker, error) = (id.to_owned(), worker.to_owned(), cut_error(error));
            self.write_with(move |conn, _| {
                conn.prepare_cached(
                    "UPDATE jobs SET status = 'failed', last_error = ?3, lease_until = NULL, updated_at = ?4
                     WHERE id = ?1 AND status = 'running' AND worker = ?2",
                )
                .and_then(|mut update| update.execute(params![id, worker, error, now]))
                .map(|changed| changed > 0)
                .map_err(db_error)
            })
            .await
        })
    }

    fn job<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Job>> {
        Box::pin(async move {
            check_job_id(id)?;
            let id = id.to_owned();
            self.read(move |conn| {
                conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
                    .and_then(|mut select| select.query_row([id], job_row).optional())
                    .map_err(db_error)?
                    .map(into_job)
                    .transpose()
            })
            .await
        })
    }

    fn list_jobs(&self, status: Option<JobStatus>, limit: usize) -> StoreFuture<'_, Vec<Job>> {
        Box::pin(self.read(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR status = ?1)
                     ORDER BY created_at DESC, id DESC LIMIT ?2"
                ))
                .and_then(|mut select| {
                    select
                        .query_map(params![status.map(JobStatus::as_str), clamp_i64(limit as u64)], job_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_error)?;
            rows.into_iter().map(into_job).collect()
        }))
    }

    fn count_jobs(&self) -> StoreFuture<'_, JobCounts> {
        Box::pin(self.read(|conn| {
            let rows = conn
                .prepare_cached("SELECT status, count(*) FROM jobs GROUP BY status")
                .and_then(|mut select| {
                    select
                        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_error)?;
            let mut counts = JobCounts::default();
            for (status, count) in rows {
                add_count(&mut counts, &status, count, BACKEND)?;
            }
            Ok(counts)
        }))
    }

    fn prune_jobs(&self, before: i64) -> StoreFuture<'_, u64> {
        Box::pin(self.write_with(move |conn, _| {
            conn.prepare_cached("DELETE FROM jobs WHERE status IN ('done', 'failed') AND updated_at < ?1")
                .and_then(|mut delete| delete.execute([before]))
                .map(|deleted| deleted as u64)
                .map_err(db_error)
        }))
    }
}

/// Enqueues `job` (checked) at `now` on the writer's connection, or returns the stored job of
/// its kind and key. Also used by the incident store, to enqueue in the step that records.
pub(crate) fn insert_job(conn: &Connection, job: NewJob, now: i64) -> Result<Enqueued, StoreError> {
    let job = new_job(job, now);
    let payload = serde_json::to_string(&job.payload)
        .map_err(|e| StoreError::InvalidInput(format!("a job's payload cannot be stored: {e}")))?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (id, kind, key, payload, status, attempts, max_attempts, run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?8)
             ON CONFLICT (kind, key) DO NOTHING",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                job.id,
                job.kind,
                job.key,
                payload,
                job.status.as_str(),
                i64::from(job.max_attempts),
                job.run_at,
                now
            ])
        })
        .map_err(db_error)?;
    if inserted > 0 {
        return Ok(Enqueued { job, created: true });
    }
    let stored = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE kind = ?1 AND key = ?2"))
        .and_then(|mut select| select.query_row([&job.kind, &job.key], job_row).optional())
        .map_err(db_error)?
        .ok_or_else(|| StoreError::Backend {
            backend: BACKEND,
            message: format!("job {} '{}' is neither inserted nor stored", job.kind, job.key),
        })?;
    Ok(Enqueued { job: into_job(stored)?, created: false })
}

/// A row read as it is stored (`payload` still JSON text).
fn job_row(row: &Row<'_>) -> rusqlite::Result<(JobRow, String)> {
    Ok((
        JobRow {
            id: row.get(0)?,
            kind: row.get(1)?,
            key: row.get(2)?,
            payload: serde_json::Value::Null,
            status: row.get(4)?,
            attempts: row.get(5)?,
            max_attempts: row.get(6)?,
            run_at: row.get(7)?,
            worker: row.get(8)?,
            lease_until: row.get(9)?,
            last_error: row.get(10)?,
            created_at: row.get(11)?,
            updated_at: row.get(12)?,
        },
        row.get(3)?,
    ))
}

fn into_job((mut row, payload): (JobRow, String)) -> Result<Job, StoreError> {
    row.payload = serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
        backend: BACKEND,
        message: format!("job '{}' has a payload that is not JSON: {e}", row.id),
    })?;
    row.into_job(BACKEND)
}
