//! [`IncidentStore`] on the SQLite store: writes go through its writer thread
//! ([`SqliteStore::write_with`], so they share its group commits and one event is recorded, its
//! incident updated and its change job enqueued in one step), reads through its readers.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    EVENT_COLUMNS, EventRow, INCIDENT_COLUMNS, Incident, IncidentEvent, IncidentRow, IncidentStatus, IncidentStore,
    MAX_EVENTS_LISTED, MAX_PLAYBOOK_LISTED, NewIncidentEvent, PLAYBOOK_COLUMNS, PlaybookEntry, RUNBOOK_COLUMNS,
    Recorded, Runbook, Step, check_event, check_incident_id, check_resolve, check_runbook, resolve_step, step,
};
use crate::StoreError;
use crate::jobs::insert_job_sqlite;
use crate::rows::clamp_i64;
use crate::sqlite::{SqliteStore, db_error};
use crate::store::{StoreFuture, check_name, to_i64};

const BACKEND: &str = "sqlite";

impl IncidentStore for SqliteStore {
    fn record_event(&self, event: NewIncidentEvent) -> StoreFuture<'_, Recorded> {
        Box::pin(async move {
            check_event(&event)?;
            self.write_with(move |conn, now| record(conn, event, now)).await
        })
    }

    fn incident<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Incident>> {
        Box::pin(async move {
            check_incident_id(id)?;
            let id = id.to_owned();
            self.read(move |conn| load_incident(conn, &id)).await
        })
    }

    fn list_incidents(&self, status: Option<IncidentStatus>, limit: usize) -> StoreFuture<'_, Vec<Incident>> {
        Box::pin(self.read(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE (?1 IS NULL OR status = ?1)
                     ORDER BY opened_at DESC, id DESC LIMIT ?2"
                ))
                .and_then(|mut select| {
                    select
                        .query_map(params![status.map(IncidentStatus::as_str), clamp_i64(limit as u64)], incident_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_error)?;
            rows.into_iter().map(|row| row.into_incident(BACKEND)).collect()
        }))
    }

    fn incident_events<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Vec<IncidentEvent>> {
        Box::pin(async move {
            check_incident_id(id)?;
            let id = id.to_owned();
            self.read(move |conn| {
                let rows = conn
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM incident_events WHERE incident_id = ?1 ORDER BY seq LIMIT ?2"
                    ))
                    .and_then(|mut select| {
                        select
                            .query_map(params![id, clamp_i64(MAX_EVENTS_LISTED as u64)], event_row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_error)?;
                rows.into_iter().map(into_event).collect()
            })
            .await
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
            let (id, by) = (id.to_owned(), by.to_owned());
            self.write_with(move |conn, now| resolve(conn, &id, &by, fixed_by, now)).await
        })
    }

    fn playbook<'a>(&'a self, fingerprint: &'a str) -> StoreFuture<'a, Vec<PlaybookEntry>> {
        Box::pin(async move {
            check_name("fingerprint", fingerprint)?;
            let fingerprint = fingerprint.to_owned();
            self.read(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {PLAYBOOK_COLUMNS} FROM playbook WHERE fingerprint = ?1 ORDER BY at DESC, id DESC LIMIT ?2"
                ))
                .and_then(|mut select| {
                    select
                        .query_map(params![fingerprint, clamp_i64(MAX_PLAYBOOK_LISTED as u64)], |row| {
                            Ok(PlaybookEntry {
                                fingerprint: row.get(0)?,
                                fix: row.get(1)?,
                                incident_id: row.get(2)?,
                                at: row.get(3)?,
                            })
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_error)
            })
            .await
        })
    }

    fn put_runbook(&self, runbook: Runbook) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            check_runbook(&runbook)?;
            self.write_with(move |conn, _| {
                if !incident_exists(conn, &runbook.incident_id)? {
                    return Err(StoreError::InvalidInput(format!(
                        "no incident '{}' to keep a runbook for",
                        runbook.incident_id
                    )));
                }
                conn.prepare_cached(&format!(
                    "INSERT INTO runbooks ({RUNBOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (incident_id) DO UPDATE SET
                        markdown = excluded.markdown, source = excluded.source, generated_at = excluded.generated_at"
                ))
                .and_then(|mut upsert| {
                    upsert.execute(params![runbook.incident_id, runbook.markdown, runbook.source, runbook.generated_at])
                })
                .map_err(db_error)?;
                Ok(())
            })
            .await
        })
    }

    fn runbook<'a>(&'a self, incident_id: &'a str) -> StoreFuture<'a, Option<Runbook>> {
        Box::pin(async move {
            check_incident_id(incident_id)?;
            let id = incident_id.to_owned();
            self.read(move |conn| {
                conn.prepare_cached(&format!("SELECT {RUNBOOK_COLUMNS} FROM runbooks WHERE incident_id = ?1"))
                    .and_then(|mut select| {
                        select
                            .query_row([id], |row| {
                                Ok(Runbook {
                                    incident_id: row.get(0)?,
                                    markdown: row.get(1)?,
                                    source: row.get(2)?,
                                    generated_at: row.get(3)?,
                                })
                            })
                            .optional()
                    })
                    .map_err(db_error)
            })
            .await
        })
    }
}

