//! Answers of the chat-like endpoints as values: where the assistant text is, a complete answer
//! keel writes itself (canned or stored), and a whole answer turned into the stream a client asked
//! for (Ollama NDJSON, OpenAI SSE ending in `[DONE]`, or the named events of the Responses and
//! Anthropic Messages APIs).

mod via_chat;

use std::borrow::Cow;

use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use crate::endpoint::Endpoint;

/// The chat-like endpoints whose answers keel reads (structured-output guard, sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/api/chat`: the text is `message.content`.
    OllamaChat,
    /// `/api/generate`: the text is `response`.
    OllamaGenerate,
    /// `/v1/chat/completions`: the text is `choices[0].message.content`.
    OpenAiChat,
    /// `/v1/responses` (OpenAI Responses API): the text is the response's `output_text` (its
    /// message items' `output_text` parts); tool calls are `function_call` output items.
    Responses,
    /// `/v1/messages` (Anthropic Messages API): the text is the `content`'s text blocks joined;
    /// tool calls are `tool_use` blocks.
    Messages,
}

impl Kind {
    /// The kind of an endpoint, when keel reads its answers.
    pub(crate) fn of(endpoint: Endpoint) -> Option<Kind> {
        match endpoint.label {
            "/api/chat" => Some(Kind::OllamaChat),
            "/api/generate" => Some(Kind::OllamaGenerate),
            "/v1/chat/completions" => Some(Kind::OpenAiChat),
            "/v1/responses" => Some(Kind::Responses),
            "/v1/messages" => Some(Kind::Messages),
            _ => None,
        }
    }

    /// Whether a request that does not say `stream` is streamed: Ollama's endpoints stream by
    /// default, the OpenAI and Anthropic APIs do not.
    pub(crate) fn streams_by_default(self) -> bool {
        matches!(self, Kind::OllamaChat | Kind::OllamaGenerate)
    }

    /// The JSON Schema the request asks for: `Some(None)` for "any JSON", `None` when the request
    /// does not ask for structured output.
    pub(crate) fn requested_schema(self, body: &Map<String, Value>) -> Option<Option<Value>> {
        match self {
            Kind::OllamaChat | Kind::OllamaGenerate => match body.get("format")? {
                Value::String(format) if format == "json" => Some(None),
                schema @ Value::Object(_) => Some(Some(schema.clone())),
                _ => None,
            },
            Kind::OpenAiChat => {
                let format = body.get("response_format")?.as_object()?;
                match format.get("type")?.as_str()? {
                    "json_object" => Some(None),
                    "json_schema" => Some(format.get("json_schema").and_then(|s| s.get("schema")).cloned()),
                    _ => None,
                }
            }
            Kind::Responses => via_chat::responses_schema(body),
            Kind::Messages => via_chat::messages_schema(body),
        }
    }

    /// True for a request that only loads or unloads a model (no prompt): nothing to validate.
    pub(crate) fn is_load_only(self, body: &Map<String, Value>) -> bool {
        match self {
            Kind::OllamaChat | Kind::OpenAiChat | Kind::Messages => {
                body.get("messages").and_then(Value::as_array).is_none_or(|messages| messages.is_empty())
            }
            Kind::OllamaGenerate => body.get("prompt").and_then(Value::as_str).is_none_or(str::is_empty),
            Kind::Responses => match body.get("input") {
                Some(Value::String(text)) => text.is_empty(),
                Some(Value::Array(items)) => items.is_empty(),
                _ => true,
            },
        }
    }

    /// The answer's text and whether it called tools instead of answering in text.
    pub(crate) fn content(self, answer: &Value) -> (Option<Cow<'_, str>>, bool) {
        (self.text(answer), self.called_tools(answer))
    }

