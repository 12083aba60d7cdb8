//! What a runbook is written from: the incident, its timeline, the deployment around it, the
//! fixes people confirmed before, and the read-only checks keel ran when writing it.

use std::time::Duration;

use keel_session::{Incident, IncidentEvent, PlaybookEntry};
use serde::Serialize;

/// The longest output of one check kept in a runbook, in bytes.
pub const MAX_CHECK_OUTPUT: usize = 1_500;

/// How long one check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The deployment a runbook speaks of: keel's own address and the configured upstreams and
/// routes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Deployment {
    /// Where keel listens (`http://127.0.0.1:11435`).
    pub keel_url: String,
    /// The upstreams, in configuration order.
    pub upstreams: Vec<UpstreamFacts>,
    /// The routes: a model name and its targets in fallback order.
    pub routes: Vec<RouteFacts>,
}

/// One upstream as configured.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamFacts {
    /// Its name in keel.toml.
    pub name: String,
    /// Its address (`http://127.0.0.1:11434`).
    pub address: String,
    /// `ollama` or `openai` (an OpenAI-compatible server such as llama-server).
    pub kind: String,
}

/// One route as configured.
#[derive(Debug, Clone, Serialize)]
pub struct RouteFacts {
    /// The model name clients ask for (`*` for the catch-all).
    pub model: String,
    /// Its targets (`upstream` or `upstream:model`), in fallback order.
    pub targets: Vec<String>,
}

impl Deployment {
    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamFacts> {
        self.upstreams.iter().find(|upstream| upstream.name == name)
    }

    /// The routes with a target on upstream `name`.
    pub fn routes_through(&self, name: &str) -> Vec<&RouteFacts> {
        self.routes
            .iter()
            .filter(|route| {
                route
                    .targets
                    .iter()
                    .any(|target| target == name || target.split_once(':').is_some_and(|(up, _)| up == name))
            })
            .collect()
    }
}

/// One read-only check keel ran, with what it printed.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What it checks, in words.
    pub name: String,
    /// The command a person runs to check the same.
    pub command: String,
    /// When keel ran it (RFC 3339).
    pub at: String,
    /// Whether it answered as a healthy deployment would.
    pub ok: bool,
    /// What it printed or why it failed (cut to [`MAX_CHECK_OUTPUT`] bytes).
    pub output: String,
}

/// Everything a runbook is written from.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// The incident.
    pub incident: Incident,
    /// Its timeline.
    pub events: Vec<IncidentEvent>,
    /// Fixes confirmed for its fingerprint before, newest first.
    pub playbook: Vec<PlaybookEntry>,
    /// The deployment.
    pub deployment: Deployment,
    /// The checks keel ran.
    pub checks: Vec<Check>,
    /// For a session timeout: the session's last messages (role, content), oldest first.
    pub transcript: Vec<(String, String)>,
}

/// Runs the read-only checks for `upstream` (`GET /api/version` and `/api/ps` of an Ollama
/// server, `GET /v1/models` and `/health` of an OpenAI-compatible one), each under
/// [`CHECK_TIMEOUT`].
pub async fn check_upstream(client: &reqwest::Client, upstream: &UpstreamFacts) -> Vec<Check> {
    let base = upstream.address.trim_end_matches('/');
    let paths: &[(&str, &str)] = if upstream.kind == "openai" {
        &[("/health", "is the server up"), ("/v1/models", "which models it serves")]
    } else {
        &[("/api/version", "is Ollama up"), ("/api/ps", "which models are loaded in memory")]
    };
    let mut checks = Vec::with_capacity(paths.len());
    for (path, what) in paths {
        let url = format!("{base}{path}");
        checks.push(http_check(client, &format!("{} {what}", upstream.name), &url).await);
    }
    checks
}

/// `GET url` as a [`Check`] (its command is the same `curl`).
pub async fn http_check(client: &reqwest::Client, name: &str, url: &str) -> Check {
    let at = crate::webhook::rfc3339(keel_session::now_millis());
    let answer = async {
        let response = client.get(url).timeout(CHECK_TIMEOUT).send().await?;
        let status = response.status();
        let body = response.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    }
    .await;
    let (ok, output) = match answer {
        Ok((status, body)) => (status.is_success(), format!("HTTP {}: {}", status.as_u16(), body.trim())),
        Err(error) => (false, describe_error(&error)),
    };
    Check {
        name: name.to_owned(),
        command: format!("curl -sS --max-time 5 {url}"),
        at,
        ok,
        output: cut(&output, MAX_CHECK_OUTPUT),
    }
}

/// A request error in the words `curl` would use.
fn describe_error(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        format!("no answer within {}s (timed out)", CHECK_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … ({} bytes more)", &text[..end], text.len() - end)
}
