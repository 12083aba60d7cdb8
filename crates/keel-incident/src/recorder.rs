//! The gateway's side of the incident log: [`Recorder`] takes signals without waiting (a full
//! queue drops and counts them — keel's serving never waits on its incident log) and one task
//! records them in order, wakes the worker on a state change, and keeps the open-incidents gauge.
//!
//! Answers served by a fallback are counted per unresolved incident in memory and recorded as
//! one `fallback.served` event (effect mitigate) at once for an incident still `open`, then at
//! most once a minute with the running count. Failures that matter only in numbers go through
//! [`Bursts`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keel_session::{IncidentStatus, IncidentStore, NewIncidentEvent, Recorded};
use keel_telemetry::names;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::bursts::{BurstRule, Bursts, Failure};
use crate::rules;

/// How many signals may wait for the recording task.
const QUEUE: usize = 1024;

/// How often a mitigated incident's fallback count is written down.
const FALLBACK_FLUSH: Duration = Duration::from_secs(60);

/// How often quiet bursts are looked for (and fallback counts flushed when due).
const TICK: Duration = Duration::from_secs(1);

/// How often the unresolved incidents are read again from the store.
const RELOAD: Duration = Duration::from_secs(5);

/// A signal for the incident log.
#[derive(Debug)]
enum Signal {
    Event(NewIncidentEvent),
    Fallback { skipped: Vec<(String, Option<String>)>, served_by: String },
    Failure(Failure),
    Learned(String, Box<Recorded>),
}

/// Sends signals to the incident log; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Signal>,
    shown: Arc<Mutex<Vec<OpenIncident>>>,
}

impl Recorder {
    /// A recorder writing to `store` and notifying `wake` (the job worker's) on state changes,
    /// and the [`Recording`] to run (as a task) for it.
    /// Bursts of failures open incidents under `rule`.
    pub fn channel(store: Arc<dyn IncidentStore>, wake: Arc<Notify>, rule: BurstRule) -> (Recorder, Recording) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let shown = Arc::new(Mutex::new(Vec::new()));
        let recording =
            Recording { store, wake, rx, open: HashMap::new(), bursts: Bursts::new(rule), shown: Arc::clone(&shown) };
        (Recorder { tx, shown }, recording)
    }

    /// The unresolved incidents as of the last recorded event, newest first (kept in memory:
    /// free to read once a second).
    pub fn open_incidents(&self) -> Vec<OpenIncident> {
        self.shown.lock().clone()
    }

    /// An event was recorded elsewhere (an event posted through the API): learn what it did.
    pub fn learned(&self, fingerprint: &str, recorded: &Recorded) {
        let _ = self.tx.try_send(Signal::Learned(fingerprint.to_owned(), Box::new(recorded.clone())));
    }

    /// One failure that counts toward a burst of its cause.
    pub fn failure(&self, failure: Failure) {
        let _ = self.tx.try_send(Signal::Failure(failure));
    }

    /// Records `event` (dropped and counted if the log is far behind).
    pub fn event(&self, event: NewIncidentEvent) {
        let kind = event.kind.clone();
        if self.tx.try_send(Signal::Event(event)).is_err() {
            metrics::counter!(names::INCIDENT_EVENTS_TOTAL, "kind" => kind, "effect" => "dropped").increment(1);
        }
    }

    /// A request was answered by `served_by` after the targets `skipped` (upstream, model)
    /// failed or were refused by their breakers.
    pub fn fallback_served(&self, skipped: Vec<(String, Option<String>)>, served_by: String) {
        let _ = self.tx.try_send(Signal::Fallback { skipped, served_by });
    }
}

/// An unresolved incident, as `/keel/status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpenIncident {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// `open` or `mitigated`.
    pub status: IncidentStatus,
    /// What broke.
    pub title: String,
    /// When it opened (Unix milliseconds).
    pub opened_at: i64,
}

/// An unresolved incident as the recording task knows it.
struct Known {
    summary: OpenIncident,
    fallback_answers: u64,
    written_answers: u64,
    served_by: String,
    last_flush: tokio::time::Instant,
}

/// The recording side of a [`Recorder`]: run it as a task; it ends when every recorder is gone.
pub struct Recording {
    store: Arc<dyn IncidentStore>,
    wake: Arc<Notify>,
    rx: mpsc::Receiver<Signal>,
    open: HashMap<String, Known>,
    bursts: Bursts,
    shown: Arc<Mutex<Vec<OpenIncident>>>,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").field("open", &self.open.len()).finish_non_exhaustive()
    }
}

impl Recording {
    /// Records signals in order until every [`Recorder`] is dropped.
    pub async fn run(mut self) {
        self.load().await;
        let mut rx = std::mem::replace(&mut self.rx, mpsc::channel(1).1);
        let mut tick = tokio::time::interval(TICK);
        let mut reload = tokio::time::interval(RELOAD);
        reload.tick().await;
        loop {
            tokio::select! {
                signal = rx.recv() => match signal {
                    Some(Signal::Event(event)) => self.record(event).await,
                    Some(Signal::Fallback { skipped, served_by }) => self.fallback(skipped, served_by).await,
                    Some(Signal::Learned(fingerprint, recorded)) => self.learn(&fingerprint, &recorded),
                    Some(Signal::Failure(failure)) => {
                        if let Some(event) = self.bursts.observe(failure, std::time::Instant::now()) {
                            self.record(event).await;
                        }
                    }
                    None => break,
                },
                _ = reload.tick() => self.load().await,
                _ = tick.tick() => {
                    self.flush_fallbacks(false).await;
                    for event in self.bursts.sweep(std::time::Instant::now()) {
                        self.record(event).await;
                    }
                }
            }
        }
        self.flush_fallbacks(true).await;
    }

