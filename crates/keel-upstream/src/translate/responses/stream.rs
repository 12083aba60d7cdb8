//! A chat-completions SSE stream to the Responses API's SSE events, incrementally.

use bytes::Bytes;
use serde_json::{Value, json};

use super::response::{Finish, echoed, response_object, usage_value};
use super::{ResponseIdentity, function_call_item, message_item, output_text_part};
use crate::translate::response::message_of;
use crate::translate::sse::{EventDriven, EventTooLarge, MAX_EVENT_BYTES, SseEvent, SseReader, write_event};
use crate::translate::{MAX_TOOL_CALLS, StreamState, StreamTranslator, TranslateError, join};

/// An output item, in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Message,
    Call(usize),
}

/// A tool call being assembled from its streamed fragments.
#[derive(Debug, Default)]
struct CallAcc {
    index: u64,
    id: String,
    name: String,
    arguments: String,
    /// Its output index and item id, once its `output_item.added` was sent (when its name is known).
    opened: Option<(usize, String)>,
}

/// Converts a chat-completions SSE stream into the Responses API's streaming events, as the bytes
/// arrive (the same events for any split of the input).
///
/// Every event is `event: <type>` with JSON data carrying the same `type` and a `sequence_number`
/// counting from 0: `response.created` and `response.in_progress` first; for the text a `message`
/// item (`response.output_item.added`, `response.content_part.added`, one
/// `response.output_text.delta` per delta); for each tool call a `function_call` item (added once
/// its name is known, then `response.function_call_arguments.delta`); at the upstream's
/// `finish_reason` the `…done` events of every item; at `[DONE]` (or EOF after the
/// `finish_reason`) `response.completed` — `response.incomplete` when the token limit or a filter
/// cut the answer — with the whole response as [`chat_to_responses_response`] gives it.
/// Reasoning deltas are dropped; only the first choice is read.
///
/// An upstream error event, an unreadable event or an answer over [`MAX_EVENT_BYTES`] ends the
/// stream with an `error` event ([`error`](Self::error) tells the message).
///
/// [`chat_to_responses_response`]: super::chat_to_responses_response
#[derive(Debug)]
pub struct ChatSseToResponsesSse {
    request: Value,
    model: String,
    identity: ResponseIdentity,
    reader: SseReader,
    sequence: u64,
    state: StreamState,
    started: bool,
    at_eof: bool,
    /// Set at the upstream's `finish_reason`, when the items are closed.
    finish: Option<Finish>,
    slots: Vec<Slot>,
    text: Option<String>,
    calls: Vec<CallAcc>,
    /// The closed items, for the final response.
    output: Vec<Value>,
    usage: Option<Value>,
    /// Text and argument bytes so far.
    size: usize,
    error: Option<String>,
}

impl ChatSseToResponsesSse {
    /// A converter for the answer to `request` (the client's Responses request, whose parameters
    /// the response echoes), reporting `requested_model`; a fresh id, created now.
    pub fn new(request: &Value, requested_model: &str) -> ChatSseToResponsesSse {
        ChatSseToResponsesSse {
            request: echoed(request),
            model: requested_model.to_owned(),
            identity: ResponseIdentity::new(),
            reader: SseReader::new(),
            sequence: 0,
            state: StreamState::Streaming,
            started: false,
            at_eof: false,
            finish: None,
            slots: Vec::new(),
            text: None,
            calls: Vec::new(),
            output: Vec::new(),
            usage: None,
            size: 0,
            error: None,
        }
    }

    /// The same converter with a given response id and `created_at` (tests, replays).
    #[must_use]
    pub fn with_identity(mut self, identity: ResponseIdentity) -> ChatSseToResponsesSse {
        self.identity = identity;
        self
    }

