//! An OpenAI server-sent-event stream to Ollama's NDJSON stream, incrementally.

use std::borrow::Cow;
use std::mem;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{Number, Value};

use super::response::{
    Answer, FunctionOut, Measured, Timings, ToolCallOut, Usage, message_of, metrics, ollama_error_line, parse_arguments,
};
use super::sse::MAX_EVENT_BYTES;
use super::time::{now_rfc3339, rfc3339};
use super::{MAX_TOOL_CALLS, OllamaEndpoint, StreamState, TranslateError, done_reason};

/// A tool call being assembled from its streamed fragments.
#[derive(Debug, Default)]
struct ToolCallAcc {
    index: u64,
    id: String,
    name: String,
    arguments: String,
}

/// Converts an OpenAI chat-completions (or completions) SSE stream into Ollama's NDJSON stream for
/// `/api/chat` or `/api/generate`, as the bytes arrive.
///
/// Feed every body chunk to [`push`](Self::push) (any split: lines and UTF-8 characters may be cut
/// anywhere) and forward the lines it returns; at the upstream's EOF call
/// [`finish`](Self::finish). What it writes:
///
/// - each content (or reasoning) delta: `{"model","created_at","message":{"role":"assistant",
///   "content":"<delta>"},"done":false}` (generate: `"response":"<delta>"`);
/// - tool calls, assembled from their fragments, once the upstream finishes: one line whose message
///   has empty content and `tool_calls` (arguments as JSON objects, like Ollama);
/// - at `[DONE]` (or EOF after a `finish_reason`): the final line with `"done":true`,
///   `done_reason` and the metrics (token counts from the usage chunk that
///   `stream_options.include_usage` asks for, durations from `llama-server`'s `timings`);
/// - an upstream error event (`data: {"error": ...}`, or `event: error`, or the older
///   `llama-server` `error: {...}` line): one `{"error":"<message>"}` line, after which the stream
///   is over ([`error`](Self::error) tells what happened).
///
/// SSE comments, `event:`/`id:`/`retry:` lines and blank lines produce nothing; `data:` without
/// the space is accepted; an event's several `data:` lines are joined as the SSE spec says.
#[derive(Debug)]
pub struct SseToNdjson {
    endpoint: OllamaEndpoint,
    model: String,
    /// The current line, while its end has not arrived.
    line: Vec<u8>,
    /// The previous byte was `\r`: a `\n` right after it ends nothing more.
    after_cr: bool,
    first_line: bool,
    /// The data of the current event, while its blank line has not arrived.
    data: Vec<u8>,
    has_data: bool,
    error_event: bool,
    /// [`finish`](SseToNdjson::finish) is processing what was left at EOF: an unreadable value
    /// there was cut off by the end of the stream, not sent as garbage.
    at_eof: bool,
    state: StreamState,
    /// Ollama's `done_reason`, once the upstream sent a `finish_reason`.
    finish_reason: Option<&'static str>,
    tool_calls: Vec<ToolCallAcc>,
    tool_calls_sent: bool,
    usage: Usage,
    timings: Option<Timings>,
    /// Deltas that carried content, reasoning or tool-call text: the token count when the
    /// upstream reports none (servers send about one token per delta).
    answer_chunks: u64,
    created: Option<i64>,
    created_at: String,
    error: Option<String>,
    start: Option<Instant>,
    first_token: Option<Instant>,
}

impl SseToNdjson {
    /// A converter for an answer to `endpoint`; `requested_model` is the model name the client
    /// asked for, reported in every line.
    pub fn new(endpoint: OllamaEndpoint, requested_model: String) -> SseToNdjson {
        SseToNdjson {
            endpoint,
            model: requested_model,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            data: Vec::new(),
            has_data: false,
            error_event: false,
            at_eof: false,
            state: StreamState::Streaming,
            finish_reason: None,
            tool_calls: Vec::new(),
            tool_calls_sent: false,
            usage: Usage::default(),
            timings: None,
            answer_chunks: 0,
            created: None,
            created_at: now_rfc3339(),
            error: None,
            start: None,
            first_token: None,
        }
    }