    /// The answer's text (`None` when it has none).
    fn text(self, answer: &Value) -> Option<Cow<'_, str>> {
        let text = match self {
            Kind::OllamaGenerate => answer.get("response"),
            Kind::OllamaChat | Kind::OpenAiChat => self.message(answer)?.get("content"),
            Kind::Responses => {
                return keel_upstream::translate::responses::response_output_text(answer).map(Cow::Owned);
            }
            Kind::Messages => return via_chat::message_text(answer).map(Cow::Owned),
        };
        text.and_then(Value::as_str).map(Cow::Borrowed)
    }

    /// Whether the answer called tools (chat `tool_calls`, Responses `function_call` items,
    /// Anthropic `tool_use` blocks).
    fn called_tools(self, answer: &Value) -> bool {
        match self {
            Kind::Responses => via_chat::items(answer, "output", "function_call").next().is_some(),
            Kind::Messages => via_chat::items(answer, "content", "tool_use").next().is_some(),
            Kind::OllamaChat | Kind::OllamaGenerate | Kind::OpenAiChat => self.tool_calls(answer).is_some(),
        }
    }

    /// The assistant message of a chat answer (`None` for `/api/generate` and the APIs whose
    /// answers are not one chat message).
    pub(crate) fn message(self, answer: &Value) -> Option<&Value> {
        match self {
            Kind::OllamaChat => answer.get("message"),
            Kind::OpenAiChat => answer.pointer("/choices/0/message"),
            Kind::OllamaGenerate | Kind::Responses | Kind::Messages => None,
        }
    }

    /// The chat-shaped `tool_calls` of a chat answer, when it made any (`None` for the kinds
    /// without a chat message: [`Kind::chat_tool_calls`] reads those).
    pub(crate) fn tool_calls(self, answer: &Value) -> Option<&Value> {
        self.message(answer)?.get("tool_calls").filter(|calls| calls.as_array().is_some_and(|c| !c.is_empty()))
    }

    /// The answer's tool calls in chat form (`[{"id", "type": "function", "function": {"name",
    /// "arguments"}}]`), whatever the API: chat `tool_calls`, Anthropic `tool_use` blocks,
    /// Responses `function_call` items. `None` when it called none.
    pub(crate) fn chat_tool_calls(self, answer: &Value) -> Option<Value> {
        let chat = match self {
            Kind::OllamaChat | Kind::OllamaGenerate | Kind::OpenAiChat => return self.tool_calls(answer).cloned(),
            Kind::Responses => via_chat::responses_as_chat(answer),
            Kind::Messages => keel_upstream::translate::anthropic::messages_to_chat_response(answer).ok()?,
        };
        Kind::OpenAiChat.tool_calls(&chat).cloned()
    }

    /// Replaces the answer's text.
    pub(crate) fn set_content(self, answer: &mut Value, text: &str) {
        let slot = match self {
            Kind::OllamaChat => answer.pointer_mut("/message/content"),
            Kind::OpenAiChat => answer.pointer_mut("/choices/0/message/content"),
            Kind::OllamaGenerate => answer.get_mut("response"),
            Kind::Responses => {
                *answer = keel_upstream::translate::responses::with_output_text(answer, text);
                return;
            }
            Kind::Messages => return via_chat::set_message_text(answer, text),
        };
        if let Some(slot) = slot {
            *slot = Value::String(text.to_owned());
        }
    }
}

/// The value at `path` (object keys, or array indices written as numbers): what
/// `value.pointer("/a/0/b")` finds, without the two allocations per step `pointer` makes — for
/// what is read on every line of a stream.
pub(crate) fn lookup<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |target, step| match target {
        Value::Object(map) => map.get(*step),
        Value::Array(items) => step.parse::<usize>().ok().and_then(|index| items.get(index)),
        _ => None,
    })
}

/// Tokens the server counted for an answer (Ollama `eval_count`, OpenAI `usage.completion_tokens`)
/// in a whole answer or a stream's chunk.
pub(crate) fn answer_tokens(value: &Value) -> Option<u64> {
    let usage = value.get("usage");
    value
        .get("eval_count")
        .or_else(|| usage?.get("completion_tokens"))
        .or_else(|| usage?.get("output_tokens"))
        .and_then(Value::as_u64)
}

/// Tokens the server counted for the prompt (Ollama `prompt_eval_count`, OpenAI
/// `usage.prompt_tokens`).
pub(crate) fn prompt_tokens(value: &Value) -> Option<u64> {
    let usage = value.get("usage");
    value
        .get("prompt_eval_count")
        .or_else(|| usage?.get("prompt_tokens"))
        .or_else(|| usage?.get("input_tokens"))
        .and_then(Value::as_u64)
}