    /// Feeds raw upstream bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        self.push_events(bytes)
    }

    /// At the upstream's EOF: the last events (`response.completed` when a `finish_reason` came),
    /// `Ok(None)` when the stream was already over, [`TranslateError::StreamEndedEarly`] when the
    /// upstream never finished its answer (send [`error_event`](Self::error_event) then).
    pub fn finish(&mut self) -> Result<Option<Bytes>, TranslateError> {
        if self.state != StreamState::Streaming {
            return Ok(None);
        }
        let sequence = self.sequence;
        let mut out = Vec::new();
        self.at_eof = true;
        if let Some(event) = self.reader.finish() {
            self.on_event(&event, &mut out);
        }
        if self.state == StreamState::Streaming {
            if self.finish.is_none() {
                // What this call produced is not sent: the error event follows what was.
                self.sequence = sequence;
                self.state = StreamState::Failed;
                self.error = Some(TranslateError::StreamEndedEarly.to_string());
                return Err(TranslateError::StreamEndedEarly);
            }
            self.complete(&mut out);
        }
        Ok(join(out))
    }

    /// Whether the stream is over (its final event or an error event was produced).
    pub fn is_finished(&self) -> bool {
        self.state != StreamState::Streaming
    }

    /// The error that ended the stream, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The `error` event for `message`, numbered after the events produced so far.
    pub fn error_event(&self, message: &str) -> Bytes {
        error_bytes(None, message, self.sequence)
    }

    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) {
        let payload = event.data.trim();
        if payload.is_empty() {
            return;
        }
        self.start(out);
        if payload == "[DONE]" {
            self.complete(out);
            return;
        }
        let value = serde_json::from_str::<Value>(payload);
        if event.event.as_deref() == Some("error") {
            let value = value.unwrap_or_else(|_| Value::String(payload.to_owned()));
            self.fail_upstream(out, &value);
            return;
        }
        match value {
            Ok(chunk) => self.on_chunk(&chunk, out),
            // An event cut off by the end of the stream is incomplete, not garbage.
            Err(_) if self.at_eof => {}
            Err(err) => self.fail(out, None, format!("upstream sent an unreadable stream event: {err}")),
        }
    }

    /// `response.created` and `response.in_progress`, once.
    fn start(&mut self, out: &mut Vec<Bytes>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        for kind in ["response.created", "response.in_progress"] {
            let response =
                response_object(&self.request, &self.model, &self.identity, Finish::InProgress, vec![], None);
            self.emit(out, json!({"type": kind, "response": response}));
        }
    }

    fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<Bytes>) {
        if chunk.get("error").is_some_and(|e| !e.is_null())
            || chunk.get("object").and_then(Value::as_str) == Some("error")
        {
            self.fail_upstream(out, chunk);
            return;
        }
        if let Some(usage) = chunk.get("usage").and_then(usage_value) {
            self.usage = Some(usage);
        }
        let choices = chunk.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for choice in choices.iter().filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) {
            if self.finish.is_some() {
                return;
            }
            self.on_choice(choice, out);
        }
    }

    fn on_choice(&mut self, choice: &Value, out: &mut Vec<Bytes>) {
        let delta = choice.get("delta");
        if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty()) {
            self.on_text(text, out);
        }
        let fragments = delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array);
        for fragment in fragments.map(Vec::as_slice).unwrap_or_default() {
            if self.state != StreamState::Streaming {
                return;
            }
            self.on_fragment(fragment, out);
        }
        if self.state != StreamState::Streaming {
            return;
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.close_items(Finish::from_reason(Some(reason)), out);
        }
    }

    /// Counts `bytes` more of answer; fails the stream past the limit.
    fn grow(&mut self, bytes: usize, out: &mut Vec<Bytes>) -> bool {
        self.size = self.size.saturating_add(bytes);
        if self.size > MAX_EVENT_BYTES {
            self.fail(out, None, format!("the upstream's answer exceeds {} MiB", MAX_EVENT_BYTES >> 20));
            return false;
        }
        true
    }

    fn on_text(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        if !self.grow(delta.len(), out) {
            return;
        }
        self.open_message(out);
        if let Some(text) = self.text.as_mut() {
            text.push_str(delta);
        }
        let (item_id, output_index) = (self.identity.message_id(), self.message_index());
        self.emit(
            out,
            json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": output_index,
                   "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }

    fn message_index(&self) -> usize {
        self.slots.iter().position(|s| *s == Slot::Message).unwrap_or(0)
    }

    /// The message item's `output_item.added` and `content_part.added`, once.
    fn open_message(&mut self, out: &mut Vec<Bytes>) {
        if self.text.is_some() {
            return;
        }
        self.text = Some(String::new());
        let output_index = self.slots.len();
        self.slots.push(Slot::Message);
        let item_id = self.identity.message_id();
        let mut item = message_item(&item_id, "", "in_progress");
        item["content"] = json!([]);
        self.emit(out, json!({"type": "response.output_item.added", "output_index": output_index, "item": item}));
        self.emit(
            out,
            json!({"type": "response.content_part.added", "item_id": item_id, "output_index": output_index,
                   "content_index": 0, "part": output_text_part("")}),
        );
    }

    /// One tool-call fragment (`{"index", "id"?, "function": {"name"?, "arguments"?}}`).
    fn on_fragment(&mut self, fragment: &Value, out: &mut Vec<Bytes>) {
        let id = fragment.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
        let Some(slot) = self.call_slot(fragment.get("index").and_then(Value::as_u64), id) else {
            self.fail(out, None, format!("upstream sent more than {MAX_TOOL_CALLS} tool calls"));
            return;
        };
        let function = fragment.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
        if !self.grow(name.len() + arguments.len(), out) {
            return;
        }
        let acc = &mut self.calls[slot];
        if let Some(id) = id
            && acc.id.is_empty()
        {
            acc.id = id.to_owned();
        }
        // Servers send the name once; a repeat of the whole name is not a continuation.
        if !name.is_empty() && acc.name != name {
            acc.name.push_str(name);
        }
        acc.arguments.push_str(arguments);
        match acc.opened.clone() {
            Some((output_index, item_id)) if !arguments.is_empty() => {
                self.emit_arguments_delta(out, &item_id, output_index, arguments);
            }
            Some(_) => {}
            None if !acc.name.is_empty() => self.open_call(slot, out),
            None => {}
        }
    }

    /// The accumulator of the call with chat `index` (or, without one, `id`); `None` past the
    /// limit.
    fn call_slot(&mut self, index: Option<u64>, id: Option<&str>) -> Option<usize> {
        let found = match index {
            Some(index) => self.calls.iter().position(|c| c.index == index),
            // No index (not OpenAI's format, but seen): a new id starts a new call.
            None => match self.calls.last() {
                Some(last) if id.is_none_or(|id| last.id.is_empty() || last.id == id) => Some(self.calls.len() - 1),
                _ => None,
            },
        };
        if found.is_some() {
            return found;
        }
        if self.calls.len() >= MAX_TOOL_CALLS {
            return None;
        }
        let index = index.unwrap_or_else(|| self.calls.iter().map(|c| c.index.saturating_add(1)).max().unwrap_or(0));
        self.calls.push(CallAcc { index, ..CallAcc::default() });
        Some(self.calls.len() - 1)
    }

    /// A call's `output_item.added` (and the arguments that came before its name).
    fn open_call(&mut self, slot: usize, out: &mut Vec<Bytes>) {
        let output_index = self.slots.len();
        let opened = self.slots.iter().filter(|s| matches!(s, Slot::Call(_))).count();
        self.slots.push(Slot::Call(slot));
        let item_id = self.identity.function_call_id(opened);
        let Some(acc) = self.calls.get_mut(slot) else { return };
        if acc.id.is_empty() {
            acc.id = format!("call_{opened}");
        }
        acc.opened = Some((output_index, item_id.clone()));
        let item = function_call_item(&item_id, &acc.id, &acc.name, "", "in_progress");
        let early = (!acc.arguments.is_empty()).then(|| acc.arguments.clone());
        self.emit(out, json!({"type": "response.output_item.added", "output_index": output_index, "item": item}));
        if let Some(arguments) = early {
            self.emit_arguments_delta(out, &item_id, output_index, &arguments);
        }
    }

    fn emit_arguments_delta(&mut self, out: &mut Vec<Bytes>, item_id: &str, output_index: usize, delta: &str) {
        self.emit(
            out,
            json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                   "output_index": output_index, "delta": delta}),
        );
    }

    /// The `…done` events of every item, in output order (once, at the `finish_reason`).
    fn close_items(&mut self, finish: Finish, out: &mut Vec<Bytes>) {
        if self.finish.is_some() {
            return;
        }
        self.finish = Some(finish);
        for slot in 0..self.calls.len() {
            if self.calls[slot].opened.is_none() {
                self.open_call(slot, out);
            }
        }
        if self.slots.is_empty() {
            self.open_message(out);
        }
        for slot in std::mem::take(&mut self.slots) {
            let item = match slot {
                Slot::Message => self.close_message(finish, out),
                Slot::Call(slot) => self.close_call(slot, out),
            };
            self.output.push(item);
        }
    }

    fn close_message(&mut self, finish: Finish, out: &mut Vec<Bytes>) -> Value {
        let text = self.text.take().unwrap_or_default();
        let (item_id, output_index) = (self.identity.message_id(), self.output.len());
        self.emit(
            out,
            json!({"type": "response.output_text.done", "item_id": item_id, "output_index": output_index,
                   "content_index": 0, "text": text, "logprobs": []}),
        );
        self.emit(
            out,
            json!({"type": "response.content_part.done", "item_id": item_id, "output_index": output_index,
                   "content_index": 0, "part": output_text_part(&text)}),
        );
        let item = message_item(&item_id, &text, finish.item_status());
        self.emit(out, json!({"type": "response.output_item.done", "output_index": output_index, "item": item}));
        item
    }

    fn close_call(&mut self, slot: usize, out: &mut Vec<Bytes>) -> Value {
        let output_index = self.output.len();
        let Some(acc) = self.calls.get_mut(slot) else { return Value::Null };
        let item_id = acc.opened.take().map(|(_, id)| id).unwrap_or_default();
        let (call_id, name, arguments) =
            (std::mem::take(&mut acc.id), std::mem::take(&mut acc.name), std::mem::take(&mut acc.arguments));
        self.emit(
            out,
            json!({"type": "response.function_call_arguments.done", "item_id": item_id,
                   "output_index": output_index, "name": name, "arguments": arguments}),
        );
        let item = function_call_item(&item_id, &call_id, &name, &arguments, "completed");
        self.emit(out, json!({"type": "response.output_item.done", "output_index": output_index, "item": item}));
        item
    }

    /// The final event (`response.completed` or `response.incomplete`); the stream is over.
    fn complete(&mut self, out: &mut Vec<Bytes>) {
        self.start(out);
        self.close_items(Finish::Completed, out);
        let finish = self.finish.unwrap_or(Finish::Completed);
        let output = std::mem::take(&mut self.output);
        let response = response_object(&self.request, &self.model, &self.identity, finish, output, self.usage.take());
        self.emit(out, json!({"type": finish.final_event(), "response": response}));
        self.state = StreamState::Done;
    }

    /// An upstream error (an error event or chunk) ends the stream.
    fn fail_upstream(&mut self, out: &mut Vec<Bytes>, value: &Value) {
        let error = value.get("error").filter(|e| e.is_object()).unwrap_or(value);
        let code = ["code", "type"].into_iter().find_map(|f| error.get(f).and_then(Value::as_str)).map(str::to_owned);
        let message = message_of(value).unwrap_or_else(|| "upstream error".to_owned());
        self.fail(out, code, message);
    }

    /// Writes an `error` event and ends the stream.
    fn fail(&mut self, out: &mut Vec<Bytes>, code: Option<String>, message: String) {
        out.push(error_bytes(code.as_deref(), &message, self.sequence));
        self.sequence += 1;
        self.error = Some(message);
        self.state = StreamState::Failed;
    }

    /// Numbers an event and writes it, named after its `type`.
    fn emit(&mut self, out: &mut Vec<Bytes>, mut event: Value) {
        if let Some(obj) = event.as_object_mut() {
            obj.insert("sequence_number".into(), Value::from(self.sequence));
        }
        self.sequence += 1;
        let name = event.get("type").and_then(Value::as_str).unwrap_or("message");
        out.push(write_event(Some(name), &event.to_string()));
    }
}

