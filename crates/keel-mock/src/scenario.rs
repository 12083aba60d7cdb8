//! The scenario: which models the mock serves, what they answer and which faults it injects.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// What a [`crate::MockServer`] serves: models, their replies, and the faults to inject.
///
/// Usually read from a TOML file (see the crate README); every field is optional. A scenario
/// with no `[[model]]` table serves one default model, `llama3.2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Seed of the one random generator behind every random choice (fault rolls, garbling).
    pub seed: u64,
    /// Version reported by `/api/version`.
    pub version: String,
    /// Whether requests are recorded for [`crate::MockServer::requests`] (turn off for benchmarks).
    pub record_requests: bool,
    /// How many recorded requests are kept; the oldest are dropped first.
    pub max_recorded: usize,
    /// Which server the mock impersonates: which endpoints exist and how errors look.
    pub api: ApiSurface,
    /// When set, every request must carry this key (`Authorization: Bearer KEY`, or
    /// `x-api-key: KEY` with `api = "anthropic"`); others get 401 in the endpoint's dialect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Requests the impersonated server says it serves at once: `total_slots` of `GET /props`
    /// with `api = "openai"` (llama-server's `--parallel`). The mock itself serves any number.
    pub slots: u32,
    /// The models served, in listing order (`[[model]]` tables in TOML).
    #[serde(rename = "model")]
    pub models: Vec<ModelSpec>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 0,
            version: "0.12.6".to_owned(),
            record_requests: true,
            max_recorded: 10_000,
            api: ApiSurface::Ollama,
            api_key: None,
            slots: 1,
            models: vec![ModelSpec::default()],
        }
    }
}

