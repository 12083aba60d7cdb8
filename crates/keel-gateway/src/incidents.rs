//! keel's incident endpoints and the background work behind them.
//!
//! - `GET /keel/incidents[?status=open|mitigated|resolved&limit=N]` → `{"incidents": [...]}`,
//!   newest first; `GET /keel/incidents/{id}` → `{"incident", "events", "runbook"}`;
//!   `GET /keel/incidents/{id}/runbook` → the runbook as `text/markdown`;
//!   `POST /keel/incidents/{id}/resolve` (`{"fixed_by": "…", "by": "…"}`, both optional).
//! - `GET /keel/jobs[?status=…&limit=N]` → `{"jobs": [...], "counts": {...}}`.
//! - `POST /keel/events` (`{"type": "session.timeout", "session_id": "…"}`, …, or an array) and
//!   `POST /keel/events/alertmanager` (payload version 4): recorded like keel's own events.
//! - [`spawn`]: the recording task and the job worker, with runbooks asked of the model route
//!   `[incidents] model` through keel's own pipeline ([`PipelineWriter`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::StatusCode;
use keel_incident::runbook::ModelWriter;
use keel_incident::{Worker, WorkerConfig, intake};
use keel_session::{IncidentStatus, JobStatus, NewIncidentEvent};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::state::{Gateway, Inner};

/// Most incidents or jobs one call returns.
const MAX_LIMIT: usize = 1_000;

/// How often the worker looks for due jobs when nothing wakes it.
const POLL: Duration = Duration::from_millis(500);

/// Starts the incident log's recording task and job worker (none without an incident log).
pub(crate) fn spawn(gateway: &Gateway) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(log) = &gateway.inner.incidents else { return Vec::new() };
    let mut tasks = Vec::new();
    if let Some(recording) = log.take_recording() {
        tasks.push(tokio::spawn(recording.run()));
    }
    let config = &gateway.config().incidents;
    let writer: Option<Arc<dyn ModelWriter>> = config.model.as_ref().map(|_| {
        Arc::new(PipelineWriter { gateway: Arc::downgrade(&gateway.inner), timeout: config.job_lease / 2 }) as _
    });
    let worker_config = WorkerConfig {
        worker_id: format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple()),
        deployment: gateway.config().deployment(),
        endpoints: config.notify.clone(),
        model_route: config.model.clone(),
        runbook_dir: config.runbook_dir.clone(),
        lease: config.job_lease,
        poll: POLL,
        model_retry: config.model_retry,
    };
    let worker = Arc::new(Worker::new(log.stores.clone(), worker_config, writer, Arc::clone(&log.wake)));
    tasks.push(tokio::spawn(worker.run()));
    tasks
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "keel".to_owned())
}

/// Asks a model route for JSON through keel's own pipeline: a `/api/chat` request with the
/// schema as `format`, so the structured-output guard repairs and validates the answer.
struct PipelineWriter {
    /// The gateway (weak: the worker must not keep it alive).
    gateway: Weak<Inner>,
    /// How long one answer may take.
    timeout: Duration,
}

impl ModelWriter for PipelineWriter {
    fn ask<'a>(
        &'a self,
        route: &'a str,
        system: &'a str,
        prompt: String,
        schema: Value,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let gateway = Gateway::from_inner(self.gateway.upgrade().ok_or("keel is shutting down")?)
                .map_err(|error| error.to_string())?;
            let body = keel_incident::runbook::model::chat_request(route, system, &prompt, schema);
            let mut request = http::Request::post("/api/chat")
                .header(http::header::HOST, "127.0.0.1")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .map_err(|error| error.to_string())?;
            request.extensions_mut().insert(crate::client::Caller {
                name: Arc::from("keel-runbooks"),
                limits: crate::config::KeyLimits::default(),
            });
            let call = crate::app(gateway).oneshot(request);
            let response = tokio::time::timeout(self.timeout, call)
                .await
                .map_err(|_| format!("the model gave no answer within {}", keel_types::duration::format(self.timeout)))?
                .map_err(|error| error.to_string())?;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 4 << 20).await.map_err(|error| error.to_string())?;
            if !status.is_success() {
                return Err(format!(
                    "keel answered {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                ));
            }
            let answer: Value =
                serde_json::from_slice(&bytes).map_err(|error| format!("the answer is not JSON: {error}"))?;
            let content = answer["message"]["content"].as_str().ok_or("the answer has no message content")?;
            serde_json::from_str(content).map_err(|error| format!("the model's content is not JSON: {error}"))
        })
    }
}

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
            log.wake.notify_one();
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
        match log.stores.incidents.record_event(event).await {
            Ok(recorded) => {
                if recorded.changed() {
                    log.wake.notify_one();
                }
                incidents.push(recorded.incident.map(|incident| incident.id));
            }
            Err(err) => return failed(&err),
        }
    }
    (StatusCode::ACCEPTED, Json(json!({ "accepted": incidents.len(), "incidents": incidents }))).into_response()
}
