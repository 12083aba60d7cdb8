//! Ollama requests (`/api/chat`, `/api/generate`) to OpenAI requests (`/v1/chat/completions`,
//! `/v1/completions`).

use serde_json::{Map, Value, json};

use super::time::now_rfc3339;
use super::{OllamaEndpoint, TranslateError};

/// The OpenAI chat-completions path; every translated request goes here except raw generate.
pub const CHAT_COMPLETIONS_PATH: &str = "/v1/chat/completions";
/// The legacy OpenAI completions path, used for `/api/generate` with `"raw": true` (the prompt is
/// sent as is, no chat template applied).
pub const COMPLETIONS_PATH: &str = "/v1/completions";

/// A translated request: where to send it on the upstream and what to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The upstream path: [`CHAT_COMPLETIONS_PATH`] or [`COMPLETIONS_PATH`].
    pub path: &'static str,
    /// The OpenAI request body.
    pub body: Value,
    /// Whether the client asked for a stream (Ollama's default is `true`); the body's `stream`
    /// field says the same thing to the upstream.
    pub stream: bool,
}

/// Translates an Ollama `/api/chat` request into an OpenAI `/v1/chat/completions` request.
///
/// Kept: `model`; `messages` (role, content, `images` as `image_url` data-URL parts, `tool_calls`
/// with arguments serialized to a JSON string and ids `call_N` where missing, tool results with
/// `tool_name` as `name` and `tool_call_id`, inferred from the preceding tool calls when the client
/// left it out); `tools`; `stream` (absent means `true`, as in Ollama) with
/// `stream_options.include_usage`; `format` as `response_format`; `options` as sampling
/// parameters; `think` as `chat_template_kwargs.enable_thinking` (what Ollama itself sends to
/// `llama-server`); `logprobs`/`top_logprobs`. Dropped: `keep_alive`, `truncate`, `shift`, load-time
/// options (`num_ctx`, `num_gpu`, ...) and any field OpenAI has no place for.
pub fn ollama_chat_to_openai(body: &Value) -> Result<Translated, TranslateError> {
    let req = as_object(body)?;
    let model = model_of(req)?;
    let stream = stream_of(req)?;

    let messages = match req.get("messages") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => convert_messages(items)?,
        Some(_) => return Err(invalid("invalid request body: field \"messages\" must be an array")),
    };

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("messages".into(), Value::Array(messages));
    match req.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) if tools.is_empty() => {}
        Some(tools @ Value::Array(_)) => {
            out.insert("tools".into(), tools.clone());
        }
        Some(_) => return Err(invalid("invalid request body: field \"tools\" must be an array")),
    }
    insert_stream(&mut out, stream);
    if let Some(format) = response_format(req.get("format"))? {
        out.insert("response_format".into(), format);
    }
    apply_options(&mut out, req.get("options"))?;
    apply_think(&mut out, req.get("think"));
    apply_logprobs(&mut out, req);
    Ok(Translated { path: CHAT_COMPLETIONS_PATH, body: Value::Object(out), stream })
}

