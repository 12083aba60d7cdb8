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
use keel_types::{Blame, Dialect, FailureClass, TargetId};
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
    /// The client asked for a streamed answer (else a 2xx answer is read whole before it is sent).
    pub(crate) stream: bool,
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
            stream: false,
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
            let stream = peek.streams(endpoint.dialect);
            let model = peek.model.filter(|m| !m.is_empty()).ok_or(ProxyError::ModelRequired)?;
            let (route_model, targets) = route(gateway, &model)?;
            Forward {
                targets,
                route_model,
                requested_model: model,
                path_and_query,
                payload: Payload::Bytes(bytes),
                stream,
            }
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
                stream: false,
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
            Forward {
                targets,
                route_model: "*".to_owned(),
                requested_model: String::new(),
                path_and_query,
                payload,
                stream: true,
            }
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

/// The breaker permits of one attempt: the upstream's (the server as a whole) and the target's
/// (the model on it). `None` where no breaker watches (requests that name no model, panic mode).
#[derive(Default)]
struct Permits {
    server: Option<Permit>,
    model: Option<Permit>,
}

/// Why a target was skipped without a call.
struct Refusal {
    /// The target and why its breaker is out, with the failure that opened it.
    reason: String,
    retry_after: Duration,
    /// The target's model breaker is open but its failures are partial (it answered within the
    /// breaker's window): its consecutive failures, to pick the least-bad target in panic mode.
    partial: Option<u64>,
}

impl Refusal {
    fn new(gateway: &Gateway, key: &str, rejected: keel_breaker::Rejected, partial: Option<u64>) -> Refusal {
        let reason = if rejected.forced {
            format!("{key}: circuit forced open by an operator (POST /keel/breakers/{key}/reset resumes traffic)")
        } else if rejected.state == keel_breaker::State::HalfOpen {
            format!("{key}: circuit half-open, a probe call is in flight")
        } else {
            gateway.open_reason(key).unwrap_or_else(|| format!("{key}: circuit open"))
        };
        Refusal { reason, retry_after: rejected.retry_after, partial }
    }
}

/// Asks the upstream's breaker, then the target's. A server that is down refuses every model on
/// it; a model's own breaker refuses only that model. In panic mode the model's breaker is passed.
fn admit(gateway: &Gateway, upstream: &str, key: &str, panicking: bool) -> Result<Permits, Refusal> {
    let server =
        gateway.breaker(upstream).try_acquire().map_err(|rejected| Refusal::new(gateway, upstream, rejected, None))?;
    match gateway.breaker(key).try_acquire() {
        Ok(model) => Ok(Permits { server: Some(server), model: Some(model) }),
        Err(rejected) if panicking && !rejected.forced => Ok(Permits { server: Some(server), model: None }),
        Err(rejected) => {
            let partial = if rejected.forced { None } else { gateway.partial_failures(key) };
            Err(Refusal::new(gateway, key, rejected, partial))
        }
    }
}

/// What the attempts of one request found so far: for retry decisions and the final error.
#[derive(Default)]
struct Tally {
    /// Each target that did not answer, and why.
    reasons: Vec<String>,
    /// The soonest an open breaker admits a probe.
    retry_after: Option<Duration>,
    last_transport_error: Option<UpstreamError>,
    /// A failure of this round may pass when asked again.
    retryable: bool,
    /// Upstream calls made.
    calls: u32,
    /// Targets not to ask again in this request (their model could not be loaded).
    spent: Vec<usize>,
    /// Targets refused this round whose failures are partial, with their consecutive failures.
    partial: Vec<(usize, u64)>,
}

impl Tally {
    fn refused(&mut self, index: usize, refusal: Refusal) {
        self.retry_after = Some(self.retry_after.map_or(refusal.retry_after, |r| r.min(refusal.retry_after)));
        if let Some(failures) = refusal.partial {
            self.partial.push((index, failures));
        }
        self.reasons.push(refusal.reason);
    }

