//! Chat messages back to a Responses request's `instructions` and `input` items: the reverse of
//! [`responses_to_chat`](super::responses_to_chat), for a conversation keel kept in chat form.

use serde_json::{Value, json};

/// Chat-completions messages as a Responses request's `instructions` and `input` items.
///
/// System (and `developer`) messages are joined (blank lines between) into the instructions;
/// user and assistant text become `{"role", "content"}` message items (non-text content, such
/// as image parts, goes as it is); an assistant's `tool_calls` become `function_call` items
/// after its text; `tool` messages become `function_call_output` items for their
/// `tool_call_id`. Pure; nothing is refused (a message it cannot read is skipped).
pub fn chat_messages_to_input(messages: &[Value]) -> (Option<String>, Vec<Value>) {
    let mut instructions: Vec<&str> = Vec::new();
    let mut items = Vec::with_capacity(messages.len());
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = message.get("content").filter(|c| !c.is_null());
        match role {
            "system" | "developer" => instructions.extend(content.and_then(Value::as_str)),
            "tool" => items.push(call_output(message, content)),
            _ => {
                if let Some(content) = content.filter(|c| c.as_str().is_none_or(|text| !text.is_empty())) {
                    items.push(json!({"role": role, "content": content}));
                }
                if role == "assistant" {
                    items.extend(function_calls(message));
                }
            }
        }
    }
    let instructions = (!instructions.is_empty()).then(|| instructions.join("\n\n"));
    (instructions, items)
}

/// The `function_call` items of an assistant message's `tool_calls`.
fn function_calls(message: &Value) -> impl Iterator<Item = Value> + '_ {
    message.get("tool_calls").and_then(Value::as_array).into_iter().flatten().map(|call| {
        let arguments = match call.pointer("/function/arguments") {
            Some(Value::String(text)) => text.clone(),
            None | Some(Value::Null) => "{}".to_owned(),
            Some(other) => other.to_string(),
        };
        json!({
            "type": "function_call",
            "call_id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "arguments": arguments,
        })
    })
}

/// A `tool` message as a `function_call_output` item.
fn call_output(message: &Value, content: Option<&Value>) -> Value {
    let output = match content {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    json!({
        "type": "function_call_output",
        "call_id": message.get("tool_call_id").cloned().unwrap_or(Value::Null),
        "output": output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::responses::responses_to_chat;

    #[test]
    fn system_text_and_tool_calls() {
        let messages = [
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "Weather in Paris?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}),
            json!({"role": "assistant", "content": "It is sunny."}),
            json!({"role": "system", "content": "Summary: none."}),
        ];
        let (instructions, input) = chat_messages_to_input(&messages);
        assert_eq!(instructions.as_deref(), Some("Be brief.\n\nSummary: none."));
        assert_eq!(
            input,
            vec![
                json!({"role": "user", "content": "Weather in Paris?"}),
                json!({"type": "function_call", "call_id": "call_1", "name": "get_weather",
                       "arguments": "{\"city\":\"Paris\"}"}),
                json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny"}),
                json!({"role": "assistant", "content": "It is sunny."}),
            ]
        );
    }

    #[test]
    fn round_trips_through_responses_to_chat() {
        let messages = vec![
            json!({"role": "system", "content": "S"}),
            json!({"role": "user", "content": "Q"}),
            json!({"role": "assistant", "content": "A", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
            json!({"role": "tool", "tool_call_id": "c", "content": "R"}),
        ];
        let (instructions, input) = chat_messages_to_input(&messages);
        let chat = responses_to_chat(&json!({"model": "m", "instructions": instructions, "input": input})).unwrap();
        assert_eq!(chat["messages"], Value::Array(messages));
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert_eq!(chat_messages_to_input(&[]), (None, Vec::new()));
        let (_, input) = chat_messages_to_input(&[json!({"role": "assistant", "content": ""})]);
        assert!(input.is_empty());
    }
}