impl Scenario {
    /// Parses a scenario from TOML text; unknown keys are rejected with a message naming them.
    pub fn from_toml_str(s: &str) -> Result<Scenario, Error> {
        let scenario: Scenario = toml::from_str(s).map_err(|e| Error::Scenario(e.to_string().trim_end().to_owned()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Parses a scenario from JSON text (same shape as the TOML form).
    pub fn from_json_str(s: &str) -> Result<Scenario, Error> {
        let scenario: Scenario = serde_json::from_str(s).map_err(|e| Error::Scenario(e.to_string()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads and parses a TOML scenario file; errors name the file.
    pub fn load(path: &Path) -> Result<Scenario, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::ReadScenario { path: path.to_path_buf(), source })?;
        Scenario::from_toml_str(&text).map_err(|e| Error::ScenarioFile {
            path: path.to_path_buf(),
            message: match e {
                Error::Scenario(m) => m,
                other => other.to_string(),
            },
        })
    }

    /// A scenario with one model `name` that always answers `reply`.
    pub fn single_model(name: &str, reply: &str) -> Scenario {
        Scenario { models: vec![ModelSpec::new(name, reply)], ..Scenario::default() }
    }

    /// Renders the scenario as TOML (the inverse of [`Scenario::from_toml_str`]).
    pub fn to_toml_string(&self) -> Result<String, Error> {
        toml::to_string(self).map_err(|e| Error::Scenario(e.to_string()))
    }

    /// Sets the seed (builder style).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Scenario {
        self.seed = seed;
        self
    }

    /// Adds a model (builder style).
    #[must_use]
    pub fn with_model(mut self, model: ModelSpec) -> Scenario {
        self.models.push(model);
        self
    }

    /// The model named `name` (tag-insensitive for `:latest`), for editing.
    pub fn model_mut(&mut self, name: &str) -> Option<&mut ModelSpec> {
        let wanted = crate::names::full_name(name);
        self.models.iter_mut().find(|m| crate::names::full_name(&m.name).eq_ignore_ascii_case(&wanted))
    }

    /// Sets the API surface (builder style).
    #[must_use]
    pub fn with_api(mut self, api: ApiSurface) -> Scenario {
        self.api = api;
        self
    }

    /// Requires an API key on every request (builder style).
    #[must_use]
    pub fn with_api_key(mut self, key: &str) -> Scenario {
        self.api_key = Some(key.to_owned());
        self
    }

    /// Checks values that parse but make no sense (rates outside 0..1, empty names, …).
    pub fn validate(&self) -> Result<(), Error> {
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err(Error::Scenario("`api_key` must not be empty (leave it out to accept any request)".to_owned()));
        }
        let mut seen: Vec<String> = Vec::with_capacity(self.models.len());
        for (i, m) in self.models.iter().enumerate() {
            if m.name.trim().is_empty() {
                return Err(Error::Scenario(format!("model #{}: `name` must not be empty", i + 1)));
            }
            let full = crate::names::full_name(&m.name).to_ascii_lowercase();
            if seen.contains(&full) {
                return Err(Error::Scenario(format!("model `{}` is defined twice", m.name)));
            }
            seen.push(full);
            if m.embedding_dim == 0 || m.embedding_dim > 65_536 {
                return Err(Error::Scenario(format!(
                    "model `{}`: `embedding_dim` must be between 1 and 65536",
                    m.name
                )));
            }
            for (j, f) in m.faults.iter().enumerate() {
                let what = format!("model `{}`, fault #{} ({})", m.name, j + 1, f.kind.as_str());
                if !(0.0..=1.0).contains(&f.rate) {
                    return Err(Error::Scenario(format!("{what}: `rate` must be between 0 and 1, got {}", f.rate)));
                }
                if f.kind == FaultKind::Status && !(100..=999).contains(&f.status) {
                    return Err(Error::Scenario(format!(
                        "{what}: `status` must be an HTTP status code (100-999), got {}",
                        f.status
                    )));
                }
                for e in &f.endpoints {
                    if !crate::names::INFERENCE_ENDPOINTS.contains(&e.as_str()) {
                        return Err(Error::Scenario(format!(
                            "{what}: unknown endpoint `{e}` in `endpoints`; expected one of {}",
                            crate::names::INFERENCE_ENDPOINTS.join(", ")
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The server the mock impersonates (`api` in a scenario).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiSurface {
    /// Ollama: its native `/api/*`, the OpenAI-compatible `/v1/*`, the Anthropic Messages API
    /// (`/v1/messages`) and the OpenAI Responses API (`/v1/responses`).
    #[default]
    Ollama,
    /// llama.cpp's `llama-server`: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
    /// `/v1/models` and `/health` only.
    Openai,
    /// Anthropic's API: `/v1/messages`, `/v1/messages/count_tokens` and `/v1/models`, with a
    /// required `anthropic-version` header and Anthropic's error shape everywhere.
    Anthropic,
}

/// One model served by the mock (`[[model]]` in TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// Model name; a name without a tag means `:latest`.
    pub name: String,
    /// Assistant text, streamed split into word-sized chunks.
    pub reply: String,
    /// When non-empty, replies cycle through these instead of `reply`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replies: Vec<String>,
    /// Delay before the response head of every inference request.
    #[serde(with = "duration_str")]
    pub latency: Duration,
    /// Delay between streamed chunks.
    #[serde(with = "duration_str")]
    pub token_delay: Duration,
    /// Context length reported by `/api/show` and `/api/ps`.
    pub context_length: u64,
    /// Model family (`llama`, `qwen2`, …).
    pub family: String,
    /// Parameter size shown in details (`3.2B`).
    pub parameter_size: String,
    /// Quantization level shown in details (`Q4_K_M`).
    pub quantization: String,
    /// Size in bytes reported by `/api/tags` and `/api/ps`.
    pub size: u64,
    /// Length of embedding vectors.
    pub embedding_dim: usize,
    /// Content returned when a request asks for JSON output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_reply: Option<String>,
    /// When non-empty, JSON replies cycle through these instead of `json_reply` (a broken answer
    /// first and a good one second, to exercise a re-ask).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub json_replies: Vec<String>,
    /// Tool call returned when a chat request offers tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCall>,
    /// Whether the model is listed by `/api/ps`.
    pub loaded: bool,
    /// Faults to inject (`[[model.fault]]`); the first whose `rate` roll hits applies.
    #[serde(rename = "fault", skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            name: "llama3.2".to_owned(),
            reply: "Hello from keel-mock.".to_owned(),
            replies: Vec::new(),
            latency: Duration::ZERO,
            token_delay: Duration::ZERO,
            context_length: 4096,
            family: "llama".to_owned(),
            parameter_size: "3.2B".to_owned(),
            quantization: "Q4_K_M".to_owned(),
            size: 2_019_393_189,
            embedding_dim: 8,
            json_reply: None,
            json_replies: Vec::new(),
            tool_call: None,
            loaded: true,
            faults: Vec::new(),
        }
    }
}

impl ModelSpec {
    /// A model with default details that answers `reply`.
    pub fn new(name: &str, reply: &str) -> ModelSpec {
        ModelSpec { name: name.to_owned(), reply: reply.to_owned(), ..ModelSpec::default() }
    }

    /// Adds a fault (builder style).
    #[must_use]
    pub fn with_fault(mut self, fault: Fault) -> ModelSpec {
        self.faults.push(fault);
        self
    }
}

/// A tool call the model makes when a chat request offers tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// Function name.
    pub name: String,
    /// Function arguments (a JSON object).
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// The kind of an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 503 "server busy" (Ollama's queue-full answer).
    Busy,
    /// 404 "model 'x' not found".
    NotFound,
    /// 500 with `message` (default: llama runner terminated).
    ServerError,
    /// Any status with any body (`status`, `body`).
    Status,
    /// Accept the request and never answer.
    Hang,
    /// Reset the TCP connection without a response.
    Reset,
    /// Abort the body after `after_chunks` chunks (incomplete response).
    Cut,
    /// After `after_chunks` chunks write an error line and end the stream.
    ErrorLine,
    /// Mangle JSON replies (only applies to requests asking for JSON).
    Garble,
    /// Sleep `delay` before the response head.
    SlowFirstByte,
}

impl FaultKind {
    /// The name used in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Busy => "busy",
            FaultKind::NotFound => "not_found",
            FaultKind::ServerError => "server_error",
            FaultKind::Status => "status",
            FaultKind::Hang => "hang",
            FaultKind::Reset => "reset",
            FaultKind::Cut => "cut",
            FaultKind::ErrorLine => "error_line",
            FaultKind::Garble => "garble",
            FaultKind::SlowFirstByte => "slow_first_byte",
        }
    }
}

/// How a `garble` fault mangles a JSON reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GarbleKind {
    /// Wrap in a ```` ```json ```` fence.
    Fence,
    /// Add prose before and after.
    Prose,
    /// Add trailing commas in objects and arrays.
    TrailingComma,
    /// Quote strings and keys with single quotes.
    SingleQuotes,
    /// Cut the JSON text at a seeded point.
    Truncate,
    /// Python literal style (`'key': True`, `None`).
    PythonLiterals,
}

impl GarbleKind {
    /// Every garble kind, in declaration order.
    pub const ALL: [GarbleKind; 6] = [
        GarbleKind::Fence,
        GarbleKind::Prose,
        GarbleKind::TrailingComma,
        GarbleKind::SingleQuotes,
        GarbleKind::Truncate,
        GarbleKind::PythonLiterals,
    ];
}

/// One injected fault (`[[model.fault]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// Probability per request, 0..1 (seeded).
    #[serde(default = "one")]
    pub rate: f64,
    /// For `cut` and `error_line`: how many content chunks are sent first.
    #[serde(default = "default_after_chunks")]
    pub after_chunks: usize,
    /// For `status`: the HTTP status.
    #[serde(default = "default_status")]
    pub status: u16,
    /// For `status`: the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// For `error_line` and `server_error`: the error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `garble`: the kinds to pick from (seeded); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub garble: Vec<GarbleKind>,
    /// For `slow_first_byte`: how long to wait before the head.
    #[serde(default = "default_delay", with = "duration_str")]
    pub delay: Duration,
    /// Endpoints this fault applies to (e.g. `/api/chat`); empty means all inference endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

fn one() -> f64 {
    1.0
}

fn default_after_chunks() -> usize {
    1
}

fn default_status() -> u16 {
    500
}

fn default_delay() -> Duration {
    Duration::from_secs(1)
}

impl Fault {
    /// A fault of `kind` with default settings (rate 1.0).
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            kind,
            rate: 1.0,
            after_chunks: default_after_chunks(),
            status: default_status(),
            body: None,
            message: None,
            garble: Vec::new(),
            delay: default_delay(),
            endpoints: Vec::new(),
        }
    }

    /// Sets the probability (builder style).
    #[must_use]
    pub fn with_rate(mut self, rate: f64) -> Fault {
        self.rate = rate;
        self
    }

    /// Sets `after_chunks` (builder style).
    #[must_use]
    pub fn with_after_chunks(mut self, n: usize) -> Fault {
        self.after_chunks = n;
        self
    }

    /// Sets the message (builder style).
    #[must_use]
    pub fn with_message(mut self, message: &str) -> Fault {
        self.message = Some(message.to_owned());
        self
    }

    /// Sets the status and body for `kind = "status"` (builder style).
    #[must_use]
    pub fn with_status(mut self, status: u16, body: &str) -> Fault {
        self.status = status;
        self.body = Some(body.to_owned());
        self
    }

    /// Sets the delay (builder style).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Fault {
        self.delay = delay;
        self
    }

    /// Restricts the fault to these endpoints (builder style).
    #[must_use]
    pub fn with_endpoints(mut self, endpoints: &[&str]) -> Fault {
        self.endpoints = endpoints.iter().map(|e| (*e).to_owned()).collect();
        self
    }

    /// Restricts the garble kinds (builder style).
    #[must_use]
    pub fn with_garble(mut self, kinds: &[GarbleKind]) -> Fault {
        self.garble = kinds.to_vec();
        self
    }
}

/// Durations as humantime strings (`"250ms"`, `"5s"`); integers are read as milliseconds.
mod duration_str {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"250ms\" or \"5s\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v.trim())
                .map_err(|e| E::custom(format!("invalid duration {v:?}: {e} (write e.g. \"250ms\" or \"5s\")")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v).map(Duration::from_millis).map_err(|_| E::custom("a duration must not be negative"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_round_trip() {
        let s = Scenario::from_toml_str("seed = 7").unwrap();
        assert_eq!(s.seed, 7);
        assert_eq!(s.models.len(), 1);
        assert_eq!(s.models[0].name, "llama3.2");
        let text = s.to_toml_string().unwrap();
        assert_eq!(Scenario::from_toml_str(&text).unwrap(), s);
    }

    #[test]
    fn full_model_parses() {
        let s = Scenario::from_toml_str(
            r#"
            [[model]]
            name = "qwen2.5:0.5b"
            latency = "5ms"
            token_delay = 2
            tool_call = { name = "get_weather", arguments = { city = "Paris" } }
              [[model.fault]]
              kind = "cut"
              after_chunks = 2
              rate = 0.5
              endpoints = ["/api/chat"]
            "#,
        )
        .unwrap();
        let m = &s.models[0];
        assert_eq!(m.latency, Duration::from_millis(5));
        assert_eq!(m.token_delay, Duration::from_millis(2));
        assert_eq!(m.faults[0].kind, FaultKind::Cut);
        assert_eq!(m.tool_call.as_ref().unwrap().arguments["city"], "Paris");
        let again = Scenario::from_toml_str(&s.to_toml_string().unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn rejects_bad_values() {
        let e = Scenario::from_toml_str("[[model]]\nname='a'\n[[model.fault]]\nkind='busy'\nrate=2.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rate"), "{e}");
        let e = Scenario::from_toml_str("[[model]]\nname='a'\n[[model]]\nname='a:latest'").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let e = Scenario::from_toml_str("[[model]]\nlatency='soon'").unwrap_err().to_string();
        assert!(e.contains("invalid duration"), "{e}");
        let e = Scenario::from_toml_str("[[model]]\n[[model.fault]]\nkind='explode'").unwrap_err().to_string();
        assert!(e.contains("explode"), "{e}");
    }
}
