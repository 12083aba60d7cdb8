//! The gateway's shared state: config, routes, breakers, observations, what keel learned of its
//! upstreams and models, and each serving thread's upstream clients.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use keel_types::{FailureClass, TargetId};
use keel_upstream::{ClientConfig, Upstream, UpstreamClient};
use parking_lot::Mutex;

pub(crate) use calibration::Calibration;
pub(crate) use context_lengths::ContextLengths;
pub(crate) use upstream_health::UpstreamHealth;

use crate::config::Config;
use crate::routing::RouteTable;

mod calibration;
mod context_lengths;
mod upstream_health;

/// Why a gateway could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A serving thread could not be set up.
    #[error("cannot start a serving thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The breaker configuration was rejected.
    #[error("invalid [breaker] configuration: {0}")]
    Breaker(#[from] keel_breaker::Error),
    /// The rate-limit store could not be set up.
    #[error("invalid [limits] configuration: {0}")]
    Limits(#[from] keel_limit::LimitError),
    /// The admission settings were rejected.
    #[error("invalid configuration: {0}")]
    Admission(#[from] keel_admission::Error),
    /// The API keys in the store could not be read at start-up (the store's error).
    #[error("cannot read the API keys in the store: {0}")]
    Keys(String),
}

/// One configured upstream with its own connection pool.
#[derive(Debug)]
pub(crate) struct UpstreamHandle {
    pub(crate) upstream: Upstream,
    pub(crate) client: UpstreamClient,
    pub(crate) idle_timeout: std::time::Duration,
    /// Pass `format` / `response_format` on (see [`crate::config::UpstreamConfig::forward_format`]).
    pub(crate) forward_format: bool,
    /// `keel_upstream_duration_seconds` for this upstream.
    pub(crate) duration: metrics::Histogram,
    /// `keel_upstream_requests_total` of this upstream.
    pub(crate) calls: metrics::Counter,
    /// Requests to it leave the premises.
    pub(crate) remote: bool,
    /// Its daily token budget (`tokens_per_day`), if it has one: shared by every serving
    /// thread's handle.
    pub(crate) budget: Option<Arc<crate::remote::DayBudget>>,
}

/// How long the breaker and observations of a model asked for through `"*"` are kept after its
/// last request.
pub(crate) const IDLE_MODEL_EXPIRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// What keel has observed of one target (`upstream:model`) or upstream (by name).
#[derive(Debug, Clone)]
pub(crate) struct TargetStats {
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) consecutive_failures: u64,
    pub(crate) last_failure: Option<LastFailure>,
    /// When it last answered usably.
    pub(crate) last_success: Option<Instant>,
    /// When it was last observed, to forget the least recently seen of unconfigured models.
    pub(crate) last_seen: Instant,
}

impl Default for TargetStats {
    fn default() -> TargetStats {
        TargetStats {
            requests: 0,
            failures: 0,
            consecutive_failures: 0,
            last_failure: None,
            last_success: None,
            last_seen: Instant::now(),
        }
    }
}

/// The last failure seen of a target or upstream: what, and when.
#[derive(Debug, Clone)]
pub(crate) struct LastFailure {
    pub(crate) class: FailureClass,
    pub(crate) detail: String,
    pub(crate) at: SystemTime,
}

impl LastFailure {
    /// `{"class", "detail", "at"}` with `at` in RFC 3339.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "class": self.class,
            "detail": self.detail,
            "at": humantime::format_rfc3339_seconds(self.at).to_string(),
        })
    }
}

