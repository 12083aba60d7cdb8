//! The retry loop: rounds over a request's targets in fallback order until one answers usably,
//! nothing is left to try, or the deadline passes — and one attempt at one target: its breakers,
//! its request, the call, the answer judged.

use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use http::{HeaderMap, HeaderValue};
use keel_types::FailureClass;
use keel_upstream::{RequestBody, ResponseBody, UpstreamError};

use super::admit::{Permits, Refusal, admit};
use super::judge::{Judged, Place, Whole, judge};
use super::prepare::{Prepared, prepare_target};
use super::request::{Call, Forward, Payload, Sent};
use super::respond::{Bridged, KEEL_ATTEMPTS, bridge_response, relay_response, whole_response};
use super::resume::{Continued, Resume};
use super::tally::{Tally, final_error, next_round};
use crate::admission::set_queue_wait;
use crate::bridge::Bridge;
use crate::endpoint::{Endpoint, EndpointKind};
use crate::error::InDialect;
use crate::relay::{Answer, Completion, Continuation, Continue, record};
use crate::request_id::REQUEST_ID;
use crate::request_metrics::shortened_model;
use crate::state::{Gateway, UpstreamHandle};
use crate::traces::{Attempt, CallFacts, Stage, context_of, within};

/// Tries the request's targets in order (with retry rounds) and relays the first usable answer.
///
/// One state machine on purpose: each target's call, the judging of its answer and the client's
/// response are awaited here, the steps around them are plain functions (nested futures would be
/// moved into place on every attempt).
pub(crate) async fn send(gateway: &Gateway, call: Call, endpoint: Endpoint, forward: Forward) -> Sent {
    gateway.inner.retry_budget.deposit();
    let mut attempts = Attempts::new(gateway, call, endpoint, forward);
    'rounds: loop {
        let mut attempted = false;
        attempts.tally.partial.clear();
        for index in 0..attempts.forward.targets.len() {
            let (mut target, request) = match attempts.ready(index) {
                Ok(ready) => ready,
                Err(Tried::Skipped | Tried::Failed) => continue,
                Err(Tried::Over) => break 'rounds,
                Err(Tried::Answered(sent)) => return *sent,
            };
            attempted = true;
            let UpstreamCall { path, body, mut headers, mut remaining } = request;
            if let Some((queues, ticket)) = attempts.ticket() {
                // A half-open breaker's probe is not held while the request waits for a slot:
                // it is given back and asked for again once the slot is there.
                let probing = target.permits.probing();
                if probing {
                    target.permits = Permits::default();
                }
                let stage = Stage::start(gateway.tracing(), "admission");
                // Boxed: only requests that queue pay for the wait's future.
                match Box::pin(queues.admit(&target.key, ticket)).await {
                    Ok(slot) => {
                        if slot.was_queued() {
                            attempts.tally.waited(slot.waited());
                        }
                        if let Some(stage) = &stage {
                            stage.set("keel.admission.waited_ms", slot.waited().as_millis() as i64);
                        }
                        target.slot = Some(slot);
                    }
                    Err(shed) => {
                        if let Some(stage) = &stage {
                            stage.failed("shed", shed.to_string());
                        }
                        if let Some(log) = &gateway.inner.incidents {
                            log.shed(&target.key, shed.reason().as_str());
                        }
                        attempts.tally.shed(shed);
                        continue;
                    }
                }
                drop(stage);
                if probing {
                    let upstream = &target.handle.upstream.name;
                    let Some(permits) = attempts.permits(index, upstream, &target.key) else {
                        attempts.tally.not_called();
                        continue;
                    };
                    target.permits = permits;
                }
                // The wait took some of the request's time.
                let Some(left) = attempts.time_left(&target.key) else { break 'rounds };
                remaining = left;
            }
            let (handle, method) = (target.handle, attempts.call.method.clone());
            target.trace = attempts.trace(&target, &method, &mut headers);
            handle.calls.increment(1);
            if handle.remote {
                let (upstream, route) = (handle.upstream.name.clone(), endpoint.label);
                metrics::counter!(keel_telemetry::names::REMOTE_REQUESTS_TOTAL, "upstream" => upstream, "route" => route)
                    .increment(1);
            }
            let head_started = Instant::now();
            let result = handle.client.send_within(&handle.upstream, method, &path, headers, body, remaining).await;
            target.head_latency = head_started.elapsed();
            let Some(response) = attempts.head(&mut target, result) else { continue };
            let place = attempts.place(&target);
            let buffer = attempts.buffers(target.bridge);
            let model = attempts.forward.targets[index].model_for(attempts.asked());
            let judged =
                judge(gateway, endpoint, response, handle, target.bridge.is_some(), place, buffer, model).await;
            match attempts.judged(target, judged) {
                Ok((whole, target, failure)) => return attempts.respond(whole, target, failure).await,
                Err(Tried::Over) => break 'rounds,
                Err(_) => continue,
            }
        }
        if attempts.panic_pass(attempted) {
            continue;
        }
        attempts.round += 1;
        let replayable = matches!(attempts.forward.payload, Payload::Bytes(_));
        match next_round(gateway, &mut attempts.tally, attempts.round, replayable, attempts.deadline) {
            Some(wait) => {
                metrics::counter!(keel_telemetry::names::RETRIES_TOTAL, "route" => endpoint.label).increment(1);
                tokio::time::sleep(wait).await;
            }
            None => break,
        }
    }
    attempts.give_up()
}

