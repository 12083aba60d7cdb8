//! What keel's own signals mean as incident events: breaker transitions, health probes, answers
//! served by a fallback. Pure functions from a signal to a [`NewIncidentEvent`].
//!
//! Fingerprints: `upstream_down:<upstream>` for an upstream-wide breaker, `model_failing:
//! <upstream>:<model>` for a model's, so a breaker's opening, probes and closing share one
//! incident.

use keel_breaker::{Reason, State, Transition};
use keel_session::{Effect, NewIncidentEvent};
use serde_json::json;

use crate::bursts::Failure;
use crate::kinds;

/// What keel knows of a breaker's target besides its transition.
#[derive(Debug, Clone, Default)]
pub struct TargetFacts {
    /// The upstream's address (`http://127.0.0.1:11434`), if known.
    pub address: Option<String>,
    /// Why it opened, in words (the failure that tripped it), if known.
    pub why: Option<String>,
}

/// The incident event of a breaker transition; `None` for transitions that say nothing about an
/// incident (an operator forcing a breaker, a closed breaker reset).
pub fn breaker_event(transition: &Transition, facts: &TargetFacts) -> Option<NewIncidentEvent> {
    let (upstream, model) = split_target(&transition.target);
    let (event, effect) = match (transition.from, transition.to, &transition.reason) {
        (_, _, Reason::ForcedOpen | Reason::ForcedClosed) => return None,
        (State::Closed, State::Closed, _) => return None,
        (_, State::Closed, _) => ("breaker.closed", Effect::Resolve),
        (State::Closed, State::Open, Reason::Remote) => ("breaker.opened_elsewhere", Effect::Note),
        (State::Closed, State::Open, _) => ("breaker.opened", Effect::Open),
        (_, State::Open, _) => ("breaker.reopened", Effect::Note),
        (_, State::HalfOpen, _) => ("breaker.half_open", Effect::Note),
    };
    let mut detail = json!({
        "target": transition.target.as_ref(),
        "from": transition.from.as_str(),
        "to": transition.to.as_str(),
        "reason": transition.reason.to_string(),
    });
    if let Some(why) = &facts.why {
        detail["why"] = json!(why);
    }
    if let Some(address) = &facts.address {
        detail["address"] = json!(address);
    }
    if let Some(cooldown) = transition.cooldown {
        detail["cooldown"] = json!(keel_types::duration::format(cooldown));
    }
    Some(NewIncidentEvent {
        fingerprint: fingerprint(upstream, model),
        kind: kind(model).to_owned(),
        title: title(upstream, model, facts),
        upstream: Some(upstream.to_owned()),
        model: model.map(str::to_owned),
        event: event.to_owned(),
        effect,
        detail,
    })
}

/// The event of answers served by `served_by` while the breaker of `target` (`upstream` or
/// `upstream:model`) is not closed: the incident is mitigated; `answers` is how many so far.
pub fn fallback_event(target: &str, served_by: &str, answers: u64) -> NewIncidentEvent {
    let (upstream, model) = split_target(target);
    NewIncidentEvent {
        fingerprint: fingerprint(upstream, model),
        kind: kind(model).to_owned(),
        title: title(upstream, model, &TargetFacts::default()),
        upstream: Some(upstream.to_owned()),
        model: model.map(str::to_owned),
        event: "fallback.served".to_owned(),
        effect: Effect::Mitigate,
        detail: json!({ "served_by": served_by, "answers": answers }),
    }
}

/// A session went `idle` seconds without a message past its timeout: opens its incident.
pub fn session_timed_out(
    session_id: &str,
    owner: Option<&str>,
    model: Option<&str>,
    idle_seconds: i64,
) -> NewIncidentEvent {
    let mut detail = json!({ "session_id": session_id, "idle_seconds": idle_seconds, "source": "keel" });
    if let Some(owner) = owner {
        detail["agent"] = json!(owner);
    }
    if let Some(model) = model {
        detail["model"] = json!(model);
    }
    let title = match owner {
        Some(owner) => format!("session {session_id} of agent {owner} timed out"),
        None => format!("session {session_id} timed out"),
    };
    NewIncidentEvent {
        fingerprint: format!("{}:{session_id}", kinds::SESSION_TIMEOUT),
        kind: kinds::SESSION_TIMEOUT.to_owned(),
        title,
        upstream: None,
        model: None,
        event: "session.timeout".to_owned(),
        effect: Effect::Open,
        detail,
    }
}

/// A timed-out session got a message again: resolves its incident.
pub fn session_active(session_id: &str) -> NewIncidentEvent {
    NewIncidentEvent {
        fingerprint: format!("{}:{session_id}", kinds::SESSION_TIMEOUT),
        kind: kinds::SESSION_TIMEOUT.to_owned(),
        title: format!("session {session_id} timed out"),
        upstream: None,
        model: None,
        event: "session.active".to_owned(),
        effect: Effect::Resolve,
        detail: json!({ "session_id": session_id, "source": "keel" }),
    }
}

/// A structured-output request that got no valid answer (422) or only the route's canned one.
pub fn structured_failed(model: &str, outcome: &str, problem: &str) -> Failure {
    Failure {
        kind: kinds::STRUCTURED_OUTPUT,
        key: model.to_owned(),
        title: format!("structured output from {model} keeps failing validation"),
        upstream: None,
        model: Some(model.to_owned()),
        detail: json!({ "outcome": outcome, "problem": problem }),
    }
}

