//! Incidents kept in keel's store: the [`IncidentStore`] trait and its data ([`NewIncidentEvent`],
//! [`Incident`], [`IncidentEvent`], [`Runbook`], [`PlaybookEntry`]).
//!
//! The store keeps the log; what an event means (which fingerprint, which [`Effect`]) is decided
//! by the `keel-incident` crate before it records one. Events with one fingerprint join the
//! incident of that fingerprint that is not resolved yet, or open a new one.
//!
//! Each state change of an incident (opened, mitigated, open again, resolved) enqueues, in the
//! same atomic step, a job of kind [`INCIDENT_CHANGED_JOB`] in the store's
//! [`JobStore`](crate::JobStore) whose key is `INCIDENT_ID:SEQ` (the seq of the event that
//! changed it), `run_at` the event's time and 10 attempts, and whose payload is
//! `{"incident_id", "from", "to", "at"}` (`from` is `null` for a new incident, `at` the event's
//! time).
//! Whoever handles that job (notifications, runbooks) therefore sees every change exactly once,
//! even when keel is killed right after recording.
//!
//! Each backend keeps incidents beside its sessions, on the same connection(s):
//!
//! - SQLite and PostgreSQL: tables `incidents`, `incident_events`, `runbooks` and `playbook`
//!   (migration 4), with a partial unique index making a fingerprint unique among the incidents
//!   not resolved.
//! - Redis: one Lua script per write, under the store's prefix (see `incidents/redis.rs`).

mod postgres;
mod redis;
mod sqlite;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;
use crate::store::{StoreFuture, check_name};

/// The kind of job enqueued with every state change of an incident.
pub const INCIDENT_CHANGED_JOB: &str = "incident.changed";

/// The most events [`IncidentStore::incident_events`] returns (the oldest are kept: the start
/// of an incident tells the most).
pub const MAX_EVENTS_LISTED: usize = 1_000;

/// The longest runbook a store keeps, in bytes.
pub const MAX_RUNBOOK_BYTES: usize = 1 << 20;

/// Incidents, their timelines, runbooks and the fixes people confirmed, shared by every keel
/// instance using the store.
///
/// Every method is one atomic step of the backend; [`IncidentStore::record_event`] may be called
/// by any number of tasks and keel instances at once, and events with one fingerprint still join
/// one incident. Obtain one with [`open_stores`](crate::open_stores).
pub trait IncidentStore: Send + Sync + fmt::Debug {
    /// Records an event: joins the unresolved incident with `event.fingerprint` or, if there is
    /// none and the effect is [`Effect::Open`] or [`Effect::Mitigate`], opens one (status `open`
    /// or `mitigated`). The event is appended to the incident's timeline at the next `seq` and
    /// its effect applied (see [`Effect`]); a status change enqueues an [`INCIDENT_CHANGED_JOB`]
    /// in the same step. An event with [`Effect::Resolve`] or [`Effect::Note`] and no
    /// unresolved incident of its fingerprint changes nothing ([`Recorded::incident`] is `None`).
    fn record_event(&self, event: NewIncidentEvent) -> StoreFuture<'_, Recorded>;

    /// The incident with this id, if any.
    fn incident<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Incident>>;

    /// Incidents, most recently opened first, at most `limit`; with `status`, only those.
    fn list_incidents(&self, status: Option<IncidentStatus>, limit: usize) -> StoreFuture<'_, Vec<Incident>>;

    /// The incident's timeline in `seq` order (at most [`MAX_EVENTS_LISTED`]); empty for an
    /// unknown id.
    fn incident_events<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Vec<IncidentEvent>>;

    /// Resolves the incident by hand: appends an event `incident.resolved` (detail `{"by": by,
    /// "fixed_by": fix}`), sets it `resolved` and enqueues the change job; with `fixed_by`, also
    /// stores that fix in the playbook of its fingerprint. `None` for an unknown id; an incident
    /// already resolved is returned unchanged (its playbook still gains the fix).
    fn resolve_incident<'a>(
        &'a self,
        id: &'a str,
        by: &'a str,
        fixed_by: Option<String>,
    ) -> StoreFuture<'a, Option<Incident>>;

    /// The fixes confirmed for incidents of this fingerprint, newest first (at most 20).
    fn playbook<'a>(&'a self, fingerprint: &'a str) -> StoreFuture<'a, Vec<PlaybookEntry>>;

    /// Stores the incident's runbook, replacing the one it had. [`StoreError::InvalidInput`]
    /// for an unknown incident or a runbook over [`MAX_RUNBOOK_BYTES`].
    fn put_runbook(&self, runbook: Runbook) -> StoreFuture<'_, ()>;

    /// The incident's runbook, if one was written.
    fn runbook<'a>(&'a self, incident_id: &'a str) -> StoreFuture<'a, Option<Runbook>>;
}

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// Something is failing and nothing covers for it.
    Open,
    /// Something is failing, but keel is serving around it (from a fallback).
    Mitigated,
    /// The cause cleared (or a person resolved it).
    Resolved,
}

