//! Reading a relayed chat stream line by line (Ollama NDJSON, OpenAI SSE, or the named SSE
//! events of Anthropic's Messages API and OpenAI's Responses API): the assistant text
//! sent so far, the final chunk, the token counts, and an upstream error line. The relay uses it
//! to notice a stream that broke mid-answer (and to continue it elsewhere); the session stage uses
//! it to store the answer of a streamed session turn.

use bytes::Bytes;
use serde_json::Value;

use crate::answer::lookup;

/// How the tapped stream is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TapFraming {
    /// Ollama NDJSON: `{"message": {"content": …}, "done": …}` per line.
    NdJson,
    /// OpenAI SSE: `data: {"choices": [{"delta": {"content": …}}]}` events, then `data: [DONE]`.
    Sse,
    /// Anthropic's Messages stream: `content_block_delta` events with `text_delta`s, then
    /// `message_stop`.
    Anthropic,
    /// OpenAI's Responses stream: `response.output_text.delta` events, then `response.completed`
    /// (or `response.incomplete`) carrying the final response and its `usage`.
    Responses,
}

/// What one chunk fed to the [`Tap`] gave.
pub(crate) struct Fed {
    /// Whole lines to pass on to the client.
    pub(crate) pass: Bytes,
    /// The upstream reported an error in the stream (its line is not passed on).
    pub(crate) error: Option<String>,
}

/// Reads a relayed stream line by line: the assistant text so far, the end, error lines.
pub(crate) struct Tap {
    pub(crate) framing: TapFraming,
    /// The start of a line whose end has not arrived yet.
    partial_line: Vec<u8>,
    /// Assistant text passed on so far.
    pub(crate) text: String,
    /// The last line passed on was not blank: an SSE event may still be open.
    mid_event: bool,
    /// The final chunk (`done: true`, or `[DONE]`) was passed on: nothing left to continue.
    pub(crate) finished: bool,
    /// Tokens the server reported for the answer (`eval_count`, or `usage.completion_tokens`).
    pub(crate) answer_tokens: Option<u64>,
    /// Tokens the server reported for the prompt (`prompt_eval_count`, or `usage.prompt_tokens`).
    pub(crate) prompt_tokens: Option<u64>,
    /// Anthropic streams: the content blocks seen, for splicing a continuation in.
    pub(crate) blocks: Blocks,
    /// Responses streams: what was sent of the response, for splicing a continuation in.
    pub(crate) response: ResponseSeen,
    /// The tool calls of a chat or Anthropic stream, assembled from their pieces.
    calls: StreamedCalls,
}

/// The tool calls a stream made, as they arrive: Ollama sends each whole, OpenAI chat and
/// Anthropic streams send a call's id and name first and its arguments in pieces.
#[derive(Debug, Default)]
struct StreamedCalls {
    /// Ollama's calls, as sent.
    whole: Vec<Value>,
    /// Calls by their index in the stream: id, name, arguments so far.
    pieces: Vec<(u64, CallPieces)>,
}

#[derive(Debug, Default)]
struct CallPieces {
    id: String,
    name: String,
    arguments: String,
}

impl StreamedCalls {
    /// The call at `index`, started when first seen.
    fn at(&mut self, index: u64) -> &mut CallPieces {
        let position = match self.pieces.iter().position(|(i, _)| *i == index) {
            Some(position) => position,
            None => {
                self.pieces.push((index, CallPieces::default()));
                self.pieces.len() - 1
            }
        };
        &mut self.pieces[position].1
    }

    /// An OpenAI chat chunk's `delta.tool_calls`.
    fn chat_deltas(&mut self, deltas: &[Value]) {
        for delta in deltas {
            let call = self.at(delta.get("index").and_then(Value::as_u64).unwrap_or(0));
            if let Some(id) = delta.get("id").and_then(Value::as_str) {
                id.clone_into(&mut call.id);
            }
            if let Some(name) = lookup(delta, &["function", "name"]).and_then(Value::as_str) {
                call.name.push_str(name);
            }
            if let Some(arguments) = lookup(delta, &["function", "arguments"]).and_then(Value::as_str) {
                call.arguments.push_str(arguments);
            }
        }
    }

