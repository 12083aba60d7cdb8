//! Stage: the structured-output guard. Answers to requests that ask for JSON (Ollama `format`, OpenAI
//! `response_format`, Responses `text.format`, Anthropic `output_format`) are validated, repaired,
//! re-asked, sent to the next target, or answered from the route's canned value — never passed on
//! broken, never invented. The guard reads answers in the client's API: a request an upstream
//! does not speak is translated by the attempts (the bridge) before the guard sees its answer.
//!
//! The order for one request:
//!
//! 1. The request goes to the route's targets as usual (breakers, retries, fallback on transport
//!    failures), but always with `stream: false`: keel needs the whole answer to judge it.
//! 2. The answer's text is run through [`keel_repair`] against the request's schema (or the
//!    route's, for `format: "json"`). Valid as written or repaired: it is answered. An answer
//!    nested deeper than keel reads ([`keel_repair::MAX_DEPTH`], or [`keel_repair::MAX_VALUE_DEPTH`]
//!    when it must be repaired or schema-checked) is invalid with that reason, never passed on
//!    changed.
//! 3. Invalid: the same target is asked again (`[guard] reasks` times) with the validation error
//!    appended as feedback, then the next target is tried.
//! 4. No target gave a usable answer: the route's `canned` answer (when it satisfies the request's
//!    schema), else 422 in the endpoint's dialect naming what was wrong with each answer.
//!
//! A client that asked for a stream gets the validated answer re-streamed in well-formed chunks
//! (NDJSON for Ollama, SSE for OpenAI, the named events of the Responses and Messages APIs).
//! Response headers say what happened: `X-Keel-Repair` (`none`, `fixed-syntax,coerced-types`,
//! `reasked`, `canned`, …) and `X-Keel-Attempts`.
//!
//! Takes a request that asks for JSON and its [`Forward`]; sends it through the attempts (holding
//! each answering target's breaker permit until the answer is judged); answers by itself with the
//! validated answer, the canned one, or 422.

use std::sync::Arc;
use std::time::Instant;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use keel_repair::{CompiledSchema, RepairError};
use keel_types::{FailureClass, TargetId};
use serde_json::{Map, Value, json};

use crate::admission::{KEEL_QUEUE_WAIT, set_queue_wait};
use crate::answer::Kind;
use crate::attempts::{Call, Forward, KEEL_ATTEMPTS, KEEL_TARGET, Payload, Sent, send};
use crate::endpoint::Endpoint;
use crate::error::{InDialect, ProxyError};
use crate::relay::record;
use crate::state::Gateway;
use crate::traces::{Stage, context_of, within};

/// Response header: what the guard did to the answer.
const KEEL_REPAIR: http::HeaderName = http::HeaderName::from_static("x-keel-repair");
/// How much of a bad answer is quoted back to the model in a re-ask.
const QUOTED_ANSWER_CHARS: usize = 4000;

/// A request that asks for structured output, as the guard handles it.
pub(crate) struct Structured {
    kind: Kind,
    /// The client's request body.
    body: Map<String, Value>,
    /// What the answer must satisfy; `None` means any JSON object or array.
    schema: Option<Arc<Value>>,
    /// The route's answer of last resort.
    canned: Option<Arc<Value>>,
    /// The client asked for a streamed answer.
    stream: bool,
    /// OpenAI `stream_options.include_usage`.
    include_usage: bool,
}

impl Structured {
    /// The structured-output part of a request, when the guard should handle it.
    pub(crate) fn detect(gateway: &Gateway, endpoint: Endpoint, forward: &Forward) -> Option<Structured> {
        let config = &gateway.config().guard;
        if !config.enabled {
            return None;
        }
        let kind = Kind::of(endpoint)?;
        let Payload::Bytes(bytes) = &forward.payload else { return None };
        if !crate::attempts::mentions_format(bytes) {
            return None;
        }
        let body: Map<String, Value> = serde_json::from_slice(bytes).ok()?;
        let requested = kind.requested_schema(&body)?;
        if kind.is_load_only(&body) {
            return None;
        }
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(kind.streams_by_default());
        if stream && !config.buffer_streams {
            return None;
        }
        let include_usage =
            body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
        let route = gateway.inner.routes.resolve(&forward.requested_model);
        let schema = match requested {
            Some(schema) => Some(Arc::new(schema)),
            None => route.and_then(|r| r.schema.clone()),
        };
        let canned = route.and_then(|r| r.canned.clone());
        Some(Structured { kind, body, schema, canned, stream, include_usage })
    }

