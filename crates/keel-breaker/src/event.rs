//! States, the reasons a breaker changes state, and the [`Transition`] events it emits.

use std::sync::Arc;
use std::time::Duration;

use keel_types::FailureClass;
use serde::{Deserialize, Serialize};

use crate::clock::Nanos;

/// A breaker's state. Serializes as `"closed"`, `"open"` or `"half_open"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls flow; results are counted against the trip conditions.
    Closed,
    /// Calls are rejected until the cooldown ends (or forever, when forced).
    Open,
    /// A limited number of probe calls decide between CLOSED and OPEN.
    HalfOpen,
}

impl State {
    /// The snake_case name used in `/keel/status`, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    pub(crate) fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    pub(crate) fn from_code(code: u64) -> State {
        match code {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a breaker changed state. Serializes with a `kind` tag, e.g.
/// `{"kind": "consecutive_failures", "count": 5}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// CLOSED → OPEN: `count` failures in a row (`failure_threshold`).
    ConsecutiveFailures {
        /// Failures in a row when the breaker opened.
        count: u32,
    },
    /// CLOSED → OPEN: the share of failures in the window reached `failure_rate`.
    FailureRate {
        /// The failure share in the window, 0 to 1.
        rate: f64,
        /// The window length.
        #[serde(with = "keel_types::duration")]
        window: Duration,
    },
    /// CLOSED → OPEN: the share of slow calls in the window reached `slow_call_rate`.
    SlowCalls {
        /// The slow share in the window, 0 to 1.
        rate: f64,
    },
    /// CLOSED → OPEN: the share of good answers fell below `min_success_ratio`.
    LowConfidence {
        /// The good share in the window, 0 to 1.
        success_ratio: f64,
    },
    /// CLOSED → OPEN: more tokens in the last minute than `max_tokens_per_minute`.
    CostBudget {
        /// Tokens reported in the last minute.
        per_minute: u64,
    },
    /// OPEN → HALF_OPEN: the cooldown ended and a call arrived.
    CooldownElapsed,
    /// HALF_OPEN → CLOSED: enough probes succeeded (`successes_to_close`).
    ProbeSucceeded,
    /// HALF_OPEN → OPEN: a probe failed; the cooldown grows.
    ProbeFailed {
        /// The probe's failure class; `None` when it failed by being slow or a quality failure.
        class: Option<FailureClass>,
    },
    /// Any → OPEN by an operator; sticks until reset or forced closed.
    ForcedOpen,
    /// Any → CLOSED by an operator; sticks (never trips) until reset or forced open.
    ForcedClosed,
    /// Any → CLOSED by an operator: counts, cooldown growth and any forcing cleared.
    Reset,
    /// OPEN → HALF_OPEN early: an external health probe saw the target answer.
    HealthProbe,
    /// CLOSED or HALF_OPEN → OPEN: another keel instance opened this target's breaker (shared
    /// breaker state).
    Remote,
}

impl Reason {
    /// The snake_case kind, for metric labels and log fields.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::ConsecutiveFailures { .. } => "consecutive_failures",
            Reason::FailureRate { .. } => "failure_rate",
            Reason::SlowCalls { .. } => "slow_calls",
            Reason::LowConfidence { .. } => "low_confidence",
            Reason::CostBudget { .. } => "cost_budget",
            Reason::CooldownElapsed => "cooldown_elapsed",
            Reason::ProbeSucceeded => "probe_succeeded",
            Reason::ProbeFailed { .. } => "probe_failed",
            Reason::ForcedOpen => "forced_open",
            Reason::ForcedClosed => "forced_closed",
            Reason::Reset => "reset",
            Reason::HealthProbe => "health_probe",
            Reason::Remote => "remote",
        }
    }

    /// Whether an operator caused it (force or reset), not traffic.
    pub fn is_manual(&self) -> bool {
        matches!(self, Reason::ForcedOpen | Reason::ForcedClosed | Reason::Reset)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::ConsecutiveFailures { count } => write!(f, "{count} consecutive failures"),
            Reason::FailureRate { rate, window } => {
                write!(f, "failure rate {:.0}% over the last {}", rate * 100.0, keel_types::duration::format(*window))
            }
            Reason::SlowCalls { rate } => write!(f, "{:.0}% of calls were slow", rate * 100.0),
            Reason::LowConfidence { success_ratio } => {
                write!(f, "only {:.0}% of answers were usable", success_ratio * 100.0)
            }
            Reason::CostBudget { per_minute } => write!(f, "{per_minute} tokens in the last minute"),
            Reason::CooldownElapsed => f.write_str("cooldown elapsed"),
            Reason::ProbeSucceeded => f.write_str("probes succeeded"),
            Reason::ProbeFailed { class: Some(class) } => write!(f, "probe failed ({class})"),
            Reason::ProbeFailed { class: None } => f.write_str("probe failed (slow or unusable answer)"),
            Reason::ForcedOpen => f.write_str("forced open by an operator"),
            Reason::ForcedClosed => f.write_str("forced closed by an operator"),
            Reason::Reset => f.write_str("reset by an operator"),
            Reason::HealthProbe => f.write_str("health probe succeeded"),
            Reason::Remote => f.write_str("opened by another keel instance"),
        }
    }
}

