//! The gateway's incident log: the store's incident and job traits, the [`Recorder`] that
//! serving code sends signals to without waiting, and the pieces the background work takes once
//! (the recording task, the worker's wake-up).
//!
//! What a signal means is `keel_incident`'s business (`rules`); this module only feeds it what
//! the gateway knows: a breaker's transition with the target's address and last failure,
//! answers served by a fallback, sessions timing out and coming back.

use std::sync::Arc;

use keel_incident::rules::{self, TargetFacts};
use keel_incident::{Recorder, Recording};
use keel_session::Stores;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The incident log of a gateway with a store and `[incidents] enabled`.
pub(crate) struct IncidentLog {
    /// The store, as every trait (incidents, jobs, sessions).
    pub(crate) stores: Stores,
    /// Where signals go.
    pub(crate) recorder: Recorder,
    /// Wakes the job worker when a state change was recorded.
    pub(crate) wake: Arc<Notify>,
    /// The recording task, until the background work takes it.
    recording: Mutex<Option<Recording>>,
}

impl std::fmt::Debug for IncidentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentLog").field("stores", &self.stores).finish_non_exhaustive()
    }
}

impl IncidentLog {
    /// The log over `stores`; bursts of failures open incidents under `rule`.
    pub(crate) fn new(stores: Stores, rule: keel_incident::bursts::BurstRule) -> IncidentLog {
        let wake = Arc::new(Notify::new());
        let (recorder, recording) = Recorder::channel(Arc::clone(&stores.incidents), Arc::clone(&wake), rule);
        IncidentLog { stores, recorder, wake, recording: Mutex::new(Some(recording)) }
    }

    /// The recording task to run; `None` once taken.
    pub(crate) fn take_recording(&self) -> Option<Recording> {
        self.recording.lock().take()
    }
}

impl IncidentLog {
    /// Records a breaker transition as an incident event (when it is one); `facts` are the
    /// target's address and last failure.
    pub(crate) fn breaker_moved(&self, transition: &keel_breaker::Transition, facts: &TargetFacts) {
        if let Some(event) = rules::breaker_event(transition, facts) {
            self.recorder.event(event);
        }
    }

    /// A request was answered by `served_by` after the targets before it (`skipped`, as
    /// `(upstream, model)`) did not answer.
    pub(crate) fn fallback_served(&self, skipped: Vec<(String, Option<String>)>, served_by: String) {
        self.recorder.fallback_served(skipped, served_by);
    }

    /// Records a session's timeout (`idle_seconds` without a message).
    pub(crate) fn session_timed_out(&self, session: &keel_session::Session, idle_seconds: i64) {
        let event =
            rules::session_timed_out(&session.id, session.owner.as_deref(), session.model.as_deref(), idle_seconds);
        self.recorder.event(event);
    }

    /// A structured-output request got no valid answer (`outcome` `failed`, or `canned`).
    pub(crate) fn structured_failed(&self, model: &str, outcome: &str, problem: &str) {
        self.recorder.failure(rules::structured_failed(model, outcome, problem));
    }

    /// A request for `target` was shed by admission control.
    pub(crate) fn shed(&self, target: &str, reason: &str) {
        self.recorder.failure(rules::shed(target, reason));
    }

    /// `who` was refused by a rate limit of `unit`.
    pub(crate) fn rate_limited(&self, who: &str, unit: &str) {
        self.recorder.failure(rules::rate_limited(who, unit));
    }

    /// Records that a timed-out session is active again (its incident resolves).
    pub(crate) fn session_active(&self, session_id: &str) {
        self.recorder.event(rules::session_active(session_id));
    }
}
