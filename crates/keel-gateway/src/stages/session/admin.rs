//! The sessions admin API: list, show, messages, delete, participants and handoff
//! (`/keel/sessions…`, `admin` scope).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use keel_session::{NewParticipant, Page, SessionFilter, SessionStatus};
use serde::Deserialize;
use serde_json::json;

use super::SharedStore;
use crate::state::Gateway;

/// Most sessions or messages one call returns.
const MAX_LIMIT: usize = 10_000;

/// `GET /keel/sessions` query.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    owner: Option<String>,
    status: Option<String>,
    model: Option<String>,
    /// Unix milliseconds.
    updated_since: Option<i64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /keel/sessions/{id}/messages` query.
#[derive(Debug, Deserialize)]
pub(crate) struct MessagesQuery {
    /// Only messages after this `seq`.
    after: Option<u64>,
    limit: Option<usize>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn store(gateway: &Gateway) -> Option<SharedStore> {
    gateway.inner.store.clone()
}

fn no_store() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "this keel runs without a session store (see [store] url)".into())
}

fn failed(err: &keel_session::StoreError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, format!("session store: {err}"))
}

/// `GET /keel/sessions?owner=&status=&model=&updated_since=&limit=&cursor=`:
/// `{"sessions": [...], "next_cursor": "…" | null}`, most recently updated first.
pub(crate) async fn list(State(gateway): State<Gateway>, Query(query): Query<ListQuery>) -> Response {
    let Some(store) = store(&gateway) else { return no_store() };
    let Ok(status) = query.status.as_deref().map(str::parse::<SessionStatus>).transpose() else {
        return error(StatusCode::BAD_REQUEST, "status must be active, idle, ended or timed_out".into());
    };
    let filter = SessionFilter { owner: query.owner, status, model: query.model, updated_since: query.updated_since };
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let page = match query.cursor {
        Some(cursor) => Page::after(cursor, limit),
        None => Page::first(limit),
    };
    match store.list_sessions(filter, page).await {
        Ok(page) => Json(json!({ "sessions": page.sessions, "next_cursor": page.next_cursor })).into_response(),
        Err(err) => store_error(&err),
    }
}

/// The session, or `SessionNotFound` (which [`store_error`] answers with 404).
async fn existing(
    store: &dyn keel_session::Store,
    id: &str,
) -> Result<keel_session::Session, keel_session::StoreError> {
    store.get_session(id).await?.ok_or_else(|| keel_session::StoreError::SessionNotFound { id: id.to_owned() })
}

/// `GET /keel/sessions/{id}`: `{"session": {...}}`.
pub(crate) async fn show(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    let Some(store) = store(&gateway) else { return no_store() };
    match existing(store.as_ref(), &id).await {
        Ok(session) => Json(json!({ "session": session })).into_response(),
        Err(err) => store_error(&err),
    }
}

/// `GET /keel/sessions/{id}/messages?after=&limit=`: `{"session": {...}, "messages": [...]}` in
/// `seq` order.
pub(crate) async fn messages(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> Response {
    let Some(store) = store(&gateway) else { return no_store() };
    let session = match existing(store.as_ref(), &id).await {
        Ok(session) => session,
        Err(err) => return store_error(&err),
    };
    let limit = query.limit.unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT);
    match store.messages(&id, query.after.unwrap_or(0), limit).await {
        Ok(messages) => Json(json!({ "session": session, "messages": messages })).into_response(),
        Err(err) => store_error(&err),
    }
}

/// `DELETE /keel/sessions/{id}`: 204, or 404 when there was no such session.
pub(crate) async fn delete(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    let Some(store) = store(&gateway) else { return no_store() };
    match store.delete_session(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("session '{id}' not found")),
        Err(err) => store_error(&err),
    }
}

/// `POST /keel/sessions/{id}/participants` and `…/handoff` bodies name a participant so.
#[derive(Debug, Deserialize)]
pub(crate) struct ParticipantBody {
    name: String,
    /// `agent` (default) or `human`.
    #[serde(default)]
    kind: Option<String>,
    role: Option<String>,
}

impl ParticipantBody {
    /// The participant, or what is wrong with the body.
    fn into_new(self) -> Result<NewParticipant, String> {
        let participant = match self.kind.as_deref() {
            None | Some("agent") => NewParticipant::agent(self.name),
            Some("human") => NewParticipant::human(self.name),
            Some(other) => return Err(format!("kind {other:?}: use \"agent\" or \"human\"")),
        };
        Ok(match self.role {
            Some(role) => participant.with_role(role),
            None => participant,
        })
    }
}

/// `POST /keel/sessions/{id}/handoff` body: `{"from": "agent-a", "to": {"name": "agent-b", ...}, "note": "…"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct HandoffBody {
    from: String,
    to: ParticipantBody,
    note: Option<String>,
}

/// A store error as the admin API answers it: 404 for unknown sessions and participants, 400 for
/// bad input, 503 otherwise.
fn store_error(err: &keel_session::StoreError) -> Response {
    use keel_session::StoreError;
    match err {
        StoreError::SessionNotFound { .. } | StoreError::ParticipantNotFound { .. } => {
            error(StatusCode::NOT_FOUND, err.to_string())
        }
        StoreError::InvalidInput { .. } => error(StatusCode::BAD_REQUEST, err.to_string()),
        _ => failed(err),
    }
}

/// `GET /keel/sessions/{id}/participants`: `{"participants": [...]}` in the order added.
pub(crate) async fn participants(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    let Some(store) = store(&gateway) else { return no_store() };
    if let Err(err) = existing(store.as_ref(), &id).await {
        return store_error(&err);
    }
    match store.participants(&id).await {
        Ok(participants) => Json(json!({ "participants": participants })).into_response(),
        Err(err) => store_error(&err),
    }
}

/// `POST /keel/sessions/{id}/participants` with `{"name", "kind": "agent"|"human", "role"}`: adds
/// (or updates) a participant.
pub(crate) async fn add_participant(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    Json(body): Json<ParticipantBody>,
) -> Response {
    let Some(store) = store(&gateway) else { return no_store() };
    let participant = match body.into_new() {
        Ok(participant) => participant,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match store.add_participant(&id, participant).await {
        Ok(participant) => Json(json!({ "participant": participant })).into_response(),
        Err(err) => store_error(&err),
    }
}

/// `DELETE /keel/sessions/{id}/participants/{name}`: 204, or 404.
pub(crate) async fn remove_participant(
    State(gateway): State<Gateway>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let Some(store) = store(&gateway) else { return no_store() };
    match store.remove_participant(&id, &name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("'{name}' is not a participant of session '{id}'")),
        Err(err) => store_error(&err),
    }
}

/// `POST /keel/sessions/{id}/handoff`: hands the session from one participant to another,
/// recorded in the transcript; answers `{"message": {...}}`.
pub(crate) async fn handoff(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    Json(body): Json<HandoffBody>,
) -> Response {
    let Some(store) = store(&gateway) else { return no_store() };
    let to = match body.to.into_new() {
        Ok(to) => to,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match store.handoff(&id, &body.from, to, body.note).await {
        Ok(message) => Json(json!({ "message": message })).into_response(),
        Err(err) => store_error(&err),
    }
}
