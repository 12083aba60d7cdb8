//! What a managed session sends to the model: the stored conversation within the token budget.
//!
//! Complete messages only (an answer cut off by a crash is not context). System messages always
//! go; then the newest messages that fit; the newest message always goes. When older messages do
//! not fit, `[sessions] overflow` decides: `sliding_window` leaves them out, `summarize` puts a
//! summary of them in their place (written by the model once, stored as a message and reused
//! until the window moves; a deterministic truncation when the model cannot write it), `error`
//! refuses the request.

use keel_session::Message;

pub(crate) use crate::config::raw::SessionOverflow as Overflow;
use serde_json::{Value, json};

/// Idempotency-key prefix of stored summaries: `keel-summary/<last summarized seq>`.
pub(super) const SUMMARY_KEY: &str = "keel-summary/";
/// Share of the budget kept free for the summary when summarizing.
const SUMMARY_SHARE: u64 = 4;
/// Bytes of each left-out message kept by the deterministic truncation.
const TRUNCATED_BYTES: usize = 160;

/// The split of a session's messages into what fits and what does not.
pub(super) struct Plan<'a> {
    /// What fits, in order.
    pub(super) kept: Vec<&'a Message>,
    /// What does not fit, in order (never system messages).
    pub(super) dropped: Vec<&'a Message>,
    /// Estimated tokens of all usable messages.
    pub(super) total_tokens: u64,
    /// Estimated tokens of the kept messages.
    pub(super) kept_tokens: u64,
}

/// Whether a stored message is one of keel's summaries.
pub(super) fn is_summary(message: &Message) -> bool {
    message.idempotency_key.as_deref().is_some_and(|key| key.starts_with(SUMMARY_KEY))
}

/// Splits the stored conversation for `budget` tokens (0 = no limit); with `summarize` and
/// `hybrid`, part of the budget is kept free for the summary, and `hybrid` keeps at most
/// `keep_newest` non-system messages.
pub(super) fn plan(stored: &[Message], budget: u64, overflow: Overflow, keep_newest: usize) -> Plan<'_> {
    let budget = match overflow {
        Overflow::Summarize | Overflow::Hybrid if budget > 0 => budget - budget / SUMMARY_SHARE,
        _ => budget,
    };
    let limit = if overflow == Overflow::Hybrid { keep_newest.max(1) } else { usize::MAX };
    let usable: Vec<&Message> = stored.iter().filter(|m| m.complete && !is_summary(m)).collect();
    let mut keep = vec![false; usable.len()];
    let mut used: u64 = 0;
    for (i, message) in usable.iter().enumerate() {
        if message.role == "system" {
            keep[i] = true;
            used += cost(message);
        }
    }
    let mut full = false;
    let mut newest = 0;
    for (i, message) in usable.iter().enumerate().rev() {
        if keep[i] {
            continue;
        }
        let next = used + cost(message);
        if full || newest >= limit || (budget > 0 && next > budget && i + 1 != usable.len()) {
            full = true;
            continue;
        }
        keep[i] = true;
        used = next;
        newest += 1;
    }
    let total_tokens = usable.iter().map(|m| cost(m)).sum();
    let kept_tokens = used;
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for (message, keep) in usable.into_iter().zip(keep) {
        if keep { kept.push(message) } else { dropped.push(message) }
    }
    Plan { kept, dropped, total_tokens, kept_tokens }
}

/// Tokens a message costs: the model's count when it reported one, else 4 bytes per token, plus
/// a little for the role.
pub(super) fn cost(message: &Message) -> u64 {
    let tokens = if message.token_count > 0 { message.token_count } else { super::estimate_tokens(&message.content) };
    tokens + 4
}

/// Messages as the chat APIs take them.
pub(super) fn as_values(messages: &[&Message]) -> Vec<Value> {
    messages.iter().map(|m| as_value(m)).collect()
}

fn as_value(message: &Message) -> Value {
    // A handoff is a note for the model, in the one role every chat template knows for notes.
    if message.role == keel_session::HANDOFF_ROLE {
        return json!({"role": "system", "content": format!("Handoff {}", message.content)});
    }
    let mut value = json!({"role": message.role, "content": message.content});
    match (&message.tool_calls, value.as_object_mut()) {
        // A tool result's reference to its call, stored in the tool-calls column.
        (Some(Value::Object(reference)), Some(object)) if message.role == "tool" => {
            object.extend(reference.iter().map(|(key, value)| (key.clone(), value.clone())));
        }
        (Some(calls), _) => value["tool_calls"] = calls.clone(),
        (None, _) => {}
    }
    value
}

/// Whether a chat message is a system message.
pub(super) fn is_system(message: &Value) -> bool {
    message.get("role").and_then(Value::as_str) == Some("system")
}

/// Whether a chat message is a system message with the text of a complete stored one.
pub(super) fn is_stored_system(message: &Value, stored: &[Message]) -> bool {
    is_system(message)
        && message.get("content").and_then(Value::as_str).is_some_and(|text| {
            stored.iter().any(|m| m.complete && m.role == "system" && !is_summary(m) && m.content == text)
        })
}

/// What a `tool` message says about the call it answers (`tool_call_id`, Ollama's `tool_name`),
/// kept in the message's tool-calls column as an object: a tool result sent back without its
/// call's id is refused by most APIs.
pub(super) fn tool_reference(message: &Value) -> Option<Value> {
    if message.get("role").and_then(Value::as_str) != Some("tool") {
        return None;
    }
    let reference: serde_json::Map<String, Value> = ["tool_call_id", "tool_name"]
        .into_iter()
        .filter_map(|key| Some((key.to_owned(), message.get(key).filter(|v| v.is_string())?.clone())))
        .collect();
    (!reference.is_empty()).then_some(Value::Object(reference))
}

