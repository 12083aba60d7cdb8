//! The state machine of one target's breaker: pure, single-threaded, every input explicit.
//!
//! [`Breaker`] never reads a clock and does no I/O; each method takes `now` and returns the
//! [`Transition`] it caused. The thread-safe [`Registry`](crate::Registry) wraps one `Breaker` per
//! target behind a lock plus an atomic gate.

use std::sync::Arc;
use std::time::Duration;

use keel_types::FailureClass;
use serde::Serialize;

use crate::Error;
use crate::clock::Nanos;
use crate::config::{BreakerConfig, Policy, Verdict};
use crate::event::{LastTransition, Reason, State, Transition};
use crate::window::{Counts, Ring};

/// What happened to one admitted call, as the proxy classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// `None` for a usable answer; otherwise the failure class (see
    /// [`FailureClass`](keel_types::FailureClass)). Streams are classified at their end.
    pub class: Option<FailureClass>,
    /// How long the call took; the proxy reports time to the response head (first byte), which
    /// is what `slow_call_duration` is compared with.
    pub latency: Duration,
    /// Tokens the call consumed (prompt + completion), for `max_tokens_per_minute`; 0 if unknown.
    /// Counted while CLOSED for every result, ignored classes included (tokens are spent either
    /// way); not counted for HALF_OPEN probes.
    pub tokens: u64,
}

impl Outcome {
    /// A usable answer.
    pub fn success(latency: Duration) -> Outcome {
        Outcome { class: None, latency, tokens: 0 }
    }

    /// A failed call.
    pub fn failure(class: FailureClass, latency: Duration) -> Outcome {
        Outcome { class: Some(class), latency, tokens: 0 }
    }

    /// The same outcome with a token count.
    pub fn with_tokens(self, tokens: u64) -> Outcome {
        Outcome { tokens, ..self }
    }
}

/// Admission of one call by a [`Breaker`]: give it back with [`Breaker::record`] or
/// [`Breaker::cancel`]. (The registry's [`Permit`](crate::Permit) does this for you.)
#[derive(Debug)]
#[must_use = "a ticket must be recorded or cancelled, or a half-open probe slot stays taken"]
pub struct Ticket {
    pub(crate) generation: u64,
    pub(crate) probe: bool,
}

impl Ticket {
    /// Whether this call is a HALF_OPEN probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Why a call was not admitted. Maps to 503 with a `Retry-After` header in the proxy (or to the
/// next fallback target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// [`State::Open`], or [`State::HalfOpen`] when every probe slot is taken.
    pub state: State,
    /// An operator forced the breaker open.
    pub forced: bool,
    /// Time until the breaker admits a probe. Zero in HALF_OPEN (a probe is in flight, its end is
    /// unknown); the configured `cooldown` as a hint when forced open (no end is scheduled).
    pub retry_after: Duration,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.state, self.forced) {
            (_, true) => f.write_str("circuit breaker forced open by an operator; reset it to resume traffic"),
            (State::HalfOpen, false) => {
                f.write_str("circuit breaker half-open: probe calls are in flight; retry shortly")
            }
            _ => write!(
                f,
                "circuit breaker open after repeated upstream failures; retry after {}",
                keel_types::duration::format(Duration::from_secs(self.retry_after.as_secs().max(1)))
            ),
        }
    }
}

impl std::error::Error for Rejected {}

/// What [`Breaker::try_acquire`] decided, and the transition deciding caused (OPEN → HALF_OPEN
/// when the cooldown has elapsed).
#[derive(Debug)]
pub struct Acquire {
    /// The admission or the rejection.
    pub result: Result<Ticket, Rejected>,
    /// A state change made on the way.
    pub transition: Option<Transition>,
}

/// Counts of the sliding window, as shown by a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowStats {
    /// The window length.
    #[serde(with = "keel_types::duration")]
    pub window: Duration,
    /// Calls in the window (ignored classes excluded).
    pub calls: u32,
    /// Failures among them.
    pub failures: u32,
    /// Slow calls among them.
    pub slow: u32,
    /// Good answers among them.
    pub successes: u32,
    /// `failures / calls`, 0 when empty.
    pub failure_rate: f64,
}

