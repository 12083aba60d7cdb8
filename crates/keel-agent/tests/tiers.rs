#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! The three tiers end to end: primary (repaired) parse, the caller's fallback (re-validated), the
//! canned value (validated at build time), the events and the failure.

use std::sync::Arc;

use keel_agent::{BuildError, Event, FallbackOutcome, StructuredOutput, Tier, UntypedOutput};
use keel_repair::{CompiledSchema, RepairError, Strategy as Fix};
use parking_lot::Mutex;
use proptest::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Label {
    Bug,
    Billing,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Verdict {
    label: Label,
    #[schemars(range(min = 0, max = 1))]
    confidence: f64,
}

fn verdict(label: Label, confidence: f64) -> Verdict {
    Verdict { label, confidence }
}

/// Event kinds in the order the handler saw them.
fn recorder() -> (Arc<Mutex<Vec<Event>>>, impl Fn(&Event) + Send + Sync + 'static) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (events, move |event: &Event| sink.lock().push(event.clone()))
}

fn kinds(events: &Mutex<Vec<Event>>) -> Vec<&'static str> {
    events.lock().iter().map(Event::kind).collect()
}

#[test]
fn valid_output_is_the_primary_tier_with_a_clean_report() {
    let (events, handler) = recorder();
    let output = StructuredOutput::<Verdict>::builder()
        .fallback(|_, _| panic!("the fallback must not run when the primary parse succeeds"))
        .canned(verdict(Label::Other, 0.0))
        .on_event(handler)
        .build()
        .unwrap();
    let parsed = output.parse(r#"{"label": "billing", "confidence": 0.75}"#).unwrap();
    assert_eq!(parsed.tier, Tier::Primary);
    assert_eq!(parsed.value, verdict(Label::Billing, 0.75));
    assert!(parsed.report.unwrap().is_clean());
    assert!(parsed.primary_error.is_none());
    assert!(events.lock().is_empty());
}

#[test]
fn broken_output_is_repaired_in_the_primary_tier_with_a_report() {
    let output = StructuredOutput::<Verdict>::builder().build().unwrap();
    let parsed =
        output.parse("<think>hmm</think>Here you go:\n```json\n{'Label': 'BUG', confidence: '0.9',}\n```").unwrap();
    assert_eq!(parsed.tier, Tier::Primary);
    assert_eq!(parsed.value, verdict(Label::Bug, 0.9));
    let report = parsed.report.unwrap();
    assert!(!report.is_clean());
    assert!(report.has(Fix::KeyMatch), "{report:?}");
    assert!(report.has(Fix::TrailingComma), "{report:?}");
}

#[test]
fn the_fallback_gets_the_raw_text_and_the_primary_error() {
    let seen = Arc::new(Mutex::new(None));
    let sink = Arc::clone(&seen);
    let (events, handler) = recorder();
    let output = StructuredOutput::<Verdict>::builder()
        .fallback(move |raw, error| {
            *sink.lock() = Some((raw.to_owned(), error.clone()));
            Some(verdict(Label::Billing, 0.4))
        })
        .on_event(handler)
        .build()
        .unwrap();
    let parsed = output.parse("It is about an invoice, I think.").unwrap();
    assert_eq!(parsed.tier, Tier::Fallback);
    assert_eq!(parsed.value, verdict(Label::Billing, 0.4));
    assert!(parsed.report.is_none());
    assert_eq!(parsed.primary_error, Some(RepairError::NoJson));
    assert_eq!(*seen.lock(), Some(("It is about an invoice, I think.".to_owned(), RepairError::NoJson)));
    assert_eq!(*events.lock(), vec![Event::Fallback { primary_error: RepairError::NoJson }]);
}

#[test]
fn an_invalid_fallback_value_is_rejected_and_the_canned_value_used() {
    let (events, handler) = recorder();
    let output = StructuredOutput::<Verdict>::builder()
        .fallback(|_, _| Some(verdict(Label::Bug, 5.0)))
        .canned(verdict(Label::Other, 0.0))
        .on_event(handler)
        .build()
        .unwrap();
    // A required field is missing: the engine refuses rather than inventing it.
    let parsed = output.parse(r#"{"label": "bug"}"#).unwrap();
    assert_eq!(parsed.tier, Tier::Canned);
    assert_eq!(parsed.value, verdict(Label::Other, 0.0));
    assert_eq!(parsed.primary_error.as_ref().map(RepairError::kind), Some("schema"));

    let events = events.lock();
    assert_eq!(events.iter().map(Event::kind).collect::<Vec<_>>(), ["fallback_rejected", "canned"]);
    let Event::FallbackRejected { problems, .. } = &events[0] else { panic!("{events:?}") };
    assert!(problems.iter().any(|p| p.contains("/confidence")), "{problems:?}");
    let Event::Canned { fallback: FallbackOutcome::Rejected { problems: rejected }, .. } = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(rejected, problems);
}

#[test]
fn a_declining_fallback_falls_through_to_the_canned_value() {
    let (events, handler) = recorder();
    let output = StructuredOutput::<Verdict>::builder()
        .fallback(|_, _| None)
        .canned(verdict(Label::Other, 0.0))
        .on_event(handler)
        .build()
        .unwrap();
    assert_eq!(output.parse("").unwrap().tier, Tier::Canned);
    assert_eq!(
        *events.lock(),
        vec![Event::Canned { primary_error: RepairError::Empty, fallback: FallbackOutcome::Declined }]
    );
}

#[test]
fn an_invalid_canned_value_is_a_build_error() {
    let err = StructuredOutput::<Verdict>::builder().canned(verdict(Label::Bug, -2.0)).build().unwrap_err();
    let BuildError::InvalidCanned { problems } = &err else { panic!("{err:?}") };
    assert!(problems.iter().any(|p| p.contains("/confidence")), "{problems:?}");
    assert!(err.to_string().starts_with("the canned value does not satisfy the schema: "), "{err}");

    // The same check for untyped output.
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    let err = UntypedOutput::with_schema(schema).canned(json!({"n": "seven"})).build().unwrap_err();
    assert!(matches!(err, BuildError::InvalidCanned { .. }), "{err:?}");
}

#[test]
fn when_every_tier_fails_the_failure_says_why() {
    let (events, handler) = recorder();
    let output = StructuredOutput::<Verdict>::builder()
        .fallback(|_, _| Some(verdict(Label::Bug, 1.5)))
        .on_event(handler)
        .build()
        .unwrap();
    let failure = output.parse("I could not decide.").unwrap_err();
    assert_eq!(failure.primary, RepairError::NoJson);
    assert!(matches!(&failure.fallback, FallbackOutcome::Rejected { problems } if !problems.is_empty()));
    let text = failure.to_string();
    assert!(text.contains("primary parse failed (no JSON found"), "{text}");
    assert!(text.contains("the fallback's value was rejected"), "{text}");
    assert!(text.contains("no canned value configured"), "{text}");
    assert_eq!(kinds(&events), ["fallback_rejected", "failed"]);

    let bare = StructuredOutput::<Verdict>::builder().build().unwrap();
    let failure = bare.parse("{customer_name}").unwrap_err();
    assert_eq!(failure.primary.kind(), "not_json");
    assert_eq!(failure.fallback, FallbackOutcome::Absent);
    assert!(failure.to_string().contains("no fallback configured"));
}

#[test]
fn events_reach_every_handler_in_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (first, second) = (Arc::clone(&log), Arc::clone(&log));
    let output = StructuredOutput::<Verdict>::builder()
        .fallback(|raw, _| match raw {
            "good fallback" => Some(verdict(Label::Bug, 0.5)),
            "bad fallback" => Some(verdict(Label::Bug, 9.0)),
            _ => None,
        })
        .canned(verdict(Label::Other, 0.0))
        .on_event(move |event| first.lock().push(format!("a:{}", event.kind())))
        .on_event(move |event| second.lock().push(format!("b:{}", event.kind())))
        .build()
        .unwrap();
    for raw in [r#"{"label": "bug", "confidence": 1}"#, "good fallback", "bad fallback", "nothing"] {
        output.parse(raw).unwrap();
    }
    assert_eq!(
        *log.lock(),
        [
            "a:fallback",
            "b:fallback",
            "a:fallback_rejected",
            "b:fallback_rejected",
            "a:canned",
            "b:canned",
            "a:canned",
            "b:canned"
        ]
    );
}

#[test]
fn untyped_output_validates_against_the_given_schema() {
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
        "additionalProperties": false
    });
    let (events, handler) = recorder();
    let output = UntypedOutput::with_schema(schema)
        .fallback(|raw, _| raw.strip_prefix("city:").map(|city| json!({"city": city.trim(), "days": 0})))
        .canned(json!({"city": "unknown", "days": 1}))
        .on_event(handler)
        .build()
        .unwrap();
    assert_eq!(
        output.parse("{city: 'Berlin', days: '3', extra: 1}").unwrap().value,
        json!({"city": "Berlin", "days": 3})
    );
    // days: 0 breaks the minimum: the fallback's value is rejected.
    let parsed = output.parse("city: Paris").unwrap();
    assert_eq!((parsed.tier, parsed.value), (Tier::Canned, json!({"city": "unknown", "days": 1})));
    assert_eq!(kinds(&events), ["fallback_rejected", "canned"]);
}

