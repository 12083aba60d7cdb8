//! A chat-completions SSE stream to Anthropic's streaming events, incrementally.

use std::mem;

use bytes::Bytes;
use serde_json::{Value, json};

use super::super::response::message_of;
use super::super::sse::{EventDriven, EventTooLarge, MAX_EVENT_BYTES, SseEvent, SseReader, write_event};
use super::super::{StreamTranslator, TranslateError, join};
use super::{MAX_TOOL_CALLS, anthropic_error_event, anthropic_stop_reason, any_error_message, new_id};
use crate::translate::StreamState;

/// The content block being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Open {
    #[default]
    Nothing,
    /// A text block (its index).
    Text(usize),
    /// A tool call (its position in `tools`).
    Tool(usize),
}

/// A tool call of the chat stream, one `tool_use` block of the Anthropic stream.
#[derive(Debug, Default)]
struct ToolSlot {
    /// The chat stream's `index` of the call.
    chat_index: u64,
    id: String,
    name: String,
    /// The Anthropic block index, once `content_block_start` was written (that needs the name).
    block: Option<usize>,
    /// Argument text that arrived before the name.
    pending: String,
    closed: bool,
}

/// Converts a chat-completions SSE stream (`data: {chunk}` … `data: [DONE]`) into Anthropic's
/// streaming events for a `/v1/messages` client, as the bytes arrive (the same output for any
/// split of the input).
///
/// What it writes, each as a named event (`event: NAME` and `data: {"type": NAME, …}`):
/// `message_start` (the message with empty content; `input_tokens` as far as known), for each
/// content block `content_block_start` / `content_block_delta` (`text_delta`, or
/// `input_json_delta` with `partial_json` for a tool call — each tool call its own block) /
/// `content_block_stop`, then at `[DONE]` (or EOF after a `finish_reason`) `message_delta`
/// (`stop_reason`, `stop_sequence`, `usage` with the final token counts) and `message_stop`.
///
/// An upstream error (`data: {"error": …}`, `event: error`) or an unreadable event becomes
/// Anthropic's `event: error` (`api_error`) and ends the stream. Reasoning text is dropped
/// (thinking blocks need Anthropic's signature). A tool call whose fragments resume after another
/// block started cannot be expressed (blocks do not reopen) and fails the stream; more than 1024
/// tool calls, or an event or argument text over [`MAX_EVENT_BYTES`], too.
#[derive(Debug)]
pub struct ChatSseToMessagesSse {
    model: String,
    id: String,
    tool_id_base: String,
    reader: SseReader,
    state: StreamState,
    at_eof: bool,
    started: bool,
    next_block: usize,
    open: Open,
    tools: Vec<ToolSlot>,
    finish_reason: Option<String>,
    matched_stop: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// Deltas with content: the output token count when the upstream reports none.
    deltas: u64,
    error: Option<String>,
}

impl ChatSseToMessagesSse {
    /// A converter answering as `requested_model`, with a generated `msg_…` id.
    pub fn new(requested_model: String) -> ChatSseToMessagesSse {
        ChatSseToMessagesSse::with_parts(requested_model, new_id("msg_"))
    }

    /// The same converter with the message id `id` (tool calls without an id get ids derived from
    /// it), for output that depends on the input alone.
    #[must_use]
    pub fn with_id(self, id: String) -> ChatSseToMessagesSse {
        ChatSseToMessagesSse::with_parts(self.model, id)
    }

