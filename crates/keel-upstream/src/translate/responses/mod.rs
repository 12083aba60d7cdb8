//! The OpenAI Responses API (`POST /v1/responses`) served through chat completions.
//!
//! keel serves the Responses API **statelessly**: every request carries its whole input (earlier
//! turns included, as `message`, `function_call` and `function_call_output` items), nothing is
//! stored, and `previous_response_id` / `conversation` are refused. This module holds the pure
//! translation (no I/O; the only non-determinism is the response id and `created_at`, both in a
//! [`ResponseIdentity`] that tests can fix):
//!
//! - Requests: [`responses_to_chat`] turns a Responses request into a chat-completions body (send
//!   it to [`CHAT_COMPLETIONS_PATH`](super::CHAT_COMPLETIONS_PATH)).
//! - Kept conversations: [`chat_messages_to_input`] turns chat messages (a session keel keeps)
//!   back into `instructions` and `input` items.
//! - Whole responses: [`chat_to_responses_response`] turns a chat completion into a Responses
//!   `response` object ([`chat_to_responses_response_with`] with a given identity).
//! - Streams: [`ChatSseToResponsesSse`] turns chat-completion chunks into the Responses streaming
//!   events (`response.created` … `response.completed`), whatever the split of the bytes.
//! - Structured output: [`text_format_schema`] tells what `text.format` asks for;
//!   [`response_output_text`] and [`with_output_text`] read and replace a response's text.
//!
//! Shapes follow the OpenAI API reference and the official Python SDK's
//! `openai/types/responses/*.py` (`Response`, `ResponseOutputMessage`, `ResponseFunctionToolCall`,
//! `ResponseUsage`, the `Response*Event` stream events).

mod input;
mod request;
mod response;
mod stream;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

pub use input::chat_messages_to_input;
pub use request::responses_to_chat;
pub use response::{chat_to_responses_response, chat_to_responses_response_with};
pub use stream::ChatSseToResponsesSse;

/// The Responses API path.
pub const RESPONSES_PATH: &str = "/v1/responses";

/// The id and creation time of one response; the ids of its output items derive from the id
/// (`msg_<suffix>`, `fc_<suffix>_<n>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseIdentity {
    /// The response id, `resp_…`.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl ResponseIdentity {
    /// A fresh random id, created now.
    pub fn new() -> ResponseIdentity {
        let created_at =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        ResponseIdentity { id: format!("resp_{}", random_hex()), created_at }
    }

    /// A fixed identity (tests, replays).
    pub fn fixed(id: &str, created_at: i64) -> ResponseIdentity {
        ResponseIdentity { id: id.to_owned(), created_at }
    }

    /// The id without its `resp_` prefix, shared by the output items' ids.
    fn suffix(&self) -> &str {
        self.id.strip_prefix("resp_").unwrap_or(&self.id)
    }

    /// The id of the response's message item.
    pub(crate) fn message_id(&self) -> String {
        format!("msg_{}", self.suffix())
    }

    /// The id of the response's `n`th function-call item.
    pub(crate) fn function_call_id(&self, n: usize) -> String {
        format!("fc_{}_{n}", self.suffix())
    }
}

impl Default for ResponseIdentity {
    fn default() -> ResponseIdentity {
        ResponseIdentity::new()
    }
}

/// 32 hex digits, unpredictable (std's per-instance random hasher keys over a counter and the
/// clock).
fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut halves = [0u64; 2];
    for half in &mut halves {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(n);
        hasher.write_u128(nanos);
        *half = hasher.finish();
    }
    format!("{:016x}{:016x}", halves[0], halves[1])
}

/// What a request's `text.format` asks the model's text to be.
#[derive(Debug, Clone, PartialEq)]
pub enum TextFormat {
    /// `{"type": "json_object"}`: any JSON object.
    JsonObject,
    /// `{"type": "json_schema", ...}`: JSON matching `schema`.
    JsonSchema {
        /// The schema's name.
        name: String,
        /// The JSON schema.
        schema: Value,
        /// Whether the client asked for strict adherence.
        strict: bool,
    },
}

/// What `text.format` of a Responses request asks for; `None` for plain text (absent, `text`, or
/// a format keel does not know).
pub fn text_format_schema(request: &Value) -> Option<TextFormat> {
    let format = request.get("text")?.get("format")?;
    match format.get("type")?.as_str()? {
        "json_object" => Some(TextFormat::JsonObject),
        "json_schema" => Some(TextFormat::JsonSchema {
            name: format.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            schema: format.get("schema").cloned().unwrap_or_else(|| Value::Object(Map::new())),
            strict: format.get("strict").and_then(Value::as_bool).unwrap_or(false),
        }),
        _ => None,
    }
}

