//! The OpenAI Responses API as Ollama serves it: `POST /v1/responses`, stateless (no
//! `previous_response_id`), a whole `response` object or named SSE events with `stream: true`.

use std::collections::VecDeque;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Ctx, Dialect, Resp, SSE, XMock, chunk_limit, content, error, find_model, nullable, offers_tools, parse, sse_typed,
    text_words, to_bytes, tool_answer,
};
use crate::jsongen::JsonMode;
use crate::names;
use crate::state::Compiled;

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateReq {
    #[serde(deserialize_with = "nullable")]
    model: String,
    input: Value,
    stream: Option<bool>,
    previous_response_id: Option<String>,
    #[serde(flatten)]
    echo: Echo,
}

/// The request parameters a `response` object repeats.
#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
struct Echo {
    instructions: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    text: Option<Value>,
    parallel_tool_calls: Option<bool>,
    temperature: Option<Value>,
    top_p: Option<Value>,
    max_output_tokens: Option<Value>,
    metadata: Option<Value>,
    store: Option<bool>,
}

impl Echo {
    /// Fills the parameters the request left out with the API's defaults.
    fn with_defaults(mut self) -> Echo {
        self.tools.get_or_insert_with(|| json!([]));
        self.tool_choice.get_or_insert_with(|| json!("auto"));
        self.text.get_or_insert_with(|| json!({"format": {"type": "text"}}));
        self.parallel_tool_calls.get_or_insert(true);
        self.temperature.get_or_insert_with(|| json!(1.0));
        self.top_p.get_or_insert_with(|| json!(1.0));
        self.metadata.get_or_insert_with(|| json!({}));
        self.store.get_or_insert(false);
        self
    }
}

impl CreateReq {
    /// Words of the instructions and the input (at least 1).
    fn input_tokens(&self) -> u64 {
        let instructions = self.echo.instructions.as_ref().map_or(0, text_words);
        (instructions + text_words(&self.input)).max(1)
    }

    /// Whether the input ends with a `function_call_output` item.
    fn after_tool_result(&self) -> bool {
        self.input
            .as_array()
            .and_then(|items| items.last())
            .is_some_and(|i| i.get("type").and_then(Value::as_str) == Some("function_call_output"))
    }
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    input_tokens_details: CachedTokens,
    output_tokens: u64,
    output_tokens_details: ReasoningTokens,
    total_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl Usage {
    fn new(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            input_tokens_details: CachedTokens { cached_tokens: 0 },
            output_tokens: output,
            output_tokens_details: ReasoningTokens { reasoning_tokens: 0 },
            total_tokens: input + output,
        }
    }
}

#[derive(Serialize)]
struct Part<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
    logprobs: [(); 0],
}

fn part(text: &str) -> Part<'_> {
    Part { kind: "output_text", text, annotations: [], logprobs: [] }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Item<'a> {
    Message { id: &'a str, status: &'static str, role: &'static str, content: Vec<Part<'a>> },
    FunctionCall { id: &'a str, call_id: &'a str, name: &'a str, arguments: &'a str, status: &'static str },
}

#[derive(Serialize)]
struct ResponseObj<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    background: bool,
    error: Option<()>,
    incomplete_details: Option<()>,
    model: &'a str,
    output: Vec<Item<'a>>,
    previous_response_id: Option<()>,
    reasoning: Value,
    service_tier: &'static str,
    truncation: &'static str,
    usage: Option<Usage>,
    user: Option<()>,
    #[serde(flatten)]
    echo: &'a Echo,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_mock: Option<XMock>,
}

/// What every `response` object of one request shares.
struct Shell<'a> {
    id: &'a str,
    model: &'a str,
    created_at: u64,
    echo: &'a Echo,
}

