//! Anthropic's streaming events to a chat-completions SSE stream, incrementally.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::super::sse::{EventDriven, EventTooLarge, SseEvent, SseReader, write_event};
use super::super::{StreamTranslator, TranslateError, join};
use super::response::chat_usage;
use super::{MAX_TOOL_CALLS, any_error_message, chat_finish_reason, now_secs};
use crate::translate::StreamState;

/// Converts an Anthropic `/v1/messages` event stream into a chat-completions SSE stream, as the
/// bytes arrive (the same output for any split of the input).
///
/// What it writes (`data: {…}` events, `object: "chat.completion.chunk"`, the message's `id` and
/// `model`): at `message_start` a chunk with `role: "assistant"`; each `text_delta` as
/// `delta.content`; each `thinking_delta` as `delta.reasoning_content`; each `tool_use` block as a
/// `tool_calls` delta with its `id` and `name`, its `input_json_delta`s as `arguments`
/// fragments (one chat `index` per tool block); at `message_stop` a chunk with `finish_reason`,
/// a usage chunk (empty `choices`, as `stream_options.include_usage` gives) and `data: [DONE]`.
///
/// `ping`, `content_block_stop`, signatures, citations and unknown events are ignored. An
/// `event: error` (or an unreadable event) becomes `data: {"error": {"message", "type", …}}` and
/// ends the stream. EOF before `message_stop` is [`TranslateError::StreamEndedEarly`].
#[derive(Debug)]
pub struct MessagesSseToChatSse {
    reader: SseReader,
    state: StreamState,
    at_eof: bool,
    id: String,
    model: String,
    created: i64,
    /// Anthropic block index → chat tool-call index.
    tool_blocks: Vec<(u64, usize)>,
    stop_reason: Option<String>,
    usage: Map<String, Value>,
    error: Option<String>,
}

impl Default for MessagesSseToChatSse {
    fn default() -> Self {
        MessagesSseToChatSse::new()
    }
}

impl MessagesSseToChatSse {
    /// A converter whose chunks carry the current time as `created`.
    pub fn new() -> MessagesSseToChatSse {
        MessagesSseToChatSse {
            reader: SseReader::new(),
            state: StreamState::Streaming,
            at_eof: false,
            id: String::new(),
            model: String::new(),
            created: now_secs(),
            tool_blocks: Vec::new(),
            stop_reason: None,
            usage: Map::new(),
            error: None,
        }
    }

