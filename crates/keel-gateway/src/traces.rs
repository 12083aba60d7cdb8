//! A request's trace: a root span per request (continuing the client's W3C `traceparent`), a
//! span per stage (auth, limit, admission, session, guard, repair, re-ask, continuation), and a
//! span per upstream call following the OpenTelemetry GenAI conventions — the only spans that are
//! model calls (`chat llama3.2`, with `gen_ai.*` attributes, usage, time to first chunk). Each
//! upstream call carries its own span's `traceparent`.
//!
//! With no trace destination set, `Gateway::tracing` is `None` and every function here returns at
//! once: the request path pays one branch per stage.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use futures_util::future::Either;
use http::{HeaderMap, Method};
use keel_telemetry::traces::{Context, Traces};
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{KeyValue, Value};
use serde_json::{Value as Json, json};

use crate::answer_tail::Tail;
use crate::config::TracingConfig;
use crate::endpoint::Endpoint;

/// The tracer, and whether spans carry prompts and answers.
#[derive(Debug, Clone)]
pub(crate) struct Tracing {
    traces: Arc<Traces>,
    content: bool,
}

impl Tracing {
    /// Starts exporting to the destinations the environment names; `None` when it names none.
    /// A destination keel cannot use is logged as an error and keel serves without traces: they
    /// are never a reason not to serve.
    pub(crate) fn start(config: &TracingConfig) -> Option<Tracing> {
        let not_sent = |problem: &dyn std::fmt::Display| {
            tracing::error!(problem = %problem, "traces are NOT being sent; keel serves without them until this is fixed (keel doctor checks it)");
        };
        if let Some(problem) = &config.problem {
            not_sent(problem);
        }
        if config.exports.is_empty() {
            return None;
        }
        let traces = match Traces::start(config.exports.clone(), config.batching, "keel") {
            Ok(traces) => traces,
            Err(err) => {
                not_sent(&err);
                return None;
            }
        };
        for export in traces.exports() {
            tracing::info!(destination = export.destination, endpoint = %export.endpoint, content = config.content, "sending traces");
        }
        Some(Tracing { traces: Arc::new(traces), content: config.content })
    }

    /// Sends the spans still queued (at most `within`), at shutdown.
    pub(crate) async fn flush(&self, within: Duration) {
        self.traces.shutdown(within).await;
    }

    fn start_span(&self, name: String, kind: SpanKind, parent: &Context, attributes: Vec<KeyValue>) -> Context {
        let tracer = self.traces.tracer();
        let span =
            tracer.span_builder(name).with_kind(kind).with_attributes(attributes).start_with_context(tracer, parent);
        parent.with_span(span)
    }
}

/// Runs `future` with `cx` as the current trace context (stages started inside it become its
/// children); as it is without one.
pub(crate) fn within<F: Future>(cx: Option<Context>, future: F) -> Either<WithContext<F>, F> {
    match cx {
        Some(cx) => Either::Left(future.with_context(cx)),
        None => Either::Right(future),
    }
}

/// The request's root span (kind server), continuing the client's `traceparent`: the context its
/// stages run in.
pub(crate) fn request(
    tracing: Option<&Tracing>,
    method: &Method,
    headers: &HeaderMap,
    endpoint: Endpoint,
    id: &http::HeaderValue,
) -> Option<Context> {
    let tracing = tracing?;
    let id = String::from_utf8_lossy(id.as_bytes()).into_owned();
    let parent = keel_telemetry::traces::remote_context(headers);
    let attributes = vec![
        KeyValue::new("http.request.method", method.to_string()),
        KeyValue::new("http.route", endpoint.label),
        KeyValue::new("keel.request_id", id),
    ];
    Some(tracing.start_span(format!("{method} {}", endpoint.label), SpanKind::Server, &parent, attributes))
}

/// Notes who sent the request (the key's name) on its root span, as `user.id`.
pub(crate) fn set_user(cx: Option<&Context>, name: &str) {
    if let Some(cx) = cx
        && !name.is_empty()
    {
        cx.span().set_attribute(KeyValue::new("user.id", name.to_owned()));
    }
}

