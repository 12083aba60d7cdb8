//! Configuration: `keel.toml`, then `KEEL_*` environment variables, then command-line flags.
//!
//! The file is read into [`raw::RawConfig`] (unknown keys rejected, every default documented),
//! overrides are applied, and [`Config::from_raw`] validates it into the runtime [`Config`].
//! [`template::DEFAULT_CONFIG`] is the fully commented file `keel init` writes.

pub mod raw;
pub mod template;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_types::{Dialect, TargetId};

pub use raw::RawConfig;

/// A configuration that cannot be used, with the reason and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key, line and column.
        message: String,
    },
    /// A value is out of range or inconsistent with the rest.
    #[error("invalid configuration{}: {message}", source_suffix(.path))]
    Invalid {
        /// The file, if the value came from one.
        path: Option<PathBuf>,
        /// What is wrong and how to fix it.
        message: String,
    },
}

fn source_suffix(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
}

/// Values given on the command line or in `KEEL_*` variables; each replaces the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `KEEL_LISTEN`.
    pub listen: Option<String>,
    /// `--upstream` / `KEEL_UPSTREAM`: replaces all upstreams and routes with one Ollama upstream
    /// named `default` and a route `"*"` to it.
    pub upstream: Option<String>,
    /// `--store` / `KEEL_STORE`.
    pub store: Option<String>,
    /// `--log-format` / `KEEL_LOG_FORMAT`.
    pub log_format: Option<String>,
    /// `--log-level` / `KEEL_LOG`.
    pub log_level: Option<String>,
}

/// The validated runtime configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Listening and request limits.
    pub server: ServerConfig,
    /// The store URL (sessions, incidents, checkpoints).
    pub store_url: String,
    /// Model servers, in declaration order.
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes, in declaration order; the `"*"` route (if any) is used for unmatched names.
    pub routes: Vec<RouteConfig>,
    /// Breaker settings (validated).
    pub breaker: keel_breaker::BreakerConfig,
    /// Retries between rounds over a route's targets.
    pub retry: raw::RawRetry,
    /// Structured-output guard.
    pub guard: GuardConfig,
    /// Durable sessions.
    pub sessions: raw::RawSessions,
    /// API keys; `None` means no authentication.
    pub auth: Option<AuthConfig>,
    /// Rate limits (`[limits]`).
    pub limits: raw::RawLimits,
    /// Admission control (`[admission]`): concurrency limits and queues per `upstream:model`;
    /// `None` (no `[admission]` section): off.
    pub admission: Option<keel_admission::Settings>,
    /// Who may reach keel and do what, whatever the key: model management, hosts, origins.
    pub access: AccessConfig,
    /// Log format and filter.
    pub log: LogConfig,
    /// Traces: where they go (from the environment) and what they carry (`[tracing]`).
    pub tracing: TracingConfig,
    /// Incidents, runbooks and notifications (`[incidents]`, `[[notify]]`).
    pub incidents: IncidentsConfig,
}

/// Incidents, runbooks and notifications, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentsConfig {
    /// Whether incidents are recorded (and jobs run).
    pub enabled: bool,
    /// The model route that writes runbooks; `None`: the template only.
    pub model: Option<String>,
    /// Where runbook files go; `None`: the store only.
    pub runbook_dir: Option<PathBuf>,
    /// How long a claimed job is held.
    pub job_lease: Duration,
    /// The first wait before a model runbook is tried again.
    pub model_retry: Duration,
    /// The webhook receivers, in order.
    pub notify: Vec<keel_incident::notify::Endpoint>,
    /// When bursts of failures open and end incidents.
    pub bursts: keel_incident::bursts::BurstRule,
}

/// Where traces go and what they carry.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Prompts and answers on model-call spans (`[tracing] content`).
    pub content: bool,
    /// Destinations named by `OTEL_*` / `LANGFUSE_*`; empty: tracing is off.
    pub exports: Vec<keel_telemetry::traces::TraceExport>,
    /// The `OTEL_BSP_*` batching settings.
    pub batching: keel_telemetry::traces::Batching,
    /// Why the environment's trace destination cannot be used (keel then serves without traces).
    pub problem: Option<String>,
}

