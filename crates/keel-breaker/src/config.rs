//! `[breaker]`: when a target is taken out of rotation and how it comes back.
//!
//! [`BreakerConfig`] is the section exactly as written (unknown keys rejected, every key optional
//! with the default documented on its field). [`BreakerConfig::validate`] checks it; breakers and
//! registries only accept validated configs and compile them into an internal policy.

use std::time::Duration;

use keel_types::FailureClass;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Number of buckets of every sliding window: memory per breaker is fixed, each call is O(1).
pub(crate) const WINDOW_BUCKETS: usize = 10;

/// The window the cost condition ([`BreakerConfig::max_tokens_per_minute`]) sums tokens over.
pub(crate) const COST_WINDOW: Duration = Duration::from_secs(60);

/// Breaker settings for one target (or the default for all targets).
///
/// Every trip condition is evaluated on each recorded result while the breaker is CLOSED; the
/// first one that holds opens it. Numeric thresholds of `0` disable their condition.
///
/// ```toml
/// [breaker]
/// failure_threshold = 5               # consecutive failures; 0 disables
/// failure_rate = 0.5                  # share of failed calls in `window`; 0 disables
/// window = "60s"
/// min_calls = 10                      # rate conditions need this many calls in the window
/// slow_call_duration = "30s"
/// slow_call_rate = 0.0                # off
/// min_success_ratio = 0.0             # off
/// max_tokens_per_minute = 0           # off
/// cooldown = "30s"
/// cooldown_strategy = "exponential"   # or "fixed"
/// cooldown_max = "5m"
/// half_open = "single"                # or "gradual"
/// probes = 3                          # in-flight probe ceiling of "gradual"
/// # successes_to_close = 1            # default: 1 for "single", `probes` for "gradual"
/// ignore = ["bad_request", "model_not_found", "local"]
/// quality_failures = ["invalid_output"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. Default `5`; `0` disables.
    pub failure_threshold: u32,
    /// Share of failures among the calls in `window` that opens the breaker (`>=`), once at least
    /// `min_calls` calls are in the window. Default `0.5`; `0` disables.
    pub failure_rate: f64,
    /// Length of the sliding window of the rate conditions (failure rate, slow calls, success
    /// ratio). Default `"60s"`. The window is 10 buckets, so it slides in steps of `window / 10`.
    #[serde(with = "keel_types::duration")]
    pub window: Duration,
    /// Calls the window must hold before any rate condition is judged. Default `10`.
    pub min_calls: u32,
    /// A call whose latency (the proxy reports time to the response head) exceeds this is slow.
    /// Default `"30s"`.
    #[serde(with = "keel_types::duration")]
    pub slow_call_duration: Duration,
    /// Share of slow calls in the window that opens the breaker (`>=`). Default `0` (off).
    pub slow_call_rate: f64,
    /// The breaker opens when the share of good answers among the calls in the window falls
    /// below this ("low confidence": the server answers, but mostly unusable output). Results of
    /// a `quality_failures` class are not good answers. Default `0` (off).
    pub min_success_ratio: f64,
    /// The breaker opens when the tokens reported in the last minute exceed this: a runaway agent
    /// burning a model is an incident too. Default `0` (off).
    pub max_tokens_per_minute: u64,
    /// How long an opened breaker rejects calls before admitting probes. Default `"30s"`.
    #[serde(with = "keel_types::duration")]
    pub cooldown: Duration,
    /// How the cooldown grows when a breaker re-opens (a probe failed) without having closed in
    /// between. Default `exponential`.
    pub cooldown_strategy: CooldownStrategy,
    /// The cap of a growing cooldown. Default `"5m"`; a value below `cooldown` means `cooldown`
    /// (so `cooldown = "10m"` alone works).
    #[serde(with = "keel_types::duration")]
    pub cooldown_max: Duration,
    /// How many probes HALF_OPEN lets through. Default `single`.
    pub half_open: HalfOpenMode,
    /// With `half_open = "gradual"`: the most probes in flight at once. Default `3`.
    pub probes: u32,
    /// Successful probes that close the breaker. Default: `1` with `single`, `probes` with
    /// `gradual`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successes_to_close: Option<u32>,
    /// Result classes that say nothing about the target's health: they count as neither call nor
    /// failure anywhere (a probe with such a result frees its slot and decides nothing).
    /// Default `["bad_request", "model_not_found"]` (the client's fault).
    pub ignore: Vec<FailureClass>,
    /// Result classes meaning "the server answered, but the answer was unusable": not failures
    /// for the health conditions (consecutive failures, failure rate), but not good answers for
    /// `min_success_ratio`. Default `["invalid_output"]`: broken structured output is repaired or
    /// re-asked by the output guard and does not by itself take a healthy server out of rotation.
    /// Remove it from this list to make `invalid_output` a plain failure.
    pub quality_failures: Vec<FailureClass>,
    /// Share breaker openings with other keel instances through Redis (`"redis://127.0.0.1:6379"`):
    /// when one instance opens a target's breaker, the others open theirs within a second. Used by
    /// the gateway; this crate does no I/O. Default: not shared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
    /// Prefix of the Redis channel and keys used for sharing (instances that should share state
    /// use the same prefix). Default `"keel"`.
    pub shared_prefix: String,
    /// Most breakers kept for targets created on first use (models asked for through the `"*"`
    /// route, whose names come from clients). Past it the least recently used closed breaker is
    /// dropped, so made-up model names cannot grow memory. Configured targets are always kept.
    /// Default `1024`.
    pub max_breakers: usize,
    /// When every target of a route is out but their failures are partial (some calls in the
    /// window succeeded: a failure rate, not a dead server or a model that cannot load), this share
    /// of requests still tries the least-bad target, like Envoy's panic mode, so that keel is never
    /// less available than going direct. The default `1.0` sends every such request, as Envoy's
    /// panic mode does (with random failures, any request held back is one a direct call might
    /// have answered); lower it to shed load from a struggling server; `0` turns it off.
    pub panic_share: f64,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(60),
            min_calls: 10,
            slow_call_duration: Duration::from_secs(30),
            slow_call_rate: 0.0,
            min_success_ratio: 0.0,
            max_tokens_per_minute: 0,
            cooldown: Duration::from_secs(30),
            cooldown_strategy: CooldownStrategy::Exponential,
            cooldown_max: Duration::from_secs(300),
            half_open: HalfOpenMode::Single,
            probes: 3,
            successes_to_close: None,
            ignore: vec![FailureClass::BadRequest, FailureClass::ModelNotFound, FailureClass::Local],
            quality_failures: vec![FailureClass::InvalidOutput],
            shared: None,
            shared_prefix: "keel".to_owned(),
            max_breakers: 1024,
            panic_share: 1.0,
        }
    }
}