/// A request shed by admission control for `target` (`upstream:model`), for `reason`.
pub fn shed(target: &str, reason: &str) -> Failure {
    let (upstream, model) = split_target(target);
    Failure {
        kind: kinds::SHEDDING,
        key: target.to_owned(),
        title: format!("requests for {target} are shed: its queue is full"),
        upstream: Some(upstream.to_owned()),
        model: model.map(str::to_owned),
        detail: json!({ "reason": reason }),
    }
}

/// A request refused by a rate limit of `who` (`key 'agent'`, `client 10.0.0.7`) in `unit`.
pub fn rate_limited(who: &str, unit: &str) -> Failure {
    Failure {
        kind: kinds::RATE_LIMITED,
        key: who.to_owned(),
        title: format!("{who} keeps hitting its rate limit"),
        upstream: None,
        model: None,
        detail: json!({ "limit": unit }),
    }
}

/// The fingerprint of a breaker target's incident.
pub fn fingerprint(upstream: &str, model: Option<&str>) -> String {
    match model {
        Some(model) => format!("{}:{upstream}:{model}", kinds::MODEL_FAILING),
        None => format!("{}:{upstream}", kinds::UPSTREAM_DOWN),
    }
}

/// `upstream:model` → (`upstream`, `Some(model)`); `upstream` → (`upstream`, `None`). A model
/// name may itself hold a colon (`llama3.2:3b`): only the first one splits.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once(':') {
        Some((upstream, model)) => (upstream, Some(model)),
        None => (target, None),
    }
}

fn kind(model: Option<&str>) -> &'static str {
    if model.is_some() { kinds::MODEL_FAILING } else { kinds::UPSTREAM_DOWN }
}

fn title(upstream: &str, model: Option<&str>, facts: &TargetFacts) -> String {
    let at = facts.address.as_deref().map(|address| format!(" ({address})")).unwrap_or_default();
    match model {
        Some(model) => format!("model {model} on upstream {upstream}{at} is failing"),
        None => format!("upstream {upstream}{at} is not answering"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn transition(target: &str, from: State, to: State, reason: Reason) -> Transition {
        Transition {
            target: Arc::from(target),
            from,
            to,
            reason,
            at: keel_breaker::Nanos(0),
            cooldown: Some(Duration::from_secs(5)),
        }
    }

    #[test]
    fn an_upstream_breaker_opening_opens_an_upstream_down_incident() {
        let facts = TargetFacts { address: Some("http://127.0.0.1:11434".into()), why: Some("refused".into()) };
        let event = breaker_event(
            &transition("local", State::Closed, State::Open, Reason::ConsecutiveFailures { count: 3 }),
            &facts,
        )
        .unwrap();
        assert_eq!((event.kind.as_str(), event.fingerprint.as_str()), ("upstream_down", "upstream_down:local"));
        assert_eq!(event.effect, Effect::Open);
        assert_eq!(event.title, "upstream local (http://127.0.0.1:11434) is not answering");
        assert_eq!(event.detail["why"], "refused");
        assert_eq!(event.detail["reason"], "3 consecutive failures");
        assert_eq!(event.detail["cooldown"], "5s");
    }

    #[test]
    fn a_model_breaker_keeps_the_model_with_its_tag() {
        let event = breaker_event(
            &transition("gpu:llama3.2:3b", State::HalfOpen, State::Closed, Reason::ProbeSucceeded),
            &TargetFacts::default(),
        )
        .unwrap();
        assert_eq!(event.fingerprint, "model_failing:gpu:llama3.2:3b");
        assert_eq!((event.upstream.as_deref(), event.model.as_deref()), (Some("gpu"), Some("llama3.2:3b")));
        assert_eq!(event.effect, Effect::Resolve);
    }

    #[test]
    fn operator_actions_are_not_incidents_and_probes_are_evidence() {
        let facts = TargetFacts::default();
        assert!(breaker_event(&transition("a", State::Closed, State::Open, Reason::ForcedOpen), &facts).is_none());
        assert!(breaker_event(&transition("a", State::Closed, State::Closed, Reason::Reset), &facts).is_none());
        let reset = breaker_event(&transition("a", State::Open, State::Closed, Reason::Reset), &facts).unwrap();
        assert_eq!(reset.effect, Effect::Resolve);
        let half = breaker_event(&transition("a", State::Open, State::HalfOpen, Reason::CooldownElapsed), &facts);
        assert_eq!(half.unwrap().effect, Effect::Note);
        let again =
            breaker_event(&transition("a", State::HalfOpen, State::Open, Reason::ProbeFailed { class: None }), &facts);
        assert_eq!(again.unwrap().effect, Effect::Note);
    }

    #[test]
    fn fallback_answers_mitigate_the_incident_of_the_skipped_target() {
        let event = fallback_event("local", "backup:qwen2.5", 12);
        assert_eq!((event.fingerprint.as_str(), event.effect), ("upstream_down:local", Effect::Mitigate));
        assert_eq!(event.detail["answers"], 12);
    }
}
