//! keel's own endpoints: health, status and Prometheus metrics.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::state::Gateway;

/// `GET /keel/health`: 200 as soon as keel serves requests, with the session store's health
/// (`"store": "ok"`, or what is wrong with it; sessions fail while it is down, plain requests
/// do not).
pub(crate) async fn health(State(gateway): State<Gateway>) -> Json<Value> {
    let store = match &gateway.inner.store {
        None => Value::Null,
        Some(store) => match tokio::time::timeout(std::time::Duration::from_secs(2), store.health()).await {
            Ok(Ok(())) => json!("ok"),
            Ok(Err(err)) => json!(format!("unavailable: {err}")),
            Err(_) => json!("unavailable: no answer within 2s"),
        },
    };
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION"), "store": store }))
}

/// `GET /keel/status`: upstreams with their health and server-wide breaker, routes, and every
/// target (configured, or a model asked for through the `"*"` route) with its breaker, why it is
/// open, and what keel has observed of it. Times are RFC 3339 strings or seconds named so.
pub(crate) async fn status(State(gateway): State<Gateway>) -> Json<Value> {
    Json(status_json(&gateway))
}

/// What `/keel/status` answers (the dashboard's snapshot starts from it).
pub(crate) fn status_json(gateway: &Gateway) -> Value {
    let config = gateway.config();
    let observed = gateway.inner.targets.lock().clone();
    let targets: Vec<Value> = target_names(gateway)
        .into_iter()
        .map(|key| {
            let (upstream, model) = key.split_once(':').unwrap_or((key.as_str(), ""));
            let stats = observed.get(&key).cloned().unwrap_or_default();
            let breaker = breaker_json(gateway, &key);
            json!({
                "name": key,
                "upstream": upstream,
                "model": model,
                "breaker": breaker["state"],
                "open_reason": breaker["open_reason"],
                "retry_after_seconds": breaker["retry_after_seconds"],
                "breaker_detail": breaker,
                "requests": stats.requests,
                "failures": stats.failures,
                "consecutive_failures": stats.consecutive_failures,
                "last_failure": stats.last_failure.map(|last| last.to_json()),
            })
        })
        .collect();
    let upstreams: Vec<Value> = config
        .upstreams
        .iter()
        .map(|u| {
            let health = gateway.inner.health.lock().get(&u.name).cloned();
            let state = match &health {
                None => "unknown",
                Some(h) if h.ok => "up",
                Some(_) => "down",
            };
            json!({
                "name": u.name,
                "url": u.upstream.base_url(),
                "dialect": u.upstream.dialect,
                "remote": u.remote,
                "tokens_per_day": gateway.upstream(&u.name).and_then(|h| h.budget.as_ref()).map(|budget| json!({
                    "limit": budget.limit(),
                    "spent_today": budget.spent_today(),
                })),
                "state": state,
                "health": health.map(|h| {
                    let age = h.age_seconds();
                    let mut value = json!(h);
                    value["checked_seconds_ago"] = json!(age);
                    value
                }),
                "last_error": observed.get(&u.name).and_then(|s| s.last_failure.as_ref()).map(|last| last.to_json()),
                "breaker": breaker_json(gateway, &u.name),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": gateway.inner.started.elapsed().as_secs(),
        "listen": config.server.listen.to_string(),
        "store": keel_session::redact_url(&config.store_url),
        "config_file": config.source.as_ref().map(|p| p.display().to_string()),
        "auth": gateway.inner.keys.required(),
        "upstreams": upstreams,
        "routes": config.routes.iter().map(|r| json!({
            "model": r.model,
            "targets": r.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "allow_remote": r.allow_remote,
        })).collect::<Vec<_>>(),
        "breakers": gateway.breakers().len(),
        "targets": targets,
        "admission": gateway.inner.admission.as_ref().map_or_else(crate::admission::status_off, |q| q.status()),
        "limits": gateway.inner.limits.status(),
        "traces": traces_json(config),
        "incidents": match &gateway.inner.incidents {
            Some(log) => json!({ "enabled": true, "open": log.recorder.open_incidents() }),
            None => json!({ "enabled": false, "open": [] }),
        },
        "dashboard": "/keel/ui",
    })
}

/// Where traces go (`null` when nowhere), whether they carry content, and why they cannot be sent
/// when the environment names a destination keel cannot use.
fn traces_json(config: &crate::config::Config) -> Value {
    let tracing = &config.tracing;
    json!({
        "destinations": tracing.exports.iter().map(|e| json!({"kind": e.destination, "endpoint": e.endpoint})).collect::<Vec<_>>(),
        "content": tracing.content,
        "problem": tracing.problem,
    })
}

/// Every target to show: the configured ones in declaration order, then the models asked for
/// through the `"*"` route that have a breaker, by name.
fn target_names(gateway: &Gateway) -> Vec<String> {
    let mut names = gateway.inner.routes.target_keys();
    let upstreams: Vec<&str> = gateway.config().upstreams.iter().map(|u| u.name.as_str()).collect();
    let mut created: Vec<String> = gateway
        .breakers()
        .snapshots()
        .into_iter()
        .map(|snapshot| snapshot.target)
        .filter(|name| !upstreams.contains(&name.as_str()) && !names.contains(name))
        .collect();
    created.sort();
    names.append(&mut created);
    names
}

/// A breaker's state for people and scripts: wall-clock times in RFC 3339, durations in seconds.
fn breaker_json(gateway: &Gateway, key: &str) -> Value {
    // Read without counting as a use, so that watching status keeps no idle breaker alive.
    let snapshot = gateway.breakers().snapshot(key).unwrap_or_else(|| gateway.breaker(key).snapshot());
    let clock = gateway.breakers().clock();
    let time = |at: keel_breaker::Nanos| clock.wall_time(at).map(|t| humantime::format_rfc3339_seconds(t).to_string());
    json!({
        "state": snapshot.state.as_str(),
        "forced": snapshot.forced,
        "open_reason": gateway.open_reason(key),
        "opened_at": snapshot.opened_at.and_then(time),
        "retry_after_seconds": snapshot.retry_after.map(|d| d.as_secs_f64().ceil() as u64),
        "cooldown_seconds": snapshot.cooldown.as_secs_f64(),
        "consecutive_failures": snapshot.consecutive_failures,
        "window": {
            "window_seconds": snapshot.window.window.as_secs_f64(),
            "calls": snapshot.window.calls,
            "failures": snapshot.window.failures,
            "slow": snapshot.window.slow,
            "successes": snapshot.window.successes,
            "failure_rate": snapshot.window.failure_rate,
        },
        "reopens": snapshot.reopens,
        "probes_in_flight": snapshot.probes_in_flight,
        "last_transition": snapshot.last_transition.map(|last| json!({
            "to": last.to.as_str(),
            "reason": last.reason.to_string(),
            "at": time(last.at),
        })),
    })
}

/// `POST /keel/breakers/{target}/{action}` with action `open`, `close` or `reset`: manual control
/// of a target's breaker (`upstream:model`) or an upstream's (its name); forced states stick until
/// `reset`.
pub(crate) async fn breaker_action(
    State(gateway): State<Gateway>,
    Path((target, action)): Path<(String, String)>,
) -> Response {
    let known = target_names(&gateway);
    let is_upstream = gateway.config().upstreams.iter().any(|u| u.name == target);
    if !is_upstream && !known.contains(&target) {
        let message = format!(
            "unknown target {target:?}; targets are: {} (or an upstream's name: {})",
            known.join(", "),
            gateway.config().upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        return (StatusCode::NOT_FOUND, Json(json!({ "error": message }))).into_response();
    }
    let breaker = gateway.breaker(&target);
    let transition = match action.as_str() {
        "open" => breaker.force_open(),
        "close" => breaker.force_close(),
        "reset" => breaker.reset(),
        other => {
            let message = format!("unknown action {other:?}: use open, close or reset");
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response();
        }
    };
    tracing::warn!(target = %target, from = transition.from.as_str(), to = transition.to.as_str(), "breaker changed by an operator");
    Json(json!({ "target": target, "breaker": breaker_json(&gateway, &target) })).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics(State(gateway): State<Gateway>) -> Response {
    let mut response = metrics_page(&gateway).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// The Prometheus page as of now: the admission gauges set first, histogram samples folded in.
pub(crate) fn metrics_page(gateway: &Gateway) -> String {
    if let Some(queues) = &gateway.inner.admission {
        queues.publish();
    }
    let handle = keel_telemetry::prometheus();
    handle.run_upkeep();
    handle.render()
}