    /// The request body as sent upstream: never streamed.
    fn upstream_body(&self) -> Bytes {
        unstreamed(self.body.clone())
    }

    /// The request asked again, with the bad answer and what was wrong with it.
    fn reask_body(&self, answer: &str, error: &RepairError) -> Bytes {
        let quoted: String = answer.chars().take(QUOTED_ANSWER_CHARS).collect();
        // An empty assistant turn is refused by some APIs (Anthropic's).
        let quoted = if quoted.is_empty() { "(an empty answer)".to_owned() } else { quoted };
        let shape = match &self.schema {
            Some(schema) => format!("JSON that matches this JSON Schema: {schema}"),
            None => "a JSON object".to_owned(),
        };
        let feedback = format!(
            "Your previous answer could not be used: {error}. Reply again with only {shape}. \
             No prose, no code fences, no comments."
        );
        let mut body = self.body.clone();
        append_reask(self.kind, &mut body, &quoted, &feedback);
        unstreamed(body)
    }
}

/// A request body as sent upstream: `stream: false`, no `stream_options`.
fn unstreamed(mut body: Map<String, Value>) -> Bytes {
    body.insert("stream".into(), Value::Bool(false));
    body.remove("stream_options");
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Adds the bad answer (`quoted`) and the `feedback` to a request, as the next turns of its
/// conversation (`messages`, Responses `input`) or, for `/api/generate`, to its prompt.
fn append_reask(kind: Kind, body: &mut Map<String, Value>, quoted: &str, feedback: &str) {
    let exchange = [json!({"role": "assistant", "content": quoted}), json!({"role": "user", "content": feedback})];
    match kind {
        Kind::OllamaChat | Kind::OpenAiChat | Kind::Messages => {
            if let Some(Value::Array(messages)) = body.get_mut("messages") {
                messages.extend(exchange);
            }
        }
        Kind::Responses => {
            let mut input = match body.remove("input") {
                Some(Value::Array(items)) => items,
                Some(Value::String(text)) => vec![json!({"role": "user", "content": text})],
                _ => Vec::new(),
            };
            input.extend(exchange);
            body.insert("input".into(), Value::Array(input));
        }
        Kind::OllamaGenerate => {
            let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or_default();
            let prompt = format!("{prompt}\n\nYour previous answer was:\n{quoted}\n\n{feedback}");
            body.insert("prompt".into(), Value::String(prompt));
            // The previous context would make the model continue its old answer.
            body.remove("context");
        }
    }
}

/// What the guard did, for the `X-Keel-Repair` header and the outcome metric.
#[derive(Debug, Default)]
struct Trail {
    /// Upstream calls made.
    attempts: u32,
    /// A target was asked again.
    reasked: bool,
    /// A later target answered after an earlier one failed.
    fell_back: bool,
    /// What was wrong with each answer, or why a target gave none.
    problems: Vec<String>,
    /// How long the calls waited in admission queues (`[admission]`), when any did.
    queue_wait: Option<std::time::Duration>,
}

impl Trail {
    fn outcome(&self, repaired: bool) -> &'static str {
        match (self.fell_back, self.reasked, repaired) {
            (true, _, _) => "fallback",
            (false, true, _) => "reasked",
            (false, false, true) => "repaired",
            (false, false, false) => "valid",
        }
    }

    /// Adds what a call's answer says it waited in an admission queue (`X-Keel-Queue-Wait-Ms`).
    fn add_queue_wait(&mut self, headers: &http::HeaderMap) {
        let waited = headers.get(KEEL_QUEUE_WAIT).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(waited) = waited {
            self.queue_wait = Some(self.queue_wait.unwrap_or_default() + std::time::Duration::from_millis(waited));
        }
    }

    fn header(&self, repair: &str) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if repair != "none" || (!self.reasked && !self.fell_back) {
            parts.push(repair);
        }
        if self.reasked {
            parts.push("reasked");
        }
        if self.fell_back {
            parts.push("fallback");
        }
        parts.join(",")
    }
}

