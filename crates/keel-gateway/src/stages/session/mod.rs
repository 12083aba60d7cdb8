//! Durable sessions in the proxy: `X-Keel-Session: <id>` on `/api/chat`,
//! `/v1/chat/completions`, `/v1/messages` (Anthropic) or `/v1/responses` (OpenAI Responses)
//! makes the request part of a conversation kept in the store. Messages are stored in
//! chat-completions form whatever the client's API ([`api`] converts both ways), so one session
//! can be continued through any of them.
//!
//! - **Managed** (default): the client sends only its new messages. keel stores them before it
//!   calls the model, sends the stored conversation (system messages and the newest messages
//!   within `[sessions] max_context_tokens`), and stores the answer before the client gets the
//!   response that acknowledges it (for a stream: before the final chunk).
//! - **Record** (`X-Keel-Session-Mode: record`): the client sends the whole history as usual;
//!   keel stores the messages it has not stored yet, and the answer.
//!
//! `X-Keel-Idempotency-Key: <key>` makes a retried request return the stored answer instead of
//! asking the model and appending again. A stream cut off (or keel killed) before its end leaves
//! the answer stored as incomplete; incomplete answers are not sent back to the model as context.

pub(crate) mod admin;
mod api;
mod body;
pub(crate) mod budget;
mod context;

use std::borrow::Cow;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use keel_session::{
    Message, NewMessage, NewSession, Page, SessionFilter, SessionPatch, SessionStatus, Store, StoreError,
};
use serde_json::{Map, Value};

use crate::answer::Kind;
use crate::attempts::{Call, Forward, Payload, send};
use crate::endpoint::Endpoint;
use crate::error::{InDialect, ProxyError};
use crate::state::Gateway;

/// Request header naming the session.
pub(crate) const SESSION: &str = "x-keel-session";
/// Request header choosing `managed` (default) or `record` mode.
const SESSION_MODE: &str = "x-keel-session-mode";
/// Request header making a retried request return the stored answer.
const IDEMPOTENCY_KEY: &str = "x-keel-idempotency-key";
/// Response header set when the answer came from the store (an idempotent retry).
const REPLAYED: http::HeaderName = http::HeaderName::from_static("x-keel-replayed");
/// Most messages read back from a session for its context.
const MAX_CONTEXT_MESSAGES: usize = 100_000;

/// How the client uses the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The client sends new messages only; keel keeps the history.
    Managed,
    /// The client sends the whole history; keel records it.
    Record,
}

/// The session part of a request.
pub(crate) struct SessionRequest {
    id: String,
    mode: Mode,
    idempotency_key: Option<String>,
    /// The name of the API key that sent it: the owner of a session it creates.
    owner: Option<Arc<str>>,
    /// The key may use sessions other keys own (it has the `admin` scope).
    any_owner: bool,
}

impl SessionRequest {
    /// The session's id (`X-Keel-Session`).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The session headers of a request, when it has them: `Err` when they are malformed or the
    /// endpoint keeps no sessions.
    pub(crate) fn detect(endpoint: Endpoint, headers: &HeaderMap) -> Option<Result<SessionRequest, ProxyError>> {
        let Some(id) = headers.get(SESSION) else {
            // The other session headers mean nothing without a session: refused, not ignored.
            let orphan = [(SESSION_MODE, "X-Keel-Session-Mode"), (IDEMPOTENCY_KEY, "X-Keel-Idempotency-Key")]
                .into_iter()
                .find(|(name, _)| headers.contains_key(*name))?;
            return Some(Err(ProxyError::BadSession(format!(
                "{} needs X-Keel-Session: <id> on the same request; send both, or neither",
                orphan.1
            ))));
        };
        Some(SessionRequest::parse(endpoint, id, headers))
    }