    fn with_parts(model: String, id: String) -> ChatSseToMessagesSse {
        let tool_id_base = format!("toolu_{}", id.strip_prefix("msg_").unwrap_or(&id));
        ChatSseToMessagesSse {
            model,
            id,
            tool_id_base,
            reader: SseReader::new(),
            state: StreamState::Streaming,
            at_eof: false,
            started: false,
            next_block: 0,
            open: Open::Nothing,
            tools: Vec::new(),
            finish_reason: None,
            matched_stop: None,
            input_tokens: None,
            output_tokens: None,
            deltas: 0,
            error: None,
        }
    }

    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) {
        let payload = event.data.trim();
        if payload.is_empty() {
            return;
        }
        if payload == "[DONE]" {
            self.end(out);
            return;
        }
        let parsed = serde_json::from_str::<Value>(payload);
        if event.event.as_deref() == Some("error") {
            let message = parsed.map_or_else(|_| payload.to_owned(), |v| any_error_message(&v));
            self.fail(out, message);
            return;
        }
        match parsed {
            Ok(value) => self.on_chunk(&value, out),
            // An event cut off by the end of the stream is incomplete, not garbage.
            Err(_) if self.at_eof => {}
            Err(err) => self.fail(out, format!("upstream sent an unreadable stream event: {err}")),
        }
    }

    fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<Bytes>) {
        let Some(obj) = chunk.as_object() else {
            self.fail(out, "upstream sent an unreadable stream event: not a JSON object".to_owned());
            return;
        };
        if let Some(err) = obj.get("error").filter(|e| !e.is_null()) {
            self.fail(out, message_of(err).unwrap_or_else(|| err.to_string()));
            return;
        }
        if let Some(usage) = obj.get("usage") {
            let count = |field: &str| usage.get(field).and_then(Value::as_u64);
            self.input_tokens = count("prompt_tokens").or(self.input_tokens);
            self.output_tokens = count("completion_tokens").or(self.output_tokens);
        }
        self.start(out);
        let choices = obj.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for choice in choices {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            self.on_choice(choice, out);
            if self.state != StreamState::Streaming {
                return;
            }
        }
    }

    fn on_choice(&mut self, choice: &Value, out: &mut Vec<Bytes>) {
        if let Some(delta) = choice.get("delta") {
            if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.text(text, out);
            }
            if let Some(Value::Array(calls)) = delta.get("tool_calls") {
                for call in calls {
                    self.tool_fragment(call, out);
                    if self.state != StreamState::Streaming {
                        return;
                    }
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
            self.matched_stop = choice.get("stop_reason").and_then(Value::as_str).map(str::to_owned);
            self.close_open(out);
        }
    }

    /// Writes `message_start` once.
    fn start(&mut self, out: &mut Vec<Bytes>) {
        if mem::replace(&mut self.started, true) {
            return;
        }
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": self.input_tokens.unwrap_or(0), "output_tokens": 0},
        });
        emit(out, "message_start", json!({"type": "message_start", "message": message}));
    }

    fn text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        self.deltas += 1;
        let index = match self.open {
            Open::Text(index) => index,
            _ => {
                self.close_open(out);
                let index = self.open_block(out, json!({"type": "text", "text": ""}));
                self.open = Open::Text(index);
                index
            }
        };
        let delta =
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}});
        emit(out, "content_block_delta", delta);
    }

    /// Writes `content_block_start` for the next block; returns its index.
    fn open_block(&mut self, out: &mut Vec<Bytes>, block: Value) -> usize {
        let index = self.next_block;
        self.next_block += 1;
        emit(
            out,
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    /// Ends the open block, starting a tool call's block first if its name never came.
    fn close_open(&mut self, out: &mut Vec<Bytes>) {
        let index = match mem::take(&mut self.open) {
            Open::Nothing => return,
            Open::Text(index) => index,
            Open::Tool(slot) => {
                let index = self.start_tool(slot, out);
                if let Some(tool) = self.tools.get_mut(slot) {
                    tool.closed = true;
                }
                index
            }
        };
        emit(out, "content_block_stop", json!({"type": "content_block_stop", "index": index}));
    }

    /// One streamed tool-call fragment (`{"index", "id"?, "function": {"name"?, "arguments"?}}`).
    fn tool_fragment(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        self.deltas += 1;
        let function = call.get("function");
        let id = call.get("id").and_then(Value::as_str).filter(|i| !i.is_empty());
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty());
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
        let Some(slot) = self.tool_slot(call.get("index").and_then(Value::as_u64), id, out) else { return };
        let tool = &mut self.tools[slot];
        if let Some(id) = id
            && tool.id.is_empty()
        {
            id.clone_into(&mut tool.id);
        }
        if tool.block.is_none() {
            if let Some(name) = name
                && tool.name != name
            {
                tool.name.push_str(name);
            }
            tool.pending.push_str(arguments);
            if tool.pending.len() > MAX_EVENT_BYTES {
                self.fail(out, format!("upstream tool call arguments exceed {} MiB", MAX_EVENT_BYTES >> 20));
            } else if !tool.name.is_empty() {
                self.start_tool(slot, out);
            }
        } else if let Some(index) = tool.block.filter(|_| !arguments.is_empty()) {
            input_delta(out, index, arguments);
        }
    }

    /// The slot of a fragment's tool call, opening a new one (and closing the open block) when it
    /// is new; `None` when the stream failed.
    fn tool_slot(&mut self, chat_index: Option<u64>, id: Option<&str>, out: &mut Vec<Bytes>) -> Option<usize> {
        let found = match chat_index {
            Some(index) => self.tools.iter().position(|t| t.chat_index == index),
            // No index (not OpenAI's format, but seen): a new id starts a new call.
            None => match self.open {
                Open::Tool(slot) if id.is_none_or(|id| self.tools[slot].id.is_empty() || self.tools[slot].id == id) => {
                    Some(slot)
                }
                _ => None,
            },
        };
        if let Some(slot) = found {
            if self.tools[slot].closed {
                self.fail(out, "upstream resumed a tool call after another block started".to_owned());
                return None;
            }
            return Some(slot);
        }
        if self.tools.len() >= MAX_TOOL_CALLS {
            self.fail(out, format!("upstream sent more than {MAX_TOOL_CALLS} tool calls"));
            return None;
        }
        self.close_open(out);
        let chat_index =
            chat_index.unwrap_or_else(|| self.tools.iter().map(|t| t.chat_index.saturating_add(1)).max().unwrap_or(0));
        self.tools.push(ToolSlot { chat_index, ..ToolSlot::default() });
        self.open = Open::Tool(self.tools.len() - 1);
        Some(self.tools.len() - 1)
    }

    /// Writes a tool call's `content_block_start` (and the arguments held back) once; returns
    /// its block index.
    fn start_tool(&mut self, slot: usize, out: &mut Vec<Bytes>) -> usize {
        if let Some(index) = self.tools[slot].block {
            return index;
        }
        let tool = &self.tools[slot];
        let id = if tool.id.is_empty() { format!("{}_{slot}", self.tool_id_base) } else { tool.id.clone() };
        let block = json!({"type": "tool_use", "id": id, "name": tool.name, "input": {}});
        let index = self.open_block(out, block);
        let tool = &mut self.tools[slot];
        tool.block = Some(index);
        let pending = mem::take(&mut tool.pending);
        if !pending.is_empty() {
            input_delta(out, index, &pending);
        }
        index
    }

    /// Writes `message_delta` and `message_stop`; the stream is over.
    fn end(&mut self, out: &mut Vec<Bytes>) {
        self.start(out);
        self.close_open(out);
        let (reason, sequence) =
            anthropic_stop_reason(self.finish_reason.as_deref(), !self.tools.is_empty(), self.matched_stop.as_deref());
        let usage = json!({
            "input_tokens": self.input_tokens.unwrap_or(0),
            "output_tokens": self.output_tokens.unwrap_or(self.deltas),
        });
        let delta = json!({"stop_reason": reason, "stop_sequence": sequence});
        emit(out, "message_delta", json!({"type": "message_delta", "delta": delta, "usage": usage}));
        emit(out, "message_stop", json!({"type": "message_stop"}));
        self.state = StreamState::Done;
    }

    /// Writes Anthropic's error event; the stream is over.
    fn fail(&mut self, out: &mut Vec<Bytes>, message: String) {
        out.push(anthropic_error_event(&message));
        self.error = Some(message);
        self.state = StreamState::Failed;
    }
}

fn emit(out: &mut Vec<Bytes>, name: &str, data: Value) {
    out.push(write_event(Some(name), &data.to_string()));
}

fn input_delta(out: &mut Vec<Bytes>, index: usize, partial: &str) {
    let delta = json!({"type": "input_json_delta", "partial_json": partial});
    emit(out, "content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta}));
}

impl EventDriven for ChatSseToMessagesSse {
    fn reader(&mut self) -> &mut SseReader {
        &mut self.reader
    }
    fn streaming(&self) -> bool {
        self.state == StreamState::Streaming
    }
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) {
        ChatSseToMessagesSse::on_event(self, event, out);
    }
    fn too_large(&mut self, out: &mut Vec<Bytes>, error: EventTooLarge) {
        self.fail(out, error.to_string());
    }
}

impl StreamTranslator for ChatSseToMessagesSse {
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
            if self.finish_reason.is_none() {
                self.state = StreamState::Failed;
                self.error = Some(TranslateError::StreamEndedEarly.to_string());
                return Err(TranslateError::StreamEndedEarly);
            }
            self.end(&mut out);
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
        Some(anthropic_error_event(message))
    }
}