    /// The same converter with `created` fixed, for output that depends on the input alone.
    #[must_use]
    pub fn with_created(mut self, created: i64) -> MessagesSseToChatSse {
        self.created = created;
        self
    }

    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) {
        let payload = event.data.trim();
        if payload.is_empty() {
            return;
        }
        let value = match serde_json::from_str::<Value>(payload) {
            Ok(value) => value,
            Err(_) if event.event.as_deref() == Some("error") => {
                self.fail(out, payload.to_owned(), "api_error");
                return;
            }
            Err(_) if self.at_eof => return,
            Err(err) => {
                self.fail(out, format!("upstream sent an unreadable stream event: {err}"), "api_error");
                return;
            }
        };
        let kind = value.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or_default();
        match kind {
            "message_start" => self.message_start(&value, out),
            "content_block_start" => self.block_start(&value, out),
            "content_block_delta" => self.block_delta(&value, out),
            "message_delta" => {
                let reason = value.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str);
                if let Some(reason) = reason {
                    self.stop_reason = Some(reason.to_owned());
                }
                self.merge_usage(value.get("usage"));
            }
            "message_stop" => self.end(out),
            "error" => {
                let kind = value.get("error").and_then(|e| e.get("type")).and_then(Value::as_str);
                let kind = kind.unwrap_or("api_error").to_owned();
                self.fail(out, any_error_message(&value), &kind);
            }
            _ => {}
        }
    }

    fn message_start(&mut self, value: &Value, out: &mut Vec<Bytes>) {
        let message = value.get("message");
        let field = |name: &str| message.and_then(|m| m.get(name)).and_then(Value::as_str).map(str::to_owned);
        self.id = field("id").unwrap_or_default();
        self.model = field("model").unwrap_or_default();
        self.merge_usage(message.and_then(|m| m.get("usage")));
        self.chunk(out, json!({"role": "assistant", "content": ""}), None);
    }

    fn block_start(&mut self, value: &Value, out: &mut Vec<Bytes>) {
        let Some(block) = value.get("content_block") else { return };
        let text = |field: &str| block.get(field).and_then(Value::as_str).filter(|t| !t.is_empty());
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = text("text") {
                    self.chunk(out, json!({"content": text}), None);
                }
            }
            Some("thinking") => {
                if let Some(thinking) = text("thinking") {
                    self.chunk(out, json!({"reasoning_content": thinking}), None);
                }
            }
            Some("tool_use") => self.tool_start(value, block, out),
            _ => {}
        }
    }

    fn tool_start(&mut self, value: &Value, block: &Value, out: &mut Vec<Bytes>) {
        if self.tool_blocks.len() >= MAX_TOOL_CALLS {
            self.fail(out, format!("upstream sent more than {MAX_TOOL_CALLS} tool calls"), "api_error");
            return;
        }
        let index = self.tool_blocks.len();
        self.tool_blocks.push((value.get("index").and_then(Value::as_u64).unwrap_or(u64::MAX), index));
        let arguments = match block.get("input") {
            Some(Value::Object(input)) if !input.is_empty() => Value::Object(input.clone()).to_string(),
            _ => String::new(),
        };
        let call = json!({
            "index": index,
            "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
            "type": "function",
            "function": {"name": block.get("name").and_then(Value::as_str).unwrap_or_default(), "arguments": arguments},
        });
        self.chunk(out, json!({"tool_calls": [call]}), None);
    }

    fn block_delta(&mut self, value: &Value, out: &mut Vec<Bytes>) {
        let Some(delta) = value.get("delta") else { return };
        let text = |field: &str| delta.get(field).and_then(Value::as_str).filter(|t| !t.is_empty());
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                if let Some(text) = text("text") {
                    self.chunk(out, json!({"content": text}), None);
                }
            }
            Some("thinking_delta") => {
                if let Some(thinking) = text("thinking") {
                    self.chunk(out, json!({"reasoning_content": thinking}), None);
                }
            }
            Some("input_json_delta") => {
                let block = value.get("index").and_then(Value::as_u64).unwrap_or(u64::MAX);
                let tool = self.tool_blocks.iter().find(|(b, _)| *b == block).map(|(_, t)| *t);
                if let (Some(index), Some(partial)) = (tool, text("partial_json")) {
                    let call = json!({"index": index, "function": {"arguments": partial}});
                    self.chunk(out, json!({"tool_calls": [call]}), None);
                }
            }
            _ => {}
        }
    }

    /// Keeps the latest value of each token count.
    fn merge_usage(&mut self, usage: Option<&Value>) {
        if let Some(Value::Object(usage)) = usage {
            for (key, value) in usage {
                if value.is_u64() {
                    self.usage.insert(key.clone(), value.clone());
                }
            }
        }
    }

    /// Writes one chunk with `delta` (and `finish_reason`).
    fn chunk(&self, out: &mut Vec<Bytes>, delta: Value, finish_reason: Option<&str>) {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        out.push(write_event(None, &chunk.to_string()));
    }

    /// Writes the finishing chunk, the usage chunk and `[DONE]`; the stream is over.
    fn end(&mut self, out: &mut Vec<Bytes>) {
        self.chunk(out, json!({}), Some(chat_finish_reason(self.stop_reason.as_deref())));
        let usage = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": chat_usage(Some(&Value::Object(self.usage.clone()))),
        });
        out.push(write_event(None, &usage.to_string()));
        out.push(write_event(None, "[DONE]"));
        self.state = StreamState::Done;
    }

    /// Writes an OpenAI-style error event; the stream is over.
    fn fail(&mut self, out: &mut Vec<Bytes>, message: String, kind: &str) {
        out.push(chat_error_event(&message, kind));
        self.error = Some(message);
        self.state = StreamState::Failed;
    }
}

/// `data: {"error": {"message", "type", "param": null, "code": null}}`.
fn chat_error_event(message: &str, kind: &str) -> Bytes {
    let error = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    write_event(None, &error.to_string())
}

impl EventDriven for MessagesSseToChatSse {
    fn reader(&mut self) -> &mut SseReader {
        &mut self.reader
    }
    fn streaming(&self) -> bool {
        self.state == StreamState::Streaming
    }
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) {
        MessagesSseToChatSse::on_event(self, event, out);
    }
    fn too_large(&mut self, out: &mut Vec<Bytes>, error: EventTooLarge) {
        self.fail(out, error.to_string(), "api_error");
    }
}

impl StreamTranslator for MessagesSseToChatSse {
    fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        self.push_events(bytes)
    }

    fn finish(&mut self) -> Result<Option<Bytes>, TranslateError> {
        if self.state != StreamState::Streaming {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.at_eof = true;
        if let Some(event) = self.reader.finish() {
            self.on_event(&event, &mut out);
        }
        if self.state == StreamState::Streaming {
            self.state = StreamState::Failed;
            self.error = Some(TranslateError::StreamEndedEarly.to_string());
            return Err(TranslateError::StreamEndedEarly);
        }
        Ok(join(out))
    }

    fn is_finished(&self) -> bool {
        self.state != StreamState::Streaming
    }

    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn error_event(&self, message: &str) -> Option<Bytes> {
        Some(chat_error_event(message, "api_error"))
    }
}