impl Continue for Resume {
    /// Asks the next targets to continue after `partial` (the text this stream sent).
    fn start(self: Box<Self>, partial: &str) -> Option<Continuation> {
        let parent = self.trace.clone();
        let Continued { gateway, endpoint, call, forward } = self.continuation(partial)?;
        tracing::info!(targets = forward.targets.len(), "stream broke mid-answer; continuing on the next target");
        let stage = parent.and_then(|parent| Stage::under(gateway.tracing(), &parent, "continuation"));
        if let Some(stage) = &stage {
            stage.set("keel.continued_after_chars", partial.chars().count() as i64);
        }
        let cx = context_of(&stage);
        let continued = async move {
            let _stage = stage;
            send(&gateway, call, endpoint, forward).await.response
        };
        Some(Box::pin(within(cx, continued)))
    }
}

/// One request's attempts: what is sent, where, and what the attempts so far found.
struct Attempts<'a> {
    gateway: &'a Gateway,
    endpoint: Endpoint,
    /// The client's method and headers (with the request id), sent to every target.
    call: Call,
    forward: Forward,
    /// No call starts after this.
    deadline: Instant,
    tally: Tally,
    /// Retry rounds done so far.
    round: u32,
    /// Set for one pass when every target is out for partial failures (see `Tally::panic_target`).
    panic: Option<usize>,
}

/// How one attempt at a target ended, when it did not give an answer to relay.
enum Tried {
    /// Not called: its breaker refused, or its upstream is unknown.
    Skipped,
    /// Called, and failed in a way the next target or round may do better.
    Failed,
    /// Nothing more can be tried in this request.
    Over,
    /// keel's own answer for the client (a request the bridge cannot translate, or answers
    /// itself).
    Answered(Box<Sent>),
}

/// A target about to be called: what the attempt knows of it before and after the call.
struct Target<'h> {
    index: usize,
    key: String,
    handle: &'h UpstreamHandle,
    permits: Permits,
    bridge: Option<Bridge>,
    /// A bridged call asks the upstream for a stream.
    stream_requested: bool,
    /// A bridged call's request as the client sent it.
    request: Option<std::sync::Arc<serde_json::Value>>,
    /// No attempt may follow this one.
    is_last: bool,
    /// Time to the response head, once it came.
    head_latency: Duration,
    /// Its admission slot (`[admission]`), held until the answer ends.
    slot: Option<keel_admission::Permit>,
    /// The call's span, when traces are sent: ended by the answer's end or the call's failure.
    trace: Option<Box<Attempt>>,
}

/// The upstream call of one attempt.
struct UpstreamCall {
    path: String,
    body: RequestBody,
    headers: HeaderMap,
    /// What is left of the request's deadline.
    remaining: Duration,
}