/// `[server]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body, in bytes.
    pub max_request_body: usize,
    /// Largest non-streamed answer read whole, in bytes.
    pub max_buffered_answer: usize,
    /// Bound on graceful shutdown.
    pub shutdown_grace: Duration,
    /// Serving threads (at least 1; `workers = 0` in the file means one per CPU core).
    pub workers: usize,
    /// Longest a request's headers may take from their first byte; zero: no limit.
    pub header_timeout: Duration,
    /// Longest a kept-alive connection stays open with nothing in hand; zero: no limit.
    pub idle_timeout: Duration,
    /// The most client connections kept open; 0: half the open-file limit.
    pub max_connections: usize,
    /// Longest wait for a body keel reads whole.
    pub body_timeout: Duration,
    /// keel listens off loopback with no `[auth]` keys and without `allow_remote_without_auth`:
    /// it may serve only when its store holds API keys (`keel keys create`), which `keel serve`
    /// checks once the store is open ([`Config::unprotected_listen`] says why it refuses).
    pub needs_stored_keys: bool,
}

/// One upstream, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Unique name.
    pub name: String,
    /// Where it is and which API it speaks.
    pub upstream: keel_upstream::Upstream,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time to response head.
    pub response_timeout: Duration,
    /// Longest silence inside a streamed body.
    pub idle_timeout: Duration,
    /// Health probe interval; zero means no probing.
    pub health_interval: Duration,
    /// Pass `format` / `response_format` on to this server.
    pub forward_format: bool,
    /// Its own `max_concurrent` for admission, if set.
    pub max_concurrent: Option<usize>,
    /// Requests to it leave the premises (used only by routes with `allow_remote`).
    pub remote: bool,
    /// Tokens it may spend per day (UTC); 0: no cap.
    pub tokens_per_day: u64,
}

/// One route, validated: every target names a declared upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// The requested model name, or `"*"`.
    pub model: String,
    /// Targets in fallback order.
    pub targets: Vec<TargetId>,
    /// Prefer targets whose upstream has the model loaded.
    pub prefer_loaded: bool,
    /// Schema for structured answers when the request sends none (`format: "json"`).
    pub schema: Option<Arc<serde_json::Value>>,
    /// The canned answer of last resort for structured requests (valid against `schema`).
    pub canned: Option<Arc<serde_json::Value>>,
    /// Requests per minute per key on this route (0: none).
    pub requests_per_minute: u64,
    /// Tokens per minute per key on this route (0: none).
    pub tokens_per_minute: u64,
    /// Remote upstreams may answer this route's requests (after its local targets).
    pub allow_remote: bool,
}

/// `[guard]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Validate and repair structured answers at all.
    pub enabled: bool,
    /// Re-asks of the same target before the next one.
    pub reasks: u32,
    /// Buffer and validate streamed structured answers (otherwise they are relayed unchecked).
    pub buffer_streams: bool,
    /// Largest answer buffered for validation, in bytes.
    pub max_answer_bytes: usize,
}

/// What keel lets through whatever the key (`[auth] allow_model_management`, `[server]
/// allowed_hosts` and `cors_origins`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessConfig {
    /// Model management passes (to keys with the `admin` or `models` scope, when keys are set).
    pub allow_model_management: bool,
    /// Extra host names clients may use, lowercase (`"*"`: any).
    pub allowed_hosts: Vec<String>,
    /// Extra browser origins allowed, lowercase (`"*"`: any; a trailing `:*`: any port).
    pub cors_origins: Vec<String>,
    /// The listen address as a `Host` header names it (`127.0.0.1:11435`): allowed at a glance.
    pub listen_authority: String,
}