impl<'a> Shell<'a> {
    /// `in_progress` without usage, `completed` with it.
    fn response(&self, output: Vec<Item<'a>>, usage: Option<Usage>, x_mock: Option<XMock>) -> ResponseObj<'a> {
        ResponseObj {
            id: self.id,
            object: "response",
            created_at: self.created_at,
            status: if usage.is_some() { "completed" } else { "in_progress" },
            background: false,
            error: None,
            incomplete_details: None,
            model: self.model,
            output,
            previous_response_id: None,
            reasoning: json!({"effort": null, "summary": null}),
            service_tier: "default",
            truncation: "disabled",
            usage,
            user: None,
            echo: self.echo,
            x_mock,
        }
    }
}

/// Stream events; `sequence_number` is added by [`Seq`].
#[derive(Serialize)]
#[serde(tag = "type")]
enum Event<'a> {
    #[serde(rename = "response.created")]
    Created { response: &'a ResponseObj<'a> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: &'a ResponseObj<'a> },
    #[serde(rename = "response.output_item.added")]
    ItemAdded { output_index: u32, item: Item<'a> },
    #[serde(rename = "response.content_part.added")]
    PartAdded { item_id: &'a str, output_index: u32, content_index: u32, part: Part<'a> },
    #[serde(rename = "response.output_text.delta")]
    TextDelta { item_id: &'a str, output_index: u32, content_index: u32, delta: &'a str, logprobs: [(); 0] },
    #[serde(rename = "response.output_text.done")]
    TextDone { item_id: &'a str, output_index: u32, content_index: u32, text: &'a str, logprobs: [(); 0] },
    #[serde(rename = "response.content_part.done")]
    PartDone { item_id: &'a str, output_index: u32, content_index: u32, part: Part<'a> },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgsDelta { item_id: &'a str, output_index: u32, delta: &'a str },
    #[serde(rename = "response.function_call_arguments.done")]
    ArgsDone { item_id: &'a str, output_index: u32, name: &'a str, arguments: &'a str },
    #[serde(rename = "response.output_item.done")]
    ItemDone { output_index: u32, item: Item<'a> },
    #[serde(rename = "response.completed")]
    Completed { response: &'a ResponseObj<'a> },
    #[serde(rename = "error")]
    Error { code: &'static str, message: &'a str, param: Option<()> },
}

#[derive(Serialize)]
struct Seq<'a> {
    #[serde(flatten)]
    event: Event<'a>,
    sequence_number: u64,
}

/// Numbers the events of one stream.
#[derive(Default)]
struct Numbered {
    next: u64,
}

impl Numbered {
    fn frame(&mut self, event: Event<'_>) -> Bytes {
        let sequence_number = self.next;
        self.next += 1;
        sse_typed(&Seq { event, sequence_number })
    }
}

/// What the model answers: its ids, text and, for a tool call, the call.
struct Answer<'a> {
    item_id: String,
    call_id: String,
    text: &'a str,
    call: Option<(&'a str, &'a str)>,
}

impl<'a> Answer<'a> {
    fn item(&'a self, done: bool) -> Item<'a> {
        let status = if done { "completed" } else { "in_progress" };
        match self.call {
            Some((name, arguments)) => Item::FunctionCall {
                id: &self.item_id,
                call_id: &self.call_id,
                name,
                arguments: if done { arguments } else { "" },
                status,
            },
            None => Item::Message {
                id: &self.item_id,
                status,
                role: "assistant",
                content: if done { vec![part(self.text)] } else { Vec::new() },
            },
        }
    }
}

pub(crate) async fn create(ctx: &mut Ctx, snap: &Compiled, body: &[u8]) -> Resp {
    let req: CreateReq = match parse(body, Dialect::V1) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if req.previous_response_id.is_some() {
        return error(Dialect::V1, StatusCode::BAD_REQUEST, "previous_response_id is not supported (stateless)");
    }
    let model = match find_model(snap, &req.model, Dialect::V1) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mode = JsonMode::from_format(req.echo.text.as_ref().and_then(|t| t.get("format")));
    let action = ctx.state.pick_action(model, "/v1/responses", mode.is_json());
    if let Some(r) = ctx.pre_response(model, &action, Dialect::V1, &req.model).await {
        return r;
    }
    let tool = tool_answer(model, offers_tools(req.echo.tools.as_ref()), req.after_tool_result());
    let content = content(model, &mode, &action);
    let arguments = tool.map(|t| t.arguments.to_string()).unwrap_or_default();
    let usage = Usage::new(req.input_tokens(), if tool.is_some() { 1 } else { content.eval_count() });
    let seq = ctx.seq;
    let answer = Answer {
        item_id: if tool.is_some() { format!("fc_{seq}_0") } else { format!("msg_{seq}") },
        call_id: format!("call_{seq}_0"),
        text: &content.text,
        call: tool.map(|t| (t.name.as_str(), arguments.as_str())),
    };
    let id = format!("resp_{seq}");
    let stream = req.stream.unwrap_or(false);
    let echo = req.echo.with_defaults();
    let created_at = ctx.created_unix();
    let shell = Shell { id: &id, model: &req.model, created_at, echo: &echo };
    let x_mock = Some(XMock { seed: snap.seed });
    let done = shell.response(vec![answer.item(true)], Some(usage), x_mock);
    if !stream {
        let bytes = to_bytes(&done);
        return ctx.whole(&action, Dialect::V1, bytes);
    }
    let started = shell.response(Vec::new(), None, None);
    let pieces: Vec<&str> = match answer.call {
        Some((_, args)) => names::chunk_ranges(args).into_iter().map(|r| args.get(r).unwrap_or("")).collect(),
        None => content.pieces().collect(),
    };
    let mut n = Numbered::default();
    let mut frames = VecDeque::with_capacity(pieces.len() + 10);
    frames.push_back(n.frame(Event::Created { response: &started }));
    frames.push_back(n.frame(Event::InProgress { response: &started }));
    frames.push_back(n.frame(Event::ItemAdded { output_index: 0, item: answer.item(false) }));
    let item_id = answer.item_id.as_str();
    if answer.call.is_none() {
        frames.push_back(n.frame(Event::PartAdded { item_id, output_index: 0, content_index: 0, part: part("") }));
    }
    for delta in pieces.iter().take(chunk_limit(&action, pieces.len())) {
        frames.push_back(n.frame(match answer.call {
            Some(_) => Event::ArgsDelta { item_id, output_index: 0, delta },
            None => Event::TextDelta { item_id, output_index: 0, content_index: 0, delta, logprobs: [] },
        }));
    }
    let mut tail = Numbered { next: n.next };
    ctx.stream_tail(
        SSE,
        frames,
        model,
        &action,
        |message| n.frame(Event::Error { code: "server_error", message, param: None }),
        |frames| {
            let (text, output_index, content_index) = (answer.text, 0, 0);
            match answer.call {
                Some((name, arguments)) => {
                    frames.push_back(tail.frame(Event::ArgsDone { item_id, output_index, name, arguments }));
                }
                None => {
                    frames.push_back(tail.frame(Event::TextDone {
                        item_id,
                        output_index,
                        content_index,
                        text,
                        logprobs: [],
                    }));
                    frames.push_back(tail.frame(Event::PartDone {
                        item_id,
                        output_index,
                        content_index,
                        part: part(text),
                    }));
                }
            }
            frames.push_back(tail.frame(Event::ItemDone { output_index, item: answer.item(true) }));
            frames.push_back(tail.frame(Event::Completed { response: &done }));
        },
    )
}
