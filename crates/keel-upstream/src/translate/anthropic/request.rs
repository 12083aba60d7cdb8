//! Request bodies: Anthropic `/v1/messages` ⇄ OpenAI `/v1/chat/completions`.

use serde_json::{Map, Value, json};

use super::super::TranslateError;

/// The `max_tokens` sent to an Anthropic upstream when the chat request sets none (Anthropic
/// requires it; chat completions default to "until the model stops").
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

type Object = Map<String, Value>;

/// Translates an Anthropic `/v1/messages` request into a `/v1/chat/completions` request.
///
/// Kept: `model`; `system` (a string or text blocks) as the first system message; `messages`
/// with string or block content — `text`, `image` (a base64 source as a data-URL `image_url`, a
/// `url` source as is), assistant `tool_use` as `tool_calls` (arguments as JSON text), user
/// `tool_result` as `role: "tool"` messages in their place (text joined; `is_error` noted as an
/// `Error: ` prefix; images in a result replaced by a note); `tools` as function tools
/// (`input_schema` as `parameters`); `tool_choice` (`auto`/`any`/`tool`/`none` as
/// `auto`/`required`/the function/`none`, `disable_parallel_tool_use` as
/// `parallel_tool_calls: false`); `max_tokens`; `stop_sequences` as `stop`; `temperature`,
/// `top_p`, `top_k` (read by `llama-server` and vLLM); `thinking` as
/// `chat_template_kwargs.enable_thinking` (as the Ollama translation sends `think`); `stream`
/// (with `stream_options.include_usage`, for the usage Anthropic reports); structured outputs
/// (`output_format`, or `output_config.format`, of type `json_schema`) as a `json_schema`
/// `response_format`.
///
/// Dropped: `metadata`, `service_tier`, `container`, `mcp_servers`, `cache_control` on blocks,
/// the `thinking` budget, and assistant `thinking`/`redacted_thinking` blocks (an
/// OpenAI-compatible upstream cannot check their signatures).
///
/// Errors ([`TranslateError::InvalidRequest`], saying what is wrong): not an object, no `model`,
/// no `max_tokens` (required, as Anthropic requires it), `messages` not an array, a role other than `user`/`assistant`, a block without `type` or of a
/// type chat completions cannot carry (`document`, server tools, …), wrongly typed fields.
pub fn messages_to_chat(request: &Value) -> Result<Value, TranslateError> {
    let req = object(request, "request body")?;
    let mut out = Object::new();
    out.insert("model".into(), Value::String(model_of(req)?.to_owned()));
    let mut messages = Vec::new();
    if let Some(system) = system_text(req.get("system"))? {
        messages.push(json!({"role": "system", "content": system}));
    }
    let Some(Value::Array(items)) = req.get("messages") else {
        return Err(invalid("messages: field required and must be an array"));
    };
    for (i, item) in items.iter().enumerate() {
        convert_anthropic_message(item, &mut messages).map_err(|e| prefix(&format!("messages.{i}"), e))?;
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = req.get("tools").filter(|t| !t.is_null()) {
        out.insert("tools".into(), Value::Array(anthropic_tools(tools)?));
    }
    if let Some(choice) = req.get("tool_choice").filter(|t| !t.is_null()) {
        apply_anthropic_tool_choice(&mut out, choice)?;
    }
    let max_tokens = opt_positive_int(req, "max_tokens")?.ok_or_else(|| invalid("max_tokens: Field required"))?;
    out.insert("max_tokens".into(), Value::from(max_tokens));
    if let Some(schema) = output_schema(req) {
        let format =
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}});
        out.insert("response_format".into(), format);
    }
    match req.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            if !stops.is_empty() {
                out.insert("stop".into(), Value::Array(stops.clone()));
            }
        }
        Some(_) => return Err(invalid("stop_sequences: must be an array of strings")),
    }
    copy_numbers(req, &mut out, &["temperature", "top_p", "top_k"])?;
    apply_thinking(&mut out, req.get("thinking"));
    let stream = opt_bool(req, "stream")?.unwrap_or(false);
    out.insert("stream".into(), Value::Bool(stream));
    if stream {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// The JSON Schema of Anthropic's structured outputs (`output_format`, or `output_config.format`,
/// with `type: "json_schema"`), if the request asks for one.
fn output_schema(req: &Object) -> Option<&Value> {
    let format = req.get("output_format").or_else(|| req.get("output_config")?.get("format"))?;
    (format.get("type")?.as_str()? == "json_schema").then(|| format.get("schema")).flatten()
}

/// Translates a `/v1/chat/completions` request into an Anthropic `/v1/messages` request, for an
/// upstream that speaks Anthropic's API.
///
/// Kept: `model`; `system`/`developer` messages (wherever they are) joined into `system`; user
/// and assistant text; image parts (data URLs as base64 image blocks, other URLs as `url`
/// sources); assistant `tool_calls` as `tool_use` blocks (arguments parsed, must be a JSON
/// object); `role: "tool"` messages as `tool_result` blocks in a user message (consecutive
/// messages of one role are merged, as Anthropic wants them alternating); `tools` (function
/// tools, `parameters` as `input_schema`); `tool_choice` and `parallel_tool_calls: false`;
/// `max_tokens`, else `max_completion_tokens`, else [`DEFAULT_MAX_TOKENS`] (Anthropic requires
/// one); `stop` as `stop_sequences`; `temperature` (clamped to Anthropic's 0..=1), `top_p`,
/// `top_k`; `stream`.
///
/// Dropped: `response_format` (the plain Messages API has no equivalent; keel's structured-output
/// guard validates the answer anyway), `stream_options`, `n`, `seed`, `logprobs`,
/// `frequency_penalty`, `presence_penalty`, `user`, `reasoning_effort` and any other field.
///
/// Errors ([`TranslateError::InvalidRequest`]): not an object, no `model`, `messages` not an
/// array, an unknown role, content parts other than text and images, tool-call arguments that are
/// not a JSON object, non-function tools.
pub fn chat_to_messages_request(request: &Value) -> Result<Value, TranslateError> {
    let req = object(request, "request body")?;
    let Some(Value::Array(items)) = req.get("messages") else {
        return Err(invalid("messages: field required and must be an array"));
    };
    let mut system = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        convert_chat_message(item, &mut system, &mut messages).map_err(|e| prefix(&format!("messages.{i}"), e))?;
    }
    let mut out = Object::new();
    out.insert("model".into(), Value::String(model_of(req)?.to_owned()));
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    let messages = messages.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = match opt_positive_int(req, "max_tokens")? {
        Some(n) => n,
        None => opt_positive_int(req, "max_completion_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS),
    };
    out.insert("max_tokens".into(), Value::from(max_tokens));
    if let Some(stops) = chat_stops(req.get("stop"))? {
        out.insert("stop_sequences".into(), stops);
    }
    copy_numbers(req, &mut out, &["temperature", "top_p", "top_k"])?;
    if out.get("temperature").and_then(Value::as_f64).is_some_and(|t| t > 1.0) {
        out.insert("temperature".into(), Value::from(1.0));
    }
    if let Some(tools) = req.get("tools").filter(|t| !t.is_null()) {
        let tools = chat_tools(tools)?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    apply_chat_tool_choice(&mut out, req)?;
    if let Some(stream) = opt_bool(req, "stream")? {
        out.insert("stream".into(), Value::Bool(stream));
    }
    Ok(Value::Object(out))
}

fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(message.into())
}

/// Puts `where_` in front of an invalid-request message.
fn prefix(where_: &str, err: TranslateError) -> TranslateError {
    match err {
        TranslateError::InvalidRequest(m) => invalid(format!("{where_}.{m}")),
        other => other,
    }
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Object, TranslateError> {
    value.as_object().ok_or_else(|| invalid(format!("{what}: expected a JSON object")))
}

fn model_of(req: &Object) -> Result<&str, TranslateError> {
    match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m),
        _ => Err(invalid("model: field required and must be a non-empty string")),
    }
}