impl IncidentStatus {
    /// `open`, `mitigated` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Mitigated => "mitigated",
            IncidentStatus::Resolved => "resolved",
        }
    }
}

impl fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IncidentStatus {
    type Err = StoreError;

    fn from_str(value: &str) -> Result<Self, StoreError> {
        match value {
            "open" => Ok(IncidentStatus::Open),
            "mitigated" => Ok(IncidentStatus::Mitigated),
            "resolved" => Ok(IncidentStatus::Resolved),
            other => Err(StoreError::InvalidInput(format!(
                "unknown incident status '{other}' (expected open, mitigated or resolved)"
            ))),
        }
    }
}

/// What an event does to its incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Something is failing: opens an incident, or sets a mitigated one `open` again.
    Open,
    /// keel serves around the failure: opens an incident as `mitigated`, or sets an open one
    /// `mitigated`.
    Mitigate,
    /// The cause cleared: sets the incident `resolved`.
    Resolve,
    /// Evidence only: joins an unresolved incident's timeline, changes no status.
    Note,
}

impl Effect {
    /// `open`, `mitigate`, `resolve` or `note`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Open => "open",
            Effect::Mitigate => "mitigate",
            Effect::Resolve => "resolve",
            Effect::Note => "note",
        }
    }

    /// The status an incident in `current` (`None`: no incident yet) has after this effect;
    /// `None` when the event opens nothing.
    pub fn apply(self, current: Option<IncidentStatus>) -> Option<IncidentStatus> {
        match (self, current) {
            (Effect::Open, _) => Some(IncidentStatus::Open),
            (Effect::Mitigate, None | Some(IncidentStatus::Mitigated | IncidentStatus::Open)) => {
                Some(IncidentStatus::Mitigated)
            }
            (Effect::Resolve, Some(_)) => Some(IncidentStatus::Resolved),
            (Effect::Note | Effect::Resolve, status) | (Effect::Mitigate, status @ Some(IncidentStatus::Resolved)) => {
                status
            }
        }
    }
}

impl FromStr for Effect {
    type Err = StoreError;

    fn from_str(value: &str) -> Result<Self, StoreError> {
        match value {
            "open" => Ok(Effect::Open),
            "mitigate" => Ok(Effect::Mitigate),
            "resolve" => Ok(Effect::Resolve),
            "note" => Ok(Effect::Note),
            other => Err(StoreError::InvalidInput(format!("unknown effect '{other}'"))),
        }
    }
}

/// An event to record. Checked by [`IncidentStore::record_event`]: fingerprint, kind, event and
/// title 1 to 255 bytes without control characters (the title may be up to 1,000 bytes);
/// upstream and model likewise when set; `detail` a JSON object of at most 64 KiB.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncidentEvent {
    /// Events with one fingerprint belong to one incident (kind + upstream + model, or the
    /// fingerprint an outside poster gave).
    pub fingerprint: String,
    /// The kind of incident it opens (`upstream_down`, `model_failing`, `session_timeout`, …).
    pub kind: String,
    /// The incident's title if this event opens it (later events do not change it).
    pub title: String,
    /// The upstream it concerns, if any.
    pub upstream: Option<String>,
    /// The model it concerns, if any.
    pub model: Option<String>,
    /// What happened (`breaker.opened`, `health.up`, `session.timeout`, …).
    pub event: String,
    /// What it does to the incident.
    pub effect: Effect,
    /// The evidence: cause, address, samples… (a JSON object).
    pub detail: Value,
}