    /// The calls in chat form (`[{"id", "type": "function", "function": {"name", "arguments"}}]`),
    /// as a whole answer's are stored; Ollama's as sent. `None` when there were none.
    fn in_chat_form(&self, framing: TapFraming) -> Option<Value> {
        if !self.whole.is_empty() {
            return Some(Value::Array(self.whole.clone()));
        }
        let calls: Vec<Value> = self
            .pieces
            .iter()
            .map(|(_, call)| {
                // Anthropic's arguments arrive as pieces of a JSON object: written compact, as a
                // whole answer's `input` is.
                let arguments = match framing {
                    TapFraming::Anthropic if call.arguments.trim().is_empty() => "{}".to_owned(),
                    TapFraming::Anthropic => serde_json::from_str::<Value>(&call.arguments)
                        .map_or_else(|_| call.arguments.clone(), |input| input.to_string()),
                    _ => call.arguments.clone(),
                };
                serde_json::json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}})
            })
            .collect();
        (!calls.is_empty()).then_some(Value::Array(calls))
    }
}

/// The content blocks of an Anthropic stream so far: the one still open (a continuation writes
/// into it) and the index the next one gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Blocks {
    /// The index of the text block started and not yet stopped.
    pub(crate) open_text: Option<u64>,
    /// One past the highest block index seen.
    pub(crate) next: u64,
}

/// What a Responses stream sent so far: a continuation is spliced in after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ResponseSeen {
    /// The response's `id` (from `response.created`).
    pub(crate) id: Option<String>,
    /// The last `sequence_number` sent.
    pub(crate) last_sequence: Option<u64>,
    /// The message item added and not yet done: a continuation writes into it.
    pub(crate) open: Option<OpenItem>,
    /// One past the highest `output_index` seen.
    pub(crate) next_output: u64,
    /// The items done so far (from `response.output_item.done`), in order.
    pub(crate) done_items: Vec<Value>,
}

/// A message item of a Responses stream still open, and the text it got so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OpenItem {
    /// The item's `id` (the events' `item_id`).
    pub(crate) item_id: String,
    /// Its `output_index`.
    pub(crate) output_index: u64,
    /// The `content_index` of its text part.
    pub(crate) content_index: u64,
    /// The text of its deltas so far.
    pub(crate) text: String,
}

impl Tap {
    /// A tap on a stream framed as `framing`, that has seen nothing yet.
    pub(crate) fn new(framing: TapFraming) -> Tap {
        Tap {
            framing,
            partial_line: Vec::new(),
            text: String::new(),
            mid_event: false,
            finished: false,
            answer_tokens: None,
            prompt_tokens: None,
            blocks: Blocks::default(),
            response: ResponseSeen::default(),
            calls: StreamedCalls::default(),
        }
    }

    /// The tool calls the stream made so far, in the form a whole answer's are stored in a
    /// session (chat form; Ollama's as sent). `None` when it made none.
    pub(crate) fn tool_calls(&self) -> Option<Value> {
        if self.framing == TapFraming::Responses {
            let output = Value::Array(self.response.done_items.clone());
            return crate::answer::Kind::Responses.chat_tool_calls(&serde_json::json!({ "output": output }));
        }
        self.calls.in_chat_form(self.framing)
    }