/// How the cooldown of a re-opened breaker grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CooldownStrategy {
    /// Always `cooldown`.
    Fixed,
    /// `cooldown` doubled for every re-open since the breaker last closed, capped at
    /// `cooldown_max`.
    #[default]
    Exponential,
}

/// How HALF_OPEN admits probes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HalfOpenMode {
    /// One probe in flight at a time; each success admits the next.
    #[default]
    Single,
    /// A ramp: one probe in flight at first, one more allowed in flight after each success, up to
    /// `probes` at once.
    Gradual,
}

impl BreakerConfig {
    /// Checks ranges and consistency; the error names the key and says what to write instead.
    pub fn validate(&self) -> Result<(), Error> {
        for (key, value) in [
            ("failure_rate", self.failure_rate),
            ("slow_call_rate", self.slow_call_rate),
            ("min_success_ratio", self.min_success_ratio),
            ("panic_share", self.panic_share),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(key, format!("is {value}; write a share between 0 and 1 (0 disables)")));
            }
        }
        if self.window < Duration::from_millis(10) {
            return Err(invalid("window", "must be at least \"10ms\" (e.g. \"60s\")".into()));
        }
        if self.min_calls == 0 {
            return Err(invalid("min_calls", "must be at least 1".into()));
        }
        if self.probes == 0 {
            return Err(invalid("probes", "must be at least 1".into()));
        }
        if self.max_breakers == 0 {
            return Err(invalid("max_breakers", "must be at least 1 (e.g. 1024)".into()));
        }
        if let Some(url) = &self.shared
            && !url.starts_with("redis://")
            && !url.starts_with("rediss://")
        {
            return Err(invalid("shared", format!("is {url:?}; write a Redis URL such as \"redis://127.0.0.1:6379\"")));
        }
        if self.shared_prefix.is_empty() || self.shared_prefix.contains(char::is_whitespace) {
            return Err(invalid("shared_prefix", "must be a non-empty name without spaces (e.g. \"keel\")".into()));
        }
        if self.successes_to_close == Some(0) {
            return Err(invalid("successes_to_close", "must be at least 1".into()));
        }
        if let Some(class) = self.ignore.iter().find(|class| self.quality_failures.contains(class)) {
            return Err(invalid(
                "quality_failures",
                format!("lists {class:?} which is also in ignore; keep it in one list", class = class.as_str()),
            ));
        }
        Ok(())
    }

    /// Whether only failures in a row can open the breaker (no window-based condition: failure
    /// rate, slow calls, success ratio, token budget). Then a success while CLOSED with no failure
    /// to reset changes nothing, and the registry records it without taking the lock.
    pub fn counts_only_consecutive(&self) -> bool {
        self.failure_rate == 0.0
            && self.slow_call_rate == 0.0
            && self.min_success_ratio == 0.0
            && self.max_tokens_per_minute == 0
    }

    /// Successful probes that close the breaker, with the default applied.
    pub fn effective_successes_to_close(&self) -> u32 {
        self.successes_to_close.unwrap_or(match self.half_open {
            HalfOpenMode::Single => 1,
            HalfOpenMode::Gradual => self.probes,
        })
    }
}

