//! [`IncidentStore`] on the PostgreSQL store.
//!
//! Recording an event is one transaction: an event that may open an incident first inserts it
//! with `ON CONFLICT DO NOTHING` on the partial unique index of unresolved fingerprints (a
//! concurrent inserter of the same fingerprint waits for the first to commit, then inserts
//! nothing); otherwise the unresolved incident is locked (`SELECT … FOR UPDATE`), so events of
//! one fingerprint from any number of tasks and keel instances take seqs one after the other.
//! The event, the incident's new state and its change job are written in that transaction.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{
    EVENT_COLUMNS, EventRow, INCIDENT_COLUMNS, Incident, IncidentEvent, IncidentRow, IncidentStatus, IncidentStore,
    MAX_EVENTS_LISTED, MAX_PLAYBOOK_LISTED, NewIncidentEvent, PLAYBOOK_COLUMNS, PlaybookEntry, RUNBOOK_COLUMNS,
    Recorded, Runbook, Step, check_event, check_incident_id, check_resolve, check_runbook, resolve_step, step,
};
use crate::StoreError;
use crate::jobs::insert_job_postgres;
use crate::postgres::{PostgresStore, column_error, db_error, query};
use crate::rows::clamp_i64;
use crate::store::{StoreFuture, check_name, now_millis, to_i64};

const BACKEND: &str = "postgres";

/// How many transactions one call tries before giving up on conflicts with concurrent writers.
/// Between attempts it waits a random while (up to 2, 4, 8 … 64 ms): writers that collided do not
/// collide again in step (about 0.3 s in all at most).
const ATTEMPTS: u32 = 10;

/// The random wait before attempt `attempt` (from 1) after a conflict.
async fn back_off(attempt: u32) {
    let most = 2u64 << attempt.min(5);
    tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(1..=most))).await;
}

/// Why one attempt failed: a conflict with a concurrent writer (tried again), or an error.
enum Failure {
    Retry,
    Error(StoreError),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Error(error)
    }
}

/// A serialization failure, deadlock or unique violation is retried; anything else is an error.
fn failure(error: tokio_postgres::Error) -> Failure {
    let retry = [SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED, SqlState::UNIQUE_VIOLATION];
    match error.code() {
        Some(code) if retry.contains(code) => Failure::Retry,
        _ => Failure::Error(db_error(error)),
    }
}

/// What [`ATTEMPTS`] conflicting attempts end with.
fn too_busy(what: &str) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: format!("{what} conflicted with concurrent writers {ATTEMPTS} times; try again"),
    }
}