/// Translates an Ollama `/api/generate` request.
///
/// Normally into a `/v1/chat/completions` request whose messages are `system` (when set) and a
/// user message holding `prompt` and `images`, so that the upstream applies the model's chat
/// template as Ollama would. With `"raw": true` into a `/v1/completions` request whose `prompt`
/// is sent untouched (Ollama's raw mode), together with `suffix`. `format`, `options` and `stream`
/// are handled as in [`ollama_chat_to_openai`]. `context` (token ids of an earlier answer) and
/// `template` cannot be honored by an OpenAI upstream and are dropped.
pub fn ollama_generate_to_openai(body: &Value) -> Result<Translated, TranslateError> {
    let req = as_object(body)?;
    let model = model_of(req)?;
    let stream = stream_of(req)?;
    let prompt = opt_str(req, "prompt")?;
    let system = opt_str(req, "system")?;
    let images = images_of(req.get("images"))?;
    let raw = match req.get("raw") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("invalid request body: field \"raw\" must be a boolean")),
    };

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    let path = if raw {
        let has_context = matches!(req.get("context"), Some(Value::Array(c)) if !c.is_empty());
        if !system.is_empty() || !opt_str(req, "template")?.is_empty() || has_context {
            return Err(invalid("raw mode does not support template, system, or context"));
        }
        if !images.is_empty() {
            return Err(invalid(
                "raw mode with images is not supported by this model's OpenAI-compatible server; \
                 send the request without \"raw\"",
            ));
        }
        out.insert("prompt".into(), Value::String(prompt.to_owned()));
        let suffix = opt_str(req, "suffix")?;
        if !suffix.is_empty() {
            out.insert("suffix".into(), Value::String(suffix.to_owned()));
        }
        COMPLETIONS_PATH
    } else {
        let mut messages = Vec::with_capacity(2);
        if !system.is_empty() {
            messages.push(json!({"role": "system", "content": system}));
        }
        let mut user = Map::new();
        user.insert("role".into(), Value::String("user".into()));
        user.insert("content".into(), content_value(prompt, &images));
        messages.push(Value::Object(user));
        out.insert("messages".into(), Value::Array(messages));
        CHAT_COMPLETIONS_PATH
    };
    insert_stream(&mut out, stream);
    if let Some(format) = response_format(req.get("format"))? {
        out.insert("response_format".into(), format);
    }
    apply_options(&mut out, req.get("options"))?;
    if !raw {
        apply_think(&mut out, req.get("think"));
        apply_logprobs(&mut out, req);
    }
    Ok(Translated { path, body: Value::Object(out), stream })
}

/// Ollama answers some requests without running the model: `/api/chat` without messages and
/// `/api/generate` with an empty prompt load the model (`"done_reason": "load"`), or unload it when
/// `keep_alive` is zero (`"unload"`). Clients use them to preload a model. An OpenAI-compatible
/// upstream has no such request (it would generate an answer to an empty prompt), so keel answers
/// them itself: this returns that answer (always a single JSON object, even when the client asked
/// for a stream, exactly like Ollama), or `None` when the request needs the model.
pub fn ollama_preload_response(endpoint: OllamaEndpoint, body: &Value) -> Option<Value> {
    let req = body.as_object()?;
    let empty = match endpoint {
        OllamaEndpoint::Chat => match req.get("messages") {
            None | Some(Value::Null) => true,
            Some(Value::Array(m)) => m.is_empty(),
            Some(_) => false,
        },
        OllamaEndpoint::Generate => match req.get("prompt") {
            None | Some(Value::Null) => true,
            Some(Value::String(p)) => p.is_empty(),
            Some(_) => false,
        },
    };
    if !empty {
        return None;
    }
    let reason = if req.get("keep_alive").is_some_and(is_zero_duration) { "unload" } else { "load" };
    let model = req.get("model").and_then(Value::as_str).unwrap_or_default();
    Some(match endpoint {
        OllamaEndpoint::Chat => json!({
            "model": model,
            "created_at": now_rfc3339(),
            "message": {"role": "assistant", "content": ""},
            "done": true,
            "done_reason": reason,
        }),
        OllamaEndpoint::Generate => json!({
            "model": model,
            "created_at": now_rfc3339(),
            "response": "",
            "done": true,
            "done_reason": reason,
        }),
    })
}

fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(message.into())
}

fn as_object(body: &Value) -> Result<&Map<String, Value>, TranslateError> {
    body.as_object().ok_or_else(|| invalid("invalid request body: expected a JSON object"))
}

fn model_of(req: &Map<String, Value>) -> Result<&str, TranslateError> {
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Some(m.as_str()),
        None | Some(Value::Null | Value::String(_)) => None,
        Some(_) => return Err(invalid("invalid request body: field \"model\" must be a string")),
    };
    // Ollama's older clients send `name`.
    model
        .or_else(|| req.get("name").and_then(Value::as_str).filter(|m| !m.is_empty()))
        .ok_or_else(|| invalid("model is required"))
}

fn stream_of(req: &Map<String, Value>) -> Result<bool, TranslateError> {
    match req.get("stream") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid("invalid request body: field \"stream\" must be a boolean")),
    }
}

