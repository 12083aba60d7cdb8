//! Serving every client API from every upstream dialect. A request an upstream does not speak is
//! translated through chat completions (the API every OpenAI-compatible server has), and the
//! answer back, streams included, by the pure functions of [`keel_upstream::translate`]:
//!
//! | client speaks                    | Ollama upstream | OpenAI-dialect upstream | Anthropic API   |
//! |----------------------------------|-----------------|-------------------------|-----------------|
//! | `/api/chat`, `/api/generate`     | as sent         | → chat completions      | → chat → Messages |
//! | `/v1/chat/completions`           | as sent         | as sent                 | → Messages      |
//! | `/v1/messages` (Anthropic)       | as sent         | → chat completions      | as sent         |
//! | `/v1/responses` (OpenAI)         | as sent         | → chat completions      | → chat → Messages |
//!
//! Every other endpoint is forwarded as it is.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use keel_types::{Dialect, FailureClass};
use keel_upstream::ResponseBody;
use keel_upstream::translate::{
    self, CHAT_COMPLETIONS_PATH, Chain, OllamaEndpoint, SseToNdjson, StreamTranslator, TranslateError, anthropic,
    responses,
};
use serde_json::Value;

use crate::endpoint::{Endpoint, EndpointKind};

/// Largest whole (non-streamed) answer keel reads to translate.
const MAX_ANSWER: usize = 64 << 20;

/// The API a client speaks, among those keel can translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientApi {
    /// Ollama's `/api/chat`.
    OllamaChat,
    /// Ollama's `/api/generate`.
    OllamaGenerate,
    /// OpenAI's `/v1/chat/completions`.
    Chat,
    /// Anthropic's `/v1/messages`.
    Messages,
    /// OpenAI's `/v1/responses`.
    Responses,
}

impl ClientApi {
    /// The API of an endpoint keel can translate.
    pub(crate) fn of(endpoint: Endpoint) -> Option<ClientApi> {
        if endpoint.kind != EndpointKind::ModelInBody {
            return None;
        }
        match endpoint.label {
            "/api/chat" => Some(ClientApi::OllamaChat),
            "/api/generate" => Some(ClientApi::OllamaGenerate),
            "/v1/chat/completions" => Some(ClientApi::Chat),
            "/v1/messages" => Some(ClientApi::Messages),
            "/v1/responses" => Some(ClientApi::Responses),
            _ => None,
        }
    }

    /// Whether an upstream of `dialect` serves this API itself.
    fn native_to(self, dialect: Dialect) -> bool {
        match dialect {
            Dialect::Ollama => true,
            Dialect::OpenAi => self == ClientApi::Chat,
            Dialect::Anthropic => self == ClientApi::Messages,
        }
    }
}

/// A translated call: what the client speaks, what the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bridge {
    pub(crate) client: ClientApi,
    pub(crate) upstream: Dialect,
}

/// Whether a request to `endpoint` sent to an upstream of `dialect` is translated.
pub(crate) fn bridge_for(endpoint: Endpoint, upstream: Dialect) -> Option<Bridge> {
    let client = ClientApi::of(endpoint)?;
    (!client.native_to(upstream)).then_some(Bridge { client, upstream })
}

/// Why an upstream of `dialect` cannot serve `endpoint` at all, when it cannot: token counting
/// (`/v1/messages/count_tokens`) has no chat-completions equivalent.
pub(crate) fn cannot_serve(endpoint: Endpoint, upstream: &keel_upstream::Upstream) -> Option<TranslateError> {
    (endpoint.label == "/v1/messages/count_tokens" && upstream.dialect == Dialect::OpenAi).then(|| {
        TranslateError::InvalidRequest(format!(
            "upstream '{}' speaks the OpenAI dialect, which has no token counting: /v1/messages/count_tokens is \
             served only by Ollama and Anthropic-API upstreams",
            upstream.name
        ))
    })
}

/// What to do with a translated request.
pub(crate) enum Bridged {
    /// Send `body` to `path` on the upstream; the client asked for a stream or not. `request` is
    /// the client's request (the Responses API echoes its parameters in the answer).
    Call { path: &'static str, body: Bytes, stream: bool, request: Arc<Value> },
    /// Answer locally without calling a model (Ollama's "load the model" requests).
    Answer(Value),
}

/// Translates a client's request body for an upstream that serves it as `model`.
pub(crate) fn request(bridge: Bridge, body: &[u8], model: &str) -> Result<Bridged, TranslateError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| TranslateError::InvalidRequest(e.to_string()))?;
    if let Some(object) = value.as_object_mut() {
        object.insert("model".into(), Value::String(model.to_owned()));
    }
    let stream = value.get("stream").and_then(Value::as_bool);
    let (path, chat, stream) = match bridge.client {
        ClientApi::OllamaChat | ClientApi::OllamaGenerate => {
            let kind = ollama_endpoint(bridge.client);
            if let Some(answer) = translate::ollama_preload_response(kind, &value) {
                return Ok(Bridged::Answer(answer));
            }
            let translated = match kind {
                OllamaEndpoint::Chat => translate::ollama_chat_to_openai(&value)?,
                OllamaEndpoint::Generate => translate::ollama_generate_to_openai(&value)?,
            };
            (translated.path, translated.body, translated.stream)
        }
        ClientApi::Chat => (CHAT_COMPLETIONS_PATH, value.clone(), stream.unwrap_or(false)),
        ClientApi::Messages => (CHAT_COMPLETIONS_PATH, anthropic::messages_to_chat(&value)?, stream.unwrap_or(false)),
        ClientApi::Responses => (CHAT_COMPLETIONS_PATH, responses::responses_to_chat(&value)?, stream.unwrap_or(false)),
    };
    let (path, upstream_body) = match bridge.upstream {
        Dialect::Anthropic if path != CHAT_COMPLETIONS_PATH => {
            return Err(TranslateError::InvalidRequest(
                "a raw generate request (raw: true, or no chat template) cannot be sent to an Anthropic-API upstream; \
                 send /api/chat instead"
                    .into(),
            ));
        }
        Dialect::Anthropic => (anthropic::MESSAGES_PATH, anthropic::chat_to_messages_request(&chat)?),
        Dialect::Ollama | Dialect::OpenAi => (path, chat),
    };
    let body = serde_json::to_vec(&upstream_body).map_err(|e| TranslateError::InvalidRequest(e.to_string()))?;
    Ok(Bridged::Call { path, body: Bytes::from(body), stream, request: Arc::new(value) })
}

