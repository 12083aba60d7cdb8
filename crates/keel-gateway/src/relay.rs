//! Relaying an upstream response body to the client, chunk by chunk.
//!
//! Each chunk is passed on as soon as it arrives (never buffered whole). A body that breaks —
//! cut off, or silent for longer than the upstream's `idle_timeout` — ends with an error line in
//! the stream's own framing (`{"error": …}` for NDJSON, a `data:` event for SSE) instead of a bare
//! EOF, so clients raise a clear error; so does a stream still open when keel's shutdown grace
//! runs out ("keel is shutting down; retry the request"). [`Completion`] records metrics, logs and the target's health
//! when the body ends or the client goes away (dropping the body cancels the upstream request).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body::Frame;
use keel_breaker::Permit;
use keel_telemetry::names;
use keel_types::{Dialect, FailureClass};
use keel_upstream::ResponseBody;
use keel_upstream::translate::SseToNdjson;
use keel_upstream::{ErrorBody, classify_body_error};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::request_metrics::{self, RequestMetrics};
use crate::state::Gateway;

/// How the body is framed, which decides how a mid-body failure is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `application/x-ndjson`: one JSON object per line.
    NdJson,
    /// `text/event-stream`: `data: …` events.
    Sse,
    /// Anything else, or a body with a declared length: a failure can only abort the body.
    Opaque,
}

impl Framing {
    fn of(headers: &HeaderMap) -> Framing {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Framing::Opaque;
        }
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type.contains("ndjson") {
            Framing::NdJson
        } else if content_type.contains("event-stream") {
            Framing::Sse
        } else {
            Framing::Opaque
        }
    }

    /// The final chunk that tells the client the stream broke, if this framing can carry one.
    fn error_chunk(self, dialect: Dialect, message: &str) -> Option<Bytes> {
        let json = ErrorBody::json(dialect, StatusCode::BAD_GATEWAY, message);
        match self {
            Framing::NdJson => Some(Bytes::from(format!("{json}\n"))),
            Framing::Sse => Some(Bytes::from(format!("data: {json}\n\n"))),
            Framing::Opaque => None,
        }
    }
}

/// What `poll_frame` answers.
type PolledFrame = Poll<Option<Result<Frame<Bytes>, std::io::Error>>>;

/// What polling a continuation gave.
enum Step {
    /// Something changed: look at the pending lines and the state again.
    Continue,
    /// Nothing yet.
    Pending,
    /// The continuation's body failed.
    Failed(std::io::Error),
}

/// Where the relayed bytes come from.
enum Source {
    /// The upstream's response body.
    Upstream(ResponseBody),
    /// The upstream broke mid-answer; the next target is being asked to continue.
    Resuming(crate::resume::Continuation),
    /// The continuation's answer, relayed (with its own timeouts and bookkeeping).
    Continued(Body),
}

