//! The durable job worker: claims jobs from the store with a lease and runs them —
//! `incident.changed` (fan out to one `notify` job per endpoint and a `runbook` job),
//! `notify` (one webhook delivery) and `runbook` (evidence, template, then the model).
//!
//! Every handler is idempotent: a job may run again after keel was killed mid-way (its lease
//! ends and another claim takes it). Fanned-out jobs have keys made from the parent's, so a
//! second run enqueues nothing new; a runbook is stored by incident id, so a second run replaces
//! it with the same words.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keel_session::{Effect, INCIDENT_CHANGED_JOB, IncidentStatus, Job, NewJob, Runbook, Stores, now_millis};
use keel_telemetry::names;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::notify::{self, Attempt, Delivery, Endpoint};
use crate::runbook::{self, Deployment, ModelWriter};

/// The kind of a webhook delivery job.
pub const NOTIFY_JOB: &str = "notify";
/// The kind of a runbook job.
pub const RUNBOOK_JOB: &str = "runbook";

/// Attempts of one webhook delivery (backoff 1 s, 2 s, 4 s … capped at 5 min: about 20 min).
const NOTIFY_ATTEMPTS: u32 = 10;
/// Attempts of one runbook job: the first writes the template; the rest try the model again.
const RUNBOOK_ATTEMPTS: u32 = 6;
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this worker in the store (which instance holds a job).
    pub worker_id: String,
    /// The deployment runbooks speak of.
    pub deployment: Deployment,
    /// The `[[notify]]` endpoints, in order.
    pub endpoints: Vec<Endpoint>,
    /// The model route that writes runbooks (`[incidents] model`); `None`: template only.
    pub model_route: Option<String>,
    /// Where runbooks are also written as files (`[incidents] runbook_dir`).
    pub runbook_dir: Option<PathBuf>,
    /// How long a claimed job is held before another claim may take it.
    pub lease: Duration,
    /// How often the store is asked for due jobs when nothing wakes the worker.
    pub poll: Duration,
    /// The first wait before a model runbook is tried again.
    pub model_retry: Duration,
}

/// The job worker of one keel instance.
pub struct Worker {
    stores: Stores,
    config: WorkerConfig,
    client: reqwest::Client,
    writer: Option<Arc<dyn ModelWriter>>,
    /// A POST client per endpoint (its own CA certificates), or why there is none.
    posters: Vec<Result<keel_outbound::Client, String>>,
    /// Endpoints that answered 410 Gone, by index (until keel restarts).
    gone: Mutex<HashSet<usize>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("config", &self.config).finish_non_exhaustive()
    }
}

/// What one job run came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished.
    Done,
    /// Run again after this long, with why.
    Retry(Duration, String),
    /// Given up, with why.
    Failed(String),
}

impl Worker {
    /// A worker over `stores`, woken early through `wake`; `writer` asks models for runbooks
    /// (keel's own pipeline).
    pub fn new(
        stores: Stores,
        config: WorkerConfig,
        writer: Option<Arc<dyn ModelWriter>>,
        wake: Arc<Notify>,
    ) -> Worker {
        let client = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
        let posters = config
            .endpoints
            .iter()
            .map(|endpoint| {
                keel_outbound::Client::new(&endpoint.ca).inspect_err(|error| {
                    tracing::error!(url = %endpoint.url, %error, "webhook receiver cannot be reached: its TLS set-up failed; fix its ca_file");
                })
            })
            .collect();
        Worker { stores, config, client, writer, posters, gone: Mutex::new(HashSet::new()), wake }
    }

