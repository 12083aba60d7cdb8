//! Repair engine for the structured output of local LLMs: turns what a model actually wrote into
//! the JSON value it meant, or refuses with a reason — it never invents data.
//!
//! The pipeline, one function call:
//!
//! 1. **Extraction** — `<think>…</think>` blocks are dropped (drafts in them are not the answer),
//!    markdown code fences are opened (the JSON block wins when there are several), prose before
//!    and after the value is dropped, several top-level values become an array, a document
//!    escaped once (`{\"a\": 1}`) is unescaped.
//! 2. **Tolerant parsing** — one linear pass that repairs syntax: trailing and missing commas,
//!    single/curly/no quotes, comments (`//`, `/* */`, `#`, never inside strings), `True`/`None`/
//!    `undefined`, `+1`/`.5`/`5.`, raw newlines and unescaped quotes inside strings, Unicode spaces
//!    between tokens, `...` placeholders, extra closing brackets, and truncation (open strings and
//!    containers are closed; a member whose key or colon was cut is dropped).
//! 3. **Schema-guided coercion** (when a JSON Schema is given) — numeric strings to numbers,
//!    `"true"`/`"false"` to booleans, numbers to strings, enum case, a lone value to a one-element
//!    array, stringified objects and arrays parsed, keys matched by case, snake/camel/kebab spelling
//!    or a typo, unknown fields dropped only when `additionalProperties` is `false`.
//! 4. **Validation** with the `jsonschema` crate, compiled once per schema and cached.
//!
//! # What is refused
//!
//! Prose without JSON (even with numbers or the word "true" in it), empty output, template or code
//! braces (`{customer_name}`, CSS, loops), and — with a schema — a missing required field (never
//! filled in, not even from `default`), `null` for a required non-nullable field, a value that
//! converts to nothing (`"N/A"` for a number), an enum value that matches nothing, output cut off
//! before the required fields. The error ([`RepairError`]) says why, ready to quote in a re-ask.
//!
//! # How deep
//!
//! JSON that already is strict JSON passes as written, byte for byte, nested up to [`MAX_DEPTH`]
//! (10,000) levels of objects and arrays; it is checked with an explicit stack, so no input can
//! overflow the thread's stack. Everything that builds a value — repairing syntax, taking the
//! JSON out of prose, several values, coercion and validation against a schema — works on values
//! nested up to [`MAX_VALUE_DEPTH`] (127, `serde_json`'s own limit: parsing, dropping and
//! serializing a value recurse once per level). Past the limit that applies, the output is refused
//! with [`RepairError::TooDeep`] (`nested deeper than 10000 levels; keel does not repair JSON this
//! deep`) — never a shallower piece of it instead.
//!
//! # The report
//!
//! Every repair comes with a [`Report`]: each fix with its byte position and [`Strategy`]
//! (`fence`, `trailing_comma`, `coerce_number`, `key_match`, …), per-strategy counts, and summary
//! [`Category`]s for a header value such as `extracted,fixed-syntax,coerced-types`. It serializes
//! with serde for logs and metrics.
//!
//! # Example
//!
//! ```
//! use keel_repair::Repairer;
//! use serde_json::json;
//!
//! let schema = json!({
//!     "type": "object",
//!     "properties": {"label": {"enum": ["bug", "billing"]}, "confidence": {"type": "number"}},
//!     "required": ["label", "confidence"],
//!     "additionalProperties": false
//! });
//! let raw = "Sure! ```json\n{'Label': 'BILLING', confidence: \"0.93\",}\n```";
//! let repaired = Repairer::new().repair(raw, Some(&schema)).unwrap();
//! assert_eq!(repaired.value(), &json!({"label": "billing", "confidence": 0.93}));
//! assert_eq!(repaired.text(), r#"{"label":"billing","confidence":0.93}"#);
//! assert_eq!(repaired.report().header_value(), "extracted,fixed-syntax,coerced-types,renamed-keys");
//!
//! // Refusal instead of invention: the required field is missing.
//! let err = Repairer::new().repair(r#"{"label": "bug"}"#, Some(&schema)).unwrap_err();
//! assert!(err.to_string().contains("missing required field \"confidence\""));
//! ```