/// A whole (non-streamed) answer body as JSON, read up to `limit` bytes; `None` when it could not
/// be read in full or is not JSON.
pub(crate) async fn read_json(response: Response, limit: usize) -> Option<Value> {
    let bytes = http_body_util::Limited::new(response.into_body(), limit).collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// A complete non-streamed answer in the client's dialect, for text keel supplies itself, to the
/// client's `request` (a Responses `response` echoes its parameters).
pub(crate) fn synthetic(kind: Kind, request: &Map<String, Value>, model: &str, text: &str) -> Value {
    match kind {
        Kind::OllamaChat => json!({
            "model": model,
            "created_at": keel_upstream::translate::now_rfc3339(),
            "message": {"role": "assistant", "content": text},
            "done_reason": "stop",
            "done": true,
        }),
        Kind::OllamaGenerate => json!({
            "model": model,
            "created_at": keel_upstream::translate::now_rfc3339(),
            "response": text,
            "done_reason": "stop",
            "done": true,
        }),
        Kind::OpenAiChat => json!({
            "id": format!("chatcmpl-keel-{}", uuid::Uuid::new_v4().simple()),
            "object": "chat.completion",
            "created": unix_now(),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }),
        Kind::Responses => {
            via_chat::responses_answer(&synthetic(Kind::OpenAiChat, request, model, text), request, model)
        }
        Kind::Messages => via_chat::messages_answer(&synthetic(Kind::OpenAiChat, request, model, text), model),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A validated whole answer as the stream the client asked for: the text in one chunk, then the
/// final chunk with the statistics (Ollama NDJSON); OpenAI SSE ending in `[DONE]`; or the named
/// SSE events of the Responses and Messages APIs.
pub(crate) fn stream_chunks(kind: Kind, include_usage: bool, answer: Value) -> (&'static str, Bytes) {
    match kind {
        Kind::OllamaChat | Kind::OllamaGenerate => ("application/x-ndjson", ollama_stream(kind, answer)),
        Kind::OpenAiChat => ("text/event-stream", Bytes::from(chat_sse(&answer, include_usage))),
        Kind::Responses => ("text/event-stream", via_chat::responses_stream(&answer)),
        Kind::Messages => ("text/event-stream", via_chat::messages_stream(&answer)),
    }
}

/// A whole Ollama answer as NDJSON: the text (and thinking) in one line, then the final line with
/// the statistics.
fn ollama_stream(kind: Kind, answer: Value) -> Bytes {
    let text = kind.text(&answer).unwrap_or_default().into_owned();
    let mut out = Vec::with_capacity(text.len() * 2 + 512);
    let mut first = Map::new();
    for key in ["model", "created_at"] {
        if let Some(value) = answer.get(key) {
            first.insert(key.into(), value.clone());
        }
    }
    let mut last = answer;
    if kind == Kind::OllamaChat {
        let role = last.pointer("/message/role").cloned().unwrap_or_else(|| json!("assistant"));
        let mut message = json!({"role": role, "content": text});
        if let Some(thinking) = last.pointer("/message/thinking") {
            message["thinking"] = thinking.clone();
        }
        first.insert("message".into(), message);
        if let Some(Value::Object(message)) = last.get_mut("message") {
            message.insert("content".into(), json!(""));
            message.remove("thinking");
        }
    } else {
        first.insert("response".into(), json!(text));
        last["response"] = json!("");
    }
    first.insert("done".into(), json!(false));
    push_line(&mut out, &Value::Object(first));
    push_line(&mut out, &last);
    Bytes::from(out)
}

/// A whole chat completion as chat-completions SSE: the text and tool calls in one chunk, the
/// `finish_reason` in the next, the usage (with `include_usage`), then `[DONE]`.
fn chat_sse(answer: &Value, include_usage: bool) -> Vec<u8> {
    let text = Kind::OpenAiChat.text(answer).unwrap_or_default();
    let mut out = Vec::with_capacity(text.len() * 2 + 512);
    let finish = answer.pointer("/choices/0/finish_reason").cloned().unwrap_or_else(|| json!("stop"));
    let mut chunk = Map::new();
    for key in ["id", "created", "model", "system_fingerprint"] {
        if let Some(value) = answer.get(key) {
            chunk.insert(key.into(), value.clone());
        }
    }
    chunk.insert("object".into(), json!("chat.completion.chunk"));
    if include_usage {
        chunk.insert("usage".into(), Value::Null);
    }
    let mut delta = json!({"role": "assistant", "content": text});
    if let Some(Value::Array(calls)) = Kind::OpenAiChat.tool_calls(answer) {
        delta["tool_calls"] = calls.iter().enumerate().map(|(i, call)| indexed(call, i)).collect();
    }
    let mut first = chunk.clone();
    first.insert("choices".into(), json!([{"index": 0, "delta": delta, "finish_reason": null}]));
    push_event(&mut out, &Value::Object(first));
    let mut last = chunk.clone();
    last.insert("choices".into(), json!([{"index": 0, "delta": {}, "finish_reason": finish}]));
    push_event(&mut out, &Value::Object(last));
    if include_usage {
        let mut usage = chunk;
        usage.insert("choices".into(), json!([]));
        usage.insert("usage".into(), answer.get("usage").cloned().unwrap_or(Value::Null));
        push_event(&mut out, &Value::Object(usage));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// A tool call of a whole answer as a stream's tool-call delta: the same call with its `index`.
fn indexed(call: &Value, index: usize) -> Value {
    let mut call = call.clone();
    if let Some(object) = call.as_object_mut() {
        object.insert("index".into(), Value::from(index));
    }
    call
}

fn push_line(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(value.to_string().as_bytes());
    out.push(b'\n');
}

fn push_event(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_what_pointer_finds() {
        let value =
            json!({"choices": [{"delta": {"content": "hi", "tool_calls": [{"index": 0}]}}], "usage": null, "a/b": 1});
        for path in [
            &["choices", "0", "delta", "content"][..],
            &["choices", "0", "delta", "tool_calls", "0", "index"],
            &["choices", "1", "delta"],
            &["choices", "x"],
            &["usage", "completion_tokens"],
            &["missing"],
            &[],
        ] {
            let pointer = path.iter().map(|step| format!("/{step}")).collect::<String>();
            assert_eq!(lookup(&value, path), value.pointer(&pointer), "{pointer}");
        }
    }

    #[test]
    fn requested_schema_per_dialect() {
        let body = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(Kind::OllamaChat.requested_schema(&body(json!({"format": "json"}))), Some(None));
        assert_eq!(
            Kind::OllamaGenerate.requested_schema(&body(json!({"format": {"type": "object"}}))),
            Some(Some(json!({"type": "object"})))
        );
        assert_eq!(Kind::OllamaChat.requested_schema(&body(json!({"format": ""}))), None);
        assert_eq!(Kind::OllamaChat.requested_schema(&body(json!({}))), None);
        let rf = |t: Value| body(json!({"response_format": t}));
        assert_eq!(Kind::OpenAiChat.requested_schema(&rf(json!({"type": "json_object"}))), Some(None));
        assert_eq!(Kind::OpenAiChat.requested_schema(&rf(json!({"type": "text"}))), None);
        assert_eq!(
            Kind::OpenAiChat.requested_schema(&rf(
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}})
            )),
            Some(Some(json!({"type": "array"})))
        );
    }

    #[test]
    fn content_and_tool_calls() {
        let chat = json!({"message": {"role": "assistant", "content": "{}", "tool_calls": [{"function": {}}]}});
        assert_eq!(Kind::OllamaChat.content(&chat), (Some("{}".into()), true));
        let openai = json!({"choices": [{"message": {"content": "[1]"}}]});
        assert_eq!(Kind::OpenAiChat.content(&openai), (Some("[1]".into()), false));
        let mut generate = json!({"response": "x"});
        Kind::OllamaGenerate.set_content(&mut generate, "{\"a\":1}");
        assert_eq!(generate["response"], "{\"a\":1}");
    }

    #[test]
    fn ollama_stream_is_text_then_final_stats() {
        let answer = json!({"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "{\"a\":1}"},
            "done": true, "done_reason": "stop", "eval_count": 3});
        let (content_type, body) = stream_chunks(Kind::OllamaChat, true, answer);
        assert_eq!(content_type, "application/x-ndjson");
        let lines: Vec<Value> =
            std::str::from_utf8(&body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"]["content"], "{\"a\":1}");
        assert_eq!(lines[0]["done"], false);
        assert_eq!(lines[1]["message"]["content"], "");
        assert_eq!(lines[1]["done"], true);
        assert_eq!(lines[1]["eval_count"], 3);
    }

    #[test]
    fn openai_stream_keeps_tool_calls() {
        let answer = json!({"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": "{}"}}]}}]});
        let (_, body) = stream_chunks(Kind::OpenAiChat, false, answer);
        let first = std::str::from_utf8(&body).unwrap().split("\n\n").next().unwrap().strip_prefix("data: ").unwrap();
        let first: Value = serde_json::from_str(first).unwrap();
        assert_eq!(first["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(first["choices"][0]["delta"]["tool_calls"][0]["id"], "call_1");
    }

    #[test]
    fn openai_stream_ends_with_usage_and_done() {
        let answer = synthetic(Kind::OpenAiChat, &Map::new(), "m", "{\"ok\":true}");
        let (content_type, body) = stream_chunks(Kind::OpenAiChat, true, answer);
        assert_eq!(content_type, "text/event-stream");
        let text = std::str::from_utf8(&body).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 4);
        assert!(events[0].contains(r#""content":"{\"ok\":true}""#));
        assert!(events[1].contains(r#""finish_reason":"stop""#));
        assert!(events[2].contains(r#""total_tokens":0"#));
        assert_eq!(events[3], "data: [DONE]");
    }
}