/// Handles one structured-output request from the first call to the final answer.
pub(crate) async fn guard(
    gateway: &Gateway,
    call: Call,
    endpoint: Endpoint,
    forward: Forward,
    structured: Structured,
) -> Response {
    let schema = match structured.schema.as_deref().map(|s| gateway.inner.repairer.cache().get(s)).transpose() {
        Ok(schema) => schema,
        Err(err) => return InDialect(endpoint.dialect, ProxyError::BadSchema(err.to_string())).into_response(),
    };
    let mut guarding = Guarding {
        gateway,
        endpoint,
        model_label: crate::request_metrics::shortened_model(&forward.requested_model),
        call,
        forward,
        structured,
        schema,
        trail: Trail::default(),
    };
    let first_body = guarding.structured.upstream_body();
    let mut body = first_body.clone();
    // The targets of the next call (all of them at first; one target while re-asking it).
    let mut next_targets = guarding.forward.targets.clone();
    let mut asked_again = 0;
    loop {
        let reask = if asked_again > 0 { Stage::start(gateway.tracing(), "reask") } else { None };
        let asked = within(context_of(&reask), guarding.ask(&next_targets, &body)).await;
        drop(reask);
        let (target, verdict) = match asked {
            Asked::Answered(target, verdict) => (target, verdict),
            Asked::KeelAnswered(response) => return with_queue_wait(guarding.trail.queue_wait, response),
            Asked::NoTarget => break,
        };
        match verdict {
            Verdict::Done(response) => return with_queue_wait(guarding.trail.queue_wait, response),
            Verdict::Invalid(text, err) if asked_again < gateway.config().guard.reasks => {
                asked_again += 1;
                metrics::counter!(keel_telemetry::names::STRUCTURED_REASKS_TOTAL, "route" => endpoint.label)
                    .increment(1);
                guarding.trail.reasked = true;
                body = guarding.structured.reask_body(&text, &err);
                next_targets = vec![target];
                continue;
            }
            Verdict::Invalid(..) | Verdict::Failed => {}
        }
        // This target is done: the next one in the route's order, with the original request.
        let targets = &guarding.forward.targets;
        let position = targets.iter().position(|t| *t == target).map_or(targets.len(), |p| p + 1);
        next_targets = targets.get(position..).unwrap_or_default().to_vec();
        if next_targets.is_empty() {
            break;
        }
        guarding.trail.fell_back = true;
        asked_again = 0;
        body = first_body.clone();
    }
    let waited = guarding.trail.queue_wait;
    with_queue_wait(waited, guarding.give_up())
}

/// The final response with `X-Keel-Queue-Wait-Ms` when any call waited (`waited`, in all).
fn with_queue_wait(waited: Option<std::time::Duration>, mut response: Response) -> Response {
    set_queue_wait(&mut response, waited);
    response
}

/// One structured-output request being guarded.
struct Guarding<'a> {
    gateway: &'a Gateway,
    endpoint: Endpoint,
    /// The requested model as a metrics label.
    model_label: String,
    call: Call,
    /// The route's targets, in fallback order.
    forward: Forward,
    structured: Structured,
    schema: Option<Arc<CompiledSchema>>,
    trail: Trail,
}

/// What asking the targets gave.
enum Asked {
    /// A target answered: which, and what the answer is worth.
    Answered(TargetId, Verdict),
    /// keel answered itself (every target out) before any answer was judged: the client's answer.
    KeelAnswered(Response),
    /// No target answered after earlier answers were judged unusable.
    NoTarget,
}

/// What one target's answer is worth.
enum Verdict {
    /// The client's answer: valid (as written or repaired), a tool call, or the upstream's own
    /// error to a first call.
    Done(Response),
    /// Not valid JSON for the schema: its text and why (it may be asked again).
    Invalid(String, RepairError),
    /// An error answer or an unreadable one.
    Failed,
}

