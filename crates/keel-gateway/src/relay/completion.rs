//! The bookkeeping of one answer: what a relayed (or whole) answer records when it ends — request
//! metrics, the in-flight gauge, the final log line, the target's observed health and its breaker
//! — and [`record`], which writes one call's result to a breaker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use keel_breaker::{Outcome, Permit};
use keel_telemetry::names;
use keel_types::{Dialect, FailureClass};

use super::hook::Continue;
use crate::request_metrics::{self, RequestMetrics};
use crate::state::Gateway;

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
    /// The target's admission slot (`[admission]`), freed when the upstream's answer ends (or the
    /// client goes away).
    pub(crate) admission: Option<keel_admission::Permit>,
    /// How to continue the answer on the next target if its stream breaks mid-answer.
    pub(crate) resume: Option<Box<dyn Continue>>,
    /// Time to the response head (what slow-call detection compares).
    pub(crate) head_latency: Duration,
    /// When the request arrived.
    pub(crate) started: Instant,
    /// The call's span (when traces are sent), ended with the answer.
    pub(crate) trace: Option<Box<crate::traces::Attempt>>,
}

/// Bookkeeping for one relayed response: in-flight gauge, request metrics, the final log line,
/// the target's observed health and its breaker. Recorded on drop, so a client that disconnects is
/// counted too (a disconnect says nothing about the target: its permit records nothing).
pub(crate) struct Completion {
    gateway: Gateway,
    pub(super) answer: Answer,
    metrics: Arc<RequestMetrics>,
    in_flight: metrics::Gauge,
    status: StatusCode,
    /// `None` until the body ended; then `Some(None)` for a clean end or `Some(Some(..))` for a break.
    outcome: Option<Option<(FailureClass, String)>>,
    /// The answer's first chunk has been seen (and its time recorded).
    first_chunk: bool,
}

impl Completion {
    /// Notes a chunk of the answer: the first one's time, and for its trace.
    #[inline]
    pub(crate) fn saw(&mut self, data: &[u8]) {
        let first = !self.first_chunk && !data.is_empty();
        if first {
            self.first_chunk = true;
            self.metrics.first_chunk.record(self.answer.started.elapsed().as_secs_f64());
        }
        if let Some(trace) = &mut self.answer.trace {
            trace.saw(data, first);
        }
    }

    /// Starts tracking a relayed response whose head has arrived.
    pub(crate) fn new(gateway: Gateway, answer: Answer, status: StatusCode) -> Completion {
        let in_flight = request_metrics::in_flight(answer.route);
        in_flight.increment(1.0);
        let metrics = request_metrics::for_request(answer.route, &answer.model, status);
        metrics.head.record(answer.started.elapsed().as_secs_f64());
        Completion { gateway, answer, metrics, in_flight, status, outcome: None, first_chunk: false }
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

    pub(super) fn finish(&mut self, failure: Option<(FailureClass, String)>) {
        self.outcome = Some(failure);
        // The upstream is done with this answer: its slot goes to the next request now, also when
        // a broken stream is being continued on another target.
        self.answer.admission = None;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let permit = self.answer.permit.take();
        let trace = self.answer.trace.take();
        let Answer { id, model, upstream, key, head_failure, head_detail, head_latency, started, .. } = &self.answer;
        let elapsed = started.elapsed();
        self.in_flight.decrement(1.0);
        self.metrics.requests.increment(1);
        self.metrics.whole.record(elapsed.as_secs_f64());
        let duration_ms = elapsed.as_millis() as u64;
        let status = self.status.as_u16();
        if let Some(trace) = trace {
            match &self.outcome {
                None => trace.abandoned(),
                Some(Some((class, detail))) => trace.ended(status, Some((*class, detail))),
                Some(None) => {
                    let detail = head_detail.as_deref().unwrap_or("the upstream answered with an error");
                    trace.ended(status, head_failure.map(|class| (class, detail)));
                }
            }
        }
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
                record(permit, Some(class), *head_latency);
                if !key.is_empty() {
                    self.gateway.observe(key, Some((class, detail)));
                }
            }
            Some(None) => {
                tracing::info!(%id, status, %model, target = %key, duration_ms, "request finished");
                record(permit, *head_failure, *head_latency);
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
