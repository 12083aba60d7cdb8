//! Anthropic's Messages API ⇄ OpenAI chat completions.
//!
//! keel translates through chat completions: a client speaking Anthropic's `/v1/messages` to an
//! OpenAI-compatible upstream goes Anthropic → chat ([`messages_to_chat`], then
//! [`chat_to_messages_response`] or [`ChatSseToMessagesSse`] for the answer); a client speaking
//! chat completions (or Ollama, or Responses, through their own chat translation) to an
//! Anthropic upstream goes chat → Anthropic ([`chat_to_messages_request`], then
//! [`messages_to_chat_response`] or [`MessagesSseToChatSse`]). Errors: [`error_to_anthropic`]
//! answers an Anthropic client for any upstream's error body, [`anthropic_error_message`] reads an
//! Anthropic upstream's.
//!
//! Everything here is pure: no I/O. Clocks and random ids appear only where a shape requires
//! them (generated `msg_…`/`toolu_…` ids, the `created` time of a chat completion); each function
//! says so. Shapes follow Anthropic's documented Messages API (request, response, streaming
//! events, errors, tool use) and OpenAI's chat-completions API (with `stream_options.include_usage`).

mod request;
mod response;
mod stream_to_chat;
mod stream_to_messages;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::response::{message_of, openai_error_message};
use super::sse::write_event;
use crate::anthropic_error_type;

pub use request::{DEFAULT_MAX_TOKENS, chat_to_messages_request, messages_to_chat};
pub use response::{chat_to_messages_response, messages_to_chat_response};
pub use stream_to_chat::MessagesSseToChatSse;
pub use stream_to_messages::ChatSseToMessagesSse;

/// Anthropic's Messages path.
pub const MESSAGES_PATH: &str = "/v1/messages";

use super::MAX_TOOL_CALLS;

/// Any error body (Ollama's `{"error": "…"}`, OpenAI's `{"error": {"message", …}}`, an Anthropic
/// one, or any bytes) as Anthropic's `{"type": "error", "error": {"type", "message"}}`, the type
/// chosen by `status` ([`anthropic_error_type`]). Answer it with the same status.
pub fn error_to_anthropic(status: StatusCode, body: &[u8]) -> Bytes {
    let message = openai_error_message(status.as_u16(), body);
    Bytes::from(error_json(anthropic_error_type(status), &message).to_string())
}

/// The message of an Anthropic error body (`{"type": "error", "error": {"type", "message"}}`),
/// `None` when the body is not one.
pub fn anthropic_error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    anthropic_error_of(&value)
}

/// The message of an Anthropic error value (`{"type": "error", "error": {"message"}}`, also
/// without the top-level `type`).
fn anthropic_error_of(value: &Value) -> Option<String> {
    let error = value.get("error")?;
    match error.get("message") {
        Some(Value::String(m)) => Some(m.clone()),
        _ => None,
    }
}

/// The message of any error value: Anthropic's shape first, then OpenAI's and Ollama's.
fn any_error_message(value: &Value) -> String {
    anthropic_error_of(value).or_else(|| message_of(value)).unwrap_or_else(|| value.to_string())
}

/// Anthropic's error object.
fn error_json(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Anthropic's `event: error` for a stream that already started.
fn anthropic_error_event(message: &str) -> Bytes {
    write_event(Some("error"), &error_json("api_error", message).to_string())
}

/// A fresh id with `prefix` (`msg_`, `toolu_`): 24 base-62 characters from the clock and a
/// process-wide counter, unique within the process and unlikely to repeat across processes.
fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut n = nanos ^ (u128::from(count).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
    // A cheap mix so that consecutive ids do not share prefixes (splitmix-like).
    n = (n ^ (n >> 67)).wrapping_mul(0xBF58_476D_1CE4_E5B9_94D0_49BB_1331_11EB);
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    for _ in 0..24 {
        let digit = (n % 62) as u8;
        n /= 62;
        id.push(char::from(match digit {
            0..=9 => b'0' + digit,
            10..=35 => b'A' + digit - 10,
            _ => b'a' + digit - 36,
        }));
    }
    id
}

/// The current Unix time in seconds (a chat completion's `created`).
fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Anthropic's `stop_reason` (and `stop_sequence`) for a chat `finish_reason`. `had_tool_calls`:
/// servers that say `stop` after calling tools (Ollama's style) still mean `tool_use`.
/// `matched_stop`: vLLM's `stop_reason`, the stop string that ended the answer.
fn anthropic_stop_reason(
    finish_reason: Option<&str>,
    had_tool_calls: bool,
    matched_stop: Option<&str>,
) -> (&'static str, Option<String>) {
    match finish_reason {
        Some("length") => ("max_tokens", None),
        Some("tool_calls" | "function_call") => ("tool_use", None),
        _ if had_tool_calls => ("tool_use", None),
        _ => match matched_stop {
            Some(stop) => ("stop_sequence", Some(stop.to_owned())),
            None => ("end_turn", None),
        },
    }
}

/// The chat `finish_reason` for an Anthropic `stop_reason`.
fn chat_finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}