/// What [`IncidentStore::record_event`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The incident the event joined or opened, as it is now; `None` if the event opened nothing.
    pub incident: Option<Incident>,
    /// The event as stored; `None` with `incident`.
    pub event: Option<IncidentEvent>,
    /// The status before the event: `None` for a new incident.
    pub previous: Option<IncidentStatus>,
}

impl Recorded {
    /// Whether the event opened the incident or changed its status.
    pub fn changed(&self) -> bool {
        self.incident.as_ref().is_some_and(|incident| self.previous != Some(incident.status))
    }
}

/// An incident: one cause, its status and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Its id (`inc_` + a UUID v7 in hex: sorts by creation).
    pub id: String,
    /// The fingerprint its events share.
    pub fingerprint: String,
    /// Its kind (`upstream_down`, …).
    pub kind: String,
    /// One line saying what broke.
    pub title: String,
    /// Where it stands.
    pub status: IncidentStatus,
    /// The upstream it concerns, if any.
    pub upstream: Option<String>,
    /// The model it concerns, if any.
    pub model: Option<String>,
    /// When it opened (Unix milliseconds).
    pub opened_at: i64,
    /// When its last event was recorded.
    pub updated_at: i64,
    /// When it was last set `mitigated`, if ever.
    pub mitigated_at: Option<i64>,
    /// When it was resolved, if it is.
    pub resolved_at: Option<i64>,
    /// How many events its timeline holds.
    pub event_count: u64,
}

impl Incident {
    /// An event named `event` about this incident (its fingerprint, kind, title, upstream and
    /// model), with `effect` and `detail`.
    pub fn event(&self, event: &str, effect: Effect, detail: Value) -> NewIncidentEvent {
        NewIncidentEvent {
            fingerprint: self.fingerprint.clone(),
            kind: self.kind.clone(),
            title: self.title.clone(),
            upstream: self.upstream.clone(),
            model: self.model.clone(),
            event: event.to_owned(),
            effect,
            detail,
        }
    }
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentEvent {
    /// The incident it belongs to.
    pub incident_id: String,
    /// 1, 2, 3… in the incident.
    pub seq: u64,
    /// When it was recorded (Unix milliseconds).
    pub at: i64,
    /// What happened.
    pub event: String,
    /// What it did to the incident.
    pub effect: Effect,
    /// The evidence (a JSON object).
    pub detail: Value,
}

/// A runbook kept for an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runbook {
    /// The incident it is for.
    pub incident_id: String,
    /// The runbook as Markdown.
    pub markdown: String,
    /// Who wrote it: `template`, or `model:<route>`.
    pub source: String,
    /// When it was written (Unix milliseconds).
    pub generated_at: i64,
}

/// A fix a person confirmed for an incident ([`IncidentStore::resolve_incident`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybookEntry {
    /// The fingerprint of the incident it fixed.
    pub fingerprint: String,
    /// What fixed it, as the person wrote it.
    pub fix: String,
    /// The incident it fixed.
    pub incident_id: String,
    /// When it was recorded (Unix milliseconds).
    pub at: i64,
}

/// The longest title of an incident, in bytes.
pub const MAX_TITLE_LEN: usize = 1_000;

/// The largest `detail` of an event, serialized, in bytes.
pub const MAX_DETAIL_BYTES: usize = 64 * 1024;

/// Checks an event to record (see [`NewIncidentEvent`]).
pub(crate) fn check_event(event: &NewIncidentEvent) -> Result<(), StoreError> {
    check_name("fingerprint", &event.fingerprint)?;
    check_name("incident kind", &event.kind)?;
    check_name("event", &event.event)?;
    if event.title.is_empty() || event.title.len() > MAX_TITLE_LEN || event.title.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput(format!(
            "an incident title must be 1 to {MAX_TITLE_LEN} bytes without control characters"
        )));
    }
    if let Some(upstream) = &event.upstream {
        check_name("upstream", upstream)?;
    }
    if let Some(model) = &event.model {
        check_name("model", model)?;
    }
    if !event.detail.is_object() {
        return Err(StoreError::InvalidInput("an event's detail must be a JSON object".to_owned()));
    }
    let size = serde_json::to_vec(&event.detail).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
    if size > MAX_DETAIL_BYTES {
        return Err(StoreError::InvalidInput(format!(
            "an event's detail must be at most {MAX_DETAIL_BYTES} bytes of JSON, got {size}"
        )));
    }
    Ok(())
}

