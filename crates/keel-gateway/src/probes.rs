//! Health probes: each upstream is checked every `health_interval`.
//!
//! Ollama upstreams answer `GET /api/version` (is it up?) and `GET /api/ps` (which models are in
//! memory); OpenAI-dialect upstreams answer `GET /health` (llama.cpp; `GET /v1/models` as a
//! fallback; and, when it comes up, `GET /props` for llama-server's slot count, which becomes
//! admission's `max_concurrent` for it). A successful probe lets the upstream's open server-wide
//! breaker admit a probe request early instead of waiting out its cooldown (model breakers are not
//! touched: a server that answers says nothing about a model that failed to load); the loaded
//! models feed routes with `prefer_loaded = true`. Probe failures are shown in `/keel/status` but do not count against
//! breakers: only real requests do.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Limited};
use keel_types::{Dialect, ModelName};
use keel_upstream::{ClientConfig, Upstream, UpstreamClient, empty_body};

use crate::state::{Gateway, UpstreamHealth};

/// Largest probe answer keel reads.
const MAX_PROBE_BODY: usize = 1 << 20;

/// Probes one upstream forever, every `interval`.
pub(crate) async fn probe_loop(gateway: Gateway, upstream: Upstream, interval: Duration) {
    let client = UpstreamClient::new(ClientConfig {
        connect_timeout: interval.min(Duration::from_secs(5)),
        response_timeout: interval.min(Duration::from_secs(5)),
        ..ClientConfig::default()
    });
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut health = probe(&client, &upstream).await;
        let before = gateway.inner.health.lock().get(&upstream.name).map(|h| h.ok);
        if before.is_none() && health.ok && upstream.dialect == Dialect::Ollama {
            health.models = get_json(&client, &upstream, "/api/tags").await.ok().map(|tags| model_names(&tags));
        }
        if before != Some(true) && health.ok && upstream.dialect == Dialect::OpenAi {
            learn_slots(&gateway, &client, &upstream).await;
        }
        log_change(&upstream, before, &health);
        if health.ok {
            reopen_early(&gateway, &upstream.name);
        }
        gateway.inner.health.lock().insert(upstream.name.clone(), health);
    }
}

/// How many requests an OpenAI-dialect server serves at once, when it says so (llama-server's
/// `GET /props` has `total_slots`): admission's `max_concurrent` for it. Read when it first
/// answers and whenever it comes back up (it may have restarted with another `--parallel`).
/// Ollama does not report its `OLLAMA_NUM_PARALLEL`.
async fn learn_slots(gateway: &Gateway, client: &UpstreamClient, upstream: &Upstream) {
    let Some(queues) = &gateway.inner.admission else { return };
    if let Ok(props) = get_json(client, upstream, "/props").await
        && let Some(slots) = props["total_slots"].as_u64()
    {
        queues.server_slots(&upstream.name, usize::try_from(slots).unwrap_or(usize::MAX));
    }
}

/// The server answered its probe: its server-wide breaker, and the breakers of its models that
/// opened for passing reasons (busy, time-outs, errors — not a model that could not be loaded),
/// may admit a probe request now instead of waiting out their cooldown.
fn reopen_early(gateway: &Gateway, upstream: &str) {
    if let Some(transition) = gateway.breaker(upstream).probe_succeeded() {
        tracing::info!(
            upstream,
            to = transition.to.as_str(),
            "health probe succeeded; every model on this upstream may be tried again"
        );
    }
    let prefix = format!("{upstream}:");
    for snapshot in gateway.breakers().snapshots() {
        if snapshot.state != keel_breaker::State::Open || !snapshot.target.starts_with(&prefix) {
            continue;
        }
        let last_class =
            gateway.inner.targets.lock().get(&snapshot.target).and_then(|s| s.last_failure.as_ref().map(|l| l.class));
        if last_class != Some(keel_types::FailureClass::ModelLoad)
            && let Some(transition) = gateway.breakers().probe_succeeded(&snapshot.target)
        {
            tracing::info!(target = %snapshot.target, to = transition.to.as_str(), "health probe succeeded; the open breaker may probe early");
        }
    }
}

/// Logs the first probe of an upstream (what answered, or why not and what to do) and every
/// change of its health after that, once.
fn log_change(upstream: &Upstream, before: Option<bool>, health: &UpstreamHealth) {
    let name = &upstream.name;
    let url = upstream.base_url();
    let error = health.error.as_deref().unwrap_or("");
    match (before, health.ok) {
        (None, true) => {
            let models = health.models.as_ref().map_or_else(|| "?".to_owned(), |m| m.join(", "));
            tracing::info!(upstream = %name, %url, version = health.version.as_deref().unwrap_or("?"), models = %models,
                loaded = %health.loaded_models.join(", "), "upstream answered");
        }
        (None, false) => tracing::warn!(upstream = %name, %url, %error,
            "upstream does not answer; requests to it fail until it does. Is the model server running there (for Ollama: `ollama serve`)? Or fix its url in keel.toml"),
        (Some(true), false) => {
            tracing::warn!(upstream = %name, %url, %error, "upstream went down; keel serves from the route's other targets, if any")
        }
        (Some(false), true) => tracing::info!(upstream = %name, %url, "upstream is back up"),
        (Some(_), _) => {}
    }
}

/// Model names of an Ollama `/api/tags` answer.
fn model_names(tags: &serde_json::Value) -> Vec<String> {
    tags["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().or(m["model"].as_str()))
        .map(str::to_owned)
        .collect()
}

async fn probe(client: &UpstreamClient, upstream: &Upstream) -> UpstreamHealth {
    let started = Instant::now();
    let mut health = UpstreamHealth {
        ok: false,
        version: None,
        loaded_models: Vec::new(),
        models: None,
        error: None,
        latency_ms: 0,
        checked: None,
    };
    let result = match upstream.dialect {
        Dialect::Ollama => match get_json(client, upstream, "/api/version").await {
            Ok(version) => {
                health.version = version["version"].as_str().map(str::to_owned);
                if let Ok(ps) = get_json(client, upstream, "/api/ps").await {
                    health.loaded_models =
                        model_names(&ps).into_iter().map(|name| ModelName::new(name).canonical()).collect();
                }
                Ok(())
            }
            Err(err) => Err(err),
        },
        Dialect::OpenAi => match get_json(client, upstream, "/health").await {
            Ok(_) => Ok(()),
            Err(_) => get_json(client, upstream, "/v1/models").await.map(|_| ()),
        },
        Dialect::Anthropic => get_json(client, upstream, "/v1/models").await.map(|_| ()),
    };
    health.ok = result.is_ok();
    health.error = result.err();
    health.latency_ms = started.elapsed().as_millis() as u64;
    health.checked = Some(Instant::now());
    health
}

/// GETs a path and parses the answer as JSON; any failure is described in words.
async fn get_json(client: &UpstreamClient, upstream: &Upstream, path: &str) -> Result<serde_json::Value, String> {
    let response =
        client.send(upstream, Method::GET, path, HeaderMap::new(), empty_body()).await.map_err(|e| e.detail)?;
    let status = response.status();
    let body: Bytes = Limited::new(response.into_body(), MAX_PROBE_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading {path}: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{path} answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{path} answered something that is not JSON: {e}"))
}
