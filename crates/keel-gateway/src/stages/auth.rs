//! Stage: API keys. `Authorization: Bearer <key>` (or `X-API-Key: <key>`) is checked against
//! `[auth]` with per-key scopes.
//!
//! Takes the request head; gives it on without the key (the model server never sees it) and with
//! a [`Caller`] in its extensions, naming the key and carrying its limits; answers by itself 401
//! (no or unknown key) or 403 (the key lacks the scope), in the path's dialect. Without `[auth]`
//! everything passes, with no [`Caller`], and `Authorization` is left for the upstream.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header;
use http::request::Parts;
use keel_types::Dialect;

use crate::client::Caller;
use crate::config::{ApiKey, Scope};
use crate::error::ProxyError;
use crate::state::Gateway;

/// The scopes of which a request needs one; `None` for paths open to everyone (health checks).
fn required_scopes(method: &http::Method, path: &str) -> Option<&'static [Scope]> {
    if path == "/keel/health" {
        None
    } else if crate::endpoint::is_keel_own(path) {
        Some(&[Scope::Admin])
    } else if crate::endpoint::is_model_management(method, path) {
        Some(&[Scope::Admin, Scope::Models])
    } else {
        Some(&[Scope::Inference])
    }
}

/// Middleware: passes requests with a key holding the needed scope; answers 401/403 otherwise.
/// Installed only with `[auth]`; the key is consumed here and not forwarded. Without `[auth]`,
/// `Authorization` passes through untouched (the upstream may want it).
pub(crate) async fn require_key(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match admit(&gateway, &mut parts) {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(refused) => refused,
    }
}

/// The header Anthropic's clients (and many gateways') carry a key in.
const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// Checks a request's key against `[auth]` (everything passes without it) and removes the key,
/// which was for keel: the model server never sees it. The refusal is a 401/403 in the path's
/// dialect.
#[allow(clippy::result_large_err)] // the refusal is the response itself, built once
pub(crate) fn admit(gateway: &Gateway, request: &mut Parts) -> Result<(), Response> {
    let Some(auth) = &gateway.config().auth else {
        return Ok(());
    };
    if request.extensions.get::<Caller>().is_some() {
        return Ok(());
    }
    let path = request.uri.path();
    let Some(scopes) = required_scopes(&request.method, path) else {
        return Ok(());
    };
    let dialect = Dialect::of_path(path);
    let bearer = request
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    // `X-API-Key` (Anthropic's clients send it) when there is no bearer key.
    let (carrier, presented) = match bearer {
        Some(bearer) => (header::AUTHORIZATION, Some(bearer)),
        None => (X_API_KEY, request.headers.get(X_API_KEY).and_then(|v| v.to_str().ok()).map(str::trim)),
    };
    let Some(key) = presented.and_then(|p| find_key(&auth.keys, p)) else {
        return Err(ProxyError::Unauthorized.into_response_in(dialect));
    };
    if !scopes.iter().any(|scope| key.scopes.contains(scope)) {
        let scope = match scopes[0] {
            Scope::Inference => "inference",
            Scope::Admin if scopes.len() > 1 => "admin' or 'models",
            Scope::Admin => "admin",
            Scope::Models => "models",
        };
        return Err(ProxyError::Forbidden { key: key.name.clone(), scope }.into_response_in(dialect));
    }
    request.headers.remove(carrier);
    request.extensions.insert(Caller { name: Arc::from(key.name.as_str()), limits: key.limits });
    Ok(())
}

/// The key matching `presented`, compared in constant time per key.
fn find_key<'a>(keys: &'a [ApiKey], presented: &str) -> Option<&'a ApiKey> {
    keys.iter().find(|k| constant_time_eq(k.secret.as_bytes(), presented.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_path() {
        let scopes = |method: &str, path| required_scopes(&method.parse().unwrap(), path);
        assert_eq!(scopes("GET", "/keel/health"), None);
        assert_eq!(scopes("GET", "/keel/status"), Some(&[Scope::Admin][..]));
        assert_eq!(scopes("GET", "/metrics"), Some(&[Scope::Admin][..]));
        assert_eq!(scopes("POST", "/api/chat"), Some(&[Scope::Inference][..]));
        assert_eq!(scopes("GET", "/"), Some(&[Scope::Inference][..]));
        assert_eq!(scopes("POST", "/api/pull"), Some(&[Scope::Admin, Scope::Models][..]));
        assert_eq!(scopes("DELETE", "/api/delete"), Some(&[Scope::Admin, Scope::Models][..]));
        assert_eq!(scopes("HEAD", "/api/blobs/sha256:ab"), Some(&[Scope::Admin, Scope::Models][..]));
    }

    #[test]
    fn keys_match_exactly() {
        let keys = vec![ApiKey {
            name: "a".into(),
            secret: "secret-one".into(),
            scopes: vec![Scope::Inference],
            limits: crate::config::KeyLimits::default(),
        }];
        assert!(find_key(&keys, "secret-one").is_some());
        assert!(find_key(&keys, "secret-on").is_none());
        assert!(find_key(&keys, "secret-onf").is_none());
    }
}
