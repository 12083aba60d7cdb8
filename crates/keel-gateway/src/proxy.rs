//! The forwarding handler: classify the endpoint, pick targets in fallback order, relay the first
//! usable answer.
//!
//! A model-routed request tries its route's targets in order. A target whose circuit breaker is
//! open is skipped without a call; a target that cannot be reached, or answers 5xx or "server
//! busy", is recorded against its breaker and the next target is tried — always before anything
//! was sent to the client, so the client sees one clean answer. When every target is out, keel
//! answers 503 with `Retry-After` and names each target and why it is out.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header, request::Parts};
use http_body_util::BodyExt;
use keel_breaker::{Outcome, Permit};
use keel_types::{Dialect, FailureClass, TargetId};
use keel_upstream::{BoxError, RequestBody, RequestPeek, UpstreamError, empty_body, full_body, strip_hop_headers};
use tracing::Instrument;

use crate::endpoint::{Endpoint, EndpointKind};
use crate::error::{InDialect, ProxyError};
use crate::relay::{Answer, Completion, relay};
use crate::request_id::{REQUEST_ID, request_id};
use crate::state::Gateway;

/// Response header naming the target that answered (`upstream:model`).
const KEEL_TARGET: http::HeaderName = http::HeaderName::from_static("x-keel-target");
/// Response header: how many targets were tried, when more than one.
const KEEL_ATTEMPTS: http::HeaderName = http::HeaderName::from_static("x-keel-attempts");

/// The request body, kept so that it can be sent again to a fallback target when it was read.
pub(crate) enum Payload {
    /// Read whole: replayable.
    Bytes(Bytes),
    /// Streamed through unread: can be sent once.
    Stream(Option<RequestBody>),
}

/// Where a request may go and with what body.
pub(crate) struct Forward {
    /// Targets in fallback order.
    pub(crate) targets: Vec<TargetId>,
    /// The route's model name (`"*"` for the wildcard route): with the target it names the breaker.
    pub(crate) route_model: String,
    /// The model the client asked for ("" when the endpoint names none).
    pub(crate) requested_model: String,
    pub(crate) path_and_query: String,
    pub(crate) payload: Payload,
}

impl Forward {
    /// Another request to the same targets (the summarizer, `/api/show`): `path_and_query` and a
    /// body keel wrote.
    pub(crate) fn same_targets(&self, path_and_query: &str, body: Bytes) -> Forward {
        Forward {
            targets: self.targets.clone(),
            route_model: self.route_model.clone(),
            requested_model: self.requested_model.clone(),
            path_and_query: path_and_query.to_owned(),
            payload: Payload::Bytes(body),
        }
    }
}

/// Handles every request that is not keel's own (`/keel/*`, `/metrics`).
pub(crate) async fn proxy(State(gateway): State<Gateway>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let endpoint = Endpoint::classify(&parts.method, parts.uri.path());
    let id = request_id(&parts.headers);
    // keel's own paths reach this handler only as the router's fallback: none of its endpoints.
    if crate::endpoint::is_keel_own(parts.uri.path()) {
        let err = ProxyError::NoKeelEndpoint { method: parts.method.to_string(), path: parts.uri.path().to_owned() };
        tracing::info!(status = 404, error = %err, "request rejected");
        Completion::rejected(endpoint.label, err.status(), started);
        let mut response = InDialect(Dialect::Ollama, err).into_response();
        response.headers_mut().insert(REQUEST_ID, id);
        return response;
    }
    let span = tracing::info_span!(
        "request",
        id = %String::from_utf8_lossy(id.as_bytes()),
        method = %parts.method,
        route = endpoint.label,
    );
    async move {
        let mut response = match prepare(&gateway, &parts, endpoint, body).await {
            Ok((forward, session)) => {
                let call = Call {
                    method: parts.method,
                    headers: parts.headers,
                    id: id.clone(),
                    started,
                    hold_permit: false,
                    continuing: None,
                };
                // The session and guard paths are boxed: their futures are large, and inline they
                // would make every request's future (moved into a box per request) as large.
                match session {
                    Some(session) => Box::pin(crate::session::handle(&gateway, call, endpoint, forward, session)).await,
                    None => match crate::guard::Structured::detect(&gateway, endpoint, &forward) {
                        Some(structured) => {
                            Box::pin(crate::guard::guard(&gateway, call, endpoint, forward, structured)).await
                        }
                        None => send(&gateway, call, endpoint, forward).await.response,
                    },
                }
            }
            Err(err) => {
                let status = err.status();
                tracing::info!(status = status.as_u16(), error = %err, "request rejected");
                Completion::rejected(endpoint.label, status, started);
                InDialect(endpoint.dialect, err).into_response()
            }
        };
        response.headers_mut().insert(REQUEST_ID, id);
        response
    }
    .instrument(span)
    .await
}

