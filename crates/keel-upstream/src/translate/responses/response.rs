//! A chat completion to a Responses `response` object, and the object's shell shared with the
//! stream converter.

use serde_json::{Map, Value, json};

use super::{ResponseIdentity, function_call_item, message_item};
use crate::translate::TranslateError;
use crate::translate::response::first_choice;

/// Translates a non-streamed chat completion into a Responses `response` object, with a fresh id
/// created now; see [`chat_to_responses_response_with`].
pub fn chat_to_responses_response(
    response: &Value,
    request: &Value,
    requested_model: &str,
) -> Result<Value, TranslateError> {
    chat_to_responses_response_with(response, request, requested_model, &ResponseIdentity::new())
}

/// Translates a non-streamed chat completion into a Responses `response` object with the given id
/// and `created_at`.
///
/// `output` holds a `message` item with the text (when there is text, or no tool call) and one
/// `function_call` item per tool call; `status` is `completed`, or `incomplete` (with
/// `incomplete_details.reason`) when the token limit or a content filter cut the answer; `usage`
/// comes from the completion's; the request's parameters are echoed as the API does. `model` is
/// `requested_model`.
///
/// Errors: an `error` in the body ([`TranslateError::Upstream`]), a body that is not a chat
/// completion ([`TranslateError::InvalidResponse`]). Reasoning (`reasoning_content`) is dropped.
pub fn chat_to_responses_response_with(
    response: &Value,
    request: &Value,
    requested_model: &str,
    identity: &ResponseIdentity,
) -> Result<Value, TranslateError> {
    let obj = response.as_object().ok_or_else(|| bad_response("expected a JSON object"))?;
    let choice = first_choice(response, bad_response)?;
    let message = choice.get("message").and_then(Value::as_object).ok_or_else(|| bad_response("no \"message\""))?;
    let finish = Finish::from_reason(choice.get("finish_reason").and_then(Value::as_str));

    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    };
    let calls = match message.get("tool_calls") {
        Some(Value::Array(calls)) => calls.as_slice(),
        _ => &[],
    };
    let mut output = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(&identity.message_id(), &text, finish.item_status()));
    }
    for (n, call) in calls.iter().enumerate() {
        output.push(convert_tool_call(call, n, identity)?);
    }
    let usage = obj.get("usage").and_then(usage_value);
    Ok(response_object(request, requested_model, identity, finish, output, usage))
}

fn bad_response(what: &str) -> TranslateError {
    TranslateError::InvalidResponse(format!("not an OpenAI chat completion: {what}"))
}

/// One chat tool call as a `function_call` item.
fn convert_tool_call(call: &Value, n: usize, identity: &ResponseIdentity) -> Result<Value, TranslateError> {
    let function = call.get("function").ok_or_else(|| bad_response("a tool call without \"function\""))?;
    let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
    let arguments = match function.get("arguments") {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => "{}".to_owned(),
        Some(other) => other.to_string(),
    };
    let call_id = match call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => format!("call_{n}"),
    };
    Ok(function_call_item(&identity.function_call_id(n), &call_id, name, &arguments, "completed"))
}

/// How an answer ended, as the Responses API tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finish {
    /// Still being generated (`response.created`, `response.in_progress`).
    InProgress,
    /// The model finished.
    Completed,
    /// The token limit cut the answer.
    MaxOutputTokens,
    /// A content filter cut the answer.
    ContentFilter,
}

impl Finish {
    /// From a chat `finish_reason`.
    pub(super) fn from_reason(reason: Option<&str>) -> Finish {
        match reason {
            Some("length") => Finish::MaxOutputTokens,
            Some("content_filter") => Finish::ContentFilter,
            _ => Finish::Completed,
        }
    }