fn opt_bool(req: &Object, field: &str) -> Result<Option<bool>, TranslateError> {
    match req.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(format!("{field}: must be a boolean"))),
    }
}

fn opt_positive_int(req: &Object, field: &str) -> Result<Option<u64>, TranslateError> {
    match req.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(invalid(format!("{field}: must be a positive integer"))),
        },
    }
}

/// Copies numeric sampling fields that are set.
fn copy_numbers(req: &Object, out: &mut Object, fields: &[&str]) -> Result<(), TranslateError> {
    for field in fields {
        match req.get(*field) {
            None | Some(Value::Null) => {}
            Some(n @ Value::Number(_)) => {
                out.insert((*field).to_owned(), n.clone());
            }
            Some(_) => return Err(invalid(format!("{field}: must be a number"))),
        }
    }
    Ok(())
}

fn str_field<'a>(obj: &'a Object, field: &str) -> Result<&'a str, TranslateError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(invalid(format!("{field}: field required and must be a string"))),
    }
}

/// Anthropic's `system`: a string or an array of text blocks, joined with blank lines.
fn system_text(system: Option<&Value>) -> Result<Option<String>, TranslateError> {
    match system {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let block = object(block, &format!("system.{i}"))?;
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        texts.push(str_field(block, "text").map_err(|e| prefix(&format!("system.{i}"), e))?)
                    }
                    _ => return Err(invalid(format!("system.{i}: only text blocks are allowed in system"))),
                }
            }
            Ok((!texts.is_empty()).then(|| texts.join("\n\n")))
        }
        Some(_) => Err(invalid("system: must be a string or an array of text blocks")),
    }
}