/// Checks keel's request headers (`X-Keel-Deadline`, the session headers), reads what is needed
/// of the request and finds its targets: every path (plain, session, structured-output guard)
/// starts from here, so a malformed request is refused before anything is sent upstream.
async fn prepare(
    gateway: &Gateway,
    parts: &Parts,
    endpoint: Endpoint,
    body: Body,
) -> Result<(Forward, Option<crate::session::SessionRequest>), ProxyError> {
    crate::retry::check_deadline(&parts.headers)?;
    let session = crate::session::SessionRequest::detect(endpoint, &parts.headers).transpose()?;
    let path_and_query =
        parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let forward = match endpoint.kind {
        EndpointKind::ModelInBody => {
            let bytes = read_body(gateway, &parts.headers, body).await?;
            let peek = RequestPeek::parse(&bytes)?;
            let model = peek.model.filter(|m| !m.is_empty()).ok_or(ProxyError::ModelRequired)?;
            let (route_model, targets) = route(gateway, &model)?;
            Forward { targets, route_model, requested_model: model, path_and_query, payload: Payload::Bytes(bytes) }
        }
        EndpointKind::ModelInPath => {
            let model = Endpoint::model_in_path(parts.uri.path()).unwrap_or_default();
            let (route_model, targets) = route(gateway, &model)?;
            Forward {
                targets,
                route_model,
                requested_model: model,
                path_and_query,
                payload: Payload::Bytes(Bytes::new()),
            }
        }
        EndpointKind::Passthrough => {
            let default = gateway.default_target().ok_or_else(|| ProxyError::NoRoute(String::new()))?;
            let body = stream_body(&parts.headers, body);
            let read =
                matches!(parts.method, http::Method::GET | http::Method::HEAD) && http_body::Body::is_end_stream(&body);
            let (targets, payload) = if read {
                (read_targets(gateway, &default.upstream, endpoint.dialect), Payload::Bytes(Bytes::new()))
            } else {
                (vec![TargetId { upstream: default.upstream.clone(), model: None }], Payload::Stream(Some(body)))
            };
            Forward { targets, route_model: "*".to_owned(), requested_model: String::new(), path_and_query, payload }
        }
    };
    Ok((forward, session))
}

/// Where a read that names no model (`GET /api/tags`, `/api/version`, `/api/ps`, `/v1/models`)
/// may go: the default upstream, then every other upstream that speaks the path's API, so that an
/// agent can still list models and check the version while the default server is down. Upstreams
/// whose last health probe failed go last. Writes (model management) only ever go to the default.
fn read_targets(gateway: &Gateway, default: &str, dialect: Dialect) -> Vec<TargetId> {
    let health = gateway.inner.health.lock();
    // Ollama's own API only from Ollama servers; the OpenAI-compatible `/v1` from any.
    let others = gateway
        .upstreams
        .iter()
        .filter(|u| u.upstream.name != default && (dialect == Dialect::OpenAi || u.upstream.dialect == Dialect::Ollama))
        .map(|u| u.upstream.name.as_str());
    let mut targets: Vec<(bool, TargetId)> = std::iter::once(default)
        .chain(others)
        .map(|name| {
            let down = health.get(name).is_some_and(|h| !h.ok);
            (down, TargetId { upstream: name.to_owned(), model: None })
        })
        .collect();
    drop(health);
    targets.sort_by_key(|(down, _)| *down);
    targets.into_iter().map(|(_, target)| target).collect()
}