#[test]
fn one_output_serves_many_threads() {
    let output = StructuredOutput::<Verdict>::builder().canned(verdict(Label::Other, 0.0)).build().unwrap();
    std::thread::scope(|scope| {
        for i in 0..4 {
            let output = &output;
            scope.spawn(move || {
                for j in 0..50 {
                    let raw = if (i + j) % 2 == 0 { r#"{"label": "bug", "confidence": 0.1}"# } else { "nope" };
                    let parsed = output.parse(raw).unwrap();
                    assert_eq!(parsed.tier, if (i + j) % 2 == 0 { Tier::Primary } else { Tier::Canned });
                }
            });
        }
    });
}

/// Inputs that are sometimes valid, sometimes repairable, sometimes hopeless.
fn model_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[{}\\[\\]\"':,. a-zA-Z0-9_\\-\n`]{0,80}",
        (
            prop::sample::select(vec!["bug", "BUG", "billing", "Other", "nope", ""]),
            prop::sample::select(vec!["0.5", "'0.25'", "1", "-1", "7", "\"x\"", "null", ""]),
            prop::sample::select(vec!["", "Sure! ", "```json\n", "<think>x</think>"]),
            prop::sample::select(vec!["", ",", "}", "}\n```", ",}"]),
        )
            .prop_map(|(label, confidence, before, after)| format!(
                "{before}{{'label': '{label}', confidence: {confidence}{after}"
            )),
    ]
}

