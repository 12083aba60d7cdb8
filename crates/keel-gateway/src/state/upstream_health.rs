//! What the last health probe of an upstream found (the probes run in `probes.rs`).

use std::time::Instant;

use keel_types::ModelName;
use serde::Serialize;

/// What the last probe of an upstream found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UpstreamHealth {
    /// Whether the upstream answered the probe.
    pub(crate) ok: bool,
    /// The server's version, when it says (`/api/version`).
    pub(crate) version: Option<String>,
    /// Models in memory (Ollama `/api/ps`), with explicit tags.
    pub(crate) loaded_models: Vec<String>,
    /// Models the server has (Ollama `/api/tags`), read at the first successful probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) models: Option<Vec<String>>,
    /// Why the probe failed.
    pub(crate) error: Option<String>,
    /// How long the probe took, in milliseconds.
    pub(crate) latency_ms: u64,
    /// When the probe finished.
    #[serde(skip)]
    pub(crate) checked: Option<Instant>,
}

impl UpstreamHealth {
    /// Seconds since the probe, for status.
    pub(crate) fn age_seconds(&self) -> Option<u64> {
        self.checked.map(|at| at.elapsed().as_secs())
    }

    /// Whether the last probe saw `model` loaded.
    pub(crate) fn has_loaded(&self, model: &str) -> bool {
        let wanted = ModelName::new(model).canonical();
        self.loaded_models.contains(&wanted)
    }
}
