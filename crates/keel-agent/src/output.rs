//! The tiered parser and its builder.

use std::any::type_name;
use std::fmt;
use std::sync::Arc;

use keel_repair::{CompiledSchema, RepairError, Repairer, Report};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{BuildError, Failure, FallbackOutcome};
use crate::event::Event;

/// The counter incremented once per [`StructuredOutput::parse`], labelled
/// `tier="primary|fallback|canned|failed"` by the tier that produced the value.
pub const TIER_METRIC: &str = "keel_agent_structured_tier_total";

/// How many schema problems are listed for one invalid value.
const MAX_PROBLEMS: usize = 8;

/// The caller's fallback function: the raw model text and why the primary parse failed in, a
/// value (or nothing) out.
type FallbackFn<T> = Box<dyn Fn(&str, &RepairError) -> Option<T> + Send + Sync>;

/// An event handler.
type Handler = Box<dyn Fn(&Event) + Send + Sync>;

/// The tier that produced a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The model's output, repaired against the schema by `keel-repair`.
    Primary,
    /// The caller's fallback function (its value re-validated against the schema).
    Fallback,
    /// The canned value (validated against the schema at build time).
    Canned,
}

impl Tier {
    /// The tier's name as used in the metric label: `primary`, `fallback` or `canned`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Fallback => "fallback",
            Self::Canned => "canned",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that satisfies the schema, with the tier that produced it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Parsed<T> {
    /// The value.
    pub value: T,
    /// Which tier produced it.
    pub tier: Tier,
    /// What `keel-repair` did to the model's output (only for [`Tier::Primary`]; clean when the
    /// output was valid as written).
    pub report: Option<Report>,
    /// Why the primary parse failed (only for [`Tier::Fallback`] and [`Tier::Canned`]).
    pub primary_error: Option<RepairError>,
}

impl<T> Parsed<T> {
    /// The value, by value.
    #[must_use]
    pub fn into_value(self) -> T {
        self.value
    }
}

/// Structured output with fallback tiers: parse a model's text into a `T` valid against a JSON
/// Schema, falling back to the caller's function and then to a canned value.
///
/// 1. **Primary** — the text is repaired against the schema with [`keel_repair`] (schema compiled
///    once, at build time) and deserialized into `T`.
/// 2. **Fallback** — the caller's function gets the raw text and the primary error; the value it
///    returns is serialized and re-validated against the schema, and discarded when invalid.
/// 3. **Canned** — a clone of the canned value, which [`Builder::build`] validated.
///
/// Built with [`StructuredOutput::builder`] (schema from `T`'s [`JsonSchema`]) or
/// [`StructuredOutput::with_schema`] (any schema; see [`UntypedOutput`]). `Send + Sync` when `T`
/// is: build it once and share it.
pub struct StructuredOutput<T> {
    repairer: Repairer,
    schema: Arc<CompiledSchema>,
    fallback: Option<FallbackFn<T>>,
    canned: Option<T>,
    handlers: Vec<Handler>,
}

/// Structured output for callers holding a JSON Schema as a [`Value`] rather than a Rust type:
/// build it with [`StructuredOutput::with_schema`].
///
/// ```
/// use keel_agent::{Tier, UntypedOutput};
/// use serde_json::json;
///
/// let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
/// let output = UntypedOutput::with_schema(schema).canned(json!({"n": 0})).build()?;
/// assert_eq!(output.parse("{n: '7'}")?.value, json!({"n": 7}));
/// assert_eq!(output.parse("no number here")?.tier, Tier::Canned);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type UntypedOutput = StructuredOutput<Value>;

impl<T> fmt::Debug for StructuredOutput<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StructuredOutput")
            .field("type", &type_name::<T>())
            .field("schema", self.schema.schema())
            .field("fallback", &self.fallback.is_some())
            .field("canned", &self.canned.is_some())
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

impl<T: JsonSchema> StructuredOutput<T> {
    /// A builder whose schema is generated from `T` with `schemars` (once, here).
    /// [`Builder::schema`] replaces it.
    #[must_use]
    pub fn builder() -> Builder<T> {
        Builder::new(Value::from(schemars::schema_for!(T)))
    }
}

impl<T> StructuredOutput<T> {
    /// A builder with an explicit JSON Schema; `T` needs no [`JsonSchema`] implementation (use
    /// `T = serde_json::Value` for untyped output, see [`UntypedOutput`]).
    #[must_use]
    pub fn with_schema(schema: Value) -> Builder<T> {
        Builder::new(schema)
    }