/// An `error` event.
fn error_bytes(code: Option<&str>, message: &str, sequence: u64) -> Bytes {
    let event = json!({
        "type": "error",
        "code": code.unwrap_or("server_error"),
        "message": message,
        "param": null,
        "sequence_number": sequence,
    });
    write_event(Some("error"), &event.to_string())
}

impl EventDriven for ChatSseToResponsesSse {
    fn reader(&mut self) -> &mut SseReader {
        &mut self.reader
    }
    fn streaming(&self) -> bool {
        self.state == StreamState::Streaming
    }
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) {
        ChatSseToResponsesSse::on_event(self, event, out);
    }
    fn too_large(&mut self, out: &mut Vec<Bytes>, error: EventTooLarge) {
        self.fail(out, None, error.to_string());
    }
}

impl StreamTranslator for ChatSseToResponsesSse {
    fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        ChatSseToResponsesSse::push(self, bytes)
    }
    fn finish(&mut self) -> Result<Option<Bytes>, TranslateError> {
        ChatSseToResponsesSse::finish(self)
    }
    fn is_finished(&self) -> bool {
        ChatSseToResponsesSse::is_finished(self)
    }
    fn error(&self) -> Option<&str> {
        ChatSseToResponsesSse::error(self)
    }
    fn error_event(&self, message: &str) -> Option<Bytes> {
        Some(ChatSseToResponsesSse::error_event(self, message))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::translate::Chain;

    const TEXT_STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\",\"content\":\"lo \\u00e9\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );

    const TOOL_STREAM: &str = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let me check.\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"now\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: [DONE]\n\n",
    );

    fn converter() -> ChatSseToResponsesSse {
        let request = json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "get_weather"}]});
        ChatSseToResponsesSse::new(&request, "m").with_identity(ResponseIdentity::fixed("resp_t", 7))
    }

    /// Everything a client gets for `chunks`, and `finish`'s result.
    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Result<(), TranslateError>) {
        let mut conv = converter();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(conv.push(chunk).concat());
        }
        let end = conv.finish().map(|last| out.extend(last.unwrap_or_default()));
        (out, end)
    }

    /// The events of `bytes`, checked: named after their `type`, numbered from 0.
    fn events(bytes: &[u8]) -> Vec<Value> {
        let mut reader = SseReader::new();
        let mut raw = Vec::new();
        reader.push(bytes, &mut raw).unwrap();
        assert!(reader.finish().is_none());
        let mut out = Vec::new();
        for (n, event) in raw.iter().enumerate() {
            let value: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(event.event.as_deref(), value["type"].as_str(), "{value}");
            assert_eq!(value["sequence_number"], n, "{value}");
            out.push(value);
        }
        out
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn text_stream() {
        let (out, end) = run(&[TEXT_STREAM.as_bytes()]);
        end.unwrap();
        let events = events(&out);
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[0]["response"]["status"], "in_progress");
        assert_eq!(events[0]["response"]["output"], json!([]));
        assert_eq!(events[2]["item"]["content"], json!([]));
        assert_eq!(
            events[5],
            json!({"type": "response.output_text.delta", "item_id": "msg_t", "output_index": 0, "content_index": 0,
                   "delta": "lo é", "logprobs": [], "sequence_number": 5})
        );
        assert_eq!(events[6]["text"], "Hello é");
        let done = &events[9]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["usage"]["total_tokens"], 5);
        assert_eq!(done["output"], json!([events[8]["item"]]));
        assert_eq!(super::super::response_output_text(done).as_deref(), Some("Hello é"));
    }

    #[test]
    fn tool_call_stream() {
        let (out, end) = run(&[TOOL_STREAM.as_bytes()]);
        end.unwrap();
        let events = events(&out);
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(
            events[5]["item"],
            json!({"id": "fc_t_0", "type": "function_call", "status": "in_progress", "call_id": "call_a",
                   "name": "get_weather", "arguments": ""})
        );
        assert_eq!(events[8]["output_index"], 2);
        assert_eq!(events[9]["delta"], "{}");
        assert_eq!(events[13]["arguments"], "{\"city\":\"Paris\"}");
        let output = &events[17]["response"]["output"];
        assert_eq!(output[1]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(
            output[2],
            json!({"id": "fc_t_1", "type": "function_call", "status": "completed",
                                     "call_id": "call_b", "name": "now", "arguments": "{}"})
        );
        assert_eq!(events[17]["response"]["tools"][0]["name"], "get_weather");
    }

    #[test]
    fn length_is_incomplete_and_eof_after_finish_completes() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}\n\n";
        let (out, end) = run(&[input.as_bytes()]);
        end.unwrap();
        let events = events(&out);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    }

    #[test]
    fn done_without_anything_gives_an_empty_message() {
        let (out, end) = run(&[b"data: [DONE]\n\n"]);
        end.unwrap();
        let events = events(&out);
        assert_eq!(events.last().unwrap()["type"], "response.completed");
        assert_eq!(super::super::response_output_text(&events.last().unwrap()["response"]).as_deref(), Some(""));
    }

    #[test]
    fn early_eof_fails() {
        let mut conv = converter();
        let out = conv.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choi");
        assert_eq!(events(&out.concat()).len(), 5);
        assert_eq!(conv.finish(), Err(TranslateError::StreamEndedEarly));
        assert!(conv.is_finished());
        assert!(conv.error().unwrap().contains("ended early"));
        let error = events(&[out.concat(), conv.error_event("gone").to_vec()].concat());
        assert_eq!(
            error.last().unwrap(),
            &json!({"type": "error", "code": "server_error", "message": "gone", "param": null, "sequence_number": 5})
        );
        assert_eq!(conv.finish(), Ok(None));
        assert!(conv.push(b"data: [DONE]\n\n").is_empty());
    }

    #[test]
    fn upstream_errors_end_the_stream() {
        let inputs: [&[u8]; 3] = [
            b"data: {\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"code\":\"oom\"}}\n\n",
            b"event: error\ndata: {\"message\":\"out of memory\"}\n\n",
            b"data: {\"object\":\"error\",\"message\":\"out of memory\",\"type\":\"BadRequestError\"}\n\n",
        ];
        for input in inputs {
            let mut conv = converter();
            let events = events(&conv.push(input).concat());
            assert_eq!(types(&events), ["response.created", "response.in_progress", "error"]);
            assert_eq!(events[2]["message"], "out of memory");
            assert!(events[2]["code"].is_string());
            assert_eq!(conv.error(), Some("out of memory"));
            assert_eq!(conv.finish(), Ok(None));
        }
        let (out, _) = run(&[b"data: {nope}\n\n"]);
        assert!(events(&out)[2]["message"].as_str().unwrap().contains("unreadable"));
    }

    #[test]
    fn limits() {
        let calls: Vec<String> = (0..=MAX_TOOL_CALLS)
            .map(|i| {
                format!("{{\"index\":{i},\"id\":\"c{i}\",\"function\":{{\"name\":\"f\",\"arguments\":\"{{}}\"}}}}")
            })
            .collect();
        let input = format!("data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{}]}}}}]}}\n\n", calls.join(","));
        let (out, _) = run(&[input.as_bytes()]);
        assert_eq!(events(&out).last().unwrap()["message"], "upstream sent more than 1024 tool calls");

        let mut conv = converter();
        let piece = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n", "x".repeat(1 << 20));
        let mut out = Vec::new();
        for _ in 0..17 {
            out.extend(conv.push(piece.as_bytes()));
        }
        assert!(conv.error().unwrap().contains("exceeds 16 MiB"), "{:?}", conv.error());
        assert_eq!(events(&out.concat()).last().unwrap()["type"], "error");
    }

    /// Passes chat SSE through unchanged: stands for a translation into chat completions.
    struct Passthrough;

    impl StreamTranslator for Passthrough {
        fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
            vec![Bytes::copy_from_slice(bytes)]
        }
        fn finish(&mut self) -> Result<Option<Bytes>, TranslateError> {
            Ok(None)
        }
        fn is_finished(&self) -> bool {
            false
        }
        fn error(&self) -> Option<&str> {
            None
        }
        fn error_event(&self, _message: &str) -> Option<Bytes> {
            None
        }
    }

    #[test]
    fn chained() {
        let mut chain = Chain::new(Passthrough, converter());
        let mut out = Vec::new();
        for piece in TOOL_STREAM.as_bytes().chunks(7) {
            out.extend(chain.push(piece));
        }
        out.extend(chain.finish().unwrap());
        assert!(chain.is_finished());
        let events = events(&out.concat());
        assert_eq!(events.last().unwrap()["type"], "response.completed");
        assert_eq!(out.concat(), run(&[TOOL_STREAM.as_bytes()]).0);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_output(which in 0usize..2, cut in any::<prop::sample::Index>(), cut2 in any::<prop::sample::Index>()) {
            let input = [TEXT_STREAM, TOOL_STREAM][which].as_bytes();
            let (a, b) = {
                let (x, y) = (cut.index(input.len() + 1), cut2.index(input.len() + 1));
                (x.min(y), x.max(y))
            };
            let whole = run(&[input]);
            prop_assert_eq!(&whole, &run(&[&input[..a], &input[a..b], &input[b..]]));
            let bytewise: Vec<&[u8]> = input.chunks(1).collect();
            prop_assert_eq!(&whole, &run(&bytewise));
            // Cut short: never panics, always ends (completed or an early end).
            let _ = run(&[&input[..a]]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), cut in any::<prop::sample::Index>()) {
            let at = cut.index(bytes.len() + 1);
            prop_assert_eq!(run(&[&bytes]), run(&[&bytes[..at], &bytes[at..]]));
        }

        #[test]
        fn arbitrary_chunks_never_panic(text in "(data: (\\{\"choices\":\\[\\{\"delta\":\\{(\"content\":\"[a-z]{0,3}\"|\"tool_calls\":\\[\\{\"index\":[0-2],\"function\":\\{\"name\":\"[a-c]?\",\"arguments\":\"[{}]?\"\\}\\}\\])\\}(,\"finish_reason\":\"(stop|length)\")?\\}\\]\\}|\\[DONE\\])\n\n){0,8}", cut in any::<prop::sample::Index>()) {
            let bytes = text.as_bytes();
            let at = cut.index(bytes.len() + 1);
            let whole = run(&[bytes]);
            prop_assert_eq!(&whole, &run(&[&bytes[..at], &bytes[at..]]));
            if whole.1.is_ok() {
                let events = events(&whole.0);
                let last = events.last().unwrap()["type"].as_str().unwrap();
                prop_assert!(last == "response.completed" || last == "response.incomplete", "{}", last);
            }
        }
    }
}
