//! Request dispatch: routing (per API surface), credentials, body collection, recording, fault
//! pre-processing and response helpers shared by the Ollama, OpenAI, Anthropic, Responses,
//! model-management and admin handlers.
//!
//! Helpers return `Result<_, Resp>` so an early error is already the response to send; the
//! response is large but built at most once per request.
#![allow(clippy::result_large_err)]

mod admin;
mod anthropic;
mod manage;
mod ollama;
mod openai;
mod responses;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::Value;

use crate::body::{Guard, MockBody, Streamer};
use crate::jsongen::{self, JsonMode};
use crate::names::{self, word_count};
use crate::scenario::{ApiSurface, ToolCall};
use crate::server::ConnKill;
use crate::state::{Action, CModel, Compiled, RecordedRequest, State};

pub(crate) type Resp = Response<MockBody>;

pub(crate) const JSON: &str = "application/json; charset=utf-8";
pub(crate) const NDJSON: &str = "application/x-ndjson";
pub(crate) const SSE: &str = "text/event-stream";
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";

/// Ollama's queue-full message (two spaces after the period, as Ollama writes it).
pub(crate) const BUSY: &str = "server busy, please try again.  maximum pending requests exceeded";

/// Which error shape an endpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `{"error": "..."}`
    Api,
    /// `{"error": {"message", "type", "param", "code"}}`
    V1,
    /// `{"type": "error", "error": {"type", "message"}}`
    Anthropic,
}

/// The extra field every inference response carries (proxies must pass unknown fields through).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct XMock {
    pub(crate) seed: u64,
}

pub(crate) fn response(status: StatusCode, content_type: &'static str, body: MockBody) -> Resp {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(crate) fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())
}

pub(crate) fn json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    response(status, JSON, MockBody::full(to_bytes(v)))
}

/// One NDJSON line (JSON plus `\n`).
pub(crate) fn ndjson_line<T: Serialize>(v: &T) -> Bytes {
    let mut b = to_bytes(v);
    b.push(b'\n');
    Bytes::from(b)
}

/// One SSE event (`data: JSON\n\n`).
pub(crate) fn sse_event<T: Serialize>(v: &T) -> Bytes {
    sse_named(None, v)
}

/// One SSE event, named when `name` is given (`event: NAME\ndata: JSON\n\n`).
pub(crate) fn sse_named<T: Serialize>(name: Option<&str>, v: &T) -> Bytes {
    let mut b = Vec::with_capacity(128);
    if let Some(name) = name {
        b.extend_from_slice(b"event: ");
        b.extend_from_slice(name.as_bytes());
        b.push(b'\n');
    }
    b.extend_from_slice(b"data: ");
    b.extend_from_slice(&to_bytes(v));
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

/// One SSE event named after its own `type` field (Anthropic's and the Responses API's streams).
pub(crate) fn sse_typed<T: Serialize>(v: &T) -> Bytes {
    let value = serde_json::to_value(v).unwrap_or(Value::Null);
    let name = value.get("type").and_then(Value::as_str).map(str::to_owned);
    sse_named(name.as_deref(), &value)
}

#[derive(Serialize)]
struct ApiError<'a> {
    error: &'a str,
}

#[derive(Serialize)]
struct V1Error<'a> {
    error: V1ErrorBody<'a>,
}

#[derive(Serialize)]
pub(crate) struct V1ErrorBody<'a> {
    pub(crate) message: &'a str,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) param: Option<()>,
    pub(crate) code: Option<()>,
}

pub(crate) fn v1_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 401 => "invalid_request_error",
        404 => "not_found_error",
        _ => "api_error",
    }
}

pub(crate) fn error(dialect: Dialect, status: StatusCode, message: &str) -> Resp {
    match dialect {
        Dialect::Api => json(status, &ApiError { error: message }),
        Dialect::V1 => json(
            status,
            &V1Error { error: V1ErrorBody { message, kind: v1_error_type(status), param: None, code: None } },
        ),
        Dialect::Anthropic => json(status, &anthropic::error_body(status, message)),
    }
}

pub(crate) fn api_error_line(message: &str) -> Bytes {
    ndjson_line(&ApiError { error: message })
}

pub(crate) fn sse_error_event(message: &str) -> Bytes {
    sse_event(&V1Error { error: V1ErrorBody { message, kind: "api_error", param: None, code: None } })
}