/// Checks a runbook to store (its size; whether the incident exists is the backend's check).
pub(crate) fn check_runbook(runbook: &Runbook) -> Result<(), StoreError> {
    check_name("incident id", &runbook.incident_id)?;
    check_name("runbook source", &runbook.source)?;
    if runbook.markdown.len() > MAX_RUNBOOK_BYTES {
        return Err(StoreError::InvalidInput(format!(
            "a runbook must be at most {MAX_RUNBOOK_BYTES} bytes, got {}",
            runbook.markdown.len()
        )));
    }
    Ok(())
}

/// Checks a fix to store in the playbook.
pub(crate) fn check_fix(fix: &str) -> Result<(), StoreError> {
    if fix.trim().is_empty() || fix.len() > MAX_TITLE_LEN {
        return Err(StoreError::InvalidInput(format!("a fix must be 1 to {MAX_TITLE_LEN} bytes of text")));
    }
    Ok(())
}

/// A new incident id: `inc_` + a UUID v7 in hex.
pub(crate) fn new_incident_id() -> String {
    format!("inc_{}", uuid::Uuid::now_v7().simple())
}

/// The key of the change job for the event `seq` of incident `id`.
pub(crate) fn change_job_key(incident_id: &str, seq: u64) -> String {
    format!("{incident_id}:{seq}")
}

/// The payload of the change job (see the module docs).
pub(crate) fn change_job_payload(
    incident_id: &str,
    from: Option<IncidentStatus>,
    to: IncidentStatus,
    at: i64,
) -> Value {
    serde_json::json!({ "incident_id": incident_id, "from": from.map(IncidentStatus::as_str), "to": to.as_str(), "at": at })
}

/// The most entries [`IncidentStore::playbook`] returns.
pub(crate) const MAX_PLAYBOOK_LISTED: usize = 20;

/// The columns of `incidents`, in the order the SQL backends select them.
pub(crate) const INCIDENT_COLUMNS: &str = "id, fingerprint, kind, title, status, upstream, model, opened_at, \
     updated_at, mitigated_at, resolved_at, event_count";

/// The columns of `incident_events`, in the order the SQL backends select them.
pub(crate) const EVENT_COLUMNS: &str = "incident_id, seq, at, event, effect, detail";

/// The columns of `playbook`, in the order the SQL backends select them.
pub(crate) const PLAYBOOK_COLUMNS: &str = "fingerprint, fix, incident_id, at";

/// The columns of `runbooks`, in the order the SQL backends select them.
pub(crate) const RUNBOOK_COLUMNS: &str = "incident_id, markdown, source, generated_at";

/// Checks an incident id given to a read or to [`IncidentStore::resolve_incident`].
pub(crate) fn check_incident_id(id: &str) -> Result<(), StoreError> {
    check_name("incident id", id)
}

/// Checks the arguments of [`IncidentStore::resolve_incident`].
pub(crate) fn check_resolve(id: &str, by: &str, fixed_by: Option<&str>) -> Result<(), StoreError> {
    check_incident_id(id)?;
    check_name("resolver", by)?;
    fixed_by.map_or(Ok(()), check_fix)
}

/// What recording one event does, computed by [`step`] for the backends to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// The incident after the event (new when `previous` is `None`).
    pub(crate) incident: Incident,
    /// The event as stored, at `incident.event_count`.
    pub(crate) event: IncidentEvent,
    /// The status before the event; `None` for a new incident.
    pub(crate) previous: Option<IncidentStatus>,
    /// The [`INCIDENT_CHANGED_JOB`] to enqueue with it, when the status changed.
    pub(crate) job: Option<crate::NewJob>,
}

impl Step {
    /// What [`IncidentStore::record_event`] answers.
    pub(crate) fn recorded(&self) -> Recorded {
        Recorded { incident: Some(self.incident.clone()), event: Some(self.event.clone()), previous: self.previous }
    }
}