    /// The schema values are validated against (normalized: OpenAPI `nullable` folded into
    /// `type`). Useful to send to the model as its output format.
    #[must_use]
    pub fn schema(&self) -> &Value {
        self.schema.schema()
    }
}

impl<T: DeserializeOwned + Serialize + Clone> StructuredOutput<T> {
    /// Parses the model's raw text, tier by tier; see [`StructuredOutput`]. The value returned,
    /// whatever the tier, satisfies the schema. Never panics on any input (only a panicking
    /// fallback function or event handler can).
    ///
    /// # Errors
    /// [`Failure`] when the primary parse failed, the fallback was absent, declined or rejected,
    /// and no canned value is configured.
    pub fn parse(&self, raw: &str) -> Result<Parsed<T>, Failure> {
        let primary_error = match self.primary(raw) {
            Ok((value, report)) => {
                count(Tier::Primary.as_str());
                return Ok(Parsed { value, tier: Tier::Primary, report: Some(report), primary_error: None });
            }
            Err(err) => err,
        };
        let fallback = match &self.fallback {
            None => FallbackOutcome::Absent,
            Some(fallback) => match fallback(raw, &primary_error) {
                None => FallbackOutcome::Declined,
                Some(value) => {
                    let problems = self.problems(&value);
                    if problems.is_empty() {
                        self.emit(&Event::Fallback { primary_error: primary_error.clone() });
                        count(Tier::Fallback.as_str());
                        return Ok(Parsed {
                            value,
                            tier: Tier::Fallback,
                            report: None,
                            primary_error: Some(primary_error),
                        });
                    }
                    self.emit(&Event::FallbackRejected {
                        primary_error: primary_error.clone(),
                        problems: problems.clone(),
                    });
                    FallbackOutcome::Rejected { problems }
                }
            },
        };
        if let Some(canned) = &self.canned {
            self.emit(&Event::Canned { primary_error: primary_error.clone(), fallback });
            count(Tier::Canned.as_str());
            return Ok(Parsed {
                value: canned.clone(),
                tier: Tier::Canned,
                report: None,
                primary_error: Some(primary_error),
            });
        }
        self.emit(&Event::Failed { primary_error: primary_error.clone(), fallback: fallback.clone() });
        count("failed");
        Err(Failure { primary: primary_error, fallback })
    }

    /// Why `value` does not satisfy the schema (at most 8 problems, each with its JSON pointer);
    /// empty when it does.
    #[must_use]
    pub fn problems(&self, value: &T) -> Vec<String> {
        problems(&self.schema, value)
    }

    /// Tier 1: repair against the schema, then deserialize.
    fn primary(&self, raw: &str) -> Result<(T, Report), RepairError> {
        let (_, value, report) = self.repairer.repair_compiled(raw, Some(&self.schema))?.into_parts();
        let value =
            serde_json::from_value(value).map_err(|err| RepairError::Deserialize { message: err.to_string() })?;
        Ok((value, report))
    }
}

impl<T> StructuredOutput<T> {
    /// Logs `event` and hands it to every handler, in registration order.
    fn emit(&self, event: &Event) {
        event.log(type_name::<T>());
        for handler in &self.handlers {
            handler(event);
        }
    }
}

/// Counts one parse by the tier that ended it.
fn count(tier: &'static str) {
    metrics::counter!(TIER_METRIC, "tier" => tier).increment(1);
}

/// Why `value`, serialized, does not satisfy `schema`; empty when it does.
fn problems(schema: &CompiledSchema, value: &impl Serialize) -> Vec<String> {
    match serde_json::to_value(value) {
        Ok(value) => schema.problems(&value, MAX_PROBLEMS),
        Err(err) => vec![format!("the value cannot be serialized to JSON: {err}")],
    }
}

/// Configures a [`StructuredOutput`]; [`Builder::build`] checks the schema and the canned value.
pub struct Builder<T> {
    schema: Value,
    repairer: Option<Repairer>,
    fallback: Option<FallbackFn<T>>,
    canned: Option<T>,
    handlers: Vec<Handler>,
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("type", &type_name::<T>())
            .field("schema", &self.schema)
            .field("fallback", &self.fallback.is_some())
            .field("canned", &self.canned.is_some())
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

impl<T> Builder<T> {
    fn new(schema: Value) -> Self {
        Self { schema, repairer: None, fallback: None, canned: None, handlers: Vec::new() }
    }

