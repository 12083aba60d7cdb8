//! The client's response from a target's answer: hop-by-hop headers stripped, `X-Keel-Target`
//! added, the body read whole, relayed as it arrives, or translated for an Ollama-API client of an
//! OpenAI-dialect upstream; each with its bookkeeping ([`Completion`]).

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use keel_types::Dialect;
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
    convert: Option<keel_upstream::translate::SseToNdjson>,
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

/// Answers an Ollama-API client from an OpenAI-dialect upstream: streams translated line by line,
/// whole answers and errors translated at once.
pub(super) async fn bridge_response(
    gateway: &Gateway,
    upstream_response: http::Response<keel_upstream::ResponseBody>,
    mut answer: Answer,
    answering: &str,
    idle_timeout: Duration,
    kind: keel_upstream::translate::OllamaEndpoint,
    stream: bool,
) -> Response {
    let status = upstream_response.status();
    if status.is_success() && stream {
        let (mut head, body) = upstream_response.into_parts();
        head.headers.remove(header::CONTENT_LENGTH);
        head.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        let convert = keel_upstream::translate::SseToNdjson::new(kind, answer.model.clone()).with_start(answer.started);
        let response = http::Response::from_parts(head, body);
        return relay_response(gateway, response, answer, answering, idle_timeout, false, Some(convert));
    }
    let (status, bytes, failure) = if status.is_success() {
        match crate::bridge::whole_answer(kind, upstream_response.into_body(), &answer.model, answer.started).await {
            Ok(bytes) => (status, bytes, None),
            Err((class, err)) => {
                let status = err.status();
                let body = keel_upstream::ErrorBody::new(Dialect::Ollama, status, &err.to_string()).body;
                answer.head_failure = Some(class);
                (status, body, Some((class, err.to_string())))
            }
        }
    } else {
        (status, crate::bridge::error_answer(status, upstream_response.into_body()).await, None)
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