/// The head's failure class and what the upstream said in it, when it answered with an error
/// that goes to the client.
type HeadFailure = (Option<FailureClass>, Option<String>);

impl<'a> Attempts<'a> {
    fn new(gateway: &'a Gateway, mut call: Call, endpoint: Endpoint, mut forward: Forward) -> Attempts<'a> {
        let deadline = crate::retry::deadline(&call.headers, gateway.config().retry.deadline, call.started);
        call.headers.insert(REQUEST_ID, call.id.clone());
        let withheld = std::mem::take(&mut forward.withheld);
        let tally = Tally { withheld: withheld.len(), reasons: withheld, ..Tally::default() };
        Attempts { gateway, endpoint, call, forward, deadline, tally, round: 0, panic: None }
    }

    /// After a round in which no target was called: when targets were refused for partial
    /// failures only, the least-bad one gets a pass of its own for a bounded share of requests
    /// (`[breaker] panic_share`). True when that pass follows.
    fn panic_pass(&mut self, attempted: bool) -> bool {
        if !attempted && self.panic.is_none() && !self.tally.partial.is_empty() {
            self.panic = self.tally.panic_target(self.gateway.config().breaker.panic_share);
            if self.panic.is_some() {
                metrics::counter!(keel_telemetry::names::BREAKER_PANIC_REQUESTS_TOTAL).increment(1);
                return true;
            }
            // Not drawn this time: a later round may draw it, like any retry.
            self.tally.retryable = true;
        }
        self.panic = None;
        false
    }

    /// Target `index` made ready for its call: not spent, admitted by its breakers, its request
    /// prepared, within the deadline. `Err` says why it is not called.
    fn ready(&mut self, index: usize) -> Result<(Target<'a>, UpstreamCall), Tried> {
        if self.tally.spent.contains(&index) || self.panic.is_some_and(|p| p != index) {
            return Err(Tried::Skipped);
        }
        let gateway = self.gateway;
        let target = &self.forward.targets[index];
        let key = crate::routing::breaker_key(target, &self.forward.route_model, &self.forward.requested_model);
        let handle = gateway.upstream(&target.upstream).ok_or(Tried::Skipped)?;
        if let Some((reason, retry_after)) = handle.budget.as_ref().and_then(|budget| budget.refusal()) {
            self.tally.refused(index, Refusal { reason, retry_after, partial: None });
            return Err(Tried::Skipped);
        }
        let permits = self.permits(index, &handle.upstream.name, &key).ok_or(Tried::Skipped)?;
        let bridge = crate::bridge::bridge_for(self.endpoint, handle.upstream.dialect);
        let Forward { targets, requested_model, path_and_query, payload, .. } = &mut self.forward;
        let Prepared { body, path, stream_requested, request } = match prepare_target(
            self.endpoint,
            &targets[index],
            requested_model,
            path_and_query,
            payload,
            handle,
            bridge,
        ) {
            Ok(prepared) => prepared,
            Err(Some(answer)) => return Err(Tried::Answered(answer)),
            Err(None) => return Err(Tried::Over),
        };
        let is_last = self.is_last(index);
        // The last attempt takes the client's headers, earlier ones get a copy.
        let headers = if is_last { std::mem::take(&mut self.call.headers) } else { self.call.headers.clone() };
        let remaining = self.time_left(&key).ok_or(Tried::Over)?;
        self.tally.calls += 1;
        let head_latency = Duration::ZERO;
        let target = Target {
            index,
            key,
            handle,
            permits,
            bridge,
            stream_requested,
            request,
            is_last,
            head_latency,
            slot: None,
            trace: None,
        };
        Ok((target, UpstreamCall { path, body, headers, remaining }))
    }

    /// What is left of the request's deadline for a call to target `key`; `None` (noted in the
    /// tally) when it has passed.
    fn time_left(&mut self, key: &str) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
        if left.is_none() {
            self.tally.reasons.push(format!("{key}: not tried, the request's deadline passed"));
        }
        left
    }