/// The blocks of an Anthropic message's content (a string is one text block).
fn blocks_of(content: Option<&Value>) -> Result<Vec<&Object>, TranslateError> {
    match content {
        Some(Value::String(_)) => Ok(Vec::new()),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let block = object(b, &format!("content.{i}"))?;
                match block.get("type") {
                    Some(Value::String(_)) => Ok(block),
                    _ => Err(invalid(format!("content.{i}.type: field required"))),
                }
            })
            .collect(),
        _ => Err(invalid("content: field required and must be a string or an array of blocks")),
    }
}

fn block_type(block: &Object) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// One Anthropic message as one or more chat messages.
fn convert_anthropic_message(item: &Value, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let msg = object(item, "message")?;
    let role = str_field(msg, "role")?;
    let content = msg.get("content");
    let text = content.and_then(Value::as_str);
    let blocks = blocks_of(content)?;
    match role {
        "user" => {
            if let Some(text) = text {
                out.push(json!({"role": "user", "content": text}));
                return Ok(());
            }
            convert_user_blocks(&blocks, out)
        }
        "assistant" => {
            if let Some(text) = text {
                out.push(json!({"role": "assistant", "content": text}));
                return Ok(());
            }
            out.push(convert_assistant_blocks(&blocks)?);
            Ok(())
        }
        other => Err(invalid(format!("role: unexpected role \"{other}\"; expected \"user\" or \"assistant\""))),
    }
}

/// A user message's blocks: text and images as user messages, tool results as `tool` messages,
/// in their order.
fn convert_user_blocks(blocks: &[&Object], out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let at = |e| prefix(&format!("content.{i}"), e);
        match block_type(block) {
            "text" => parts.push(json!({"type": "text", "text": str_field(block, "text").map_err(at)?})),
            "image" => parts.push(image_part(block).map_err(at)?),
            "tool_result" => {
                flush_user(&mut parts, out);
                out.push(tool_message(block).map_err(at)?);
            }
            other => return Err(at(unsupported_block(other, "user"))),
        }
    }
    flush_user(&mut parts, out);
    Ok(())
}

fn unsupported_block(kind: &str, role: &str) -> TranslateError {
    invalid(format!(
        "type: \"{kind}\" blocks are not supported in {role} messages by this model's OpenAI-compatible server"
    ))
}

/// The accumulated user parts as one user message (a single text part as plain content).
fn flush_user(parts: &mut Vec<Value>, out: &mut Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    let content = match parts.as_slice() {
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => only["text"].clone(),
        _ => Value::Array(std::mem::take(parts)),
    };
    parts.clear();
    out.push(json!({"role": "user", "content": content}));
}

/// An Anthropic image block as a chat `image_url` part.
fn image_part(block: &Object) -> Result<Value, TranslateError> {
    let source = block.get("source").and_then(Value::as_object).ok_or_else(|| invalid("source: field required"))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = str_field(source, "media_type").map_err(|e| prefix("source", e))?;
            let data = str_field(source, "data").map_err(|e| prefix("source", e))?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => str_field(source, "url").map_err(|e| prefix("source", e))?.to_owned(),
        _ => return Err(invalid("source.type: expected \"base64\" or \"url\"")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A `tool_result` block as a chat `tool` message.
fn tool_message(block: &Object) -> Result<Value, TranslateError> {
    let id = str_field(block, "tool_use_id")?;
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                let part = object(part, &format!("content.{i}"))?;
                match block_type(part) {
                    "text" => texts.push(str_field(part, "text").map_err(|e| prefix(&format!("content.{i}"), e))?),
                    "image" => texts.push("[image omitted: tool results carry only text here]"),
                    other => return Err(prefix(&format!("content.{i}"), unsupported_block(other, "tool_result"))),
                }
            }
            texts.join("\n")
        }
        Some(_) => return Err(invalid("content: must be a string or an array of blocks")),
    };
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