fn opt_str<'a>(req: &'a Map<String, Value>, field: &str) -> Result<&'a str, TranslateError> {
    match req.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(format!("invalid request body: field \"{field}\" must be a string"))),
    }
}

fn insert_stream(out: &mut Map<String, Value>, stream: bool) {
    out.insert("stream".into(), Value::Bool(stream));
    if stream {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
}

fn images_of(images: Option<&Value>) -> Result<Vec<&str>, TranslateError> {
    match images {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().ok_or_else(|| invalid("invalid image input: images must be base64 strings")))
            .collect(),
        Some(_) => Err(invalid("invalid request body: field \"images\" must be an array")),
    }
}

/// The OpenAI `content` of a message: the text alone, or text and image parts.
fn content_value(text: &str, images: &[&str]) -> Value {
    if images.is_empty() {
        return Value::String(text.to_owned());
    }
    let mut parts = Vec::with_capacity(images.len() + 1);
    if !text.is_empty() {
        parts.push(json!({"type": "text", "text": text}));
    }
    for image in images {
        let url = if image.starts_with("data:") {
            (*image).to_owned()
        } else {
            format!("data:{};base64,{image}", sniff_image_mime(image))
        };
        parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
    }
    Value::Array(parts)
}

/// The MIME type of a base64-encoded image, from its first bytes; JPEG when unknown (what Ollama
/// assumes when it sends images to `llama-server`).
fn sniff_image_mime(b64: &str) -> &'static str {
    let head = decode_base64_prefix(b64.as_bytes());
    let head = head.as_slice();
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if head.starts_with(b"\xff\xd8\xff") {
        "image/jpeg"
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        "image/gif"
    } else if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        "image/webp"
    } else if head.starts_with(b"BM") {
        "image/bmp"
    } else {
        "image/jpeg"
    }
}

/// Decodes up to the first 16 base64 characters (12 bytes), stopping at anything that is not
/// base64.
fn decode_base64_prefix(b64: &[u8]) -> Vec<u8> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(12);
    for quad in b64.chunks(4).take(4) {
        let Some(vals) = quad.iter().map(|&c| sextet(c)).collect::<Option<Vec<u32>>>() else {
            break;
        };
        if vals.len() < 4 {
            break;
        }
        let n = vals.iter().fold(0u32, |acc, v| (acc << 6) | v);
        out.extend_from_slice(&n.to_be_bytes()[1..]);
    }
    out
}

/// Ollama messages to OpenAI messages.
fn convert_messages(items: &[Value]) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::with_capacity(items.len());
    let mut next_id = 0usize;
    // Tool calls of the latest assistant turn not answered yet: (id, function name).
    let mut pending: Vec<(String, String)> = Vec::new();
    for item in items {
        let msg = item.as_object().ok_or_else(|| invalid("invalid message: expected a JSON object"))?;
        let role = match msg.get("role") {
            Some(Value::String(r)) => r.to_ascii_lowercase(),
            None | Some(Value::Null) => String::new(),
            Some(_) => return Err(invalid("invalid message: field \"role\" must be a string")),
        };
        let content = match msg.get("content") {
            None | Some(Value::Null) => "",
            Some(Value::String(c)) => c.as_str(),
            Some(_) => return Err(invalid("invalid message content: expected a string")),
        };
        let images = images_of(msg.get("images"))?;

        let mut conv = Map::new();
        conv.insert("role".into(), Value::String(role.clone()));
        conv.insert("content".into(), content_value(content, &images));

        match msg.get("tool_calls") {
            Some(Value::Array(calls)) if !calls.is_empty() => {
                pending.clear();
                let mut converted = Vec::with_capacity(calls.len());
                for call in calls {
                    let (tc, id, name) = convert_tool_call(call, &mut next_id)?;
                    pending.push((id, name));
                    converted.push(tc);
                }
                conv.insert("tool_calls".into(), Value::Array(converted));
            }
            None | Some(Value::Null | Value::Array(_)) => {}
            Some(_) => return Err(invalid("invalid message: field \"tool_calls\" must be an array")),
        }

        if role == "tool" {
            let mut name = msg.get("tool_name").and_then(Value::as_str).filter(|n| !n.is_empty());
            // `name` is what OpenAI-style clients put there.
            name = name.or_else(|| msg.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()));
            let given_id = msg.get("tool_call_id").and_then(Value::as_str).filter(|i| !i.is_empty());
            let answered =
                match given_id {
                    Some(id) => pending.iter().position(|(pid, _)| pid == id),
                    None => name
                        .and_then(|n| pending.iter().position(|(_, pname)| pname == n))
                        .or(if pending.is_empty() { None } else { Some(0) }),
                };
            let answered = answered.map(|i| pending.remove(i));
            let id = given_id.map(str::to_owned).or_else(|| answered.as_ref().map(|(id, _)| id.clone()));
            let name = name.map(str::to_owned).or_else(|| answered.map(|(_, n)| n));
            if let Some(id) = id {
                conv.insert("tool_call_id".into(), Value::String(id));
            }
            if let Some(name) = name {
                conv.insert("name".into(), Value::String(name));
            }
        }
        out.push(Value::Object(conv));
    }
    Ok(out)
}

