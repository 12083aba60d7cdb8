//! OpenAI responses (whole bodies and errors) to Ollama's answers, and the output shapes and
//! metrics shared with the stream converter.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use super::time::{now_rfc3339, rfc3339};
use super::{OllamaEndpoint, TranslateError, done_reason};

/// Translates a non-streamed OpenAI chat completion into Ollama's `/api/chat` answer:
/// `{"model", "created_at", "message": {"role": "assistant", "content", "thinking"?, "tool_calls"?},
/// "done": true, "done_reason", "total_duration", "load_duration", "prompt_eval_count",
/// "prompt_eval_duration", "eval_count", "eval_duration"}`.
///
/// `model` is `requested_model` (the name the client asked for, not the upstream's). Durations come
/// from `llama-server`'s `timings` and are 0 without them; see [`openai_response_to_ollama`] to
/// supply a measured duration instead.
pub fn openai_chat_to_ollama_chat(resp: &Value, requested_model: &str) -> Result<Value, TranslateError> {
    openai_response_to_ollama(OllamaEndpoint::Chat, resp, requested_model, None)
}

/// Translates a non-streamed OpenAI chat completion (or legacy completion, for raw generate) into
/// Ollama's `/api/generate` answer: like [`openai_chat_to_ollama_chat`] with `"response"` (and
/// `"thinking"`) at the top level instead of `"message"`. `context` is omitted: there are no
/// Ollama token ids to give back.
pub fn openai_chat_to_ollama_generate(resp: &Value, requested_model: &str) -> Result<Value, TranslateError> {
    openai_response_to_ollama(OllamaEndpoint::Generate, resp, requested_model, None)
}

/// Translates a non-streamed OpenAI response for `endpoint`.
///
/// `elapsed` is the wall-clock time of the upstream call; when the upstream sends no `timings`
/// (vLLM, LM Studio) it becomes `total_duration` and `eval_duration`, so that clients computing
/// tokens per second get a finite number. Token counts come from `usage`, else from `timings`.
///
/// Errors: a body that is not a completion ([`TranslateError::InvalidResponse`]), an `error`
/// inside a success body ([`TranslateError::Upstream`]), tool-call arguments that are not a JSON
/// object (Ollama's `arguments` must be one).
pub fn openai_response_to_ollama(
    endpoint: OllamaEndpoint,
    resp: &Value,
    requested_model: &str,
    elapsed: Option<Duration>,
) -> Result<Value, TranslateError> {
    let choice = first_choice(resp, bad_response)?;
    let obj = resp.as_object().ok_or_else(|| bad_response("expected a JSON object"))?;

    let message = choice.get("message");
    let field = |name: &str| message.and_then(|m| m.get(name));
    let content = match field("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<String>()
        }
        _ => choice.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
    };
    let thinking = [field("reasoning_content"), field("reasoning")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|t| !t.is_empty())
        .unwrap_or_default();

    let mut tool_calls = Vec::new();
    if let Some(Value::Array(calls)) = field("tool_calls") {
        for (index, call) in calls.iter().enumerate() {
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
            let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
            let arguments = match function.and_then(|f| f.get("arguments")) {
                Some(Value::String(text)) => parse_arguments(name, text)?,
                Some(obj @ Value::Object(_)) => obj.clone(),
                None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
                Some(_) => return Err(invalid_arguments(name, "not a JSON object")),
            };
            tool_calls.push(ToolCallOut {
                id: id.to_owned(),
                function: FunctionOut { index, name: name.to_owned(), arguments },
            });
        }
    }

    let created_at = match obj.get("created").and_then(Value::as_i64) {
        Some(secs) => rfc3339(secs, 0),
        None => now_rfc3339(),
    };
    let usage = obj.get("usage").map(Usage::from_value).unwrap_or_default();
    let timings = obj.get("timings").map(Timings::from_value);
    let measured = Measured { total: elapsed, prompt: None, eval: elapsed };
    let metrics = metrics(usage, timings, measured, 0);
    let logprobs = choice.get("logprobs").and_then(|l| l.get("content")).filter(|c| c.is_array());
    let finish = choice.get("finish_reason").and_then(Value::as_str);

    let answer = Answer {
        model: requested_model,
        created_at: &created_at,
        content: &content,
        thinking,
        tool_calls: &tool_calls,
        done: true,
        done_reason: Some(done_reason(finish)),
        metrics: Some(metrics),
        logprobs,
    };
    answer.to_value(endpoint)
}

