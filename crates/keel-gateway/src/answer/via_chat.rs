//! Answers of the two APIs keel also serves through chat completions — the OpenAI Responses API
//! (`/v1/responses`) and Anthropic's Messages API (`/v1/messages`): what a request asks for,
//! where an answer's text is, and the whole answers keel writes or re-streams itself. Those are
//! built as chat completions (or chat-completions SSE) and converted by the bridge's own
//! translators in [`keel_upstream::translate`], so their shapes are written once.

use bytes::Bytes;
use keel_upstream::translate::responses::{self, ResponseIdentity, TextFormat};
use keel_upstream::translate::{StreamTranslator, anthropic};
use serde_json::{Map, Value, json};

/// What a Responses request's `text.format` asks for: `Some(None)` for `json_object`, the schema
/// of `json_schema`, `None` for text.
pub(super) fn responses_schema(body: &Map<String, Value>) -> Option<Option<Value>> {
    let request = json!({"text": body.get("text")?});
    match responses::text_format_schema(&request)? {
        TextFormat::JsonObject => Some(None),
        TextFormat::JsonSchema { schema, .. } => Some(Some(schema)),
    }
}

/// What an Anthropic request's structured-output format asks for: `output_format` (or
/// `output_config.format`, where the API has it now) of type `json_schema` gives its schema;
/// Anthropic has no "any JSON" format.
pub(super) fn messages_schema(body: &Map<String, Value>) -> Option<Option<Value>> {
    let format = body
        .get("output_format")
        .filter(|format| !format.is_null())
        .or_else(|| body.get("output_config")?.get("format"))?;
    (format.get("type")?.as_str()? == "json_schema").then(|| format.get("schema").cloned())
}

/// The entries of the array `answer[list]` whose `type` is `kind`.
pub(super) fn items<'a>(answer: &'a Value, list: &str, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    answer
        .get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |item| item.get("type").and_then(Value::as_str) == Some(kind))
}

/// The text blocks of an Anthropic message, joined; `None` when it has none.
pub(super) fn message_text(answer: &Value) -> Option<String> {
    let mut text: Option<String> = None;
    for piece in items(answer, "content", "text").filter_map(|block| block.get("text").and_then(Value::as_str)) {
        text.get_or_insert_with(String::new).push_str(piece);
    }
    text
}

/// Replaces an Anthropic message's text: one text block with `text` where the first one was (in
/// front when there was none), the other text blocks removed, every other block kept.
pub(super) fn set_message_text(answer: &mut Value, text: &str) {
    let Some(object) = answer.as_object_mut() else { return };
    let content = object.entry("content").or_insert_with(|| Value::Array(Vec::new()));
    if !content.is_array() {
        *content = Value::Array(Vec::new());
    }
    let Some(blocks) = content.as_array_mut() else { return };
    let is_text = |block: &Value| block.get("type").and_then(Value::as_str) == Some("text");
    // Only non-text blocks precede the first text block: its position survives the removal.
    let first = blocks.iter().position(is_text).unwrap_or(0);
    blocks.retain(|block| !is_text(block));
    blocks.insert(first.min(blocks.len()), json!({"type": "text", "text": text}));
}

/// A chat completion keel wrote as a Responses `response` to `request` (whose parameters it
/// echoes, `input` aside).
pub(super) fn responses_answer(chat: &Value, request: &Map<String, Value>, model: &str) -> Value {
    let echoed: Map<String, Value> =
        request.iter().filter(|(key, _)| *key != "input").map(|(key, value)| (key.clone(), value.clone())).collect();
    // Cannot fail: `chat` is a completion keel built.
    responses::chat_to_responses_response(chat, &Value::Object(echoed), model).unwrap_or_default()
}

/// A chat completion keel wrote as an Anthropic message.
pub(super) fn messages_answer(chat: &Value, model: &str) -> Value {
    // Cannot fail: `chat` is a completion keel built.
    anthropic::chat_to_messages_response(chat, model).unwrap_or_default()
}