    /// A call that produced no response head: held against the server, the model or nobody.
    fn unreachable(&mut self, gateway: &Gateway, key: &str, permits: Permits, err: UpstreamError, latency: Duration) {
        metrics::counter!(keel_telemetry::names::UPSTREAM_ERRORS_TOTAL, "upstream" => err.upstream.clone(), "class" => err.class.as_str())
            .increment(1);
        match err.blame() {
            Blame::Keel => {
                tracing::error!(upstream = %err.upstream, detail = %err.detail,
                    "keel ran out of a local resource calling the upstream (not the server's fault): raise keel's open-file limit (ulimit -n) or free memory");
                // Idle upstream connections hold descriptors: let them go.
                gateway.relieve_descriptor_pressure();
            }
            Blame::Server => {
                tracing::warn!(upstream = %err.upstream, class = %err.class, detail = %err.detail, "upstream unreachable");
                record(permits.server, Some(err.class), latency);
                let detail = format!("{} at {}", err.detail, err.url);
                gateway.observe(&err.upstream, Some((err.class, detail.clone())));
                gateway.observe(key, Some((err.class, detail)));
            }
            Blame::Model | Blame::Client => {
                tracing::warn!(target = %key, class = %err.class, detail = %err.detail, "upstream call failed");
                record(permits.model, Some(err.class), latency);
                gateway.observe(key, Some((err.class, err.detail.clone())));
            }
        }
        self.reasons.push(format!("{key}: {} ({})", err.class, err.detail));
        self.retryable |= err.class.retry_same_target();
        self.last_transport_error = Some(err);
    }

    /// A target that answered, but not usably: recorded against its breaker and in the reasons; a
    /// failure that will not pass by asking again marks the target spent for this request.
    fn failed(
        &mut self,
        gateway: &Gateway,
        index: usize,
        key: &str,
        permit: Option<Permit>,
        failure: (FailureClass, String),
        latency: Duration,
    ) {
        let (class, detail) = failure;
        tracing::info!(target = %key, class = %class, detail = %detail, "target failed");
        record(permit, Some(class), latency);
        self.reasons.push(format!("{key}: {class} ({detail})"));
        if class.retry_same_target() {
            self.retryable = true;
        } else {
            self.spent.push(index);
        }
        gateway.observe(key, Some((class, detail)));
    }

    /// The least-bad target refused this round for partial failures, for a bounded share of
    /// requests (`[breaker] panic_share`).
    fn panic_target(&self, share: f64) -> Option<usize> {
        let (index, _) = self.partial.iter().min_by_key(|(_, failures)| *failures)?;
        (share > 0.0 && rand::random::<f64>() < share).then_some(*index)
    }
}