    /// The admission queues and this request's ticket (with its deadline), when the request
    /// waits for a slot before each call: admission is on and the endpoint runs a model.
    fn ticket(&self) -> Option<(&'a crate::admission::Queues, keel_admission::Ticket)> {
        let ticket = self.call.ticket.as_ref()?;
        let queues = self.gateway.inner.admission.as_ref()?;
        if !crate::admission::Queues::queues(self.endpoint) {
            return None;
        }
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let waited = self.tally.queue_wait.unwrap_or_default();
        Some((queues, ticket.clone().with_deadline(deadline).with_waited_before(waited)))
    }

    /// The call's result: the response head, or `None` when the target could not be reached (held
    /// against the server, the model or nobody, in the tally).
    fn head(
        &mut self,
        target: &mut Target<'_>,
        result: Result<http::Response<ResponseBody>, UpstreamError>,
    ) -> Option<http::Response<ResponseBody>> {
        target.handle.duration.record(target.head_latency.as_secs_f64());
        match result {
            Ok(response) => {
                // The server answered: it is up, whatever the model did.
                record(target.permits.server.take(), None, target.head_latency);
                Some(response)
            }
            Err(err) => {
                if let Some(trace) = target.trace.take() {
                    trace.failed(err.class, &err.detail);
                }
                let permits = std::mem::take(&mut target.permits);
                self.tally.unreachable(self.gateway, &target.key, permits, err, target.head_latency);
                None
            }
        }
    }

    /// Where the attempt at `target` stands: what decides whether its failure ends the request.
    fn place(&self, target: &Target<'_>) -> Place {
        Place {
            is_last: target.is_last,
            last_in_round: self.panic.is_some() || target.index + 1 == self.forward.targets.len(),
            replayable: matches!(self.forward.payload, Payload::Bytes(_)),
        }
    }

    /// What the judged answer means for the request: an answer for the client, or a failure of
    /// the target (noted in the tally) after which the next target or round may do better.
    fn judged(&mut self, target: Target<'a>, judged: Judged) -> Result<(Whole, Target<'a>, HeadFailure), Tried> {
        let (failure, tried) = match judged {
            Judged::Answer(whole, class, detail) => return Ok((whole, target, (class, detail))),
            Judged::Failed(failure) => (failure, Tried::Failed),
            Judged::Unusable(failure) => (failure, Tried::Over),
        };
        let Target { index, key, permits, head_latency, trace, .. } = target;
        if let Some(trace) = trace {
            trace.failed(failure.0, &failure.1);
        }
        self.tally.failed(self.gateway, index, &key, permits.model, failure, head_latency);
        Err(tried)
    }

    /// Starts the span of the call to `target` (when traces are sent), its `traceparent` written
    /// into the call's `headers`.
    fn trace(&self, target: &Target<'_>, method: &http::Method, headers: &mut HeaderMap) -> Option<Box<Attempt>> {
        let tracing = self.gateway.tracing()?;
        let body = match &self.forward.payload {
            Payload::Bytes(bytes) => Some(&bytes[..]),
            _ => None,
        };
        let facts = CallFacts {
            endpoint: self.endpoint,
            method,
            upstream: &target.handle.upstream,
            model: self.forward.targets[target.index].model_for(self.asked()),
            body,
        };
        Attempt::start(Some(tracing), facts, headers)
    }

    /// The target's breaker permits, or `None` when a breaker refuses (noted in the tally).
    /// Requests that name no model pass without breakers.
    fn permits(&mut self, index: usize, upstream: &str, key: &str) -> Option<Permits> {
        if self.endpoint.kind == EndpointKind::Passthrough {
            return Some(Permits::default());
        }
        let panicking = self.panic == Some(index);
        match admit(self.gateway, upstream, key, panicking) {
            Ok(permits) => {
                if panicking {
                    tracing::debug!(target = %key, "every target is out but the failures are partial; trying the least-bad one anyway (panic_share)");
                }
                Some(permits)
            }
            Err(refusal) => {
                self.tally.refused(index, refusal);
                None
            }
        }
    }