/// An assistant message's blocks: text joined, `tool_use` as `tool_calls`.
fn convert_assistant_blocks(blocks: &[&Object]) -> Result<Value, TranslateError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let at = |e| prefix(&format!("content.{i}"), e);
        match block_type(block) {
            "text" => text.push_str(str_field(block, "text").map_err(at)?),
            "tool_use" => {
                let id = str_field(block, "id").map_err(at)?;
                let name = str_field(block, "name").map_err(at)?;
                let arguments = match block.get("input") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(input) => input.to_string(),
                };
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}));
            }
            "thinking" | "redacted_thinking" => {}
            other => return Err(at(unsupported_block(other, "assistant"))),
        }
    }
    let mut msg = Object::new();
    msg.insert("role".into(), Value::String("assistant".into()));
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) };
    msg.insert("content".into(), content);
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(Value::Object(msg))
}

/// Anthropic tools as chat function tools.
fn anthropic_tools(tools: &Value) -> Result<Vec<Value>, TranslateError> {
    let tools = tools.as_array().ok_or_else(|| invalid("tools: must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = |e| prefix(&format!("tools.{i}"), e);
        let tool = object(tool, &format!("tools.{i}"))?;
        match tool.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            Some(other) => {
                return Err(at(invalid(format!(
                    "type: \"{other}\" tools run on Anthropic's servers and cannot be offered to this model"
                ))));
            }
        }
        let mut function = Object::new();
        function.insert("name".into(), Value::String(str_field(tool, "name").map_err(at)?.to_owned()));
        if let Some(Value::String(d)) = tool.get("description") {
            function.insert("description".into(), Value::String(d.clone()));
        }
        let schema = match tool.get("input_schema") {
            Some(schema @ Value::Object(_)) => schema.clone(),
            _ => return Err(at(invalid("input_schema: field required and must be an object"))),
        };
        function.insert("parameters".into(), schema);
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// Anthropic's `tool_choice` as chat's (and `parallel_tool_calls`).
fn apply_anthropic_tool_choice(out: &mut Object, choice: &Value) -> Result<(), TranslateError> {
    let choice = object(choice, "tool_choice")?;
    let value = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = str_field(choice, "name").map_err(|e| prefix("tool_choice", e))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(invalid("tool_choice.type: expected \"auto\", \"any\", \"tool\" or \"none\"")),
    };
    out.insert("tool_choice".into(), value);
    if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(())
}

/// Anthropic's `thinking` as the chat-template switch `llama-server` and vLLM read.
fn apply_thinking(out: &mut Object, thinking: Option<&Value>) {
    let enabled = match thinking.and_then(|t| t.get("type")).and_then(Value::as_str) {
        Some("enabled" | "adaptive") => true,
        Some("disabled") => false,
        _ => return,
    };
    out.insert("chat_template_kwargs".into(), json!({"enable_thinking": enabled}));
}

/// The text of chat content: a string, or the text of its text parts.
fn chat_text(content: Option<&Value>) -> Result<String, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(
                        part.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("content.{i}.text: field required")))?,
                    ),
                    _ => return Err(invalid(format!("content.{i}: only text parts are allowed here"))),
                }
            }
            Ok(texts.concat())
        }
        Some(_) => Err(invalid("content: must be a string or an array of parts")),
    }
}

/// User content as Anthropic blocks: text and images.
fn chat_user_blocks(content: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        other => {
            let text = chat_text(other)?;
            return Ok(if text.is_empty() { Vec::new() } else { vec![json!({"type": "text", "text": text})] });
        }
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let at = |e| prefix(&format!("content.{i}"), e);
        let part = object(part, &format!("content.{i}"))?;
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = str_field(part, "text").map_err(at)?;
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
            }
            Some("image_url") => blocks.push(image_block(part).map_err(at)?),
            Some(other) => return Err(at(invalid(format!("type: \"{other}\" parts are not supported by Anthropic")))),
            None => return Err(at(invalid("type: field required"))),
        }
    }
    Ok(blocks)
}