/// One breaker's state for `/keel/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The target's name.
    pub target: String,
    /// Current state. An OPEN breaker whose cooldown has elapsed stays `open` (with
    /// `retry_after` zero) until the next call moves it to HALF_OPEN.
    pub state: State,
    /// Whether an operator forced this state.
    pub forced: bool,
    /// Failures in a row while CLOSED.
    pub consecutive_failures: u32,
    /// The sliding window.
    pub window: WindowStats,
    /// Tokens reported in the last minute.
    pub tokens_last_minute: u64,
    /// When it last opened (registry clock); `None` while CLOSED.
    pub opened_at: Option<Nanos>,
    /// OPEN and not forced: time until probes are admitted.
    #[serde(with = "crate::event::opt_duration")]
    pub retry_after: Option<Duration>,
    /// The cooldown of the current opening, or of the next one while not OPEN.
    #[serde(with = "keel_types::duration")]
    pub cooldown: Duration,
    /// Re-opens since the breaker last closed (the exponent of the cooldown growth).
    pub reopens: u32,
    /// HALF_OPEN: probes in flight.
    pub probes_in_flight: u32,
    /// HALF_OPEN: probes succeeded so far.
    pub probe_successes: u32,
    /// The last state change.
    pub last_transition: Option<LastTransition>,
}

/// The breaker of one target.
///
/// Protocol: [`try_acquire`](Breaker::try_acquire) before the call; then exactly one of
/// [`record`](Breaker::record) (with the outcome) or [`cancel`](Breaker::cancel) (the call was
/// abandoned and says nothing about the target). Results of tickets issued before the last
/// transition are ignored, so a slow call started while CLOSED cannot close or re-open a breaker
/// that has since moved on.
#[derive(Debug, Clone)]
pub struct Breaker {
    target: Arc<str>,
    policy: Arc<Policy>,
    state: State,
    forced: bool,
    generation: u64,
    consecutive_failures: u32,
    window: Ring,
    cost: Ring,
    reopens: u32,
    opened_at: Option<Nanos>,
    open_until: Nanos,
    cooldown: Duration,
    probes_in_flight: u32,
    probe_successes: u32,
    last: Option<LastTransition>,
}

impl Breaker {
    /// A CLOSED breaker for `target`; fails if the config does not [validate](BreakerConfig::validate).
    pub fn new(target: impl Into<Arc<str>>, config: &BreakerConfig) -> Result<Breaker, Error> {
        Ok(Breaker::with_policy(target.into(), Arc::new(Policy::new(config)?)))
    }

    pub(crate) fn with_policy(target: Arc<str>, policy: Arc<Policy>) -> Breaker {
        Breaker {
            target,
            state: State::Closed,
            forced: false,
            generation: 0,
            consecutive_failures: 0,
            window: Ring::new(policy.window_bucket),
            cost: Ring::new(policy.cost_bucket),
            reopens: 0,
            opened_at: None,
            open_until: Nanos::ZERO,
            cooldown: policy.cooldown(0),
            probes_in_flight: 0,
            probe_successes: 0,
            last: None,
            policy,
        }
    }

    /// The target's name.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The config this breaker follows.
    pub fn config(&self) -> &BreakerConfig {
        &self.policy.config
    }

    /// The current state (an elapsed cooldown is applied by the next [`try_acquire`](Breaker::try_acquire)).
    pub fn state(&self) -> State {
        self.state
    }