fn invalid(key: &'static str, problem: String) -> Error {
    Error::InvalidConfig { key, problem }
}

/// How a recorded result counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A good answer.
    Success,
    /// Answered but unusable: healthy for health conditions, not good for confidence.
    Quality,
    /// Counts against the target.
    Failure,
    /// Says nothing about the target.
    Ignored,
}

/// A validated config compiled for the hot path.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) config: BreakerConfig,
    pub(crate) successes_to_close: u32,
    classes: [Verdict; FailureClass::ALL.len()],
    pub(crate) window_bucket: u64,
    pub(crate) cost_bucket: u64,
}

impl Policy {
    pub(crate) fn new(config: &BreakerConfig) -> Result<Policy, Error> {
        config.validate()?;
        let mut classes = [Verdict::Failure; FailureClass::ALL.len()];
        for class in FailureClass::ALL {
            classes[class as usize] = if config.ignore.contains(&class) {
                Verdict::Ignored
            } else if config.quality_failures.contains(&class) {
                Verdict::Quality
            } else {
                Verdict::Failure
            };
        }
        let bucket = |window: Duration| {
            let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
            (nanos / WINDOW_BUCKETS as u64).max(1)
        };
        Ok(Policy {
            config: config.clone(),
            successes_to_close: config.effective_successes_to_close(),
            classes,
            window_bucket: bucket(config.window),
            cost_bucket: bucket(COST_WINDOW),
        })
    }

    pub(crate) fn verdict(&self, class: Option<FailureClass>) -> Verdict {
        match class {
            None => Verdict::Success,
            Some(class) => self.classes[class as usize],
        }
    }

    /// Probes allowed in flight after `successes` successful probes.
    pub(crate) fn probe_slots(&self, successes: u32) -> u32 {
        match self.config.half_open {
            HalfOpenMode::Single => 1,
            HalfOpenMode::Gradual => successes.saturating_add(1).min(self.config.probes),
        }
    }