/// The response body handed to the client: the upstream's body, frame by frame.
struct RelayBody {
    source: Source,
    idle_timeout: Duration,
    /// Fires when the upstream may have been silent for `idle_timeout`; re-armed lazily from
    /// `last_data` so that a busy stream costs no timer updates.
    idle: Pin<Box<tokio::time::Sleep>>,
    last_data: tokio::time::Instant,
    framing: Framing,
    dialect: Dialect,
    completion: Completion,
    done: bool,
    /// Translates an OpenAI SSE stream into Ollama NDJSON lines (OpenAI-dialect upstreams).
    convert: Option<Box<SseToNdjson>>,
    /// Translated lines not yet handed to the client.
    pending: VecDeque<Bytes>,
    /// Bytes still expected when the upstream declared a Content-Length. The server stops polling
    /// a body once it has written that many bytes, so the end is recognised here, not by EOF.
    remaining: Option<u64>,
    /// Reads the lines of a stream that may be continued elsewhere (see [`crate::resume`]).
    tap: Option<crate::resume::Tap>,
    /// How to continue on the next target when the stream breaks mid-answer.
    resume: Option<crate::resume::Resume>,
    /// Cancelled when keel's shutdown grace is over: the body then ends with an error line.
    grace_over: Option<CancellationToken>,
    /// Waits for `grace_over`; made the first time the body has to wait for data.
    grace_wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

/// The line a stream still open when keel's shutdown grace runs out ends with.
const SHUTTING_DOWN: &str = "keel is shutting down; retry the request";

/// Wraps an upstream response body for the client. `bodyless` marks answers that carry no body
/// whatever their headers say (to `HEAD`, or 204/304); `convert` translates an OpenAI stream
/// into Ollama's NDJSON on the way.
pub(crate) fn relay(
    upstream: ResponseBody,
    headers: &HeaderMap,
    dialect: Dialect,
    idle_timeout: Duration,
    mut completion: Completion,
    bodyless: bool,
    convert: Option<SseToNdjson>,
) -> Body {
    let resume = completion.answer.resume.take();
    let remaining = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let done = bodyless || remaining == Some(0);
    if done {
        completion.finish(None);
    }
    let now = tokio::time::Instant::now();
    let framing = Framing::of(headers);
    let tap_framing = match framing {
        Framing::NdJson => Some(crate::resume::TapFraming::NdJson),
        Framing::Sse => Some(crate::resume::TapFraming::Sse),
        Framing::Opaque => None,
    };
    let (tap, resume) = match (tap_framing, resume) {
        (Some(tap_framing), Some(resume)) if !done => (Some(crate::resume::Tap::new(tap_framing)), Some(resume)),
        _ => (None, None),
    };
    let grace_over = if done { None } else { crate::server::grace_over() };
    Body::new(RelayBody {
        source: Source::Upstream(upstream),
        idle_timeout,
        idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
        last_data: now,
        framing,
        dialect,
        completion,
        done,
        convert: convert.map(Box::new),
        pending: VecDeque::new(),
        remaining,
        tap,
        resume,
        grace_over,
        grace_wait: None,
    })
}

impl RelayBody {
    /// Ends the body after a failure: an error frame where the framing allows (after the lines
    /// already translated), else an error.
    /// `None` when the answer is being continued on another target instead.
    fn fail(&mut self, class: FailureClass, detail: String) -> Option<PolledFrame> {
        self.done = true;
        let class = if class == FailureClass::Timeout { class } else { FailureClass::StreamBroken };
        if self.try_resume(class, &detail) {
            return None;
        }
        let message = format!("keel: {detail}; the answer is incomplete, retry the request");
        let chunk = self.framing.error_chunk(self.dialect, &message);
        self.completion.finish(Some((class, detail)));
        // Lines not yet passed on are dropped: the error line says the answer is incomplete.
        self.tap = None;
        Some(match chunk {
            Some(chunk) => {
                self.pending.push_back(chunk);
                Poll::Ready(self.pending.pop_front().map(|chunk| Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(Some(Err(std::io::Error::other(message)))),
        })
    }
}

impl RelayBody {
    /// About to wait for data: `Pending` (woken when keel's shutdown grace is over too), or, once
    /// it is over, the end of the body as [`RelayBody::shut_down`] says.
    fn wait_or_shut_down(&mut self, cx: &mut Context<'_>) -> Option<PolledFrame> {
        if let Some(token) = &self.grace_over {
            let wait = self.grace_wait.get_or_insert_with(|| Box::pin(token.clone().cancelled_owned()));
            if wait.as_mut().poll(cx).is_ready() {
                self.grace_over = None;
                self.grace_wait = None;
                return self.shut_down();
            }
        }
        Some(Poll::Pending)
    }

    /// Ends the body because keel's shutdown grace is over: after the lines already passed on,
    /// an error line in the stream's framing (an error where the framing has no place for one).
    /// `None` when the error line is queued.
    fn shut_down(&mut self) -> Option<PolledFrame> {
        self.done = true;
        self.resume = None;
        // Raw chunks not yet through the tap may end mid-line: the error line replaces them.
        if self.tap.take().is_some() {
            self.pending.clear();
        }
        tracing::warn!(id = %self.completion.answer.id, "shutdown grace period over; ending the stream with an error");
        // Neither the target's failure nor its success: its breaker records nothing.
        drop(self.completion.answer.permit.take());
        self.completion.finish(None);
        match self.framing.error_chunk(self.dialect, SHUTTING_DOWN) {
            Some(chunk) => {
                self.pending.push_back(chunk);
                None
            }
            None => Some(Poll::Ready(Some(Err(std::io::Error::other(SHUTTING_DOWN))))),
        }
    }

    /// Starts continuing the answer on the next target, when the stream can be continued: it is
    /// a chat stream with targets left and its final chunk has not been sent.
    fn try_resume(&mut self, class: FailureClass, detail: &str) -> bool {
        let Some(tap) = &mut self.tap else { return false };
        if tap.finished {
            return false;
        }
        let Some(continuation) = self.resume.take().and_then(|resume| resume.start(&tap.text)) else { return false };
        tracing::warn!(class = %class, detail, "upstream stream broke mid-answer; asking the next target to continue");
        metrics::counter!(names::STREAM_CONTINUATIONS_TOTAL, "route" => self.completion.answer.route).increment(1);
        self.completion.finish(Some((class, detail.to_owned())));
        self.pending.clear();
        self.source = Source::Resuming(continuation);
        self.done = false;
        true
    }

    /// Takes the continuation's answer: relayed when it streams, else the stream ends with an error.
    fn take_continuation(&mut self, sent: crate::proxy::Sent) {
        let status = sent.response.status();
        if status.is_success() {
            self.source = Source::Continued(sent.response.into_body());
            return;
        }
        self.done = true;
        let message = format!("keel: the upstream broke mid-answer and no other target could continue it ({status})");
        if let Some(chunk) = self.framing.error_chunk(self.dialect, &message) {
            self.pending.push_back(chunk);
        }
    }

    /// Passes a chunk through the tap (when there is one): whole lines go on, an upstream error
    /// line breaks the stream (continued elsewhere, or replaced by keel's error line).
    fn through_tap(&mut self, chunk: Bytes) -> Option<Bytes> {
        let Some(tap) = &mut self.tap else { return Some(chunk) };
        let fed = tap.feed(&chunk);
        if let Some(error) = fed.error {
            let detail = format!("the upstream reported an error mid-stream: {error}");
            if !self.try_resume(FailureClass::StreamBroken, &detail) {
                self.done = true;
                self.pending.clear();
                self.completion.finish(Some((FailureClass::StreamBroken, detail)));
                let message = format!("keel: the upstream reported an error mid-stream: {error}");
                if let Some(chunk) = self.framing.error_chunk(self.dialect, &message) {
                    self.pending.push_back(chunk);
                }
                // The tap's job is done: the error line goes out as is.
                self.tap = None;
            }
        }
        (!fed.pass.is_empty()).then_some(fed.pass)
    }

    /// Polls a continuation in progress or relayed; `None` while there is none.
    fn poll_continuation(&mut self, cx: &mut Context<'_>) -> Option<Step> {
        match &mut self.source {
            Source::Upstream(_) => None,
            Source::Resuming(continuation) => match continuation.as_mut().poll(cx) {
                Poll::Ready(sent) => {
                    self.take_continuation(sent);
                    Some(Step::Continue)
                }
                Poll::Pending => Some(Step::Pending),
            },
            Source::Continued(body) => match http_body::Body::poll_frame(Pin::new(body), cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.push_back(data);
                    }
                    Some(Step::Continue)
                }
                Poll::Ready(None) => {
                    // Whatever the tap still holds goes out as is.
                    if let Some(mut tap) = self.tap.take() {
                        let rest = tap.rest();
                        if !rest.is_empty() {
                            self.pending.push_back(rest);
                        }
                    }
                    self.done = true;
                    Some(Step::Continue)
                }
                Poll::Ready(Some(Err(err))) => {
                    self.done = true;
                    Some(Step::Failed(std::io::Error::other(err.to_string())))
                }
                Poll::Pending => Some(Step::Pending),
            },
        }
    }
}

impl http_body::Body for RelayBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                if let Some(pass) = this.through_tap(chunk) {
                    return Poll::Ready(Some(Ok(Frame::data(pass))));
                }
                continue;
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.poll_continuation(cx) {
                Some(Step::Continue) => continue,
                Some(Step::Pending) => match this.wait_or_shut_down(cx) {
                    Some(poll) => return poll,
                    None => continue,
                },
                Some(Step::Failed(err)) => return Poll::Ready(Some(Err(err))),
                None => {}
            }
            let Source::Upstream(upstream) = &mut this.source else { continue };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Some(data) = frame.data_ref() else {
                        // Trailers: pass them on untouched (never produced by a translated stream).
                        if this.convert.is_none() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        continue;
                    };
                    this.last_data = tokio::time::Instant::now();
                    if let Some(convert) = &mut this.convert {
                        this.pending.extend(convert.push(data));
                        // With a tap, the error line the converter wrote is the tap's to handle.
                        if let (Some(error), None) = (convert.error(), &this.tap) {
                            let detail = format!("the upstream reported an error mid-stream: {error}");
                            this.done = true;
                            this.completion.finish(Some((FailureClass::StreamBroken, detail)));
                        }
                        continue;
                    }
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                        if *remaining == 0 {
                            this.done = true;
                            this.completion.finish(None);
                        }
                    }
                    if this.tap.is_some() {
                        if let Ok(data) = frame.into_data() {
                            this.pending.push_back(data);
                        }
                        continue;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(None) => {
                    if let Some(convert) = &mut this.convert {
                        match convert.finish() {
                            Ok(last) => this.pending.extend(last),
                            Err(err) => {
                                match this.fail(FailureClass::StreamBroken, format!("the upstream stream {err}")) {
                                    Some(poll) => return poll,
                                    None => continue,
                                }
                            }
                        }
                    }
                    this.done = true;
                    this.completion.finish(None);
                    continue;
                }
                Poll::Ready(Some(Err(err))) => {
                    match this.fail(classify_body_error(&err), format!("the upstream stream broke: {err}")) {
                        Some(poll) => return poll,
                        None => continue,
                    }
                }
                Poll::Pending => {}
            }
            if this.idle.as_mut().poll(cx).is_pending() {
                match this.wait_or_shut_down(cx) {
                    Some(poll) => return poll,
                    None => continue,
                }
            }
            let deadline = this.last_data + this.idle_timeout;
            if deadline <= tokio::time::Instant::now() {
                let detail = format!(
                    "the upstream sent nothing for {} (idle_timeout)",
                    keel_types::duration::format(this.idle_timeout)
                );
                match this.fail(FailureClass::Timeout, detail) {
                    Some(poll) => return poll,
                    None => continue,
                }
            }
            // Data arrived since the timer was set: re-arm it and look again.
            this.idle.as_mut().reset(deadline);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

/// What the bookkeeping of a relayed answer needs to know about its request.
pub(crate) struct Answer {
    /// The request id, for the final log line (which is written outside the request's span).
    pub(crate) id: String,
    /// The route label for metrics.
    pub(crate) route: &'static str,
    /// The endpoint's dialect.
    pub(crate) dialect: Dialect,
    /// The requested model (metrics label).
    pub(crate) model: String,
    /// The upstream that answered (metrics label).
    pub(crate) upstream: String,
    /// The target's breaker and observation key (`upstream:route-model`); empty for requests that
    /// are not routed by model (listings, model management), which no breaker watches.
    pub(crate) key: String,
    /// The failure class of the response head, when the upstream answered with an error.
    pub(crate) head_failure: Option<FailureClass>,
    /// What the upstream said in that error answer, when keel read it.
    pub(crate) head_detail: Option<String>,
    /// The breaker permit, recorded when the answer ends.
    pub(crate) permit: Option<Permit>,
    /// How to continue the answer on the next target if its stream breaks mid-answer.
    pub(crate) resume: Option<crate::resume::Resume>,
    /// Time to the response head (what slow-call detection compares).
    pub(crate) head_latency: Duration,
    /// When the request arrived.
    pub(crate) started: Instant,
}

/// Bookkeeping for one relayed response: in-flight gauge, request metrics, the final log line,
/// the target's observed health and its breaker. Recorded on drop, so a client that disconnects is
/// counted too (a disconnect says nothing about the target: its permit records nothing).
pub(crate) struct Completion {
    gateway: Gateway,
    answer: Answer,
    metrics: Arc<RequestMetrics>,
    in_flight: metrics::Gauge,
    status: StatusCode,
    /// `None` until the body ended; then `Some(None)` for a clean end or `Some(Some(..))` for a break.
    outcome: Option<Option<(FailureClass, String)>>,
}

impl Completion {
    /// Starts tracking a relayed response whose head has arrived.
    pub(crate) fn new(gateway: Gateway, answer: Answer, status: StatusCode) -> Completion {
        let in_flight = request_metrics::in_flight(answer.route);
        in_flight.increment(1.0);
        let metrics = request_metrics::for_request(answer.route, &answer.model, status);
        metrics.head.record(answer.started.elapsed().as_secs_f64());
        Completion { gateway, answer, metrics, in_flight, status, outcome: None }
    }

