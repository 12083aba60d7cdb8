//! The OpenAI-compatible endpoints Ollama serves under `/v1`.

use std::collections::VecDeque;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Content, Ctx, Dialect, Resp, SSE, XMock, chunk_limit, content, error, find_model, json, model_not_found, nullable,
    offers_tools, parse, sse_error_event, sse_event, text_words, to_bytes, tool_answer,
};
use crate::jsongen::JsonMode;
use crate::names::{self, word_count};
use crate::scenario::ToolCall;
use crate::state::Compiled;

const FINGERPRINT: &str = "fp_ollama";

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1Message {
    role: String,
    content: Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatReq {
    #[serde(deserialize_with = "nullable")]
    model: String,
    #[serde(deserialize_with = "nullable")]
    messages: Vec<V1Message>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    response_format: Option<Value>,
    tools: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionReq {
    #[serde(deserialize_with = "nullable")]
    model: String,
    prompt: Value,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    response_format: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EmbeddingsReq {
    #[serde(deserialize_with = "nullable")]
    model: String,
    input: Value,
    dimensions: Option<usize>,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn new(prompt: u64, completion: u64) -> Usage {
        Usage { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
    }
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: String,
    index: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: String,
}

fn tool_calls<'a>(t: &'a ToolCall, seq: u64) -> [ToolCallOut<'a>; 1] {
    [ToolCallOut {
        id: format!("call_{seq}_0"),
        index: 0,
        kind: "function",
        function: FunctionOut { name: &t.name, arguments: t.arguments.to_string() },
    }]
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
    x_mock: XMock,
}

#[derive(Serialize)]
struct DeltaChoice<'a> {
    index: u32,
    delta: Message<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<DeltaChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_mock: Option<XMock>,
}

fn delta<'a>(
    text: &'a str,
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
    finish_reason: Option<&'static str>,
) -> Vec<DeltaChoice<'a>> {
    vec![DeltaChoice { index: 0, delta: Message { role: "assistant", content: text, tool_calls }, finish_reason }]
}

/// Wraps serialized JSON as one SSE event.
fn sse_data(json: Vec<u8>) -> Bytes {
    let mut b = Vec::with_capacity(json.len() + 8);
    b.extend_from_slice(b"data: ");
    b.extend_from_slice(&json);
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

/// The SSE terminator.
fn done_event() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

pub(crate) async fn chat(ctx: &mut Ctx, snap: &Compiled, body: &[u8]) -> Resp {
    let req: ChatReq = match parse(body, Dialect::V1) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let model = match find_model(snap, &req.model, Dialect::V1) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mode = JsonMode::from_openai(req.response_format.as_ref());
    let action = ctx.state.pick_action(model, "/v1/chat/completions", mode.is_json());
    if let Some(r) = ctx.pre_response(model, &action, Dialect::V1, &req.model).await {
        return r;
    }
    let prompt_tokens = req.messages.iter().map(|m| text_words(&m.content)).sum::<u64>().max(1);
    // After a tool result the model answers in text, as a real one would.
    let after_tool_result = req.messages.last().is_some_and(|m| m.role == "tool");
    let tool = tool_answer(model, offers_tools(req.tools.as_ref()), after_tool_result);
    let content = content(model, &mode, &action);
    let completion_tokens = if tool.is_some() { 1 } else { content.eval_count() };
    let usage = Usage::new(prompt_tokens, completion_tokens);
    let id = format!("chatcmpl-{}", ctx.seq);
    let created = ctx.created_unix();
    let finish_reason = if tool.is_some() { "tool_calls" } else { "stop" };
    let x_mock = XMock { seed: snap.seed };

    if !req.stream.unwrap_or(false) {
        let body = ChatCompletion {
            id: &id,
            object: "chat.completion",
            created,
            model: &req.model,
            system_fingerprint: FINGERPRINT,
            choices: [ChatChoice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: if tool.is_some() { "" } else { &content.text },
                    tool_calls: tool.map(|t| tool_calls(t, ctx.seq)),
                },
                finish_reason,
            }],
            usage,
            x_mock,
        };
        return ctx.whole(&action, Dialect::V1, to_bytes(&body));
    }

    let chunk = |choices: Vec<DeltaChoice<'_>>, usage: Option<Usage>, x: Option<XMock>| {
        sse_event(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model: &req.model,
            system_fingerprint: FINGERPRINT,
            choices,
            usage,
            x_mock: x,
        })
    };
    let mut frames = VecDeque::with_capacity(content.chunks.len() + 4);
    if let Some(t) = tool {
        if chunk_limit(&action, 1) > 0 {
            frames.push_back(chunk(delta("", Some(tool_calls(t, ctx.seq)), None), None, None));
        }
    } else {
        let limit = chunk_limit(&action, content.chunks.len());
        for piece in content.pieces().take(limit) {
            frames.push_back(chunk(delta(piece, None, None), None, None));
        }
    }
    ctx.stream_tail(SSE, frames, model, &action, sse_error_event, |frames| {
        frames.push_back(chunk(delta("", None, Some(finish_reason)), None, Some(x_mock)));
        if req.stream_options.as_ref().is_some_and(|o| o.include_usage) {
            frames.push_back(chunk(Vec::new(), Some(usage), None));
        }
        frames.push_back(done_event());
    })
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<TextChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_mock: Option<XMock>,
}