/// The human-readable message of an OpenAI-style error body, for any status: `error.message`
/// (OpenAI, `llama-server`, vLLM), a string `error`, a top-level `message` (older vLLM), FastAPI's
/// `detail`; else the body's text (cut at 1000 bytes); else the status line.
pub fn openai_error_message(status: u16, body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body)
        && let Some(message) = message_of(&value)
    {
        return message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() {
        return truncate(text, 1000).to_owned();
    }
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("error");
    format!("upstream answered {status} {reason}")
}

/// Translates an OpenAI-style error body into Ollama's `{"error": "<message>"}` (answer it with the
/// upstream's status). See [`openai_error_message`] for where the message comes from.
pub fn openai_error_to_ollama(status: u16, body: &[u8]) -> Bytes {
    Bytes::from(json!({ "error": openai_error_message(status, body) }).to_string())
}

/// An Ollama error as one NDJSON line (`{"error":"<message>"}\n`): how Ollama reports a failure
/// after a stream has started (status 200 already sent).
pub fn ollama_error_line(message: &str) -> Bytes {
    let mut line = json!({ "error": message }).to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

/// The choice a translation reads from a chat completion (index 0, else the first), or the error
/// the body carries instead (an `error`, or an `object: "error"` body: [`TranslateError::Upstream`]).
/// `not_completion` words the error for a body that is no completion at all.
pub(crate) fn first_choice(resp: &Value, not_completion: fn(&str) -> TranslateError) -> Result<&Value, TranslateError> {
    let obj = resp.as_object().ok_or_else(|| not_completion("expected a JSON object"))?;
    if let Some(err) = obj.get("error").filter(|e| !e.is_null()) {
        return Err(TranslateError::Upstream(message_of(err).unwrap_or_else(|| err.to_string())));
    }
    if obj.get("object").and_then(Value::as_str) == Some("error") {
        return Err(TranslateError::Upstream(message_of(resp).unwrap_or_else(|| "upstream error".to_owned())));
    }
    let choices = obj.get("choices").and_then(Value::as_array).ok_or_else(|| not_completion("no \"choices\""))?;
    choices
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        .or_else(|| choices.first())
        .ok_or_else(|| not_completion("\"choices\" is empty"))
}

fn bad_response(what: &str) -> TranslateError {
    TranslateError::InvalidResponse(format!("not an OpenAI completion: {what}"))
}

pub(super) fn invalid_arguments(name: &str, why: &str) -> TranslateError {
    TranslateError::InvalidResponse(format!("invalid tool call arguments for \"{name}\": {why}"))
}

/// Tool-call arguments (JSON text) as the JSON object Ollama expects; empty text is `{}`.
pub(super) fn parse_arguments(name: &str, text: &str) -> Result<Value, TranslateError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(invalid_arguments(name, "not a JSON object")),
        Err(e) => Err(invalid_arguments(name, &e.to_string())),
    }
}

/// The message of an error value: a string, or an object's `error`/`message`/`detail`.
pub(super) fn message_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Object(obj) => {
            if let Some(err) = obj.get("error").filter(|e| !e.is_null()) {
                return message_of(err).or_else(|| Some(err.to_string()));
            }
            if let Some(Value::String(m)) = obj.get("message")
                && !m.trim().is_empty()
            {
                return Some(m.clone());
            }
            match obj.get("detail") {
                Some(Value::String(d)) if !d.trim().is_empty() => Some(d.clone()),
                Some(Value::Array(items)) => {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|i| match i.get("msg").and_then(Value::as_str) {
                            Some(msg) => match i.get("loc") {
                                Some(loc) => format!("{loc}: {msg}"),
                                None => msg.to_owned(),
                            },
                            None => i.to_string(),
                        })
                        .collect();
                    (!parts.is_empty()).then(|| parts.join("; "))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Ollama's `Metrics`, flattened into the final answer. All durations in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(super) struct Metrics {
    pub(super) total_duration: u64,
    pub(super) load_duration: u64,
    pub(super) prompt_eval_count: u64,
    pub(super) prompt_eval_duration: u64,
    pub(super) eval_count: u64,
    pub(super) eval_duration: u64,
}

/// OpenAI's `usage` token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Usage {
    pub(super) prompt_tokens: Option<u64>,
    pub(super) completion_tokens: Option<u64>,
}

