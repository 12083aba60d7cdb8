//! Admission control's shared state (`[admission]`): the [`keel_admission::Admission`] of a
//! gateway with its metrics and `/keel/status` view ([`Queues`]), and who a request queues as
//! ([`ticket`]: the tenant for fair share and the priority). The wait itself happens per target,
//! where each upstream call is made (`attempts/`); the slot is held until the answer's body ends
//! (`relay/`).
//!
//! Off when the config has no `[admission]` section: then `Gateway` holds no [`Queues`], no
//! request carries a ticket, and the request path pays one branch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::HeaderMap;
use http::request::Parts;
use keel_admission::{Admission, Permit, Priority, Settings, Shed, ShedReason, Ticket};
use keel_telemetry::names;
use metrics::{Counter, Histogram};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::client::{Caller, Sender};
use crate::config::Config;
use crate::endpoint::{Endpoint, EndpointKind};
use crate::error::ProxyError;

/// Request header: how urgently the client wants a slot (`interactive`, `normal` or `batch`).
pub(crate) const KEEL_PRIORITY: http::HeaderName = http::HeaderName::from_static("x-keel-priority");

/// Response header: how long the request waited in an admission queue, in whole milliseconds
/// (only on answers whose request queued).
pub(crate) const KEEL_QUEUE_WAIT: http::HeaderName = http::HeaderName::from_static("x-keel-queue-wait-ms");

/// Sets [`KEEL_QUEUE_WAIT`] on `response` when the request waited (`waited`, in all).
pub(crate) fn set_queue_wait(response: &mut axum::response::Response, waited: Option<std::time::Duration>) {
    if let Some(waited) = waited {
        let millis = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        response.headers_mut().insert(KEEL_QUEUE_WAIT, http::HeaderValue::from(millis));
    }
}

/// Admission control of a gateway: the queues of every `upstream:model` and their metrics.
#[derive(Debug)]
pub(crate) struct Queues {
    admission: Admission,
    /// `keel_admission_admitted_total`
    admitted: Counter,
    /// `keel_admission_shed_total`, by [`ShedReason::ALL`] order.
    shed: [Counter; ShedReason::ALL.len()],
    /// `keel_admission_queue_wait_seconds`
    wait: Histogram,
    /// Models of configured targets: labelled by name in metrics (other names need a label from
    /// [`crate::request_metrics`], else they share `other`).
    configured: HashSet<String>,
    /// The `(upstream, model label)` gauge series set so far, to zero those whose buckets went.
    published: Mutex<HashSet<(String, String)>>,
    /// Upstreams with `max_concurrent` in their `[[upstream]]` table: what the server says does
    /// not change it.
    configured_upstreams: HashSet<String>,
    /// Upstreams whose `max_concurrent` comes from the server itself (llama-server's slots).
    from_servers: Mutex<HashMap<String, usize>>,
}

impl Queues {
    /// The queues `[admission]` describes, or `None` without that section. Every shed reason's
    /// counter, the admitted counter and the configured targets' gauges exist from here on, at 0.
    pub(crate) fn from_config(
        config: &Config,
        target_keys: &[String],
    ) -> Result<Option<Queues>, keel_admission::Error> {
        let Some(settings) = config.admission else { return Ok(None) };
        let own: Vec<(String, Settings)> = config
            .upstreams
            .iter()
            .filter_map(|up| {
                up.max_concurrent.map(|max_concurrent| (up.name.clone(), Settings { max_concurrent, ..settings }))
            })
            .collect();
        let configured_upstreams = own.iter().map(|(name, _)| name.clone()).collect();
        let admission = Admission::with_upstreams(settings, own)?;
        let shed =
            ShedReason::ALL.map(|reason| metrics::counter!(names::ADMISSION_SHED_TOTAL, "reason" => reason.as_str()));
        for counter in &shed {
            counter.absolute(0);
        }
        let admitted = metrics::counter!(names::ADMISSION_ADMITTED_TOTAL);
        admitted.absolute(0);
        let mut configured = HashSet::new();
        let mut published = HashSet::new();
        for key in target_keys {
            if let Some((upstream, model)) = key.split_once(':') {
                configured.insert(model.to_owned());
                published.insert((upstream.to_owned(), model.to_owned()));
            }
        }
        for (upstream, model) in &published {
            set_gauges(upstream, model, 0, 0);
        }
        Ok(Some(Queues {
            admission,
            admitted,
            shed,
            wait: metrics::histogram!(names::ADMISSION_QUEUE_WAIT_SECONDS),
            configured,
            published: Mutex::new(published),
            configured_upstreams,
            from_servers: Mutex::default(),
        }))
    }

