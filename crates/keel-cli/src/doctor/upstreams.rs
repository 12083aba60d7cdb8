//! `keel doctor`'s look at one upstream: reachable, which server and version, the routes' models
//! there (with their context length), and its clock (from the HTTP `Date` header).

use std::time::{Duration, SystemTime};

use keel_gateway::config::{Config, UpstreamConfig};
use keel_types::{Dialect, ModelName};
use serde_json::{Value, json};

use super::Finding;

/// What the check of one upstream found, and the time its server told.
pub(super) struct Checked {
    pub(super) findings: Vec<(String, Finding)>,
    pub(super) clock: Option<SystemTime>,
}

/// Checks `upstream` and the models `config`'s routes send to it.
pub(super) async fn check(upstream: &UpstreamConfig, config: &Config, timeout: Duration) -> Checked {
    let client = reqwest::Client::builder().timeout(timeout).build().unwrap_or_default();
    let base = upstream.upstream.base_url().to_owned();
    let subject = format!("upstream {:?} ({base})", upstream.name);
    let (listing, version_path) = match upstream.upstream.dialect {
        Dialect::Ollama => ("/api/tags", "/api/version"),
        Dialect::OpenAi | Dialect::Anthropic => ("/v1/models", "/v1/models"),
    };
    let head = match client.get(format!("{base}{version_path}")).send().await {
        Ok(response) => response,
        Err(err) => {
            let fix = match upstream.upstream.dialect {
                Dialect::Ollama => {
                    "start Ollama (`ollama serve` or `sudo systemctl start ollama`) or correct this [[upstream]] url"
                }
                Dialect::OpenAi => "start the server (llama-server, vLLM, LM Studio) or correct this [[upstream]] url",
                Dialect::Anthropic => "check this machine's internet connection, or correct this [[upstream]] url",
            };
            let what = format!("not reachable: {}", describe(&err));
            return Checked { findings: vec![(subject, Finding::Problem(what, fix.into()))], clock: None };
        }
    };
    let clock = head
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let status = head.status();
    let body: Value = head.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let what = format!("answered {status} to {version_path}");
        let fix =
            "check that this url is the model server itself (not a proxy in front of it) and its dialect is right";
        return Checked { findings: vec![(subject, Finding::Problem(what, fix.into()))], clock };
    }
    let server = match upstream.upstream.dialect {
        Dialect::Ollama => format!("Ollama {}", body["version"].as_str().unwrap_or("(version unknown)")),
        Dialect::OpenAi => "an OpenAI-compatible server".to_owned(),
        Dialect::Anthropic => "the Anthropic API".to_owned(),
    };
    let models = available_models(&client, &base, listing, upstream.upstream.dialect).await;
    let mut findings = vec![(subject, Finding::Ok(format!("{server}, {} model(s)", models.len())))];
    for model in routed_models(upstream, config) {
        let subject = format!("model {model:?} on {:?}", upstream.name);
        let finding = if has_model(&models, &model) {
            let context = context_length(&client, &base, &model, upstream.upstream.dialect).await;
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

async fn available_models(client: &reqwest::Client, base: &str, listing: &str, dialect: Dialect) -> Vec<String> {
    let Ok(response) = client.get(format!("{base}{listing}")).send().await else { return Vec::new() };
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let (list, field) = match dialect {
        Dialect::Ollama => (&body["models"], "name"),
        Dialect::OpenAi | Dialect::Anthropic => (&body["data"], "id"),
    };
    list.as_array().into_iter().flatten().filter_map(|m| m[field].as_str().map(str::to_owned)).collect()
}

/// The model's context length as Ollama's `/api/show` reports it.
async fn context_length(client: &reqwest::Client, base: &str, model: &str, dialect: Dialect) -> Option<u64> {
    if dialect != Dialect::Ollama {
        return None;
    }
    let response = client.post(format!("{base}/api/show")).json(&json!({"model": model})).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    keel_upstream::wire::context_length(&body)
}

/// A request error in a few words: refused, timed out, or what the library says.
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "no answer in time".into();
    }
    if err.is_connect() {
        return "connection refused (nothing listens there, or a firewall blocks it)".into();
    }
    err.to_string()
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