impl Usage {
    fn from_value(v: &Value) -> Usage {
        Usage {
            prompt_tokens: v.get("prompt_tokens").and_then(Value::as_u64),
            completion_tokens: v.get("completion_tokens").and_then(Value::as_u64),
        }
    }
}

/// `llama-server`'s `timings` object (milliseconds and token counts).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Timings {
    pub(super) prompt_ms: Option<f64>,
    pub(super) predicted_ms: Option<f64>,
    pub(super) prompt_n: Option<u64>,
    pub(super) cache_n: Option<u64>,
    pub(super) predicted_n: Option<u64>,
}

impl Timings {
    fn from_value(v: &Value) -> Timings {
        Timings {
            prompt_ms: v.get("prompt_ms").and_then(Value::as_f64),
            predicted_ms: v.get("predicted_ms").and_then(Value::as_f64),
            prompt_n: v.get("prompt_n").and_then(Value::as_u64),
            cache_n: v.get("cache_n").and_then(Value::as_u64),
            predicted_n: v.get("predicted_n").and_then(Value::as_u64),
        }
    }
}

/// Wall-clock measurements, used only where the upstream sent no `timings`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Measured {
    pub(super) total: Option<Duration>,
    pub(super) prompt: Option<Duration>,
    pub(super) eval: Option<Duration>,
}

fn ms_to_ns(ms: f64) -> u64 {
    // `as` saturates: negative and NaN become 0.
    (ms * 1_000_000.0).round() as u64
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Ollama's metrics from what the upstream reported. Counts: `usage`, else `timings` (prompt =
/// `prompt_n + cache_n`, as Ollama counts them), else `fallback_eval_count` for the answer.
/// Durations: `timings`, else `measured`, else 0. `load_duration` is always 0: an OpenAI server
/// does not report model loading.
pub(super) fn metrics(usage: Usage, timings: Option<Timings>, measured: Measured, fallback_eval_count: u64) -> Metrics {
    let t = timings.unwrap_or_default();
    let timed_prompt = match (t.prompt_n, t.cache_n) {
        (None, None) => None,
        (p, c) => Some(p.unwrap_or(0).saturating_add(c.unwrap_or(0))),
    };
    let prompt_eval_count = usage.prompt_tokens.or(timed_prompt).unwrap_or(0);
    let eval_count = usage.completion_tokens.or(t.predicted_n).unwrap_or(fallback_eval_count);
    let prompt_eval_duration = t.prompt_ms.map(ms_to_ns).or(measured.prompt.map(duration_ns)).unwrap_or(0);
    let eval_duration = t.predicted_ms.map(ms_to_ns).or(measured.eval.map(duration_ns)).unwrap_or(0);
    let total_duration = match measured.total {
        Some(total) => duration_ns(total).max(prompt_eval_duration.saturating_add(eval_duration)),
        None => prompt_eval_duration.saturating_add(eval_duration),
    };
    Metrics { total_duration, load_duration: 0, prompt_eval_count, prompt_eval_duration, eval_count, eval_duration }
}

/// A tool call in Ollama's shape: `{"id"?, "function": {"index", "name", "arguments": {...}}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ToolCallOut {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(super) id: String,
    pub(super) function: FunctionOut,
}

/// The function part of [`ToolCallOut`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct FunctionOut {
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) arguments: Value,
}

/// One Ollama answer (a whole response or one stream line), before it takes the chat or generate
/// shape.
pub(super) struct Answer<'a> {
    pub(super) model: &'a str,
    pub(super) created_at: &'a str,
    pub(super) content: &'a str,
    pub(super) thinking: &'a str,
    pub(super) tool_calls: &'a [ToolCallOut],
    pub(super) done: bool,
    pub(super) done_reason: Option<&'a str>,
    pub(super) metrics: Option<Metrics>,
    pub(super) logprobs: Option<&'a Value>,
}

/// Ollama's `Message` as it answers (`api.Message`: role, content, thinking, tool_calls).
#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    thinking: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [ToolCallOut],
}