    /// The model server says it serves `slots` requests at once (llama-server's `total_slots`):
    /// that becomes the upstream's `max_concurrent`, unless its `[[upstream]]` table sets one.
    pub(crate) fn server_slots(&self, upstream: &str, slots: usize) {
        if slots == 0 || self.configured_upstreams.contains(upstream) {
            return;
        }
        let before = self.from_servers.lock().insert(upstream.to_owned(), slots);
        if before == Some(slots) {
            return;
        }
        let was = self.admission.upstream_settings(upstream).max_concurrent;
        self.admission.set_max_concurrent(upstream, slots);
        tracing::info!(
            upstream,
            slots,
            was,
            "the model server serves {slots} requests at once (its slots): keel sends it at most {slots} per model and queues the rest; set max_concurrent in its [[upstream]] table to choose otherwise"
        );
    }

    /// Whether requests to `endpoint` queue: those that run a model (chat, generate, embeddings,
    /// completions), not listings, `/api/show` or model management.
    pub(crate) fn queues(endpoint: Endpoint) -> bool {
        endpoint.kind == EndpointKind::ModelInBody && endpoint.label != "/api/show"
    }

    /// Waits for a slot of target `key` (`upstream:model`), or says why not; counted in the
    /// metrics. Dropping the future (the client went away) leaves the queue.
    pub(crate) async fn admit(&self, key: &str, ticket: Ticket) -> Result<Permit, Shed> {
        let (upstream, model) = key.split_once(':').unwrap_or((key, ""));
        let result = self.admission.admit(upstream, model, ticket).await;
        match &result {
            Ok(permit) => {
                self.admitted.increment(1);
                self.wait.record(permit.waited().as_secs_f64());
            }
            Err(shed) => self.shed[shed_index(shed.reason())].increment(1),
        }
        result
    }

    /// Sets `keel_admission_queue_depth` and `keel_admission_running` from the buckets now (at
    /// each scrape of `/metrics`); series of buckets that went are set to 0. Models without a
    /// label of their own share `other`, so the series stay bounded.
    pub(crate) fn publish(&self) {
        let mut now: HashMap<(String, String), (usize, usize)> = HashMap::new();
        for bucket in self.admission.stats() {
            let label = self.model_label(&bucket.model);
            let entry = now.entry((bucket.upstream.to_string(), label.to_owned())).or_default();
            entry.0 += bucket.running;
            entry.1 += bucket.queued;
        }
        let mut published = self.published.lock();
        for key in published.iter() {
            if !now.contains_key(key) {
                set_gauges(&key.0, &key.1, 0, 0);
            }
        }
        for (key, (running, queued)) in now {
            set_gauges(&key.0, &key.1, running, queued);
            published.insert(key);
        }
    }

    /// The metrics label of a bucket's model: its name when configured or labelled for request
    /// metrics, else `other`.
    fn model_label<'a>(&self, model: &'a str) -> &'a str {
        if self.configured.contains(model) {
            return model;
        }
        crate::request_metrics::model_label(model, false)
    }

    /// The `admission` object of `/keel/status`: the settings, every bucket with requests running
    /// or queued, and the counters since start-up.
    pub(crate) fn status(&self) -> Value {
        let Settings { max_concurrent, max_queue, max_wait, upstream_max_concurrent, aging } =
            *self.admission.settings();
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let buckets: Vec<Value> = self
            .admission
            .stats()
            .into_iter()
            .map(|b| {
                json!({
                    "upstream": &*b.upstream,
                    "model": &*b.model,
                    "running": b.running,
                    "queued": b.queued,
                    "max_concurrent": b.max_concurrent,
                    "max_queue": b.max_queue,
                    "oldest_wait_ms": millis(b.oldest_wait),
                    "service_time_ms": b.service_time.map(millis),
                    "upstream_running": b.upstream_running,
                    "upstream_max_concurrent": b.upstream_max_concurrent,
                })
            })
            .collect();
        let counters = self.admission.counters();
        let shed: serde_json::Map<String, Value> =
            ShedReason::ALL.iter().map(|reason| (reason.as_str().to_owned(), json!(counters.shed(*reason)))).collect();
        let from_servers: serde_json::Map<String, Value> =
            self.from_servers.lock().iter().map(|(upstream, slots)| (upstream.clone(), json!(slots))).collect();
        json!({
            "enabled": true,
            "max_concurrent": max_concurrent,
            "max_concurrent_from_servers": from_servers,
            "max_queue": max_queue,
            "max_wait_ms": millis(max_wait),
            "upstream_max_concurrent": upstream_max_concurrent,
            "aging_ms": millis(aging),
            "buckets": buckets,
            "counters": {
                "admitted": counters.admitted,
                "admitted_after_queueing": counters.admitted_after_queueing,
                "cancelled": counters.cancelled,
                "shed": shed,
                "shed_total": counters.shed_total(),
            },
        })
    }
}

/// The `admission` object of `/keel/status` when admission is off.
pub(crate) fn status_off() -> Value {
    json!({ "enabled": false })
}