/// The Ollama endpoint of an Ollama client API (chat for the others).
fn ollama_endpoint(client: ClientApi) -> OllamaEndpoint {
    match client {
        ClientApi::OllamaGenerate => OllamaEndpoint::Generate,
        _ => OllamaEndpoint::Chat,
    }
}

/// Reads a whole upstream answer (bounded).
async fn read(body: ResponseBody) -> Result<Bytes, TranslateError> {
    Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| TranslateError::InvalidResponse(format!("reading the answer: {e}")))
}

/// Translates a whole (non-streamed) successful answer into the client's API, or says why it
/// failed (with the failure class the breaker should count).
pub(crate) async fn whole_answer(
    bridge: Bridge,
    request: &Value,
    body: ResponseBody,
    requested_model: &str,
    started: Instant,
) -> Result<Bytes, (FailureClass, TranslateError)> {
    let bytes = read(body).await.map_err(|e| (FailureClass::StreamBroken, e))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| (FailureClass::ServerError, TranslateError::InvalidResponse(format!("not JSON: {e}"))))?;
    let answer =
        translate_answer(bridge, request, &value, requested_model, started).map_err(|e| (e.failure_class(), e))?;
    serde_json::to_vec(&answer)
        .map(Bytes::from)
        .map_err(|e| (FailureClass::ServerError, TranslateError::InvalidResponse(e.to_string())))
}

fn translate_answer(
    bridge: Bridge,
    request: &Value,
    value: &Value,
    requested_model: &str,
    started: Instant,
) -> Result<Value, TranslateError> {
    let converted;
    let chat = match bridge.upstream {
        Dialect::Anthropic => {
            converted = anthropic::messages_to_chat_response(value)?;
            &converted
        }
        Dialect::Ollama | Dialect::OpenAi => value,
    };
    match bridge.client {
        ClientApi::OllamaChat | ClientApi::OllamaGenerate => translate::openai_response_to_ollama(
            ollama_endpoint(bridge.client),
            chat,
            requested_model,
            Some(started.elapsed()),
        ),
        ClientApi::Chat => Ok(chat.clone()),
        ClientApi::Messages => anthropic::chat_to_messages_response(chat, requested_model),
        ClientApi::Responses => responses::chat_to_responses_response(chat, request, requested_model),
    }
}

/// The translation of a streamed answer into the client's API, and its content type.
pub(crate) fn stream_translator(
    bridge: Bridge,
    request: &Value,
    requested_model: &str,
    started: Instant,
) -> Option<(Box<dyn StreamTranslator>, &'static str)> {
    let to_client: Option<Box<dyn StreamTranslator>> = match bridge.client {
        ClientApi::OllamaChat | ClientApi::OllamaGenerate => Some(Box::new(
            SseToNdjson::new(ollama_endpoint(bridge.client), requested_model.to_owned()).with_start(started),
        )),
        ClientApi::Chat => None,
        ClientApi::Messages => Some(Box::new(anthropic::ChatSseToMessagesSse::new(requested_model.to_owned()))),
        ClientApi::Responses => Some(Box::new(responses::ChatSseToResponsesSse::new(request, requested_model))),
    };
    let from_upstream: Option<Box<dyn StreamTranslator>> = match bridge.upstream {
        Dialect::Anthropic => Some(Box::new(anthropic::MessagesSseToChatSse::new())),
        Dialect::Ollama | Dialect::OpenAi => None,
    };
    let content_type = match bridge.client {
        ClientApi::OllamaChat | ClientApi::OllamaGenerate => "application/x-ndjson",
        _ => "text/event-stream",
    };
    let translator: Box<dyn StreamTranslator> = match (from_upstream, to_client) {
        (Some(first), Some(second)) => Box::new(Chain::new(first, second)),
        (Some(only), None) | (None, Some(only)) => only,
        // Not a bridge: the client's API is the upstream's.
        (None, None) => return None,
    };
    Some((translator, content_type))
}

/// Translates an upstream error answer into the client's dialect, with the same status.
pub(crate) async fn error_answer(dialect: Dialect, status: http::StatusCode, body: ResponseBody) -> Bytes {
    let bytes = read(body).await.unwrap_or_default();
    let message = translate::openai_error_message(status.as_u16(), &bytes);
    keel_upstream::ErrorBody::new(dialect, status, &message).body
}