/// Tries the request's targets in order (with retry rounds) and relays the first usable answer.
pub(crate) async fn send(gateway: &Gateway, call: Call, endpoint: Endpoint, forward: Forward) -> Sent {
    let Call { method, headers, id, started, hold_permit, continuing } = call;
    let id_value = id.clone();
    let Forward { targets, route_model, requested_model, path_and_query, mut payload, stream } = forward;
    let id_text = String::from_utf8_lossy(id.as_bytes()).into_owned();
    let model_label = requested_model.chars().take(64).collect::<String>();
    let uses_breakers = endpoint.kind != EndpointKind::Passthrough;
    let retry = &gateway.config().retry;
    let deadline = crate::retry::deadline(&headers, retry.deadline, started);
    gateway.inner.retry_budget.deposit();
    let mut headers = headers;
    headers.insert(REQUEST_ID, id);
    let mut tally = Tally::default();
    let mut round: u32 = 0;
    // Set for one pass when every target is out for partial failures (see `Tally::panic_target`).
    let mut panic: Option<usize> = None;

    'rounds: loop {
        let mut attempted = false;
        tally.partial.clear();
        for (index, target) in targets.iter().enumerate() {
            if tally.spent.contains(&index) || panic.is_some_and(|p| p != index) {
                continue;
            }
            // No attempt may follow this one: relay whatever it answers.
            let is_last = (panic.is_some() || index + 1 == targets.len())
                && (round >= retry.attempts || !matches!(payload, Payload::Bytes(_)));
            let key = crate::routing::breaker_key(target, &route_model, &requested_model);
            let asked = if requested_model.is_empty() { "*" } else { &requested_model };
            let answering = target.display_name(asked);
            let Some(handle) = gateway.upstream(&target.upstream) else { continue };
            let permits = if uses_breakers {
                match admit(gateway, &target.upstream, &key, panic == Some(index)) {
                    Ok(permits) => permits,
                    Err(refusal) => {
                        tally.refused(index, refusal);
                        continue;
                    }
                }
            } else {
                Permits::default()
            };
            if panic == Some(index) {
                tracing::debug!(target = %key, "every target is out but the failures are partial; trying the least-bad one anyway (panic_share)");
            }
            let bridge = crate::bridge::bridge_for(endpoint, handle.upstream.dialect);
            let Prepared { body, path, stream_requested } =
                match prepare_target(endpoint, target, &requested_model, &path_and_query, &mut payload, handle, bridge)
                {
                    Ok(prepared) => prepared,
                    Err(Some(answer)) => return *answer,
                    Err(None) => break 'rounds,
                };
            let head_started = Instant::now();
            // The last target may take the headers; earlier ones get a copy for the next attempt.
            let attempt_headers = if is_last { std::mem::take(&mut headers) } else { headers.clone() };
            let Some(remaining) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                tally.reasons.push(format!("{key}: not tried, the request's deadline passed"));
                break 'rounds;
            };
            attempted = true;
            tally.calls += 1;
            let result = handle
                .client
                .send_within(&handle.upstream, method.clone(), &path, attempt_headers, body, remaining)
                .await;
            let head_latency = head_started.elapsed();
            handle.duration.record(head_latency.as_secs_f64());
            let upstream_response = match result {
                Err(err) => {
                    tally.unreachable(gateway, &key, permits, err, head_latency);
                    continue;
                }
                Ok(upstream_response) => upstream_response,
            };
            // The server answered: it is up, whatever the model did.
            record(permits.server, None, head_latency);
            let permit = permits.model;
            let status = upstream_response.status();
            let place = Place {
                is_last,
                last_in_round: panic.is_some() || index + 1 == targets.len(),
                replayable: matches!(payload, Payload::Bytes(_)),
            };
            let buffer = !stream
                && !hold_permit
                && bridge.is_none()
                && endpoint.kind == EndpointKind::ModelInBody
                && method != http::Method::HEAD;
            let asked_model = target.model_for(asked);
            let (upstream_response, class, head_detail) =
                match judge(gateway, endpoint, upstream_response, handle, bridge.is_some(), place, buffer, asked_model)
                    .await
                {
                    Judged::Failed(failure) => {
                        tally.failed(gateway, index, &key, permit, failure, head_latency);
                        continue;
                    }
                    Judged::Unusable(failure) => {
                        tally.failed(gateway, index, &key, permit, failure, head_latency);
                        break 'rounds;
                    }
                    Judged::Answer(whole, class, detail) => (whole, class, detail),
                };
            // A chat stream with targets left can be continued there if it breaks.
            let resume = match (&payload, &upstream_response) {
                (Payload::Bytes(bytes), Whole::Streaming(_))
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
                head_detail,
                permit,
                resume,
                head_latency,
                started,
            };
            let head_request = method == http::Method::HEAD;
            let mut response = match (upstream_response, bridge) {
                (Whole::Read(head, bytes), _) => whole_response(gateway, head, bytes, answer, &answering),
                // Boxed: a rare path whose large future would otherwise grow every request's.
                (Whole::Streaming(upstream_response), Some(kind)) => {
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
                (Whole::Streaming(upstream_response), None) => relay_response(
                    gateway,
                    upstream_response,
                    answer,
                    &answering,
                    handle.idle_timeout,
                    head_request,
                    None,
                ),
            };
            if tally.calls > 1 {
                response.headers_mut().insert(KEEL_ATTEMPTS, HeaderValue::from(tally.calls));
            }
            return Sent { response, answered: Some(index), permit: held };
        }

        if !attempted && panic.is_none() && !tally.partial.is_empty() {
            panic = tally.panic_target(gateway.config().breaker.panic_share);
            if panic.is_some() {
                metrics::counter!(keel_telemetry::names::BREAKER_PANIC_REQUESTS_TOTAL).increment(1);
                continue 'rounds;
            }
            // Not drawn this time: a later round may draw it, like any retry.
            tally.retryable = true;
        }
        panic = None;
        round += 1;
        let replayable = matches!(payload, Payload::Bytes(_));
        match next_round(gateway, &mut tally, round, replayable, deadline) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => break 'rounds,
        }
    }

    let error = final_error(tally, targets.len(), requested_model, started);
    tracing::warn!(status = error.status().as_u16(), error = %error, "no target answered");
    Completion::finished_now(endpoint.label, &model_label, error.status(), started);
    Sent::keel(InDialect(endpoint.dialect, error).into_response())
}

