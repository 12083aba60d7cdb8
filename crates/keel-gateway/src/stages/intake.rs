//! Stage: intake. Reads what is needed of the request and finds where it may go.
//!
//! Takes the request head and body (classified by endpoint); gives a [`Forward`]: the route's
//! targets in fallback order, the requested model, and the body — read whole (bounded by
//! `[server] max_request_body`) when keel needs to look inside it or send it again, else streamed
//! through (model uploads). Answers by itself: 413 for a body over the limit, 400 for a body that
//! is not JSON or names no model, 404 for a model no route serves — in the endpoint's dialect.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, header, request::Parts};
use http_body_util::BodyExt;
use keel_types::{Dialect, TargetId};
use keel_upstream::{BoxError, RequestBody, RequestPeek, empty_body};

use crate::attempts::{Forward, Payload};
use crate::endpoint::{Endpoint, EndpointKind};
use crate::error::ProxyError;
use crate::state::Gateway;

/// Reads what is needed of the request and finds its targets: every path (plain, session,
/// structured-output guard) starts from here, so a malformed request is refused before anything
/// is sent upstream.
pub(crate) async fn intake(
    gateway: &Gateway,
    parts: &Parts,
    endpoint: Endpoint,
    body: Body,
) -> Result<Forward, ProxyError> {
    let path_and_query =
        parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let (model, payload, stream) = match endpoint.kind {
        EndpointKind::ModelInBody => {
            let bytes = read_body(gateway, &parts.headers, body).await?;
            let peek = RequestPeek::parse(&bytes)?;
            let stream = peek.streams(endpoint.dialect);
            let model = peek.model.filter(|m| !m.is_empty()).ok_or(ProxyError::ModelRequired)?;
            (model, Payload::Bytes(bytes), stream)
        }
        EndpointKind::ModelInPath => {
            let model = Endpoint::model_in_path(parts.uri.path()).unwrap_or_default();
            (model, Payload::Bytes(Bytes::new()), false)
        }
        EndpointKind::Passthrough => return passthrough(gateway, parts, endpoint, body, path_and_query),
    };
    let (route_model, targets, withheld) = route(gateway, &model)?;
    Ok(Forward { targets, route_model, requested_model: model, path_and_query, payload, stream, withheld })
}

/// A request that names no model: a read goes to the default upstream, then the others
/// ([`read_targets`]); anything else (model management) only to the default, its body streamed.
fn passthrough(
    gateway: &Gateway,
    parts: &Parts,
    endpoint: Endpoint,
    body: Body,
    path_and_query: String,
) -> Result<Forward, ProxyError> {
    let default = gateway.default_target().ok_or_else(|| ProxyError::NoRoute(String::new()))?;
    let body = stream_body(&parts.headers, body);
    let read = matches!(parts.method, http::Method::GET | http::Method::HEAD) && http_body::Body::is_end_stream(&body);
    let (targets, payload) = if read {
        (read_targets(gateway, &default.upstream, endpoint.dialect), Payload::Bytes(Bytes::new()))
    } else {
        (vec![TargetId { upstream: default.upstream.clone(), model: None }], Payload::Stream(Some(body)))
    };
    Ok(Forward {
        targets,
        route_model: "*".to_owned(),
        requested_model: String::new(),
        path_and_query,
        payload,
        stream: true,
        withheld: Vec::new(),
    })
}

/// Where a read that names no model (`GET /api/tags`, `/api/version`, `/api/ps`, `/v1/models`)
/// may go: the default upstream, then every other upstream that speaks the path's API, so that an
/// agent can still list models and check the version while the default server is down. Upstreams
/// whose last health probe failed go last. Writes (model management) only ever go to the default.
fn read_targets(gateway: &Gateway, default: &str, dialect: Dialect) -> Vec<TargetId> {
    let health = gateway.inner.health.lock();
    // Ollama's own API only from Ollama servers; the OpenAI-compatible `/v1` from any.
    let others = gateway
        .upstreams
        .iter()
        .filter(|u| u.upstream.name != default && (dialect == Dialect::OpenAi || u.upstream.dialect == Dialect::Ollama))
        .map(|u| u.upstream.name.as_str());
    let mut targets: Vec<(bool, TargetId)> = std::iter::once(default)
        .chain(others)
        .map(|name| {
            let down = health.get(name).is_some_and(|h| !h.ok);
            (down, TargetId { upstream: name.to_owned(), model: None })
        })
        .collect();
    drop(health);
    targets.sort_by_key(|(down, _)| *down);
    targets.into_iter().map(|(_, target)| target).collect()
}