async fn run<C: GenericClient>(client: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Failure> {
    let statement = client.prepare_cached(sql).await.map_err(failure)?;
    client.execute(&statement, params).await.map_err(failure)
}

async fn rows<C: GenericClient>(client: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Failure> {
    let statement = client.prepare_cached(sql).await.map_err(failure)?;
    client.query(&statement, params).await.map_err(failure)
}

impl IncidentStore for PostgresStore {
    fn record_event(&self, event: NewIncidentEvent) -> StoreFuture<'_, Recorded> {
        Box::pin(async move {
            check_event(&event)?;
            let mut client = self.client().await?;
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    back_off(attempt).await;
                }
                let tx = client.transaction().await.map_err(db_error)?;
                match record(&tx, event.clone(), now_millis()).await {
                    Ok(Some(recorded)) => match tx.commit().await.map_err(failure) {
                        Ok(()) => return Ok(recorded),
                        Err(Failure::Retry) => {}
                        Err(Failure::Error(error)) => return Err(error),
                    },
                    // Dropping the transaction rolls it back.
                    Ok(None) | Err(Failure::Retry) => {}
                    Err(Failure::Error(error)) => return Err(error),
                }
            }
            Err(too_busy("recording an incident event"))
        })
    }

    fn incident<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Incident>> {
        Box::pin(async move {
            check_incident_id(id)?;
            let client = self.client().await?;
            let rows =
                query(&client, &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"), &[&id]).await?;
            rows.first().map(incident_row).transpose()
        })
    }

    fn list_incidents(&self, status: Option<IncidentStatus>, limit: usize) -> StoreFuture<'_, Vec<Incident>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = query(
                &client,
                &format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE ($1::text IS NULL OR status = $1)
                     ORDER BY opened_at DESC, id DESC LIMIT $2"
                ),
                &[&status.map(IncidentStatus::as_str), &clamp_i64(limit as u64)],
            )
            .await?;
            rows.iter().map(incident_row).collect()
        })
    }

    fn incident_events<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Vec<IncidentEvent>> {
        Box::pin(async move {
            check_incident_id(id)?;
            let client = self.client().await?;
            let rows = query(
                &client,
                &format!("SELECT {EVENT_COLUMNS} FROM incident_events WHERE incident_id = $1 ORDER BY seq LIMIT $2"),
                &[&id, &clamp_i64(MAX_EVENTS_LISTED as u64)],
            )
            .await?;
            rows.iter().map(event_row).collect()
        })
    }

    fn resolve_incident<'a>(
        &'a self,
        id: &'a str,
        by: &'a str,
        fixed_by: Option<String>,
    ) -> StoreFuture<'a, Option<Incident>> {
        Box::pin(async move {
            check_resolve(id, by, fixed_by.as_deref())?;
            let mut client = self.client().await?;
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    back_off(attempt).await;
                }
                let tx = client.transaction().await.map_err(db_error)?;
                match resolve(&tx, id, by, fixed_by.as_deref(), now_millis()).await {
                    Ok(incident) => match tx.commit().await.map_err(failure) {
                        Ok(()) => return Ok(incident),
                        Err(Failure::Retry) => {}
                        Err(Failure::Error(error)) => return Err(error),
                    },
                    Err(Failure::Retry) => {}
                    Err(Failure::Error(error)) => return Err(error),
                }
            }
            Err(too_busy("resolving an incident"))
        })
    }

    fn playbook<'a>(&'a self, fingerprint: &'a str) -> StoreFuture<'a, Vec<PlaybookEntry>> {
        Box::pin(async move {
            check_name("fingerprint", fingerprint)?;
            let client = self.client().await?;
            let rows = query(
                &client,
                &format!(
                    "SELECT {PLAYBOOK_COLUMNS} FROM playbook WHERE fingerprint = $1 ORDER BY at DESC, id DESC LIMIT $2"
                ),
                &[&fingerprint, &clamp_i64(MAX_PLAYBOOK_LISTED as u64)],
            )
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(PlaybookEntry {
                        fingerprint: row.try_get(0).map_err(column_error)?,
                        fix: row.try_get(1).map_err(column_error)?,
                        incident_id: row.try_get(2).map_err(column_error)?,
                        at: row.try_get(3).map_err(column_error)?,
                    })
                })
                .collect()
        })
    }

    fn put_runbook(&self, runbook: Runbook) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            check_runbook(&runbook)?;
            let client = self.client().await?;
            let missing =
                || StoreError::InvalidInput(format!("no incident '{}' to keep a runbook for", runbook.incident_id));
            // One statement: no row written = no incident; an incident deleted between the check
            // and the insert fails the foreign key.
            let statement = client
                .prepare_cached(&format!(
                    "INSERT INTO runbooks ({RUNBOOK_COLUMNS})
                     SELECT $1::text, $2::text, $3::text, $4::bigint
                     WHERE EXISTS (SELECT 1 FROM incidents WHERE id = $1::text)
                     ON CONFLICT (incident_id) DO UPDATE SET
                        markdown = EXCLUDED.markdown, source = EXCLUDED.source, generated_at = EXCLUDED.generated_at"
                ))
                .await
                .map_err(db_error)?;
            let written = client
                .execute(&statement, &[&runbook.incident_id, &runbook.markdown, &runbook.source, &runbook.generated_at])
                .await
                .map_err(|error| {
                    if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) { missing() } else { db_error(error) }
                })?;
            if written == 0 {
                return Err(missing());
            }
            Ok(())
        })
    }

    fn runbook<'a>(&'a self, incident_id: &'a str) -> StoreFuture<'a, Option<Runbook>> {
        Box::pin(async move {
            check_incident_id(incident_id)?;
            let client = self.client().await?;
            let rows = query(
                &client,
                &format!("SELECT {RUNBOOK_COLUMNS} FROM runbooks WHERE incident_id = $1"),
                &[&incident_id],
            )
            .await?;
            rows.first()
                .map(|row| {
                    Ok(Runbook {
                        incident_id: row.try_get(0).map_err(column_error)?,
                        markdown: row.try_get(1).map_err(column_error)?,
                        source: row.try_get(2).map_err(column_error)?,
                        generated_at: row.try_get(3).map_err(column_error)?,
                    })
                })
                .transpose()
        })
    }
}

/// One attempt at [`IncidentStore::record_event`] in the transaction `tx`. `Ok(None)`: the
/// incident that kept this event from opening one was resolved before it could be locked; the
/// caller rolls back and tries again.
async fn record<C: GenericClient>(tx: &C, event: NewIncidentEvent, now: i64) -> Result<Option<Recorded>, Failure> {
    let opens = event.effect.apply(None).is_some();
    if opens && let Some(new) = step(None, event.clone(), now) {
        // Waits for a concurrent inserter of the fingerprint to finish; inserts nothing if it
        // committed an unresolved incident.
        if insert_incident(tx, &new.incident).await? {
            write_event_and_job(tx, &new).await?;
            return Ok(Some(new.recorded()));
        }
    }
    let sql =
        format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE fingerprint = $1 AND status <> 'resolved' FOR UPDATE");
    let current = rows(tx, &sql, &[&event.fingerprint]).await?.first().map(incident_row).transpose()?;
    let Some(current) = current else {
        return Ok(if opens { None } else { Some(Recorded { incident: None, event: None, previous: None }) });
    };
    let Some(next) = step(Some(current), event, now) else {
        return Err(Failure::Error(StoreError::Backend {
            backend: BACKEND,
            message: "an event on an incident changed nothing".to_owned(),
        }));
    };
    update_incident(tx, &next.incident).await?;
    write_event_and_job(tx, &next).await?;
    Ok(Some(next.recorded()))
}

