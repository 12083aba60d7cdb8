//! keel's incident endpoints: incidents, their runbooks, the job queue, and events posted in.
//!
//! - `GET /keel/incidents[?status=open|mitigated|resolved&limit=N]` → `{"incidents": [...]}`,
//!   newest first; `GET /keel/incidents/{id}` → `{"incident", "events", "runbook"}`;
//!   `GET /keel/incidents/{id}/runbook` → the runbook as `text/markdown`;
//!   `POST /keel/incidents/{id}/resolve` (`{"fixed_by": "…", "by": "…"}`, both optional).
//! - `GET /keel/jobs[?status=…&limit=N]` → `{"jobs": [...], "counts": {...}}`.
//! - `POST /keel/events` (`{"type": "session.timeout", "session_id": "…"}`, …, or an array) and
//!   `POST /keel/events/alertmanager` (payload version 4): recorded like keel's own events.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use keel_incident::intake;
use keel_session::{IncidentStatus, JobStatus, NewIncidentEvent};
use serde::Deserialize;
use serde_json::json;

use crate::state::Gateway;

/// Most incidents or jobs one call returns.
const MAX_LIMIT: usize = 1_000;

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The answer when this keel keeps no incident log, saying why.
fn off(gateway: &Gateway) -> Response {
    let why = if gateway.inner.store.is_none() {
        "this keel runs without a store, which incidents are kept in (see [store] url)"
    } else {
        "incidents are off in this keel ([incidents] enabled = false)"
    };
    error(StatusCode::SERVICE_UNAVAILABLE, why.to_owned())
}

fn failed(err: &keel_session::StoreError) -> Response {
    let status = match err {
        keel_session::StoreError::InvalidInput(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, format!("store: {err}"))
}

/// `?status=&limit=` of the lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /keel/incidents`.
pub(crate) async fn list(State(gateway): State<Gateway>, Query(query): Query<ListQuery>) -> Response {
    let Some(log) = gateway.inner.incidents.as_ref() else { return off(&gateway) };
    let status = match query.status.as_deref().map(str::parse::<IncidentStatus>).transpose() {
        Ok(status) => status,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    match log.stores.incidents.list_incidents(status, query.limit.unwrap_or(100).clamp(1, MAX_LIMIT)).await {
        Ok(incidents) => Json(json!({ "incidents": incidents })).into_response(),
        Err(err) => failed(&err),
    }
}

/// `GET /keel/incidents/{id}`: the incident, its timeline and its runbook's source.
pub(crate) async fn show(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    let Some(log) = gateway.inner.incidents.as_ref() else { return off(&gateway) };
    let store = &log.stores.incidents;
    let incident = match store.incident(&id).await {
        Ok(Some(incident)) => incident,
        Ok(None) => return not_found(&id),
        Err(err) => return failed(&err),
    };
    let (events, runbook) = match (store.incident_events(&id).await, store.runbook(&id).await) {
        (Ok(events), Ok(runbook)) => (events, runbook),
        (Err(err), _) | (_, Err(err)) => return failed(&err),
    };
    let runbook = runbook.map(|runbook| json!({ "source": runbook.source, "generated_at": runbook.generated_at, "url": format!("/keel/incidents/{id}/runbook") }));
    Json(json!({ "incident": incident, "events": events, "runbook": runbook })).into_response()
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("incident '{id}' not found; GET /keel/incidents lists them"))
}

/// `GET /keel/incidents/{id}/runbook`: `text/markdown`.
pub(crate) async fn runbook(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    let Some(log) = gateway.inner.incidents.as_ref() else { return off(&gateway) };
    match log.stores.incidents.runbook(&id).await {
        Ok(Some(runbook)) => {
            ([(http::header::CONTENT_TYPE, "text/markdown; charset=utf-8")], runbook.markdown).into_response()
        }
        Ok(None) => match log.stores.incidents.incident(&id).await {
            Ok(Some(_)) => {
                let mut response = error(
                    StatusCode::NOT_FOUND,
                    format!("the runbook of incident '{id}' is being written; ask again in a few seconds"),
                );
                response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("2"));
                response
            }
            Ok(None) => not_found(&id),
            Err(err) => failed(&err),
        },
        Err(err) => failed(&err),
    }
}

/// `POST /keel/incidents/{id}/resolve` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    fixed_by: Option<String>,
    by: Option<String>,
}

/// `POST /keel/incidents/{id}/resolve`: resolves by hand; `fixed_by` goes to the playbook.
pub(crate) async fn resolve(State(gateway): State<Gateway>, Path(id): Path<String>, body: Bytes) -> Response {
    let Some(log) = gateway.inner.incidents.as_ref() else { return off(&gateway) };
    let body: ResolveBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResolveBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"fixed_by\": \"…\", \"by\": \"…\"}} (both optional): {err}"),
                );
            }
        }
    };
    let by = body.by.unwrap_or_else(|| "api".to_owned());
    match log.stores.incidents.resolve_incident(&id, &by, body.fixed_by).await {
        Ok(Some(incident)) => {
            // What the recorder shows as open learns it now, not at its next read of the store.
            let recorded = keel_session::Recorded {
                incident: Some(incident.clone()),
                event: None,
                previous: Some(IncidentStatus::Open),
            };
            log.recorder.learned(&incident.fingerprint, &recorded);
            Json(json!({ "incident": incident })).into_response()
        }
        Ok(None) => not_found(&id),
        Err(err) => failed(&err),
    }
}

/// `GET /keel/jobs`.
pub(crate) async fn jobs(State(gateway): State<Gateway>, Query(query): Query<ListQuery>) -> Response {
    let Some(log) = gateway.inner.incidents.as_ref() else { return off(&gateway) };
    let status = match query.status.as_deref().map(str::parse::<JobStatus>).transpose() {
        Ok(status) => status,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    match (log.stores.jobs.list_jobs(status, limit).await, log.stores.jobs.count_jobs().await) {
        (Ok(jobs), Ok(counts)) => Json(json!({ "jobs": jobs, "counts": counts })).into_response(),
        (Err(err), _) | (_, Err(err)) => failed(&err),
    }
}

/// `POST /keel/events`.
pub(crate) async fn post_events(State(gateway): State<Gateway>, body: Bytes) -> Response {
    take_events(&gateway, intake::read_events(&body)).await
}

/// `POST /keel/events/alertmanager`.
pub(crate) async fn post_alertmanager(State(gateway): State<Gateway>, body: Bytes) -> Response {
    take_events(&gateway, intake::read_alertmanager(&body)).await
}

/// Records posted events (at once, not through the recorder's queue, so a 202 means stored)
/// and answers `{"accepted": N, "incidents": [ids]}`.
async fn take_events(gateway: &Gateway, events: Result<Vec<NewIncidentEvent>, intake::IntakeError>) -> Response {
    let Some(log) = gateway.inner.incidents.as_ref() else { return off(gateway) };
    let events = match events {
        Ok(events) => events,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let mut incidents = Vec::with_capacity(events.len());
    for event in events {
        let fingerprint = event.fingerprint.clone();
        match log.stores.incidents.record_event(event).await {
            Ok(recorded) => {
                log.recorder.learned(&fingerprint, &recorded);
                incidents.push(recorded.incident.map(|incident| incident.id));
            }
            Err(err) => return failed(&err),
        }
    }
    (StatusCode::ACCEPTED, Json(json!({ "accepted": incidents.len(), "incidents": incidents }))).into_response()
}