/// One Ollama tool call (`{"id"?, "function": {"name", "arguments": {...}}}`) to OpenAI's shape
/// (`{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}`), with its id and
/// function name.
fn convert_tool_call(call: &Value, next_id: &mut usize) -> Result<(Value, String, String), TranslateError> {
    let function = call
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("invalid tool call: missing \"function\""))?;
    let name = function.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => "{}".to_owned(),
        // Some clients already send the OpenAI form.
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let id = match call.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => {
            let id = format!("call_{next_id}");
            *next_id += 1;
            id
        }
    };
    let tc = json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    });
    Ok((tc, id, name))
}

/// Ollama's `format` to OpenAI's `response_format`.
fn response_format(format: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(json!({"type": "json_object"}))),
        Some(schema @ Value::Object(_)) => Ok(Some(json!({
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": schema, "strict": true},
        }))),
        Some(other) => {
            Err(invalid(format!("invalid format: {other}; expected \"json\" or a valid JSON Schema object")))
        }
    }
}

/// How an Ollama option becomes an OpenAI (or `llama-server`) parameter.
#[derive(Clone, Copy)]
enum Opt {
    Float(&'static str),
    Int(&'static str),
}

/// Ollama option name → how to send it. `top_k`, `min_p`, `typical_p`, `repeat_penalty` and
/// `repeat_last_n` are not in OpenAI's API; `llama-server` (and LM Studio) read them, vLLM accepts
/// `top_k`/`min_p` and ignores the rest.
const OPTIONS: &[(&str, Opt)] = &[
    ("temperature", Opt::Float("temperature")),
    ("top_p", Opt::Float("top_p")),
    ("top_k", Opt::Int("top_k")),
    ("min_p", Opt::Float("min_p")),
    ("typical_p", Opt::Float("typical_p")),
    ("seed", Opt::Int("seed")),
    ("frequency_penalty", Opt::Float("frequency_penalty")),
    ("presence_penalty", Opt::Float("presence_penalty")),
    ("repeat_penalty", Opt::Float("repeat_penalty")),
    ("repeat_last_n", Opt::Int("repeat_last_n")),
];

/// Ollama's `options` to sampling parameters. Type errors are reported in Ollama's words; unknown
/// and load-time options are ignored, as Ollama ignores unknown ones.
fn apply_options(out: &mut Map<String, Value>, options: Option<&Value>) -> Result<(), TranslateError> {
    let options = match options {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(invalid("invalid request body: field \"options\" must be an object")),
    };
    for (key, opt) in OPTIONS {
        let Some(value) = options.get(*key).filter(|v| !v.is_null()) else { continue };
        match *opt {
            Opt::Float(name) => {
                if !value.is_number() {
                    return Err(invalid(format!("option \"{key}\" must be of type float32")));
                }
                out.insert(name.into(), value.clone());
            }
            Opt::Int(name) => {
                out.insert(name.into(), Value::from(int_option(key, value)?));
            }
        }
    }
    if let Some(value) = options.get("num_predict").filter(|v| !v.is_null()) {
        // Ollama: -1 is "until a stop condition", -2 "until the context is full"; 0 also means no
        // limit to its runner. OpenAI servers want a positive max_tokens or none at all.
        let n = int_option("num_predict", value)?;
        if n > 0 {
            out.insert("max_tokens".into(), Value::from(n));
        }
    }
    match options.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stop".into(), json!([s]));
        }
        Some(Value::Array(items)) => {
            if !items.iter().all(Value::is_string) {
                return Err(invalid("option \"stop\" must be of an array of strings"));
            }
            if !items.is_empty() {
                out.insert("stop".into(), Value::Array(items.clone()));
            }
        }
        Some(_) => return Err(invalid("option \"stop\" must be of type array")),
    }
    Ok(())
}

