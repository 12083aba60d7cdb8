//! What the attempts of one request found so far ([`Tally`]), whether another round follows
//! ([`next_round`]), and keel's own answer when no target answered ([`final_error`]).

use std::time::{Duration, Instant};

use keel_breaker::Permit;
use keel_types::{Blame, FailureClass};
use keel_upstream::UpstreamError;

use super::admit::{Permits, Refusal};
use crate::error::ProxyError;
use crate::relay::record;
use crate::state::Gateway;

/// What the attempts of one request found so far: for retry decisions and the final error.
#[derive(Default)]
pub(super) struct Tally {
    /// Each target that did not answer, and why.
    pub(super) reasons: Vec<String>,
    /// The soonest an open breaker admits a probe.
    pub(super) retry_after: Option<Duration>,
    pub(super) last_transport_error: Option<UpstreamError>,
    /// A failure of this round may pass when asked again.
    pub(super) retryable: bool,
    /// Upstream calls made.
    pub(super) calls: u32,
    /// Targets not to ask again in this request (their model could not be loaded).
    pub(super) spent: Vec<usize>,
    /// Targets refused this round whose failures are partial, with their consecutive failures.
    pub(super) partial: Vec<(usize, u64)>,
    /// Targets whose admission queue shed the request (each also in `reasons`).
    pub(super) sheds: usize,
    /// How long the request waited in admission queues, in all, when it waited in any.
    pub(super) queue_wait: Option<Duration>,
    /// The route's targets not asked at all (remote ones the route does not allow; each in
    /// `reasons`).
    pub(super) withheld: usize,
}

impl Tally {
    pub(super) fn refused(&mut self, index: usize, refusal: Refusal) {
        self.retry_after = Some(self.retry_after.map_or(refusal.retry_after, |r| r.min(refusal.retry_after)));
        if let Some(failures) = refusal.partial {
            self.partial.push((index, failures));
        }
        self.reasons.push(refusal.reason);
    }

    /// A target whose admission queue shed the request (`[admission]`): busy, not at fault, so
    /// nothing is recorded against its breakers; the next target is tried. No call was made.
    pub(super) fn shed(&mut self, shed: keel_admission::Shed) {
        tracing::info!(target = %shed.target(), reason = shed.reason().as_str(), "admission shed the request at this target");
        let retry_after = shed.retry_after();
        self.retry_after = Some(self.retry_after.map_or(retry_after, |r| r.min(retry_after)));
        self.not_called();
        self.sheds += 1;
        match &shed {
            // These count the waits at earlier targets too: they are the request's whole wait.
            keel_admission::Shed::WaitTooLong { waited, .. } | keel_admission::Shed::DeadlinePassed { waited, .. } => {
                self.queue_wait = Some(*waited);
            }
            keel_admission::Shed::Displaced { waited, .. } => self.waited(*waited),
            keel_admission::Shed::QueueFull { .. } | keel_admission::Shed::DeadlineUnmeetable { .. } => {}
        }
        self.reasons.push(shed.to_string());
    }

    /// A target made ready was not called after all (shed, or its breaker refused after the
    /// wait for a slot).
    pub(super) fn not_called(&mut self) {
        self.calls = self.calls.saturating_sub(1);
    }

    /// Time spent in an admission queue, added to the request's.
    pub(super) fn waited(&mut self, waited: Duration) {
        self.queue_wait = Some(self.queue_wait.unwrap_or_default() + waited);
    }

    /// A call that produced no response head: held against the server, the model or nobody.
    pub(super) fn unreachable(
        &mut self,
        gateway: &Gateway,
        key: &str,
        permits: Permits,
        err: UpstreamError,
        latency: Duration,
    ) {
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
    pub(super) fn failed(
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
    pub(super) fn panic_target(&self, share: f64) -> Option<usize> {
        let (index, _) = self.partial.iter().min_by_key(|(_, failures)| *failures)?;
        (share > 0.0 && rand::random::<f64>() < share).then_some(*index)
    }
}

/// Whether another round over the targets follows a failed one, and after what wait: only for
/// failures that may pass (not for open breakers alone), within the retry allowance, the budget
/// and the deadline. `None` ends the request (the reason is added to the tally).
pub(super) fn next_round(
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
pub(super) fn final_error(tally: Tally, targets: usize, requested_model: String, started: Instant) -> ProxyError {
    let elapsed = keel_types::duration::format(Duration::from_millis(started.elapsed().as_millis() as u64));
    let calls = tally.calls;
    if tally.sheds > 0 && tally.sheds == tally.reasons.len() {
        return ProxyError::Overloaded {
            model: if requested_model.is_empty() { "*".to_owned() } else { requested_model },
            reasons: tally.reasons,
            retry_after: tally.retry_after.unwrap_or(Duration::from_secs(1)),
        };
    }
    match tally.last_transport_error {
        Some(mut err) if targets + tally.withheld == 1 && tally.retry_after.is_none() => {
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
