//! [`JobStore`] on the PostgreSQL store: one statement per call on its pool. A claim is one
//! `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED) RETURNING …`: concurrent claimers
//! (tasks or keel instances) take different jobs without waiting on each other. Its `WITH`
//! first fails, in the same statement, the running jobs whose lease ended with no attempt left.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{
    Enqueued, GAVE_UP_AFTER, GAVE_UP_BEFORE, JOB_COLUMNS, Job, JobCounts, JobRow, JobStatus, JobStore, NewJob,
    add_count, check_claim, check_job_id, check_new_job, check_worker, cut_error, new_job,
};
use crate::StoreError;
use crate::postgres::{PostgresStore, column_error, execute, query};
use crate::rows::clamp_i64;
use crate::store::{StoreFuture, now_millis};

const BACKEND: &str = "postgres";

impl JobStore for PostgresStore {
    fn enqueue(&self, job: NewJob) -> StoreFuture<'_, Enqueued> {
        Box::pin(async move {
            check_new_job(&job)?;
            let client = self.client().await?;
            insert_job(&client, job, now_millis()).await
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
            let client = self.client().await?;
            // `gave_up` fails the running jobs of these kinds whose lease ended with no attempt
            // left; it and the claim see the same snapshot, so the claim leaves those out itself.
            let sql = format!(
                "WITH gave_up AS (
                     UPDATE jobs SET status = 'failed', last_error = $5::text || attempts || $6::text,
                            lease_until = NULL, updated_at = $3
                     WHERE id IN (
                         SELECT id FROM jobs
                         WHERE status = 'running' AND lease_until < $3 AND attempts >= max_attempts
                           AND (cardinality($4::text[]) = 0 OR kind = ANY($4::text[]))
                         FOR UPDATE SKIP LOCKED))
                 UPDATE jobs SET status = 'running', worker = $1, lease_until = $2, attempts = attempts + 1,
                        updated_at = $3
                 WHERE id = (
                     SELECT id FROM jobs
                     WHERE ((status = 'queued' AND run_at <= $3)
                            OR (status = 'running' AND lease_until < $3 AND attempts < max_attempts))
                       AND (cardinality($4::text[]) = 0 OR kind = ANY($4::text[]))
                     ORDER BY run_at, id
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING {JOB_COLUMNS}"
            );
            let lease_until = now.saturating_add(lease_ms);
            let rows =
                query(&client, &sql, &[&worker, &lease_until, &now, &kinds, &GAVE_UP_BEFORE, &GAVE_UP_AFTER]).await?;
            rows.first().map(job_row).transpose()
        })
    }

    fn complete<'a>(&'a self, id: &'a str, worker: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_job_id(id)?;
            check_worker(worker)?;
            let client = self.client().await?;
            let changed = execute(
                &client,
                "UPDATE jobs SET status = 'done', lease_until = NULL, updated_at = $3
                 WHERE id = $1 AND status = 'running' AND worker = $2",
                &[&id, &worker, &now],
            )
            .await?;
            Ok(changed > 0)
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
            let client = self.client().await?;
            let changed = execute(
                &client,
                "UPDATE jobs SET
                    status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                    run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE $4 END,
                    last_error = $3, lease_until = NULL, updated_at = $5
                 WHERE id = $1 AND status = 'running' AND worker = $2",
                &[&id, &worker, &cut_error(error), &run_at, &now],
            )
            .await?;
            Ok(changed > 0)
        })
    }

    fn fail<'a>(&'a self, id: &'a str, worker: &'a str, error: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_job_id(id)?;
            check_worker(worker)?;
            let client = self.client().await?;
            let changed = execute(
                &client,
                "UPDATE jobs SET status = 'failed', last_error = $3, lease_until = NULL, updated_at = $4
                 WHERE id = $1 AND status = 'running' AND worker = $2",
                &[&id, &worker, &cut_error(error), &now],
            )
            .await?;
            Ok(changed > 0)
        })
    }

    fn job<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Job>> {
        Box::pin(async move {
            check_job_id(id)?;
            let client = self.client().await?;
            let rows = query(&client, &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), &[&id]).await?;
            rows.first().map(job_row).transpose()
        })
    }

    fn list_jobs(&self, status: Option<JobStatus>, limit: usize) -> StoreFuture<'_, Vec<Job>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = query(
                &client,
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1::text IS NULL OR status = $1)
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                ),
                &[&status.map(JobStatus::as_str), &clamp_i64(limit as u64)],
            )
            .await?;
            rows.iter().map(job_row).collect()
        })
    }

    fn count_jobs(&self) -> StoreFuture<'_, JobCounts> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = query(&client, "SELECT status, count(*) FROM jobs GROUP BY status", &[]).await?;
            let mut counts = JobCounts::default();
            for row in &rows {
                let status: String = row.try_get(0).map_err(column_error)?;
                let count: i64 = row.try_get(1).map_err(column_error)?;
                add_count(&mut counts, &status, count, BACKEND)?;
            }
            Ok(counts)
        })
    }

    fn prune_jobs(&self, before: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.client().await?;
            execute(&client, "DELETE FROM jobs WHERE status IN ('done', 'failed') AND updated_at < $1", &[&before])
                .await
        })
    }
}

/// Enqueues `job` (checked) at `now` on `client` — a pooled connection, or the transaction of
/// the incident store recording an event — or returns the stored job of its kind and key.
pub(crate) async fn insert_job<C: GenericClient>(client: &C, job: NewJob, now: i64) -> Result<Enqueued, StoreError> {
    let job = new_job(job, now);
    let inserted = execute(
        client,
        "INSERT INTO jobs (id, kind, key, payload, status, attempts, max_attempts, run_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $8)
         ON CONFLICT (kind, key) DO NOTHING",
        &[
            &job.id,
            &job.kind,
            &job.key,
            &job.payload,
            &job.status.as_str(),
            &i64::from(job.max_attempts),
            &job.run_at,
            &now,
        ],
    )
    .await?;
    if inserted > 0 {
        return Ok(Enqueued { job, created: true });
    }
    // A conflict: the row is committed (ON CONFLICT waited for its inserter), so it is visible.
    let rows =
        query(client, &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE kind = $1 AND key = $2"), &[&job.kind, &job.key])
            .await?;
    let stored = rows.first().ok_or_else(|| StoreError::Backend {
        backend: BACKEND,
        message: format!("job {} '{}' is neither inserted nor stored", job.kind, job.key),
    })?;
    Ok(Enqueued { job: job_row(stored)?, created: false })
}

fn job_row(row: &Row) -> Result<Job, StoreError> {
    JobRow {
        id: row.try_get(0).map_err(column_error)?,
        kind: row.try_get(1).map_err(column_error)?,
        key: row.try_get(2).map_err(column_error)?,
        payload: row.try_get(3).map_err(column_error)?,
        status: row.try_get(4).map_err(column_error)?,
        attempts: row.try_get(5).map_err(column_error)?,
        max_attempts: row.try_get(6).map_err(column_error)?,
        run_at: row.try_get(7).map_err(column_error)?,
        worker: row.try_get(8).map_err(column_error)?,
        lease_until: row.try_get(9).map_err(column_error)?,
        last_error: row.try_get(10).map_err(column_error)?,
        created_at: row.try_get(11).map_err(column_error)?,
        updated_at: row.try_get(12).map_err(column_error)?,
    }
    .into_job(BACKEND)
}