    /// Failures in a row while CLOSED.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether an operator forced the current state.
    pub fn is_forced(&self) -> bool {
        self.forced
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn open_until(&self) -> Nanos {
        self.open_until
    }

    pub(crate) fn forced_retry_after(&self) -> Duration {
        self.policy.config.cooldown
    }

    /// Decides whether a call may go to the target now.
    pub fn try_acquire(&mut self, now: Nanos) -> Acquire {
        match self.state {
            State::Closed => Acquire { result: Ok(self.ticket(false)), transition: None },
            State::Open if self.forced => Acquire {
                result: Err(Rejected { state: State::Open, forced: true, retry_after: self.forced_retry_after() }),
                transition: None,
            },
            State::Open if now < self.open_until => Acquire {
                result: Err(Rejected {
                    state: State::Open,
                    forced: false,
                    retry_after: self.open_until.saturating_since(now),
                }),
                transition: None,
            },
            State::Open => {
                let transition = self.transition(State::HalfOpen, Reason::CooldownElapsed, now);
                Acquire { result: self.admit_probe(), transition: Some(transition) }
            }
            State::HalfOpen => Acquire { result: self.admit_probe(), transition: None },
        }
    }

    fn ticket(&self, probe: bool) -> Ticket {
        Ticket { generation: self.generation, probe }
    }

    fn admit_probe(&mut self) -> Result<Ticket, Rejected> {
        if self.probes_in_flight < self.policy.probe_slots(self.probe_successes) {
            self.probes_in_flight += 1;
            Ok(self.ticket(true))
        } else {
            Err(Rejected { state: State::HalfOpen, forced: false, retry_after: Duration::ZERO })
        }
    }

    /// Records the outcome of an admitted call; returns the transition it caused, if any.
    pub fn record(&mut self, ticket: Ticket, outcome: Outcome, now: Nanos) -> Option<Transition> {
        if ticket.generation != self.generation {
            return None;
        }
        let verdict = self.policy.verdict(outcome.class);
        match self.state {
            State::Closed => self.record_closed(verdict, outcome, now),
            State::HalfOpen if ticket.probe => self.record_probe(verdict, outcome, now),
            // OPEN issues no tickets, and HALF_OPEN issues only probes.
            State::HalfOpen | State::Open => None,
        }
    }

    /// Gives back a ticket whose call was abandoned (client went away): it counts as nothing and
    /// frees its probe slot.
    pub fn cancel(&mut self, ticket: Ticket) {
        if ticket.generation == self.generation && ticket.probe && self.state == State::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    fn is_slow(&self, outcome: &Outcome) -> bool {
        outcome.latency > self.policy.config.slow_call_duration
    }

    fn record_closed(&mut self, verdict: Verdict, outcome: Outcome, now: Nanos) -> Option<Transition> {
        let config = &self.policy.config;
        let mut reason = None;
        if verdict != Verdict::Ignored {
            if verdict == Verdict::Failure {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            } else {
                self.consecutive_failures = 0;
            }
            let counts = Counts {
                calls: 1,
                failures: u32::from(verdict == Verdict::Failure),
                slow: u32::from(self.is_slow(&outcome)),
                good: u32::from(verdict == Verdict::Success),
                tokens: 0,
            };
            let totals = self.window.add(now, counts);
            let calls = f64::from(totals.calls);
            let judged = totals.calls >= config.min_calls;
            reason = if config.failure_threshold > 0 && self.consecutive_failures >= config.failure_threshold {
                Some(Reason::ConsecutiveFailures { count: self.consecutive_failures })
            } else if judged && config.failure_rate > 0.0 && f64::from(totals.failures) / calls >= config.failure_rate {
                Some(Reason::FailureRate { rate: f64::from(totals.failures) / calls, window: config.window })
            } else if judged && config.slow_call_rate > 0.0 && f64::from(totals.slow) / calls >= config.slow_call_rate {
                Some(Reason::SlowCalls { rate: f64::from(totals.slow) / calls })
            } else if judged
                && config.min_success_ratio > 0.0
                && f64::from(totals.good) / calls < config.min_success_ratio
            {
                Some(Reason::LowConfidence { success_ratio: f64::from(totals.good) / calls })
            } else {
                None
            };
        }
        if outcome.tokens > 0 {
            let per_minute = self.cost.add(now, Counts { tokens: outcome.tokens, ..Counts::default() }).tokens;
            if reason.is_none() && config.max_tokens_per_minute > 0 && per_minute > config.max_tokens_per_minute {
                reason = Some(Reason::CostBudget { per_minute });
            }
        }
        match reason {
            Some(reason) if !self.forced => {
                self.reopens = 0;
                Some(self.transition(State::Open, reason, now))
            }
            _ => None,
        }
    }

    fn record_probe(&mut self, verdict: Verdict, outcome: Outcome, now: Nanos) -> Option<Transition> {
        self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        let config = &self.policy.config;
        let healthy = match verdict {
            Verdict::Ignored => return None,
            Verdict::Failure => false,
            Verdict::Quality => config.min_success_ratio == 0.0,
            Verdict::Success => true,
        } && !(config.slow_call_rate > 0.0 && self.is_slow(&outcome));
        if healthy {
            self.probe_successes += 1;
            if self.probe_successes >= self.policy.successes_to_close {
                return Some(self.transition(State::Closed, Reason::ProbeSucceeded, now));
            }
            None
        } else {
            self.reopens = self.reopens.saturating_add(1);
            let class = outcome.class.filter(|_| verdict == Verdict::Failure);
            Some(self.transition(State::Open, Reason::ProbeFailed { class }, now))
        }
    }

    /// Opens the breaker until [`reset`](Breaker::reset) or [`force_close`](Breaker::force_close).
    pub fn force_open(&mut self, now: Nanos) -> Transition {
        self.forced = true;
        self.transition(State::Open, Reason::ForcedOpen, now)
    }

    /// Closes the breaker and keeps it closed (no condition trips it) until
    /// [`reset`](Breaker::reset) or [`force_open`](Breaker::force_open).
    pub fn force_close(&mut self, now: Nanos) -> Transition {
        self.forced = true;
        self.transition(State::Closed, Reason::ForcedClosed, now)
    }

    /// Back to a fresh CLOSED breaker: forcing, counts, windows and cooldown growth cleared.
    pub fn reset(&mut self, now: Nanos) -> Transition {
        self.forced = false;
        self.transition(State::Closed, Reason::Reset, now)
    }

    /// An external health probe saw the target answer: an OPEN (not forced) breaker moves to
    /// HALF_OPEN now instead of waiting for the cooldown. Otherwise nothing happens.
    pub fn probe_succeeded(&mut self, now: Nanos) -> Option<Transition> {
        (self.state == State::Open && !self.forced).then(|| self.transition(State::HalfOpen, Reason::HealthProbe, now))
    }

    /// Another keel instance opened this target's breaker: a CLOSED or HALF_OPEN (not forced)
    /// breaker opens for `cooldown` (what is left of the other instance's cooldown), then probes as
    /// usual. An OPEN or forced breaker stays as it is.
    pub fn open_remote(&mut self, cooldown: Duration, now: Nanos) -> Option<Transition> {
        if self.forced || self.state == State::Open {
            return None;
        }
        let mut transition = self.transition(State::Open, Reason::Remote, now);
        self.open_until = now.saturating_add(cooldown);
        transition.cooldown = Some(cooldown);
        Some(transition)
    }

    /// Every state change goes through here: it bumps the generation (outstanding tickets become
    /// stale) and resets what the new state must start without.
    fn transition(&mut self, to: State, reason: Reason, now: Nanos) -> Transition {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        let mut cooldown = None;
        match to {
            State::Closed => {
                self.consecutive_failures = 0;
                self.window.clear();
                self.cost.clear();
                self.reopens = 0;
                self.opened_at = None;
                self.open_until = Nanos::ZERO;
                self.cooldown = self.policy.cooldown(0);
                debug_assert!(self.is_pristine());
            }
            State::Open => {
                self.opened_at = Some(now);
                if self.forced {
                    self.open_until = Nanos(u64::MAX);
                } else {
                    self.cooldown = self.policy.cooldown(self.reopens);
                    self.open_until = now.saturating_add(self.cooldown);
                    cooldown = Some(self.cooldown);
                }
            }
            State::HalfOpen => {}
        }
        self.last = Some(LastTransition { to, reason, at: now });
        Transition { target: self.target.clone(), from, to, reason, at: now, cooldown }
    }

    /// The breaker's state for `/keel/status`, as of `now`.
    pub fn snapshot(&self, now: Nanos) -> Snapshot {
        let totals = self.window.totals_at(now);
        let open = self.state == State::Open;
        Snapshot {
            target: self.target.to_string(),
            state: self.state,
            forced: self.forced,
            consecutive_failures: self.consecutive_failures,
            window: WindowStats {
                window: self.policy.config.window,
                calls: totals.calls,
                failures: totals.failures,
                slow: totals.slow,
                successes: totals.good,
                failure_rate: if totals.calls == 0 {
                    0.0
                } else {
                    f64::from(totals.failures) / f64::from(totals.calls)
                },
            },
            tokens_last_minute: self.cost.totals_at(now).tokens,
            opened_at: self.opened_at,
            retry_after: (open && !self.forced).then(|| self.open_until.saturating_since(now)),
            cooldown: if open { self.cooldown } else { self.policy.cooldown(self.reopens) },
            reopens: self.reopens,
            probes_in_flight: self.probes_in_flight,
            probe_successes: self.probe_successes,
            last_transition: self.last,
        }
    }

    /// Whether every count and window is empty (true right after entering CLOSED).
    pub(crate) fn is_pristine(&self) -> bool {
        self.consecutive_failures == 0 && self.window.is_empty() && self.cost.is_empty()
    }
}

#[cfg(test)]
mod tests;