/// A whole Responses `response` re-streamed as the Responses API's named events
/// (`response.created` … `response.completed`), under the response's own id and `created_at`,
/// echoing its parameters.
pub(super) fn responses_stream(answer: &Value) -> Bytes {
    let id = answer.get("id").and_then(Value::as_str).unwrap_or("resp_keel");
    let created_at = answer.get("created_at").and_then(Value::as_i64).unwrap_or(0);
    let translator = responses::ChatSseToResponsesSse::new(answer, model_of(answer))
        .with_identity(ResponseIdentity::fixed(id, created_at));
    restream(translator, &responses_as_chat(answer))
}

/// A whole Anthropic message re-streamed as Anthropic's named events (`message_start` …
/// `message_stop`), under the message's own id.
pub(super) fn messages_stream(answer: &Value) -> Bytes {
    let mut translator = anthropic::ChatSseToMessagesSse::new(model_of(answer).to_owned());
    if let Some(id) = answer.get("id").and_then(Value::as_str) {
        translator = translator.with_id(id.to_owned());
    }
    let chat = anthropic::messages_to_chat_response(answer).unwrap_or_else(|_| {
        let text = message_text(answer).unwrap_or_default();
        super::synthetic(super::Kind::OpenAiChat, &Map::new(), model_of(answer), &text)
    });
    restream(translator, &chat)
}

/// The answer's `model`.
fn model_of(answer: &Value) -> &str {
    answer.get("model").and_then(Value::as_str).unwrap_or_default()
}

/// `chat` as chat-completions SSE (with its usage) through `translator`: the client's events.
fn restream(mut translator: impl StreamTranslator, chat: &Value) -> Bytes {
    let mut events = translator.push(&super::chat_sse(chat, true));
    match translator.finish() {
        Ok(last) => events.extend(last),
        Err(err) => events.extend(translator.error_event(&err.to_string())),
    }
    Bytes::from(events.concat())
}

