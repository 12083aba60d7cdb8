//! Whole responses: a chat completion ⇄ an Anthropic message.

use serde_json::{Map, Value, json};

use super::super::TranslateError;
use super::super::response::{first_choice, message_of, parse_arguments};
use super::{anthropic_error_of, anthropic_stop_reason, chat_finish_reason, new_id, now_secs};

/// Translates a non-streamed chat completion into an Anthropic message: `{"id": "msg_…", "type":
/// "message", "role": "assistant", "model": requested_model, "content": [text block, tool_use
/// blocks], "stop_reason", "stop_sequence", "usage": {"input_tokens", "output_tokens"}}`.
///
/// The message id is generated (`msg_` and 24 random characters); a tool call keeps its id, or
/// gets a generated `toolu_…` one. `stop_reason`: `end_turn`, `max_tokens` (`length`),
/// `tool_use` (`tool_calls`, or tool calls with any reason), `stop_sequence` when the upstream
/// says which stop string matched (vLLM's `stop_reason`). Reasoning text is dropped (Anthropic's
/// thinking blocks need a signature only Anthropic can make).
///
/// Errors: an `error` in the body ([`TranslateError::Upstream`]), a body that is not a completion
/// or tool-call arguments that are not a JSON object ([`TranslateError::InvalidResponse`]).
pub fn chat_to_messages_response(response: &Value, requested_model: &str) -> Result<Value, TranslateError> {
    let obj = response.as_object().ok_or_else(|| not_completion("expected a JSON object"))?;
    let choice = first_choice(response, not_completion)?;
    let message = choice.get("message").and_then(Value::as_object);
    let mut content = Vec::new();
    let text = message.map(|m| text_of(m.get("content"))).unwrap_or_default();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(Value::Array(calls)) = message.and_then(|m| m.get("tool_calls")) {
        for call in calls {
            content.push(tool_use_block(call)?);
        }
    }
    let had_tools = content.len() > usize::from(!text.is_empty());
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let matched = choice.get("stop_reason").and_then(Value::as_str);
    let (stop_reason, stop_sequence) = anthropic_stop_reason(finish, had_tools, matched);
    let usage = obj.get("usage");
    let count = |field: &str| usage.and_then(|u| u.get(field)).and_then(Value::as_u64).unwrap_or(0);
    Ok(json!({
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {"input_tokens": count("prompt_tokens"), "output_tokens": count("completion_tokens")},
    }))
}

/// Translates a non-streamed Anthropic message into a chat completion: `{"id", "object":
/// "chat.completion", "created", "model", "choices": [{"index": 0, "message": {"role":
/// "assistant", "content", "reasoning_content"?, "tool_calls"?}, "finish_reason"}], "usage":
/// {"prompt_tokens", "completion_tokens", "total_tokens"}}`.
///
/// Text blocks are joined into `content` (`null` when there is none but tool calls), `tool_use`
/// blocks become `tool_calls` (input as JSON text), thinking blocks `reasoning_content` (what
/// the Ollama translation reads as `thinking`). `finish_reason`: `stop` (`end_turn`,
/// `stop_sequence`, `pause_turn`), `length` (`max_tokens`), `tool_calls` (`tool_use`),
/// `content_filter` (`refusal`). `prompt_tokens` counts cached input too. `created` is the
/// current time (Anthropic's message has none).
///
/// Errors: an Anthropic error body ([`TranslateError::Upstream`]), a body that is not a message
/// ([`TranslateError::InvalidResponse`]).
pub fn messages_to_chat_response(response: &Value) -> Result<Value, TranslateError> {
    let obj = response.as_object().ok_or_else(|| not_message("expected a JSON object"))?;
    if obj.get("type").and_then(Value::as_str) == Some("error") || obj.get("error").is_some_and(|e| !e.is_null()) {
        let message = anthropic_error_of(response).or_else(|| message_of(response));
        return Err(TranslateError::Upstream(message.unwrap_or_else(|| response.to_string())));
    }
    let blocks = obj.get("content").and_then(Value::as_array).ok_or_else(|| not_message("no \"content\""))?;
    let (mut text, mut thinking, mut calls) = (String::new(), String::new(), Vec::new());
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("thinking") => thinking.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(chat_tool_call(block)),
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) };
    message.insert("content".into(), content);
    if !thinking.is_empty() {
        message.insert("reasoning_content".into(), Value::String(thinking));
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let finish = chat_finish_reason(obj.get("stop_reason").and_then(Value::as_str));
    Ok(json!({
        "id": obj.get("id").and_then(Value::as_str).unwrap_or_default(),
        "object": "chat.completion",
        "created": now_secs(),
        "model": obj.get("model").and_then(Value::as_str).unwrap_or_default(),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": chat_usage(obj.get("usage")),
    }))
}

/// Anthropic usage as chat usage; cached input (read or written) counts as prompt tokens.
pub(super) fn chat_usage(usage: Option<&Value>) -> Value {
    let count = |field: &str| usage.and_then(|u| u.get(field)).and_then(Value::as_u64).unwrap_or(0);
    let prompt = count("input_tokens")
        .saturating_add(count("cache_read_input_tokens"))
        .saturating_add(count("cache_creation_input_tokens"));
    let completion = count("output_tokens");
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion)})
}

fn not_completion(what: &str) -> TranslateError {
    TranslateError::InvalidResponse(format!("not an OpenAI completion: {what}"))
}

fn not_message(what: &str) -> TranslateError {
    TranslateError::InvalidResponse(format!("not an Anthropic message: {what}"))
}

/// Chat message content as text: a string, or the text of its parts.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

/// A chat tool call as a `tool_use` block.
fn tool_use_block(call: &Value) -> Result<Value, TranslateError> {
    let function = call.get("function");
    let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
    let input = match function.and_then(|f| f.get("arguments")) {
        Some(Value::String(text)) => parse_arguments(name, text)?,
        Some(obj @ Value::Object(_)) => obj.clone(),
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(_) => parse_arguments(name, "[]")?,
    };
    let id = match call.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => new_id("toolu_"),
    };
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// A `tool_use` block as a chat tool call.
fn chat_tool_call(block: &Value) -> Value {
    let arguments = match block.get("input") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(input) => input.to_string(),
    };
    json!({
        "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
        "type": "function",
        "function": {"name": block.get("name").and_then(Value::as_str).unwrap_or_default(), "arguments": arguments},
    })
}