/// Ollama's `ChatResponse`, fields in its order.
#[derive(Serialize)]
struct ChatOut<'a> {
    model: &'a str,
    created_at: &'a str,
    message: MessageOut<'a>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<&'a Value>,
    #[serde(flatten)]
    metrics: Option<Metrics>,
}

/// Ollama's `GenerateResponse`, fields in its order.
#[derive(Serialize)]
struct GenerateOut<'a> {
    model: &'a str,
    created_at: &'a str,
    response: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    thinking: &'a str,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(flatten)]
    metrics: Option<Metrics>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [ToolCallOut],
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<&'a Value>,
}

impl Answer<'_> {
    fn chat(&self) -> ChatOut<'_> {
        ChatOut {
            model: self.model,
            created_at: self.created_at,
            message: MessageOut {
                role: "assistant",
                content: self.content,
                thinking: self.thinking,
                tool_calls: self.tool_calls,
            },
            done: self.done,
            done_reason: self.done_reason,
            logprobs: self.logprobs,
            metrics: self.metrics,
        }
    }

    fn generate(&self) -> GenerateOut<'_> {
        GenerateOut {
            model: self.model,
            created_at: self.created_at,
            response: self.content,
            thinking: self.thinking,
            done: self.done,
            done_reason: self.done_reason,
            metrics: self.metrics,
            tool_calls: self.tool_calls,
            logprobs: self.logprobs,
        }
    }

    /// The answer as a JSON value (a whole non-streamed response).
    pub(super) fn to_value(&self, endpoint: OllamaEndpoint) -> Result<Value, TranslateError> {
        let value = match endpoint {
            OllamaEndpoint::Chat => serde_json::to_value(self.chat()),
            OllamaEndpoint::Generate => serde_json::to_value(self.generate()),
        };
        value.map_err(|e| TranslateError::InvalidResponse(e.to_string()))
    }

    /// Appends the answer as one NDJSON line (JSON and `\n`) to `buf`.
    pub(super) fn write_line(&self, endpoint: OllamaEndpoint, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match endpoint {
            OllamaEndpoint::Chat => serde_json::to_writer(&mut *buf, &self.chat())?,
            OllamaEndpoint::Generate => serde_json::to_writer(&mut *buf, &self.generate())?,
        }
        buf.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_prefer_usage_then_timings_then_fallback() {
        let usage = Usage { prompt_tokens: Some(10), completion_tokens: Some(4) };
        let timings = Timings {
            prompt_ms: Some(1.5),
            predicted_ms: Some(2.25),
            prompt_n: Some(3),
            cache_n: Some(7),
            predicted_n: Some(5),
        };
        let m = metrics(usage, Some(timings), Measured::default(), 99);
        assert_eq!(
            m,
            Metrics {
                total_duration: 3_750_000,
                load_duration: 0,
                prompt_eval_count: 10,
                prompt_eval_duration: 1_500_000,
                eval_count: 4,
                eval_duration: 2_250_000,
            }
        );
        let m = metrics(Usage::default(), Some(timings), Measured::default(), 99);
        assert_eq!((m.prompt_eval_count, m.eval_count), (10, 5));
        let m = metrics(Usage::default(), None, Measured::default(), 99);
        assert_eq!(m, Metrics { eval_count: 99, ..Metrics::default() });
        let measured = Measured {
            total: Some(Duration::from_millis(10)),
            prompt: Some(Duration::from_millis(2)),
            eval: Some(Duration::from_millis(7)),
        };
        let m = metrics(Usage::default(), None, measured, 1);
        assert_eq!((m.total_duration, m.prompt_eval_duration, m.eval_duration), (10_000_000, 2_000_000, 7_000_000));
        // timings win over measurements; the total is never less than its parts
        let m =
            metrics(Usage::default(), Some(timings), Measured { total: Some(Duration::from_nanos(1)), ..measured }, 1);
        assert_eq!((m.total_duration, m.prompt_eval_duration), (3_750_000, 1_500_000));
    }

    #[test]
    fn odd_timings_do_not_overflow() {
        assert_eq!(ms_to_ns(-3.0), 0);
        assert_eq!(ms_to_ns(f64::NAN), 0);
        assert_eq!(ms_to_ns(f64::INFINITY), u64::MAX);
        assert_eq!(duration_ns(Duration::MAX), u64::MAX);
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