/// A chat `image_url` part as an Anthropic image block.
fn image_block(part: &Object) -> Result<Value, TranslateError> {
    let url = match part.get("image_url") {
        Some(Value::String(url)) => url.as_str(),
        Some(Value::Object(obj)) => str_field(obj, "url").map_err(|e| prefix("image_url", e))?,
        _ => return Err(invalid("image_url: field required")),
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or_else(|| invalid("image_url.url: malformed data URL"))?;
        let media = meta.strip_suffix(";base64").ok_or_else(|| invalid("image_url.url: data URL is not base64"))?;
        return Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}));
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

/// One chat message into `system` or the Anthropic messages (merging a role's consecutive ones).
fn convert_chat_message(
    item: &Value,
    system: &mut Vec<String>,
    messages: &mut Vec<(&'static str, Vec<Value>)>,
) -> Result<(), TranslateError> {
    let msg = object(item, "message")?;
    let (role, blocks) = match str_field(msg, "role")? {
        "system" | "developer" => {
            let text = chat_text(msg.get("content"))?;
            if !text.is_empty() {
                system.push(text);
            }
            return Ok(());
        }
        "user" => ("user", chat_user_blocks(msg.get("content"))?),
        "assistant" => ("assistant", chat_assistant_blocks(msg)?),
        "tool" => {
            let id = str_field(msg, "tool_call_id")?;
            let text = chat_text(msg.get("content"))?;
            ("user", vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})])
        }
        other => return Err(invalid(format!("role: unexpected role \"{other}\""))),
    };
    if blocks.is_empty() {
        return Ok(());
    }
    match messages.last_mut() {
        Some((last, content)) if *last == role => content.extend(blocks),
        _ => messages.push((role, blocks)),
    }
    Ok(())
}

/// An assistant message's text and tool calls as Anthropic blocks.
fn chat_assistant_blocks(msg: &Object) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::new();
    let text = chat_text(msg.get("content"))?;
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    let calls = match msg.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid("tool_calls: must be an array")),
    };
    for (i, call) in calls.iter().enumerate() {
        let at = |e| prefix(&format!("tool_calls.{i}"), e);
        let call = object(call, &format!("tool_calls.{i}"))?;
        let id = str_field(call, "id").map_err(at)?;
        let function =
            call.get("function").and_then(Value::as_object).ok_or_else(|| at(invalid("function: field required")))?;
        let name = str_field(function, "name").map_err(|e| at(prefix("function", e)))?;
        let input = match function.get("arguments") {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err(at(invalid("function.arguments: must be a JSON object"))),
            },
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return Err(at(invalid("function.arguments: must be a JSON object"))),
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

/// Chat's `stop` (a string or an array) as `stop_sequences`.
fn chat_stops(stop: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    match stop {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok((!items.is_empty()).then(|| Value::Array(items.clone())))
        }
        Some(_) => Err(invalid("stop: must be a string or an array of strings")),
    }
}

/// Chat function tools as Anthropic tools.
fn chat_tools(tools: &Value) -> Result<Vec<Value>, TranslateError> {
    let tools = tools.as_array().ok_or_else(|| invalid("tools: must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = |e| prefix(&format!("tools.{i}"), e);
        let tool = object(tool, &format!("tools.{i}"))?;
        if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
            return Err(at(invalid("type: only function tools are supported")));
        }
        let function =
            tool.get("function").and_then(Value::as_object).ok_or_else(|| at(invalid("function: field required")))?;
        let mut converted = Object::new();
        converted.insert("name".into(), Value::String(str_field(function, "name").map_err(at)?.to_owned()));
        if let Some(Value::String(d)) = function.get("description") {
            converted.insert("description".into(), Value::String(d.clone()));
        }
        let schema = match function.get("parameters") {
            Some(schema @ Value::Object(_)) => schema.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        converted.insert("input_schema".into(), schema);
        out.push(Value::Object(converted));
    }
    Ok(out)
}

/// Chat's `tool_choice` and `parallel_tool_calls` as Anthropic's `tool_choice`.
fn apply_chat_tool_choice(out: &mut Object, req: &Object) -> Result<(), TranslateError> {
    let mut choice = match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            other => return Err(invalid(format!("tool_choice: unknown value \"{other}\""))),
        },
        Some(Value::Object(obj)) => {
            let name = obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.function.name: field required"))?;
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => return Err(invalid("tool_choice: must be a string or an object")),
    };
    if req.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) && out.contains_key("tools") {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(obj) = choice.as_object_mut().filter(|o| o.get("type").and_then(Value::as_str) != Some("none")) {
            obj.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    Ok(())
}
