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

/// `GET /keel/status`: upstreams, routes and every target with its breaker and what keel has
/// observed of it.
pub(crate) async fn status(State(gateway): State<Gateway>) -> Json<Value> {
    let config = gateway.config();
    let observed = gateway.inner.targets.lock().clone();
    let targets: Vec<Value> = gateway
        .inner
        .routes
        .target_keys()
        .into_iter()
        .map(|key| {
            let (upstream, model) = key.split_once(':').unwrap_or((key.as_str(), ""));
            let stats = observed.get(&key).cloned().unwrap_or_default();
            let snapshot = gateway.breaker(&key).snapshot();
            json!({
                "name": key,
                "upstream": upstream,
                "model": model,
                "breaker": snapshot.state.as_str(),
                "breaker_detail": snapshot,
                "requests": stats.requests,
                "failures": stats.failures,
                "consecutive_failures": stats.consecutive_failures,
                "last_failure": stats.last_failure.map(|(class, detail)| json!({"class": class, "detail": detail})),
            })
        })
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": gateway.inner.started.elapsed().as_secs(),
        "listen": config.server.listen.to_string(),
        "store": redact_url(&config.store_url),
        "config_file": config.source.as_ref().map(|p| p.display().to_string()),
        "auth": config.auth.is_some(),
        "upstreams": config.upstreams.iter().map(|u| {
            let health = gateway.inner.health.lock().get(&u.name).cloned();
            json!({
                "name": u.name,
                "url": u.upstream.base_url(),
                "dialect": u.upstream.dialect,
                "health": health.map(|h| {
                    let age = h.age_seconds();
                    let mut value = json!(h);
                    value["checked_seconds_ago"] = json!(age);
                    value
                }),
            })
        }).collect::<Vec<_>>(),
        "routes": config.routes.iter().map(|r| json!({
            "model": r.model,
            "targets": r.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "targets": targets,
    }))
}

/// `POST /keel/breakers/{target}/{action}` with action `open`, `close` or `reset`: manual control
/// of a target's breaker (forced states stick until `reset`).
pub(crate) async fn breaker_action(
    State(gateway): State<Gateway>,
    Path((target, action)): Path<(String, String)>,
) -> Response {
    if !gateway.inner.routes.target_keys().contains(&target) {
        let known = gateway.inner.routes.target_keys().join(", ");
        let message = format!("unknown target {target:?}; targets are: {known}");
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
    Json(json!({ "target": target, "breaker": breaker.snapshot() })).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics() -> Response {
    let handle = keel_telemetry::prometheus();
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// Hides a password in a store URL (`postgres://user:secret@host` → `postgres://user:***@host`).
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite://keel.db"), "sqlite://keel.db");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
