//! Stage: API keys. `Authorization: Bearer <key>` (or `X-API-Key: <key>`, or a browser's
//! `Authorization: Basic` with the key as password) is checked against
//! `[auth]`'s keys and the keys in the store (`keel keys`, see [`crate::api_keys`]), with per-key
//! scopes.
//!
//! Takes the request head; gives it on without the key (the model server never sees it) and with
//! a [`Caller`] in its extensions, naming the key and carrying its limits; answers by itself 401
//! (no or unknown key) or 403 (the key lacks the scope), in the path's dialect. Without keys
//! (none in `[auth]`, none ever in the store) everything passes, with no [`Caller`], and
//! `Authorization` is left for the upstream.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header;
use http::request::Parts;
use keel_types::Dialect;

use crate::client::Caller;
use crate::config::Scope;
use crate::error::ProxyError;
use crate::state::Gateway;

/// The scopes of which a request needs one; `None` for paths open to everyone (health checks).
fn required_scopes(method: &http::Method, path: &str) -> Option<&'static [Scope]> {
    if path == "/keel/health" {
        None
    } else if path == "/keel/events" || path == "/keel/events/alertmanager" {
        Some(&[Scope::Admin, Scope::Events])
    } else if crate::endpoint::is_keel_own(path) {
        Some(&[Scope::Admin])
    } else if crate::endpoint::is_model_management(method, path) {
        Some(&[Scope::Admin, Scope::Models])
    } else {
        Some(&[Scope::Inference])
    }
}

/// Middleware for keel's own endpoints: passes requests with a key holding the needed scope;
/// answers 401/403 otherwise. Installed when keys may exist (`[auth]` or a key store); the key is
/// consumed here and not forwarded. While no key exists, `Authorization` passes through untouched
/// (the upstream may want it).
pub(crate) async fn require_key(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match admit(&gateway, &mut parts) {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(mut refused) => {
            // A browser opening the dashboard can send no bearer key: it is asked for one as a
            // password (any user name), which it then sends with every request of the page.
            if parts.uri.path().starts_with("/keel/ui") && refused.status() == http::StatusCode::UNAUTHORIZED {
                refused.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static(
                        "Basic realm=\"keel: an API key with the admin scope as password\", charset=\"UTF-8\"",
                    ),
                );
            }
            refused
        }
    }
}

/// The password of an `Authorization: Basic` header (browsers send the dashboard's key so).
fn basic_password(value: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, password)| password.to_owned())
}

/// The header Anthropic's clients (and many gateways') carry a key in.
const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// Checks a request's key against `[auth]` and the store's keys (everything passes while there
/// are none) and removes the key, which was for keel: the model server never sees it. The refusal
/// is a 401/403 in the path's dialect.
#[allow(clippy::result_large_err)] // the refusal is the response itself, built once
pub(crate) fn admit(gateway: &Gateway, request: &mut Parts) -> Result<(), Response> {
    let keys = &gateway.inner.keys;
    if !keys.required() {
        return Ok(());
    }
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
    // `X-API-Key` (Anthropic's clients send it) when there is no bearer key; a Basic password
    // (a browser on the dashboard) when there is neither.
    let basic = || request.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(basic_password);
    let (carrier, presented) = match bearer {
        Some(bearer) => (header::AUTHORIZATION, Some(Cow::Borrowed(bearer))),
        None => match request.headers.get(X_API_KEY).and_then(|v| v.to_str().ok()) {
            Some(key) => (X_API_KEY, Some(Cow::Borrowed(key.trim()))),
            None => (header::AUTHORIZATION, basic().map(Cow::Owned)),
        },
    };
    let Some(key) = presented.and_then(|p| keys.find(&p)) else {
        return Err(ProxyError::Unauthorized.into_response_in(dialect));
    };
    if !scopes.iter().any(|scope| key.scopes.contains(scope)) {
        let scope = match scopes[0] {
            Scope::Inference => "inference",
            Scope::Admin if scopes.get(1) == Some(&Scope::Events) => "admin' or 'events",
            Scope::Admin if scopes.len() > 1 => "admin' or 'models",
            Scope::Admin => "admin",
            Scope::Models => "models",
            Scope::Events => "events",
        };
        return Err(ProxyError::Forbidden { key: key.name.to_string(), scope }.into_response_in(dialect));
    }
    request.headers.remove(carrier);
    key.requests.increment(1);
    let admin = key.scopes.contains(&Scope::Admin);
    request.extensions.insert(Caller { name: Arc::clone(&key.name), limits: key.limits, admin });
    Ok(())
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// A browser's (or anyone's) Authorization header never panics the Basic parser.
        #[test]
        fn basic_headers_never_panic(value in ".{0,200}") {
            let _ = basic_password(&value);
        }
    }

    #[test]
    fn basic_passwords_are_the_key() {
        // base64("dashboard:k3y") and base64("k3y") (no colon: not a user:password pair).
        assert_eq!(basic_password("Basic ZGFzaGJvYXJkOmszeQ==").as_deref(), Some("k3y"));
        assert_eq!(basic_password("Basic azN5"), None);
        assert_eq!(basic_password("Bearer x"), None);
        assert_eq!(basic_password("Basic !!!"), None);
    }

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
        assert_eq!(scopes("POST", "/keel/events"), Some(&[Scope::Admin, Scope::Events][..]));
        assert_eq!(scopes("GET", "/keel/incidents"), Some(&[Scope::Admin][..]));
        assert_eq!(scopes("DELETE", "/api/delete"), Some(&[Scope::Admin, Scope::Models][..]));
        assert_eq!(scopes("HEAD", "/api/blobs/sha256:ab"), Some(&[Scope::Admin, Scope::Models][..]));
    }
}
