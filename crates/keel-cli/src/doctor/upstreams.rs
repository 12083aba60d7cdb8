//! `keel doctor`'s look at one upstream: reachable, which server and version, the routes' models
//! there (with their context length), and its clock (from the HTTP `Date` header).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method};
use http_body_util::{BodyExt as _, Limited};
use keel_gateway::config::{Config, UpstreamConfig};
use keel_types::{Dialect, ModelName};
use keel_upstream::{ClientConfig, Upstream, UpstreamClient, full_body};
use serde_json::{Value, json};

use super::Finding;

/// The most of an answer doctor reads.
const MAX_ANSWER: usize = 8 << 20;

/// What the check of one upstream found, and the time its server told.
pub(super) struct Checked {
    pub(super) findings: Vec<(String, Finding)>,
    pub(super) clock: Option<SystemTime>,
}

/// One answer: its status, its body as JSON (`Null` when it is not JSON) and its `Date`.
struct Answer {
    status: http::StatusCode,
    body: Value,
    date: Option<SystemTime>,
}

/// Calls the upstream as keel does when it serves (TLS, the upstream's credentials): a GET, or a
/// POST of `body`.
async fn call(client: &UpstreamClient, upstream: &Upstream, path: &str, body: Option<Value>) -> Result<Answer, String> {
    let (method, body) = match body {
        Some(value) => (Method::POST, full_body(value.to_string().into())),
        None => (Method::GET, keel_upstream::empty_body()),
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let response = client.send(upstream, method, path, headers, body).await.map_err(|err| describe(&err))?;
    let status = response.status();
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|err| format!("reading the answer to {path}: {err}"))?
        .to_bytes();
    Ok(Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), date })
}

/// A failed call in a few words: refused, timed out, an untrusted certificate (with what to do),
/// or what the client says.
fn describe(err: &keel_upstream::UpstreamError) -> String {
    match (err.class, err.tls) {
        (_, Some(_)) => err.client_message(),
        (keel_types::FailureClass::Refused, None) => {
            "connection refused (nothing listens there, or a firewall blocks it)".into()
        }
        (keel_types::FailureClass::Timeout, None) => "no answer in time".into(),
        _ => err.detail.clone(),
    }
}

/// Checks `upstream` and the models `config`'s routes send to it.
pub(super) async fn check(upstream: &UpstreamConfig, config: &Config, timeout: Duration) -> Checked {
    let client = UpstreamClient::new(ClientConfig {
        connect_timeout: timeout,
        response_timeout: timeout,
        ..ClientConfig::default()
    });
    let target = &upstream.upstream;
    let subject = format!("upstream {:?} ({})", upstream.name, target.base_url());
    let (listing, version_path) = match target.dialect {
        Dialect::Ollama => ("/api/tags", "/api/version"),
        Dialect::OpenAi | Dialect::Anthropic => ("/v1/models", "/v1/models"),
    };
    let head = match call(&client, target, version_path, None).await {
        Ok(answer) => answer,
        Err(err) => {
            let fix = match target.dialect {
                Dialect::Ollama => {
                    "start Ollama (`ollama serve` or `sudo systemctl start ollama`) or correct this [[upstream]] url"
                }
                Dialect::OpenAi => "start the server (llama-server, vLLM, LM Studio) or correct this [[upstream]] url",
                Dialect::Anthropic => "check this machine's internet connection, or correct this [[upstream]] url",
            };
            let what = format!("not reachable: {err}");
            return Checked { findings: vec![(subject, Finding::Problem(what, fix.into()))], clock: None };
        }
    };
    let clock = head.date;
    if !head.status.is_success() {
        let what = format!("answered {} to {version_path}", head.status);
        let fix = if matches!(head.status.as_u16(), 401 | 403) {
            "check this [[upstream]]'s api_key_env / api_key_file (the key is missing, wrong or revoked)"
        } else {
            "check that this url is the model server itself (not a proxy in front of it) and its dialect is right"
        };
        return Checked { findings: vec![(subject, Finding::Problem(what, fix.into()))], clock };
    }
    let server = match target.dialect {
        Dialect::Ollama => format!("Ollama {}", head.body["version"].as_str().unwrap_or("(version unknown)")),
        Dialect::OpenAi => "an OpenAI-compatible server".to_owned(),
        Dialect::Anthropic => "the Anthropic API".to_owned(),
    };
    let remote = if upstream.remote { ", remote (used only by routes with allow_remote)" } else { "" };
    let models = available_models(&client, target, listing).await;
    let mut findings = vec![(subject, Finding::Ok(format!("{server}, {} model(s){remote}", models.len())))];
    for model in routed_models(upstream, config) {
        let subject = format!("model {model:?} on {:?}", upstream.name);
        let finding = if has_model(&models, &model) {
            let context = context_length(&client, target, &model).await;
            Finding::Ok(context.map_or_else(|| "present".to_owned(), |n| format!("present, context {n} tokens")))
        } else {
            Finding::Problem("routes send it here but the server does not have it".into(), pull_fix(upstream, &model))
        };
        findings.push((subject, finding));
    }
    Checked { findings, clock }
}