/// What recording `event` at `now` does to `current`, the unresolved incident of its
/// fingerprint (`None`: there is none). `None` when the event opens nothing.
pub(crate) fn step(current: Option<Incident>, event: NewIncidentEvent, now: i64) -> Option<Step> {
    let (incident, previous) = match current {
        Some(mut incident) => {
            let previous = incident.status;
            let status = event.effect.apply(Some(previous)).unwrap_or(previous);
            if status != previous {
                match status {
                    IncidentStatus::Mitigated => incident.mitigated_at = Some(now),
                    IncidentStatus::Resolved => incident.resolved_at = Some(now),
                    IncidentStatus::Open => {}
                }
            }
            incident.status = status;
            incident.updated_at = incident.updated_at.max(now);
            incident.event_count += 1;
            (incident, Some(previous))
        }
        None => {
            let status = event.effect.apply(None)?;
            let incident = Incident {
                id: new_incident_id(),
                fingerprint: event.fingerprint,
                kind: event.kind,
                title: event.title,
                status,
                upstream: event.upstream,
                model: event.model,
                opened_at: now,
                updated_at: now,
                mitigated_at: (status == IncidentStatus::Mitigated).then_some(now),
                resolved_at: (status == IncidentStatus::Resolved).then_some(now),
                event_count: 1,
            };
            (incident, None)
        }
    };
    let seq = incident.event_count;
    let job = (previous != Some(incident.status)).then(|| crate::NewJob {
        kind: INCIDENT_CHANGED_JOB.to_owned(),
        key: change_job_key(&incident.id, seq),
        payload: change_job_payload(&incident.id, previous, incident.status, now),
        run_at: now,
        max_attempts: 10,
    });
    let event = IncidentEvent {
        incident_id: incident.id.clone(),
        seq,
        at: now,
        event: event.event,
        effect: event.effect,
        detail: event.detail,
    };
    Some(Step { incident, event, previous, job })
}

/// What resolving `incident` by hand at `now` does ([`IncidentStore::resolve_incident`]);
/// `None` if it is resolved already.
pub(crate) fn resolve_step(incident: Incident, by: &str, fixed_by: Option<&str>, now: i64) -> Option<Step> {
    if incident.status == IncidentStatus::Resolved {
        return None;
    }
    let event =
        incident.event("incident.resolved", Effect::Resolve, serde_json::json!({ "by": by, "fixed_by": fixed_by }));
    step(Some(incident), event, now)
}

/// An `incidents` row as the SQL backends read it.
#[derive(Debug)]
pub(crate) struct IncidentRow {
    pub(crate) id: String,
    pub(crate) fingerprint: String,
    pub(crate) kind: String,
    pub(crate) title: String,
    pub(crate) status: String,
    pub(crate) upstream: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) opened_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) mitigated_at: Option<i64>,
    pub(crate) resolved_at: Option<i64>,
    pub(crate) event_count: i64,
}

impl IncidentRow {
    /// The row checked into an [`Incident`].
    pub(crate) fn into_incident(self, backend: &'static str) -> Result<Incident, StoreError> {
        let corrupt =
            |what: String| StoreError::Corrupt { backend, message: format!("incident '{}': {what}", self.id) };
        let status = self.status.parse().map_err(|_| corrupt(format!("unknown status '{}'", self.status)))?;
        let event_count = u64::try_from(self.event_count)
            .map_err(|_| corrupt(format!("negative event count {}", self.event_count)))?;
        Ok(Incident {
            id: self.id,
            fingerprint: self.fingerprint,
            kind: self.kind,
            title: self.title,
            status,
            upstream: self.upstream,
            model: self.model,
            opened_at: self.opened_at,
            updated_at: self.updated_at,
            mitigated_at: self.mitigated_at,
            resolved_at: self.resolved_at,
            event_count,
        })
    }
}

/// An `incident_events` row as the SQL backends read it (`detail` already parsed).
#[derive(Debug)]
pub(crate) struct EventRow {
    pub(crate) incident_id: String,
    pub(crate) seq: i64,
    pub(crate) at: i64,
    pub(crate) event: String,
    pub(crate) effect: String,
    pub(crate) detail: Value,
}