/// One attempt at [`IncidentStore::resolve_incident`] in the transaction `tx`.
async fn resolve<C: GenericClient>(
    tx: &C,
    id: &str,
    by: &str,
    fixed_by: Option<&str>,
    now: i64,
) -> Result<Option<Incident>, Failure> {
    let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1 FOR UPDATE");
    let Some(incident) = rows(tx, &sql, &[&id]).await?.first().map(incident_row).transpose()? else {
        return Ok(None);
    };
    let fingerprint = incident.fingerprint.clone();
    let incident = match resolve_step(incident.clone(), by, fixed_by, now) {
        Some(step) => {
            update_incident(tx, &step.incident).await?;
            write_event_and_job(tx, &step).await?;
            step.incident
        }
        None => incident,
    };
    if let Some(fix) = fixed_by {
        run(
            tx,
            "INSERT INTO playbook (fingerprint, fix, incident_id, at) VALUES ($1, $2, $3, $4)",
            &[&fingerprint, &fix, &id, &now],
        )
        .await?;
    }
    Ok(Some(incident))
}

/// Inserts a new incident unless its fingerprint has an unresolved one; whether it did.
async fn insert_incident<C: GenericClient>(tx: &C, incident: &Incident) -> Result<bool, Failure> {
    let inserted = run(
        tx,
        &format!(
            "INSERT INTO incidents ({INCIDENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (fingerprint) WHERE status <> 'resolved' DO NOTHING"
        ),
        &[
            &incident.id,
            &incident.fingerprint,
            &incident.kind,
            &incident.title,
            &incident.status.as_str(),
            &incident.upstream,
            &incident.model,
            &incident.opened_at,
            &incident.updated_at,
            &incident.mitigated_at,
            &incident.resolved_at,
            &to_i64(incident.event_count, "event count")?,
        ],
    )
    .await?;
    Ok(inserted > 0)
}

/// Writes the state [`step`] computed for a locked incident.
async fn update_incident<C: GenericClient>(tx: &C, incident: &Incident) -> Result<(), Failure> {
    run(
        tx,
        "UPDATE incidents SET status = $2, updated_at = $3, mitigated_at = $4, resolved_at = $5, event_count = $6
         WHERE id = $1",
        &[
            &incident.id,
            &incident.status.as_str(),
            &incident.updated_at,
            &incident.mitigated_at,
            &incident.resolved_at,
            &to_i64(incident.event_count, "event count")?,
        ],
    )
    .await?;
    Ok(())
}

/// Appends the step's event to the timeline and enqueues its change job, if any.
async fn write_event_and_job<C: GenericClient>(tx: &C, step: &Step) -> Result<(), Failure> {
    let event = &step.event;
    run(
        tx,
        &format!("INSERT INTO incident_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[
            &event.incident_id,
            &to_i64(event.seq, "seq")?,
            &event.at,
            &event.event,
            &event.effect.as_str(),
            &event.detail,
        ],
    )
    .await?;
    if let Some(job) = &step.job {
        insert_job_postgres(tx, job.clone(), event.at).await?;
    }
    Ok(())
}

fn incident_row(row: &Row) -> Result<Incident, StoreError> {
    IncidentRow {
        id: row.try_get(0).map_err(column_error)?,
        fingerprint: row.try_get(1).map_err(column_error)?,
        kind: row.try_get(2).map_err(column_error)?,
        title: row.try_get(3).map_err(column_error)?,
        status: row.try_get(4).map_err(column_error)?,
        upstream: row.try_get(5).map_err(column_error)?,
        model: row.try_get(6).map_err(column_error)?,
        opened_at: row.try_get(7).map_err(column_error)?,
        updated_at: row.try_get(8).map_err(column_error)?,
        mitigated_at: row.try_get(9).map_err(column_error)?,
        resolved_at: row.try_get(10).map_err(column_error)?,
        event_count: row.try_get(11).map_err(column_error)?,
    }
    .into_incident(BACKEND)
}

fn event_row(row: &Row) -> Result<IncidentEvent, StoreError> {
    EventRow {
        incident_id: row.try_get(0).map_err(column_error)?,
        seq: row.try_get(1).map_err(column_error)?,
        at: row.try_get(2).map_err(column_error)?,
        event: row.try_get(3).map_err(column_error)?,
        effect: row.try_get(4).map_err(column_error)?,
        detail: row.try_get(5).map_err(column_error)?,
    }
    .into_event(BACKEND)
}