/// `[auth]`, validated, with the secrets resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// The accepted keys.
    pub keys: Vec<ApiKey>,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Model endpoints (`/api/*`, `/v1/*`, `/`).
    Inference,
    /// The admin API (`/keel/*` except health), `/metrics`, and model management when allowed.
    Admin,
    /// Model management only (`/api/pull`, `/api/create`, …), when allowed.
    Models,
    /// Posting events only (`POST /keel/events`, `/keel/events/alertmanager`).
    Events,
}

impl Scope {
    /// The scope a key's config or store entry names (`inference`, `admin`, `models`, `events`).
    pub fn parse(name: &str) -> Option<Scope> {
        match name {
            "inference" => Some(Scope::Inference),
            "admin" => Some(Scope::Admin),
            "models" => Some(Scope::Models),
            "events" => Some(Scope::Events),
            _ => None,
        }
    }
}

/// One API key with its secret resolved from the environment or a file.
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    /// Who holds it.
    pub name: String,
    /// The secret; never logged.
    pub secret: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Its own limits and priority, where it has them.
    pub limits: KeyLimits,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A key's own rate limits and admission priority; `None` takes the `[limits]` default (or
/// `normal` priority).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Place in admission queues.
    pub priority: Option<keel_admission::Priority>,
}

/// `[log]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: keel_telemetry::LogFormat,
    /// `RUST_LOG`-style filter.
    pub level: String,
}

impl Config {
    /// Reads and validates a config file, applying overrides. `env` resolves `key_env` secrets.
    pub fn load(
        path: &Path,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let raw = RawConfig::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?;
        Config::from_raw(raw, Some(path.to_owned()), overrides, env)
    }

    /// The `[auth]` keys (none without `[auth]`).
    pub fn api_keys(&self) -> &[ApiKey] {
        self.auth.as_ref().map_or(&[], |auth| &auth.keys)
    }

    /// The configuration used when no file is given: defaults plus overrides.
    pub fn without_file(overrides: &Overrides, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::from_raw(RawConfig::default(), None, overrides, env)
    }

