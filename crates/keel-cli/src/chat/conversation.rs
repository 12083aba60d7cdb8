//! What one `keel chat` conversation has said and what each request carries: the whole history,
//! or only the new message in a session keel keeps; session ids checked like keel checks them.

use anyhow::bail;
use serde_json::{Value, json};

/// One chat message as Ollama's `/api/chat` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub(crate) role: String,
    /// The text.
    pub(crate) content: String,
}

impl ChatMessage {
    /// A message with this role and text.
    pub(crate) fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage { role: role.to_owned(), content: content.into() }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({"role": self.role, "content": self.content})
    }
}

/// Checks a session id the way keel does.
pub(super) fn check_session_id(id: &str) -> anyhow::Result<()> {
    let valid = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !valid {
        bail!("--session-id {id:?}: use 1 to 128 letters, digits, '.', '_', ':' or '-'");
    }
    Ok(())
}

/// A fresh session id (UUID v7: time-ordered).
pub(super) fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What one conversation has said, and what each request must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conversation {
    /// The session keel keeps (managed mode), or `None` when this process keeps the history.
    session: Option<String>,
    /// The `--system` message.
    system: Option<String>,
    /// Session mode: the system message went out in this session already.
    system_sent: bool,
    /// The turns so far. Without a session this is what every request carries (after the
    /// system message); with one it is only this process's record for `/history` fallbacks.
    turns: Vec<ChatMessage>,
}

impl Conversation {
    /// A conversation in `session` (or in memory), with an optional system message.
    pub(crate) fn new(session: Option<String>, system: Option<String>) -> Self {
        Conversation { session, system, system_sent: false, turns: Vec::new() }
    }

    /// The session id, in session mode.
    pub(crate) fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The messages the request for `user` carries: the whole history without a session; only
    /// the new message (after the system message, the first time) in a session keel keeps.
    pub(crate) fn request(&self, user: &str) -> Vec<ChatMessage> {
        let mut messages = Vec::new();
        if let Some(system) = &self.system
            && (self.session.is_none() || !self.system_sent)
        {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        if self.session.is_none() {
            messages.extend(self.turns.iter().cloned());
        }
        messages.push(ChatMessage::new("user", user));
        messages
    }

    /// Records an answered turn.
    pub(crate) fn record(&mut self, user: &str, answer: String) {
        self.turns.push(ChatMessage::new("user", user));
        self.turns.push(ChatMessage::new("assistant", answer));
        self.system_sent = true;
    }

    /// Starts over: a new session (session mode) or an empty history.
    pub(crate) fn reset(&mut self) {
        if self.session.is_some() {
            self.session = Some(new_session_id());
        }
        self.system_sent = false;
        self.turns.clear();
    }

    /// The turns this process saw.
    pub(crate) fn turns(&self) -> &[ChatMessage] {
        &self.turns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_requests_carry_the_whole_history() {
        let mut chat = Conversation::new(None, Some("be brief".into()));
        assert_eq!(chat.request("a"), vec![ChatMessage::new("system", "be brief"), ChatMessage::new("user", "a")]);
        chat.record("a", "b".into());
        assert_eq!(chat.request("c").len(), 4);
        chat.reset();
        assert_eq!(chat.request("d").len(), 2);
        assert_eq!(chat.session(), None);
    }

    #[test]
    fn session_requests_carry_only_the_new_message_and_the_system_once() {
        let mut chat = Conversation::new(Some("s".into()), Some("be brief".into()));
        assert_eq!(chat.request("a").len(), 2);
        chat.record("a", "b".into());
        assert_eq!(chat.request("c"), vec![ChatMessage::new("user", "c")]);
        assert_eq!(chat.turns().len(), 2);
        chat.reset();
        let id = chat.session().unwrap().to_owned();
        assert_ne!(id, "s");
        assert!(check_session_id(&id).is_ok());
        assert_eq!(chat.request("d").len(), 2, "a new session gets the system message again");
    }

    #[test]
    fn session_ids_are_checked_like_keel_does() {
        assert!(check_session_id("chat-42:a.b_c").is_ok());
        assert!(check_session_id("").is_err());
        assert!(check_session_id("a b").is_err());
        assert!(check_session_id(&"x".repeat(129)).is_err());
    }
}