    /// Learns the unresolved incidents from the store (another keel, an event posted through
    /// the API or a person with `keel incidents resolve` may have changed them), keeping the
    /// fallback counts of those it knew.
    async fn load(&mut self) {
        let mut fresh = HashMap::new();
        for status in [IncidentStatus::Open, IncidentStatus::Mitigated] {
            match self.store.list_incidents(Some(status), 1000).await {
                Ok(incidents) => {
                    for incident in incidents {
                        let mut entry = self.open.remove(&incident.fingerprint).unwrap_or_else(|| known(&incident));
                        entry.summary = known(&incident).summary;
                        fresh.insert(incident.fingerprint.clone(), entry);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "incidents: cannot read the open incidents");
                    return;
                }
            }
        }
        self.open = fresh;
        self.publish();
    }

    async fn record(&mut self, event: NewIncidentEvent) {
        let (fingerprint, kind, effect) = (event.fingerprint.clone(), event.kind.clone(), event.effect);
        if effect == keel_session::Effect::Resolve {
            self.flush_one(&fingerprint, true).await;
        }
        match self.store.record_event(event).await {
            Ok(recorded) => {
                metrics::counter!(names::INCIDENT_EVENTS_TOTAL, "kind" => kind, "effect" => effect.as_str())
                    .increment(1);
                self.learn(&fingerprint, &recorded);
            }
            Err(error) => {
                tracing::warn!(%error, fingerprint, "incidents: cannot record an event; it is lost (the store is failing)");
            }
        }
    }

    fn learn(&mut self, fingerprint: &str, recorded: &Recorded) {
        let Some(incident) = &recorded.incident else { return };
        if recorded.changed() {
            tracing::warn!(incident = %incident.id, kind = %incident.kind, status = %incident.status, title = %incident.title, "incident {}", match recorded.previous { None => "opened", Some(_) => incident.status.as_str() });
            self.wake.notify_one();
        }
        if incident.status == IncidentStatus::Resolved {
            self.open.remove(fingerprint);
        } else {
            let entry = self.open.entry(fingerprint.to_owned()).or_insert_with(|| known(incident));
            entry.summary.status = incident.status;
        }
        self.publish();
    }

    async fn fallback(&mut self, skipped: Vec<(String, Option<String>)>, served_by: String) {
        for (upstream, model) in skipped {
            let candidates = [rules::fingerprint(&upstream, None), rules::fingerprint(&upstream, model.as_deref())];
            for fingerprint in candidates {
                let Some(known) = self.open.get_mut(&fingerprint) else { continue };
                known.fallback_answers += 1;
                known.served_by.clone_from(&served_by);
                if known.summary.status == IncidentStatus::Open {
                    self.flush_one(&fingerprint, true).await;
                }
                break;
            }
        }
    }

    async fn flush_fallbacks(&mut self, all: bool) {
        let due: Vec<String> = self.open.keys().cloned().collect();
        for fingerprint in due {
            self.flush_one(&fingerprint, all).await;
        }
    }

    /// Writes the fallback count of one incident, when it grew (and a minute passed, unless
    /// `now`).
    async fn flush_one(&mut self, fingerprint: &str, now: bool) {
        let Some(known) = self.open.get_mut(fingerprint) else { return };
        if known.fallback_answers == known.written_answers || (!now && known.last_flush.elapsed() < FALLBACK_FLUSH) {
            return;
        }
        known.written_answers = known.fallback_answers;
        known.last_flush = tokio::time::Instant::now();
        let target = fingerprint.split_once(':').map_or(fingerprint, |(_, target)| target).to_owned();
        let event = rules::fallback_event(&target, &known.served_by, known.fallback_answers);
        Box::pin(self.record(event)).await;
    }

    fn publish(&self) {
        let mut counts: HashMap<(&str, &str), u64> = HashMap::new();
        for known in self.open.values() {
            *counts.entry((known.summary.kind.as_str(), known.summary.status.as_str())).or_default() += 1;
        }
        let mut shown: Vec<OpenIncident> = self.open.values().map(|known| known.summary.clone()).collect();
        shown.sort_by_key(|incident| std::cmp::Reverse(incident.opened_at));
        *self.shown.lock() = shown;
        for kind in crate::kinds::ALL {
            for status in [IncidentStatus::Open, IncidentStatus::Mitigated] {
                let count = counts.get(&(kind, status.as_str())).copied().unwrap_or(0);
                metrics::gauge!(names::INCIDENTS_OPEN, "kind" => kind, "status" => status.as_str()).set(count as f64);
            }
        }
    }
}

fn known(incident: &keel_session::Incident) -> Known {
    Known {
        summary: OpenIncident {
            id: incident.id.clone(),
            kind: incident.kind.clone(),
            status: incident.status,
            title: incident.title.clone(),
            opened_at: incident.opened_at,
        },
        fallback_answers: 0,
        written_answers: 0,
        served_by: String::new(),
        last_flush: tokio::time::Instant::now(),
    }
}