    /// Takes a chunk; hands back the complete lines to pass on (a line's start is held until its
    /// end arrives), stopping at an upstream error line.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Fed {
        let mut buffer = std::mem::take(&mut self.partial_line);
        buffer.extend_from_slice(chunk);
        let mut pass = Vec::with_capacity(buffer.len());
        let mut consumed = 0;
        while let Some(end) = memchr::memchr(b'\n', &buffer[consumed..]) {
            let line = &buffer[consumed..consumed + end + 1];
            consumed += end + 1;
            if let Some(message) = self.read_line(line) {
                return Fed { pass: Bytes::from(pass), error: Some(message) };
            }
            pass.extend_from_slice(line);
            self.mid_event = !line.trim_ascii().is_empty();
        }
        buffer.drain(..consumed);
        self.partial_line = buffer;
        Fed { pass: Bytes::from(pass), error: None }
    }

    /// The held start of an unfinished line, at the end of a stream that ended cleanly.
    pub(crate) fn rest(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.partial_line))
    }

    /// Drops the held start of a line that will never end; the bytes that close the SSE event
    /// passed on last, if it is still open (nothing for NDJSON).
    pub(crate) fn cut(&mut self) -> Option<Bytes> {
        self.partial_line.clear();
        let open = self.mid_event && self.framing != TapFraming::NdJson;
        open.then(|| Bytes::from_static(b"\n"))
    }

    /// Notes what a line says; returns the error message of an error line.
    fn read_line(&mut self, line: &[u8]) -> Option<String> {
        let json = match self.framing {
            TapFraming::NdJson => line,
            TapFraming::Sse | TapFraming::Anthropic | TapFraming::Responses => {
                let data = line.strip_prefix(b"data:")?;
                let data = data.trim_ascii();
                if data == b"[DONE]" {
                    self.finished = true;
                    return None;
                }
                data
            }
        };
        let value: Value = serde_json::from_slice(json).ok()?;
        if let Some(message) = responses_error(self.framing, &value) {
            return Some(message);
        }
        if let Some(error) = value.get("error") {
            let message = error.get("message").unwrap_or(error);
            return Some(message.as_str().map_or_else(|| message.to_string(), str::to_owned));
        }
        if let Some(tokens) = crate::answer::answer_tokens(&value) {
            self.answer_tokens = Some(tokens);
        }
        if let Some(tokens) = crate::answer::prompt_tokens(&value) {
            self.prompt_tokens = Some(tokens);
        }
        let content = match self.framing {
            TapFraming::NdJson => {
                if value.get("done").and_then(Value::as_bool) == Some(true) {
                    self.finished = true;
                }
                let message = value.get("message");
                if let Some(Value::Array(calls)) = message.and_then(|m| m.get("tool_calls")) {
                    self.calls.whole.extend(calls.iter().cloned());
                }
                message.and_then(|m| m.get("content"))
            }
            TapFraming::Sse => {
                let delta = lookup(&value, &["choices", "0", "delta"]);
                if let Some(Value::Array(deltas)) = delta.and_then(|d| d.get("tool_calls")) {
                    self.calls.chat_deltas(deltas);
                }
                delta.and_then(|d| d.get("content"))
            }
            TapFraming::Anthropic => self.anthropic_event(&value),
            TapFraming::Responses => self.responses_event(&value),
        };
        if let Some(content) = content.and_then(Value::as_str) {
            self.text.push_str(content);
        }
        None
    }
}

impl Tap {
    /// Notes an Anthropic stream event: blocks opened and closed, the end; the text of a text
    /// delta.
    fn anthropic_event<'v>(&mut self, value: &'v Value) -> Option<&'v Value> {
        let index = value.get("index").and_then(Value::as_u64);
        match value.get("type").and_then(Value::as_str)? {
            "content_block_start" => {
                let index = index?;
                self.blocks.next = self.blocks.next.max(index + 1);
                let kind = lookup(value, &["content_block", "type"]).and_then(Value::as_str);
                self.blocks.open_text = (kind == Some("text")).then_some(index);
                if kind == Some("tool_use") {
                    let call = self.calls.at(index);
                    let field = |name: &str| lookup(value, &["content_block", name]).and_then(Value::as_str);
                    field("id").unwrap_or_default().clone_into(&mut call.id);
                    field("name").unwrap_or_default().clone_into(&mut call.name);
                }
                None
            }
            "content_block_stop" => {
                if index == self.blocks.open_text {
                    self.blocks.open_text = None;
                }
                None
            }
            "content_block_delta" => {
                if let (Some(index), Some(piece)) =
                    (index, lookup(value, &["delta", "partial_json"]).and_then(Value::as_str))
                {
                    self.calls.at(index).arguments.push_str(piece);
                }
                lookup(value, &["delta", "text"])
            }
            "message_stop" => {
                self.finished = true;
                None
            }
            _ => None,
        }
    }
}

