//! The Anthropic Messages API as Ollama serves it: `POST /v1/messages` (a whole message, or
//! named SSE events with `stream: true`), `POST /v1/messages/count_tokens`, and, with
//! `api = "anthropic"`, Anthropic's `GET /v1/models` list.

use std::collections::VecDeque;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Ctx, Dialect, Resp, SSE, XMock, chunk_limit, content, error, find_model, json, model_not_found, nullable,
    offers_tools, parse, sse_typed, text_words, to_bytes, tool_answer,
};
use crate::jsongen::JsonMode;
use crate::names;
use crate::scenario::ToolCall;
use crate::state::Compiled;

/// Anthropic's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// `{"type":"error","error":{"type","message"}}` for `status`.
pub(crate) fn error_body(status: StatusCode, message: &str) -> ErrorBody<'_> {
    ErrorBody { kind: "error", error: ErrorDetail { kind: error_type(status), message } }
}

/// The `event: error` a stream ends with when an `error_line` fault strikes.
fn error_event(message: &str) -> Bytes {
    sse_typed(&error_body(StatusCode::INTERNAL_SERVER_ERROR, message))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InMessage {
    #[serde(deserialize_with = "nullable")]
    role: String,
    content: Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OutputConfig {
    format: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessagesReq {
    #[serde(deserialize_with = "nullable")]
    model: String,
    max_tokens: Option<u64>,
    #[serde(deserialize_with = "nullable")]
    messages: Vec<InMessage>,
    system: Option<Value>,
    stream: Option<bool>,
    tools: Option<Value>,
    output_format: Option<Value>,
    output_config: Option<OutputConfig>,
}

impl MessagesReq {
    /// Words of the system prompt and the messages (at least 1).
    fn input_tokens(&self) -> u64 {
        let system = self.system.as_ref().map_or(0, text_words);
        (system + self.messages.iter().map(|m| text_words(&m.content)).sum::<u64>()).max(1)
    }

    /// Whether the conversation ends with a user turn carrying a `tool_result` block.
    fn after_tool_result(&self) -> bool {
        self.messages.last().is_some_and(|m| {
            m.role == "user"
                && m.content.as_array().is_some_and(|blocks| {
                    blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                })
        })
    }

    /// Structured output: `output_format` (or `output_config.format`) of type `json_schema`.
    fn json_mode(&self) -> JsonMode {
        let format = self.output_format.as_ref().or_else(|| self.output_config.as_ref()?.format.as_ref());
        JsonMode::from_format(format)
    }

    /// The 400s Anthropic answers for a request without its required fields.
    fn check(&self) -> Result<(), &'static str> {
        if self.max_tokens.is_none() {
            return Err("max_tokens: Field required");
        }
        if self.messages.is_empty() {
            return Err("messages: at least one message is required");
        }
        Ok(())
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: &'a str },
    ToolUse { id: String, name: &'a str, input: &'a Value },
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_mock: Option<XMock>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart { message: Message<'a> },
    ContentBlockStart { index: u32, content_block: Block<'a> },
    Ping,
    ContentBlockDelta { index: u32, delta: Delta<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: StopDelta, usage: OutputUsage, x_mock: XMock },
    MessageStop,
}

/// What every message of one request shares.
struct Head<'a> {
    id: &'a str,
    model: &'a str,
}

impl<'a> Head<'a> {
    fn message(
        &self,
        content: Vec<Block<'a>>,
        stop: Option<&'static str>,
        usage: Usage,
        x: Option<XMock>,
    ) -> Message<'a> {
        Message {
            id: self.id,
            kind: "message",
            role: "assistant",
            model: self.model,
            content,
            stop_reason: stop,
            stop_sequence: None,
            usage,
            x_mock: x,
        }
    }
}

fn tool_use<'a>(t: &'a ToolCall, seq: u64, input: &'a Value) -> Block<'a> {
    Block::ToolUse { id: format!("toolu_{seq}_0"), name: &t.name, input }
}

pub(crate) async fn messages(ctx: &mut Ctx, snap: &Compiled, body: &[u8]) -> Resp {
    let req: MessagesReq = match parse(body, Dialect::Anthropic) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let model = match find_model(snap, &req.model, Dialect::Anthropic) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(m) = req.check() {
        return error(Dialect::Anthropic, StatusCode::BAD_REQUEST, m);
    }
    let mode = req.json_mode();
    let action = ctx.state.pick_action(model, "/v1/messages", mode.is_json());
    if let Some(r) = ctx.pre_response(model, &action, Dialect::Anthropic, &req.model).await {
        return r;
    }
    let tool = tool_answer(model, offers_tools(req.tools.as_ref()), req.after_tool_result());
    let content = content(model, &mode, &action);
    let arguments = tool.map(|t| t.arguments.to_string()).unwrap_or_default();
    let usage = Usage {
        input_tokens: req.input_tokens(),
        output_tokens: if tool.is_some() { 1 } else { content.eval_count() },
    };
    let id = format!("msg_{}", ctx.seq);
    let stop_reason = if tool.is_some() { "tool_use" } else { "end_turn" };
    let x_mock = XMock { seed: snap.seed };
    let head = Head { id: &id, model: &req.model };
    let blocks = match tool {
        Some(t) => vec![tool_use(t, ctx.seq, &t.arguments)],
        None => vec![Block::Text { text: &content.text }],
    };
    if !req.stream.unwrap_or(false) {
        return ctx.whole(
            &action,
            Dialect::Anthropic,
            to_bytes(&head.message(blocks, Some(stop_reason), usage, Some(x_mock))),
        );
    }

    let empty = Value::Object(Map::new());
    let (start_block, pieces): (Block<'_>, Vec<Delta<'_>>) = match tool {
        Some(t) => (
            tool_use(t, ctx.seq, &empty),
            names::chunk_ranges(&arguments)
                .into_iter()
                .map(|r| Delta::InputJsonDelta { partial_json: arguments.get(r).unwrap_or("") })
                .collect(),
        ),
        None => (Block::Text { text: "" }, content.pieces().map(|text| Delta::TextDelta { text }).collect()),
    };
    let start_usage = Usage { output_tokens: 0, ..usage };
    let mut frames = VecDeque::with_capacity(pieces.len() + 7);
    frames.push_back(sse_typed(&Event::MessageStart { message: head.message(Vec::new(), None, start_usage, None) }));
    frames.push_back(sse_typed(&Event::ContentBlockStart { index: 0, content_block: start_block }));
    frames.push_back(sse_typed(&Event::Ping));
    let limit = chunk_limit(&action, pieces.len());
    for delta in pieces.into_iter().take(limit) {
        frames.push_back(sse_typed(&Event::ContentBlockDelta { index: 0, delta }));
    }
    ctx.stream_tail(SSE, frames, model, &action, error_event, |frames| {
        frames.push_back(sse_typed(&Event::ContentBlockStop { index: 0 }));
        frames.push_back(sse_typed(&Event::MessageDelta {
            delta: StopDelta { stop_reason, stop_sequence: None },
            usage: OutputUsage { output_tokens: usage.output_tokens },
            x_mock,
        }));
        frames.push_back(sse_typed(&Event::MessageStop));
    })
}

#[derive(Serialize)]
struct TokenCount {
    input_tokens: u64,
}

/// `{"input_tokens": N}`: the same estimate as a message's `usage.input_tokens`.
pub(crate) fn count_tokens(snap: &Compiled, body: &[u8]) -> Resp {
    let req: MessagesReq = match parse(body, Dialect::Anthropic) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = find_model(snap, &req.model, Dialect::Anthropic) {
        return r;
    }
    json(StatusCode::OK, &TokenCount { input_tokens: req.input_tokens() })
}

#[derive(Serialize)]
struct ModelInfo<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    display_name: &'a str,
    created_at: &'static str,
}

fn model_info(name: &str) -> ModelInfo<'_> {
    ModelInfo { kind: "model", id: name, display_name: name, created_at: super::ollama::MODIFIED_AT }
}

#[derive(Serialize)]
struct ModelPage<'a> {
    data: Vec<ModelInfo<'a>>,
    has_more: bool,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
}

/// Anthropic's model list (one page with every model).
pub(crate) fn models(snap: &Compiled) -> Resp {
    let data: Vec<ModelInfo<'_>> = snap.models.iter().map(|m| model_info(&m.full_name)).collect();
    let first_id = data.first().map(|m| m.id);
    let last_id = data.last().map(|m| m.id);
    json(StatusCode::OK, &ModelPage { data, has_more: false, first_id, last_id })
}

/// One model in Anthropic's shape; 404 `not_found_error` for unknown names.
pub(crate) fn model(snap: &Compiled, name: &str) -> Resp {
    match snap.find(name) {
        Some(_) => json(StatusCode::OK, &model_info(name)),
        None => error(Dialect::Anthropic, StatusCode::NOT_FOUND, &model_not_found(name)),
    }
}
