//! API dialects: Ollama's native `/api/*` and the OpenAI-compatible `/v1/*`.

use serde::{Deserialize, Serialize};

/// The wire dialect of an endpoint or an upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Ollama's native API (`/api/chat`, `/api/generate`, ...): NDJSON streams,
    /// errors as `{"error": "..."}`, `stream` defaults to `true`.
    #[default]
    Ollama,
    /// The OpenAI-compatible API (`/v1/chat/completions`, ...): SSE streams,
    /// errors as `{"error": {"message", "type", "param", "code"}}`, `stream` defaults to `false`.
    #[serde(rename = "openai")]
    OpenAi,
    /// The Anthropic Messages API (`/v1/messages`): SSE streams of named events
    /// (`message_start` … `message_stop`), errors as `{"type": "error", "error": {"type",
    /// "message"}}`, `stream` defaults to `false`. As an upstream dialect: the Anthropic API
    /// itself (`x-api-key`, `anthropic-version`).
    Anthropic,
}

impl Dialect {
    /// The dialect of a request path: `/v1/messages...` is Anthropic, every other `/v1/...`
    /// OpenAI, everything else Ollama.
    pub fn of_path(path: &str) -> Dialect {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Dialect::Anthropic
        } else if path == "/v1" || path.starts_with("/v1/") {
            Dialect::OpenAi
        } else {
            Dialect::Ollama
        }
    }

    /// Whether a request that does not say `stream` is streamed in this dialect.
    pub fn streams_by_default(self) -> bool {
        matches!(self, Dialect::Ollama)
    }

    /// The lowercase name used in config files and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Ollama => "ollama",
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_decides_dialect() {
        assert_eq!(Dialect::of_path("/v1/chat/completions"), Dialect::OpenAi);
        assert_eq!(Dialect::of_path("/v1"), Dialect::OpenAi);
        assert_eq!(Dialect::of_path("/v1/messages"), Dialect::Anthropic);
        assert_eq!(Dialect::of_path("/v1/messages/count_tokens"), Dialect::Anthropic);
        assert_eq!(Dialect::of_path("/v1/messagesx"), Dialect::OpenAi);
        assert_eq!(Dialect::of_path("/v1/responses"), Dialect::OpenAi);
        assert_eq!(Dialect::of_path("/api/chat"), Dialect::Ollama);
        assert_eq!(Dialect::of_path("/v10/x"), Dialect::Ollama);
        assert_eq!(Dialect::of_path("/"), Dialect::Ollama);
    }

    #[test]
    fn stream_defaults_differ() {
        assert!(Dialect::Ollama.streams_by_default());
        assert!(!Dialect::OpenAi.streams_by_default());
    }

    #[test]
    fn serde_names() {
        let d: Dialect = serde_json::from_str("\"openai\"").unwrap();
        assert_eq!(d, Dialect::OpenAi);
        assert_eq!(serde_json::to_string(&Dialect::Ollama).unwrap(), "\"ollama\"");
    }
}
