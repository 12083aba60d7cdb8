//! A runbook's words written by a model: the prompt (the evidence, compact enough for a
//! 4,096-token context), the JSON schema of [`Content`] the answer must meet, and the checks an
//! answer passes before it replaces the template's words.

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::content::Content;
use super::evidence::{Evidence, cut};
use super::placeholders;

/// The longest prompt sent, in bytes (about 2,000 tokens: the rest of a 4,096-token context is
/// left for the answer).
pub const MAX_PROMPT_BYTES: usize = 7_000;

/// Something that asks a model for JSON: keel's own pipeline (so the answer is repaired and
/// validated like any structured-output request).
pub trait ModelWriter: Send + Sync {
    /// Asks the model route `route` to answer `prompt` (after `system`) with JSON matching
    /// `schema`; the parsed JSON, or why there is none.
    fn ask<'a>(
        &'a self,
        route: &'a str,
        system: &'a str,
        prompt: String,
        schema: Value,
    ) -> BoxFuture<'a, Result<Value, String>>;
}

/// What the model is told it is.
pub const SYSTEM: &str = "You write incident runbooks for a small business that runs local LLM servers (Ollama) behind a proxy called keel. \
Answer only with JSON matching the schema. Use only facts from the evidence; use the addresses and names it gives in commands. \
If the evidence does not decide the cause, set cause.known to false, list the candidate causes in cause.text and give in cause.tell_apart the one check that tells them apart. \
Write for a shop owner reading it in the morning: short, plain sentences.";

/// The JSON schema the model's answer must meet.
pub fn schema() -> Value {
    let text = json!({"type": "string", "minLength": 1});
    let list_of =
        |item: Value, min: u64, max: u64| json!({"type": "array", "items": item, "minItems": min, "maxItems": max});
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    object(
        json!({
            "what_broke": text,
            "affected": text,
            "keel_did": text,
            "todo": list_of(text.clone(), 0, 3),
            "cause": object(json!({"known": {"type": "boolean"}, "text": text, "tell_apart": {"type": ["string", "null"]}}), &["known", "text"]),
            "failure_modes": list_of(object(json!({"name": text, "signs": text, "fix": text}), &["name", "signs", "fix"]), 1, 6),
            "alerts": list_of(object(json!({"name": text, "when": text}), &["name", "when"]), 1, 4),
            "response": list_of(object(json!({"action": text, "command": {"type": ["string", "null"]}}), &["action"]), 1, 8),
            "health_checks": list_of(object(json!({"command": text, "expect": text}), &["command", "expect"]), 1, 4),
        }),
        &[
            "what_broke",
            "affected",
            "keel_did",
            "todo",
            "cause",
            "failure_modes",
            "alerts",
            "response",
            "health_checks",
        ],
    )
}

/// The Ollama `/api/chat` body that asks `route` for the runbook: the schema as `format`, so
/// keel's structured-output guard repairs and validates the answer; not streamed, temperature 0.
pub fn chat_request(route: &str, system: &str, prompt: &str, schema: Value) -> Value {
    json!({
        "model": route,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        "format": schema,
        "stream": false,
        "options": {"temperature": 0},
    })
}

/// The JSON a `/api/chat` answer carries in its message content.
pub fn answer_content(body: &[u8]) -> Result<Value, String> {
    let answer: Value = serde_json::from_slice(body).map_err(|error| format!("the answer is not JSON: {error}"))?;
    let content = answer["message"]["content"].as_str().ok_or("the answer has no message content")?;
    serde_json::from_str(content).map_err(|error| format!("the model's content is not JSON: {error}"))
}

/// The prompt: the evidence, at most [`MAX_PROMPT_BYTES`].
pub fn prompt(evidence: &Evidence) -> String {
    let incident = &evidence.incident;
    let mut lines =
        vec![format!("Incident {} ({}), status {}: {}", incident.id, incident.kind, incident.status, incident.title)];
    if let Some(name) = &incident.upstream {
        match evidence.deployment.upstream(name) {
            Some(upstream) => lines.push(format!("Upstream {name}: {} server at {}", upstream.kind, upstream.address)),
            None => lines.push(format!("Upstream {name}")),
        }
    }
    if let Some(model) = &incident.model {
        lines.push(format!("Model: {model}"));
    }
    lines.push(format!("keel listens at {}", evidence.deployment.keel_url));
    for route in &evidence.deployment.routes {
        lines.push(format!("Route {} -> {}", route.model, route.targets.join(" -> ")));
    }
    for entry in &evidence.playbook {
        lines.push(format!("A person fixed this before with: {}", cut(&entry.fix, 200)));
    }
    for check in &evidence.checks {
        lines.push(format!(
            "Check `{}` ({}): {}",
            check.command,
            if check.ok { "ok" } else { "failing" },
            cut(&check.output, 300)
        ));
    }
    let recent = evidence.events.len().saturating_sub(12);
    for event in &evidence.events[recent..] {
        lines.push(format!("Event {}: {}", event.event, cut(&event.detail.to_string(), 250)));
    }
    for (role, content) in evidence.transcript.iter().rev().take(6).rev() {
        lines.push(format!("Transcript {role}: {}", cut(content, 200)));
    }
    let mut prompt = String::from("Write the runbook for this incident.\n\nEvidence:\n");
    for line in lines {
        if prompt.len() + line.len() + 1 > MAX_PROMPT_BYTES {
            break;
        }
        prompt.push_str(&line);
        prompt.push('\n');
    }
    prompt
}

/// The model's answer as [`Content`], if it is usable: it has the schema's shape, no field is
/// blank and nothing reads like a placeholder.
pub fn accept(answer: Value) -> Result<Content, String> {
    let content: Content = serde_json::from_value(answer)
        .map_err(|error| format!("the answer does not have the runbook's shape: {error}"))?;
    if content.todo.len() > 3 {
        return Err(format!("the answer lists {} things to do; at most 3", content.todo.len()));
    }
    if content.failure_modes.is_empty() || content.response.is_empty() || content.health_checks.is_empty() {
        return Err("the answer leaves a section empty".to_owned());
    }
    let value = serde_json::to_value(&content).unwrap_or_default();
    let mut texts = Vec::new();
    strings(&value, &mut texts);
    if let Some(found) = texts.iter().find_map(|text| placeholders::find(text)) {
        return Err(format!("the answer holds placeholder text ({found:?})"));
    }
    Ok(content)
}

/// Every string inside `value`.
fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => out.push(text),
        Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
        Value::Object(map) => map.values().for_each(|item| strings(item, out)),
        _ => {}
    }
}