/// The route's model name and its targets in fallback order (targets with the model already
/// loaded first, when the route prefers them).
fn route(gateway: &Gateway, model: &str) -> Result<(String, Vec<TargetId>), ProxyError> {
    let route = gateway.inner.routes.resolve(model).ok_or_else(|| ProxyError::NoRoute(model.to_owned()))?;
    let mut targets = route.targets.clone();
    if route.prefer_loaded {
        // Stable: among loaded (and among not loaded) targets the configured order holds.
        targets.sort_by_key(|t| !gateway.has_loaded(&t.upstream, t.model_for(model)));
    }
    Ok((route.model.clone(), targets))
}

/// Reads a whole body, refusing more than the configured limit (up front when Content-Length
/// says so, otherwise while reading).
async fn read_body(gateway: &Gateway, headers: &HeaderMap, body: Body) -> Result<Bytes, ProxyError> {
    let limit = gateway.config().server.max_request_body;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let too_large =
            std::error::Error::source(&err).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large { ProxyError::BodyTooLarge { limit } } else { ProxyError::BodyRead(err.to_string()) }
    })
}

/// A body forwarded as it arrives (model uploads can be gigabytes).
fn stream_body(headers: &HeaderMap, body: Body) -> RequestBody {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    if has_body { body.map_err(|err| -> BoxError { Box::new(err) }).boxed_unsync() } else { empty_body() }
}

/// Rewrites the fields a target needs changed — `model` for a target that serves the route under
/// another name, `format` / `response_format` removed for an upstream that must not get them —
/// every other field keeps its value and order.
fn rewrite_body(body: &[u8], model: Option<&str>, drop_format: bool) -> Result<Bytes, ProxyError> {
    let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| ProxyError::BadBody(keel_upstream::WireError::Malformed(e.to_string())))?;
    if let Some(model) = model {
        value.insert("model".into(), serde_json::Value::String(model.to_owned()));
        value.remove("name");
    }
    if drop_format {
        value.remove("format");
        value.remove("response_format");
    }
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| ProxyError::BadBody(keel_upstream::WireError::Malformed(e.to_string())))
}

/// True when the body may carry `format` / `response_format` (a cheap byte search first).
pub(crate) fn mentions_format(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"format\"").is_some()
}

/// What one pass over a request's targets produced.
pub(crate) struct Sent {
    /// The answer for the client (an upstream's, relayed, or keel's own error).
    pub(crate) response: Response,
    /// Index into the targets of the one that answered; `None` when keel answered itself.
    pub(crate) answered: Option<usize>,
    /// The answering target's breaker permit, when the caller asked to judge the answer itself
    /// (the structured-output guard records it after validation).
    pub(crate) permit: Option<Permit>,
}

/// One request as sent upstream: the client's method and headers.
pub(crate) struct Call {
    pub(crate) method: http::Method,
    pub(crate) headers: HeaderMap,
    pub(crate) id: HeaderValue,
    pub(crate) started: Instant,
    /// Keep the answering target's permit for the caller instead of recording it at the end.
    pub(crate) hold_permit: bool,
    /// Set when this call continues a stream that broke on an earlier target.
    pub(crate) continuing: Option<crate::resume::Continuing>,
}

impl Call {
    /// A further request keel makes on behalf of this one (a summary, `/api/show`): a `POST` with
    /// the same headers, request id and deadline.
    pub(crate) fn on_behalf(&self) -> Call {
        Call {
            method: http::Method::POST,
            headers: self.headers.clone(),
            id: self.id.clone(),
            started: self.started,
            hold_permit: false,
            continuing: None,
        }
    }
}