impl Guarding<'_> {
    /// Sends `body` through the attempts to `targets` (holding the answering target's breaker
    /// permit) and judges the answer.
    async fn ask(&mut self, targets: &[TargetId], body: &Bytes) -> Asked {
        self.trail.attempts += 1;
        let started = Instant::now();
        let call = Call {
            method: self.call.method.clone(),
            headers: self.call.headers.clone(),
            id: self.call.id.clone(),
            started: self.call.started,
            hold_permit: true,
            continuing: None,
            ticket: self.call.ticket.clone(),
        };
        let forward = Forward {
            targets: targets.to_vec(),
            route_model: self.forward.route_model.clone(),
            requested_model: self.forward.requested_model.clone(),
            path_and_query: self.forward.path_and_query.clone(),
            payload: Payload::Bytes(body.clone()),
            stream: false,
            withheld: Vec::new(),
        };
        let sent = send(self.gateway, call, self.endpoint, forward).await;
        self.trail.add_queue_wait(sent.response.headers());
        let status = sent.response.status();
        let Some(target) = sent.answered.and_then(|i| targets.get(i).cloned()) else {
            // Keel's own answer (every target out): nothing more to try.
            if self.trail.problems.is_empty() {
                return Asked::KeelAnswered(sent.response);
            }
            self.trail.problems.push(format!("no further target could answer ({status})"));
            return Asked::NoTarget;
        };
        let key = crate::routing::breaker_key(&target, &self.forward.route_model, &self.forward.requested_model);
        let verdict = self.judge(&key, sent, started).await;
        Asked::Answered(target, verdict)
    }

    /// Judges one target's answer, records it against the target's breaker, and notes what was
    /// wrong with it.
    async fn judge(&mut self, key: &str, sent: Sent, started: Instant) -> Verdict {
        let status = sent.response.status();
        if !status.is_success() {
            record(sent.permit, FailureClass::from_status(status.as_u16()), started.elapsed());
            if self.trail.problems.is_empty() {
                // The upstream's own error (unknown model, bad request): the client's to see.
                return Verdict::Done(sent.response);
            }
            self.trail.problems.push(format!("{key}: answered {status}"));
            return Verdict::Failed;
        }
        let answering = sent.response.headers().get(KEEL_TARGET).cloned();
        let Some(mut answer) = read_answer(sent.response, self.gateway.config().guard.max_answer_bytes).await else {
            let failure = FailureClass::StreamBroken;
            record(sent.permit, Some(failure), started.elapsed());
            self.trail.problems.push(format!("{key}: the answer was not readable JSON ({failure})"));
            return Verdict::Failed;
        };
        let (text, called_tools) = self.structured.kind.content(&answer);
        if called_tools {
            // A tool call is not the structured answer; the agent handles it.
            record(sent.permit, None, started.elapsed());
            return Verdict::Done(respond(&self.structured, answer, answering, "none".into(), self.trail.attempts));
        }
        let text = text.unwrap_or_default().into_owned();
        let stage = Stage::start(self.gateway.tracing(), "repair");
        let repaired = self.gateway.inner.repairer.repair_compiled(&text, self.schema.as_deref());
        if let Some(stage) = &stage {
            match &repaired {
                Ok(repaired) => stage.set("keel.repair", repaired.report().header_value()),
                Err(err) => stage.failed("invalid_output", err.to_string()),
            }
        }
        drop(stage);
        match repaired {
            Ok(repaired) => {
                record(sent.permit, None, started.elapsed());
                let header = self.repaired(key, repaired.report());
                self.structured.kind.set_content(&mut answer, repaired.text());
                Verdict::Done(respond(&self.structured, answer, answering, header, self.trail.attempts))
            }
            Err(err) => {
                record(sent.permit, Some(FailureClass::InvalidOutput), started.elapsed());
                tracing::warn!(target = %key, error = %err, kind = err.kind(), "structured answer invalid");
                self.trail.problems.push(format!("{key}: {err}"));
                Verdict::Invalid(text, err)
            }
        }
    }

    /// Counts and logs a valid answer; its `X-Keel-Repair` header.
    fn repaired(&self, key: &str, report: &keel_repair::Report) -> String {
        count(&self.model_label, self.endpoint, self.trail.outcome(!report.is_clean()));
        for (strategy, n) in &report.counts {
            metrics::counter!(keel_telemetry::names::REPAIR_FIXES_TOTAL, "strategy" => strategy.as_str(), "model" => metrics_model(&self.model_label)).increment(*n);
        }
        if !report.is_clean() {
            tracing::info!(target = %key, repair = %report.header_value(), fixes = report.total(), "structured answer repaired");
        }
        self.trail.header(&report.header_value())
    }

    /// No target gave a usable answer: the route's canned value, else 422 naming what was wrong.
    fn give_up(self) -> Response {
        let Guarding { gateway, endpoint, model_label, forward, structured, schema, trail, .. } = self;
        let problems = trail.problems.join("; ");
        if let Some(response) = canned(&structured, schema.as_deref(), &forward.requested_model, &trail) {
            tracing::warn!(model = %model_label, problems = %problems, "answered from the canned value");
            count(&model_label, endpoint, "canned");
            if let Some(log) = &gateway.inner.incidents {
                log.structured_failed(&model_label, "canned", &problems);
            }
            return response;
        }
        count(&model_label, endpoint, "failed");
        if let Some(log) = &gateway.inner.incidents {
            log.structured_failed(&model_label, "failed", &problems);
        }
        let error = ProxyError::InvalidOutput {
            model: forward.requested_model,
            attempts: trail.attempts,
            problems: trail.problems,
        };
        tracing::warn!(error = %error, "no valid structured answer");
        let mut response = InDialect(endpoint.dialect, error).into_response();
        response.headers_mut().insert(KEEL_ATTEMPTS, HeaderValue::from(trail.attempts));
        response
    }
}