    /// No attempt may follow one at `index`: it is the last target of the last round (or the one
    /// target of a panic pass), or its body cannot be sent again.
    fn is_last(&self, index: usize) -> bool {
        (self.panic.is_some() || index + 1 == self.forward.targets.len())
            && (self.round >= self.gateway.config().retry.attempts
                || !matches!(self.forward.payload, Payload::Bytes(_)))
    }

    /// Whether a successful answer is read whole before it is passed on: a non-streamed answer to
    /// a model request (so that one cut short fails its target like a 5xx), unless the caller
    /// judges the answer itself or the bridge translates it.
    fn buffers(&self, bridge: Option<Bridge>) -> bool {
        !self.forward.stream
            && !self.call.hold_permit
            && bridge.is_none()
            && self.endpoint.kind == EndpointKind::ModelInBody
            && self.call.method != http::Method::HEAD
    }

    /// The model as the client asked for it (`*` for requests that name none).
    fn asked(&self) -> &str {
        if self.forward.requested_model.is_empty() { "*" } else { &self.forward.requested_model }
    }

    /// The client's response from a target's answer: read whole, relayed, or translated, with the
    /// bookkeeping that records it when it ends.
    async fn respond(&mut self, whole: Whole, target: Target<'_>, failure: HeadFailure) -> Sent {
        let target_head_latency = target.head_latency;
        let resume = self.resume_after(target.index, &whole);
        if target.index > 0 {
            metrics::counter!(keel_telemetry::names::FALLBACKS_TOTAL, "route" => self.endpoint.label).increment(1);
            if let Some(log) = &self.gateway.inner.incidents {
                let asked = self.asked();
                let skipped = self.forward.targets[..target.index]
                    .iter()
                    .map(|skipped| (skipped.upstream.clone(), Some(skipped.model_for(asked).to_owned())))
                    .collect();
                log.fallback_served(skipped, self.forward.targets[target.index].display_name(asked));
            }
        }
        let (permit, held) =
            if self.call.hold_permit { (None, target.permits.model) } else { (target.permits.model, None) };
        let answering = self.forward.targets[target.index].display_name(self.asked());
        let uses_breakers = self.endpoint.kind != EndpointKind::Passthrough;
        let answer = Answer {
            id: String::from_utf8_lossy(self.call.id.as_bytes()).into_owned(),
            route: self.endpoint.label,
            dialect: self.endpoint.dialect,
            model: shortened_model(&self.forward.requested_model),
            upstream: target.handle.upstream.name.clone(),
            key: if uses_breakers { target.key } else { String::new() },
            head_failure: failure.0,
            head_detail: failure.1,
            permit,
            admission: target.slot,
            resume,
            head_latency: target.head_latency,
            started: self.call.started,
            trace: target.trace,
        };
        let (gateway, idle_timeout) = (self.gateway, target.handle.idle_timeout);
        let mut response = match (whole, target.bridge) {
            (Whole::Read(head, bytes), _) => whole_response(gateway, head, bytes, answer, &answering),
            // Boxed: a rare path whose large future would otherwise grow every request's.
            (Whole::Streaming(upstream), Some(bridge)) => {
                let bridged = Bridged { bridge, stream: target.stream_requested, request: target.request };
                Box::pin(bridge_response(gateway, upstream, answer, &answering, idle_timeout, bridged)).await
            }
            (Whole::Streaming(upstream), None) => {
                let head_request = self.call.method == http::Method::HEAD;
                relay_response(gateway, upstream, answer, &answering, idle_timeout, head_request, None)
            }
        };
        if self.tally.calls > 1 {
            response.headers_mut().insert(KEEL_ATTEMPTS, HeaderValue::from(self.tally.calls));
        }
        if let Some(budget) = &target.handle.budget {
            let sent = match &self.forward.payload {
                Payload::Bytes(bytes) => bytes.len() as u64,
                Payload::Stream(_) => 0,
            };
            let budget = std::sync::Arc::clone(budget);
            response = response.map(|body| crate::remote::charged(budget, sent.div_ceil(4), body));
        }
        server_timing(&mut response, self.call.started.elapsed(), Some(target_head_latency));
        set_queue_wait(&mut response, self.tally.queue_wait);
        Sent { response, answered: Some(target.index), permit: held }
    }