    /// The status of the response and its message item.
    pub(super) fn item_status(self) -> &'static str {
        match self {
            Finish::InProgress => "in_progress",
            Finish::Completed => "completed",
            Finish::MaxOutputTokens | Finish::ContentFilter => "incomplete",
        }
    }

    /// `incomplete_details` of the response.
    fn incomplete_details(self) -> Value {
        match self {
            Finish::MaxOutputTokens => json!({"reason": "max_output_tokens"}),
            Finish::ContentFilter => json!({"reason": "content_filter"}),
            Finish::InProgress | Finish::Completed => Value::Null,
        }
    }

    /// The name of the final stream event.
    pub(super) fn final_event(self) -> &'static str {
        match self {
            Finish::MaxOutputTokens | Finish::ContentFilter => "response.incomplete",
            Finish::InProgress | Finish::Completed => "response.completed",
        }
    }
}

/// Chat `usage` as Responses `usage`.
pub(super) fn usage_value(usage: &Value) -> Option<Value> {
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = count(usage.get("prompt_tokens"));
    let output = count(usage.get("completion_tokens"));
    let total = usage.get("total_tokens").and_then(Value::as_u64).unwrap_or(input.saturating_add(output));
    let cached = count(usage.get("prompt_tokens_details").and_then(|d| d.get("cached_tokens")));
    let reasoning = count(usage.get("completion_tokens_details").and_then(|d| d.get("reasoning_tokens")));
    usage.as_object()?;
    Some(json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    }))
}

/// The request fields a `response` object echoes (the rest, `input` above all, is not kept).
const ECHOED: [&str; 12] = [
    "instructions",
    "max_output_tokens",
    "parallel_tool_calls",
    "reasoning",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
    "metadata",
];

/// The request fields a `response` object echoes, without the rest (`input` above all).
pub(super) fn echoed(request: &Value) -> Value {
    let mut echoed = Map::new();
    for field in ECHOED {
        if let Some(value) = request.get(field) {
            echoed.insert(field.into(), value.clone());
        }
    }
    Value::Object(echoed)
}

