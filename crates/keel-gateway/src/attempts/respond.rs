//! The client's response from a target's answer: hop-by-hop headers stripped, `X-Keel-Target`
//! added, the body read whole, relayed as it arrives, or translated for a client of another API
//! than the upstream's; each with its bookkeeping ([`Completion`]).

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use keel_upstream::strip_hop_headers;

use crate::relay::{Answer, Completion, relay};
use crate::state::Gateway;

/// Response header naming the target that answered (`upstream:model`).
pub(crate) const KEEL_TARGET: http::HeaderName = http::HeaderName::from_static("x-keel-target");
/// Response header: how many upstream calls were made, when more than one (the guard sets it
/// too, for its re-asks).
pub(crate) const KEEL_ATTEMPTS: http::HeaderName = http::HeaderName::from_static("x-keel-attempts");

/// An answer keel read whole, passed on with its bookkeeping recorded now.
pub(super) fn whole_response(
    gateway: &Gateway,
    mut head: http::response::Parts,
    bytes: Bytes,
    answer: Answer,
    answering: &str,
) -> Response {
    strip_hop_headers(&mut head.headers);
    head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    if let Ok(value) = HeaderValue::from_str(answering) {
        head.headers.insert(KEEL_TARGET, value);
    }
    let status = head.status;
    let mut completion = Completion::new(gateway.clone(), answer, status);
    completion.saw(&bytes);
    completion.end(None);
    Response::from_parts(head, Body::from(bytes))
}

/// Turns an upstream response into the client's, its body relayed as it arrives.
pub(super) fn relay_response(
    gateway: &Gateway,
    upstream_response: http::Response<keel_upstream::ResponseBody>,
    answer: Answer,
    answering: &str,
    idle_timeout: Duration,
    head_request: bool,
    convert: Option<Box<dyn keel_upstream::translate::StreamTranslator>>,
) -> Response {
    let (mut head, upstream_body) = upstream_response.into_parts();
    let status = head.status;
    strip_hop_headers(&mut head.headers);
    if let Ok(value) = HeaderValue::from_str(answering) {
        head.headers.insert(KEEL_TARGET, value);
    }
    let bodyless = head_request || matches!(status.as_u16(), 204 | 304);
    let dialect = answer.dialect;
    let completion = Completion::new(gateway.clone(), answer, status);
    let body = relay(upstream_body, &head.headers, dialect, idle_timeout, completion, bodyless, convert);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = head.headers;
    response
}

/// A bridged call's answer: how it was translated, whether it was asked as a stream, and the
/// client's request.
pub(super) struct Bridged {
    pub(super) bridge: crate::bridge::Bridge,
    pub(super) stream: bool,
    pub(super) request: Option<std::sync::Arc<serde_json::Value>>,
}

/// Answers a client from an upstream of another API: streams translated event by event, whole
/// answers and errors translated at once.
pub(super) async fn bridge_response(
    gateway: &Gateway,
    upstream_response: http::Response<keel_upstream::ResponseBody>,
    mut answer: Answer,
    answering: &str,
    idle_timeout: Duration,
    bridged: Bridged,
) -> Response {
    let status = upstream_response.status();
    let request = bridged.request.unwrap_or_default();
    if status.is_success()
        && bridged.stream
        && let Some((convert, content_type)) =
            crate::bridge::stream_translator(bridged.bridge, &request, &answer.model, answer.started)
    {
        let (mut head, body) = upstream_response.into_parts();
        head.headers.remove(header::CONTENT_LENGTH);
        head.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        let response = http::Response::from_parts(head, body);
        return relay_response(gateway, response, answer, answering, idle_timeout, false, Some(convert));
    }
    let dialect = answer.dialect;
    let (status, bytes, failure) = if status.is_success() {
        let body = upstream_response.into_body();
        match crate::bridge::whole_answer(bridged.bridge, &request, body, &answer.model, answer.started).await {
            Ok(bytes) => (status, bytes, None),
            Err((class, err)) => {
                let status = err.status();
                let body = keel_upstream::ErrorBody::new(dialect, status, &err.to_string()).body;
                answer.head_failure = Some(class);
                (status, body, Some((class, err.to_string())))
            }
        }
    } else {
        (status, crate::bridge::error_answer(dialect, status, upstream_response.into_body()).await, None)
    };
    let mut completion = Completion::new(gateway.clone(), answer, status);
    completion.saw(&bytes);
    completion.end(failure);
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    if let Ok(value) = HeaderValue::from_str(answering) {
        response.headers_mut().insert(KEEL_TARGET, value);
    }
    response
}