    fn parse(endpoint: Endpoint, id: &HeaderValue, headers: &HeaderMap) -> Result<SessionRequest, ProxyError> {
        let bad = |message: String| ProxyError::BadSession(message);
        if matches!(Kind::of(endpoint), None | Some(Kind::OllamaGenerate)) {
            return Err(bad(format!(
                "X-Keel-Session works with POST /api/chat, /v1/chat/completions, /v1/messages and /v1/responses, not {}",
                endpoint.label
            )));
        }
        for (name, shown) in [
            (SESSION, "X-Keel-Session"),
            (SESSION_MODE, "X-Keel-Session-Mode"),
            (IDEMPOTENCY_KEY, "X-Keel-Idempotency-Key"),
        ] {
            if headers.get_all(name).iter().nth(1).is_some() {
                return Err(bad(format!("{shown} is sent more than once; send it once")));
            }
        }
        let id = id.to_str().ok().filter(|id| valid_name(id)).ok_or_else(|| {
            bad(format!(
                "X-Keel-Session {} is not a session id: use 1 to 128 characters of letters, digits, '.', '_', ':' or '-'",
                crate::error::quoted(id.as_bytes())
            ))
        })?;
        let mode = match headers.get(SESSION_MODE).map(HeaderValue::as_bytes) {
            None | Some(b"managed") => Mode::Managed,
            Some(b"record") => Mode::Record,
            Some(other) => {
                return Err(bad(format!(
                    "X-Keel-Session-Mode {} is not a mode: use \"managed\" (keel keeps the history) or \"record\" (you send it)",
                    crate::error::quoted(other)
                )));
            }
        };
        let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
            None => None,
            Some(key) => Some(key.to_str().ok().filter(|k| valid_name(k)).map(str::to_owned).ok_or_else(|| {
                bad(format!(
                    "X-Keel-Idempotency-Key {} is not a key: use 1 to 128 characters of letters, digits, '.', '_', ':' or '-'",
                    crate::error::quoted(key.as_bytes())
                ))
            })?),
        };
        Ok(SessionRequest { id: id.to_owned(), mode, idempotency_key, owner: None, any_owner: false })
    }

    /// The same request, sent with `caller`'s key: a session it creates is owned by the key's
    /// name, and a session another key owns is refused unless the key has the `admin` scope.
    pub(crate) fn owned_by(mut self, caller: Option<&crate::client::Caller>) -> SessionRequest {
        self.owner = caller.map(|caller| Arc::clone(&caller.name));
        self.any_owner = caller.is_some_and(|caller| caller.admin);
        self
    }

    /// Refuses a session that another key owns. Sessions without an owner (started while keel ran
    /// without keys) and requests without a key (keel runs without keys) are not checked.
    fn may_use(&self, session: &keel_session::Session) -> Result<(), ProxyError> {
        match (&self.owner, &session.owner) {
            (Some(caller), Some(owner)) if !self.any_owner && **caller != **owner => {
                Err(ProxyError::SessionOfAnotherKey { id: self.id.clone(), owner: owner.clone() })
            }
            _ => Ok(()),
        }
    }

    fn key(&self, suffix: &str) -> Option<String> {
        self.idempotency_key.as_ref().map(|key| format!("{key}/{suffix}"))
    }
}

fn valid_name(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Runs one request of a session: store what is new, ask the model with the session's context,
/// store the answer before acknowledging it.
pub(crate) async fn handle(
    gateway: &Gateway,
    call: Call,
    endpoint: Endpoint,
    forward: Forward,
    session: SessionRequest,
) -> Response {
    let dialect = endpoint.dialect;
    match run(gateway, call, endpoint, forward, session).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(error = %err, "session request failed");
            InDialect(dialect, err).into_response()
        }
    }
}