    /// The cooldown after `reopens` re-opens since the breaker last closed.
    pub(crate) fn cooldown(&self, reopens: u32) -> Duration {
        let config = &self.config;
        match config.cooldown_strategy {
            CooldownStrategy::Fixed => config.cooldown,
            CooldownStrategy::Exponential => {
                let factor = 1u32.checked_shl(reopens.min(31)).unwrap_or(u32::MAX);
                config
                    .cooldown
                    .checked_mul(factor)
                    .unwrap_or(Duration::MAX)
                    .min(config.cooldown_max.max(config.cooldown))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_is_the_default() {
        let config: BreakerConfig = toml::from_str("").unwrap();
        assert_eq!(config, BreakerConfig::default());
        config.validate().unwrap();
    }

    #[test]
    fn documented_example_parses_to_the_defaults() {
        let doc = r#"
failure_threshold = 5
failure_rate = 0.5
window = "60s"
min_calls = 10
slow_call_duration = "30s"
slow_call_rate = 0.0
min_success_ratio = 0.0
max_tokens_per_minute = 0
cooldown = "30s"
cooldown_strategy = "exponential"
cooldown_max = "5m"
half_open = "single"
probes = 3
ignore = ["bad_request", "model_not_found", "local"]
quality_failures = ["invalid_output"]
max_breakers = 1024
panic_share = 1.0
"#;
        let config: BreakerConfig = toml::from_str(doc).unwrap();
        assert_eq!(config, BreakerConfig::default());
    }

    #[test]
    fn round_trips_through_toml() {
        let config = BreakerConfig {
            successes_to_close: Some(2),
            half_open: HalfOpenMode::Gradual,
            cooldown_strategy: CooldownStrategy::Fixed,
            ..BreakerConfig::default()
        };
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("cooldown = \"30s\""), "{text}");
        assert!(text.contains("half_open = \"gradual\""), "{text}");
        assert_eq!(toml::from_str::<BreakerConfig>(&text).unwrap(), config);
    }

    #[test]
    fn typos_and_bad_values_fail_loudly() {
        let err = toml::from_str::<BreakerConfig>("failure_treshold = 3").unwrap_err().to_string();
        assert!(err.contains("failure_treshold"), "{err}");
        let err = toml::from_str::<BreakerConfig>("cooldown = \"30\"").unwrap_err().to_string();
        assert!(err.contains("30s"), "{err}");
        let err = toml::from_str::<BreakerConfig>("ignore = [\"teapot\"]").unwrap_err().to_string();
        assert!(err.contains("teapot"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let cases: Vec<(BreakerConfig, &str)> = vec![
            (BreakerConfig { failure_rate: 1.5, ..Default::default() }, "failure_rate"),
            (BreakerConfig { slow_call_rate: -0.1, ..Default::default() }, "slow_call_rate"),
            (BreakerConfig { min_success_ratio: f64::NAN, ..Default::default() }, "min_success_ratio"),
            (BreakerConfig { window: Duration::ZERO, ..Default::default() }, "window"),
            (BreakerConfig { min_calls: 0, ..Default::default() }, "min_calls"),
            (BreakerConfig { probes: 0, ..Default::default() }, "probes"),
            (BreakerConfig { successes_to_close: Some(0), ..Default::default() }, "successes_to_close"),
            (
                BreakerConfig { quality_failures: vec![FailureClass::BadRequest], ..Default::default() },
                "quality_failures",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn verdicts_follow_the_lists() {
        let policy = Policy::new(&BreakerConfig::default()).unwrap();
        assert_eq!(policy.verdict(None), Verdict::Success);
        assert_eq!(policy.verdict(Some(FailureClass::BadRequest)), Verdict::Ignored);
        assert_eq!(policy.verdict(Some(FailureClass::ModelNotFound)), Verdict::Ignored);
        assert_eq!(policy.verdict(Some(FailureClass::InvalidOutput)), Verdict::Quality);
        for class in [
            FailureClass::Busy,
            FailureClass::Timeout,
            FailureClass::Refused,
            FailureClass::Reset,
            FailureClass::ServerError,
            FailureClass::StreamBroken,
        ] {
            assert_eq!(policy.verdict(Some(class)), Verdict::Failure, "{class}");
        }
        let strict =
            Policy::new(&BreakerConfig { ignore: vec![], quality_failures: vec![], ..Default::default() }).unwrap();
        assert_eq!(strict.verdict(Some(FailureClass::BadRequest)), Verdict::Failure);
        assert_eq!(strict.verdict(Some(FailureClass::InvalidOutput)), Verdict::Failure);
    }

    #[test]
    fn cooldown_doubles_up_to_the_cap() {
        let policy = Policy::new(&BreakerConfig::default()).unwrap();
        let secs: Vec<u64> = (0..6).map(|n| policy.cooldown(n).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 300, 300]);
        assert_eq!(policy.cooldown(u32::MAX), Duration::from_secs(300));
        let fixed =
            Policy::new(&BreakerConfig { cooldown_strategy: CooldownStrategy::Fixed, ..Default::default() }).unwrap();
        assert_eq!(fixed.cooldown(5), Duration::from_secs(30));
        let long = Policy::new(&BreakerConfig { cooldown: Duration::from_secs(600), ..Default::default() }).unwrap();
        assert_eq!(long.cooldown(0), Duration::from_secs(600), "a cap below the cooldown means the cooldown");
        assert_eq!(long.cooldown(3), Duration::from_secs(600));
    }

    #[test]
    fn successes_to_close_defaults_by_mode() {
        assert_eq!(BreakerConfig::default().effective_successes_to_close(), 1);
        let gradual = BreakerConfig { half_open: HalfOpenMode::Gradual, probes: 4, ..Default::default() };
        assert_eq!(gradual.effective_successes_to_close(), 4);
        let policy = Policy::new(&gradual).unwrap();
        let slots: Vec<u32> = (0..6).map(|s| policy.probe_slots(s)).collect();
        assert_eq!(slots, [1, 2, 3, 4, 4, 4]);
    }
}
