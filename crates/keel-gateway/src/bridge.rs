//! Serving Ollama-API clients from OpenAI-dialect upstreams (llama.cpp `llama-server`, vLLM,
//! LM Studio): `/api/chat` and `/api/generate` requests are translated to `/v1/chat/completions`
//! (or `/v1/completions` for raw generate) and the answers back, streams included, by
//! [`keel_upstream::translate`]. Every other endpoint is forwarded as it is.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use keel_types::{Dialect, FailureClass};
use keel_upstream::ResponseBody;
use keel_upstream::translate::{self, OllamaEndpoint, TranslateError};

use crate::endpoint::{Endpoint, EndpointKind};

/// Largest whole (non-streamed) answer keel reads to translate.
const MAX_ANSWER: usize = 64 << 20;

/// Whether a request to `endpoint` sent to an upstream of `dialect` is translated, and as what.
pub(crate) fn bridge_for(endpoint: Endpoint, upstream: Dialect) -> Option<OllamaEndpoint> {
    if upstream != Dialect::OpenAi || endpoint.kind != EndpointKind::ModelInBody {
        return None;
    }
    match endpoint.label {
        "/api/chat" => Some(OllamaEndpoint::Chat),
        "/api/generate" => Some(OllamaEndpoint::Generate),
        _ => None,
    }
}

/// What to do with a translated request.
pub(crate) enum Bridged {
    /// Send `body` to `path` on the upstream; the client asked for a stream or not.
    Call { path: &'static str, body: Bytes, stream: bool },
    /// Answer locally without calling a model (Ollama's "load the model" requests).
    Answer(serde_json::Value),
}

/// Translates an Ollama request body for an OpenAI upstream that serves it as `model`.
pub(crate) fn request(kind: OllamaEndpoint, body: &[u8], model: &str) -> Result<Bridged, TranslateError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| TranslateError::InvalidRequest(e.to_string()))?;
    if let Some(object) = value.as_object_mut() {
        object.insert("model".into(), serde_json::Value::String(model.to_owned()));
    }
    if let Some(answer) = translate::ollama_preload_response(kind, &value) {
        return Ok(Bridged::Answer(answer));
    }
    let translated = match kind {
        OllamaEndpoint::Chat => translate::ollama_chat_to_openai(&value)?,
        OllamaEndpoint::Generate => translate::ollama_generate_to_openai(&value)?,
    };
    let body = serde_json::to_vec(&translated.body).map_err(|e| TranslateError::InvalidRequest(e.to_string()))?;
    Ok(Bridged::Call { path: translated.path, body: Bytes::from(body), stream: translated.stream })
}

/// Reads a whole upstream answer (bounded).
async fn read(body: ResponseBody) -> Result<Bytes, TranslateError> {
    Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| TranslateError::InvalidResponse(format!("reading the answer: {e}")))
}

/// Translates a whole (non-streamed) successful answer: the Ollama JSON body, or why it failed
/// (with the failure class the breaker should count).
pub(crate) async fn whole_answer(
    kind: OllamaEndpoint,
    body: ResponseBody,
    requested_model: &str,
    started: Instant,
) -> Result<Bytes, (FailureClass, TranslateError)> {
    let bytes = read(body).await.map_err(|e| (FailureClass::StreamBroken, e))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| (FailureClass::ServerError, TranslateError::InvalidResponse(format!("not JSON: {e}"))))?;
    let answer = translate::openai_response_to_ollama(kind, &value, requested_model, Some(started.elapsed()))
        .map_err(|e| (e.failure_class(), e))?;
    serde_json::to_vec(&answer)
        .map(Bytes::from)
        .map_err(|e| (FailureClass::ServerError, TranslateError::InvalidResponse(e.to_string())))
}

/// Translates an upstream error answer into Ollama's `{"error": "..."}` with the same status.
pub(crate) async fn error_answer(status: http::StatusCode, body: ResponseBody) -> Bytes {
    let bytes = read(body).await.unwrap_or_default();
    translate::openai_error_to_ollama(status.as_u16(), &bytes)
}
