//! A session turn in the client's API. The store keeps messages in chat-completions form (role,
//! text, `tool_calls`, `tool` messages with their `tool_call_id`); a `/v1/messages` or
//! `/v1/responses` turn is converted to that form before it is stored, and the stored context is
//! put back into the client's request in its own API — both by the bridge's translators in
//! [`keel_upstream::translate`], so no shape is written twice.

use keel_upstream::translate::{anthropic, responses};
use serde_json::{Map, Value, json};

use crate::answer::Kind;
use crate::error::ProxyError;

/// The messages of a session request in chat form: `messages` of a chat request; an Anthropic
/// request's `system` and `messages`; a Responses request's `instructions` and `input`.
pub(super) fn chat_messages(kind: Kind, body: &Map<String, Value>) -> Result<Vec<Value>, ProxyError> {
    let chat = match kind {
        Kind::Messages => anthropic::messages_to_chat(&Value::Object(body.clone())),
        Kind::Responses => responses::responses_to_chat(&Value::Object(body.clone())),
        Kind::OllamaChat | Kind::OllamaGenerate | Kind::OpenAiChat => return plain_messages(body),
    }
    .map_err(ProxyError::Translate)?;
    Ok(chat.get("messages").and_then(Value::as_array).cloned().unwrap_or_default())
}

/// The `messages` array of a chat request.
fn plain_messages(body: &Map<String, Value>) -> Result<Vec<Value>, ProxyError> {
    match body.get("messages") {
        Some(Value::Array(messages)) => Ok(messages.clone()),
        _ => Err(ProxyError::BadSession("a session request needs a \"messages\" array".into())),
    }
}

/// Puts `context` (chat messages) into the request `body` in its API: chat `messages`; an
/// Anthropic `system` and `messages` (alternating, tool results as `tool_result` blocks); a
/// Responses `instructions` and `input` items. Every other field stays as the client sent it.
pub(super) fn put_context(kind: Kind, body: &mut Map<String, Value>, context: Vec<Value>) -> Result<(), ProxyError> {
    match kind {
        Kind::Messages => {
            let chat = json!({"model": body.get("model").cloned().unwrap_or_default(), "messages": context});
            let mut request = anthropic::chat_to_messages_request(&chat).map_err(ProxyError::Translate)?;
            set_or_remove(body, "system", request.get_mut("system").map(Value::take));
            body.insert("messages".into(), request.get_mut("messages").map(Value::take).unwrap_or_default());
        }
        Kind::Responses => {
            let (instructions, input) = responses::chat_messages_to_input(&context);
            set_or_remove(body, "instructions", instructions.map(Value::String));
            body.insert("input".into(), Value::Array(input));
        }
        Kind::OllamaChat | Kind::OllamaGenerate | Kind::OpenAiChat => {
            body.insert("messages".into(), Value::Array(context));
        }
    }
    Ok(())
}

/// A whole (not streamed) request of `kind` asking `model` with `messages`: the summarizer's.
pub(super) fn request(kind: Kind, model: &str, messages: Vec<Value>) -> Result<Value, ProxyError> {
    let mut body = Map::new();
    body.insert("model".into(), Value::String(model.to_owned()));
    body.insert("stream".into(), Value::Bool(false));
    if kind == Kind::Messages {
        body.insert("max_tokens".into(), Value::from(anthropic::DEFAULT_MAX_TOKENS));
    }
    put_context(kind, &mut body, messages)?;
    Ok(Value::Object(body))
}

/// Sets `key` to `value`, or removes it when there is none.
fn set_or_remove(body: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(value) => body.insert(key.into(), value),
        None => body.remove(key),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn anthropic_turns_go_through_chat_form_and_back() {
        let body = object(json!({"model": "m", "max_tokens": 64, "system": "Be brief.",
            "messages": [{"role": "user", "content": "hi"}]}));
        let chat = chat_messages(Kind::Messages, &body).unwrap_or_default();
        assert_eq!(
            chat,
            vec![json!({"role": "system", "content": "Be brief."}), json!({"role": "user", "content": "hi"})]
        );
        let mut sent = body.clone();
        let context = vec![json!({"role": "user", "content": "hi"}), json!({"role": "assistant", "content": "yo"})];
        assert!(put_context(Kind::Messages, &mut sent, context).is_ok());
        assert_eq!(sent.get("system"), None, "no system message in the context");
        assert_eq!(sent["max_tokens"], 64);
        assert_eq!(sent["messages"][1], json!({"role": "assistant", "content": [{"type": "text", "text": "yo"}]}));
    }

    #[test]
    fn responses_turns_go_through_chat_form_and_back() {
        let body = object(json!({"model": "m", "input": "hi", "instructions": "S", "store": false}));
        let chat = chat_messages(Kind::Responses, &body).unwrap_or_default();
        assert_eq!(chat.len(), 2);
        let mut sent = body.clone();
        assert!(put_context(Kind::Responses, &mut sent, chat[1..].to_vec()).is_ok());
        assert_eq!(sent.get("instructions"), None);
        assert_eq!(sent["input"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(sent["store"], false);
        let refused =
            chat_messages(Kind::Responses, &object(json!({"model": "m", "input": "x", "previous_response_id": "r"})));
        assert!(matches!(refused, Err(ProxyError::Translate(_))));
    }
}
