//! A Responses request to a chat-completions request.

use serde_json::{Map, Value, json};

use crate::translate::TranslateError;

/// Translates a Responses API request (`POST /v1/responses`) into a chat-completions body.
///
/// Kept: `model`; `instructions` (the first, system, message); `input` as a string (one user
/// message) or items: messages (`{"role", "content"}` with or without `"type": "message"`; content
/// a string or `input_text`/`output_text`/`input_image` parts; `developer` becomes `system`),
/// `function_call` items (assistant `tool_calls`, consecutive ones in one message) and
/// `function_call_output` items (`tool` messages); function `tools` (any other tool type is
/// refused); `tool_choice`; `parallel_tool_calls`; `max_output_tokens` (as `max_tokens`);
/// `temperature`, `top_p`; `text.format` (as `response_format`); `stream` (with
/// `stream_options.include_usage`).
///
/// Refused: `previous_response_id` and `conversation` (keel keeps no state: send the whole input
/// each time), `item_reference` items, file inputs. Dropped: `store`, `metadata`, `user`,
/// `reasoning` (and `reasoning` input items), `truncation`, `include`, `background`,
/// `service_tier`, `prompt_cache_key`, `safety_identifier`, `top_logprobs`, `max_tool_calls`,
/// `text.verbosity`.
pub fn responses_to_chat(request: &Value) -> Result<Value, TranslateError> {
    let req = request.as_object().ok_or_else(|| invalid("invalid request body: expected a JSON object"))?;
    refuse_state(req)?;
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m,
        None | Some(Value::Null | Value::String(_)) => return Err(invalid("model is required")),
        Some(_) => return Err(invalid("invalid request body: field \"model\" must be a string")),
    };
    let mut messages = Vec::new();
    match req.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(_) => return Err(invalid("invalid request body: field \"instructions\" must be a string")),
    }
    match req.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => convert_items(items, &mut messages)?,
        Some(_) => return Err(invalid("invalid request body: field \"input\" must be a string or an array")),
    }
    if messages.is_empty() {
        return Err(invalid("invalid request body: field \"input\" is required"));
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    out.insert("messages".into(), Value::Array(messages));
    apply_tools(&mut out, req)?;
    apply_sampling(&mut out, req)?;
    if let Some(format) = response_format(req.get("text"))? {
        out.insert("response_format".into(), format);
    }
    let stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("invalid request body: field \"stream\" must be a boolean")),
    };
    out.insert("stream".into(), Value::Bool(stream));
    if stream {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(message.into())
}

/// `previous_response_id` and `conversation` need stored state keel does not keep.
fn refuse_state(req: &Map<String, Value>) -> Result<(), TranslateError> {
    for field in ["previous_response_id", "conversation"] {
        if req.get(field).is_some_and(|v| !v.is_null()) {
            return Err(invalid(format!(
                "\"{field}\" is not supported: keel serves the Responses API statelessly and stores no \
                 responses; send the whole conversation in \"input\" each time (or use the X-Keel-Session \
                 header to have keel keep the session)"
            )));
        }
    }
    Ok(())
}

/// Appends the chat messages for the input items.
fn convert_items(items: &[Value], messages: &mut Vec<Value>) -> Result<(), TranslateError> {
    for (index, item) in items.iter().enumerate() {
        let obj =
            item.as_object().ok_or_else(|| invalid(format!("invalid input item {index}: expected a JSON object")))?;
        let kind = match obj.get("type") {
            None | Some(Value::Null) if obj.contains_key("role") => "message",
            Some(Value::String(kind)) => kind.as_str(),
            _ => return Err(invalid(format!("invalid input item {index}: missing \"type\" (or \"role\")"))),
        };
        match kind {
            "message" => messages.push(convert_message(obj, index)?),
            "function_call" => add_function_call(obj, index, messages)?,
            "function_call_output" => messages.push(convert_call_output(obj, index)?),
            "reasoning" => {} // a model's earlier reasoning: chat completions has no place for it
            "item_reference" => {
                return Err(invalid(format!(
                    "input item {index}: \"item_reference\" is not supported: keel serves the Responses API \
                     statelessly; send the referenced item itself"
                )));
            }
            other => {
                return Err(invalid(format!(
                    "input item {index}: item type \"{other}\" is not supported (keel translates the Responses \
                     API to chat completions: messages, function_call and function_call_output only)"
                )));
            }
        }
    }
    Ok(())
}