    /// Wakes the worker now (a change was just recorded).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs jobs until the task is dropped: claims, runs, and waits for a wake-up or the poll
    /// interval when nothing is due. Store errors are logged and retried after the interval.
    pub async fn run(self: Arc<Self>) {
        let mut last_count = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            if last_count.elapsed() >= Duration::from_secs(5) {
                last_count = tokio::time::Instant::now();
                self.publish_counts().await;
            }
            match self.run_one().await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "incident worker: the store failed; trying again shortly"),
            }
            let _ = tokio::time::timeout(self.config.poll, self.wake.notified()).await;
        }
    }

    /// Claims and runs one due job; `None` when nothing is due.
    pub async fn run_one(&self) -> Result<Option<(Job, Outcome)>, keel_session::StoreError> {
        let lease = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        let Some(job) = self.stores.jobs.claim(&self.config.worker_id, &[], now_millis(), lease).await? else {
            return Ok(None);
        };
        let outcome = self.handle(&job).await;
        let worker = &self.config.worker_id;
        let (label, kept) = match &outcome {
            Outcome::Done => ("done", self.stores.jobs.complete(&job.id, worker, now_millis()).await?),
            Outcome::Retry(after, error) => {
                let at = now_millis() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
                let label = if job.attempts >= job.max_attempts { "failed" } else { "retry" };
                (label, self.stores.jobs.retry(&job.id, worker, error, at, now_millis()).await?)
            }
            Outcome::Failed(error) => ("failed", self.stores.jobs.fail(&job.id, worker, error, now_millis()).await?),
        };
        if !kept {
            tracing::warn!(job = %job.id, kind = %job.kind, "incident worker: the job's lease ended before it finished; another worker runs it");
        }
        if let Outcome::Retry(_, error) | Outcome::Failed(error) = &outcome {
            tracing::warn!(job = %job.id, kind = %job.kind, attempt = job.attempts, outcome = label, %error, "incident worker: job did not finish");
        }
        metrics::counter!(names::JOB_RUNS_TOTAL, "kind" => job.kind.clone(), "outcome" => label).increment(1);
        Ok(Some((job, outcome)))
    }

    async fn handle(&self, job: &Job) -> Outcome {
        match job.kind.as_str() {
            INCIDENT_CHANGED_JOB => self.fan_out(job).await,
            NOTIFY_JOB => self.notify(job).await,
            RUNBOOK_JOB => self.runbook(job).await,
            other => Outcome::Failed(format!("no handler for jobs of kind '{other}' in this keel version")),
        }
    }

    /// `incident.changed`: a `notify` job per endpoint, and a `runbook` job when it opened or
    /// resolved.
    async fn fan_out(&self, job: &Job) -> Outcome {
        let change: Change = match serde_json::from_value(job.payload.clone()) {
            Ok(change) => change,
            Err(error) => return Outcome::Failed(format!("bad payload: {error}")),
        };
        for index in 0..self.config.endpoints.len() {
            let delivery = Delivery {
                incident_id: change.incident_id.clone(),
                from: change.from,
                to: change.to,
                at: change.at,
                endpoint: index,
                webhook_id: format!("msg_{}_{index}", job.key.replace(':', "_")),
            };
            let payload = serde_json::to_value(&delivery).unwrap_or(Value::Null);
            let new =
                NewJob::new(NOTIFY_JOB, format!("{}:{index}", job.key), payload).with_max_attempts(NOTIFY_ATTEMPTS);
            if let Err(error) = self.stores.jobs.enqueue(new).await {
                return Outcome::Retry(Duration::from_secs(1), error.to_string());
            }
        }
        if change.from.is_none() || change.to == IncidentStatus::Resolved {
            let stage = if change.to == IncidentStatus::Resolved { "resolved" } else { "opened" };
            let payload = json!({ "incident_id": change.incident_id, "stage": stage });
            let new = NewJob::new(RUNBOOK_JOB, format!("{}:{stage}", change.incident_id), payload)
                .with_max_attempts(RUNBOOK_ATTEMPTS);
            if let Err(error) = self.stores.jobs.enqueue(new).await {
                return Outcome::Retry(Duration::from_secs(1), error.to_string());
            }
        }
        self.wake();
        Outcome::Done
    }

    /// `notify`: one delivery.
    async fn notify(&self, job: &Job) -> Outcome {
        let delivery: Delivery = match serde_json::from_value(job.payload.clone()) {
            Ok(delivery) => delivery,
            Err(error) => return Outcome::Failed(format!("bad payload: {error}")),
        };
        let Some(endpoint) = self.config.endpoints.get(delivery.endpoint) else {
            return Outcome::Failed(format!("[[notify]] endpoint {} is no longer configured", delivery.endpoint + 1));
        };
        let format = endpoint.format.as_str();
        if self.gone.lock().contains(&delivery.endpoint) {
            return Outcome::Failed(format!("{} answered 410 Gone before; not sent", endpoint.url));
        }
        let incident = match self.stores.incidents.incident(&delivery.incident_id).await {
            Ok(Some(incident)) => incident,
            Ok(None) => return Outcome::Failed(format!("incident {} is gone", delivery.incident_id)),
            Err(error) => return Outcome::Retry(Duration::from_secs(1), error.to_string()),
        };
        let runbook_url = (!self.config.deployment.keel_url.is_empty()).then(|| {
            format!("{}/keel/incidents/{}/runbook", self.config.deployment.keel_url.trim_end_matches('/'), incident.id)
        });
        let poster = match self.posters.get(delivery.endpoint) {
            Some(Ok(poster)) => poster,
            Some(Err(why)) => return Outcome::Failed(format!("{}: {why}", endpoint.url)),
            None => return Outcome::Failed(format!("{}: no client for it", endpoint.url)),
        };
        let attempt = notify::deliver(poster, endpoint, &delivery, &incident, runbook_url).await;
        let (label, outcome) = match attempt {
            Attempt::Delivered => ("delivered", Outcome::Done),
            Attempt::Again(after, why) => {
                ("retry", Outcome::Retry(after.unwrap_or_else(|| backoff(job.attempts, Duration::from_secs(1))), why))
            }
            Attempt::Refused(why) => ("failed", Outcome::Failed(why)),
            Attempt::Gone => {
                self.gone.lock().insert(delivery.endpoint);
                self.record_gone(&incident, &endpoint.url).await;
                (
                    "disabled",
                    Outcome::Failed(format!(
                        "{} answered 410 Gone; no more notifications go there until keel restarts",
                        endpoint.url
                    )),
                )
            }
        };
        metrics::counter!(names::NOTIFICATIONS_TOTAL, "format" => format, "outcome" => label).increment(1);
        outcome
    }

    /// Records on the incident that an endpoint stopped taking notifications.
    async fn record_gone(&self, incident: &keel_session::Incident, url: &str) {
        tracing::error!(
            url,
            "webhook receiver answered 410 Gone: keel stops notifying it; remove it from [[notify]] or fix the receiver, then restart keel"
        );
        let event = incident.event("notify.endpoint_disabled", Effect::Note, json!({ "url": url, "status": 410 }));
        if let Err(error) = self.stores.incidents.record_event(event).await {
            tracing::warn!(%error, "incident worker: could not record the disabled endpoint");
        }
    }

    /// `runbook`: the template's at once (unless a model's is there), then the model's.
    async fn runbook(&self, job: &Job) -> Outcome {
        let Some(id) = job.payload.get("incident_id").and_then(Value::as_str) else {
            return Outcome::Failed("bad payload: no incident_id".to_owned());
        };
        let sessions = Some(self.stores.sessions.as_ref());
        let evidence =
            match runbook::gather(self.stores.incidents.as_ref(), sessions, &self.config.deployment, &self.client, id)
                .await
            {
                Ok(Some(evidence)) => evidence,
                Ok(None) => return Outcome::Failed(format!("incident {id} is gone")),
                Err(error) => return Outcome::Retry(Duration::from_secs(1), error.to_string()),
            };
        let current = match self.stores.incidents.runbook(id).await {
            Ok(current) => current,
            Err(error) => return Outcome::Retry(Duration::from_secs(1), error.to_string()),
        };
        let from_model = current.as_ref().is_some_and(|runbook| runbook.source.starts_with("model:"));
        if !from_model || job.attempts == 1 {
            match runbook::write_template(&evidence) {
                Ok(runbook) if !from_model => {
                    if let Err(outcome) = self.keep(runbook).await {
                        return outcome;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "incident worker: the runbook template failed; this is a bug in keel")
                }
            }
        }
        let (Some(route), Some(writer)) = (&self.config.model_route, &self.writer) else { return Outcome::Done };
        match runbook::write_with_model(&evidence, writer.as_ref(), route).await {
            Ok(runbook) => match self.keep(runbook).await {
                Ok(()) => Outcome::Done,
                Err(outcome) => outcome,
            },
            Err(why) => {
                metrics::counter!(names::RUNBOOKS_TOTAL, "source" => "model", "outcome" => "refused").increment(1);
                tracing::info!(incident = id, route = %route, %why, "runbook: the model's answer is not usable; the template's runbook stands, the model is asked again later");
                Outcome::Retry(backoff(job.attempts, self.config.model_retry), why)
            }
        }
    }

    /// Stores a runbook and writes its file.
    async fn keep(&self, runbook: Runbook) -> Result<(), Outcome> {
        let source = if runbook.source.starts_with("model:") { "model" } else { "template" };
        if let Some(dir) = &self.config.runbook_dir
            && let Err(error) = write_file(dir, &runbook).await
        {
            tracing::warn!(dir = %dir.display(), %error, "runbook: cannot write the file; it is kept in the store (GET /keel/incidents/ID/runbook)");
        }
        self.stores
            .incidents
            .put_runbook(runbook)
            .await
            .map_err(|error| Outcome::Retry(Duration::from_secs(1), error.to_string()))?;
        metrics::counter!(names::RUNBOOKS_TOTAL, "source" => source, "outcome" => "written").increment(1);
        Ok(())
    }

    async fn publish_counts(&self) {
        if let Ok(counts) = self.stores.jobs.count_jobs().await {
            for (status, count) in [
                ("queued", counts.queued),
                ("running", counts.running),
                ("done", counts.done),
                ("failed", counts.failed),
            ] {
                metrics::gauge!(names::JOBS, "status" => status).set(count as f64);
            }
        }
    }
}

