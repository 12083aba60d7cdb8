//! The config file exactly as written: every section and key keel accepts, with defaults.
//!
//! Unknown keys are rejected (`deny_unknown_fields`) so a typo fails loudly instead of being
//! ignored. [`super::Config::from_raw`] turns this into validated runtime values.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_types::Dialect;
use serde::{Deserialize, Serialize};

/// The whole `keel.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[store]`
    pub store: RawStore,
    /// `[[upstream]]`, in order.
    pub upstream: Vec<RawUpstream>,
    /// `[[route]]`, in order.
    pub route: Vec<RawRoute>,
    /// `[breaker]`: when a target is taken out of rotation and how it is probed back.
    pub breaker: keel_breaker::BreakerConfig,
    /// `[retry]`
    pub retry: RawRetry,
    /// `[guard]`: structured output (validate, repair, re-ask, fall back, canned answer).
    pub guard: RawGuard,
    /// `[sessions]`: durable conversations (`X-Keel-Session`).
    pub sessions: RawSessions,
    /// `[auth]`; absent means no keys are required (and keel then only listens on loopback).
    pub auth: Option<RawAuth>,
    /// `[limits]`: requests and tokens per minute for every key (or client address).
    pub limits: RawLimits,
    /// `[admission]`: how many requests each `upstream:model` serves at once and how many wait;
    /// absent: no admission control.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<RawAdmission>,
    /// `[tracing]`: what traces carry (where they go is read from the `OTEL_*` / `LANGFUSE_*`
    /// environment variables).
    pub tracing: RawTracing,
    /// `[incidents]`: the incident log, runbooks and the durable jobs behind them.
    pub incidents: RawIncidents,
    /// `[[notify]]`: webhooks told of every incident state change.
    pub notify: Vec<RawNotify>,
    /// `[log]`
    pub log: RawLog,
}

/// `[incidents]`: what keel does when something fails.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIncidents {
    /// Record incidents (breakers, posted events), notify and write runbooks. Needs the store.
    pub enabled: bool,
    /// The model route that writes runbooks (one call through keel's own pipeline, validated
    /// against the runbook schema). Unset: runbooks come from the template only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Where runbooks are also written as `INCIDENT_ID.md` (beside the config file when
    /// relative). `""`: in the store only.
    pub runbook_dir: String,
    /// How long a claimed job is held before another keel instance (or this one, restarted) may
    /// take it again.
    #[serde(with = "keel_types::duration")]
    pub job_lease: Duration,
    /// The first wait before the model is asked again for a runbook it could not write (doubles
    /// each time, 5 tries).
    #[serde(with = "keel_types::duration")]
    pub model_retry: Duration,
    /// Failures of one cause within a minute that open an incident: structured answers that
    /// could not be made valid (per model), requests shed (per target), rate-limit refusals (per
    /// key or client).
    pub burst_threshold: u32,
    /// How long without such a failure before its incident resolves.
    #[serde(with = "keel_types::duration")]
    pub burst_quiet: Duration,
}

impl Default for RawIncidents {
    fn default() -> Self {
        RawIncidents {
            enabled: true,
            model: None,
            runbook_dir: "runbooks".to_owned(),
            job_lease: Duration::from_secs(60),
            model_retry: Duration::from_secs(30),
            burst_threshold: 10,
            burst_quiet: Duration::from_secs(300),
        }
    }
}

/// `[[notify]]`: one webhook receiver.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// Where keel POSTs (`http://…`).
    pub url: String,
    /// The body's shape: `json` (generic), `slack` or `discord`.
    #[serde(default)]
    pub format: keel_incident::webhook::Format,
    /// The environment variable holding the Standard Webhooks secret (`whsec_` + base64); unset:
    /// deliveries are not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// A PEM file of CA certificates to trust for an `https://` receiver besides the system's
    /// (a receiver with its own certificate authority); beside the config file when relative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// `[tracing]`: what keel's OpenTelemetry spans carry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTracing {
    /// Record prompts and answers on model-call spans (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`). Off: spans carry sizes, models and token counts only.
    pub content: bool,
}