/// The state shared by every request: config, routes, observations, and the upstream clients of
/// one serving thread. Cheap to clone.
///
/// Each serving thread has its own upstream clients (so a request and its upstream connection
/// stay on one thread, see [`crate::serve`]); everything else is shared by all threads.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
    pub(crate) upstreams: Arc<[UpstreamHandle]>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) routes: RouteTable,
    pub(crate) started: Instant,
    pub(crate) targets: Mutex<BTreeMap<String, TargetStats>>,
    /// One circuit breaker per target (`upstream:model`, created on first use for models asked
    /// through the `"*"` route) and one per upstream (by its name) for failures of the server
    /// itself.
    pub(crate) breakers: keel_breaker::Registry,
    /// Handles of the configured targets' and the upstreams' breakers (pinned: never evicted),
    /// looked up without the registry's map.
    pub(crate) breaker_handles: BTreeMap<String, keel_breaker::BreakerHandle>,
    /// Retries allowed across all requests.
    pub(crate) retry_budget: crate::retry::RetryBudget,
    /// The upstreams' daily token budgets (`tokens_per_day`), by upstream name.
    pub(crate) budgets: Budgets,
    /// The last health probe of each upstream, by name.
    pub(crate) health: Mutex<BTreeMap<String, UpstreamHealth>>,
    /// The structured-output repair engine (its compiled-schema cache is shared by all threads).
    pub(crate) repairer: keel_repair::Repairer,
    /// The durable store of sessions (`X-Keel-Session`); `None` when keel runs without one.
    pub(crate) store: Option<Arc<dyn keel_session::Store>>,
    /// The API keys accepted: `[auth]`'s and the store's (refreshed in the background).
    pub(crate) keys: Arc<crate::api_keys::ApiKeys>,
    /// Token estimates calibrated per model from the prompt counts models report.
    pub(crate) calibration: Calibration,
    /// Context lengths the upstreams reported, per model.
    pub(crate) context_lengths: ContextLengths,
    /// Rate limits (`[limits]` and the keys' own).
    pub(crate) limits: Arc<crate::rate_limits::RateLimits>,
    /// Admission control (`[admission]`); `None` when it is off.
    pub(crate) admission: Option<crate::admission::Queues>,
    /// Bumped when keel runs short of file descriptors; each serving thread that sees it change
    /// closes its idle upstream connections (each holds one).
    pub(crate) descriptor_pressure: std::sync::atomic::AtomicU64,
    /// The tracer and its exporters; `None` when no trace destination is set (no cost then).
    pub(crate) traces: Option<crate::traces::Tracing>,
    /// The dashboard's live feed (`/keel/ui/events`).
    pub(crate) dashboard: crate::dashboard_feed::Feed,
    /// The incident log (`[incidents]`); `None` without a store or with incidents off.
    pub(crate) incidents: Option<crate::incident_log::IncidentLog>,
    /// Where the dashboard's per-minute samples are kept; `None` without a store.
    pub(crate) history: Option<Arc<dyn keel_session::HistoryStore>>,
}

impl Gateway {
    /// Builds the gateway from a validated config, without a session store (requests with
    /// `X-Keel-Session` are refused with 503).
    pub fn new(config: Config) -> Result<Gateway, GatewayError> {
        Gateway::build(config, None, None, (None, None))
    }

    /// Builds the gateway with the durable store for sessions, opened from
    /// `config.store_url` with [`keel_session::open`].
    pub fn with_store(config: Config, store: Arc<dyn keel_session::Store>) -> Result<Gateway, GatewayError> {
        Gateway::build(config, Some(store), None, (None, None))
    }

    /// Builds the gateway with the store of sessions and the API keys kept in it (`keel keys`;
    /// both from [`keel_session::open_with_keys`]). The keys are read once here (an error if the
    /// store cannot be read), then every 500 ms while the gateway serves.
    pub async fn with_store_and_keys(
        config: Config,
        store: Arc<dyn keel_session::Store>,
        keys: Arc<dyn keel_session::KeyStore>,
    ) -> Result<Gateway, GatewayError> {
        // The recorder first: the keys' counters are made as they are read.
        let _ = keel_telemetry::prometheus();
        let keys = crate::api_keys::ApiKeys::with_store(config.api_keys(), keys)
            .await
            .map_err(|err| GatewayError::Keys(err.to_string()))?;
        Gateway::build(config, Some(store), Some(keys), (None, None))
    }

