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

pub mod anthropic;
mod request;
mod response;
pub mod responses;
pub mod sse;
mod stream;
mod time;

use bytes::Bytes;
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

/// An incremental stream translation: the upstream's body in one framing, the client's in
/// another, whatever the split of the input (the same bytes out for any split). Translations
/// through chat completions chain two of these with [`Chain`].
pub trait StreamTranslator: Send {
    /// Feeds raw upstream bytes; returns the complete lines or events they produced.
    fn push(&mut self, bytes: &[u8]) -> Vec<Bytes>;
    /// At the upstream's EOF: the last lines or events, `Ok(None)` when the stream was already
    /// over, or [`TranslateError::StreamEndedEarly`] when the upstream never finished its answer.
    fn finish(&mut self) -> Result<Option<Bytes>, TranslateError>;
    /// Whether the stream is over (its final event or an error event was produced).
    fn is_finished(&self) -> bool;
    /// The error that ended the stream, if any.
    fn error(&self) -> Option<&str>;
    /// The translated error event for a failure keel noticed itself (`None` where the framing has
    /// none).
    fn error_event(&self, message: &str) -> Option<Bytes>;
}

/// The most tool calls one streamed answer may carry, in every stream translation.
pub(crate) const MAX_TOOL_CALLS: usize = 1024;

/// Where a stream translation is: still streaming, or over (its final event written, or an
/// error event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamState {
    Streaming,
    Done,
    Failed,
}

impl StreamTranslator for SseToNdjson {
    fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        SseToNdjson::push(self, bytes)
    }
    fn finish(&mut self) -> Result<Option<Bytes>, TranslateError> {
        SseToNdjson::finish(self)
    }
    fn is_finished(&self) -> bool {
        SseToNdjson::is_finished(self)
    }
    fn error(&self) -> Option<&str> {
        SseToNdjson::error(self)
    }
    fn error_event(&self, message: &str) -> Option<Bytes> {
        Some(ollama_error_line(message))
    }
}

impl<T: StreamTranslator + ?Sized> StreamTranslator for Box<T> {
    fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        (**self).push(bytes)
    }
    fn finish(&mut self) -> Result<Option<Bytes>, TranslateError> {
        (**self).finish()
    }
    fn is_finished(&self) -> bool {
        (**self).is_finished()
    }
    fn error(&self) -> Option<&str> {
        (**self).error()
    }
    fn error_event(&self, message: &str) -> Option<Bytes> {
        (**self).error_event(message)
    }
}

/// Two translations one after the other (the upstream's framing → chat completions → the
/// client's).
pub struct Chain<A, B> {
    first: A,
    second: B,
}

impl<A: StreamTranslator, B: StreamTranslator> Chain<A, B> {
    /// `first`'s output is fed to `second`.
    pub fn new(first: A, second: B) -> Chain<A, B> {
        Chain { first, second }
    }
}

impl<A: StreamTranslator, B: StreamTranslator> StreamTranslator for Chain<A, B> {
    fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        for piece in self.first.push(bytes) {
            out.extend(self.second.push(&piece));
        }
        out
    }
    fn finish(&mut self) -> Result<Option<Bytes>, TranslateError> {
        let mut out = match self.first.finish()? {
            Some(last) => self.second.push(&last),
            None => Vec::new(),
        };
        out.extend(self.second.finish()?);
        Ok(join(out))
    }
    fn is_finished(&self) -> bool {
        self.second.is_finished()
    }
    fn error(&self) -> Option<&str> {
        self.first.error().or_else(|| self.second.error())
    }
    fn error_event(&self, message: &str) -> Option<Bytes> {
        self.second.error_event(message)
    }
}

/// Several pieces as one (`None` when there are none).
fn join(pieces: Vec<Bytes>) -> Option<Bytes> {
    match pieces.len() {
        0 => None,
        1 => pieces.into_iter().next(),
        _ => Some(Bytes::from(pieces.concat())),
    }
}

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