/// Tries the request's targets in order (with retry rounds) and relays the first usable answer.
pub(crate) async fn send(gateway: &Gateway, call: Call, endpoint: Endpoint, forward: Forward) -> Sent {
    let Call { method, headers, id, started, hold_permit, continuing } = call;
    let id_value = id.clone();
    let Forward { targets, route_model, requested_model, path_and_query, mut payload } = forward;
    let id_text = String::from_utf8_lossy(id.as_bytes()).into_owned();
    let model_label = requested_model.chars().take(64).collect::<String>();
    let uses_breakers = endpoint.kind != EndpointKind::Passthrough;
    let retry = &gateway.config().retry;
    let deadline = crate::retry::deadline(&headers, retry.deadline, started);
    gateway.inner.retry_budget.deposit();
    let mut headers = headers;
    headers.insert(REQUEST_ID, id);
    // Why each target tried so far did not answer, for the final error and logs.
    let mut out: Vec<String> = Vec::new();
    let mut retry_after: Option<Duration> = None;
    let mut last_transport_error: Option<UpstreamError> = None;
    let mut retryable = false;
    let mut round: u32 = 0;

    'rounds: loop {
        for (index, target) in targets.iter().enumerate() {
            // No attempt may follow this one: relay whatever it answers.
            let is_last =
                index + 1 == targets.len() && (round >= retry.attempts || !matches!(payload, Payload::Bytes(_)));
            let key = target.display_name(&route_model);
            let asked = if requested_model.is_empty() { "*" } else { &requested_model };
            let answering = if target.model_for(asked) == target.model_for(&route_model) {
                key.clone()
            } else {
                target.display_name(asked)
            };
            let Some(handle) = gateway.upstream(&target.upstream) else { continue };
            let permit = if uses_breakers {
                match gateway.breaker(&key).try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(rejected) => {
                        retry_after = Some(retry_after.map_or(rejected.retry_after, |r| r.min(rejected.retry_after)));
                        out.push(format!("{key}: {rejected}"));
                        continue;
                    }
                }
            } else {
                None
            };
            let bridge = crate::bridge::bridge_for(endpoint, handle.upstream.dialect);
            let drop_format = !handle.forward_format
                && endpoint.kind == EndpointKind::ModelInBody
                && matches!(&payload, Payload::Bytes(bytes) if mentions_format(bytes));
            let mut stream_requested = false;
            let (body, path) = match (&mut payload, bridge) {
                (Payload::Bytes(bytes), Some(kind)) => {
                    let stripped = if drop_format {
                        match rewrite_body(bytes, None, true) {
                            Ok(stripped) => Some(stripped),
                            Err(err) => return Sent::keel(InDialect(endpoint.dialect, err).into_response()),
                        }
                    } else {
                        None
                    };
                    let bytes = stripped.as_ref().unwrap_or(bytes);
                    match crate::bridge::request(kind, bytes, target.model_for(&requested_model)) {
                        Ok(crate::bridge::Bridged::Call { path, body, stream }) => {
                            stream_requested = stream;
                            (full_body(body), path.to_owned())
                        }
                        Ok(crate::bridge::Bridged::Answer(value)) => {
                            return Sent::keel((http::StatusCode::OK, axum::Json(value)).into_response());
                        }
                        Err(err) => {
                            return Sent::keel(InDialect(endpoint.dialect, ProxyError::Translate(err)).into_response());
                        }
                    }
                }
                (Payload::Bytes(bytes), None) => {
                    let rename = match &target.model {
                        Some(renamed) if endpoint.kind == EndpointKind::ModelInBody && *renamed != requested_model => {
                            Some(renamed.as_str())
                        }
                        _ => None,
                    };
                    let body = if rename.is_some() || drop_format {
                        match rewrite_body(bytes, rename, drop_format) {
                            Ok(rewritten) => full_body(rewritten),
                            Err(err) => return Sent::keel(InDialect(endpoint.dialect, err).into_response()),
                        }
                    } else {
                        full_body(bytes.clone())
                    };
                    let path = match (&target.model, endpoint.kind) {
                        (Some(renamed), EndpointKind::ModelInPath) => format!("/v1/models/{renamed}"),
                        _ => path_and_query.clone(),
                    };
                    (body, path)
                }
                (Payload::Stream(body), _) => match body.take() {
                    Some(body) => (body, path_and_query.clone()),
                    None => break 'rounds,
                },
            };
            let head_started = Instant::now();
            // The last target may take the headers; earlier ones get a copy for the next attempt.
            let attempt_headers = if is_last { std::mem::take(&mut headers) } else { headers.clone() };
            let Some(remaining) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                out.push(format!("{key}: not tried, the request's deadline passed"));
                break 'rounds;
            };
            let result = handle
                .client
                .send_within(&handle.upstream, method.clone(), &path, attempt_headers, body, remaining)
                .await;
            let head_latency = head_started.elapsed();
            handle.duration.record(head_latency.as_secs_f64());
            match result {
                Err(err) => {
                    tracing::warn!(upstream = %err.upstream, class = %err.class, detail = %err.detail, "upstream unreachable");
                    metrics::counter!(keel_telemetry::names::UPSTREAM_ERRORS_TOTAL, "upstream" => err.upstream.clone(), "class" => err.class.as_str())
                    .increment(1);
                    if uses_breakers {
                        gateway.observe(&key, Some((err.class, err.detail.clone())));
                    }
                    record(permit, Some(err.class), head_latency);
                    out.push(format!("{key}: {}", err.class));
                    retryable |= err.class.is_upstream_fault();
                    last_transport_error = Some(err);
                }
                Ok(upstream_response) => {
                    let status = upstream_response.status();
                    let class = FailureClass::from_status(status.as_u16()).filter(|c| c.is_upstream_fault());
                    if let Some(class) = class {
                        metrics::counter!(keel_telemetry::names::UPSTREAM_ERRORS_TOTAL, "upstream" => handle.upstream.name.clone(), "class" => class.as_str())
                        .increment(1);
                        // Another target may do better, and nothing was sent to the client yet.
                        if !is_last && matches!(payload, Payload::Bytes(_)) {
                            tracing::info!(target = %key, status = status.as_u16(), "target failed; trying the next one");
                            gateway.observe(&key, Some((class, format!("upstream answered {status}"))));
                            record(permit, Some(class), head_latency);
                            out.push(format!("{key}: answered {status}"));
                            retryable = true;
                            continue;
                        }
                    }
                    // A chat stream with targets left can be continued there if it breaks.
                    let resume = match &payload {
                        Payload::Bytes(bytes)
                            if status.is_success()
                                && !hold_permit
                                && matches!(endpoint.label, "/api/chat" | "/v1/chat/completions")
                                && index + 1 < targets.len() =>
                        {
                            let (original, prefix) = match &continuing {
                                Some(c) => (c.original.clone(), c.prefix.clone()),
                                None => (bytes.clone(), String::new()),
                            };
                            Some(crate::resume::Resume {
                                gateway: gateway.clone(),
                                endpoint,
                                method: method.clone(),
                                headers: headers.clone(),
                                id: id_value.clone(),
                                started,
                                targets: targets[index + 1..].to_vec(),
                                route_model: route_model.clone(),
                                requested_model: requested_model.clone(),
                                path_and_query: path_and_query.clone(),
                                original,
                                prefix,
                            })
                        }
                        _ => None,
                    };
                    let (permit, held) = if hold_permit { (None, permit) } else { (permit, None) };
                    let answer = Answer {
                        id: id_text,
                        route: endpoint.label,
                        dialect: endpoint.dialect,
                        model: model_label,
                        upstream: handle.upstream.name.clone(),
                        key: if uses_breakers { key } else { String::new() },
                        head_failure: class,
                        permit,
                        resume,
                        head_latency,
                        started,
                    };
                    let head_request = method == http::Method::HEAD;
                    let mut response = match bridge {
                        // Boxed: a rare path whose large future would otherwise grow every request's.
                        Some(kind) => {
                            Box::pin(bridge_response(
                                gateway,
                                upstream_response,
                                answer,
                                &answering,
                                handle.idle_timeout,
                                kind,
                                stream_requested,
                            ))
                            .await
                        }
                        None => relay_response(
                            gateway,
                            upstream_response,
                            answer,
                            &answering,
                            handle.idle_timeout,
                            head_request,
                            None,
                        ),
                    };
                    if !out.is_empty() {
                        response.headers_mut().insert(KEEL_ATTEMPTS, HeaderValue::from(out.len() + 1));
                    }
                    return Sent { response, answered: Some(index), permit: held };
                }
            }
        }

        // Every target failed this round. Another round only for failures that may pass (not for
        // open breakers alone), within the retry allowance, the budget and the deadline.
        round += 1;
        if round > retry.attempts || !retryable || !matches!(payload, Payload::Bytes(_)) {
            break 'rounds;
        }
        let wait = crate::retry::backoff(retry.backoff, retry.backoff_max, round);
        if Instant::now() + wait >= deadline {
            out.push("no retry: the request's deadline is too close".to_owned());
            break 'rounds;
        }
        if !gateway.inner.retry_budget.try_withdraw() {
            out.push("no retry: the retry budget is spent (too many retries recently)".to_owned());
            break 'rounds;
        }
        tracing::info!(round, wait_ms = wait.as_millis() as u64, "every target failed; retrying");
        tokio::time::sleep(wait).await;
        retryable = false;
    }

    // Nothing answered. A single target that could not be reached keeps its precise error.
    let single_target = targets.len() == 1 && retry_after.is_none();
    let error = match (last_transport_error, single_target) {
        (Some(err), true) => ProxyError::Upstream(err),
        _ => ProxyError::AllTargetsUnavailable {
            model: if requested_model.is_empty() { "*".to_owned() } else { requested_model },
            reasons: out,
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        },
    };
    tracing::warn!(status = error.status().as_u16(), error = %error, "no target answered");
    Completion::finished_now(endpoint.label, &model_label, error.status(), started);
    Sent::keel(InDialect(endpoint.dialect, error).into_response())
}