/// One state change of one target's breaker: the proxy turns these into metrics, log lines and
/// incidents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// The target's name.
    pub target: Arc<str>,
    /// State before.
    pub from: State,
    /// State after (`from` may equal `to` for manual actions, e.g. a reset of a closed breaker).
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// When, on the registry's clock ([`Clock::wall_time`](crate::Clock::wall_time) converts it).
    pub at: Nanos,
    /// For `to == Open` and not forced: how long it stays open before probing.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Duration>,
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "breaker of target {} {} -> {}: {}", self.target, self.from, self.to, self.reason)?;
        if let Some(cooldown) = self.cooldown {
            write!(f, " (probing again in {})", keel_types::duration::format(cooldown))?;
        }
        Ok(())
    }
}

/// The last transition of a breaker, as shown by a [`Snapshot`](crate::Snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LastTransition {
    /// State it moved to.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// When, on the registry's clock.
    pub at: Nanos,
}

/// Serde for `Option<Duration>` as an optional `"30s"` string.
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_some(&keel_types::duration::format(*duration)),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_the_status_contract() {
        for (state, name) in [(State::Closed, "closed"), (State::Open, "open"), (State::HalfOpen, "half_open")] {
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{name}\""));
            assert_eq!(state.as_str(), name);
            assert_eq!(State::from_code(state.code()), state);
        }
    }

    #[test]
    fn transitions_serialize_with_tagged_reasons() {
        let transition = Transition {
            target: Arc::from("local:llama3.2"),
            from: State::Closed,
            to: State::Open,
            reason: Reason::FailureRate { rate: 0.6, window: Duration::from_secs(60) },
            at: Nanos(5),
            cooldown: Some(Duration::from_secs(30)),
        };
        let json = serde_json::to_value(&transition).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "target": "local:llama3.2", "from": "closed", "to": "open",
                "reason": {"kind": "failure_rate", "rate": 0.6, "window": "1m"},
                "at": 5, "cooldown": "30s"
            })
        );
        assert_eq!(
            transition.to_string(),
            "breaker of target local:llama3.2 closed -> open: failure rate 60% over the last 1m (probing again in 30s)"
        );
        let probe = Reason::ProbeFailed { class: Some(FailureClass::Busy) };
        assert_eq!(serde_json::to_value(probe).unwrap(), serde_json::json!({"kind": "probe_failed", "class": "busy"}));
        assert_eq!(probe.as_str(), "probe_failed");
        assert!(Reason::Reset.is_manual() && !Reason::HealthProbe.is_manual());
    }
}
