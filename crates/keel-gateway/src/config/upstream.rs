//! One `[[upstream]]` validated: its URL (plain or TLS, with an extra CA), its credentials from
//! the environment or a file (never logged), and whether it is remote.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue};
use keel_types::Dialect;

use super::UpstreamConfig;
use super::raw::RawUpstream;

/// The Anthropic API version keel speaks to an Anthropic-dialect upstream.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Validates one `[[upstream]]`; the error names it and says what to change.
pub(super) fn resolve(
    up: &RawUpstream,
    config_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<UpstreamConfig, String> {
    let which = format!("[[upstream]] {:?}", up.name);
    let uri: http::Uri = up.url.parse().map_err(|e| format!("{which}: url {:?} is not a URL: {e}", up.url))?;
    let mut upstream = keel_upstream::Upstream::new(&up.name, uri, up.dialect).map_err(|e| format!("{which}: {e}"))?;
    if let Some(file) = &up.ca_file {
        let path = super::beside_config(config_file, file);
        let certificates =
            keel_outbound::pem_certificates(&path).map_err(|e| format!("{which}: ca_file {}: {e}", path.display()))?;
        upstream = upstream.with_ca_certificates(&certificates).map_err(|e| format!("{which}: ca_file: {e}"))?;
    }
    let headers = headers(up, &which, config_file, env)?;
    if !headers.is_empty() {
        upstream = upstream.with_headers(headers);
    }
    if up.max_concurrent == Some(0) {
        return Err(format!(
            "{which}: max_concurrent = 0 would never let a request through; use 1 or more, or remove it"
        ));
    }
    let remote = up.remote.unwrap_or_else(|| upstream.is_remote());
    Ok(UpstreamConfig {
        name: up.name.clone(),
        upstream,
        connect_timeout: up.connect_timeout,
        response_timeout: up.response_timeout,
        idle_timeout: up.idle_timeout,
        health_interval: up.health_interval,
        forward_format: up.forward_format,
        max_concurrent: up.max_concurrent,
        remote,
        tokens_per_day: up.tokens_per_day,
    })
}

/// The headers sent with every request to the upstream: `headers`, `headers_env`, the API key
/// (`Authorization: Bearer`, or `x-api-key` for the Anthropic API) and `anthropic-version`.
fn headers(
    up: &RawUpstream,
    which: &str,
    config_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: String, shown: &str| -> Result<(), String> {
        let name = HeaderName::try_from(name).map_err(|_| format!("{which}: {name:?} is not a header name"))?;
        let mut value = HeaderValue::try_from(value)
            .map_err(|_| format!("{which}: the value of header {name} ({shown}) is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
        Ok(())
    };
    for (name, value) in &up.headers {
        add(name, value.clone(), "from headers")?;
    }
    for (name, var) in &up.headers_env {
        let value = env(var).ok_or_else(|| {
            format!("{which}: headers_env: environment variable {var} is not set (export it before starting keel)")
        })?;
        add(name, value.trim().to_owned(), &format!("from ${var}"))?;
    }
    if let Some(key) = api_key(up, which, config_file, env)? {
        match up.dialect {
            Dialect::Anthropic => add("x-api-key", key, "the API key")?,
            Dialect::Ollama | Dialect::OpenAi => add("authorization", format!("Bearer {key}"), "the API key")?,
        }
    }
    if up.dialect == Dialect::Anthropic && !headers.contains_key("anthropic-version") {
        headers.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
    }
    Ok(headers)
}

/// The API key from `api_key_env` or `api_key_file`, if either is given.
fn api_key(
    up: &RawUpstream,
    which: &str,
    config_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    let key = match (&up.api_key_env, &up.api_key_file) {
        (None, None) => return Ok(None),
        (Some(var), None) => env(var).ok_or_else(|| {
            format!("{which}: environment variable {var} (api_key_env) is not set (export it before starting keel)")
        })?,
        (None, Some(file)) => std::fs::read_to_string(super::beside_config(config_file, file))
            .map_err(|e| format!("{which}: cannot read api_key_file {file:?}: {e}"))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        (Some(_), Some(_)) => return Err(format!("{which}: give api_key_env or api_key_file, not both")),
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(format!("{which}: the API key is empty"));
    }
    Ok(Some(key))
}