impl Sent {
    /// An answer keel produced itself.
    fn keel(response: Response) -> Sent {
        Sent { response, answered: None, permit: None }
    }
}

/// Records a call's result against its target's breaker (a call without a permit records nothing).
pub(crate) fn record(permit: Option<Permit>, failure: Option<FailureClass>, latency: Duration) {
    if let Some(permit) = permit {
        let outcome = match failure {
            Some(class) => Outcome::failure(class, latency),
            None => Outcome::success(latency),
        };
        permit.record(outcome);
    }
}

/// Turns an upstream response into the client's, its body relayed as it arrives.
fn relay_response(
    gateway: &Gateway,
    upstream_response: http::Response<keel_upstream::ResponseBody>,
    answer: Answer,
    answering: &str,
    idle_timeout: Duration,
    head_request: bool,
    convert: Option<keel_upstream::translate::SseToNdjson>,
) -> Response {
    let (mut head, upstream_body) = upstream_response.into_parts();
    let status = head.status;
    strip_hop_headers(&mut head.headers);
    if let Ok(value) = HeaderValue::from_str(answering) {
        head.headers.insert(KEEL_TARGET, value);
    }
    let bodyless = head_request || matches!(status.as_u16(), 204 | 304);
    let dialect = answer.dialect;
    let completion = Completion::new(gateway.clone(), answer, status);
    let body = relay(upstream_body, &head.headers, dialect, idle_timeout, completion, bodyless, convert);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = head.headers;
    response
}