/// `[server]`: where and how keel listens.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body keel reads, e.g. `"32MiB"`; larger bodies get 413.
    pub max_request_body: String,
    /// Largest non-streamed answer keel reads whole before answering (so that one cut short by
    /// the server can go to the next target instead of reaching the client truncated).
    pub max_buffered_answer: String,
    /// How long in-flight requests may run after SIGTERM/Ctrl+C before keel exits anyway.
    #[serde(with = "keel_types::duration")]
    pub shutdown_grace: Duration,
    /// Allow listening on a non-loopback address without `[auth]` keys.
    pub allow_remote_without_auth: bool,
    /// Serving threads; 0 means one per CPU core.
    pub workers: usize,
    /// How long a client connection may take to send a request's headers, counted from their
    /// first byte. `"0s"` turns it off.
    #[serde(with = "keel_types::duration")]
    pub header_timeout: Duration,
    /// How long a kept-alive client connection may stay open with no request in hand and no
    /// bytes moving. `"0s"` turns it off.
    #[serde(with = "keel_types::duration")]
    pub idle_timeout: Duration,
    /// The most client connections kept open; 0 means half the open-file limit.
    pub max_connections: usize,
    /// How long keel waits for a request body it reads whole (a model request's JSON).
    #[serde(with = "keel_types::duration")]
    pub body_timeout: Duration,
    /// Host names clients may use to reach keel besides the listen address and loopback names
    /// (`Host` is checked against DNS rebinding); `"*"` allows any.
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call keel (CORS), besides http(s) on loopback names, e.g.
    /// `"http://localhost:3000"`; `"*"` allows any, a trailing `:*` any port.
    pub cors_origins: Vec<String>,
}

impl Default for RawServer {
    fn default() -> RawServer {
        RawServer {
            listen: "127.0.0.1:11435".into(),
            max_request_body: "32MiB".into(),
            max_buffered_answer: "64MiB".into(),
            shutdown_grace: Duration::from_secs(30),
            allow_remote_without_auth: false,
            workers: 0,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 0,
            body_timeout: Duration::from_secs(60),
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

/// `[store]`: where sessions, incidents and checkpoints are kept.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `sqlite://FILE`, `postgres://…` or `redis://…`.
    pub url: String,
}

impl Default for RawStore {
    fn default() -> RawStore {
        RawStore { url: "sqlite://keel.db".into() }
    }
}

/// One `[[upstream]]`: a model server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Name used in routes, logs and metrics.
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:11434`.
    pub url: String,
    /// `ollama` (default) or `openai`.
    #[serde(default)]
    pub dialect: Dialect,
    /// Time to open a connection.
    #[serde(default = "default_connect_timeout", with = "keel_types::duration")]
    pub connect_timeout: Duration,
    /// Time from request to response head (covers cold model loads).
    #[serde(default = "default_response_timeout", with = "keel_types::duration")]
    pub response_timeout: Duration,
    /// Longest silence allowed between two chunks of a streamed body.
    #[serde(default = "default_idle_timeout", with = "keel_types::duration")]
    pub idle_timeout: Duration,
    /// How often keel probes the upstream's health (and, for Ollama, which models are loaded);
    /// `"0s"` turns probing off.
    #[serde(default = "default_health_interval", with = "keel_types::duration")]
    pub health_interval: Duration,
    /// Pass a request's `format` / `response_format` on to this server (constrained decoding).
    /// `false` for servers that reject or mishandle it: keel then removes it and relies on its
    /// structured-output guard alone (say the schema in the prompt).
    #[serde(default = "default_true")]
    pub forward_format: bool,
    /// With `[admission]`: requests one model on this server answers at once (like its
    /// `OLLAMA_NUM_PARALLEL`), instead of `[admission] max_concurrent`. Unset, a llama-server's
    /// own slot count (`GET /props`) is used once its health probe has read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// The environment variable holding this server's API key, sent as `Authorization: Bearer`
    /// (`x-api-key` for `dialect = "anthropic"`) in place of whatever the client sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// A file whose first line is this server's API key (instead of `api_key_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<String>,
    /// Headers sent with every request to this server, e.g. `{ "OpenAI-Organization" = "org-1" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from environment variables: `{ "X-Secret" = "VAR_NAME" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_env: BTreeMap<String, String>,
    /// A PEM file of CA certificates trusted for this `https://` upstream, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Whether requests to this server leave the premises. Unset: decided from the address
    /// (outside loopback and private networks is remote). Routes use a remote upstream only with
    /// `allow_remote = true`, and only after their local targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<bool>,
    /// Tokens (prompt and answer) this upstream may spend per day (UTC); 0: no cap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens_per_day: u64,
}

pub(crate) const fn default_true() -> bool {
    true
}

pub(crate) fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(crate) fn default_response_timeout() -> Duration {
    Duration::from_secs(600)
}
pub(crate) fn default_health_interval() -> Duration {
    Duration::from_secs(10)
}
pub(crate) fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

/// One `[[route]]`: a model name clients ask for and where it goes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The name clients ask for; `"*"` matches any other name.
    pub model: String,
    /// Targets in fallback order: `"upstream"` or `"upstream:model"`.
    pub targets: Vec<String>,
    /// Try targets whose upstream has the model loaded (per its last health probe) first.
    #[serde(default)]
    pub prefer_loaded: bool,
    /// JSON Schema for structured answers on this route when the request sends only
    /// `format: "json"` / `json_object`: an inline table, or a path to a `.json` file (relative to
    /// the config file).
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// The answer of last resort for structured requests on this route, used when no target gave
    /// a valid one (validated against `schema` when the config loads, and against the request's
    /// schema when it is used).
    #[serde(default)]
    pub canned: Option<serde_json::Value>,
    /// Requests per minute on this route, per key (per client address without keys), besides
    /// the key's own and `[limits]`; 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requests_per_minute: u64,
    /// Tokens per minute on this route, per key (or client address); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens_per_minute: u64,
    /// Let this route's requests go to remote upstreams (data leaves the premises), after its
    /// local targets are out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote: bool,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// `[guard]`: what keel does with answers to structured-output requests (Ollama `format`,
/// OpenAI `response_format`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGuard {
    /// Validate and repair structured answers at all.
    pub enabled: bool,
    /// How often the same target is asked again, with the validation error as feedback, before
    /// the next target is tried.
    pub reasks: u32,
    /// Streamed structured answers: `"buffer"` validates the whole answer and then streams it in
    /// well-formed chunks; `"passthrough"` relays them unchecked.
    pub stream: GuardStream,
    /// Largest answer keel buffers for validation, e.g. `"8MiB"`.
    pub max_answer: String,
}