    /// Builds the gateway with every part of the store ([`keel_session::open_stores`]):
    /// sessions, the API keys kept in it, and — with `[incidents] enabled` — the incident log
    /// and the durable jobs behind notifications and runbooks.
    pub async fn with_stores(config: Config, stores: keel_session::Stores) -> Result<Gateway, GatewayError> {
        let _ = keel_telemetry::prometheus();
        let keys = crate::api_keys::ApiKeys::with_store(config.api_keys(), Arc::clone(&stores.keys))
            .await
            .map_err(|err| GatewayError::Keys(err.to_string()))?;
        let sessions = Arc::clone(&stores.sessions);
        let history = Arc::clone(&stores.history);
        let rule = config.incidents.bursts;
        let incidents = config.incidents.enabled.then(|| crate::incident_log::IncidentLog::new(stores, rule));
        Gateway::build(config, Some(sessions), Some(keys), (incidents, Some(history)))
    }

    fn build(
        config: Config,
        store: Option<Arc<dyn keel_session::Store>>,
        keys: Option<crate::api_keys::ApiKeys>,
        (incidents, history): (Option<crate::incident_log::IncidentLog>, Option<Arc<dyn keel_session::HistoryStore>>),
    ) -> Result<Gateway, GatewayError> {
        let budgets: Budgets = config
            .upstreams
            .iter()
            .filter(|up| up.tokens_per_day > 0)
            .map(|up| (up.name.clone(), Arc::new(crate::remote::DayBudget::new(&up.name, up.tokens_per_day))))
            .collect();
        let upstreams = build_upstreams(&config, &budgets)?;
        // Make sure the recorder exists before the first request so /metrics is never empty.
        let _ = keel_telemetry::prometheus();
        let keys = Arc::new(keys.unwrap_or_else(|| crate::api_keys::ApiKeys::configured(config.api_keys())));
        // An upstream's own breaker opens on failures of the server in a row only: a server is up
        // or down, and its rate or slowness is its models' to answer for.
        let server = keel_breaker::BreakerConfig {
            failure_rate: 0.0,
            slow_call_rate: 0.0,
            min_success_ratio: 0.0,
            max_tokens_per_minute: 0,
            ..config.breaker.clone()
        };
        let breakers = config
            .upstreams
            .iter()
            .fold(keel_breaker::Registry::builder(config.breaker.clone()), |builder, u| {
                builder.target(u.name.clone(), server.clone())
            })
            .build()?;
        let limits = Arc::new(crate::rate_limits::RateLimits::from_config(&config)?);
        let routes = RouteTable::new(config.routes.clone());
        crate::request_metrics::label_models(config.routes.iter().map(|r| r.model.as_str()));
        let config_retry = (config.retry.budget_ratio, config.retry.budget_min_per_second);
        let upstream_names = config.upstreams.iter().map(|u| u.name.clone());
        let target_keys = routes.target_keys();
        crate::startup_series::register(&config, &target_keys);
        let admission = crate::admission::Queues::from_config(&config, &target_keys)?;
        let breaker_handles =
            target_keys.into_iter().chain(upstream_names).map(|key| (key.clone(), breakers.pinned(&key))).collect();
        let traces = crate::traces::Tracing::start(&config.tracing);
        Ok(Gateway {
            inner: Arc::new(Inner {
                routes,
                config,
                started: Instant::now(),
                targets: Mutex::new(BTreeMap::new()),
                breakers,
                breaker_handles,
                health: Mutex::new(BTreeMap::new()),
                retry_budget: crate::retry::RetryBudget::new(config_retry.0, config_retry.1),
                budgets,
                repairer: keel_repair::Repairer::new(),
                store,
                keys,
                calibration: Default::default(),
                context_lengths: Default::default(),
                descriptor_pressure: std::sync::atomic::AtomicU64::new(0),
                limits,
                admission,
                traces,
                dashboard: Default::default(),
                incidents,
                history,
            }),
            upstreams,
        })
    }