impl EventRow {
    /// The row checked into an [`IncidentEvent`].
    pub(crate) fn into_event(self, backend: &'static str) -> Result<IncidentEvent, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt {
            backend,
            message: format!("event {} of incident '{}': {what}", self.seq, self.incident_id),
        };
        let seq = u64::try_from(self.seq).map_err(|_| corrupt("negative seq".to_owned()))?;
        let effect = self.effect.parse().map_err(|_| corrupt(format!("unknown effect '{}'", self.effect)))?;
        if !self.detail.is_object() {
            return Err(corrupt("detail is not a JSON object".to_owned()));
        }
        Ok(IncidentEvent {
            incident_id: self.incident_id,
            seq,
            at: self.at,
            event: self.event,
            effect,
            detail: self.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_move_statuses_as_documented() {
        use IncidentStatus::{Mitigated, Open, Resolved};
        assert_eq!(Effect::Open.apply(None), Some(Open));
        assert_eq!(Effect::Open.apply(Some(Mitigated)), Some(Open));
        assert_eq!(Effect::Mitigate.apply(None), Some(Mitigated));
        assert_eq!(Effect::Mitigate.apply(Some(Open)), Some(Mitigated));
        assert_eq!(Effect::Resolve.apply(Some(Open)), Some(Resolved));
        assert_eq!(Effect::Resolve.apply(None), None);
        assert_eq!(Effect::Note.apply(None), None);
        assert_eq!(Effect::Note.apply(Some(Mitigated)), Some(Mitigated));
    }

    fn event(effect: Effect) -> NewIncidentEvent {
        NewIncidentEvent {
            fingerprint: "fp".into(),
            kind: "upstream_down".into(),
            title: "down".into(),
            upstream: None,
            model: None,
            event: "e".into(),
            effect,
            detail: serde_json::json!({}),
        }
    }

    #[test]
    fn steps_set_timestamps_and_change_jobs() {
        use IncidentStatus::{Mitigated, Open, Resolved};
        assert_eq!(step(None, event(Effect::Note), 1), None);
        assert_eq!(step(None, event(Effect::Resolve), 1), None);
        let opened = step(None, event(Effect::Mitigate), 10).unwrap();
        assert_eq!(
            (opened.previous, opened.incident.status, opened.incident.mitigated_at),
            (None, Mitigated, Some(10))
        );
        assert_eq!((opened.event.seq, opened.incident.event_count, opened.event.at), (1, 1, 10));
        let job = opened.job.clone().unwrap();
        assert_eq!((job.kind.as_str(), job.key), (INCIDENT_CHANGED_JOB, format!("{}:1", opened.incident.id)));
        assert_eq!(job.payload["from"], Value::Null);
        assert_eq!((job.run_at, job.max_attempts), (10, 10));

        let noted = step(Some(opened.incident.clone()), event(Effect::Note), 5).unwrap();
        assert_eq!((noted.previous, noted.incident.status, noted.job), (Some(Mitigated), Mitigated, None));
        assert_eq!(noted.incident.updated_at, 10, "updated_at never goes back");
        let open = step(Some(noted.incident), event(Effect::Open), 20).unwrap();
        assert_eq!((open.incident.status, open.incident.mitigated_at, open.event.seq), (Open, Some(10), 3));
        assert_eq!(open.job.unwrap().payload["to"], "open");

        let resolved = resolve_step(open.incident, "alice", Some("fix"), 30).unwrap();
        assert_eq!((resolved.incident.status, resolved.incident.resolved_at), (Resolved, Some(30)));
        assert_eq!(resolved.event.event, "incident.resolved");
        assert_eq!(resolved.event.detail, serde_json::json!({ "by": "alice", "fixed_by": "fix" }));
        assert_eq!(resolve_step(resolved.incident, "bob", None, 40), None);
    }

    #[test]
    fn corrupt_rows_are_reported() {
        let row = || IncidentRow {
            id: "inc_1".into(),
            fingerprint: "fp".into(),
            kind: "k".into(),
            title: "t".into(),
            status: "open".into(),
            upstream: None,
            model: None,
            opened_at: 1,
            updated_at: 1,
            mitigated_at: None,
            resolved_at: None,
            event_count: 1,
        };
        assert!(row().into_incident("sqlite").is_ok());
        for bad in [IncidentRow { status: "closed".into(), ..row() }, IncidentRow { event_count: -1, ..row() }] {
            assert!(matches!(bad.into_incident("sqlite"), Err(StoreError::Corrupt { .. })));
        }
        let event = |effect: &str, detail: Value| EventRow {
            incident_id: "inc_1".into(),
            seq: 1,
            at: 1,
            event: "e".into(),
            effect: effect.into(),
            detail,
        };
        assert!(event("note", serde_json::json!({})).into_event("sqlite").is_ok());
        assert!(matches!(event("boom", serde_json::json!({})).into_event("sqlite"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(event("note", Value::Null).into_event("sqlite"), Err(StoreError::Corrupt { .. })));
    }
}