    /// How to continue the answer of target `index` on the targets after it if its stream breaks
    /// mid-answer: for a successful chat stream with targets left.
    fn resume_after(&self, index: usize, whole: &Whole) -> Option<Box<dyn Continue>> {
        let (Payload::Bytes(bytes), Whole::Streaming(response)) = (&self.forward.payload, whole) else { return None };
        let chat =
            matches!(self.endpoint.label, "/api/chat" | "/v1/chat/completions" | "/v1/messages" | "/v1/responses");
        if !response.status().is_success() || self.call.hold_permit || !chat || index + 1 >= self.forward.targets.len()
        {
            return None;
        }
        let (original, prefix) = match &self.call.continuing {
            Some(continuing) => (continuing.original.clone(), continuing.prefix.clone()),
            None => (bytes.clone(), String::new()),
        };
        Some(Box::new(Resume {
            gateway: self.gateway.clone(),
            endpoint: self.endpoint,
            method: self.call.method.clone(),
            headers: self.call.headers.clone(),
            id: self.call.id.clone(),
            started: self.call.started,
            targets: self.forward.targets[index + 1..].to_vec(),
            route_model: self.forward.route_model.clone(),
            requested_model: self.forward.requested_model.clone(),
            path_and_query: self.forward.path_and_query.clone(),
            original,
            prefix,
            ticket: self.call.ticket.clone(),
            trace: self.gateway.tracing().map(|_| keel_telemetry::traces::Context::current()),
        }))
    }

    /// keel's own answer when no target answered, logged and counted.
    fn give_up(self) -> Sent {
        let Attempts { endpoint, call, forward, tally, .. } = self;
        let model = shortened_model(&forward.requested_model);
        let queue_wait = tally.queue_wait;
        let error = final_error(tally, forward.targets.len(), forward.requested_model, call.started);
        tracing::warn!(status = error.status().as_u16(), error = %error, "no target answered");
        Completion::finished_now(endpoint.label, &model, error.status(), call.started);
        let mut response = InDialect(endpoint.dialect, error).into_response();
        set_queue_wait(&mut response, queue_wait);
        server_timing(&mut response, call.started.elapsed(), None);
        Sent::keel(response)
    }
}

/// The `Server-Timing` header: keel's own time to the response head (routing, queueing, failed
/// attempts, retry pauses) and the answering upstream's time to its head, in milliseconds.
/// (Written with integer arithmetic: float formatting cost a thousand instructions a request.)
fn server_timing(response: &mut axum::response::Response, to_head: Duration, upstream: Option<Duration>) {
    let mut value = Vec::with_capacity(48);
    value.extend_from_slice(b"keel;dur=");
    push_millis(&mut value, to_head.saturating_sub(upstream.unwrap_or_default()));
    if let Some(upstream) = upstream {
        value.extend_from_slice(b", upstream;dur=");
        push_millis(&mut value, upstream);
    }
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        response.headers_mut().insert(SERVER_TIMING, value);
    }
}

const SERVER_TIMING: http::HeaderName = http::HeaderName::from_static("server-timing");

/// Appends `duration` in milliseconds with one decimal (`812.3`).
fn push_millis(out: &mut Vec<u8>, duration: Duration) {
    // In u64, not the u128 of `as_micros`: 128-bit division cost a third of this header.
    let tenths = duration.as_secs().saturating_mul(10_000) + u64::from(duration.subsec_micros() / 100);
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    let mut rest = tenths / 10;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.push(b'.');
    out.push(b'0' + (tenths % 10) as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_have_one_decimal() {
        let text = |d: Duration| {
            let mut out = Vec::new();
            push_millis(&mut out, d);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(Duration::ZERO), "0.0");
        assert_eq!(text(Duration::from_micros(812_345)), "812.3");
        assert_eq!(text(Duration::from_secs(90)), "90000.0");
        assert_eq!(text(Duration::from_micros(49)), "0.0");
    }
}