/// The payload of an `incident.changed` job.
#[derive(Debug, Deserialize)]
struct Change {
    incident_id: String,
    from: Option<IncidentStatus>,
    to: IncidentStatus,
    at: i64,
}

/// `first` doubled for every attempt after the first, capped at [`MAX_BACKOFF`], with up to a
/// tenth added at random so instances do not retry in step.
fn backoff(attempts: u32, first: Duration) -> Duration {
    let doubled = first.saturating_mul(1u32 << attempts.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let jitter = rand::random_range(0..=doubled.as_millis().max(1) / 10);
    doubled + Duration::from_millis(u64::try_from(jitter).unwrap_or(0))
}

/// Writes `DIR/INCIDENT_ID.md` (through a temporary file, so a reader never sees half of it).
async fn write_file(dir: &std::path::Path, runbook: &Runbook) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(format!("{}.md", runbook.incident_id));
    let partial = dir.join(format!(".{}.md.partial", runbook.incident_id));
    tokio::fs::write(&partial, &runbook.markdown).await?;
    tokio::fs::rename(&partial, &path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let second = Duration::from_secs(1);
        assert!(backoff(1, second) >= second && backoff(1, second) <= Duration::from_millis(1100));
        assert!(backoff(3, second) >= Duration::from_secs(4));
        assert!(backoff(40, second) <= MAX_BACKOFF + MAX_BACKOFF / 10);
    }
}