    /// Records a request keel answered itself before any upstream call.
    pub(crate) fn rejected(route: &'static str, status: StatusCode, started: Instant) {
        Completion::finished_now(route, "", status, started);
    }

    /// Records a request whose whole answer was produced at once (keel's own error responses).
    pub(crate) fn finished_now(route: &'static str, model: &str, status: StatusCode, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        let metrics = request_metrics::for_request(route, model, status);
        metrics.requests.increment(1);
        metrics.head.record(elapsed);
        metrics.whole.record(elapsed);
    }

    /// Ends a response whose body keel produced whole (a translated answer): records it now.
    pub(crate) fn end(mut self, failure: Option<(FailureClass, String)>) {
        self.finish(failure);
    }

    fn finish(&mut self, failure: Option<(FailureClass, String)>) {
        self.outcome = Some(failure);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let permit = self.answer.permit.take();
        let Answer { id, model, upstream, key, head_failure, head_detail, head_latency, started, .. } = &self.answer;
        let elapsed = started.elapsed();
        self.in_flight.decrement(1.0);
        self.metrics.requests.increment(1);
        self.metrics.whole.record(elapsed.as_secs_f64());
        let duration_ms = elapsed.as_millis() as u64;
        let status = self.status.as_u16();
        match self.outcome.take() {
            None => {
                metrics::counter!(names::CLIENT_DISCONNECTS_TOTAL, "route" => self.answer.route).increment(1);
                tracing::info!(%id, status, %model, target = %key, duration_ms, "client disconnected; upstream request cancelled");
                // Dropping the permit records nothing: the client left, the target did no wrong.
                drop(permit);
            }
            Some(Some((class, detail))) => {
                metrics::counter!(names::UPSTREAM_ERRORS_TOTAL, "upstream" => upstream.clone(), "class" => class.as_str()).increment(1);
                tracing::warn!(%id, status, %model, target = %key, duration_ms, class = %class, detail = %detail, "upstream stream broke");
                crate::proxy::record(permit, Some(class), *head_latency);
                if !key.is_empty() {
                    self.gateway.observe(key, Some((class, detail)));
                }
            }
            Some(None) => {
                tracing::info!(%id, status, %model, target = %key, duration_ms, "request finished");
                crate::proxy::record(permit, *head_failure, *head_latency);
                if !key.is_empty() {
                    let failure = head_failure.map(|class| {
                        (class, head_detail.clone().unwrap_or_else(|| format!("upstream answered {}", self.status)))
                    });
                    self.gateway.observe(key, failure);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/x-ndjson".parse().unwrap());
        assert_eq!(Framing::of(&h), Framing::NdJson);
        h.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        assert_eq!(Framing::of(&h), Framing::Sse);
        h.insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        assert_eq!(Framing::of(&h), Framing::Opaque);
    }

    #[test]
    fn error_chunks_follow_framing() {
        let nd = Framing::NdJson.error_chunk(Dialect::Ollama, "boom").unwrap();
        assert_eq!(&nd[..], b"{\"error\":\"boom\"}\n");
        let sse = Framing::Sse.error_chunk(Dialect::OpenAi, "boom").unwrap();
        assert!(sse.starts_with(b"data: {\"error\":{\"message\":\"boom\""));
        assert!(sse.ends_with(b"\n\n"));
        assert!(Framing::Opaque.error_chunk(Dialect::Ollama, "boom").is_none());
    }
}