/// One message item.
fn convert_message(obj: &Map<String, Value>, index: usize) -> Result<Value, TranslateError> {
    let role = match obj.get("role").and_then(Value::as_str) {
        Some("developer" | "system") => "system",
        Some(role @ ("user" | "assistant")) => role,
        Some(other) => return Err(invalid(format!("input item {index}: unknown role \"{other}\""))),
        None => return Err(invalid(format!("input item {index}: a message needs a string \"role\""))),
    };
    let content = match obj.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) => convert_parts(parts, role, index)?,
        None | Some(Value::Null) => Value::String(String::new()),
        Some(_) => return Err(invalid(format!("input item {index}: \"content\" must be a string or an array"))),
    };
    Ok(json!({"role": role, "content": content}))
}

/// A message's content parts: a string when they are all text (or the role takes only text),
/// else chat content parts.
fn convert_parts(parts: &[Value], role: &str, index: usize) -> Result<Value, TranslateError> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        out.push(convert_part(part, index)?);
    }
    let all_text = out.iter().all(|p| p.get("type").and_then(Value::as_str) == Some("text"));
    if all_text && (out.len() == 1 || role != "user") {
        let text: String = out.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
        return Ok(Value::String(text));
    }
    if !all_text && role != "user" {
        return Err(invalid(format!("input item {index}: only user messages may hold images")));
    }
    Ok(Value::Array(out))
}

/// One content part as a chat content part.
fn convert_part(part: &Value, index: usize) -> Result<Value, TranslateError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "input_text" | "output_text" | "text" => match part.get("text") {
            Some(Value::String(text)) => Ok(json!({"type": "text", "text": text})),
            _ => Err(invalid(format!("input item {index}: a \"{kind}\" part needs a string \"text\""))),
        },
        "refusal" => match part.get("refusal") {
            Some(Value::String(text)) => Ok(json!({"type": "text", "text": text})),
            _ => Err(invalid(format!("input item {index}: a \"refusal\" part needs a string \"refusal\""))),
        },
        "input_image" => {
            let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                return Err(invalid(format!(
                    "input item {index}: \"input_image\" needs an \"image_url\" (a URL or data URL); file ids \
                     are not supported"
                )));
            };
            let mut image = Map::new();
            image.insert("url".into(), Value::String(url.to_owned()));
            if let Some(detail) = part.get("detail").and_then(Value::as_str).filter(|d| *d != "auto") {
                image.insert("detail".into(), Value::String(detail.to_owned()));
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        "" => Err(invalid(format!("input item {index}: a content part needs a string \"type\""))),
        other => Err(invalid(format!("input item {index}: content part type \"{other}\" is not supported"))),
    }
}

/// A `function_call` item: a tool call of the preceding assistant message, or a new one.
fn add_function_call(obj: &Map<String, Value>, index: usize, messages: &mut Vec<Value>) -> Result<(), TranslateError> {
    let string = |field: &str| match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(invalid(format!("input item {index}: a function_call needs a string \"{field}\""))),
    };
    let (call_id, name) = (string("call_id")?, string("name")?);
    let arguments = match obj.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => "{}".to_owned(),
        Some(other @ Value::Object(_)) => other.to_string(),
        Some(_) => return Err(invalid(format!("input item {index}: \"arguments\" must be a JSON string"))),
    };
    let call = json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}});
    if let Some(last) = messages.last_mut().filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        && let Some(last) = last.as_object_mut()
    {
        let calls = last.entry("tool_calls").or_insert_with(|| Value::Array(Vec::new()));
        if let Some(calls) = calls.as_array_mut() {
            calls.push(call);
            return Ok(());
        }
    }
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    Ok(())
}