    /// Applies overrides to a raw config and validates it.
    pub fn from_raw(
        mut raw: RawConfig,
        source: Option<PathBuf>,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        apply_overrides(&mut raw, overrides);
        let invalid = |message: String| ConfigError::Invalid { path: source.clone(), message };

        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            invalid(format!("[server] listen = {:?} is not an address like \"127.0.0.1:11435\"", raw.server.listen))
        })?;
        let max_request_body =
            parse_size(&raw.server.max_request_body).map_err(|e| invalid(format!("[server] max_request_body: {e}")))?;
        let max_buffered_answer = parse_size(&raw.server.max_buffered_answer)
            .map_err(|e| invalid(format!("[server] max_buffered_answer: {e}")))?;

        if raw.upstream.is_empty() {
            raw.upstream.push(default_upstream("http://127.0.0.1:11434"));
        }
        let mut upstreams = Vec::with_capacity(raw.upstream.len());
        for up in &raw.upstream {
            if up.name.is_empty() || up.name.contains(':') {
                return Err(invalid(format!(
                    "[[upstream]] name {:?} must be non-empty and contain no ':' (routes write \"name:model\")",
                    up.name
                )));
            }
            if upstreams.iter().any(|u: &UpstreamConfig| u.name == up.name) {
                return Err(invalid(format!("[[upstream]] name {:?} is declared twice", up.name)));
            }
            upstreams.push(upstream::resolve(up, source.as_deref(), env).map_err(invalid)?);
        }

        if raw.route.is_empty() {
            raw.route.push(raw::RawRoute {
                model: "*".into(),
                targets: vec![upstreams[0].name.clone()],
                ..Default::default()
            });
        }
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.route.len());
        for route in &raw.route {
            if route.model.is_empty() {
                return Err(invalid("[[route]] model must not be empty (use \"*\" for any model)".into()));
            }
            if routes.iter().any(|r| r.model == route.model) {
                return Err(invalid(format!("[[route]] model {:?} is routed twice", route.model)));
            }
            if route.targets.is_empty() {
                return Err(invalid(format!("[[route]] {:?} has no targets", route.model)));
            }
            let mut targets = Vec::with_capacity(route.targets.len());
            for text in &route.targets {
                let target = TargetId::parse(text).map_err(|e| invalid(format!("[[route]] {:?}: {e}", route.model)))?;
                if !upstreams.iter().any(|u| u.name == target.upstream) {
                    let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                    return Err(invalid(format!(
                        "[[route]] {:?}: target {text:?} names upstream {:?}, which is not declared (declared: {})",
                        route.model,
                        target.upstream,
                        known.join(", ")
                    )));
                }
                targets.push(target);
            }
            let (schema, canned) = structured_route(route, source.as_deref()).map_err(invalid)?;
            routes.push(RouteConfig {
                model: route.model.clone(),
                targets,
                prefer_loaded: route.prefer_loaded,
                schema,
                canned,
                requests_per_minute: route.requests_per_minute,
                tokens_per_minute: route.tokens_per_minute,
                allow_remote: route.allow_remote,
            });
        }

        raw.breaker.validate().map_err(|e| invalid(format!("[breaker] {e}")))?;
        if !(0.0..=10.0).contains(&raw.retry.budget_ratio) {
            return Err(invalid(format!(
                "[retry] budget_ratio = {} must be between 0 and 10 (0.2 = retries may add 20% load)",
                raw.retry.budget_ratio
            )));
        }
        if raw.server.body_timeout.is_zero() {
            return Err(invalid("[server] body_timeout must be longer than zero, e.g. \"60s\"".into()));
        }
        if raw.retry.deadline.is_zero() {
            return Err(invalid("[retry] deadline must be longer than zero".into()));
        }

        let auth = match &raw.auth {
            Some(auth) if !auth.keys.is_empty() || !auth.allow_model_management => {
                Some(resolve_auth(auth, env).map_err(invalid)?)
            }
            _ => None,
        };
        let lowercase = |names: &[String]| names.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
        let access = AccessConfig {
            allow_model_management: raw.auth.as_ref().is_some_and(|a| a.allow_model_management),
            allowed_hosts: lowercase(&raw.server.allowed_hosts),
            cors_origins: lowercase(&raw.server.cors_origins),
            listen_authority: listen.to_string(),
        };
        // Off loopback without [auth] keys, keys kept in the store (`keel keys`) must exist: checked
        // by `keel serve` once the store is open.
        let needs_stored_keys = auth.is_none() && !listen.ip().is_loopback() && !raw.server.allow_remote_without_auth;

        let guard = GuardConfig {
            enabled: raw.guard.enabled,
            reasks: raw.guard.reasks,
            buffer_streams: raw.guard.stream == raw::GuardStream::Buffer,
            max_answer_bytes: parse_size(&raw.guard.max_answer)
                .map_err(|e| invalid(format!("[guard] max_answer: {e}")))?,
        };
        if raw.guard.reasks > 10 {
            return Err(invalid(format!("[guard] reasks = {} is more than 10; 1 or 2 is usual", raw.guard.reasks)));
        }

        let format = raw.log.format.parse().map_err(|e: String| invalid(format!("[log] format: {e}")))?;
        validate_store_url(&raw.store.url).map_err(invalid)?;
        if let Some(url) = &raw.limits.store
            && !url.starts_with("redis://")
            && !url.starts_with("rediss://")
        {
            return Err(invalid(format!(
                "[limits] store = {url:?}: limits are shared through Redis only; use redis://HOST:PORT, or remove the setting to keep limits in this keel"
            )));
        }

        let admission = raw.admission.as_ref().map(admission_settings).transpose().map_err(invalid)?;
        // A trace destination keel cannot use does not stop keel: it serves without traces and
        // says why at start-up (and `keel doctor` reports it).
        let (trace_exports, trace_problem) = match keel_telemetry::traces::TraceExport::from_env(env) {
            Ok(exports) => (exports, None),
            Err(err) => (Vec::new(), Some(err.to_string())),
        };

        let incidents = incidents_config(&raw, source.as_deref(), env).map_err(invalid)?;

        Ok(Config {
            source,
            server: ServerConfig {
                listen,
                max_request_body,
                max_buffered_answer,
                shutdown_grace: raw.server.shutdown_grace,
                workers: match raw.server.workers {
                    0 => std::thread::available_parallelism().map_or(1, usize::from),
                    n => n,
                },
                header_timeout: raw.server.header_timeout,
                idle_timeout: raw.server.idle_timeout,
                max_connections: raw.server.max_connections,
                body_timeout: raw.server.body_timeout,
                needs_stored_keys,
            },
            store_url: raw.store.url,
            upstreams,
            routes,
            breaker: raw.breaker,
            retry: raw.retry,
            guard,
            sessions: raw.sessions,
            auth,
            limits: raw.limits,
            admission,
            access,
            log: LogConfig { format, level: raw.log.level },
            tracing: TracingConfig {
                content: raw.tracing.content,
                exports: trace_exports,
                problem: trace_problem,
                batching: keel_telemetry::traces::Batching::from_env(env),
            },
            incidents,
        })
    }

    /// The upstream with this name.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Why keel refuses to serve when [`ServerConfig::needs_stored_keys`] holds and the store has
    /// no API keys either: what it would expose and the three ways out.
    pub fn unprotected_listen(&self) -> String {
        format!(
            "listening on {} with no API keys would let anyone on the network use your models. \
             Create a key (`keel keys create NAME`, kept in the store {}) or add an [auth] section with keys, \
             listen on 127.0.0.1, or set [server] allow_remote_without_auth = true",
            self.server.listen, self.store_url
        )
    }

    /// The deployment as runbooks describe it: keel's address, the upstreams and the routes.
    pub fn deployment(&self) -> keel_incident::runbook::Deployment {
        use keel_incident::runbook::{Deployment, RouteFacts, UpstreamFacts};
        let listen = self.server.listen;
        let host = match listen.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            ip if ip.is_ipv6() => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        Deployment {
            keel_url: format!("http://{host}:{}", listen.port()),
            upstreams: self
                .upstreams
                .iter()
                .map(|up| UpstreamFacts {
                    name: up.name.clone(),
                    address: up.upstream.base_url().to_owned(),
                    kind: up.upstream.dialect.as_str().to_owned(),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|route| RouteFacts {
                    model: route.model.clone(),
                    targets: route.targets.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        }
    }
}

/// `[incidents]` and `[[notify]]`, checked: the runbook model has a route, receivers are
/// `http://` URLs, secrets are set and well formed.
fn incidents_config(
    raw: &RawConfig,
    config_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IncidentsConfig, String> {
    let incidents = &raw.incidents;
    if let Some(model) = &incidents.model
        && !raw.route.iter().any(|route| route.model == *model || route.model == "*")
    {
        let names: Vec<&str> = raw.route.iter().map(|route| route.model.as_str()).collect();
        return Err(format!(
            "[incidents] model = {model:?} has no [[route]] (routes: {}); add a route for it or name one of those",
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        ));
    }
    let runbook_dir = match incidents.runbook_dir.as_str() {
        "" => None,
        dir => Some(beside_config(config_file, dir)),
    };
    let mut notify = Vec::with_capacity(raw.notify.len());
    for (index, receiver) in raw.notify.iter().enumerate() {
        let which = format!("[[notify]] {} (url = {:?})", index + 1, receiver.url);
        match receiver.url.parse::<http::Uri>() {
            Ok(url) if matches!(url.scheme_str(), Some("http" | "https")) && url.host().is_some() => {}
            _ => return Err(format!("{which}: not an http:// or https:// URL")),
        }
        let ca = match &receiver.ca_file {
            None => Vec::new(),
            Some(file) => {
                let path = beside_config(config_file, file);
                keel_outbound::pem_certificates(&path)
                    .map_err(|e| format!("{which}: ca_file {}: {e}", path.display()))?
            }
        };
        let secret = match &receiver.secret_env {
            None => None,
            Some(var) => {
                let value =
                    env(var).ok_or_else(|| format!("{which}: secret_env = {var:?} is not set in the environment"))?;
                Some(keel_incident::webhook::Secret::parse(&value).map_err(|e| format!("{which}: {var}: {e}"))?)
            }
        };
        notify.push(keel_incident::notify::Endpoint { url: receiver.url.clone(), format: receiver.format, secret, ca });
    }
    Ok(IncidentsConfig {
        enabled: incidents.enabled,
        model: incidents.model.clone(),
        runbook_dir,
        job_lease: incidents.job_lease,
        model_retry: incidents.model_retry,
        notify,
        bursts: keel_incident::bursts::BurstRule {
            threshold: incidents.burst_threshold.max(1),
            quiet: incidents.burst_quiet,
        },
    })
}

/// A route's structured-output schema (inline or read from a file beside the config) and canned
/// answer, the canned answer checked against the schema now rather than when it is needed.
type Structured = (Option<Arc<serde_json::Value>>, Option<Arc<serde_json::Value>>);

fn structured_route(route: &raw::RawRoute, config_file: Option<&Path>) -> Result<Structured, String> {
    let name = &route.model;
    let schema = match &route.schema {
        None => None,
        Some(serde_json::Value::String(path)) => {
            let path = beside_config(config_file, path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("[[route]] {name:?}: cannot read schema file {}: {e}", path.display()))?;
            let value = serde_json::from_str(&text)
                .map_err(|e| format!("[[route]] {name:?}: schema file {} is not JSON: {e}", path.display()))?;
            Some(value)
        }
        Some(value @ serde_json::Value::Object(_)) => Some(value.clone()),
        Some(_) => return Err(format!("[[route]] {name:?}: schema must be a table or a path to a .json file")),
    };
    if let (Some(schema), canned) = (&schema, &route.canned) {
        let compiled = keel_repair::CompiledSchema::compile(schema)
            .map_err(|e| format!("[[route]] {name:?}: schema is not a valid JSON Schema: {e}"))?;
        if let Some(canned) = canned {
            let problems = compiled.problems(canned, 8);
            if !problems.is_empty() {
                return Err(format!(
                    "[[route]] {name:?}: canned answer does not match the route's schema: {}",
                    problems.join("; ")
                ));
            }
        }
    }
    Ok((schema.map(Arc::new), route.canned.clone().map(Arc::new)))
}

impl RawConfig {
    /// Parses TOML text; the error names the offending key with its line and column.
    pub fn parse(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }
}

/// A path from the config file: relative ones are relative to the file's folder.
pub(crate) fn beside_config(config_file: Option<&Path>, path: &str) -> PathBuf {
    let path = Path::new(path);
    match config_file.and_then(Path::parent) {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_owned(),
    }
}

fn default_upstream(url: &str) -> raw::RawUpstream {
    raw::RawUpstream {
        name: "default".into(),
        url: url.into(),
        dialect: Dialect::Ollama,
        connect_timeout: raw::default_connect_timeout(),
        response_timeout: raw::default_response_timeout(),
        idle_timeout: raw::default_idle_timeout(),
        health_interval: raw::default_health_interval(),
        forward_format: true,
        max_concurrent: None,
        api_key_env: None,
        api_key_file: None,
        headers: Default::default(),
        headers_env: Default::default(),
        ca_file: None,
        remote: None,
        tokens_per_day: 0,
    }
}

fn apply_overrides(raw: &mut RawConfig, overrides: &Overrides) {
    if let Some(listen) = &overrides.listen {
        raw.server.listen.clone_from(listen);
    }
    if let Some(url) = &overrides.upstream {
        raw.upstream = vec![default_upstream(url)];
        raw.route = vec![raw::RawRoute { model: "*".into(), targets: vec!["default".into()], ..Default::default() }];
    }
    if let Some(store) = &overrides.store {
        raw.store.url.clone_from(store);
    }
    if let Some(format) = &overrides.log_format {
        raw.log.format.clone_from(format);
    }
    if let Some(level) = &overrides.log_level {
        raw.log.level.clone_from(level);
    }
}

fn resolve_auth(auth: &raw::RawAuth, env: &dyn Fn(&str) -> Option<String>) -> Result<AuthConfig, String> {
    if auth.keys.is_empty() {
        return Err(
            "[auth] has no keys: add keys, or remove the [auth] section (or keep only allow_model_management in it)"
                .into(),
        );
    }
    let mut keys = Vec::with_capacity(auth.keys.len());
    for key in &auth.keys {
        let secret = match (&key.key_env, &key.key_file) {
            (Some(var), None) => env(var).ok_or_else(|| {
                format!(
                    "[auth] key {:?}: environment variable {var} is not set (export it before starting keel)",
                    key.name
                )
            })?,
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| format!("[auth] key {:?}: cannot read key_file {file:?}: {e}", key.name))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            _ => return Err(format!("[auth] key {:?}: give exactly one of key_env or key_file", key.name)),
        };
        let secret = secret.trim().to_owned();
        if secret.len() < 8 {
            return Err(format!("[auth] key {:?}: the key must be at least 8 characters long", key.name));
        }
        let mut scopes = Vec::new();
        for scope in &key.scopes {
            scopes.push(Scope::parse(scope).ok_or_else(|| {
                format!(
                    "[auth] key {:?}: unknown scope {scope:?} (use \"inference\", \"admin\", \"models\" and/or \"events\")",
                    key.name
                )
            })?);
        }
        let priority = match &key.priority {
            None => None,
            Some(priority) => Some(priority.parse().map_err(|_| {
                format!(
                    "[auth] key {:?}: unknown priority {priority:?} (use \"interactive\", \"normal\" or \"batch\")",
                    key.name
                )
            })?),
        };
        let limits = KeyLimits {
            requests_per_minute: key.requests_per_minute,
            tokens_per_minute: key.tokens_per_minute,
            priority,
        };
        keys.push(ApiKey { name: key.name.clone(), secret, scopes, limits });
    }
    Ok(AuthConfig { keys })
}

/// `[admission]` as keel-admission's settings, checked: the error names the key and what to write.
fn admission_settings(raw: &raw::RawAdmission) -> Result<keel_admission::Settings, String> {
    let settings = keel_admission::Settings {
        max_concurrent: raw.max_concurrent,
        max_queue: raw.max_queue,
        max_wait: raw.max_wait,
        upstream_max_concurrent: raw.upstream_max_concurrent,
        aging: raw.aging,
    };
    settings.validate().map_err(|e| e.to_string())?;
    if settings.max_queue > 0 && settings.max_wait.is_zero() {
        return Err(format!(
            "[admission] max_wait is 0 while max_queue = {}, so every queued request would be shed at once: write a duration such as \"30s\", or max_queue = 0 for no queue",
            settings.max_queue
        ));
    }
    Ok(settings)
}

fn validate_store_url(url: &str) -> Result<(), String> {
    let ok = ["sqlite://", "postgres://", "postgresql://", "redis://"].iter().any(|p| url.starts_with(p));
    if ok && url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty()) {
        Ok(())
    } else {
        Err(format!("[store] url = {url:?}: use sqlite://FILE, postgres://… or redis://…"))
    }
}

/// Parses a byte size such as `"32MiB"`, `"512KiB"`, `"1GB"` or `"4096"`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits.parse().map_err(|_| format!("{text:?} is not a size like \"32MiB\""))?;
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?} (use B, KiB, MiB or GiB)")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests;