    /// Measures wall-clock durations from `start` (when the request was sent upstream), used in
    /// the final line when the upstream sends no `timings` (vLLM, LM Studio): `total_duration` to
    /// the end, `prompt_eval_duration` to the first token, `eval_duration` from there. Without it
    /// those durations are 0 and the output depends only on the input bytes.
    #[must_use]
    pub fn with_start(mut self, start: Instant) -> SseToNdjson {
        self.start = Some(start);
        self
    }

    /// Whether the stream is over: the final line or an error line was produced. Later input is
    /// ignored.
    pub fn is_finished(&self) -> bool {
        self.state != StreamState::Streaming
    }

    /// The error that ended the stream (an upstream error event, an unreadable event, a stream
    /// that ended early), if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Feeds raw upstream bytes; returns the NDJSON lines completed by them, each ending in `\n`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while self.state == StreamState::Streaming && !rest.is_empty() {
            if mem::take(&mut self.after_cr) && rest[0] == b'\n' {
                rest = &rest[1..];
                continue;
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    if self.line.is_empty() {
                        self.handle_line(&rest[..end], &mut out);
                    } else {
                        let mut line = mem::take(&mut self.line);
                        line.extend_from_slice(&rest[..end]);
                        self.handle_line(&line, &mut out);
                        line.clear();
                        self.line = line;
                    }
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                    if self.line.len().saturating_add(self.data.len()) > MAX_EVENT_BYTES {
                        self.fail(&mut out, too_large());
                    }
                }
            }
        }
        out
    }

    /// Ends the stream at the upstream's EOF. Processes what is still buffered (a last event
    /// without its blank line), then returns the final `done` line if it has not been written yet
    /// (the returned bytes may hold several NDJSON lines). Returns `Ok(None)` when the stream was
    /// already over (after `[DONE]` or an error line), and
    /// [`TranslateError::StreamEndedEarly`] when the upstream never finished its answer: send the
    /// client [`ollama_error_line`] with its message, as Ollama does.
    pub fn finish(&mut self) -> Result<Option<Bytes>, TranslateError> {
        if self.state != StreamState::Streaming {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.at_eof = true;
        if !self.line.is_empty() {
            let line = mem::take(&mut self.line);
            self.handle_line(&line, &mut out);
        }
        if self.state == StreamState::Streaming {
            self.dispatch(&mut out);
        }
        if self.state == StreamState::Streaming {
            if self.finish_reason.is_some() {
                self.emit_done(&mut out);
            } else {
                self.state = StreamState::Failed;
                self.error = Some(TranslateError::StreamEndedEarly.to_string());
                return Err(TranslateError::StreamEndedEarly);
            }
        }
        Ok(join(out))
    }

    /// One complete line (without its terminator).
    fn handle_line(&mut self, line: &[u8], out: &mut Vec<Bytes>) {
        let line =
            if mem::take(&mut self.first_line) { line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line) } else { line };
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment (keep-alive)
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.error_event = value == b"error",
            // Older llama-server wrote a failure as `error: {...}`.
            b"error" => {
                self.data.clear();
                self.data.extend_from_slice(value);
                self.has_data = true;
                self.error_event = true;
            }
            _ => {}
        }
        if self.data.len() > MAX_EVENT_BYTES {
            self.fail(out, too_large());
        }
    }

    /// The end of an event (a blank line): process its data.
    fn dispatch(&mut self, out: &mut Vec<Bytes>) {
        let error_event = mem::take(&mut self.error_event);
        if !mem::take(&mut self.has_data) {
            return;
        }
        let mut data = mem::take(&mut self.data);
        self.process(&data, error_event, out);
        data.clear();
        self.data = data;
    }

    fn process(&mut self, data: &[u8], error_event: bool, out: &mut Vec<Bytes>) {
        let payload = data.trim_ascii();
        if payload.is_empty() {
            return;
        }
        if payload == b"[DONE]" {
            self.emit_done(out);
            return;
        }
        if error_event {
            let message = serde_json::from_slice::<Value>(payload)
                .ok()
                .and_then(|v| message_of(&v))
                .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned());
            self.fail(out, message);
            return;
        }
        // Usually one JSON value; several are tolerated (a server that never sends blank lines).
        let mut chunks = serde_json::Deserializer::from_slice(payload).into_iter::<Chunk<'_>>();
        while self.state == StreamState::Streaming {
            match chunks.next() {
                None => break,
                Some(Ok(chunk)) => self.on_chunk(chunk, out),
                // An event cut off by the end of the stream is incomplete, not garbage (the SSE
                // spec drops it): `finish` decides between the final line and an early end.
                Some(Err(_)) if self.at_eof => break,
                Some(Err(err)) => self.fail(out, format!("upstream sent an unreadable stream event: {err}")),
            }
        }
    }

    fn on_chunk(&mut self, chunk: Chunk<'_>, out: &mut Vec<Bytes>) {
        if let Some(err) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            let message = message_of(err).unwrap_or_else(|| err.to_string());
            self.fail(out, message);
            return;
        }
        if chunk.object.as_deref() == Some("error") {
            let message = chunk.message.as_ref().and_then(message_of).unwrap_or_else(|| "upstream error".to_owned());
            self.fail(out, message);
            return;
        }
        if let Some(secs) = chunk.created.as_ref().and_then(number_i64)
            && self.created != Some(secs)
        {
            self.created = Some(secs);
            self.created_at = rfc3339(secs, 0);
        }
        if let Some(usage) = chunk.usage {
            if let Some(n) = usage.prompt_tokens.as_ref().and_then(Number::as_u64) {
                self.usage.prompt_tokens = Some(n);
            }
            if let Some(n) = usage.completion_tokens.as_ref().and_then(Number::as_u64) {
                self.usage.completion_tokens = Some(n);
            }
        }
        if let Some(t) = chunk.timings {
            self.timings = Some(Timings {
                prompt_ms: t.prompt_ms.as_ref().and_then(Number::as_f64),
                predicted_ms: t.predicted_ms.as_ref().and_then(Number::as_f64),
                prompt_n: t.prompt_n.as_ref().and_then(Number::as_u64),
                cache_n: t.cache_n.as_ref().and_then(Number::as_u64),
                predicted_n: t.predicted_n.as_ref().and_then(Number::as_u64),
            });
        }
        for choice in chunk.choices.into_iter().flatten() {
            // Only the first choice (Ollama has no `n`).
            if choice.index.as_ref().and_then(Number::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            let (mut content, mut thinking) = (None, None);
            if let Some(delta) = choice.delta {
                content = delta.content;
                thinking = delta.reasoning_content.filter(|t| !t.is_empty()).or(delta.reasoning);
                let mut fragments = delta.tool_calls.into_iter().flatten().peekable();
                if fragments.peek().is_some() {
                    self.answer_chunks += 1;
                }
                for fragment in fragments {
                    self.add_tool_fragment(fragment, out);
                    if self.state != StreamState::Streaming {
                        return;
                    }
                }
            }
            if content.is_none() {
                content = choice.text; // legacy completions (raw generate)
            }
            let content = content.as_deref().unwrap_or_default();
            let thinking = thinking.as_deref().unwrap_or_default();
            let logprobs =
                choice.logprobs.and_then(|l| l.content).filter(|c| c.as_array().is_some_and(|a| !a.is_empty()));
            if !content.is_empty() || !thinking.is_empty() || logprobs.is_some() {
                self.note_token();
                self.answer_chunks += 1;
                let answer = Answer {
                    model: &self.model,
                    created_at: &self.created_at,
                    content,
                    thinking,
                    tool_calls: &[],
                    done: false,
                    done_reason: None,
                    metrics: None,
                    logprobs: logprobs.as_ref(),
                };
                out.push(self.encode(&answer));
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(done_reason(Some(&reason)));
                self.flush_tool_calls(out);
            }
        }
    }

    fn note_token(&mut self) {
        if self.start.is_some() && self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
    }

    /// Adds one streamed tool-call fragment (`{"index", "id"?, "function": {"name"?,
    /// "arguments"?}}`) to its call.
    fn add_tool_fragment(&mut self, fragment: ToolCallDelta<'_>, out: &mut Vec<Bytes>) {
        self.note_token();
        let id = fragment.id.as_deref().filter(|id| !id.is_empty());
        let slot = match fragment.index.as_ref().and_then(Number::as_u64) {
            Some(index) => self.tool_calls.iter().position(|c| c.index == index).unwrap_or_else(|| {
                self.tool_calls.push(ToolCallAcc { index, ..ToolCallAcc::default() });
                self.tool_calls.len() - 1
            }),
            // No index (not OpenAI's format, but seen): a new id starts a new call.
            None => match self.tool_calls.last() {
                Some(last) if id.is_none_or(|id| last.id.is_empty() || last.id == id) => self.tool_calls.len() - 1,
                _ => {
                    let index = self.tool_calls.iter().map(|c| c.index + 1).max().unwrap_or(0);
                    self.tool_calls.push(ToolCallAcc { index, ..ToolCallAcc::default() });
                    self.tool_calls.len() - 1
                }
            },
        };
        if self.tool_calls.len() > MAX_TOOL_CALLS {
            self.fail(out, format!("upstream sent more than {MAX_TOOL_CALLS} tool calls"));
            return;
        }
        let acc = &mut self.tool_calls[slot];
        if let Some(id) = id
            && acc.id.is_empty()
        {
            acc.id = id.to_owned();
        }
        if let Some(function) = fragment.function {
            if let Some(name) = function.name.as_deref().filter(|n| !n.is_empty()) {
                // Servers send the name once; a repeat of the whole name is not a continuation.
                if acc.name != name {
                    acc.name.push_str(name);
                }
            }
            if let Some(arguments) = function.arguments.as_deref() {
                acc.arguments.push_str(arguments);
            }
        }
        if acc.arguments.len() > MAX_EVENT_BYTES {
            self.fail(out, too_large());
        }
    }

    /// Writes the assembled tool calls as one line (once).
    fn flush_tool_calls(&mut self, out: &mut Vec<Bytes>) {
        if self.tool_calls_sent || self.tool_calls.is_empty() {
            return;
        }
        self.tool_calls_sent = true;
        self.tool_calls.sort_by_key(|c| c.index);
        let mut calls = Vec::with_capacity(self.tool_calls.len());
        for (position, acc) in self.tool_calls.iter().enumerate() {
            let arguments = match parse_arguments(&acc.name, &acc.arguments) {
                Ok(arguments) => arguments,
                Err(err) => {
                    self.fail(out, err.to_string());
                    return;
                }
            };
            calls.push(ToolCallOut {
                id: acc.id.clone(),
                function: FunctionOut {
                    index: usize::try_from(acc.index).unwrap_or(position),
                    name: acc.name.clone(),
                    arguments,
                },
            });
        }
        let answer = Answer {
            model: &self.model,
            created_at: &self.created_at,
            content: "",
            thinking: "",
            tool_calls: &calls,
            done: false,
            done_reason: None,
            metrics: None,
            logprobs: None,
        };
        out.push(self.encode(&answer));
    }

    /// Writes the final `done` line and ends the stream.
    fn emit_done(&mut self, out: &mut Vec<Bytes>) {
        self.flush_tool_calls(out);
        if self.state != StreamState::Streaming {
            return;
        }
        let measured = match self.start {
            Some(start) => {
                let end = Instant::now();
                let first = self.first_token.unwrap_or(end);
                Measured {
                    total: Some(end.saturating_duration_since(start)),
                    prompt: Some(first.saturating_duration_since(start)),
                    eval: Some(end.saturating_duration_since(first)),
                }
            }
            None => Measured::default(),
        };
        let metrics = metrics(self.usage, self.timings, measured, self.answer_chunks);
        let answer = Answer {
            model: &self.model,
            created_at: &self.created_at,
            content: "",
            thinking: "",
            tool_calls: &[],
            done: true,
            done_reason: Some(self.finish_reason.unwrap_or("stop")),
            metrics: Some(metrics),
            logprobs: None,
        };
        out.push(self.encode(&answer));
        self.state = StreamState::Done;
    }

    /// Writes an Ollama error line and ends the stream.
    fn fail(&mut self, out: &mut Vec<Bytes>, message: String) {
        out.push(ollama_error_line(&message));
        self.error = Some(message);
        self.state = StreamState::Failed;
    }

    fn encode(&self, answer: &Answer<'_>) -> Bytes {
        let mut buf = Vec::with_capacity(112 + self.model.len() + answer.content.len() + answer.thinking.len());
        match answer.write_line(self.endpoint, &mut buf) {
            Ok(()) => Bytes::from(buf),
            Err(err) => ollama_error_line(&format!("failed to encode a response line: {err}")),
        }
    }
}