/// Words in the text of a message's content: a string, parts or blocks carrying `text` (or a
/// nested `content` / `output`, as tool results do), or arrays of those.
pub(crate) fn text_words(v: &Value) -> u64 {
    match v {
        Value::String(s) => word_count(s),
        Value::Array(items) => items.iter().map(text_words).sum(),
        Value::Object(o) => ["text", "content", "output"].iter().filter_map(|k| o.get(*k)).map(text_words).sum(),
        _ => 0,
    }
}

/// Whether a request's `tools` is a non-empty array.
pub(crate) fn offers_tools(tools: Option<&Value>) -> bool {
    tools.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

pub(crate) fn model_not_found(name: &str) -> String {
    format!("model '{name}' not found")
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    response(status, TEXT, MockBody::full(Bytes::from_static(body.as_bytes())))
}

/// Parses a JSON request body the way Ollama reports problems.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8], dialect: Dialect) -> Result<T, Resp> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(error(dialect, StatusCode::BAD_REQUEST, "missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| error(dialect, StatusCode::BAD_REQUEST, &e.to_string()))
}

/// Deserializes `null` as the default value (Go's JSON decoding leaves the zero value).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Looks up the requested model: 400 when missing, 404 when unknown.
pub(crate) fn find_model<'a>(snap: &'a Compiled, name: &str, dialect: Dialect) -> Result<&'a Arc<CModel>, Resp> {
    if name.is_empty() {
        return Err(error(dialect, StatusCode::BAD_REQUEST, "model is required"));
    }
    snap.find(name).ok_or_else(|| error(dialect, StatusCode::NOT_FOUND, &model_not_found(name)))
}

/// The assistant content of one reply: text and its stream chunks.
pub(crate) struct Content<'a> {
    pub(crate) text: Cow<'a, str>,
    pub(crate) chunks: Cow<'a, [Range<usize>]>,
}

impl Content<'_> {
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &str> {
        self.chunks.iter().map(|r| self.text.get(r.clone()).unwrap_or(""))
    }

    pub(crate) fn eval_count(&self) -> u64 {
        self.chunks.len() as u64
    }
}

/// What the model says for this request (plain reply, JSON reply, or garbled JSON).
pub(crate) fn content<'a>(model: &'a CModel, mode: &JsonMode, action: &Action) -> Content<'a> {
    let reply = model.next_reply();
    if !mode.is_json() {
        return Content { text: Cow::Borrowed(&reply.text), chunks: Cow::Borrowed(&reply.chunks) };
    }
    let mut s = jsongen::json_reply(model.next_json_reply(), mode, &reply.text);
    if let Action::Garble(kind, frac) = action {
        s = jsongen::garble(&s, *kind, *frac);
    }
    let chunks = names::chunk_ranges(&s);
    Content { text: Cow::Owned(s), chunks: Cow::Owned(chunks) }
}