/// The client's response with the root span ended when its body ends (or the client leaves):
/// its status noted, an error status for 5xx, and a `traceresponse` header naming the trace.
pub(crate) fn finish_request(cx: Option<Context>, mut response: Response) -> Response {
    let Some(cx) = cx else { return response };
    // W3C Trace Context's `traceresponse`: which trace the request is in, for the client to
    // look up.
    // It has `traceparent`'s format: the propagator writes it.
    let mut carrier = HeaderMap::new();
    keel_telemetry::traces::inject_context(&cx, &mut carrier);
    if let Some(value) = carrier.remove("traceparent") {
        response.headers_mut().insert(http::HeaderName::from_static("traceresponse"), value);
    }
    let status = response.status();
    cx.span().set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    if status.is_server_error() {
        cx.span().set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
        cx.span().set_status(Status::error(status.canonical_reason().unwrap_or("server error")));
    }
    response.map(|body| Body::new(EndsSpan { body, cx }))
}

/// A response body that ends its request's root span when dropped.
struct EndsSpan {
    body: Body,
    cx: Context,
}

impl Drop for EndsSpan {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

impl http_body::Body for EndsSpan {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The session a request belongs to: `gen_ai.conversation.id` on its model calls.
#[derive(Debug, Clone)]
struct Conversation(String);

/// A stage's span, ended when dropped.
pub(crate) struct Stage(Context);

impl Stage {
    /// A child of the current context named `keel.{name}`; `None` without tracing.
    pub(crate) fn start(tracing: Option<&Tracing>, name: &'static str) -> Option<Stage> {
        Stage::under(tracing, &Context::current(), name)
    }

    /// A child of `parent`.
    pub(crate) fn under(tracing: Option<&Tracing>, parent: &Context, name: &'static str) -> Option<Stage> {
        let tracing = tracing?;
        Some(Stage(tracing.start_span(format!("keel.{name}"), SpanKind::Internal, parent, Vec::new())))
    }

    /// The session stage of session `id`: its model calls carry `gen_ai.conversation.id`, and so
    /// does the request's root span (`root`).
    pub(crate) fn session(tracing: Option<&Tracing>, root: Option<&Context>, id: &str) -> Option<Stage> {
        let stage = Stage::start(tracing, "session")?;
        let attribute = KeyValue::new("gen_ai.conversation.id", id.to_owned());
        if let Some(root) = root {
            root.span().set_attribute(attribute.clone());
        }
        stage.0.span().set_attribute(attribute);
        Some(Stage(stage.0.with_value(Conversation(id.to_owned()))))
    }

    /// The context of code that runs inside this stage.
    pub(crate) fn context(&self) -> Context {
        self.0.clone()
    }

    /// Sets an attribute.
    pub(crate) fn set(&self, key: &'static str, value: impl Into<Value>) {
        self.0.span().set_attribute(KeyValue::new(key, value));
    }