/// Where an attempt stands in its request: what decides whether its failure ends the request.
#[derive(Clone, Copy)]
struct Place {
    /// No attempt may follow this one.
    is_last: bool,
    /// No target follows this one in the current round.
    last_in_round: bool,
    /// The body can be sent again (it was read whole).
    replayable: bool,
}

/// What became of an answer whose head arrived.
enum Judged {
    /// Unusable, and another target or round may do better.
    Failed((FailureClass, String)),
    /// Unusable, with nothing left to try (the last target's answer cut short).
    Unusable((FailureClass, String)),
    /// For the client, read whole or to be relayed, with the head's failure class (an error answer
    /// passed on) and what the upstream said in it.
    Answer(Whole, Option<FailureClass>, Option<String>),
}

/// Judges an answer whose head arrived: an error answer is read (it is small) to tell a model
/// that cannot load from other 5xx, and goes to the next target while one may follow; a
/// non-streamed answer is read whole when `buffer` (so that one cut short fails like a 5xx);
/// anything else is relayed as it arrives.
#[allow(clippy::too_many_arguments, reason = "one attempt's facts, each used once")]
async fn judge(
    gateway: &Gateway,
    endpoint: Endpoint,
    response: http::Response<keel_upstream::ResponseBody>,
    handle: &crate::state::UpstreamHandle,
    bridged: bool,
    place: Place,
    buffer: bool,
    model: &str,
) -> Judged {
    let status = response.status();
    let class = FailureClass::from_status(status.as_u16()).filter(|c| c.is_upstream_fault());
    if class.is_some() && !bridged {
        let (head, bytes) = read_error_answer(response, handle.idle_timeout).await;
        let class = keel_upstream::classify_error_answer(status.as_u16(), &bytes);
        let mut detail = None;
        if let Some(failure) = class {
            let said = format!("upstream answered {status}: {}", error_message(&bytes));
            // A model that cannot load is not asked again: its own error is the answer when no
            // other target follows in this round.
            let final_answer = place.is_last || (failure == FailureClass::ModelLoad && place.last_in_round);
            if !final_answer && place.replayable {
                return Judged::Failed((failure, said));
            }
            detail = Some(said);
        }
        let bytes = if class == Some(FailureClass::ModelLoad) {
            model_load_answer(endpoint.dialect, status, &bytes, &handle.upstream.name, model)
        } else {
            bytes
        };
        return Judged::Answer(Whole::Read(head, bytes), class, detail);
    }
    if let Some(class) = class
        && !place.is_last
        && place.replayable
    {
        return Judged::Failed((class, format!("upstream answered {status}")));
    }
    if buffer && status.is_success() {
        let limit = gateway.config().server.max_buffered_answer;
        return match read_whole_answer(response, limit, handle.idle_timeout).await {
            Ok((head, bytes)) => Judged::Answer(Whole::Read(head, bytes), None, None),
            Err(failure) if !place.is_last => Judged::Failed(failure),
            Err(failure) => Judged::Unusable(failure),
        };
    }
    Judged::Answer(Whole::Streaming(response), class, None)
}

/// One target's request: its body and path, and whether a bridged call asked for a stream.
struct Prepared {
    body: RequestBody,
    path: String,
    stream_requested: bool,
}