impl Default for RawGuard {
    fn default() -> RawGuard {
        RawGuard { enabled: true, reasks: 1, stream: GuardStream::Buffer, max_answer: "8MiB".into() }
    }
}

/// `[sessions]`: how keel keeps conversations for clients that send `X-Keel-Session`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSessions {
    /// The most context (in tokens, estimated at 4 bytes per token when the model did not report
    /// a count) keel sends with a managed session's request: system messages and the newest
    /// messages that fit. 0 means no limit; unset, it follows the model (`options.num_ctx`, else
    /// the context length from `/api/show`, less a quarter for the answer; else 8192).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_context_tokens: Option<u64>,
    /// A session with no new message for this long is marked `timed_out` (and counted in
    /// `keel_sessions_timed_out_total`); a new message makes it active again. `"0s"` turns it off.
    #[serde(with = "keel_types::duration")]
    pub idle_timeout: Duration,
    /// What happens to the oldest messages when the context exceeds `max_context_tokens`.
    pub overflow: SessionOverflow,
    /// With `overflow = "hybrid"`: how many of the newest messages are sent as they are.
    pub keep_newest: usize,
}

impl Default for RawSessions {
    fn default() -> RawSessions {
        RawSessions {
            max_context_tokens: None,
            idle_timeout: Duration::from_secs(30 * 60),
            overflow: SessionOverflow::SlidingWindow,
            keep_newest: 8,
        }
    }
}

/// `[sessions] overflow`: what happens to messages that no longer fit the context budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionOverflow {
    /// Leave the oldest messages out.
    #[default]
    SlidingWindow,
    /// Replace them with a summary the model writes (once per window position).
    Summarize,
    /// Keep the newest `keep_newest` messages (within the budget) and summarize everything older,
    /// even when it would fit.
    Hybrid,
    /// Refuse the request with 400.
    Error,
}

/// How streamed structured answers are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardStream {
    /// Buffer, validate, then re-stream.
    Buffer,
    /// Relay unchecked.
    Passthrough,
}

