//! Model names as clients write them, and targets (an upstream plus the model it is asked for).

use serde::{Deserialize, Serialize};

/// A model name as Ollama understands it: `llama3.2` and `llama3.2:latest` are the same model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelName(String);

impl ModelName {
    /// Wraps a name exactly as given.
    pub fn new(name: impl Into<String>) -> ModelName {
        ModelName(name.into())
    }

    /// The name as the client wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with an explicit tag: `llama3.2` becomes `llama3.2:latest`. A `:` inside a
    /// registry host's port (`host:5000/m`) is not a tag.
    pub fn canonical(&self) -> String {
        let last = self.0.rsplit('/').next().unwrap_or(&self.0);
        if last.contains(':') || self.0.is_empty() { self.0.clone() } else { format!("{}:latest", self.0) }
    }

    /// Whether two names denote the same model (tag `latest` is implied when missing).
    pub fn same_model(&self, other: &str) -> bool {
        self.canonical() == ModelName::new(other).canonical()
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a routed request goes: an upstream by name, optionally asking it for a different model.
///
/// Written `local` (same model name the client asked for) or `local:qwen2.5:0.5b` (everything after
/// the first `:` is the model, so model tags survive).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetId {
    /// The `[[upstream]]` name.
    pub upstream: String,
    /// The model to ask that upstream for; `None` keeps the client's model name.
    pub model: Option<String>,
}

/// A target string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetIdError {
    /// The string was empty or started with `:`.
    #[error("target {0:?} has no upstream name (write \"upstream\" or \"upstream:model\")")]
    MissingUpstream(String),
    /// The string ended with `:`.
    #[error("target {0:?} has an empty model after ':' (write \"upstream\" or \"upstream:model\")")]
    EmptyModel(String),
}

impl TargetId {
    /// Parses `upstream` or `upstream:model`.
    pub fn parse(text: &str) -> Result<TargetId, TargetIdError> {
        let text = text.trim();
        let (upstream, model) = match text.split_once(':') {
            Some((upstream, model)) => (upstream, Some(model)),
            None => (text, None),
        };
        if upstream.is_empty() {
            return Err(TargetIdError::MissingUpstream(text.to_owned()));
        }
        if model == Some("") {
            return Err(TargetIdError::EmptyModel(text.to_owned()));
        }
        Ok(TargetId { upstream: upstream.to_owned(), model: model.map(str::to_owned) })
    }

    /// The model this target asks its upstream for, given the model the client requested.
    pub fn model_for<'a>(&'a self, requested: &'a str) -> &'a str {
        self.model.as_deref().unwrap_or(requested)
    }

    /// The display name `upstream:model` used in `/keel/status` and metrics.
    pub fn display_name(&self, requested: &str) -> String {
        // Joined by hand: `format!` costs several times more, and this runs on every request.
        let model = self.model_for(requested);
        let mut name = String::with_capacity(self.upstream.len() + 1 + model.len());
        name.push_str(&self.upstream);
        name.push(':');
        name.push_str(model);
        name
    }
}

impl std::fmt::Display for TargetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.model {
            Some(model) => write!(f, "{}:{}", self.upstream, model),
            None => f.write_str(&self.upstream),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn latest_is_implied() {
        assert!(ModelName::new("llama3.2").same_model("llama3.2:latest"));
        assert!(!ModelName::new("llama3.2:1b").same_model("llama3.2"));
        assert_eq!(ModelName::new("reg.io:5000/m").canonical(), "reg.io:5000/m:latest");
        assert_eq!(ModelName::new("reg.io:5000/m:q4").canonical(), "reg.io:5000/m:q4");
    }

    #[test]
    fn targets_parse() {
        assert_eq!(TargetId::parse("local").unwrap(), TargetId { upstream: "local".into(), model: None });
        let t = TargetId::parse("local:qwen2.5:0.5b").unwrap();
        assert_eq!(t.upstream, "local");
        assert_eq!(t.model.as_deref(), Some("qwen2.5:0.5b"));
        assert_eq!(t.display_name("llama3.2"), "local:qwen2.5:0.5b");
        assert_eq!(TargetId::parse("local").unwrap().display_name("llama3.2"), "local:llama3.2");
        assert!(matches!(TargetId::parse(":x"), Err(TargetIdError::MissingUpstream(_))));
        assert!(matches!(TargetId::parse("x:"), Err(TargetIdError::EmptyModel(_))));
    }

    proptest! {
        #[test]
        fn target_display_round_trips(up in "[a-z][a-z0-9_-]{0,10}", model in proptest::option::of("[a-z0-9.]{1,8}(:[a-z0-9.]{1,6})?")) {
            let t = TargetId { upstream: up, model };
            prop_assert_eq!(TargetId::parse(&t.to_string()).unwrap(), t);
        }
    }
}
