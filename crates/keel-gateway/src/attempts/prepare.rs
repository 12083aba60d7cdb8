//! One target's request: the model renamed where the target serves the route under another name,
//! the structured-output fields (`format`, `response_format`, `text.format`, `output_format`) dropped for an upstream that must not get them, or the request
//! translated for an upstream that does not speak the client's API (the bridge) — every other
//! field kept as sent.

use axum::response::IntoResponse;
use bytes::Bytes;
use keel_types::TargetId;
use keel_upstream::{RequestBody, full_body};

use super::request::{Payload, Sent};
use crate::endpoint::{Endpoint, EndpointKind};
use crate::error::{InDialect, ProxyError};
use crate::state::UpstreamHandle;

/// One target's request: its body and path, and for a bridged call whether it asked for a stream
/// and the client's request as JSON.
pub(super) struct Prepared {
    pub(super) body: RequestBody,
    pub(super) path: String,
    pub(super) stream_requested: bool,
    pub(super) request: Option<std::sync::Arc<serde_json::Value>>,
}

/// Prepares the request for one target: the model renamed and `format` dropped where the target
/// needs it, or translated for an upstream of another API (`bridge`). `Err(Some(_))` when keel
/// answers itself (a translation error, or an answer the bridge gives without a call);
/// `Err(None)` when a body streamed through was already sent and cannot be sent again.
pub(super) fn prepare_target(
    endpoint: Endpoint,
    target: &TargetId,
    requested_model: &str,
    path_and_query: &str,
    payload: &mut Payload,
    handle: &UpstreamHandle,
    bridge: Option<crate::bridge::Bridge>,
) -> Result<Prepared, Option<Box<Sent>>> {
    let keel_answer = |err: ProxyError| Some(Box::new(Sent::keel(InDialect(endpoint.dialect, err).into_response())));
    if let Some(err) = crate::bridge::cannot_serve(endpoint, &handle.upstream) {
        return Err(keel_answer(ProxyError::Translate(err)));
    }
    let drop_format = !handle.forward_format
        && endpoint.kind == EndpointKind::ModelInBody
        && matches!(&payload, Payload::Bytes(bytes) if mentions_format(bytes));
    match (payload, bridge) {
        (Payload::Bytes(bytes), Some(kind)) => {
            let stripped = if drop_format { Some(rewrite_body(bytes, None, true).map_err(keel_answer)?) } else { None };
            let bytes = stripped.as_ref().unwrap_or(bytes);
            match crate::bridge::request(kind, bytes, target.model_for(requested_model)) {
                Ok(crate::bridge::Bridged::Call { path, body, stream, request }) => Ok(Prepared {
                    body: full_body(body),
                    path: path.to_owned(),
                    stream_requested: stream,
                    request: Some(request),
                }),
                Ok(crate::bridge::Bridged::Answer(value)) => {
                    Err(Some(Box::new(Sent::keel((http::StatusCode::OK, axum::Json(value)).into_response()))))
                }
                Err(err) => Err(keel_answer(ProxyError::Translate(err))),
            }
        }
        (Payload::Bytes(bytes), None) => {
            let rename = match &target.model {
                Some(renamed) if endpoint.kind == EndpointKind::ModelInBody && *renamed != requested_model => {
                    Some(renamed.as_str())
                }
                _ => None,
            };
            let body = if rename.is_some() || drop_format {
                full_body(rewrite_body(bytes, rename, drop_format).map_err(keel_answer)?)
            } else {
                full_body(bytes.clone())
            };
            let path = match (&target.model, endpoint.kind) {
                (Some(renamed), EndpointKind::ModelInPath) => format!("/v1/models/{renamed}"),
                _ => path_and_query.to_owned(),
            };
            Ok(Prepared { body, path, stream_requested: false, request: None })
        }
        (Payload::Stream(body), _) => match body.take() {
            Some(body) => {
                Ok(Prepared { body, path: path_and_query.to_owned(), stream_requested: false, request: None })
            }
            None => Err(None),
        },
    }
}

/// Rewrites the fields a target needs changed — `model` for a target that serves the route under
/// another name, `format` / `response_format` removed for an upstream that must not get them —
/// every other field keeps its value and order.
fn rewrite_body(body: &[u8], model: Option<&str>, drop_format: bool) -> Result<Bytes, ProxyError> {
    let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| ProxyError::BadBody(keel_upstream::WireError::Malformed(e.to_string())))?;
    if let Some(model) = model {
        value.insert("model".into(), serde_json::Value::String(model.to_owned()));
        value.remove("name");
    }
    if drop_format {
        drop_formats(&mut value);
    }
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| ProxyError::BadBody(keel_upstream::WireError::Malformed(e.to_string())))
}

/// Removes every structured-output field: Ollama `format`, OpenAI `response_format`, Anthropic
/// `output_format` and `output_config.format`, Responses `text.format` (a `text` or
/// `output_config` left empty goes too).
fn drop_formats(body: &mut serde_json::Map<String, serde_json::Value>) {
    for field in ["format", "response_format", "output_format"] {
        body.remove(field);
    }
    for parent in ["text", "output_config"] {
        if let Some(serde_json::Value::Object(inner)) = body.get_mut(parent) {
            inner.remove("format");
            if inner.is_empty() {
                body.remove(parent);
            }
        }
    }
}

/// True when the body may carry a structured-output field (`format`, `response_format`,
/// `text.format`, `output_format`, `output_config.format`): a cheap byte search.
pub(crate) fn mentions_format(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"format\"").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_keeps_other_fields_in_order() {
        let out = rewrite_body(br#"{"model":"a","z":1,"messages":[{"role":"user"}],"x_new":true}"#, Some("b"), false)
            .unwrap();
        assert_eq!(&out[..], br#"{"model":"b","z":1,"messages":[{"role":"user"}],"x_new":true}"#);
    }

    #[test]
    fn formats_of_the_responses_and_messages_apis_are_dropped() {
        let body = br#"{"model":"a","text":{"format":{"type":"json_object"},"verbosity":"low"},"output_format":{"type":"json_schema"},"output_config":{"format":{}}}"#;
        assert!(mentions_format(body));
        assert_eq!(&rewrite_body(body, None, true).unwrap()[..], br#"{"model":"a","text":{"verbosity":"low"}}"#);
    }

    #[test]
    fn format_is_dropped_only_when_asked() {
        let body = br#"{"model":"a","format":{"type":"object"},"response_format":{"type":"json_object"},"z":1}"#;
        assert!(mentions_format(body));
        assert!(!mentions_format(br#"{"model":"a"}"#));
        assert_eq!(&rewrite_body(body, None, true).unwrap()[..], br#"{"model":"a","z":1}"#);
    }
}