/// `[retry]`: trying again after every target failed, before anything reached the client.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    /// Extra rounds over the route's targets after the first round failed (0 = no retries).
    pub attempts: u32,
    /// Base of the exponential backoff between rounds (full jitter: a random wait up to
    /// `backoff × 2^(round−1)`).
    #[serde(with = "keel_types::duration")]
    pub backoff: Duration,
    /// Cap of the backoff.
    #[serde(with = "keel_types::duration")]
    pub backoff_max: Duration,
    /// Retries allowed as a share of recent requests (the retry budget): retries never add more
    /// than this fraction of load to servers that are already failing.
    pub budget_ratio: f64,
    /// Retries per second always allowed, even with little traffic.
    pub budget_min_per_second: u32,
    /// Default deadline of a request; a client can ask for less with `X-Keel-Deadline: 30s`.
    /// No attempt starts, and no attempt waits, past it.
    #[serde(with = "keel_types::duration")]
    pub deadline: Duration,
}

impl Default for RawRetry {
    fn default() -> RawRetry {
        RawRetry {
            attempts: 1,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            deadline: Duration::from_secs(600),
        }
    }
}

/// `[auth]`: API keys clients present as `Authorization: Bearer <key>`, and whether model
/// management may pass at all.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// The accepted keys (none: no key is required).
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// Let model management (`/api/pull`, `/api/push`, `/api/create`, `/api/copy`,
    /// `/api/delete`, `/api/blobs/*`, Ollama's account routes) through; with keys, only for keys
    /// with the `admin` or `models` scope. Closed by default.
    #[serde(default)]
    pub allow_model_management: bool,
}

/// One API key. The secret itself never sits in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Who holds the key (shown in logs, never the key itself).
    pub name: String,
    /// Environment variable holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// File holding the key (first line, trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// `inference` (model endpoints), `admin` (`/keel/*` admin API, `/metrics`, and model
    /// management when it is allowed) and/or `models` (model management only).
    pub scopes: Vec<String>,
    /// This key's own requests per minute, instead of `[limits] requests_per_minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// This key's own tokens per minute, instead of `[limits] tokens_per_minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// `interactive`, `normal` (the default) or `batch`: its place in admission queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// `[limits]`: rate limits for every key (per client address when there are no keys); a key's
/// own `requests_per_minute` / `tokens_per_minute` replace these.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Requests per minute per key; 0: no limit.
    pub requests_per_minute: u64,
    /// Tokens (prompt and answer) per minute per key; 0: no limit.
    pub tokens_per_minute: u64,
    /// `redis://…` to share the limits between keel instances; unset: this keel only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// When the shared store cannot be reached: `open` lets requests through, `closed` refuses
    /// them with 503.
    pub on_store_error: OnStoreError,
}

impl Default for RawLimits {
    fn default() -> RawLimits {
        RawLimits { requests_per_minute: 0, tokens_per_minute: 0, store: None, on_store_error: OnStoreError::Open }
    }
}

/// `[admission]`: a concurrency limit per `upstream:model` with a bounded queue in front of it
/// (priorities, fair share between keys, aging), and shedding with 503 + `Retry-After`. Present,
/// even empty, turns admission on with these defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmission {
    /// Requests served at once per `upstream:model` (set it to the server's
    /// `OLLAMA_NUM_PARALLEL`).
    pub max_concurrent: usize,
    /// Requests waiting per `upstream:model`; more are shed at once. 0: no queue.
    pub max_queue: usize,
    /// The longest a request waits for a slot before it is shed.
    #[serde(with = "keel_types::duration")]
    pub max_wait: Duration,
    /// Requests served at once by all models of one upstream together; unset: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_max_concurrent: Option<usize>,
    /// Waiting this long raises a request one priority level (batch → normal → interactive).
    #[serde(with = "keel_types::duration")]
    pub aging: Duration,
}

impl Default for RawAdmission {
    fn default() -> RawAdmission {
        let settings = keel_admission::Settings::default();
        RawAdmission {
            max_concurrent: settings.max_concurrent,
            max_queue: settings.max_queue,
            max_wait: settings.max_wait,
            upstream_max_concurrent: settings.upstream_max_concurrent,
            aging: settings.aging,
        }
    }
}

/// What rate limiting does while its shared store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Let requests through (and count it).
    Open,
    /// Refuse requests with 503 until the store answers.
    Closed,
}

/// `[log]`: log lines on stderr.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: String,
    /// Filter in `RUST_LOG` syntax, e.g. `info` or `keel_gateway=debug,info`.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> RawLog {
        RawLog { format: "text".into(), level: "info".into() }
    }
}

impl SessionOverflow {
    /// The config spelling, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionOverflow::SlidingWindow => "sliding_window",
            SessionOverflow::Summarize => "summarize",
            SessionOverflow::Hybrid => "hybrid",
            SessionOverflow::Error => "error",
        }
    }
}