fn assert_valid(schema: &CompiledSchema, value: &impl Serialize) {
    let value = serde_json::to_value(value).unwrap();
    assert!(schema.is_valid(&value), "{value} does not satisfy the schema: {:?}", schema.problems(&value, 8));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_and_always_returns_a_valid_value(raw in model_text()) {
        // The fallback alternates between a valid value, an invalid one and declining.
        let fallback = |raw: &str, _: &RepairError| match raw.len() % 3 {
            0 => Some(verdict(Label::Billing, 0.5)),
            1 => Some(verdict(Label::Bug, f64::from(u32::try_from(raw.len()).unwrap_or(0)) + 2.0)),
            _ => None,
        };
        let with_canned =
            StructuredOutput::<Verdict>::builder().fallback(fallback).canned(verdict(Label::Other, 0.0)).build().unwrap();
        let without_canned = StructuredOutput::<Verdict>::builder().fallback(fallback).build().unwrap();
        let schema = CompiledSchema::compile(&Value::from(schemars::schema_for!(Verdict))).unwrap();

        let parsed = with_canned.parse(&raw).unwrap();
        assert_valid(&schema, &parsed.value);
        prop_assert_eq!(parsed.primary_error.is_some(), parsed.tier != Tier::Primary);

        match without_canned.parse(&raw) {
            Ok(parsed) => {
                prop_assert_ne!(parsed.tier, Tier::Canned);
                assert_valid(&schema, &parsed.value);
            }
            Err(failure) => prop_assert_ne!(raw.len() % 3, 0, "a valid fallback was available: {}", failure),
        }
    }

    #[test]
    fn untyped_parse_always_returns_a_valid_value(raw in model_text()) {
        let schema = json!({
            "type": "object",
            "properties": {"label": {"enum": ["bug", "billing", "other"]}, "confidence": {"type": "number"}},
            "required": ["label"]
        });
        let output = UntypedOutput::with_schema(schema.clone())
            .fallback(|raw, _| (raw.len() % 2 == 0).then(|| json!({"label": raw})))
            .canned(json!({"label": "other"}))
            .build()
            .unwrap();
        let parsed = output.parse(&raw).unwrap();
        assert_valid(&CompiledSchema::compile(&schema).unwrap(), &parsed.value);
    }
}
