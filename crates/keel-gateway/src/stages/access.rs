//! Stage: access. What no client may do, whatever its key: reach keel under a host name that is
//! not keel's (a guard against DNS rebinding, as Ollama has), call it from a browser origin not
//! allowed (CORS), or manage models while `[auth] allow_model_management` is off.
//!
//! Takes the request head. Answers by itself: a CORS preflight (204 for an allowed origin), and
//! 403 in the path's dialect for a foreign `Host`, a foreign `Origin` or closed model
//! management, each saying which setting opens it. Gives on the allowed browser origin, which
//! [`allow_origin`] writes into the response.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use keel_types::Dialect;

use crate::error::ProxyError;
use crate::state::Gateway;

/// Headers a browser page may read from keel's answers.
const EXPOSED: &str = "x-request-id, x-keel-target, x-keel-attempts, x-keel-repair, x-keel-queue-wait-ms, retry-after";
/// Methods named in a preflight answer.
const METHODS: &str = "GET, POST, PUT, DELETE, HEAD, OPTIONS";
/// Headers allowed when a preflight names none.
const HEADERS: &str =
    "authorization, content-type, x-api-key, x-keel-session, x-keel-session-mode, x-keel-deadline, x-keel-priority";

/// Checks the request's `Host` and `Origin`; answers a CORS preflight. `Ok` gives the browser
/// origin to allow in the response (`None` for requests that are not cross-origin).
#[allow(clippy::result_large_err)] // the refusal is the response itself, built once
pub(crate) fn check(gateway: &Gateway, request: &Parts) -> Result<Option<HeaderValue>, Response> {
    let dialect = || Dialect::of_path(request.uri.path());
    let host = request.headers.get(header::HOST).map_or(Some(""), |h| h.to_str().ok());
    let Some(host) = host.filter(|host| host_allowed(gateway, host)) else {
        let host = String::from_utf8_lossy(request.headers.get(header::HOST).map_or(&[][..], |h| h.as_bytes()));
        return Err(refused(dialect(), ProxyError::ForeignHost { host: host.chars().take(200).collect() }));
    };
    let Some(origin) = request.headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let text = origin.to_str().unwrap_or("");
    if !origin_allowed(gateway, text, host) {
        let origin = text.chars().take(200).collect();
        return Err(refused(dialect(), ProxyError::ForeignOrigin { origin }));
    }
    if request.method == http::Method::OPTIONS && request.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return Err(preflight(origin, &request.headers));
    }
    Ok(Some(origin.clone()))
}

/// Refuses model management unless `[auth] allow_model_management` is on (the auth stage has
/// already checked the key's scope for it).
#[allow(clippy::result_large_err)] // the refusal is the response itself, built once
pub(crate) fn model_management(gateway: &Gateway, request: &Parts) -> Result<(), Response> {
    let path = request.uri.path();
    if gateway.config().access.allow_model_management || !crate::endpoint::is_model_management(&request.method, path) {
        return Ok(());
    }
    let err = ProxyError::ModelManagementClosed { method: request.method.to_string(), path: path.to_owned() };
    Err(refused(Dialect::of_path(path), err))
}

/// Lets the allowed browser origin read the response.
pub(crate) fn allow_origin(response: &mut Response, origin: Option<HeaderValue>) {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// Middleware for keel's own endpoints (`/keel/*`, `/metrics`): the same checks as the pipeline's.
pub(crate) async fn layer(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match check(&gateway, &parts) {
        Ok(origin) => {
            let mut response = next.run(Request::from_parts(parts, body)).await;
            allow_origin(&mut response, origin);
            response
        }
        Err(answer) => answer,
    }
}

fn refused(dialect: Dialect, err: ProxyError) -> Response {
    tracing::info!(status = 403, error = %err, "request refused");
    err.into_response_in(dialect)
}

/// The answer to an allowed origin's preflight.
fn preflight(origin: &HeaderValue, headers: &HeaderMap) -> Response {
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.unwrap_or(HeaderValue::from_static(HEADERS)));
    out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    out.insert(
        header::VARY,
        HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers"),
    );
    response
}

/// The host part of a `Host` header or an origin's authority, without the port, the brackets of
/// an IPv6 address or a final dot (compare it ignoring ASCII case).
fn host_name(authority: &str) -> &str {
    let name = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => match authority.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => authority,
        },
    };
    name.trim_end_matches('.')
}

/// Whether `name` is a loopback name or address.
fn is_loopback(name: &str) -> bool {
    let localhost = |n: &str| n.eq_ignore_ascii_case("localhost");
    localhost(name)
        || name.rsplit_once('.').is_some_and(|(_, last)| localhost(last))
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A `Host` keel answers: none (HTTP/1.0), a loopback name, the listen address, any address
/// when keel listens on all of them (an address cannot be rebound), or `[server] allowed_hosts`.
fn host_allowed(gateway: &Gateway, host: &str) -> bool {
    // The usual case first: clients name the address keel listens on.
    if host.is_empty() || host == gateway.config().access.listen_authority {
        return true;
    }
    let name = host_name(host);
    let listen = gateway.config().server.listen.ip();
    let allowed = &gateway.config().access.allowed_hosts;
    is_loopback(name)
        || name.parse::<IpAddr>().is_ok_and(|ip| ip == listen || listen.is_unspecified())
        || allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(name))
}

/// A browser origin keel answers: http(s) on a loopback name, the same origin as the request's
/// `Host`, or one of `[server] cors_origins` (`*`, exact, or `scheme://host:*` for any port).
fn origin_allowed(gateway: &Gateway, origin: &str, host: &str) -> bool {
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let Some((scheme, authority)) = origin.split_once("://") else {
        return gateway.config().access.cors_origins.iter().any(|o| o == "*");
    };
    let web = scheme == "http" || scheme == "https";
    if web && (is_loopback(host_name(authority)) || authority.eq_ignore_ascii_case(host)) {
        return true;
    }
    let any_port = format!("{scheme}://{}:*", host_name(authority));
    gateway.config().access.cors_origins.iter().any(|o| o == "*" || *o == origin || *o == any_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        assert_eq!(host_name("127.0.0.1:11435"), "127.0.0.1");
        assert_eq!(host_name("[::1]:11435"), "::1");
        assert_eq!(host_name("Keel.Internal:80"), "Keel.Internal");
        assert_eq!(host_name("localhost."), "localhost");
        assert!(is_loopback("LocalHost") && is_loopback("app.localhost") && is_loopback("127.1.2.3"));
        assert!(is_loopback("::1") && !is_loopback("attacker.example") && !is_loopback("10.0.0.1"));
    }
}