/// The "server busy" status: 503, or Anthropic's 529 `overloaded_error`.
fn busy_status(dialect: Dialect) -> StatusCode {
    match dialect {
        Dialect::Anthropic => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        Dialect::Api | Dialect::V1 => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The tool call the model answers a conversation with: its `tool_call` when the request offers
/// tools, unless the conversation ends with a tool result (then it answers in text, as a model
/// does once it has the tool's output).
pub(crate) fn tool_answer(model: &CModel, offers_tools: bool, after_tool_result: bool) -> Option<&ToolCall> {
    if offers_tools && !after_tool_result { model.spec.tool_call.as_ref() } else { None }
}

/// How many content chunks to send before a `cut` / `error_line` fault strikes.
pub(crate) fn chunk_limit(action: &Action, total: usize) -> usize {
    match action {
        Action::Cut(n) | Action::ErrorLine(n, _) => (*n).min(total),
        _ => total,
    }
}

/// Per-request context: state, connection kill switch, arrival number and completion guard.
pub(crate) struct Ctx {
    pub(crate) state: Arc<State>,
    kill: Arc<ConnKill>,
    /// Arrival number (0-based): drives deterministic ids and timestamps.
    pub(crate) seq: u64,
    guard: Option<Guard>,
}

impl Ctx {
    pub(crate) fn created_at(&self, i: u64) -> String {
        names::timestamp(self.seq, i)
    }

    /// Unix seconds for `/v1` `created` fields.
    pub(crate) fn created_unix(&self) -> u64 {
        names::EPOCH_SECS + self.seq
    }

    /// Applies latency and the faults that replace the whole response.
    pub(crate) async fn pre_response(
        &mut self,
        model: &CModel,
        action: &Action,
        dialect: Dialect,
        requested: &str,
    ) -> Option<Resp> {
        if !model.spec.latency.is_zero() {
            tokio::time::sleep(model.spec.latency).await;
        }
        match action {
            Action::SlowFirstByte(d) => {
                tokio::time::sleep(*d).await;
                None
            }
            Action::Busy => Some(error(dialect, busy_status(dialect), BUSY)),
            Action::NotFound => Some(error(dialect, StatusCode::NOT_FOUND, &model_not_found(requested))),
            Action::ServerError(m) => Some(error(dialect, StatusCode::INTERNAL_SERVER_ERROR, m)),
            Action::Status(code, body) => {
                let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let ct = if serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok() { JSON } else { TEXT };
                Some(response(status, ct, MockBody::full(body.clone())))
            }
            Action::Hang => Some(self.hang().await),
            Action::Reset => Some(self.reset().await),
            _ => None,
        }
    }

    /// Never answers; on server shutdown the connection is reset.
    async fn hang(&mut self) -> Resp {
        let mut rx = self.state.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
        self.kill.fire();
        std::future::pending::<Resp>().await
    }

    /// Resets the TCP connection without a response.
    async fn reset(&mut self) -> Resp {
        if let Some(g) = self.guard.take() {
            g.finish();
        }
        self.kill.fire();
        std::future::pending::<Resp>().await
    }

    /// A streamed response; the completion guard moves into the body.
    pub(crate) fn stream(
        &mut self,
        content_type: &'static str,
        frames: VecDeque<Bytes>,
        delay: Duration,
        abort: bool,
    ) -> Resp {
        let body = Streamer::new(frames, delay, abort, self.guard.take());
        response(StatusCode::OK, content_type, MockBody::Stream(Box::new(body)))
    }

    /// A whole (non-streamed) JSON reply after the faults that act on the body: `error_line`
    /// answers 500, `cut` cuts it halfway.
    pub(crate) fn whole(&mut self, action: &Action, dialect: Dialect, bytes: Vec<u8>) -> Resp {
        match action {
            Action::ErrorLine(_, msg) => error(dialect, StatusCode::INTERNAL_SERVER_ERROR, msg),
            Action::Cut(_) => self.cut_full(bytes),
            _ => response(StatusCode::OK, JSON, MockBody::full(bytes)),
        }
    }

    /// A streamed reply whose `frames` hold the content chunks sent before any fault: a `cut`
    /// aborts after them, an `error_line` appends `error_frame(message)`, otherwise `finish`
    /// appends the closing frames.
    pub(crate) fn stream_tail(
        &mut self,
        content_type: &'static str,
        mut frames: VecDeque<Bytes>,
        model: &CModel,
        action: &Action,
        error_frame: impl FnOnce(&str) -> Bytes,
        finish: impl FnOnce(&mut VecDeque<Bytes>),
    ) -> Resp {
        let abort = match action {
            Action::Cut(_) => true,
            Action::ErrorLine(_, msg) => {
                frames.push_back(error_frame(msg));
                false
            }
            _ => {
                finish(&mut frames);
                false
            }
        };
        self.stream(content_type, frames, model.spec.token_delay, abort)
    }

    /// A whole JSON body announced with its full length but cut halfway (the `cut` fault on
    /// non-streaming requests).
    pub(crate) fn cut_full(&mut self, body: Vec<u8>) -> Resp {
        let len = body.len();
        let mut b = Bytes::from(body);
        let half = b.split_to(len / 2);
        let mut r = self.stream(JSON, VecDeque::from([half]), Duration::ZERO, true);
        r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
        r
    }

    fn finish(&mut self) {
        if let Some(g) = self.guard.take() {
            g.finish();
        }
    }
}

/// Every route the mock serves.
#[derive(Debug)]
enum Endpoint<'a> {
    Root,
    Version,
    Tags,
    Ps,
    Show,
    Chat,
    Generate,
    Embed,
    Embeddings,
    Pull,
    Push,
    Create,
    Copy,
    Delete,
    Blob(&'a str),
    V1Chat,
    V1Completions,
    V1Embeddings,
    V1Models,
    V1Model(&'a str),
    Messages,
    CountTokens,
    Responses,
    Health,
    Props,
}

impl Endpoint<'_> {
    /// Whether the impersonated server has this endpoint.
    fn served_by(&self, api: ApiSurface) -> bool {
        use Endpoint as E;
        match api {
            ApiSurface::Ollama => !matches!(self, E::Health | E::Props),
            ApiSurface::Openai => {
                matches!(self, E::V1Chat | E::V1Completions | E::V1Embeddings | E::V1Models | E::Health | E::Props)
            }
            ApiSurface::Anthropic => matches!(self, E::Messages | E::CountTokens | E::V1Models | E::V1Model(_)),
        }
    }

    /// The error shape of this endpoint on the impersonated server.
    fn dialect(&self, api: ApiSurface) -> Dialect {
        use Endpoint as E;
        match self {
            _ if api == ApiSurface::Anthropic => Dialect::Anthropic,
            E::Messages | E::CountTokens => Dialect::Anthropic,
            E::V1Chat
            | E::V1Completions
            | E::V1Embeddings
            | E::V1Models
            | E::V1Model(_)
            | E::Responses
            | E::Health
            | E::Props => Dialect::V1,
            _ => Dialect::Api,
        }
    }
}

enum Route<'a> {
    Found(Endpoint<'a>),
    NotFound,
    MethodNotAllowed,
}

fn route<'a>(api: ApiSurface, method: &Method, path: &'a str) -> Route<'a> {
    const GET: &[&str] = &["GET"];
    const GET_HEAD: &[&str] = &["GET", "HEAD"];
    const POST: &[&str] = &["POST"];
    let (ep, allowed) = match path {
        "/" => (Endpoint::Root, GET_HEAD),
        "/api/version" => (Endpoint::Version, GET_HEAD),
        "/api/tags" => (Endpoint::Tags, GET_HEAD),
        "/api/ps" => (Endpoint::Ps, GET),
        "/api/show" => (Endpoint::Show, POST),
        "/api/chat" => (Endpoint::Chat, POST),
        "/api/generate" => (Endpoint::Generate, POST),
        "/api/embed" => (Endpoint::Embed, POST),
        "/api/embeddings" => (Endpoint::Embeddings, POST),
        "/api/pull" => (Endpoint::Pull, POST),
        "/api/push" => (Endpoint::Push, POST),
        "/api/create" => (Endpoint::Create, POST),
        "/api/copy" => (Endpoint::Copy, POST),
        "/api/delete" => (Endpoint::Delete, &["DELETE"][..]),
        "/v1/chat/completions" => (Endpoint::V1Chat, POST),
        "/v1/completions" => (Endpoint::V1Completions, POST),
        "/v1/embeddings" => (Endpoint::V1Embeddings, POST),
        "/v1/models" => (Endpoint::V1Models, GET),
        "/v1/messages" => (Endpoint::Messages, POST),
        "/v1/messages/count_tokens" => (Endpoint::CountTokens, POST),
        "/v1/responses" => (Endpoint::Responses, POST),
        "/health" => (Endpoint::Health, GET),
        "/props" => (Endpoint::Props, GET),
        p => {
            if let Some(d) = p.strip_prefix("/api/blobs/").filter(|d| valid_segment(d)) {
                (Endpoint::Blob(d), &["HEAD", "POST"][..])
            } else if let Some(m) = p.strip_prefix("/v1/models/").filter(|m| valid_segment(m)) {
                (Endpoint::V1Model(m), GET)
            } else {
                return Route::NotFound;
            }
        }
    };
    if !ep.served_by(api) {
        Route::NotFound
    } else if allowed.contains(&method.as_str()) {
        Route::Found(ep)
    } else {
        Route::MethodNotAllowed
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('/')
}

/// 404 / 405 for paths the impersonated server does not serve, in its shape.
fn no_route(api: ApiSurface, status: StatusCode) -> Resp {
    let not_found = status == StatusCode::NOT_FOUND;
    match api {
        ApiSurface::Ollama if not_found => text(status, "404 page not found"),
        ApiSurface::Ollama => text(status, "405 method not allowed"),
        ApiSurface::Openai => {
            error(Dialect::V1, status, if not_found { "File Not Found" } else { "Method Not Allowed" })
        }
        ApiSurface::Anthropic => {
            error(Dialect::Anthropic, status, if not_found { "Not Found" } else { "Method Not Allowed" })
        }
    }
}

fn header(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The credential and header checks of the impersonated server: 401 without the scenario's
/// `api_key`, and (Anthropic) 400 without `anthropic-version`.
fn gate(snap: &Compiled, headers: &HeaderMap, dialect: Dialect) -> Option<Resp> {
    if let Some(key) = &snap.api_key {
        let (given, message) = match snap.api {
            ApiSurface::Anthropic => (header(headers, "x-api-key"), "invalid x-api-key"),
            ApiSurface::Ollama | ApiSurface::Openai => (
                header(headers, AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer ")),
                if dialect == Dialect::Api { "unauthorized" } else { "Incorrect API key provided" },
            ),
        };
        if given != Some(key.as_str()) {
            return Some(error(dialect, StatusCode::UNAUTHORIZED, message));
        }
    }
    if snap.api == ApiSurface::Anthropic && header(headers, "anthropic-version").is_none() {
        return Some(error(dialect, StatusCode::BAD_REQUEST, "anthropic-version: header is required"));
    }
    None
}

/// Handles one request. Requests under `/mock/` are the admin API: not counted, not recorded.
pub(crate) async fn dispatch(state: Arc<State>, kill: Arc<ConnKill>, req: Request<Incoming>) -> Resp {
    let (parts, incoming) = req.into_parts();
    let path = parts.uri.path();
    if path == "/mock" || path.starts_with("/mock/") {
        return admin::handle(&state, &parts, incoming).await;
    }
    let seq = state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let guard = Guard::new(Arc::clone(&state.counters));
    let mut ctx = Ctx { state, kill, seq, guard: Some(guard) };
    let snap = ctx.state.snapshot();
    let route = route(snap.api, &parts.method, path);
    let is_upload = matches!(route, Route::Found(Endpoint::Blob(_))) && parts.method == Method::POST;
    let (body, incoming) = if is_upload {
        (Bytes::new(), Some(incoming))
    } else {
        match incoming.collect().await {
            Ok(c) => (c.to_bytes(), None),
            Err(e) => {
                let resp = error(Dialect::Api, StatusCode::BAD_REQUEST, &format!("failed to read request body: {e}"));
                ctx.finish();
                return resp;
            }
        }
    };
    if snap.record_requests {
        let path_q = parts.uri.path_and_query().map_or(path, |pq| pq.as_str()).to_owned();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        ctx.state.record(
            &snap,
            RecordedRequest { method: parts.method.as_str().to_owned(), path: path_q, headers, body: body.clone() },
        );
    }
    let resp = match route {
        Route::NotFound => no_route(snap.api, StatusCode::NOT_FOUND),
        Route::MethodNotAllowed => no_route(snap.api, StatusCode::METHOD_NOT_ALLOWED),
        Route::Found(ep) => match gate(&snap, &parts.headers, ep.dialect(snap.api)) {
            Some(refused) => refused,
            None => serve(&mut ctx, &snap, ep, &body, incoming).await,
        },
    };
    ctx.finish();
    resp
}

/// Runs the handler of a routed, admitted request.
async fn serve(ctx: &mut Ctx, snap: &Compiled, ep: Endpoint<'_>, body: &[u8], incoming: Option<Incoming>) -> Resp {
    match ep {
        Endpoint::Root => text(StatusCode::OK, "Ollama is running"),
        Endpoint::Version => ollama::version(snap),
        Endpoint::Tags => ollama::tags(snap),
        Endpoint::Ps => ollama::ps(snap),
        Endpoint::Show => ollama::show(snap, body),
        Endpoint::Chat => ollama::chat(ctx, snap, body).await,
        Endpoint::Generate => ollama::generate(ctx, snap, body).await,
        Endpoint::Embed => ollama::embed(ctx, snap, body).await,
        Endpoint::Embeddings => ollama::embeddings(ctx, snap, body).await,
        Endpoint::Pull => manage::pull(ctx, body),
        Endpoint::Push => manage::push(ctx, snap, body),
        Endpoint::Create => manage::create(ctx, body),
        Endpoint::Copy => manage::copy(ctx, body),
        Endpoint::Delete => manage::delete(ctx, body),
        Endpoint::Blob(digest) => match incoming {
            Some(incoming) => manage::upload_blob(ctx, digest, incoming).await,
            None => manage::head_blob(ctx, digest),
        },
        Endpoint::V1Chat => openai::chat(ctx, snap, body).await,
        Endpoint::V1Completions => openai::completions(ctx, snap, body).await,
        Endpoint::V1Embeddings => openai::embeddings(ctx, snap, body).await,
        Endpoint::V1Models if snap.api == ApiSurface::Anthropic => anthropic::models(snap),
        Endpoint::V1Models => openai::models(snap),
        Endpoint::V1Model(name) if snap.api == ApiSurface::Anthropic => anthropic::model(snap, name),
        Endpoint::V1Model(name) => openai::model(snap, name),
        Endpoint::Messages => anthropic::messages(ctx, snap, body).await,
        Endpoint::CountTokens => anthropic::count_tokens(snap, body),
        Endpoint::Responses => responses::create(ctx, snap, body).await,
        Endpoint::Health => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        Endpoint::Props => openai::props(snap),
    }
}