fn count(model: &str, endpoint: Endpoint, outcome: &'static str) {
    metrics::counter!(keel_telemetry::names::STRUCTURED_OUTPUTS_TOTAL, "route" => endpoint.label, "model" => metrics_model(model), "outcome" => outcome)
        .increment(1);
}

/// The model's metrics label, bounded like the request metrics' (a name that never got an answer
/// shares `other`): the structured-output series are labelled by the model the client sent.
fn metrics_model(model: &str) -> String {
    crate::request_metrics::model_label(model, false).to_owned()
}

/// Reads a whole answer (bounded) as JSON; `None` when it broke: unreadable, not JSON, or the
/// error object a relayed body that broke carries instead of the answer.
async fn read_answer(response: Response, limit: usize) -> Option<Value> {
    crate::answer::read_json(response, limit)
        .await
        .filter(|value| value.get("error").is_none() || value.get("model").is_some())
}

/// The route's canned answer, when it satisfies the request's schema.
fn canned(structured: &Structured, schema: Option<&CompiledSchema>, model: &str, trail: &Trail) -> Option<Response> {
    let value = structured.canned.as_deref()?;
    if let Some(schema) = schema {
        let problems = schema.problems(value, 4);
        if !problems.is_empty() {
            tracing::warn!(problems = %problems.join("; "), "the route's canned answer does not fit this request's schema");
            return None;
        }
    }
    let text = value.to_string();
    let answer = crate::answer::synthetic(structured.kind, &structured.body, model, &text);
    Some(respond(structured, answer, Some(HeaderValue::from_static("keel:canned")), "canned".into(), trail.attempts))
}

/// The final answer, whole or re-streamed as the client asked.
fn respond(
    structured: &Structured,
    answer: Value,
    answering: Option<HeaderValue>,
    repair: String,
    attempts: u32,
) -> Response {
    let (content_type, body) = if structured.stream {
        crate::answer::stream_chunks(structured.kind, structured.include_usage, answer)
    } else {
        ("application/json; charset=utf-8", Bytes::from(answer.to_string()))
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(answering) = answering {
        headers.insert(KEEL_TARGET, answering);
    }
    if let Ok(value) = HeaderValue::from_str(&repair) {
        headers.insert(KEEL_REPAIR, value);
    }
    if attempts > 1 {
        headers.insert(KEEL_ATTEMPTS, HeaderValue::from(attempts));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trail_header_names_every_step() {
        let mut trail = Trail::default();
        assert_eq!(trail.header("none"), "none");
        assert_eq!(trail.header("fixed-syntax"), "fixed-syntax");
        trail.reasked = true;
        assert_eq!(trail.header("none"), "reasked");
        trail.fell_back = true;
        assert_eq!(trail.header("coerced-types"), "coerced-types,reasked,fallback");
        assert_eq!(trail.outcome(true), "fallback");
    }
}