async fn run(
    gateway: &Gateway,
    call: Call,
    endpoint: Endpoint,
    mut forward: Forward,
    session: SessionRequest,
) -> Result<Response, ProxyError> {
    let store = gateway.inner.store.clone().ok_or(ProxyError::NoStore)?;
    let mut turn = Turn::read(endpoint, &forward)?;
    let model = forward.requested_model.clone();
    let id = session.id.as_str();
    let mut new = NewSession::new(id).with_model(model.clone());
    new.owner = session.owner.as_deref().map(str::to_owned);
    let existing = store.ensure_session(new).await.map_err(unavailable)?;
    session.may_use(&existing)?;
    if matches!(existing.status, SessionStatus::TimedOut | SessionStatus::Idle) {
        // A conflict means another request changed it first: it is active again either way.
        let _ = store.update_session(id, existing.version, SessionPatch::status(SessionStatus::Active)).await;
        if existing.status == SessionStatus::TimedOut
            && let Some(log) = &gateway.inner.incidents
        {
            log.session_active(id);
        }
    }
    if let Some(key) = session.key("answer")
        && let Some(stored) = store.message_by_key(id, &key).await.map_err(unavailable)?
        && stored.complete
    {
        tracing::info!(session = id, seq = stored.seq, "idempotent retry: answering from the store");
        return Ok(replay(&turn, &model, &stored));
    }
    // The summarizer asks the same targets (an owned copy: the request body is not `Sync`).
    let route = forward.same_targets(&forward.path_and_query, Bytes::new());
    let estimated_context = attach(gateway, &call, endpoint, route, store.as_ref(), &session, &mut turn).await?;
    forward.payload = Payload::Bytes(Bytes::from(serde_json::to_vec(&turn.body).unwrap_or_default()));
    let response = match crate::stages::guard::Structured::detect(gateway, endpoint, &forward) {
        Some(structured) => crate::stages::guard::guard(gateway, call, endpoint, forward, structured).await,
        None => send(gateway, call, endpoint, forward).await.response,
    };
    if !response.status().is_success() {
        // Nothing was answered: the stored question waits for the client's retry.
        return Ok(response);
    }
    let answer = Answered { store, session: &session, kind: turn.kind, model: &model, estimated_context };
    answer.store(gateway, response).await
}

/// A session turn as the client sent it.
struct Turn {
    kind: Kind,
    /// The request body, whose messages keel replaces with the stored context (managed mode).
    body: Map<String, Value>,
    /// The request's messages in chat form (as stored).
    messages: Vec<Value>,
    stream: bool,
    include_usage: bool,
}

impl Turn {
    /// Reads a session request's body and its messages in chat form ([`api::chat_messages`]).
    fn read(endpoint: Endpoint, forward: &Forward) -> Result<Turn, ProxyError> {
        let kind = Kind::of(endpoint).ok_or_else(|| ProxyError::BadSession("not a chat endpoint".into()))?;
        let Payload::Bytes(bytes) = &forward.payload else {
            return Err(ProxyError::BadSession("the request body was not read".into()));
        };
        let body: Map<String, Value> = serde_json::from_slice(bytes)
            .map_err(|e| ProxyError::BadBody(keel_upstream::WireError::Malformed(e.to_string())))?;
        let messages = api::chat_messages(kind, &body)?;
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(kind.streams_by_default());
        let include_usage =
            body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
        Ok(Turn { kind, body, messages, stream, include_usage })
    }
}

/// Stores the turn's new messages and, in managed mode, puts the stored conversation (within
/// the budget, summarized through `route` when needed) in the body. Gives what keel estimated for
/// the context it sent (managed mode), to calibrate against the model's own count.
async fn attach(
    gateway: &Gateway,
    call: &Call,
    endpoint: Endpoint,
    route: Forward,
    store: &dyn Store,
    session: &SessionRequest,
    turn: &mut Turn,
) -> Result<Option<u64>, ProxyError> {
    let id = session.id.as_str();
    let stored = match session.mode {
        Mode::Managed => {
            // Clients of the Messages and Responses APIs send their system prompt every time:
            // one the session already has is not stored again.
            let has_system = turn.messages.iter().any(context::is_system);
            let before = if has_system {
                store.messages(id, 0, MAX_CONTEXT_MESSAGES).await.map_err(unavailable)?
            } else {
                Vec::new()
            };
            let repeated = |message: &Value| context::is_stored_system(message, &before);
            append_all(store, session, &turn.messages, 0, &repeated).await?;
            store.messages(id, 0, MAX_CONTEXT_MESSAGES).await.map_err(unavailable)?
        }
        Mode::Record => {
            let stored = store.messages(id, 0, MAX_CONTEXT_MESSAGES).await.map_err(unavailable)?;
            let known = stored.iter().filter(|m| m.complete && !context::is_summary(m)).count();
            append_all(store, session, turn.messages.get(known..).unwrap_or_default(), known, &|_| false).await?;
            return Ok(None);
        }
    };
    let num_ctx = turn.body.get("options").and_then(|o| o.get("num_ctx")).and_then(Value::as_u64);
    let (context, tokens) = managed_context(gateway, call, endpoint, route, store, id, &stored, num_ctx).await?;
    api::put_context(turn.kind, &mut turn.body, context)?;
    Ok(Some(tokens))
}

