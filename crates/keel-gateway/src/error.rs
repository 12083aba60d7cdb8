//! Errors keel itself answers with, each with its status and a message saying what to do.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use keel_types::Dialect;
use keel_upstream::{ErrorBody, UpstreamError, WireError};

/// A request keel answers itself instead of relaying an upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The body is larger than `[server] max_request_body`.
    #[error(
        "request body is larger than the {limit}-byte limit; send a smaller body or raise [server] max_request_body in keel.toml"
    )]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read from the client.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The request body did not arrive within `[server] body_timeout`.
    #[error(
        "the request body did not arrive within {} ([server] body_timeout); send it at once, or raise the setting for slow links",
        keel_types::duration::format(*limit)
    )]
    BodyTimeout {
        /// The configured limit.
        limit: std::time::Duration,
    },
    /// The body is empty or not a JSON object.
    #[error("{0}")]
    BadBody(#[from] WireError),
    /// The body names no model.
    #[error("model is required")]
    ModelRequired,
    /// No route matches the model and there is no `"*"` route.
    #[error("model '{0}' not found")]
    NoRoute(String),
    /// The upstream could not be reached or did not answer in time.
    #[error("{}", .0.client_message())]
    Upstream(UpstreamError),
    /// Every target of the route is out: breakers open, unreachable, or failing.
    #[error(
        "no target can answer for model '{model}' right now: {}. Retry after {}s; `keel status` shows each target",
        .reasons.join("; "),
        retry_after_secs(*.retry_after)
    )]
    AllTargetsUnavailable {
        /// The requested model.
        model: String,
        /// Each target and why it is out.
        reasons: Vec<String>,
        /// When the first open breaker admits a probe again.
        retry_after: std::time::Duration,
    },
    /// An Ollama request could not be translated for an OpenAI-dialect upstream.
    #[error("{0}")]
    Translate(keel_upstream::translate::TranslateError),
    /// No target gave a structured answer that is (or could be repaired to be) valid.
    #[error(
        "no valid structured output for model '{model}' after {attempts} attempt(s): {}. \
         Simplify the schema, raise [guard] reasks, or set a canned answer on the route",
        .problems.join("; ")
    )]
    InvalidOutput {
        /// The requested model.
        model: String,
        /// Upstream calls made.
        attempts: u32,
        /// What was wrong with each answer (or why a target gave none).
        problems: Vec<String>,
    },
    /// The request's `format` / `response_format` schema is not a JSON Schema.
    #[error("the structured-output schema in the request is invalid: {0}")]
    BadSchema(String),
    /// `X-Keel-Deadline` is malformed.
    #[error(
        "{0}: send a positive duration such as \"30s\", \"1500ms\" or \"2.5\" (seconds); it can only shorten [retry] deadline"
    )]
    BadDeadline(String),
    /// `X-Keel-Priority` is not a priority.
    #[error(
        "{0}: send X-Keel-Priority: interactive, normal or batch (it can lower an API key's own priority, never raise it)"
    )]
    BadPriority(String),
    /// Every target the request could go to shed it ([admission]): queue full, the wait would
    /// pass `max_wait`, or the client's deadline cannot be met.
    #[error(
        "every target for model '{model}' is at its admission limit: {}. Retry after {}s; if this is the normal load, raise [admission] max_concurrent (if the server has spare capacity) or max_queue, or add an upstream",
        .reasons.join("; "),
        retry_after_secs(*.retry_after)
    )]
    Overloaded {
        /// The requested model.
        model: String,
        /// Each target and why it shed the request.
        reasons: Vec<String>,
        /// When the queues ahead are expected to have drained.
        retry_after: std::time::Duration,
    },
    /// The session headers are malformed or used on an endpoint without sessions.
    #[error("{0}")]
    BadSession(String),
    /// The session was started with another API key, and this key may not use it.
    #[error(
        "session '{id}' belongs to API key '{owner}'; use a session id of your own, or send the request with that key (or one with the 'admin' scope)"
    )]
    SessionOfAnotherKey {
        /// The session's id.
        id: String,
        /// The name of the key that owns it.
        owner: String,
    },
    /// The request names a session but keel runs without a store.
    #[error("this keel runs without a session store, so X-Keel-Session cannot be used; set [store] url")]
    NoStore,
    /// The session store failed.
    #[error("the session store is unavailable: {0}; retry the request")]
    Store(String),
    /// A managed session's context exceeds the budget and `[sessions] overflow = "error"`.
    #[error(
        "the session's context (~{tokens} tokens) exceeds [sessions] max_context_tokens = {budget}; start a new session, raise the limit, or set overflow = \"sliding_window\" or \"summarize\""
    )]
    ContextTooLong {
        /// Estimated tokens of the whole conversation.
        tokens: u64,
        /// The configured budget.
        budget: u64,
    },
    /// A `/keel/...` path that is none of keel's own endpoints (never forwarded upstream).
    #[error("keel has no endpoint {method} {path}; its own endpoints are: {}", crate::endpoint::KEEL_ENDPOINTS.join(", "))]
    NoKeelEndpoint {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The request's headers are larger than keel takes.
    #[error(
        "the request's headers are {size} bytes, more than keel's limit of {limit}; send fewer or smaller headers (large data belongs in the body)"
    )]
    HeadersTooLarge {
        /// Bytes of header names and values.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The connection came beyond `[server] max_connections` with none idle to close.
    #[error(
        "keel has {max} client connections open, its limit ([server] max_connections), and none is idle; retry shortly, or raise the limit (and the open-file limit)"
    )]
    AtConnectionLimit {
        /// The limit.
        max: usize,
    },
    /// A rate limit (`[limits]` or the key's own) is used up for now.
    #[error(
        "{who} has used up its {limit} {unit} per minute ({setting}); retry in {}s, or raise {setting} in keel.toml",
        retry_after_secs(*retry_after)
    )]
    RateLimited {
        /// The key (`key 'agent'`) or client (`client 10.0.0.7`) limited.
        who: String,
        /// `requests` or `tokens`.
        unit: &'static str,
        /// The limit per minute.
        limit: u64,
        /// When the request would fit.
        retry_after: std::time::Duration,
        /// When the whole budget is back.
        reset: std::time::Duration,
        /// The setting that set the limit.
        setting: &'static str,
    },
    /// The request alone needs more tokens than a whole minute's budget: it can never pass.
    #[error(
        "this request needs about {needed} tokens (prompt and answer), more than the {limit} tokens per minute {who} may use ({setting}); it can never pass as it is: send a shorter prompt or a smaller num_predict / max_tokens, or raise {setting} in keel.toml"
    )]
    OverTokenBudget {
        /// The key or client limited.
        who: String,
        /// The request's estimated tokens.
        needed: u64,
        /// The limit per minute.
        limit: u64,
        /// The setting that set the limit.
        setting: &'static str,
    },
    /// The shared rate-limit store cannot be reached and `[limits] on_store_error = "closed"`.
    #[error(
        "keel cannot check rate limits because their store cannot be reached ({problem}); with [limits] on_store_error = \"closed\" requests are refused until it answers: start Redis again, or set on_store_error = \"open\""
    )]
    LimitStoreDown {
        /// What went wrong.
        problem: String,
    },
    /// keel's shutdown grace ran out before the answer came.
    #[error("keel is shutting down; retry the request")]
    ShuttingDown,
    /// No or an unknown API key.
    #[error(
        "missing or invalid API key: send `Authorization: Bearer <key>` (or `X-API-Key: <key>`) with a key from keel.toml [auth] or `keel keys create`"
    )]
    Unauthorized,
    /// Model management while `[auth] allow_model_management` is off.
    #[error(
        "model management ({method} {path}) is closed on this keel: set allow_model_management = true under [auth] in keel.toml to open it (with keys, only keys with the 'admin' or 'models' scope may then use it)"
    )]
    ModelManagementClosed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// A `Host` that is not keel's (a DNS-rebinding guard).
    #[error(
        "keel does not answer requests addressed to host '{host}' (a guard against DNS rebinding): add it to [server] allowed_hosts in keel.toml if clients reach keel by that name"
    )]
    ForeignHost {
        /// The host the request named.
        host: String,
    },
    /// A browser origin not in `[server] cors_origins`.
    #[error(
        "keel does not answer browser requests from origin '{origin}': add it to [server] cors_origins in keel.toml to allow it"
    )]
    ForeignOrigin {
        /// The `Origin` the browser sent.
        origin: String,
    },
    /// The key lacks the scope this endpoint needs.
    #[error("API key '{key}' lacks the '{scope}' scope needed for this endpoint")]
    Forbidden {
        /// The key's name.
        key: String,
        /// The scope needed.
        scope: &'static str,
    },
}