/// A Responses `response` as the chat completion it reads as: its `output_text`, its
/// `function_call` items as tool calls, how it ended, its usage.
pub(super) fn responses_as_chat(answer: &Value) -> Value {
    let calls: Vec<Value> = items(answer, "output", "function_call")
        .map(|item| {
            json!({"id": item.get("call_id"), "type": "function",
                   "function": {"name": item.get("name"), "arguments": item.get("arguments")}})
        })
        .collect();
    let finish = match answer.pointer("/incomplete_details/reason").and_then(Value::as_str) {
        Some("max_output_tokens") => "length",
        Some("content_filter") => "content_filter",
        _ if !calls.is_empty() => "tool_calls",
        _ => "stop",
    };
    let mut message = json!({"role": "assistant", "content": responses::response_output_text(answer)});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let usage = answer.get("usage").filter(|usage| usage.is_object()).map(|usage| {
        json!({"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens"),
               "total_tokens": usage.get("total_tokens")})
    });
    json!({
        "id": answer.get("id"),
        "object": "chat.completion",
        "model": answer.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{Kind, stream_chunks, synthetic};

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    /// The `data` of each named SSE event, with its `event:` name checked against its `type`.
    fn events(bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        text.split("\n\n")
            .filter(|event| !event.trim().is_empty())
            .map(|event| {
                let name = event.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_default();
                let data = event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_default();
                let data: Value = serde_json::from_str(data).unwrap_or_default();
                assert_eq!(data["type"], name, "{event}");
                data
            })
            .collect()
    }

    #[test]
    fn schemas_of_both_apis() {
        let schema = json!({"type": "object"});
        let responses = |format: Value| Kind::Responses.requested_schema(&body(json!({"text": {"format": format}})));
        assert_eq!(responses(json!({"type": "json_object"})), Some(None));
        assert_eq!(
            responses(json!({"type": "json_schema", "name": "x", "schema": schema})),
            Some(Some(schema.clone()))
        );
        assert_eq!(responses(json!({"type": "text"})), None);
        let messages = |body_: Value| Kind::Messages.requested_schema(&body(body_));
        assert_eq!(
            messages(json!({"output_format": {"type": "json_schema", "schema": schema}})),
            Some(Some(schema.clone()))
        );
        assert_eq!(
            messages(json!({"output_config": {"format": {"type": "json_schema", "schema": schema}}})),
            Some(Some(schema))
        );
        assert_eq!(messages(json!({"output_format": {"type": "json_object"}})), None);
        assert_eq!(messages(json!({})), None);
    }

    #[test]
    fn load_only_requests() {
        assert!(Kind::Responses.is_load_only(&body(json!({"input": ""}))));
        assert!(Kind::Responses.is_load_only(&body(json!({"input": []}))));
        assert!(!Kind::Responses.is_load_only(&body(json!({"input": "hi"}))));
        assert!(Kind::Messages.is_load_only(&body(json!({"messages": []}))));
    }

    #[test]
    fn message_text_is_replaced_in_place() {
        let mut message = json!({"content": [{"type": "thinking", "thinking": "…"}, {"type": "text", "text": "a"},
            {"type": "text", "text": "b"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}]});
        let (text, tools) = Kind::Messages.content(&message);
        assert_eq!((text.as_deref(), tools), (Some("ab"), true));
        Kind::Messages.set_content(&mut message, "{}");
        let types: Vec<&str> =
            message["content"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["thinking", "text", "tool_use"]);
        assert_eq!(message["content"][1]["text"], "{}");
        let mut empty = json!({"content": []});
        Kind::Messages.set_content(&mut empty, "[1]");
        assert_eq!(message_text(&empty).as_deref(), Some("[1]"));
    }

    #[test]
    fn responses_text_and_tool_calls() {
        let request = body(json!({"input": "hi", "text": {"format": {"type": "json_object"}}}));
        let mut answer = synthetic(Kind::Responses, &request, "m", "{\"a\":1}");
        assert_eq!(answer["object"], "response");
        assert_eq!(answer["text"]["format"]["type"], "json_object", "the request's parameters are echoed");
        assert_eq!(Kind::Responses.content(&answer), (Some("{\"a\":1}".into()), false));
        Kind::Responses.set_content(&mut answer, "[]");
        assert_eq!(responses::response_output_text(&answer).as_deref(), Some("[]"));
        answer["output"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}));
        assert!(Kind::Responses.content(&answer).1);
    }

    #[test]
    fn responses_stream_ends_completed_with_the_text() {
        let answer = synthetic(Kind::Responses, &Map::new(), "m", "{\"ok\":true}");
        let (content_type, bytes) = stream_chunks(Kind::Responses, false, answer.clone());
        assert_eq!(content_type, "text/event-stream");
        let events = events(&bytes);
        assert_eq!(events[0]["type"], "response.created");
        let deltas: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .filter_map(|e| e["delta"].as_str())
            .collect();
        assert_eq!(deltas, "{\"ok\":true}");
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.completed");
        assert_eq!(last["response"]["id"], answer["id"]);
        assert_eq!(responses::response_output_text(&last["response"]).as_deref(), Some("{\"ok\":true}"));
        let numbers: Vec<u64> = events.iter().filter_map(|e| e["sequence_number"].as_u64()).collect();
        assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn responses_stream_keeps_function_calls() {
        let answer = json!({"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "status": "completed",
            "output": [{"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "f", "arguments": "{\"x\":1}", "status": "completed"}],
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}});
        let (_, bytes) = stream_chunks(Kind::Responses, false, answer);
        let events = events(&bytes);
        let last = &events.last().unwrap()["response"];
        assert_eq!(last["output"][0]["call_id"], "call_9", "{last}");
        assert_eq!(last["output"][0]["arguments"], "{\"x\":1}");
        assert_eq!(last["usage"]["input_tokens"], 3);
    }

    #[test]
    fn messages_stream_is_anthropics_events() {
        let answer = synthetic(Kind::Messages, &Map::new(), "m", "{\"ok\":true}");
        assert_eq!(answer["type"], "message");
        let (_, bytes) = stream_chunks(Kind::Messages, false, answer.clone());
        let events = events(&bytes);
        let names: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        assert_eq!(events[0]["message"]["id"], answer["id"]);
        let text: String = events.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
        assert_eq!(text, "{\"ok\":true}");
    }
}