/// A turn the model answered, to be stored before the client gets it.
struct Answered<'a> {
    store: Arc<dyn Store>,
    session: &'a SessionRequest,
    kind: Kind,
    model: &'a str,
    estimated_context: Option<u64>,
}

impl Answered<'_> {
    /// Stores the answer: a stream as it passes (complete at its end), a whole answer before it
    /// is sent.
    async fn store(self, gateway: &Gateway, response: Response) -> Result<Response, ProxyError> {
        let placeholder = NewMessage::assistant("").partial();
        let placeholder = match self.session.key("answer") {
            Some(key) => placeholder.with_idempotency_key(key),
            None => placeholder,
        };
        let (parts, response_body) = response.into_parts();
        if !is_stream(&parts.headers) {
            return self.store_whole(gateway, parts, response_body, placeholder).await;
        }
        let id = self.session.id.as_str();
        let pending = append(&*self.store, id, placeholder).await.map_err(unavailable)?;
        let model_label = crate::request_metrics::shortened_model(self.model);
        let calibrate = self.estimated_context.map(|tokens| (gateway.clone(), model_label, tokens));
        let body = body::SessionBody::new(
            response_body,
            &parts.headers,
            self.kind,
            self.store,
            id.to_owned(),
            pending.seq,
            calibrate,
        );
        Ok(Response::from_parts(parts, axum::body::Body::new(body)))
    }

    /// A whole answer: read (bounded), stored with its tool calls and token count, then sent.
    async fn store_whole(
        self,
        gateway: &Gateway,
        mut parts: http::response::Parts,
        response_body: axum::body::Body,
        placeholder: NewMessage,
    ) -> Result<Response, ProxyError> {
        let limit = gateway.config().guard.max_answer_bytes;
        let bytes = http_body_util::Limited::new(response_body, limit)
            .collect()
            .await
            .map_err(|e| ProxyError::BodyRead(format!("the model's answer could not be read: {e}")))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = self.kind.content(&answer).0.unwrap_or_default().into_owned();
        let tokens = crate::answer::answer_tokens(&answer).unwrap_or_else(|| estimate_tokens(&text));
        if let (Some(estimated), Some(actual)) = (self.estimated_context, crate::answer::prompt_tokens(&answer)) {
            let model = crate::request_metrics::shortened_model(self.model);
            gateway.inner.calibration.observe(&model, estimated, actual);
        }
        // The answer's tool calls go into the session with it: the agent's tool results refer to them.
        let placeholder = match self.kind.chat_tool_calls(&answer) {
            Some(calls) => placeholder.with_tool_calls(calls),
            None => placeholder,
        };
        let id = self.session.id.as_str();
        let stored = append(&*self.store, id, placeholder).await.map_err(unavailable)?;
        let completion =
            keel_session::MessageCompletion { content: Some(text), token_count: Some(tokens), tool_calls: None };
        self.store.complete_message(id, stored.seq, completion).await.map_err(unavailable)?;
        parts.headers.remove(header::CONTENT_LENGTH);
        Ok(Response::from_parts(parts, axum::body::Body::from(bytes)))
    }
}

/// The conversation to send for a managed session, within its token budget ([`budget`]).
#[expect(clippy::too_many_arguments, reason = "the request's parts, passed on to the summarizer and /api/show calls")]
async fn managed_context(
    gateway: &Gateway,
    call: &Call,
    endpoint: Endpoint,
    route: Forward,
    store: &dyn Store,
    id: &str,
    stored: &[Message],
    num_ctx: Option<u64>,
) -> Result<(Vec<Value>, u64), ProxyError> {
    let (overflow, keep_newest) = (gateway.config().sessions.overflow, gateway.config().sessions.keep_newest);
    let budget = budget::budget(gateway, call, route.same_targets(&route.path_and_query, Bytes::new()), num_ctx).await;
    let model = crate::request_metrics::shortened_model(&route.requested_model);
    let plan = context::plan(stored, gateway.inner.calibration.budget(&model, budget), overflow, keep_newest);
    if plan.dropped.is_empty() {
        return Ok((context::as_values(&plan.kept), plan.kept_tokens));
    }
    metrics::counter!(keel_telemetry::names::SESSION_CONTEXT_TRIMMED_TOTAL, "model" => model, "overflow" => overflow.as_str())
        .increment(1);
    tracing::info!(
        session = id,
        left_out = plan.dropped.len(),
        tokens = plan.total_tokens,
        budget,
        overflow = overflow.as_str(),
        "session context over budget"
    );
    match overflow {
        context::Overflow::SlidingWindow => Ok((context::as_values(&plan.kept), plan.kept_tokens)),
        context::Overflow::Error => Err(ProxyError::ContextTooLong { tokens: plan.total_tokens, budget }),
        context::Overflow::Summarize | context::Overflow::Hybrid => {
            let summary = summary(gateway, call, endpoint, route, store, id, &plan.dropped).await;
            let tokens = plan.kept_tokens + estimate_tokens(&summary) + 12;
            Ok((context::with_summary(&plan, &summary), tokens))
        }
    }
}