/// The concatenated `output_text` of a Responses object's message items (what the SDKs call
/// `output_text`); `None` when it has no text part.
pub fn response_output_text(response: &Value) -> Option<String> {
    let mut text: Option<String> = None;
    for part in text_parts(response) {
        if let Some(piece) = part.get("text").and_then(Value::as_str) {
            text.get_or_insert_with(String::new).push_str(piece);
        }
    }
    text
}

/// The output-text parts of a response's message items, in order.
fn text_parts(response: &Value) -> impl Iterator<Item = &Value> {
    response
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("message"))
        .filter_map(|item| item.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|part| part.get("type").and_then(Value::as_str) == Some("output_text"))
}

/// The same response with its text replaced by `text` (repaired JSON): the first message item
/// holds one `output_text` part with `text`, other messages lose their text parts. A response
/// without a message item gets one in front of its output.
pub fn with_output_text(response: &Value, text: &str) -> Value {
    let mut out = response.clone();
    let Some(obj) = out.as_object_mut() else { return out };
    let suffix = obj.get("id").and_then(Value::as_str).map(|id| id.strip_prefix("resp_").unwrap_or(id).to_owned());
    let output = obj.entry("output").or_insert_with(|| Value::Array(Vec::new()));
    if !output.is_array() {
        *output = Value::Array(Vec::new());
    }
    let Some(items) = output.as_array_mut() else { return out };
    let mut replaced = false;
    for item in items.iter_mut().filter(|i| i.get("type").and_then(Value::as_str) == Some("message")) {
        let Some(content) = item.get_mut("content").and_then(Value::as_array_mut) else { continue };
        content.retain(|part| part.get("type").and_then(Value::as_str) != Some("output_text"));
        if !replaced {
            content.insert(0, output_text_part(text));
            replaced = true;
        }
    }
    if !replaced {
        let id = format!("msg_{}", suffix.unwrap_or_default());
        items.insert(0, message_item(&id, text, "completed"));
    }
    out
}

/// An `output_text` content part.
fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// An assistant `message` output item holding `text`.
fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)],
    })
}

/// A `function_call` output item.
fn function_call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "id": "resp_1",
            "output": [
                {"type": "function_call", "id": "fc_1_0", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "message", "id": "msg_1", "content": [
                    {"type": "output_text", "text": "{\"a\":", "annotations": []},
                    {"type": "refusal", "refusal": "no"},
                    {"type": "output_text", "text": "1}", "annotations": []},
                ]},
            ],
        })
    }

    #[test]
    fn output_text_is_concatenated() {
        assert_eq!(response_output_text(&sample()).as_deref(), Some("{\"a\":1}"));
        assert_eq!(response_output_text(&json!({"output": []})), None);
        assert_eq!(response_output_text(&json!("x")), None);
    }

    #[test]
    fn output_text_is_replaced() {
        let fixed = with_output_text(&sample(), "{\"a\":2}");
        assert_eq!(response_output_text(&fixed).as_deref(), Some("{\"a\":2}"));
        assert_eq!(fixed["output"][1]["content"][1]["type"], "refusal");
        assert_eq!(fixed["output"][0]["type"], "function_call");

        let added = with_output_text(&json!({"id": "resp_9", "output": []}), "hi");
        assert_eq!(added["output"][0]["id"], "msg_9");
        assert_eq!(response_output_text(&added).as_deref(), Some("hi"));
        assert_eq!(with_output_text(&json!(3), "x"), json!(3));
    }

    #[test]
    fn text_formats() {
        let schema = json!({"type": "object"});
        let req = json!({"text": {"format": {"type": "json_schema", "name": "s", "schema": schema, "strict": true}}});
        assert_eq!(
            text_format_schema(&req),
            Some(TextFormat::JsonSchema { name: "s".into(), schema: json!({"type": "object"}), strict: true })
        );
        assert_eq!(
            text_format_schema(&json!({"text": {"format": {"type": "json_object"}}})),
            Some(TextFormat::JsonObject)
        );
        assert_eq!(text_format_schema(&json!({"text": {"format": {"type": "text"}}})), None);
        assert_eq!(text_format_schema(&json!({})), None);
    }

    #[test]
    fn identities() {
        let a = ResponseIdentity::new();
        let b = ResponseIdentity::new();
        assert!(a.id.starts_with("resp_") && a.id.len() == 37, "{}", a.id);
        assert_ne!(a.id, b.id);
        let fixed = ResponseIdentity::fixed("resp_x", 5);
        assert_eq!((fixed.message_id(), fixed.function_call_id(2)), ("msg_x".into(), "fc_x_2".into()));
    }
}