/// The models routes send to `upstream` by name (a `"*"` route passes the client's name on: not
/// checked).
fn routed_models(upstream: &UpstreamConfig, config: &Config) -> Vec<String> {
    let mut models = Vec::new();
    for route in &config.routes {
        for target in route.targets.iter().filter(|t| t.upstream == upstream.name) {
            let model = target.model.clone().unwrap_or_else(|| route.model.clone());
            if model != "*" && !models.contains(&model) {
                models.push(model);
            }
        }
    }
    models
}

/// Whether `model` is in the server's list (`llama3.2` matches `llama3.2:latest`).
fn has_model(models: &[String], model: &str) -> bool {
    let wanted = ModelName::new(model);
    models.iter().any(|m| wanted.same_model(m))
}

fn pull_fix(upstream: &UpstreamConfig, model: &str) -> String {
    match upstream.upstream.dialect {
        Dialect::Ollama => format!(
            "pull it on that server: `OLLAMA_HOST={} ollama pull {model}`, or change the route's target",
            upstream.upstream.base_url()
        ),
        Dialect::OpenAi => format!(
            "load it in the server under that name (llama-server `--alias {model}`), or change the route's target to the name the server lists"
        ),
        Dialect::Anthropic => {
            format!("change the route's target {model:?} to a model name the API lists at /v1/models")
        }
    }
}

async fn available_models(client: &UpstreamClient, upstream: &Upstream, listing: &str) -> Vec<String> {
    let Ok(answer) = call(client, upstream, listing, None).await else { return Vec::new() };
    let (list, field) = match upstream.dialect {
        Dialect::Ollama => (&answer.body["models"], "name"),
        Dialect::OpenAi | Dialect::Anthropic => (&answer.body["data"], "id"),
    };
    list.as_array().into_iter().flatten().filter_map(|m| m[field].as_str().map(str::to_owned)).collect()
}

/// The model's context length as Ollama's `/api/show` reports it.
async fn context_length(client: &UpstreamClient, upstream: &Upstream, model: &str) -> Option<u64> {
    if upstream.dialect != Dialect::Ollama {
        return None;
    }
    let answer = call(client, upstream, "/api/show", Some(json!({"model": model}))).await.ok()?;
    keel_upstream::wire::context_length(&answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_tags_match_both_ways() {
        let models = vec!["llama3.2:latest".to_owned(), "qwen2.5:0.5b".to_owned()];
        assert!(has_model(&models, "llama3.2"));
        assert!(has_model(&models, "llama3.2:latest"));
        assert!(has_model(&models, "qwen2.5:0.5b"));
        assert!(!has_model(&models, "qwen2.5"));
        assert!(has_model(&["m".to_owned()], "m:latest"));
    }
}