/// The summary of the messages that left the window: stored from an earlier request, or written
/// by the model now (and stored), or a deterministic truncation when the model cannot.
async fn summary(
    gateway: &Gateway,
    call: &Call,
    endpoint: Endpoint,
    mut route: Forward,
    store: &dyn Store,
    id: &str,
    dropped: &[&Message],
) -> String {
    let last = dropped.last().map_or(0, |m| m.seq);
    let key = format!("{}{last}", context::SUMMARY_KEY);
    if let Ok(Some(stored)) = store.message_by_key(id, &key).await {
        return stored.content;
    }
    let kind = Kind::of(endpoint).unwrap_or(Kind::OpenAiChat);
    let written = match api::request(kind, &route.requested_model, context::summary_request(dropped)) {
        Ok(request) => {
            route.payload = Payload::Bytes(Bytes::from(request.to_string()));
            summarized(gateway, call, endpoint, route).await
        }
        Err(_) => None,
    };
    match written {
        Some(text) => {
            let message =
                NewMessage::new("system", text.clone()).with_tokens(estimate_tokens(&text)).with_idempotency_key(key);
            if let Err(err) = append(store, id, message).await {
                tracing::warn!(session = id, error = %err, "could not store the session summary; it will be written again");
            }
            text
        }
        None => {
            tracing::warn!(session = id, "the model could not summarize the session; using a truncation");
            context::truncation(dropped)
        }
    }
}

/// Asks the model for the summary `route` carries: its text, `None` when it gave none.
async fn summarized(gateway: &Gateway, call: &Call, endpoint: Endpoint, route: Forward) -> Option<String> {
    let response = send(gateway, call.on_behalf(), endpoint, route).await.response;
    if !response.status().is_success() {
        return None;
    }
    crate::answer::read_json(response, gateway.config().guard.max_answer_bytes)
        .await
        .and_then(|answer| Kind::of(endpoint).and_then(|kind| kind.content(&answer).0.map(Cow::into_owned)))
        .filter(|text| !text.trim().is_empty())
}

/// Appends the client's messages (the `n`th message of a request gets the idempotency key
/// `<key>/in/<offset + n>`, so a retry does not append them twice), except those `skip` leaves
/// out.
async fn append_all(
    store: &dyn Store,
    session: &SessionRequest,
    messages: &[Value],
    offset: usize,
    skip: &(dyn Fn(&Value) -> bool + Sync),
) -> Result<(), ProxyError> {
    for (i, message) in messages.iter().enumerate().filter(|(_, message)| !skip(message)) {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = match message.get("content") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let mut new = NewMessage::new(role, content.clone()).with_tokens(estimate_tokens(&content));
        if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
            new = new.with_tool_calls(calls.clone());
        } else if let Some(reference) = context::tool_reference(message) {
            new = new.with_tool_calls(reference);
        }
        if let Some(key) = session.key(&format!("in/{}", offset + i)) {
            new = new.with_idempotency_key(key);
        }
        append(store, &session.id, new).await.map_err(unavailable)?;
    }
    Ok(())
}

