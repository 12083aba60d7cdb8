//! Dialect translation: Ollama clients served by OpenAI-compatible upstreams.
//!
//! An upstream configured with `dialect = "openai"` (llama.cpp's `llama-server`, vLLM, LM Studio)
//! speaks `/v1/chat/completions` (and `/v1/completions`), while the client speaks Ollama's
//! `/api/chat` or `/api/generate`. This module holds the pure translation in both directions; it
//! does no I/O and keeps no clock except where a caller asks for wall-clock durations.
//!
//! - Requests: [`ollama_chat_to_openai`], [`ollama_generate_to_openai`] give the path to call and
//!   the body to send ([`Translated`]); [`ollama_preload_response`] answers Ollama's "load the
//!   model" requests (no messages, empty prompt) locally, as Ollama does, without calling a model.
//! - Whole responses: [`openai_chat_to_ollama_chat`], [`openai_chat_to_ollama_generate`] (and
//!   [`openai_response_to_ollama`] with a measured duration).
//! - Streams: [`SseToNdjson`] turns the upstream's server-sent events into Ollama's NDJSON lines,
//!   incrementally, whatever the split of the bytes.
//! - Errors: [`openai_error_to_ollama`] turns an OpenAI-style error body into `{"error": "..."}`;
//!   [`ollama_error_line`] is the same as one NDJSON line for a stream that already started.
//!
//! Field names and shapes follow Ollama's `api/types.go` (`ChatRequest`, `ChatResponse`,
//! `GenerateResponse`, `Metrics`) on the Ollama side and the OpenAI chat-completions API (as
//! `llama-server` and vLLM implement it) on the other.

mod request;
mod response;
mod stream;
mod time;

use http::StatusCode;
use keel_types::FailureClass;

pub use request::{
    CHAT_COMPLETIONS_PATH, COMPLETIONS_PATH, Translated, ollama_chat_to_openai, ollama_generate_to_openai,
    ollama_preload_response,
};
pub use response::{
    ollama_error_line, openai_chat_to_ollama_chat, openai_chat_to_ollama_generate, openai_error_message,
    openai_error_to_ollama, openai_response_to_ollama,
};
pub use stream::SseToNdjson;
pub use time::now_rfc3339;

/// Which Ollama endpoint the client called; decides the shape of the answer (`message` for chat,
/// `response` for generate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OllamaEndpoint {
    /// `POST /api/chat`.
    Chat,
    /// `POST /api/generate`.
    Generate,
}

/// Why a translation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request is malformed or cannot be expressed for an OpenAI-compatible upstream
    /// (the message is what to show the client, in Ollama's wording where Ollama has one).
    #[error("{0}")]
    InvalidRequest(String),
    /// The upstream answered success with a body that is not an OpenAI completion.
    #[error("invalid response from upstream: {0}")]
    InvalidResponse(String),
    /// The upstream reported an error inside a success response (`{"error": ...}` with status 200).
    #[error("{0}")]
    Upstream(String),
    /// The upstream's stream ended (EOF) before a `finish_reason` or `[DONE]` arrived.
    #[error("stream ended early: the upstream closed the stream before the response was complete")]
    StreamEndedEarly,
}

impl TranslateError {
    /// The HTTP status to answer the client with when nothing has been sent yet.
    pub fn status(&self) -> StatusCode {
        match self {
            TranslateError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            TranslateError::Upstream(_) => StatusCode::INTERNAL_SERVER_ERROR,
            TranslateError::InvalidResponse(_) | TranslateError::StreamEndedEarly => StatusCode::BAD_GATEWAY,
        }
    }

    /// How the breaker and retry logic should count this failure.
    pub fn failure_class(&self) -> FailureClass {
        match self {
            TranslateError::InvalidRequest(_) => FailureClass::BadRequest,
            TranslateError::InvalidResponse(_) | TranslateError::Upstream(_) => FailureClass::ServerError,
            TranslateError::StreamEndedEarly => FailureClass::StreamBroken,
        }
    }
}

/// Ollama's `done_reason` for an OpenAI `finish_reason`. Ollama reports `"stop"` also when the
/// model called tools (its OpenAI layer turns `stop` + tool calls into `tool_calls`, the reverse of
/// this), and `"length"` when the token limit cut the answer.
pub(crate) fn done_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "length",
        _ => "stop",
    }
}