impl Tap {
    /// Notes a Responses stream event: the end (with the final response's token counts), what
    /// [`ResponseSeen`] keeps; the text of a text delta.
    fn responses_event<'v>(&mut self, value: &'v Value) -> Option<&'v Value> {
        self.response.note(value);
        match value.get("type").and_then(Value::as_str)? {
            "response.output_text.delta" => value.get("delta"),
            "response.completed" | "response.incomplete" => {
                self.finished = true;
                let response = value.get("response")?;
                self.answer_tokens = crate::answer::answer_tokens(response).or(self.answer_tokens);
                self.prompt_tokens = crate::answer::prompt_tokens(response).or(self.prompt_tokens);
                None
            }
            _ => None,
        }
    }
}

impl ResponseSeen {
    /// Notes one event: its sequence number, the response's id, items opened, written and done.
    fn note(&mut self, value: &Value) {
        if let Some(sequence) = value.get("sequence_number").and_then(Value::as_u64) {
            self.last_sequence = Some(sequence);
        }
        let output_index = value.get("output_index").and_then(Value::as_u64);
        if let Some(index) = output_index {
            self.next_output = self.next_output.max(index + 1);
        }
        let item_id = value.get("item_id").and_then(Value::as_str);
        let open = self.open.as_mut().filter(|open| item_id == Some(open.item_id.as_str()));
        match value.get("type").and_then(Value::as_str).unwrap_or_default() {
            "response.created" => self.id = value.pointer("/response/id").and_then(Value::as_str).map(str::to_owned),
            "response.output_item.added" => {
                if let Some(opened) = open_message(value, output_index) {
                    self.open = Some(opened);
                }
            }
            "response.content_part.added" => {
                if let (Some(open), Some(index)) = (open, value.get("content_index").and_then(Value::as_u64)) {
                    open.content_index = index;
                }
            }
            "response.output_text.delta" => {
                if let (Some(open), Some(delta)) = (open, value.get("delta").and_then(Value::as_str)) {
                    open.text.push_str(delta);
                }
            }
            "response.output_item.done" => {
                if self.open.as_ref().is_some_and(|open| Some(open.output_index) == output_index) {
                    self.open = None;
                }
                self.done_items.extend(value.get("item").cloned());
            }
            _ => {}
        }
    }
}

/// The message item a `response.output_item.added` event opens (`None` for other items).
fn open_message(value: &Value, output_index: Option<u64>) -> Option<OpenItem> {
    let item = value.get("item").filter(|item| item.get("type").and_then(Value::as_str) == Some("message"))?;
    let item_id = item.get("id").and_then(Value::as_str)?.to_owned();
    Some(OpenItem { item_id, output_index: output_index?, content_index: 0, text: String::new() })
}