impl ProxyError {
    /// The HTTP status, following Ollama where Ollama has an equivalent.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyRead(_) | ProxyError::BadBody(_) | ProxyError::ModelRequired | ProxyError::BadSchema(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::InvalidOutput { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ProxyError::BadDeadline(_)
            | ProxyError::BadPriority(_)
            | ProxyError::BadSession(_)
            | ProxyError::ContextTooLong { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoStore | ProxyError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute(_) | ProxyError::NoKeelEndpoint { .. } => StatusCode::NOT_FOUND,
            ProxyError::Upstream(err) => err.status(),
            ProxyError::AllTargetsUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Translate(err) => err.status(),
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::ShuttingDown | ProxyError::AtConnectionLimit { .. } | ProxyError::LimitStoreDown { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::RateLimited { .. } | ProxyError::OverTokenBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden { .. }
            | ProxyError::SessionOfAnotherKey { .. }
            | ProxyError::ModelManagementClosed { .. }
            | ProxyError::ForeignHost { .. }
            | ProxyError::ForeignOrigin { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// The response in the given dialect.
    pub fn into_response_in(self, dialect: Dialect) -> Response {
        let status = match self.status() {
            // Anthropic answers "overloaded" with its own 529, which its SDKs retry.
            StatusCode::SERVICE_UNAVAILABLE if dialect == Dialect::Anthropic => OVERLOADED,
            status => status,
        };
        let body = ErrorBody::new(dialect, status, &self.to_string());
        let retry_after = match &self {
            ProxyError::AllTargetsUnavailable { retry_after, .. } | ProxyError::Overloaded { retry_after, .. } => {
                Some(retry_after_secs(*retry_after))
            }
            ProxyError::ShuttingDown | ProxyError::AtConnectionLimit { .. } | ProxyError::LimitStoreDown { .. } => {
                Some(1)
            }
            ProxyError::RateLimited { retry_after, .. } => Some(retry_after_secs(*retry_after)),
            _ => None,
        };
        let rate_limit = match &self {
            ProxyError::RateLimited { limit, reset, .. } => Some((*limit, 0, Some(*reset))),
            ProxyError::OverTokenBudget { limit, .. } => Some((*limit, 0, None)),
            _ => None,
        };
        let mut response = (status, body.body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some((limit, remaining, reset)) = rate_limit {
            rate_limit_headers(headers, limit, remaining, reset);
        }
        response
    }
}

/// Anthropic's "overloaded" status.
const OVERLOADED: StatusCode = match StatusCode::from_u16(529) {
    Ok(status) => status,
    Err(_) => StatusCode::SERVICE_UNAVAILABLE,
};

/// A header value for an error message: quoted, bytes that are not printable ASCII escaped,
/// at most 64 bytes of it.
pub(crate) fn quoted(value: &[u8]) -> String {
    let shown: String = value.iter().take(64).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
    let more = if value.len() > 64 { "..." } else { "" };
    format!("\"{shown}{more}\"")
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and (when known) `RateLimit-Reset` (whole seconds
/// until the budget is full again).
pub(crate) fn rate_limit_headers(
    headers: &mut http::HeaderMap,
    limit: u64,
    remaining: u64,
    reset: Option<std::time::Duration>,
) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(remaining));
    if let Some(reset) = reset {
        headers.insert(RATELIMIT_RESET, HeaderValue::from(reset.as_secs_f64().ceil() as u64));
    }
}

const RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");

/// Whole seconds for `Retry-After`, rounded up, at least 1.
fn retry_after_secs(duration: std::time::Duration) -> u64 {
    duration.as_secs_f64().ceil().max(1.0) as u64
}

/// A [`ProxyError`] paired with the dialect to answer in, for use as a handler's error type.
pub(crate) struct InDialect(pub(crate) Dialect, pub(crate) ProxyError);

impl IntoResponse for InDialect {
    fn into_response(self) -> Response {
        self.1.into_response_in(self.0)
    }
}
