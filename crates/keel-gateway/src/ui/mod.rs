//! The dashboard at `/keel/ui`: one page (HTML, CSS and JavaScript embedded in the binary, no
//! CDN) that shows upstreams and targets with their breakers and why they opened, request,
//! error and fallback rates, structured-output outcomes, breaker transitions as they happen, and
//! the sessions in the store with their transcripts. It is live over one SSE stream per tab
//! (`/keel/ui/events`, see [`feed`]); sessions are read on demand from `/keel/sessions`; the
//! last hours come from the store ([`timeline`]). Behind
//! the `admin` scope when keys are on (a browser is asked for the key as a password).

mod feed;
mod timeline;

pub(crate) use timeline::{record_loop, timeline};

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::state::Gateway;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// No script or style from anywhere but keel itself, no inline code, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// `GET /keel/ui`: the page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    asset(&headers, INDEX, "text/html; charset=utf-8")
}

/// `GET /keel/ui/{file}`: the page's script and style sheet.
pub(crate) async fn file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match file.as_str() {
        "app.js" => asset(&headers, SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => asset(&headers, STYLE, "text/css; charset=utf-8"),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(
                serde_json::json!({"error": format!("no dashboard file {file:?}: the dashboard is at /keel/ui")}),
            ),
        )
            .into_response(),
    }
}

/// An embedded file with an `ETag` (its content hash), answered 304 when the browser has it.
fn asset(headers: &HeaderMap, body: &'static str, content_type: &'static str) -> Response {
    let tag = format!("\"{:016x}-{}\"", fnv1a(body.as_bytes()), env!("CARGO_PKG_VERSION"));
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == tag);
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { body.into_response() };
    let set = response.headers_mut();
    set.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    set.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    set.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        set.insert(header::ETAG, tag);
    }
    response
}

/// A stable 64-bit hash of an asset, for its `ETag`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// How often an idle event stream sends a comment, so proxies and browsers keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /keel/ui/events`: the tab's live feed — `snapshot` events (keel's state, a second apart
/// while it changes) and `breaker` events (a transition, as it happens).
pub(crate) async fn events(State(gateway): State<Gateway>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let subscription = feed::subscribe(&gateway);
    let stream = futures_util::stream::unfold(Some(subscription), |state| async move {
        let mut subscription = state?;
        // The snapshot the tab has not seen yet first; then whichever comes next.
        if subscription.snapshot.has_changed().unwrap_or(false) {
            let snapshot = subscription.snapshot.borrow_and_update().clone();
            return Some((Ok(Event::default().event("snapshot").data(&*snapshot)), Some(subscription)));
        }
        tokio::select! {
            changed = subscription.snapshot.changed() => {
                changed.ok()?;
                let snapshot = subscription.snapshot.borrow_and_update().clone();
                Some((Ok(Event::default().event("snapshot").data(&*snapshot)), Some(subscription)))
            }
            event = subscription.events.recv() => match event {
                Ok(event) => Some((Ok(Event::default().event("breaker").data(&*event)), Some(subscription))),
                // A tab too slow for the transitions gets the next snapshot instead.
                Err(RecvError::Lagged(_)) => Some((Ok(Event::default().comment("lagged")), Some(subscription))),
                Err(RecvError::Closed) => None,
            },
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_small_and_reference_only_keel() {
        let weight = INDEX.len() + SCRIPT.len() + STYLE.len();
        assert!(weight < 64 * 1024, "the dashboard grew to {weight} bytes");
        for text in [INDEX, SCRIPT, STYLE] {
            // (The SVG namespace is a name, not an address anything is loaded from.)
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "no asset may load from elsewhere");
        }
        assert!(INDEX.contains("/keel/ui/app.js") && INDEX.contains("/keel/ui/app.css"));
    }

    #[test]
    fn etags_follow_the_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