/// Prepares the request for one target: the model renamed and `format` dropped where the target
/// needs it, or translated for an OpenAI-dialect upstream (`bridge`). `Err(Some(_))` when keel
/// answers itself (a translation error, or an answer the bridge gives without a call);
/// `Err(None)` when a body streamed through was already sent and cannot be sent again.
fn prepare_target(
    endpoint: Endpoint,
    target: &TargetId,
    requested_model: &str,
    path_and_query: &str,
    payload: &mut Payload,
    handle: &crate::state::UpstreamHandle,
    bridge: Option<keel_upstream::translate::OllamaEndpoint>,
) -> Result<Prepared, Option<Box<Sent>>> {
    let keel_answer = |err: ProxyError| Some(Box::new(Sent::keel(InDialect(endpoint.dialect, err).into_response())));
    let drop_format = !handle.forward_format
        && endpoint.kind == EndpointKind::ModelInBody
        && matches!(&payload, Payload::Bytes(bytes) if mentions_format(bytes));
    match (payload, bridge) {
        (Payload::Bytes(bytes), Some(kind)) => {
            let stripped = if drop_format { Some(rewrite_body(bytes, None, true).map_err(keel_answer)?) } else { None };
            let bytes = stripped.as_ref().unwrap_or(bytes);
            match crate::bridge::request(kind, bytes, target.model_for(requested_model)) {
                Ok(crate::bridge::Bridged::Call { path, body, stream }) => {
                    Ok(Prepared { body: full_body(body), path: path.to_owned(), stream_requested: stream })
                }
                Ok(crate::bridge::Bridged::Answer(value)) => {
                    Err(Some(Box::new(Sent::keel((http::StatusCode::OK, axum::Json(value)).into_response()))))
                }
                Err(err) => Err(keel_answer(ProxyError::Translate(err))),
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
                full_body(rewrite_body(bytes, rename, drop_format).map_err(keel_answer)?)
            } else {
                full_body(bytes.clone())
            };
            let path = match (&target.model, endpoint.kind) {
                (Some(renamed), EndpointKind::ModelInPath) => format!("/v1/models/{renamed}"),
                _ => path_and_query.to_owned(),
            };
            Ok(Prepared { body, path, stream_requested: false })
        }
        (Payload::Stream(body), _) => match body.take() {
            Some(body) => Ok(Prepared { body, path: path_and_query.to_owned(), stream_requested: false }),
            None => Err(None),
        },
    }
}

/// Whether another round over the targets follows a failed one, and after what wait: only for
/// failures that may pass (not for open breakers alone), within the retry allowance, the budget
/// and the deadline. `None` ends the request (the reason is added to the tally).
fn next_round(
    gateway: &Gateway,
    tally: &mut Tally,
    round: u32,
    replayable: bool,
    deadline: Instant,
) -> Option<Duration> {
    let retry = &gateway.config().retry;
    if round > retry.attempts || !tally.retryable || !replayable {
        return None;
    }
    let wait = crate::retry::backoff(retry.backoff, retry.backoff_max, round);
    if Instant::now() + wait >= deadline {
        tally.reasons.push("no retry: the request's deadline is too close".to_owned());
        return None;
    }
    if !gateway.inner.retry_budget.try_withdraw() {
        tally.reasons.push("no retry: the retry budget is spent (too many retries recently)".to_owned());
        return None;
    }
    tracing::info!(round, wait_ms = wait.as_millis() as u64, "every target failed; retrying");
    tally.retryable = false;
    Some(wait)
}

/// keel's answer when no target answered: a single unreachable target keeps its precise error;
/// otherwise every target and why, with one retry time. Both say how many calls were made and
/// how long they took in all.
fn final_error(tally: Tally, targets: usize, requested_model: String, started: Instant) -> ProxyError {
    let elapsed = keel_types::duration::format(Duration::from_millis(started.elapsed().as_millis() as u64));
    let calls = tally.calls;
    match tally.last_transport_error {
        Some(mut err) if targets == 1 && tally.retry_after.is_none() => {
            err.detail = format!("{}; {calls} attempt(s) in {elapsed} in all", err.detail);
            ProxyError::Upstream(err)
        }
        _ => {
            let mut reasons = tally.reasons;
            if calls > 0 {
                reasons.push(format!("{calls} call(s) made in {elapsed} in all"));
            }
            ProxyError::AllTargetsUnavailable {
                model: if requested_model.is_empty() { "*".to_owned() } else { requested_model },
                reasons,
                retry_after: tally.retry_after.unwrap_or(Duration::from_secs(1)),
            }
        }
    }
}