/// A `function_call_output` item: a `tool` message.
fn convert_call_output(obj: &Map<String, Value>, index: usize) -> Result<Value, TranslateError> {
    let call_id = match obj.get("call_id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(invalid(format!("input item {index}: a function_call_output needs a string \"call_id\""))),
    };
    let content = match obj.get("output") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match convert_part(part, index)? {
                    Value::Object(p) if p.get("type").and_then(Value::as_str) == Some("text") => {
                        text.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default());
                    }
                    _ => return Err(invalid(format!("input item {index}: a function_call_output may hold only text"))),
                }
            }
            text
        }
        _ => return Err(invalid(format!("input item {index}: a function_call_output needs an \"output\""))),
    };
    Ok(json!({"role": "tool", "tool_call_id": call_id, "content": content}))
}

/// `tools`, `tool_choice`, `parallel_tool_calls`.
fn apply_tools(out: &mut Map<String, Value>, req: &Map<String, Value>) -> Result<(), TranslateError> {
    match req.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) if tools.is_empty() => {}
        Some(Value::Array(tools)) => {
            let tools = tools.iter().enumerate().map(|(i, t)| convert_tool(t, i)).collect::<Result<Vec<_>, _>>()?;
            out.insert("tools".into(), Value::Array(tools));
        }
        Some(_) => return Err(invalid("invalid request body: field \"tools\" must be an array")),
    }
    match req.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(choice) => {
            out.insert("tool_choice".into(), convert_tool_choice(choice)?);
        }
    }
    match req.get("parallel_tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            out.insert("parallel_tool_calls".into(), Value::Bool(*b));
        }
        Some(_) => return Err(invalid("invalid request body: field \"parallel_tool_calls\" must be a boolean")),
    }
    Ok(())
}

/// A flat Responses function tool as a chat tool.
fn convert_tool(tool: &Value, index: usize) -> Result<Value, TranslateError> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(invalid(format!(
                "tool type \"{other}\" is not supported: keel translates the Responses API to chat completions, \
                 which has only function tools"
            )));
        }
        None => return Err(invalid(format!("tool {index}: missing \"type\""))),
    }
    let Some(name) = tool.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return Err(invalid(format!("tool {index}: a function tool needs a string \"name\"")));
    };
    let mut function = Map::new();
    function.insert("name".into(), Value::String(name.to_owned()));
    for field in ["description", "parameters", "strict"] {
        if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
            function.insert(field.into(), value.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

fn convert_tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "none" | "auto" | "required") => Ok(choice.clone()),
        Value::Object(obj) if obj.get("type").and_then(Value::as_str) == Some("function") => {
            match obj.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(invalid("invalid request body: a function \"tool_choice\" needs a \"name\"")),
            }
        }
        _ => Err(invalid(format!(
            "\"tool_choice\" {choice} is not supported: use \"none\", \"auto\", \"required\" or {{\"type\": \
             \"function\", \"name\": ...}}"
        ))),
    }
}

/// `max_output_tokens`, `temperature`, `top_p`.
fn apply_sampling(out: &mut Map<String, Value>, req: &Map<String, Value>) -> Result<(), TranslateError> {
    for (from, to) in [("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p")] {
        match req.get(from) {
            None | Some(Value::Null) => {}
            Some(n @ Value::Number(_)) => {
                if from == "max_output_tokens" && n.as_u64().is_none() {
                    return Err(invalid(
                        "invalid request body: field \"max_output_tokens\" must be a positive integer",
                    ));
                }
                out.insert(to.into(), n.clone());
            }
            Some(_) => return Err(invalid(format!("invalid request body: field \"{from}\" must be a number"))),
        }
    }
    Ok(())
}