/// Marks sessions without a new message for `[sessions] idle_timeout` as `timed_out`, once a
/// minute (or at a tenth of the timeout, if shorter).
pub(crate) async fn sweep_idle(gateway: Gateway) {
    let Some(store) = gateway.inner.store.clone() else { return };
    let timeout = gateway.config().sessions.idle_timeout;
    let mut tick = tokio::time::interval(
        (timeout / 10).clamp(std::time::Duration::from_millis(50), std::time::Duration::from_secs(60)),
    );
    loop {
        tick.tick().await;
        let cutoff = keel_session::now_millis().saturating_sub(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        let filter = SessionFilter { status: Some(SessionStatus::Active), ..SessionFilter::default() };
        // Only the sessions idle past the cutoff are read, not every active one.
        let mut page = Page::updated_before(cutoff, 500);
        loop {
            let found = match store.list_sessions(filter.clone(), page).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(error = %err, "idle session sweep: the store is unavailable");
                    break;
                }
            };
            for session in found.sessions.iter().filter(|s| s.updated_at < cutoff) {
                if store
                    .update_session(&session.id, session.version, SessionPatch::status(SessionStatus::TimedOut))
                    .await
                    .is_ok()
                {
                    let idle_seconds = (keel_session::now_millis() - session.updated_at) / 1000;
                    tracing::info!(session = %session.id, idle_seconds, "session timed out");
                    if let Some(log) = &gateway.inner.incidents {
                        log.session_timed_out(session, idle_seconds);
                    }
                    metrics::counter!(keel_telemetry::names::SESSIONS_TIMED_OUT_TOTAL).increment(1);
                }
            }
            match found.next_cursor {
                Some(cursor) => page = Page::after(cursor, 500),
                None => break,
            }
        }
    }
}

/// Appends a message to a session, counted in `keel_session_messages_appended_total`.
async fn append(store: &dyn Store, id: &str, message: NewMessage) -> Result<Message, StoreError> {
    let appended = store.append(id, message).await;
    if appended.is_ok() {
        metrics::counter!(keel_telemetry::names::SESSION_MESSAGES_APPENDED_TOTAL).increment(1);
    }
    appended
}

/// How often the active sessions are counted for `keel_sessions_active`.
const ACTIVE_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// A session counts as active when it is and had a message within this long.
const ACTIVE_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// Counts the sessions that are active and had a message in the last hour, every 30 s, into
/// `keel_sessions_active` (reading only those sessions, a page at a time).
pub(crate) async fn sample_active(gateway: Gateway) {
    let Some(store) = gateway.inner.store.clone() else { return };
    let gauge = metrics::gauge!(keel_telemetry::names::SESSIONS_ACTIVE);
    let mut tick = tokio::time::interval(ACTIVE_SAMPLE_INTERVAL);
    loop {
        tick.tick().await;
        let since = keel_session::now_millis().saturating_sub(ACTIVE_WINDOW.as_millis() as i64);
        let filter = SessionFilter {
            status: Some(SessionStatus::Active),
            updated_since: Some(since),
            ..SessionFilter::default()
        };
        let mut page = Page::first(500);
        let mut active = 0usize;
        // An unavailable store is logged by the idle sweep; the gauge keeps its last value then.
        while let Ok(found) = store.list_sessions(filter.clone(), page).await {
            active += found.sessions.len();
            match found.next_cursor {
                Some(cursor) => page = Page::after(cursor, 500),
                None => {
                    gauge.set(active as f64);
                    break;
                }
            }
        }
    }
}

/// A rough token count for text the model did not count: 4 bytes per token.
fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

fn is_stream(headers: &HeaderMap) -> bool {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    content_type.contains("ndjson") || content_type.contains("event-stream")
}

/// The stored answer of an idempotent retry, in the client's dialect and framing.
fn replay(turn: &Turn, model: &str, stored: &Message) -> Response {
    let answer = crate::answer::synthetic(turn.kind, &turn.body, model, &stored.content);
    let (content_type, body) = if turn.stream {
        crate::answer::stream_chunks(turn.kind, turn.include_usage, answer)
    } else {
        ("application/json; charset=utf-8", Bytes::from(answer.to_string()))
    };
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

fn unavailable(err: StoreError) -> ProxyError {
    ProxyError::Store(err.to_string())
}

/// The store as the admin API and the body wrapper use it.
type SharedStore = Arc<dyn Store>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("chat-42:a.b_c"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"a".repeat(129)));
    }
}