/// An integer option; Ollama truncates JSON numbers with a fraction.
fn int_option(key: &str, value: &Value) -> Result<i64, TranslateError> {
    if let Some(n) = value.as_i64() {
        return Ok(n);
    }
    match value.as_f64() {
        // Ollama truncates (Go's int64(float64)); `as` saturates at the ends.
        Some(f) if f.is_finite() => Ok(f.trunc() as i64),
        _ => Err(invalid(format!("option \"{key}\" must be of type integer"))),
    }
}

/// Ollama's `think` (a boolean or an effort level) becomes the chat template switch that
/// `llama-server` and vLLM read, as Ollama's own `llama-server` runner sends it.
fn apply_think(out: &mut Map<String, Value>, think: Option<&Value>) {
    let kwargs = match think {
        Some(Value::Bool(b)) => json!({"enable_thinking": b}),
        Some(Value::String(effort)) if effort == "false" => json!({"enable_thinking": false}),
        Some(Value::String(effort)) if effort.is_empty() || effort == "true" => json!({"enable_thinking": true}),
        Some(Value::String(effort)) => json!({"enable_thinking": true, "reasoning_effort": effort}),
        _ => return,
    };
    out.insert("chat_template_kwargs".into(), kwargs);
}

fn apply_logprobs(out: &mut Map<String, Value>, req: &Map<String, Value>) {
    if req.get("logprobs").and_then(Value::as_bool) == Some(true) {
        out.insert("logprobs".into(), Value::Bool(true));
        if let Some(n) = req.get("top_logprobs").and_then(Value::as_u64).filter(|n| *n > 0) {
            out.insert("top_logprobs".into(), Value::from(n.min(20)));
        }
    }
}

/// Whether an Ollama `keep_alive` is zero (unload now): `0`, `"0"`, `"0s"`, `"0m"`, ...
fn is_zero_duration(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => {
            let s = s.trim();
            let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic() || c == 'µ');
            !digits.is_empty() && digits.parse::<f64>().is_ok_and(|f| f == 0.0)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_image_types() {
        assert_eq!(sniff_image_mime("iVBORw0KGgoAAAANSUhEUgAA"), "image/png");
        assert_eq!(sniff_image_mime("/9j/4AAQSkZJRgABAQ"), "image/jpeg");
        assert_eq!(sniff_image_mime("R0lGODlhAQABAIAAAP"), "image/gif");
        assert_eq!(sniff_image_mime("UklGRiQAAABXRUJQVlA4"), "image/webp");
        assert_eq!(sniff_image_mime("Qk02AAAAAAAAADYAAAA"), "image/bmp");
        assert_eq!(sniff_image_mime(""), "image/jpeg");
        assert_eq!(sniff_image_mime("!!!not base64"), "image/jpeg");
    }

    #[test]
    fn zero_durations() {
        for zero in [json!(0), json!(0.0), json!("0"), json!("0s"), json!("0m"), json!(" 0h "), json!("0ms")] {
            assert!(is_zero_duration(&zero), "{zero}");
        }
        for other in [json!(-1), json!("5m"), json!("-1"), json!(""), json!("s"), json!(null), json!(true)] {
            assert!(!is_zero_duration(&other), "{other}");
        }
    }
}