    /// This keel's name among instances sharing a store: `HOSTNAME:PORT`.
    pub(crate) fn instance_name(&self) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "keel".to_owned());
        format!("{host}:{}", self.config().server.listen.port())
    }

    /// A gateway over shared state `inner` with its own upstream connection pools (for work
    /// that holds the state weakly, such as the incident worker's model calls).
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Result<Gateway, GatewayError> {
        let upstreams = build_upstreams(&inner.config, &inner.budgets)?;
        Ok(Gateway { inner, upstreams })
    }

    /// The same gateway with its own upstream connection pools, for another serving thread.
    pub fn with_own_clients(&self) -> Result<Gateway, GatewayError> {
        Ok(Gateway {
            inner: Arc::clone(&self.inner),
            upstreams: build_upstreams(&self.inner.config, &self.inner.budgets)?,
        })
    }

    /// keel is short of file descriptors: every serving thread closes its idle upstream
    /// connections (this one at once, the others within a second).
    pub(crate) fn relieve_descriptor_pressure(&self) {
        self.inner.descriptor_pressure.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.close_idle_upstream_connections();
    }

    /// Closes this serving thread's idle upstream connections.
    pub(crate) fn close_idle_upstream_connections(&self) {
        for upstream in self.upstreams.iter() {
            upstream.client.close_idle();
        }
    }

    /// The tracer, when traces are sent somewhere.
    pub(crate) fn tracing(&self) -> Option<&crate::traces::Tracing> {
        self.inner.traces.as_ref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn upstream(&self, name: &str) -> Option<&UpstreamHandle> {
        self.upstreams.iter().find(|u| u.upstream.name == name)
    }

    /// The breaker of a target key (`upstream:model`), or of an upstream as a whole (its name),
    /// for a request to it: created if missing, and counted as a use (least-recently-used eviction
    /// and idle expiry). Views (status, reasons, probes) read `breakers().snapshot(key)` instead.
    pub(crate) fn breaker(&self, key: &str) -> keel_breaker::BreakerHandle {
        match self.inner.breaker_handles.get(key) {
            Some(handle) => handle.clone(),
            None => self.inner.breakers.breaker(key),
        }
    }

    /// The breakers, for the admin API and the event pump.
    pub fn breakers(&self) -> &keel_breaker::Registry {
        &self.inner.breakers
    }

    /// Whether the last health probe of `upstream` saw `model` loaded.
    pub(crate) fn has_loaded(&self, upstream: &str, model: &str) -> bool {
        self.inner.health.lock().get(upstream).is_some_and(|h| h.has_loaded(model))
    }

    pub(crate) fn default_target(&self) -> Option<&TargetId> {
        self.inner.routes.default_target()
    }

    /// Records the outcome of one call to a target or upstream (`None` = success). Entries of
    /// unconfigured models are bounded like their breakers: the least recently seen goes first.
    pub(crate) fn observe(&self, target: &str, failure: Option<(FailureClass, String)>) {
        let mut targets = self.inner.targets.lock();
        if !targets.contains_key(target) {
            let limit = self.inner.config.breaker.max_breakers + self.inner.breaker_handles.len();
            if targets.len() >= limit
                && let Some(oldest) = targets
                    .iter()
                    .filter(|(key, _)| !self.inner.breaker_handles.contains_key(*key))
                    .min_by_key(|(_, stats)| stats.last_seen)
                    .map(|(key, _)| key.clone())
            {
                targets.remove(&oldest);
            }
        }
        let stats = targets.entry(target.to_owned()).or_default();
        stats.requests += 1;
        stats.last_seen = Instant::now();
        match failure {
            None => {
                stats.consecutive_failures = 0;
                stats.last_success = Some(stats.last_seen);
            }
            Some((class, detail)) => {
                stats.failures += 1;
                stats.consecutive_failures += 1;
                stats.last_failure = Some(LastFailure { class, detail, at: SystemTime::now() });
            }
        }
    }

    /// Forgets the breakers and observations of models asked for through `"*"` that nobody has
    /// asked for in [`IDLE_MODEL_EXPIRY`] (closed breakers only: an open one remembers a failing
    /// model). Configured targets and upstreams are kept.
    pub(crate) fn expire_idle_models(&self) {
        let dropped = self.inner.breakers.evict_idle(IDLE_MODEL_EXPIRY);
        let mut targets = self.inner.targets.lock();
        targets.retain(|key, stats| {
            self.inner.breaker_handles.contains_key(key)
                || stats.last_seen.elapsed() < IDLE_MODEL_EXPIRY
                || self.inner.breakers.get(key).is_some()
        });
        drop(targets);
        if dropped > 0 {
            tracing::debug!(dropped, "forgot the breakers of models nobody asked for lately");
        }
    }

    /// A target's consecutive failures when its failures are partial: it answered usably within
    /// the breaker's window (a failure rate, not a dead server or a model that cannot load).
    pub(crate) fn partial_failures(&self, key: &str) -> Option<u64> {
        let window = self.inner.config.breaker.window;
        let targets = self.inner.targets.lock();
        let stats = targets.get(key)?;
        stats.last_success.is_some_and(|at| at.elapsed() < window).then_some(stats.consecutive_failures)
    }

    /// Why a target's (or an upstream's) breaker is open, in words, with the failure that tripped
    /// it: `default:llama3.2: circuit open since 12:01:03 UTC after 5 consecutive failures (last:
    /// refused: connection refused at http://127.0.0.1:11434)`. `None` while it is not open.
    pub(crate) fn open_reason(&self, key: &str) -> Option<String> {
        let snapshot = self.inner.breakers.snapshot(key)?;
        if snapshot.state != keel_breaker::State::Open {
            return None;
        }
        let mut reason = format!("{key}: circuit open");
        let clock = self.inner.breakers.clock();
        if let Some(at) = snapshot.opened_at.and_then(|at| clock.wall_time(at)) {
            let stamp = humantime::format_rfc3339_seconds(at).to_string();
            reason.push_str(&format!(" since {} UTC", stamp.get(11..19).unwrap_or(&stamp)));
        }
        if let Some(last) = snapshot.last_transition {
            reason.push_str(&format!(" after {}", last.reason));
        }
        if let Some(last) = self.inner.targets.lock().get(key).and_then(|s| s.last_failure.clone()) {
            reason.push_str(&format!(" (last: {}: {})", last.class, last.detail));
        }
        Some(reason)
    }
}

/// Daily token budgets by upstream name.
pub(crate) type Budgets = BTreeMap<String, Arc<crate::remote::DayBudget>>;

fn build_upstreams(config: &Config, budgets: &Budgets) -> Result<Arc<[UpstreamHandle]>, GatewayError> {
    let upstreams: Vec<UpstreamHandle> = config
        .upstreams
        .iter()
        .map(|up| UpstreamHandle {
            upstream: up.upstream.clone(),
            client: UpstreamClient::new(ClientConfig {
                connect_timeout: up.connect_timeout,
                response_timeout: up.response_timeout,
                ..ClientConfig::default()
            }),
            idle_timeout: up.idle_timeout,
            forward_format: up.forward_format,
            duration: metrics::histogram!(keel_telemetry::names::UPSTREAM_DURATION_SECONDS, "upstream" => up.name.clone()),
            calls: metrics::counter!(keel_telemetry::names::UPSTREAM_REQUESTS_TOTAL, "upstream" => up.name.clone()),
            remote: up.remote,
            budget: budgets.get(&up.name).cloned(),
        })
        .collect();
    Ok(upstreams.into())
}