fn prompt_text(v: &Value) -> Result<String, &'static str> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or("invalid prompt"))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join("\n")),
        Value::Null => Ok(String::new()),
        _ => Err("invalid prompt"),
    }
}

pub(crate) async fn completions(ctx: &mut Ctx, snap: &Compiled, body: &[u8]) -> Resp {
    let req: CompletionReq = match parse(body, Dialect::V1) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let prompt = match prompt_text(&req.prompt) {
        Ok(p) => p,
        Err(m) => return error(Dialect::V1, StatusCode::BAD_REQUEST, m),
    };
    let model = match find_model(snap, &req.model, Dialect::V1) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mode = JsonMode::from_openai(req.response_format.as_ref());
    let action = ctx.state.pick_action(model, "/v1/completions", mode.is_json());
    if let Some(r) = ctx.pre_response(model, &action, Dialect::V1, &req.model).await {
        return r;
    }
    let content: Content<'_> = content(model, &mode, &action);
    let usage = Usage::new(word_count(&prompt).max(1), content.eval_count());
    let id = format!("cmpl-{}", ctx.seq);
    let created = ctx.created_unix();
    let x_mock = XMock { seed: snap.seed };
    // Serialized JSON of one completion object; no choice when `text` is None (usage chunk).
    let build = |text: Option<&str>, finish: Option<&'static str>, usage: Option<Usage>, x: Option<XMock>| -> Vec<u8> {
        to_bytes(&TextCompletion {
            id: &id,
            object: "text_completion",
            created,
            model: &req.model,
            system_fingerprint: FINGERPRINT,
            choices: text.map(|text| TextChoice { text, index: 0, finish_reason: finish }).into_iter().collect(),
            usage,
            x_mock: x,
        })
    };

    if !req.stream.unwrap_or(false) {
        return ctx.whole(&action, Dialect::V1, build(Some(&content.text), Some("stop"), Some(usage), Some(x_mock)));
    }

    let mut frames = VecDeque::with_capacity(content.chunks.len() + 4);
    let limit = chunk_limit(&action, content.chunks.len());
    for piece in content.pieces().take(limit) {
        frames.push_back(sse_data(build(Some(piece), None, None, None)));
    }
    ctx.stream_tail(SSE, frames, model, &action, sse_error_event, |frames| {
        frames.push_back(sse_data(build(Some(""), Some("stop"), None, Some(x_mock))));
        if req.stream_options.as_ref().is_some_and(|o| o.include_usage) {
            frames.push_back(sse_data(build(None, None, Some(usage), None)));
        }
        frames.push_back(done_event());
    })
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    embedding: Vec<f32>,
    index: usize,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
    x_mock: XMock,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// The texts of an embeddings `input`: a string, strings, or token arrays (rendered as text).
fn embedding_inputs(v: &Value) -> Result<Vec<String>, &'static str> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => {
            if items.iter().all(Value::is_number) {
                return Ok(vec![v.to_string()]);
            }
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    Value::Array(_) => Ok(i.to_string()),
                    _ => Err("invalid input"),
                })
                .collect()
        }
        _ => Err("invalid input"),
    }
}

pub(crate) async fn embeddings(ctx: &mut Ctx, snap: &Compiled, body: &[u8]) -> Resp {
    let req: EmbeddingsReq = match parse(body, Dialect::V1) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let inputs = match embedding_inputs(&req.input) {
        Ok(i) => i,
        Err(m) => return error(Dialect::V1, StatusCode::BAD_REQUEST, m),
    };
    let model = match find_model(snap, &req.model, Dialect::V1) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let action = ctx.state.pick_action(model, "/v1/embeddings", false);
    if let Some(r) = ctx.pre_response(model, &action, Dialect::V1, &req.model).await {
        return r;
    }
    let dim = super::ollama::embedding_dim(model, req.dimensions);
    let tokens: u64 = inputs.iter().map(|s| word_count(s).max(1)).sum();
    let list = EmbeddingList {
        object: "list",
        data: inputs
            .iter()
            .enumerate()
            .map(|(index, s)| EmbeddingItem { object: "embedding", embedding: names::embedding(s, dim), index })
            .collect(),
        model: &req.model,
        usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens },
        x_mock: XMock { seed: snap.seed },
    };
    ctx.whole(&action, Dialect::V1, to_bytes(&list))
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

pub(crate) fn models(snap: &Compiled) -> Resp {
    let data = snap
        .models
        .iter()
        .map(|m| ModelObject { id: &m.full_name, object: "model", created: names::EPOCH_SECS, owned_by: "library" })
        .collect();
    json(StatusCode::OK, &ModelList { object: "list", data })
}

pub(crate) fn model(snap: &Compiled, name: &str) -> Resp {
    if snap.find(name).is_none() {
        return error(Dialect::V1, StatusCode::NOT_FOUND, &model_not_found(name));
    }
    json(StatusCode::OK, &ModelObject { id: name, object: "model", created: names::EPOCH_SECS, owned_by: "library" })
}

/// `GET /props` as llama-server answers it: the slots it serves at once (`--parallel`), the
/// model and its context length.
pub(crate) fn props(snap: &Compiled) -> Resp {
    let model = snap.models.first();
    let body = serde_json::json!({
        "default_generation_settings": { "n_ctx": model.map_or(0, |m| m.spec.context_length) },
        "total_slots": snap.slots,
        "model_path": model.map_or("", |m| m.full_name.as_str()),
        "build_info": format!("keel-mock {}", snap.version),
    });
    json(StatusCode::OK, &body)
}