/// The message of a Responses stream's error: an `error` event (`{"type": "error", "message"}`)
/// or a `response.failed` one (the response's `error`).
fn responses_error(framing: TapFraming, value: &Value) -> Option<String> {
    if framing != TapFraming::Responses {
        return None;
    }
    let error = match value.get("type").and_then(Value::as_str)? {
        "error" => value,
        "response.failed" => value.pointer("/response/error").filter(|e| !e.is_null()).unwrap_or(value),
        _ => return None,
    };
    let message = error.get("message").and_then(Value::as_str).unwrap_or("the model's stream failed");
    Some(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_are_read_whole_and_error_lines_stop() {
        let mut tap = Tap::new(TapFraming::NdJson);
        let fed = tap.feed(br#"{"message":{"content":"Hel"},"done":false}"#);
        assert!(fed.pass.is_empty(), "half a line is held");
        let fed = tap.feed(b"\n{\"message\":{\"content\":\"lo\"},\"done\":false}\n{\"err");
        assert_eq!(fed.pass.iter().filter(|b| **b == b'\n').count(), 2);
        assert_eq!(tap.text, "Hello");
        let fed = tap.feed(b"or\":\"boom\"}\n{\"message\":{}}\n");
        assert!(fed.pass.is_empty());
        assert_eq!(fed.error.as_deref(), Some("boom"));
        assert!(!tap.finished);
    }

    #[test]
    fn sse_text_and_done() {
        let mut tap = Tap::new(TapFraming::Sse);
        let fed = tap.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n");
        assert_eq!(&fed.pass[..], b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n");
        assert_eq!(tap.text, "Hi");
        assert!(tap.finished);
        let mut tap = Tap::new(TapFraming::Sse);
        let fed = tap.feed(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n");
        assert_eq!(fed.error.as_deref(), Some("overloaded"));
    }

    #[test]
    fn anthropic_text_blocks_and_end() {
        let mut tap = Tap::new(TapFraming::Anthropic);
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Once \"}}\n\n",
        );
        tap.feed(stream.as_bytes());
        assert_eq!(tap.text, "Once ");
        assert_eq!(tap.blocks, Blocks { open_text: Some(0), next: 1 });
        let end = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        tap.feed(end.as_bytes());
        assert_eq!(tap.blocks.open_text, None);
        assert!(tap.finished);
        let mut tap = Tap::new(TapFraming::Anthropic);
        let fed = tap.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        assert_eq!(fed.error.as_deref(), Some("Overloaded"));
    }

    #[test]
    fn responses_text_end_and_usage() {
        let mut tap = Tap::new(TapFraming::Responses);
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"error\":null,\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hel\"}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"lo\"}\n\n",
        );
        let fed = tap.feed(stream.as_bytes());
        assert_eq!(fed.error, None);
        assert_eq!(tap.text, "Hello");
        assert!(!tap.finished);
        let end = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"error\":null,\"usage\":{\"input_tokens\":7,\"output_tokens\":2}}}\n\n";
        tap.feed(end.as_bytes());
        assert!(tap.finished);
        assert_eq!((tap.prompt_tokens, tap.answer_tokens), (Some(7), Some(2)));
        let mut tap = Tap::new(TapFraming::Responses);
        let fed =
            tap.feed(b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"gone\"}\n\n");
        assert_eq!(fed.error.as_deref(), Some("gone"));
    }

    #[test]
    fn chat_tool_calls_are_assembled_from_their_pieces() {
        let mut tap = Tap::new(TapFraming::Sse);
        assert_eq!(tap.tool_calls(), None);
        let events = [
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"time","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"Paris\"}"}}]}}]}"#,
        ];
        for event in events {
            tap.feed(format!("data: {event}\n\n").as_bytes());
        }
        assert_eq!(
            tap.tool_calls(),
            Some(serde_json::json!([
                {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ]))
        );
    }

    #[test]
    fn ollama_tool_calls_are_kept_as_sent() {
        let mut tap = Tap::new(TapFraming::NdJson);
        let call = r#"{"function":{"name":"weather","arguments":{"city":"Paris"}}}"#;
        tap.feed(format!("{{\"message\":{{\"content\":\"\",\"tool_calls\":[{call}]}},\"done\":false}}\n").as_bytes());
        tap.feed(b"{\"message\":{\"content\":\"\"},\"done\":true}\n");
        let expected: Value = serde_json::from_str(&format!("[{call}]")).unwrap();
        assert_eq!(tap.tool_calls(), Some(expected));
    }

    #[test]
    fn anthropic_tool_use_arguments_are_written_compact() {
        let mut tap = Tap::new(TapFraming::Anthropic);
        let events = [
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me look."}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_2","name":"time","input":{}}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        for event in events {
            tap.feed(format!("event: x\ndata: {event}\n\n").as_bytes());
        }
        assert_eq!(tap.text, "Let me look.");
        assert_eq!(
            tap.tool_calls(),
            Some(serde_json::json!([
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ]))
        );
    }

    /// Feeds 32,000 lines (500 streams of 64) of one chat stream: `measured_ndjson` and
    /// `measured_sse` are for callgrind (BENCHMARKS.md, "Reading a relayed stream").
    fn feed_many(framing: TapFraming, line: &str) -> usize {
        let chunk = line.repeat(64);
        (0..500).map(|_| Tap::new(framing).feed(chunk.as_bytes()).pass.len()).sum()
    }

    #[test]
    #[ignore = "measurement, run under callgrind"]
    fn measured_ndjson() {
        let line = "{\"model\":\"m\",\"created_at\":\"2024-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"word \"},\"done\":false}\n";
        assert!(feed_many(TapFraming::NdJson, line) > 0);
    }

    #[test]
    #[ignore = "measurement, run under callgrind"]
    fn measured_sse() {
        let line = "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"},\"finish_reason\":null}]}\n\n";
        assert!(feed_many(TapFraming::Sse, line) > 0);
    }
}