/// A whole `response` object: identity, status, output, usage, and the request parameters the API
/// echoes (defaults where the request left them out).
pub(super) fn response_object(
    request: &Value,
    model: &str,
    identity: &ResponseIdentity,
    finish: Finish,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let echo = |field: &str| request.get(field).filter(|v| !v.is_null()).cloned();
    let mut out = Map::new();
    out.insert("id".into(), Value::String(identity.id.clone()));
    out.insert("object".into(), Value::String("response".into()));
    out.insert("created_at".into(), Value::from(identity.created_at));
    out.insert("status".into(), Value::String(finish.item_status().into()));
    out.insert("background".into(), Value::Bool(false));
    out.insert("error".into(), Value::Null);
    out.insert("incomplete_details".into(), finish.incomplete_details());
    out.insert("instructions".into(), echo("instructions").unwrap_or(Value::Null));
    out.insert("max_output_tokens".into(), echo("max_output_tokens").unwrap_or(Value::Null));
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("output".into(), Value::Array(output));
    out.insert("parallel_tool_calls".into(), echo("parallel_tool_calls").unwrap_or(Value::Bool(true)));
    out.insert("previous_response_id".into(), Value::Null);
    out.insert("reasoning".into(), echo("reasoning").unwrap_or(json!({"effort": null, "summary": null})));
    out.insert("store".into(), Value::Bool(false));
    out.insert("temperature".into(), echo("temperature").unwrap_or(Value::Null));
    out.insert("text".into(), echo("text").unwrap_or_else(|| json!({"format": {"type": "text"}})));
    out.insert("tool_choice".into(), echo("tool_choice").unwrap_or_else(|| Value::String("auto".into())));
    out.insert("tools".into(), echo("tools").unwrap_or_else(|| Value::Array(Vec::new())));
    out.insert("top_p".into(), echo("top_p").unwrap_or(Value::Null));
    out.insert("truncation".into(), echo("truncation").unwrap_or_else(|| Value::String("disabled".into())));
    out.insert("usage".into(), usage.unwrap_or(Value::Null));
    out.insert("user".into(), echo("user").unwrap_or(Value::Null));
    out.insert("metadata".into(), echo("metadata").unwrap_or_else(|| Value::Object(Map::new())));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ResponseIdentity {
        ResponseIdentity::fixed("resp_t", 1_700_000_000)
    }

    fn completion(message: Value, finish: &str) -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                      "prompt_tokens_details": {"cached_tokens": 4}},
        })
    }

    #[test]
    fn text_answer() {
        let request = json!({"model": "m", "input": "hi", "instructions": "be brief", "temperature": 0.5});
        let chat = completion(json!({"role": "assistant", "content": "hello"}), "stop");
        let resp = chat_to_responses_response_with(&chat, &request, "m", &identity()).unwrap();
        assert_eq!(resp["id"], "resp_t");
        assert_eq!(resp["object"], "response");
        assert_eq!(resp["created_at"], 1_700_000_000);
        assert_eq!(resp["status"], "completed");
        assert_eq!(resp["incomplete_details"], Value::Null);
        assert_eq!(resp["model"], "m");
        assert_eq!(
            resp["output"],
            json!([{"id": "msg_t", "type": "message", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "hello", "annotations": [], "logprobs": []}]}])
        );
        assert_eq!(
            resp["usage"],
            json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                   "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15})
        );
        assert_eq!(resp["instructions"], "be brief");
        assert_eq!(resp["temperature"], 0.5);
        assert_eq!(resp["tools"], json!([]));
        assert_eq!(resp["tool_choice"], "auto");
        assert_eq!(resp["parallel_tool_calls"], true);
        assert_eq!(resp["text"], json!({"format": {"type": "text"}}));
        assert_eq!(resp["error"], Value::Null);
        assert_eq!(super::super::response_output_text(&resp).as_deref(), Some("hello"));
    }

    #[test]
    fn tool_calls_and_length() {
        let tools = json!([{"type": "function", "name": "f", "parameters": {"type": "object"}}]);
        let request = json!({"model": "m", "input": "x", "tools": tools, "max_output_tokens": 9});
        let chat = completion(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                {"type": "function", "function": {"name": "g", "arguments": {"y": 2}}},
            ]}),
            "length",
        );
        let resp = chat_to_responses_response_with(&chat, &request, "m", &identity()).unwrap();
        assert_eq!(resp["status"], "incomplete");
        assert_eq!(resp["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(
            resp["output"],
            json!([
                {"id": "fc_t_0", "type": "function_call", "status": "completed", "call_id": "call_a", "name": "f", "arguments": "{\"x\":1}"},
                {"id": "fc_t_1", "type": "function_call", "status": "completed", "call_id": "call_1", "name": "g", "arguments": "{\"y\":2}"},
            ])
        );
        assert_eq!(resp["tools"], tools);
        assert_eq!(resp["max_output_tokens"], 9);
        assert_eq!(super::super::response_output_text(&resp), None);
    }

    #[test]
    fn json_schema_text_is_echoed() {
        let text =
            json!({"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}});
        let request = json!({"model": "m", "input": "x", "text": text});
        let chat = completion(json!({"role": "assistant", "content": "{\"a\":1}"}), "stop");
        let resp = chat_to_responses_response(&chat, &request, "m").unwrap();
        assert_eq!(resp["text"], text);
        assert!(resp["id"].as_str().unwrap().starts_with("resp_"));
        assert!(resp["output"][0]["id"].as_str().unwrap().starts_with("msg_"));
    }

    #[test]
    fn errors() {
        let request = json!({"model": "m", "input": "x"});
        let upstream = chat_to_responses_response(&json!({"error": {"message": "boom"}}), &request, "m");
        assert_eq!(upstream, Err(TranslateError::Upstream("boom".into())));
        for body in [json!([]), json!({"choices": []}), json!({"x": 1}), json!({"choices": [{"index": 0}]})] {
            let result = chat_to_responses_response(&body, &request, "m");
            assert!(matches!(result, Err(TranslateError::InvalidResponse(_))), "{body}: {result:?}");
        }
        let no_usage = json!({"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]});
        let resp = chat_to_responses_response(&no_usage, &request, "m").unwrap();
        assert_eq!(resp["usage"], Value::Null);
        assert_eq!(resp["incomplete_details"], json!({"reason": "content_filter"}));
        assert_eq!(resp["output"][0]["status"], "incomplete");
    }
}