/// The kept messages with the summary of the dropped ones after the leading system messages.
pub(super) fn with_summary(plan: &Plan<'_>, summary: &str) -> Vec<Value> {
    let mut out = Vec::with_capacity(plan.kept.len() + 1);
    let leading = plan.kept.iter().take_while(|m| m.role == "system").count();
    out.extend(plan.kept[..leading].iter().map(|m| as_value(m)));
    out.push(json!({"role": "system", "content": format!("Summary of the earlier conversation: {summary}")}));
    out.extend(plan.kept[leading..].iter().map(|m| as_value(m)));
    out
}

/// The request that asks the model to summarize the dropped messages.
pub(super) fn summary_request(dropped: &[&Message]) -> Vec<Value> {
    let mut transcript = String::new();
    for message in dropped {
        transcript.push_str(&message.role);
        transcript.push_str(": ");
        transcript.push_str(&message.content);
        transcript.push('\n');
    }
    vec![
        json!({"role": "system", "content": "Summarize the conversation below in at most 120 words. Keep names, numbers, \
            decisions and open questions. Answer with the summary only."}),
        json!({"role": "user", "content": transcript}),
    ]
}

/// The summary when the model cannot write one: the start of each dropped message.
pub(super) fn truncation(dropped: &[&Message]) -> String {
    let mut out = String::from("(earlier messages, shortened) ");
    for message in dropped {
        let mut end = message.content.len().min(TRUNCATED_BYTES);
        while !message.content.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&format!("{}: {}", message.role, &message.content[..end]));
        if end < message.content.len() {
            out.push('…');
        }
        out.push_str(" | ");
    }
    out.truncate(out.trim_end_matches(" | ").len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, role: &str, content: &str, complete: bool) -> Message {
        Message {
            session_id: "s".into(),
            seq,
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            token_count: 0,
            idempotency_key: None,
            complete,
            created_at: 0,
        }
    }

    fn contents(messages: &[&Message]) -> Vec<String> {
        messages.iter().map(|m| m.content.clone()).collect()
    }

    #[test]
    fn keeps_system_and_the_newest_that_fit() {
        let long = "x".repeat(400); // ~100 tokens
        let stored = vec![
            message(1, "system", "be brief", true),
            message(2, "user", &long, true),
            message(3, "assistant", &long, true),
            message(4, "assistant", "", false),
            message(5, "user", "and now?", true),
        ];
        let all = plan(&stored, 0, Overflow::SlidingWindow, 8);
        assert_eq!(all.kept.len(), 4, "incomplete answers are left out");
        assert!(all.dropped.is_empty());
        let window = plan(&stored, 120, Overflow::SlidingWindow, 8);
        assert_eq!(contents(&window.kept), vec!["be brief".to_owned(), long.clone(), "and now?".to_owned()]);
        assert_eq!(window.dropped.len(), 1);
        let tiny = plan(&stored, 1, Overflow::SlidingWindow, 8);
        assert_eq!(contents(&tiny.kept), vec!["be brief".to_owned(), "and now?".to_owned()], "system and newest go");
    }

    #[test]
    fn a_message_that_does_not_fit_ends_the_window() {
        // An old short message must not jump over a newer one that did not fit.
        let stored = vec![
            message(1, "user", "old", true),
            message(2, "user", &"y".repeat(400), true),
            message(3, "user", "new", true),
        ];
        let window = plan(&stored, 20, Overflow::SlidingWindow, 8);
        assert_eq!(contents(&window.kept), vec!["new".to_owned()]);
        assert_eq!(window.dropped.len(), 2);
    }

    #[test]
    fn summaries_are_placed_after_the_system_prompt_and_never_planned() {
        let mut summary = message(4, "system", "they talked", true);
        summary.idempotency_key = Some(format!("{SUMMARY_KEY}2"));
        let stored = vec![
            message(1, "system", "sys", true),
            message(2, "user", "a", true),
            message(3, "user", "b", true),
            summary,
        ];
        let all = plan(&stored, 0, Overflow::Summarize, 8);
        assert_eq!(all.kept.len(), 3);
        let values = with_summary(&all, "S");
        assert_eq!(values[0]["content"], "sys");
        assert_eq!(values[1]["content"], "Summary of the earlier conversation: S");
        assert_eq!(values.len(), 4);
    }

    #[test]
    fn hybrid_keeps_the_newest_n_and_gives_the_rest_to_the_summary() {
        let stored: Vec<Message> = (1..=6).map(|seq| message(seq, "user", &format!("m{seq}"), true)).collect();
        let hybrid = plan(&stored, 0, Overflow::Hybrid, 2);
        assert_eq!(contents(&hybrid.kept), vec!["m5".to_owned(), "m6".to_owned()]);
        assert_eq!(hybrid.dropped.len(), 4);
        assert!(plan(&stored, 0, Overflow::Summarize, 2).dropped.is_empty(), "summarize only drops for the budget");
    }

    #[test]
    fn truncation_is_deterministic_and_cuts_on_char_boundaries() {
        let long = "é".repeat(200);
        let binding = message(1, "user", &long, true);
        let text = truncation(&[&binding]);
        assert!(text.starts_with("(earlier messages, shortened) user: é"));
        assert!(text.ends_with('…'));
        assert_eq!(text, truncation(&[&binding]));
    }
}