/// The route's model name, its targets in fallback order (targets with the model already loaded
/// first, when the route prefers them; remote ones last, when the route allows them at all), and
/// the remote targets withheld with why.
fn route(gateway: &Gateway, model: &str) -> Result<(String, Vec<TargetId>, Vec<String>), ProxyError> {
    let route = gateway.inner.routes.resolve(model).ok_or_else(|| ProxyError::NoRoute(model.to_owned()))?;
    let mut targets = route.targets.clone();
    if route.prefer_loaded {
        // Stable: among loaded (and among not loaded) targets the configured order holds.
        targets.sort_by_key(|t| !gateway.has_loaded(&t.upstream, t.model_for(model)));
    }
    if !gateway.upstreams.iter().any(|u| u.remote) {
        return Ok((route.model.clone(), targets, Vec::new()));
    }
    let (targets, withheld) =
        crate::remote::order_targets(route, targets, |name| gateway.upstream(name).is_some_and(|u| u.remote));
    Ok((route.model.clone(), targets, withheld))
}

/// Reads a whole body, refusing more than the configured limit (up front when Content-Length
/// says so, otherwise while reading) and a body that takes longer than `[server] body_timeout`
/// (one dribbled a byte at a time would hold its connection forever).
async fn read_body(gateway: &Gateway, headers: &HeaderMap, body: Body) -> Result<Bytes, ProxyError> {
    let limit = gateway.config().server.max_request_body;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    // A body that has arrived whole is read at the first poll: no timer is made for it (making
    // one cost ~1k instructions per request).
    let mut read = std::pin::pin!(axum::body::to_bytes(body, limit));
    let read = match futures_util::poll!(read.as_mut()) {
        std::task::Poll::Ready(read) => read,
        std::task::Poll::Pending => {
            let timeout = gateway.config().server.body_timeout;
            tokio::time::timeout(timeout, read).await.map_err(|_| ProxyError::BodyTimeout { limit: timeout })?
        }
    };
    read.map_err(|err| {
        let too_large =
            std::error::Error::source(&err).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large { ProxyError::BodyTooLarge { limit } } else { ProxyError::BodyRead(err.to_string()) }
    })
}

/// A body forwarded as it arrives (model uploads can be gigabytes).
fn stream_body(headers: &HeaderMap, body: Body) -> RequestBody {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    if has_body { body.map_err(|err| -> BoxError { Box::new(err) }).boxed_unsync() } else { empty_body() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_to_the_default_then_to_servers_of_the_same_api_healthy_first() {
        let toml = "[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                    [[upstream]]\nname = \"b\"\nurl = \"http://127.0.0.1:2\"\ndialect = \"openai\"\n\
                    [[upstream]]\nname = \"c\"\nurl = \"http://127.0.0.1:3\"\n";
        let raw = crate::config::RawConfig::parse(toml).unwrap();
        let config = crate::config::Config::from_raw(raw, None, &Default::default(), &|_| None).unwrap();
        let gateway = Gateway::new(config).unwrap();
        let names = |dialect| read_targets(&gateway, "a", dialect).into_iter().map(|t| t.upstream).collect::<Vec<_>>();
        assert_eq!(names(Dialect::Ollama), ["a", "c"]);
        assert_eq!(names(Dialect::OpenAi), ["a", "b", "c"]);
        // The default is always asked, whatever it speaks.
        let from_b = read_targets(&gateway, "b", Dialect::Ollama).into_iter().map(|t| t.upstream).collect::<Vec<_>>();
        assert_eq!(from_b, ["b", "a", "c"]);
        let down = crate::state::UpstreamHealth {
            ok: false,
            version: None,
            loaded_models: Vec::new(),
            models: None,
            error: Some("connection refused".into()),
            latency_ms: 1,
            checked: None,
        };
        gateway.inner.health.lock().insert("a".into(), down);
        assert_eq!(names(Dialect::Ollama), ["c", "a"]);
        assert_eq!(names(Dialect::OpenAi), ["b", "c", "a"]);
    }
}