    /// Replaces the schema (by default the one generated from `T`). Values are validated against
    /// it; `T` must still deserialize from the values it accepts.
    #[must_use]
    pub fn schema(mut self, schema: Value) -> Self {
        self.schema = schema;
        self
    }

    /// Uses `repairer` (and its schema cache, shared with other users) instead of a new one.
    #[must_use]
    pub fn repairer(mut self, repairer: Repairer) -> Self {
        self.repairer = Some(repairer);
        self
    }

    /// Tier 2: called with the raw model text and the primary error when the primary parse fails.
    /// `None` declines; a `Some` value is serialized and re-validated against the schema, and
    /// discarded (an [`Event::FallbackRejected`]) when invalid.
    #[must_use]
    pub fn fallback<F>(mut self, fallback: F) -> Self
    where
        F: Fn(&str, &RepairError) -> Option<T> + Send + Sync + 'static,
    {
        self.fallback = Some(Box::new(fallback));
        self
    }

    /// Tier 3: the value used when the other tiers fail. [`Builder::build`] validates it against
    /// the schema, so an invalid canned value is a startup error.
    #[must_use]
    pub fn canned(mut self, value: T) -> Self {
        self.canned = Some(value);
        self
    }

    /// Adds a handler called with every [`Event`] (fallback used or rejected, canned used, all
    /// tiers failed). Handlers run in registration order, on the thread calling `parse`; keep
    /// them quick.
    #[must_use]
    pub fn on_event<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        self.handlers.push(Box::new(handler));
        self
    }
}

impl<T: Serialize> Builder<T> {
    /// Compiles the schema and validates the canned value against it.
    ///
    /// # Errors
    /// [`BuildError::InvalidSchema`] when the schema is not a valid JSON Schema;
    /// [`BuildError::InvalidCanned`] naming the problems when the canned value does not satisfy it.
    pub fn build(self) -> Result<StructuredOutput<T>, BuildError> {
        let repairer = self.repairer.unwrap_or_default();
        let schema = repairer.cache().get(&self.schema).map_err(|err| match err {
            RepairError::InvalidSchema { message } => BuildError::InvalidSchema { message },
            other => BuildError::InvalidSchema { message: other.to_string() },
        })?;
        if let Some(canned) = &self.canned {
            let problems = problems(&schema, canned);
            if !problems.is_empty() {
                return Err(BuildError::InvalidCanned { problems });
            }
        }
        metrics::describe_counter!(TIER_METRIC, "Structured-output parses by the tier that ended them.");
        Ok(StructuredOutput { repairer, schema, fallback: self.fallback, canned: self.canned, handlers: self.handlers })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
    use parking_lot::Mutex;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

    /// A recorder that keeps counter totals by `name{label=value}`.
    #[derive(Default)]
    struct Recorded(Counts);

    struct Handle {
        key: String,
        counts: Counts,
    }

    impl metrics::CounterFn for Handle {
        fn increment(&self, value: u64) {
            *self.counts.lock().entry(self.key.clone()).or_default() += value;
        }

        fn absolute(&self, value: u64) {
            self.counts.lock().insert(self.key.clone(), value);
        }
    }

    impl metrics::Recorder for Recorded {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            let key = format!("{}{{{}}}", key.name(), labels.join(","));
            Counter::from_arc(Arc::new(Handle { key, counts: Arc::clone(&self.0) }))
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    fn number_schema() -> Value {
        json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]})
    }