/// `text.format` as a chat `response_format` (`None` for plain text).
fn response_format(text: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    let format = match text {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(text)) => match text.get("format") {
            None | Some(Value::Null) => return Ok(None),
            Some(format) => format,
        },
        Some(_) => return Err(invalid("invalid request body: field \"text\" must be an object")),
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let Some(name) = format.get("name").and_then(Value::as_str) else {
                return Err(invalid("invalid request body: \"text.format\" of type json_schema needs a \"name\""));
            };
            let Some(schema @ Value::Object(_)) = format.get("schema") else {
                return Err(invalid(
                    "invalid request body: \"text.format\" of type json_schema needs a \"schema\" object",
                ));
            };
            let mut out = Map::new();
            out.insert("name".into(), Value::String(name.to_owned()));
            if let Some(description) = format.get("description").filter(|d| d.is_string()) {
                out.insert("description".into(), description.clone());
            }
            out.insert("schema".into(), schema.clone());
            if let Some(strict) = format.get("strict").filter(|s| s.is_boolean()) {
                out.insert("strict".into(), strict.clone());
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": out})))
        }
        _ => Err(invalid("invalid request body: \"text.format.type\" must be text, json_object or json_schema")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(request: Value) -> String {
        match responses_to_chat(&request) {
            Err(TranslateError::InvalidRequest(message)) => message,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn string_input_with_instructions_and_sampling() {
        let chat = responses_to_chat(&json!({
            "model": "m", "instructions": "be brief", "input": "hi", "max_output_tokens": 50,
            "temperature": 0.2, "top_p": 0.9, "store": true, "metadata": {"a": "b"}, "stream": true,
        }))
        .unwrap();
        assert_eq!(
            chat,
            json!({
                "model": "m",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "max_tokens": 50, "temperature": 0.2, "top_p": 0.9,
                "stream": true, "stream_options": {"include_usage": true},
            })
        );
    }

    #[test]
    fn items_with_tool_calls_and_outputs() {
        let chat = responses_to_chat(&json!({
            "model": "m",
            "input": [
                {"role": "developer", "content": "rules"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "what is"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "let me look"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"x\":1}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "2"}]},
                {"type": "function_call", "call_id": "c3", "name": "h", "arguments": "{}"},
            ],
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": false,
        }))
        .unwrap();
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "system", "content": "rules"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
                ]},
                {"role": "assistant", "content": "let me look", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "1"},
                {"role": "tool", "tool_call_id": "c2", "content": "2"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c3", "type": "function", "function": {"name": "h", "arguments": "{}"}},
                ]},
            ])
        );
        assert_eq!(
            chat["tools"],
            json!([{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}}])
        );
        assert_eq!(chat["tool_choice"], json!({"type": "function", "function": {"name": "f"}}));
        assert_eq!(chat["parallel_tool_calls"], json!(false));
        assert_eq!(chat["stream"], json!(false));
    }

    #[test]
    fn text_formats() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let chat = responses_to_chat(&json!({
            "model": "m", "input": "x",
            "text": {"format": {"type": "json_schema", "name": "s", "schema": schema, "strict": true}},
        }))
        .unwrap();
        assert_eq!(
            chat["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": true}})
        );
        let object = json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}});
        assert_eq!(responses_to_chat(&object).unwrap()["response_format"], json!({"type": "json_object"}));
        let text = json!({"model": "m", "input": "x", "text": {"format": {"type": "text"}, "verbosity": "low"}});
        assert!(responses_to_chat(&text).unwrap().get("response_format").is_none());
        assert!(err(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}})).contains("name"));
    }

    #[test]
    fn refusals() {
        assert!(err(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"})).contains("statelessly"));
        assert!(err(json!({"model": "m", "input": "x", "conversation": "conv_1"})).contains("X-Keel-Session"));
        assert!(err(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})).contains("\"web_search\""));
        assert!(
            err(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]})).contains("item_reference")
        );
        assert!(err(json!({"model": "m", "input": [{"type": "file_search_call"}]})).contains("file_search_call"));
        assert!(err(json!({"input": "x"})).contains("model is required"));
        assert!(err(json!({"model": "m"})).contains("\"input\" is required"));
        assert!(err(json!({"model": "m", "input": 3})).contains("\"input\""));
        assert!(err(json!({"model": "m", "input": [3]})).contains("item 0"));
        assert!(err(json!({"model": "m", "input": [{"role": "tool", "content": "x"}]})).contains("role"));
        assert!(err(json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]})).contains("call_id"));
        assert!(
            err(json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]}))
                .contains("input_file")
        );
        assert!(
            err(json!({"model": "m", "input": "x", "tool_choice": {"type": "allowed_tools"}})).contains("tool_choice")
        );
        assert!(err(json!({"model": "m", "input": "x", "max_output_tokens": -1})).contains("max_output_tokens"));
        assert!(err(json!({"model": "m", "input": "x", "stream": "yes"})).contains("stream"));
        assert!(err(json!([])).contains("JSON object"));
    }
}