    /// Marks the stage as failed, saying why.
    pub(crate) fn failed(&self, error_type: &'static str, why: String) {
        self.0.span().set_attribute(KeyValue::new("error.type", error_type));
        self.0.span().set_status(Status::error(why));
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// The context of `stage`, if there is one.
pub(crate) fn context_of(stage: &Option<Stage>) -> Option<Context> {
    stage.as_ref().map(Stage::context)
}

/// The GenAI operation an endpoint performs; `None` for endpoints that run no model.
fn operation(endpoint: Endpoint) -> Option<&'static str> {
    match endpoint.label {
        "/api/chat" | "/v1/chat/completions" | "/v1/messages" | "/v1/responses" => Some("chat"),
        "/api/generate" | "/v1/completions" => Some("text_completion"),
        "/api/embed" | "/api/embeddings" | "/v1/embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// Most of an answer kept for `gen_ai.output.messages` (`[tracing] content = true`).
const MAX_CONTENT_BYTES: usize = 1 << 20;

/// What an upstream call's span needs to know when it starts.
pub(crate) struct CallFacts<'a> {
    pub(crate) endpoint: Endpoint,
    pub(crate) method: &'a Method,
    pub(crate) upstream: &'a keel_upstream::Upstream,
    /// The model as sent to the upstream.
    pub(crate) model: &'a str,
    /// The request body, for `gen_ai.input.messages`.
    pub(crate) body: Option<&'a [u8]>,
}

/// One upstream call's span (kind client), ended when its answer ends.
pub(crate) struct Attempt {
    cx: Context,
    sent: Instant,
    tail: Tail,
    /// The answer's bytes, with `[tracing] content = true`.
    content: Option<Vec<u8>>,
}

impl Attempt {
    /// Starts the span of a call and writes its `traceparent` into the call's `headers`.
    pub(crate) fn start(
        tracing: Option<&Tracing>,
        facts: CallFacts<'_>,
        headers: &mut HeaderMap,
    ) -> Option<Box<Attempt>> {
        let tracing = tracing?;
        let parent = Context::current();
        let (host, port) = facts.upstream.server_address();
        let mut attributes = vec![
            KeyValue::new("server.address", host.to_owned()),
            KeyValue::new("server.port", i64::from(port)),
            KeyValue::new("keel.upstream", facts.upstream.name.clone()),
        ];
        let operation = operation(facts.endpoint);
        let name = match operation {
            Some(operation) => {
                let provider = match facts.upstream.dialect {
                    keel_types::Dialect::Ollama => "ollama",
                    keel_types::Dialect::OpenAi => "openai",
                    keel_types::Dialect::Anthropic => "anthropic",
                };
                attributes.extend([
                    KeyValue::new("gen_ai.operation.name", operation),
                    KeyValue::new("gen_ai.provider.name", provider),
                    KeyValue::new("gen_ai.request.model", facts.model.to_owned()),
                ]);
                if let Some(Conversation(id)) = parent.get::<Conversation>() {
                    attributes.push(KeyValue::new("gen_ai.conversation.id", id.clone()));
                }
                if tracing.content
                    && let Some(messages) = facts.body.and_then(input_messages)
                {
                    attributes.push(KeyValue::new("gen_ai.input.messages", messages));
                }
                format!("{operation} {}", facts.model)
            }
            None => format!("{} {}", facts.method, facts.endpoint.label),
        };
        let cx = tracing.start_span(name, SpanKind::Client, &parent, attributes);
        keel_telemetry::traces::inject_context(&cx, headers);
        let content = (tracing.content && operation.is_some()).then(Vec::new);
        Some(Box::new(Attempt { cx, sent: Instant::now(), tail: Tail::default(), content }))
    }

    /// Notes a chunk of the answer (`first`: the first one, whose time is noted) for the counts at
    /// its end.
    pub(crate) fn saw(&mut self, data: &[u8], first: bool) {
        if first {
            let seconds = self.sent.elapsed().as_secs_f64();
            self.cx.span().set_attribute(KeyValue::new("gen_ai.response.time_to_first_chunk", seconds));
        }
        self.tail.saw(data);
        if let Some(content) = &mut self.content {
            let room = MAX_CONTENT_BYTES.saturating_sub(content.len());
            content.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    /// Marks the call as failed (`error.type` is the failure class); the span ends when dropped.
    pub(crate) fn failed(&self, class: keel_types::FailureClass, detail: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", class.as_str()));
        span.set_status(Status::error(detail.to_owned()));
    }

    /// Notes how the call's answer ended (the span ends when dropped): its status, the model that answered, the
    /// token counts, and with `content` the answer's text; `failure` when it broke or was an error.
    pub(crate) fn ended(&self, status: u16, failure: Option<(keel_types::FailureClass, &str)>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if let Some(model) = self.tail.model() {
            span.set_attribute(KeyValue::new("gen_ai.response.model", model));
        }
        if let Some(usage) = self.tail.usage() {
            if let Some(input) = usage.input {
                span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", input as i64));
            }
            if let Some(output) = usage.output {
                span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", output as i64));
            }
        }
        if let Some(content) = &self.content
            && failure.is_none()
        {
            span.set_attribute(KeyValue::new("gen_ai.output.messages", output_messages(content)));
        }
        if let Some((class, detail)) = failure {
            self.failed(class, detail);
        }
    }

    /// Notes that the client went away before the answer ended (the span ends when dropped).
    pub(crate) fn abandoned(&self) {
        self.cx.span().set_attribute(KeyValue::new("keel.client_disconnected", true));
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

/// A request's prompt as GenAI input messages (`[{"role", "parts": [{"type": "text", "content"}]}]`).
fn input_messages(body: &[u8]) -> Option<String> {
    let body: Json = serde_json::from_slice(body).ok()?;
    let mut messages = Vec::new();
    if let Some(system) = body.get("system").and_then(Json::as_str) {
        messages.push(text_message("system", system));
    }
    match (body.get("messages").and_then(Json::as_array), body.get("prompt").and_then(Json::as_str)) {
        (Some(list), _) => {
            for message in list {
                let role = message.get("role").and_then(Json::as_str).unwrap_or("user");
                let content = match message.get("content") {
                    Some(Json::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                messages.push(text_message(role, &content));
            }
        }
        (None, Some(prompt)) => messages.push(text_message("user", prompt)),
        (None, None) => return None,
    }
    Some(Json::Array(messages).to_string())
}

fn text_message(role: &str, text: &str) -> Json {
    json!({"role": role, "parts": [{"type": "text", "content": text}]})
}

/// An answer's text (whole, or a stream's NDJSON lines or SSE events) as GenAI output messages.
fn output_messages(raw: &[u8]) -> String {
    let mut text = String::new();
    let mut add = |value: &Json| {
        let piece = [
            "/message/content",
            "/response",
            "/choices/0/message/content",
            "/choices/0/delta/content",
            "/choices/0/text",
        ]
        .iter()
        .find_map(|pointer| value.pointer(pointer).and_then(Json::as_str));
        if let Some(piece) = piece {
            text.push_str(piece);
        }
    };
    match serde_json::from_slice::<Json>(raw) {
        Ok(whole) => add(&whole),
        Err(_) => {
            for line in raw.split(|b| *b == b'\n') {
                let line = line.trim_ascii();
                let line = line.strip_prefix(b"data:").map_or(line, <[u8]>::trim_ascii);
                if let Ok(value) = serde_json::from_slice::<Json>(line) {
                    add(&value);
                }
            }
        }
    }
    let mut message = text_message("assistant", &text);
    message["finish_reason"] = json!("stop");
    Json::Array(vec![message]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_become_input_messages() {
        let chat =
            br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#;
        let messages: Json = serde_json::from_str(&input_messages(chat).unwrap()).unwrap();
        assert_eq!(messages[1], json!({"role": "user", "parts": [{"type": "text", "content": "hi"}]}));
        let generate = br#"{"model":"m","prompt":"why?","system":"s"}"#;
        let messages: Json = serde_json::from_str(&input_messages(generate).unwrap()).unwrap();
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(messages[1]["parts"][0]["content"], "why?");
        assert_eq!(input_messages(b"not json"), None);
    }

    #[test]
    fn answers_become_output_messages_whole_or_streamed() {
        let whole = br#"{"message":{"role":"assistant","content":"Paris"},"done":true}"#;
        let ndjson = b"{\"message\":{\"content\":\"Par\"}}\n{\"message\":{\"content\":\"is\"},\"done\":true}\n";
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"Par\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"is\"}}]}\n\ndata: [DONE]\n\n";
        for raw in [&whole[..], &ndjson[..], &sse[..]] {
            let messages: Json = serde_json::from_str(&output_messages(raw)).unwrap();
            assert_eq!(messages[0]["parts"][0]["content"], "Paris", "{}", String::from_utf8_lossy(raw));
            assert_eq!(messages[0]["role"], "assistant");
        }
    }
}