fn set_gauges(upstream: &str, model: &str, running: usize, queued: usize) {
    let labels = [("upstream", upstream.to_owned()), ("model", model.to_owned())];
    metrics::gauge!(names::ADMISSION_RUNNING, &labels).set(running as f64);
    metrics::gauge!(names::ADMISSION_QUEUE_DEPTH, &labels).set(queued as f64);
}

fn shed_index(reason: ShedReason) -> usize {
    ShedReason::ALL.iter().position(|r| *r == reason).unwrap_or(0)
}

/// Who a request queues as, when admission is on: the API key's name (else the client's address,
/// else `local`) and its priority ([`priority`]), without a deadline yet (the attempts add the
/// request's). A malformed `X-Keel-Priority` is refused with 400.
pub(crate) fn ticket(parts: &Parts) -> Result<Ticket, ProxyError> {
    let caller = parts.extensions.get::<Caller>();
    let priority = priority(caller.and_then(|c| c.limits.priority), &parts.headers)?;
    let tenant: Arc<str> = match Sender::of(&parts.extensions) {
        Sender::Key(name) => Arc::clone(name),
        Sender::Address(ip) => Arc::from(ip.to_string()),
        Sender::Local => Arc::from("local"),
    };
    Ok(Ticket::new(tenant, priority))
}

/// A request's priority: the key's own (`key`) if it has one, else `X-Keel-Priority`, else
/// normal. The header may lower a key's priority, never raise it above the key's own.
pub(crate) fn priority(key: Option<Priority>, headers: &HeaderMap) -> Result<Priority, ProxyError> {
    let mut values = headers.get_all(&KEEL_PRIORITY).iter();
    let asked = match values.next() {
        None => None,
        Some(_) if values.next().is_some() => {
            return Err(ProxyError::BadPriority("X-Keel-Priority is sent more than once".into()));
        }
        Some(value) => match value.to_str().ok().and_then(|text| text.parse::<Priority>().ok()) {
            Some(priority) => Some(priority),
            None => {
                return Err(ProxyError::BadPriority(format!(
                    "X-Keel-Priority {} is not a priority",
                    crate::error::quoted(value.as_bytes())
                )));
            }
        },
    };
    Ok(match (key, asked) {
        (Some(key), Some(asked)) => key.min(asked),
        (Some(key), None) => key,
        (None, asked) => asked.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(KEEL_PRIORITY, http::HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn priority_comes_from_the_key_then_the_header_then_normal() {
        use Priority::{Batch, Interactive, Normal};
        assert_eq!(priority(None, &with(&[])).unwrap(), Normal);
        assert_eq!(priority(None, &with(&["interactive"])).unwrap(), Interactive);
        assert_eq!(priority(None, &with(&[" Batch "])).unwrap(), Batch);
        assert_eq!(priority(Some(Batch), &with(&[])).unwrap(), Batch);
        assert_eq!(priority(Some(Interactive), &with(&[])).unwrap(), Interactive);
        // The header lowers a key's priority, never raises it.
        assert_eq!(priority(Some(Interactive), &with(&["batch"])).unwrap(), Batch);
        assert_eq!(priority(Some(Batch), &with(&["interactive"])).unwrap(), Batch);
        assert_eq!(priority(Some(Normal), &with(&["interactive"])).unwrap(), Normal);
    }

    #[test]
    fn a_bad_priority_header_is_refused_naming_the_values() {
        let err = priority(None, &with(&["urgent"])).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        let message = err.to_string();
        assert!(message.contains("\"urgent\"") && message.contains("interactive, normal or batch"), "{message}");
        let twice = priority(Some(Priority::Batch), &with(&["batch", "normal"])).unwrap_err();
        assert!(twice.to_string().contains("more than once"), "{twice}");
        let mut binary = HeaderMap::new();
        binary.insert(KEEL_PRIORITY, http::HeaderValue::from_bytes(b"hi\xff").unwrap());
        assert!(priority(None, &binary).unwrap_err().to_string().contains("\\xff"));
    }

    #[test]
    fn the_tenant_is_the_key_then_the_address_then_local() {
        let mut parts = http::Request::new(()).into_parts().0;
        assert_eq!(&*ticket(&parts).unwrap().tenant, "local");
        parts.extensions.insert(crate::client::ClientIp([10, 0, 0, 7].into()));
        assert_eq!(&*ticket(&parts).unwrap().tenant, "10.0.0.7");
        let limits = crate::config::KeyLimits { priority: Some(Priority::Batch), ..Default::default() };
        parts.extensions.insert(Caller { name: Arc::from("agent"), limits, admin: false });
        parts.headers.insert(KEEL_PRIORITY, http::HeaderValue::from_static("interactive"));
        let ticket = ticket(&parts).unwrap();
        assert_eq!((&*ticket.tenant, ticket.priority), ("agent", Priority::Batch));
        assert_eq!(ticket.deadline, None);
    }
}