/// Answers an Ollama-API client from an OpenAI-dialect upstream: streams translated line by line,
/// whole answers and errors translated at once.
async fn bridge_response(
    gateway: &Gateway,
    upstream_response: http::Response<keel_upstream::ResponseBody>,
    mut answer: Answer,
    answering: &str,
    idle_timeout: Duration,
    kind: keel_upstream::translate::OllamaEndpoint,
    stream: bool,
) -> Response {
    let status = upstream_response.status();
    if status.is_success() && stream {
        let (mut head, body) = upstream_response.into_parts();
        head.headers.remove(header::CONTENT_LENGTH);
        head.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        let convert = keel_upstream::translate::SseToNdjson::new(kind, answer.model.clone()).with_start(answer.started);
        let response = http::Response::from_parts(head, body);
        return relay_response(gateway, response, answer, answering, idle_timeout, false, Some(convert));
    }
    let (status, bytes, failure) = if status.is_success() {
        match crate::bridge::whole_answer(kind, upstream_response.into_body(), &answer.model, answer.started).await {
            Ok(bytes) => (status, bytes, None),
            Err((class, err)) => {
                let status = err.status();
                let body = keel_upstream::ErrorBody::new(Dialect::Ollama, status, &err.to_string()).body;
                answer.head_failure = Some(class);
                (status, body, Some((class, err.to_string())))
            }
        }
    } else {
        (status, crate::bridge::error_answer(status, upstream_response.into_body()).await, None)
    };
    let completion = Completion::new(gateway.clone(), answer, status);
    completion.end(failure);
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    if let Ok(value) = HeaderValue::from_str(answering) {
        response.headers_mut().insert(KEEL_TARGET, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_keeps_other_fields_in_order() {
        let out = rewrite_body(br#"{"model":"a","z":1,"messages":[{"role":"user"}],"x_new":true}"#, Some("b"), false)
            .unwrap();
        assert_eq!(&out[..], br#"{"model":"b","z":1,"messages":[{"role":"user"}],"x_new":true}"#);
    }

    #[test]
    fn reads_go_to_the_default_then_to_servers_of_the_same_api_healthy_first() {
        let toml = "[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                    [[upstream]]\nname = \"b\"\nurl = \"http://127.0.0.1:2\"\ndialect = \"openai\"\n\
                    [[upstream]]\nname = \"c\"\nurl = \"http://127.0.0.1:3\"\n";
        let raw = crate::config::RawConfig::parse(toml).unwrap();
        let config = crate::config::Config::from_raw(raw, None, &Default::default(), &|_| None).unwrap();
        let gateway = Gateway::new(config).unwrap();
        let names = |dialect| read_targets(&gateway, "a", dialect).into_iter().map(|t| t.upstream).collect::<Vec<_>>();
        assert_eq!(names(Dialect::Ollama), ["a", "c"]);
        assert_eq!(names(Dialect::OpenAi), ["a", "b", "c"]);
        // The default is always asked, whatever it speaks.
        let from_b = read_targets(&gateway, "b", Dialect::Ollama).into_iter().map(|t| t.upstream).collect::<Vec<_>>();
        assert_eq!(from_b, ["b", "a", "c"]);
        let down = crate::health::UpstreamHealth {
            ok: false,
            version: None,
            loaded_models: Vec::new(),
            error: Some("connection refused".into()),
            latency_ms: 1,
            checked: None,
        };
        gateway.inner.health.lock().insert("a".into(), down);
        assert_eq!(names(Dialect::Ollama), ["c", "a"]);
        assert_eq!(names(Dialect::OpenAi), ["b", "c", "a"]);
    }

    #[test]
    fn format_is_dropped_only_when_asked() {
        let body = br#"{"model":"a","format":{"type":"object"},"response_format":{"type":"json_object"},"z":1}"#;
        assert!(mentions_format(body));
        assert!(!mentions_format(br#"{"model":"a"}"#));
        assert_eq!(&rewrite_body(body, None, true).unwrap()[..], br#"{"model":"a","z":1}"#);
    }
}

#[cfg(test)]
mod future_size {
    /// Every request's future is moved into a box as the server dispatches it; the session and
    /// guard paths are boxed inside it so that plain proxying does not copy their state. At 9 KiB
    /// (moved twice by axum's router then) the copies were 18% of keel's instructions per request
    /// (callgrind).
    #[test]
    fn the_request_future_stays_small() {
        let config = crate::config::Config::without_file(&Default::default(), &|_| None).unwrap();
        let gateway = crate::state::Gateway::new(config).unwrap();
        let request = axum::extract::Request::new(axum::body::Body::empty());
        let future = super::proxy(axum::extract::State(gateway), request);
        let size = std::mem::size_of_val(&future);
        assert!(size <= 6 * 1024, "the proxy future grew to {size} bytes; box the new large path");
    }
}