    /// A type without a `JsonSchema` implementation.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Plain {
        n: i64,
    }

    #[test]
    fn every_parse_is_counted_by_tier() {
        let recorder = Recorded::default();
        let counts = Arc::clone(&recorder.0);
        metrics::with_local_recorder(&recorder, || {
            let with_canned = StructuredOutput::<Plain>::with_schema(number_schema())
                .fallback(|raw, _| raw.starts_with("fb").then_some(Plain { n: 1 }))
                .canned(Plain { n: 0 })
                .build()
                .unwrap();
            let bare = StructuredOutput::<Plain>::with_schema(number_schema()).build().unwrap();
            assert_eq!(with_canned.parse(r#"{"n": 3}"#).unwrap().tier, Tier::Primary);
            assert_eq!(with_canned.parse("fb: none").unwrap().tier, Tier::Fallback);
            assert_eq!(with_canned.parse("nothing").unwrap().tier, Tier::Canned);
            assert_eq!(with_canned.parse("nothing again").unwrap().tier, Tier::Canned);
            assert!(bare.parse("nothing").is_err());
        });
        let counts = counts.lock().clone();
        let expected: BTreeMap<String, u64> = [
            ("keel_agent_structured_tier_total{tier=canned}".to_owned(), 2),
            ("keel_agent_structured_tier_total{tier=failed}".to_owned(), 1),
            ("keel_agent_structured_tier_total{tier=fallback}".to_owned(), 1),
            ("keel_agent_structured_tier_total{tier=primary}".to_owned(), 1),
        ]
        .into();
        assert_eq!(counts, expected);
    }

    #[test]
    fn an_invalid_schema_is_a_build_error() {
        let err = UntypedOutput::with_schema(json!({"type": 12})).build().unwrap_err();
        assert!(matches!(err, BuildError::InvalidSchema { .. }), "{err:?}");
        assert!(err.to_string().starts_with("invalid JSON Schema"));
    }

    #[test]
    fn a_type_without_json_schema_works_with_an_explicit_schema() {
        let output = StructuredOutput::<Plain>::with_schema(number_schema()).build().unwrap();
        let parsed = output.parse("{'n': '5'}").unwrap();
        assert_eq!(parsed.value, Plain { n: 5 });
        assert!(!parsed.report.unwrap().is_clean());
        assert_eq!(output.problems(&Plain { n: -1 }).len(), 1);
        assert!(output.problems(&Plain { n: 1 }).is_empty());
    }

    #[test]
    fn a_value_the_type_cannot_hold_fails_the_primary_tier() {
        // The overriding schema accepts any integer; the type cannot hold a negative one.
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        struct Unsigned {
            n: u8,
        }
        let output = StructuredOutput::<Unsigned>::builder()
            .schema(json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}))
            .build()
            .unwrap();
        let failure = output.parse(r#"{"n": -3}"#).unwrap_err();
        assert_eq!(failure.primary.kind(), "deserialize");
        assert_eq!(failure.fallback, FallbackOutcome::Absent);
    }

    #[test]
    fn the_schema_comes_from_the_type_and_is_compiled_in_the_shared_cache() {
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        struct Named {
            name: String,
        }
        let repairer = Repairer::new();
        let output = StructuredOutput::<Named>::builder().repairer(repairer.clone()).build().unwrap();
        assert_eq!(repairer.cache().len(), 1);
        assert_eq!(output.schema()["required"], json!(["name"]));
        assert_eq!(output.parse(r#"{"Name": "Ada"}"#).unwrap().value.name, "Ada");
    }

    #[test]
    fn debug_names_the_type_without_the_closures() {
        let builder = StructuredOutput::<Plain>::with_schema(number_schema()).fallback(|_, _| None);
        let text = format!("{builder:?}");
        assert!(text.contains("Plain") && text.contains("fallback: true"), "{text}");
        let text = format!("{:?}", builder.build().unwrap());
        assert!(text.contains("StructuredOutput") && text.contains("canned: false"), "{text}");
    }

    #[test]
    fn tiers_have_label_names() {
        assert_eq!([Tier::Primary, Tier::Fallback, Tier::Canned].map(Tier::as_str), ["primary", "fallback", "canned"]);
        assert_eq!(Tier::Canned.to_string(), "canned");
    }

    #[test]
    fn structured_output_is_shareable() {
        fn assert_send_sync<S: Send + Sync>() {}
        assert_send_sync::<StructuredOutput<Plain>>();
        assert_send_sync::<UntypedOutput>();
    }
}