fn too_large() -> String {
    format!("upstream stream event exceeds {} MiB", MAX_EVENT_BYTES >> 20)
}

fn number_i64(n: &Number) -> Option<i64> {
    // `as` saturates; a fractional timestamp keeps its whole seconds.
    n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

fn join(mut lines: Vec<Bytes>) -> Option<Bytes> {
    match lines.len() {
        0 => None,
        1 => lines.pop(),
        _ => {
            let mut buf = BytesMut::with_capacity(lines.iter().map(Bytes::len).sum());
            for line in &lines {
                buf.extend_from_slice(line);
            }
            Some(buf.freeze())
        }
    }
}

/// One `chat.completion.chunk` (or `text_completion` chunk), borrowing its strings from the event
/// where they have no escapes. Unknown fields are skipped.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default)]
    created: Option<Number>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(default)]
    timings: Option<TimingsIn>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(default)]
    message: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: Option<Number>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    logprobs: Option<LogprobsIn>,
}

#[derive(Deserialize)]
struct LogprobsIn {
    #[serde(default)]
    content: Option<Value>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: Option<Number>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: Option<Number>,
    #[serde(default)]
    completion_tokens: Option<Number>,
}

#[derive(Deserialize)]
struct TimingsIn {
    #[serde(default)]
    prompt_ms: Option<Number>,
    #[serde(default)]
    predicted_ms: Option<Number>,
    #[serde(default)]
    prompt_n: Option<Number>,
    #[serde(default)]
    cache_n: Option<Number>,
    #[serde(default)]
    predicted_n: Option<Number>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Bytes]) -> String {
        lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect()
    }

    #[test]
    fn oversized_line_fails_instead_of_growing() {
        let mut conv = SseToNdjson::new(OllamaEndpoint::Chat, "m".into());
        let piece = vec![b'x'; 1 << 20];
        let mut out = conv.push(b"data: ");
        for _ in 0..17 {
            out.extend(conv.push(&piece));
        }
        assert_eq!(text(&out), "{\"error\":\"upstream stream event exceeds 16 MiB\"}\n");
        assert!(conv.is_finished());
        assert!(conv.line.capacity() <= 18 << 20);
    }

    #[test]
    fn tool_calls_without_index_split_by_id() {
        let mut conv = SseToNdjson::new(OllamaEndpoint::Chat, "m".into());
        let input = concat!(
            "data: {\"created\":0,\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"function\":{\"name\":\"g\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let out = text(&conv.push(input.as_bytes()));
        assert!(out.starts_with(
            "{\"model\":\"m\",\"created_at\":\"1970-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"a\",\"function\":{\"index\":0,\"name\":\"f\",\"arguments\":{\"x\":1}}},{\"id\":\"b\",\"function\":{\"index\":1,\"name\":\"g\",\"arguments\":{}}}]},\"done\":false}\n"
        ), "{out}");
        assert!(out.ends_with("\"eval_count\":3,\"eval_duration\":0}\n"), "{out}");
    }

    #[test]
    fn too_many_tool_calls_fail() {
        let mut conv = SseToNdjson::new(OllamaEndpoint::Chat, "m".into());
        let calls: Vec<String> = (0..=MAX_TOOL_CALLS)
            .map(|i| {
                format!("{{\"index\":{i},\"id\":\"c{i}\",\"function\":{{\"name\":\"f\",\"arguments\":\"{{}}\"}}}}")
            })
            .collect();
        let input = format!("data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{}]}}}}]}}\n\n", calls.join(","));
        let out = text(&conv.push(input.as_bytes()));
        assert_eq!(out, "{\"error\":\"upstream sent more than 1024 tool calls\"}\n");
    }

    #[test]
    fn done_without_finish_reason_is_stop() {
        let mut conv = SseToNdjson::new(OllamaEndpoint::Generate, "m".into());
        let out = text(
            &conv.push(b"data: {\"created\":0,\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"),
        );
        assert_eq!(
            out,
            concat!(
                "{\"model\":\"m\",\"created_at\":\"1970-01-01T00:00:00Z\",\"response\":\"hi\",\"done\":false}\n",
                "{\"model\":\"m\",\"created_at\":\"1970-01-01T00:00:00Z\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",",
                "\"total_duration\":0,\"load_duration\":0,\"prompt_eval_count\":0,\"prompt_eval_duration\":0,\"eval_count\":1,\"eval_duration\":0}\n"
            )
        );
    }
}