/// An upstream answer as keel passes it on: read whole (an error, or a non-streamed answer), or
/// relayed as it arrives.
enum Whole {
    Read(http::response::Parts, Bytes),
    Streaming(http::Response<keel_upstream::ResponseBody>),
}

/// Largest error answer keel reads to classify it.
const MAX_ERROR_ANSWER: usize = 64 * 1024;

/// Reads an error answer (bounded, within the idle timeout); what could not be read is left out.
async fn read_error_answer(
    response: http::Response<keel_upstream::ResponseBody>,
    idle_timeout: Duration,
) -> (http::response::Parts, Bytes) {
    let (head, body) = response.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_ERROR_ANSWER);
    let bytes = match tokio::time::timeout(idle_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => Bytes::new(),
    };
    (head, bytes)
}

/// Reads a non-streamed answer whole, so that one cut short is a failure of its target and not a
/// truncated 200. Each frame must come within `idle_timeout`.
async fn read_whole_answer(
    response: http::Response<keel_upstream::ResponseBody>,
    limit: usize,
    idle_timeout: Duration,
) -> Result<(http::response::Parts, Bytes), (FailureClass, String)> {
    let (head, mut body) = response.into_parts();
    let mut collected = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle_timeout, body.frame()).await {
            Err(_) => {
                let idle = keel_types::duration::format(idle_timeout);
                return Err((
                    FailureClass::Timeout,
                    format!("the upstream sent nothing of its answer for {idle} (idle_timeout)"),
                ));
            }
            Ok(None) => return Ok((head, collected.freeze())),
            Ok(Some(Err(err))) => {
                let class = keel_upstream::classify_body_error(&err);
                return Err((
                    class,
                    format!("the upstream cut its answer short after {} bytes: {err}", collected.len()),
                ));
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if collected.len() + data.len() > limit {
                        return Err((
                            FailureClass::Local,
                            format!(
                                "the answer is larger than [server] max_buffered_answer ({limit} bytes); raise it, or ask with \"stream\": true"
                            ),
                        ));
                    }
                    collected.extend_from_slice(&data);
                }
            }
        }
    }
}

/// The message of an upstream's error body (`{"error": "..."}` or `{"error": {"message": ...}}`),
/// else the body as text, shortened.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message =
        parsed.as_ref().and_then(|v| v["error"].as_str().or(v["error"]["message"].as_str()).map(str::to_owned));
    let text = message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    if text.chars().count() > 300 { format!("{}…", text.chars().take(300).collect::<String>()) } else { text }
}

/// The answer for a model the server could not load: the upstream's message and what to do, in
/// the endpoint's dialect, with the upstream's status.
fn model_load_answer(dialect: Dialect, status: http::StatusCode, body: &[u8], upstream: &str, model: &str) -> Bytes {
    let message = format!(
        "{} (keel: upstream '{upstream}' could not load or run model '{model}'; free memory on that machine, \
         use a smaller model or quantization, or add a fallback target to this model's route in keel.toml)",
        error_message(body)
    );
    keel_upstream::ErrorBody::new(dialect, status, &message).body
}

/// An answer keel read whole, passed on with its bookkeeping recorded now.
fn whole_response(
    gateway: &Gateway,
    mut head: http::response::Parts,
    bytes: Bytes,
    answer: Answer,
    answering: &str,
) -> Response {
    strip_hop_headers(&mut head.headers);
    head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    if let Ok(value) = HeaderValue::from_str(answering) {
        head.headers.insert(KEEL_TARGET, value);
    }
    let status = head.status;
    let completion = Completion::new(gateway.clone(), answer, status);
    completion.end(None);
    Response::from_parts(head, Body::from(bytes))
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
            models: None,
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