mod coerce;
mod error;
mod extract;
mod parser;
mod report;
mod schema;
mod strict;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use error::RepairError;
pub use report::{Category, Fix, MAX_LISTED_FIXES, Report, Strategy};
pub use schema::{CompiledSchema, DEFAULT_CAPACITY, SchemaCache};

/// The deepest nesting of objects and arrays keel accepts: strict JSON nested up to this many
/// levels passes as written; deeper output is refused with [`RepairError::TooDeep`].
pub const MAX_DEPTH: usize = 10_000;

/// The deepest nesting of a value keel builds: output that must be repaired, extracted from
/// around other text or checked against a schema is refused with [`RepairError::TooDeep`] when
/// nested deeper. `serde_json` refuses to parse deeper values, and dropping or serializing a
/// `Value` recurses once per level.
pub const MAX_VALUE_DEPTH: usize = 127;

/// How many candidate values are tried against a schema before giving up.
const MAX_SCHEMA_TRIES: usize = 16;

/// A repaired value: its JSON text, the value, and the report of what was done.
///
/// When the output already was strict JSON (the common case), [`Repaired::text`] is that text as
/// written and the value is parsed only when [`Repaired::value`] is first called; otherwise the
/// text is compact JSON serialized from the value.
#[derive(Debug, Clone)]
pub struct Repaired {
    text: String,
    value: OnceLock<Value>,
    report: Report,
    truncated: bool,
    /// The text is nested deeper than [`MAX_VALUE_DEPTH`]: it has no value.
    deep: bool,
}