/// [`IncidentStore::record_event`] on the writer's connection (the single writer makes the
/// look-up of the unresolved incident and the insert one step).
fn record(conn: &Connection, event: NewIncidentEvent, now: i64) -> Result<Recorded, StoreError> {
    let current = conn
        .prepare_cached(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE fingerprint = ?1 AND status <> 'resolved'"
        ))
        .and_then(|mut select| select.query_row([&event.fingerprint], incident_row).optional())
        .map_err(db_error)?
        .map(|row| row.into_incident(BACKEND))
        .transpose()?;
    let Some(step) = step(current, event, now) else {
        return Ok(Recorded { incident: None, event: None, previous: None });
    };
    write_step(conn, &step)?;
    Ok(step.recorded())
}

/// [`IncidentStore::resolve_incident`] on the writer's connection.
fn resolve(
    conn: &Connection,
    id: &str,
    by: &str,
    fixed_by: Option<String>,
    now: i64,
) -> Result<Option<Incident>, StoreError> {
    let Some(incident) = load_incident(conn, id)? else {
        return Ok(None);
    };
    let fingerprint = incident.fingerprint.clone();
    let incident = match resolve_step(incident.clone(), by, fixed_by.as_deref(), now) {
        Some(step) => {
            write_step(conn, &step)?;
            step.incident
        }
        None => incident,
    };
    if let Some(fix) = fixed_by {
        conn.prepare_cached("INSERT INTO playbook (fingerprint, fix, incident_id, at) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut insert| insert.execute(params![fingerprint, fix, id, now]))
            .map_err(db_error)?;
    }
    Ok(Some(incident))
}

/// Writes what [`step`] computed: the incident (inserted when new), its event and change job.
fn write_step(conn: &Connection, step: &Step) -> Result<(), StoreError> {
    let incident = &step.incident;
    let event_count = to_i64(incident.event_count, "event count")?;
    if step.previous.is_none() {
        conn.prepare_cached(&format!(
            "INSERT INTO incidents ({INCIDENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ))
        .and_then(|mut insert| {
            insert.execute(params![
                incident.id,
                incident.fingerprint,
                incident.kind,
                incident.title,
                incident.status.as_str(),
                incident.upstream,
                incident.model,
                incident.opened_at,
                incident.updated_at,
                incident.mitigated_at,
                incident.resolved_at,
                event_count
            ])
        })
        .map_err(db_error)?;
    } else {
        conn.prepare_cached(
            "UPDATE incidents SET status = ?2, updated_at = ?3, mitigated_at = ?4, resolved_at = ?5, event_count = ?6
             WHERE id = ?1",
        )
        .and_then(|mut update| {
            update.execute(params![
                incident.id,
                incident.status.as_str(),
                incident.updated_at,
                incident.mitigated_at,
                incident.resolved_at,
                event_count
            ])
        })
        .map_err(db_error)?;
    }
    let event = &step.event;
    conn.prepare_cached(&format!("INSERT INTO incident_events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))
        .and_then(|mut insert| {
            insert.execute(params![
                event.incident_id,
                event_count,
                event.at,
                event.event,
                event.effect.as_str(),
                event.detail.to_string()
            ])
        })
        .map_err(db_error)?;
    if let Some(job) = &step.job {
        insert_job_sqlite(conn, job.clone(), event.at)?;
    }
    Ok(())
}

fn incident_exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM incidents WHERE id = ?1")
        .and_then(|mut select| select.exists([id]))
        .map_err(db_error)
}

fn load_incident(conn: &Connection, id: &str) -> Result<Option<Incident>, StoreError> {
    conn.prepare_cached(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"))
        .and_then(|mut select| select.query_row([id], incident_row).optional())
        .map_err(db_error)?
        .map(|row| row.into_incident(BACKEND))
        .transpose()
}

fn incident_row(row: &Row<'_>) -> rusqlite::Result<IncidentRow> {
    Ok(IncidentRow {
        id: row.get(0)?,
        fingerprint: row.get(1)?,
        kind: row.get(2)?,
        title: row.get(3)?,
        status: row.get(4)?,
        upstream: row.get(5)?,
        model: row.get(6)?,
        opened_at: row.get(7)?,
        updated_at: row.get(8)?,
        mitigated_at: row.get(9)?,
        resolved_at: row.get(10)?,
        event_count: row.get(11)?,
    })
}

/// A row read as it is stored (`detail` still JSON text).
fn event_row(row: &Row<'_>) -> rusqlite::Result<(EventRow, String)> {
    Ok((
        EventRow {
            incident_id: row.get(0)?,
            seq: row.get(1)?,
            at: row.get(2)?,
            event: row.get(3)?,
            effect: row.get(4)?,
            detail: serde_json::Value::Null,
        },
        row.get(5)?,
    ))
}

fn into_event((mut row, detail): (EventRow, String)) -> Result<IncidentEvent, StoreError> {
    row.detail = serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt {
        backend: BACKEND,
        message: format!("event {} of incident '{}' has a detail that is not JSON: {e}", row.seq, row.incident_id),
    })?;
    row.into_event(BACKEND)
}