impl Repaired {
    /// The repaired JSON text (strict JSON).
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The repaired value; `Null` for a text nested deeper than [`MAX_VALUE_DEPTH`] (only JSON
    /// passed as written, without a schema, is that deep; see [`Repaired::try_value`]).
    #[must_use]
    pub fn value(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.try_value().unwrap_or(&NULL)
    }

    /// The repaired value, or `None` when the text is nested deeper than [`MAX_VALUE_DEPTH`]:
    /// such a value is never built (parsing, dropping and serializing it would recurse that deep).
    #[must_use]
    pub fn try_value(&self) -> Option<&Value> {
        if self.deep {
            return None;
        }
        Some(self.value.get_or_init(|| serde_json::from_str(&self.text).unwrap_or(Value::Null)))
    }

    /// What was done to get it.
    #[must_use]
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The output was cut off and closed (also in the report as `truncation`).
    #[must_use]
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The value, by value (`Null` when nested deeper than [`MAX_VALUE_DEPTH`], as
    /// [`Repaired::value`]).
    #[must_use]
    pub fn into_value(self) -> Value {
        let _ = self.value();
        self.value.into_inner().unwrap_or(Value::Null)
    }

    /// The text, the value and the report (the value `Null` when nested deeper than
    /// [`MAX_VALUE_DEPTH`], as [`Repaired::value`]).
    #[must_use]
    pub fn into_parts(self) -> (String, Value, Report) {
        let _ = self.value();
        (self.text, self.value.into_inner().unwrap_or(Value::Null), self.report)
    }

    fn from_value(value: Value, report: Report, truncated: bool) -> Self {
        let text = serde_json::to_string(&value).unwrap_or_default();
        Self { text, value: OnceLock::from(value), report, truncated, deep: false }
    }
}

/// The repair engine. Holds the compiled-schema cache; cheap to clone (the cache is shared).
#[derive(Debug, Clone, Default)]
pub struct Repairer {
    cache: Arc<SchemaCache>,
}

impl Repairer {
    /// A repairer with its own schema cache.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A repairer that shares `cache` with others.
    #[must_use]
    pub fn with_cache(cache: Arc<SchemaCache>) -> Self {
        Self { cache }
    }

    /// The schema cache.
    #[must_use]
    pub fn cache(&self) -> &Arc<SchemaCache> {
        &self.cache
    }

    /// Repairs `text` into the JSON value it holds; with `schema`, into a value valid against it.
    ///
    /// # Errors
    /// A [`RepairError`] saying why nothing could be recovered without inventing data, or
    /// [`RepairError::InvalidSchema`].
    pub fn repair(&self, text: &str, schema: Option<&Value>) -> Result<Repaired, RepairError> {
        let compiled = schema.map(|s| self.cache.get(s)).transpose()?;
        self.repair_compiled(text, compiled.as_deref())
    }

    /// Like [`Repairer::repair`] for raw bytes (invalid UTF-8 is replaced with U+FFFD).
    ///
    /// # Errors
    /// As [`Repairer::repair`].
    pub fn repair_bytes(&self, bytes: &[u8], schema: Option<&Value>) -> Result<Repaired, RepairError> {
        self.repair(&String::from_utf8_lossy(bytes), schema)
    }

    /// Repairs `text` against an already compiled schema (or none).
    ///
    /// # Errors
    /// As [`Repairer::repair`].
    pub fn repair_compiled(&self, text: &str, schema: Option<&CompiledSchema>) -> Result<Repaired, RepairError> {
        let options = extract::Options { individuals: schema.is_some(), partial: false };
        let choices = extract::extract(text, options)?;
        let Some(schema) = schema else {
            let choice = choices.into_iter().next().ok_or(RepairError::NoJson)?;
            let mut report = Report::new();
            report.absorb(choice.log);
            return Ok(match choice.content {
                extract::Content::Text { start, end, depth } => Repaired {
                    text: text.get(start..end).unwrap_or_default().to_owned(),
                    value: OnceLock::new(),
                    report,
                    truncated: choice.truncated,
                    deep: depth > MAX_VALUE_DEPTH,
                },
                extract::Content::Json(json) => {
                    Repaired { text: json, value: OnceLock::new(), report, truncated: choice.truncated, deep: false }
                }
                extract::Content::Value(value) => Repaired::from_value(value, report, choice.truncated),
            });
        };
        let mut first_error = None;
        for choice in choices.into_iter().take(MAX_SCHEMA_TRIES) {
            match fit(text, schema, choice) {
                Ok(repaired) => return Ok(repaired),
                Err(err @ RepairError::TooDeep { .. }) => return Err(err),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Err(first_error.unwrap_or(RepairError::NoJson))
    }

    /// The best value a possibly incomplete document already holds (for streams): open strings
    /// and containers are closed, an incomplete member is left out. `None` while there is no
    /// object or array yet.
    #[must_use]
    pub fn partial(&self, text: &str) -> Option<Value> {
        partial(text)
    }
}

/// Coerces one candidate to the schema and validates it.
fn fit(text: &str, schema: &CompiledSchema, choice: extract::Choice) -> Result<Repaired, RepairError> {
    let root = schema.schema();
    let mut coercer = coerce::Coercer::new(root, choice.truncated);
    // The text of the value as `serde_json` serializes it, when there is one: a slice of the
    // input that is strict JSON as written, or the parser's compact JSON.
    let (value, written) = match choice.content {
        extract::Content::Text { start, end, .. } => {
            // Only values within `MAX_VALUE_DEPTH` are built, coerced and validated.
            let slice = text.get(start..end);
            (choice.content.into_value(text)?, slice.map(Cow::Borrowed))
        }
        extract::Content::Json(json) => match serde_json::from_str(&json) {
            Ok(value) => (value, Some(Cow::Owned(json))),
            Err(_) => (Value::Null, None),
        },
        extract::Content::Value(value) => (value, None),
    };
    let value = coercer.coerce(root, value, &coerce::Path::ROOT);
    let mut reasons = coercer.errors;
    if reasons.is_empty() {
        reasons = schema.problems(&value, 8);
    }
    if !reasons.is_empty() {
        if choice.truncated && !reasons.iter().any(|r| r.contains("cut off")) {
            reasons.push("the output was cut off before it was complete".to_owned());
        }
        return Err(RepairError::Schema { reasons });
    }
    let unchanged = coercer.log.total() == 0;
    let mut report = Report::new();
    report.absorb(choice.log);
    report.absorb(coercer.log);
    Ok(match written {
        // Unchanged by the schema: the text already is the value's (strict JSON as written, or
        // the repaired value exactly as `serde_json` serializes it).
        Some(written) if unchanged => Repaired {
            text: written.into_owned(),
            value: OnceLock::from(value),
            report,
            truncated: choice.truncated,
            deep: false,
        },
        _ => Repaired::from_value(value, report, choice.truncated),
    })
}

/// The engine every free function uses (one shared schema cache).
fn shared() -> &'static Repairer {
    static SHARED: LazyLock<Repairer> = LazyLock::new(Repairer::new);
    &SHARED
}

/// Repairs `text` with the shared engine. See [`Repairer::repair`].
///
/// # Errors
/// As [`Repairer::repair`].
pub fn repair_value(text: &str, schema: Option<&Value>) -> Result<Repaired, RepairError> {
    shared().repair(text, schema)
}

/// Repairs `text` into a `T`: the JSON Schema is generated from `T` with `schemars` (once per
/// type) and the same pipeline runs; then the value is deserialized.
///
/// ```
/// #[derive(serde::Deserialize, schemars::JsonSchema, Debug, PartialEq)]
/// struct Verdict { label: String, confidence: f64 }
///
/// let (verdict, report) = keel_repair::repair::<Verdict>("{label: 'ok', Confidence: '0.5'}").unwrap();
/// assert_eq!(verdict, Verdict { label: "ok".into(), confidence: 0.5 });
/// assert!(report.has(keel_repair::Strategy::KeyMatch));
/// ```
///
/// # Errors
/// As [`Repairer::repair`], plus [`RepairError::Deserialize`] when the valid value still does not
/// fit the type (constraints the schema cannot express).
pub fn repair<T: DeserializeOwned + schemars::JsonSchema>(text: &str) -> Result<(T, Report), RepairError> {
    static SCHEMAS: LazyLock<Mutex<HashMap<Cow<'static, str>, Arc<Value>>>> = LazyLock::new(Default::default);
    let id = T::schema_id();
    let found = SCHEMAS.lock().get(&id).cloned();
    let schema = match found {
        Some(schema) => schema,
        None => {
            let schema = Arc::new(Value::from(schemars::schema_for!(T)));
            SCHEMAS.lock().insert(id, Arc::clone(&schema));
            schema
        }
    };
    let repaired = shared().repair(text, Some(&schema))?;
    let (_, value, report) = repaired.into_parts();
    let value = serde_json::from_value(value).map_err(|err| RepairError::Deserialize { message: err.to_string() })?;
    Ok((value, report))
}

/// The best value a possibly incomplete document already holds. See [`Repairer::partial`].
///
/// ```
/// use serde_json::json;
/// assert_eq!(keel_repair::partial(r#"{"city": "Ber"#), Some(json!({"city": "Ber"})));
/// assert_eq!(keel_repair::partial(r#"{"a": 1, "b"#), Some(json!({"a": 1})));
/// assert_eq!(keel_repair::partial("Thinking about it"), None);
/// ```
#[must_use]
pub fn partial(text: &str) -> Option<Value> {
    let options = extract::Options { individuals: false, partial: true };
    extract::extract(text, options).ok()?.into_iter().next().and_then(|choice| choice.content.into_value(text).ok())
}
