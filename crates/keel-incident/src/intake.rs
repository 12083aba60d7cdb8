//! Events posted from outside: the bodies of `POST /keel/events` and Alertmanager's webhook
//! (payload version 4), read into [`NewIncidentEvent`]s. Pure; any bytes give events or an
//! [`IntakeError`] that says what to send instead.

use std::collections::BTreeMap;

use keel_session::{Effect, NewIncidentEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::kinds;
use crate::rules;

/// The event types `POST /keel/events` accepts.
pub const EVENT_TYPES: [&str; 6] =
    ["session.timeout", "session.active", "upstream.down", "upstream.up", "alert.firing", "alert.resolved"];

/// Why a posted body was refused (answered 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// Not JSON, or not the shape of its type.
    #[error("{0}")]
    Invalid(String),
    /// A `type` keel does not know.
    #[error("unknown event type '{0}'; accepted types: {types}", types = EVENT_TYPES.join(", "))]
    UnknownType(String),
}

/// One posted event, by its `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum Posted {
    #[serde(rename = "session.timeout")]
    SessionTimeout {
        session_id: String,
        agent: Option<String>,
        note: Option<String>,
        detail: Option<Map<String, Value>>,
    },
    #[serde(rename = "session.active")]
    SessionActive { session_id: String, note: Option<String> },
    #[serde(rename = "upstream.down")]
    UpstreamDown {
        upstream: String,
        model: Option<String>,
        message: Option<String>,
        detail: Option<Map<String, Value>>,
    },
    #[serde(rename = "upstream.up")]
    UpstreamUp { upstream: String, model: Option<String>, message: Option<String> },
    #[serde(rename = "alert.firing")]
    AlertFiring { fingerprint: String, title: String, message: Option<String>, detail: Option<Map<String, Value>> },
    #[serde(rename = "alert.resolved")]
    AlertResolved { fingerprint: String, message: Option<String> },
}

/// Reads a `POST /keel/events` body: one event object, or an array of them (at most 100).
pub fn read_events(body: &[u8]) -> Result<Vec<NewIncidentEvent>, IntakeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|error| IntakeError::Invalid(format!("the body is not JSON: {error}")))?;
    let items = match value {
        Value::Array(items) if items.len() <= 100 => items,
        Value::Array(items) => {
            return Err(IntakeError::Invalid(format!("at most 100 events per request, got {}", items.len())));
        }
        object @ Value::Object(_) => vec![object],
        _ => return Err(IntakeError::Invalid("the body must be an event object or an array of them".to_owned())),
    };
    items.into_iter().map(read_event).collect()
}

fn read_event(value: Value) -> Result<NewIncidentEvent, IntakeError> {
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err(IntakeError::Invalid("\"type\" must be a string".to_owned())),
        None => {
            return Err(IntakeError::Invalid(format!(
                "an event needs a \"type\"; accepted types: {}",
                EVENT_TYPES.join(", ")
            )));
        }
    };
    if !EVENT_TYPES.contains(&kind.as_str()) {
        return Err(IntakeError::UnknownType(kind));
    }
    let posted: Posted =
        serde_json::from_value(value).map_err(|error| IntakeError::Invalid(format!("event '{kind}': {error}")))?;
    Ok(event_of(posted, &kind))
}

fn event_of(posted: Posted, event: &str) -> NewIncidentEvent {
    let mut detail = Map::new();
    let (fingerprint, kind, title, upstream, model, effect) = match posted {
        Posted::SessionTimeout { session_id, agent, note, detail: extra } => {
            detail.extend(extra.unwrap_or_default());
            put(&mut detail, "session_id", Some(&session_id));
            put(&mut detail, "agent", agent.as_deref());
            put(&mut detail, "note", note.as_deref());
            let title = match &agent {
                Some(agent) => format!("session {session_id} of agent {agent} timed out"),
                None => format!("session {session_id} timed out"),
            };
            (
                format!("{}:{session_id}", kinds::SESSION_TIMEOUT),
                kinds::SESSION_TIMEOUT,
                title,
                None,
                None,
                Effect::Open,
            )
        }
        Posted::SessionActive { session_id, note } => {
            put(&mut detail, "session_id", Some(&session_id));
            put(&mut detail, "note", note.as_deref());
            let title = format!("session {session_id} timed out");
            (
                format!("{}:{session_id}", kinds::SESSION_TIMEOUT),
                kinds::SESSION_TIMEOUT,
                title,
                None,
                None,
                Effect::Resolve,
            )
        }
        Posted::UpstreamDown { upstream, model, message, detail: extra } => {
            detail.extend(extra.unwrap_or_default());
            put(&mut detail, "message", message.as_deref());
            upstream_event(upstream, model, Effect::Open)
        }
        Posted::UpstreamUp { upstream, model, message } => {
            put(&mut detail, "message", message.as_deref());
            upstream_event(upstream, model, Effect::Resolve)
        }
        Posted::AlertFiring { fingerprint, title, message, detail: extra } => {
            detail.extend(extra.unwrap_or_default());
            put(&mut detail, "message", message.as_deref());
            (format!("{}:{fingerprint}", kinds::EXTERNAL), kinds::EXTERNAL, title, None, None, Effect::Open)
        }
        Posted::AlertResolved { fingerprint, message } => {
            put(&mut detail, "message", message.as_deref());
            let title = format!("alert {fingerprint}");
            (format!("{}:{fingerprint}", kinds::EXTERNAL), kinds::EXTERNAL, title, None, None, Effect::Resolve)
        }
    };
    detail.insert("source".to_owned(), json!("api"));
    NewIncidentEvent {
        fingerprint,
        kind: kind.to_owned(),
        title,
        upstream,
        model,
        event: event.to_owned(),
        effect,
        detail: Value::Object(detail),
    }
}

type Parts = (String, &'static str, String, Option<String>, Option<String>, Effect);

fn upstream_event(upstream: String, model: Option<String>, effect: Effect) -> Parts {
    let fingerprint = rules::fingerprint(&upstream, model.as_deref());
    let (kind, title) = match &model {
        Some(model) => (kinds::MODEL_FAILING, format!("model {model} on upstream {upstream} is failing")),
        None => (kinds::UPSTREAM_DOWN, format!("upstream {upstream} is not answering")),
    };
    (fingerprint, kind, title, Some(upstream), model, effect)
}

fn put(detail: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        detail.insert(key.to_owned(), json!(value));
    }
}

/// Alertmanager's webhook body (version 4); only what keel reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertmanagerPayload {
    version: String,
    #[serde(default)]
    external_url: Option<String>,
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    fingerprint: String,
}

/// Reads an Alertmanager webhook body (payload version 4): one event per alert, its
/// `fingerprint` as the incident's, `firing` opening and `resolved` resolving it.
pub fn read_alertmanager(body: &[u8]) -> Result<Vec<NewIncidentEvent>, IntakeError> {
    let payload: AlertmanagerPayload = serde_json::from_slice(body)
        .map_err(|error| IntakeError::Invalid(format!("not an Alertmanager webhook body (version 4): {error}")))?;
    if payload.version != "4" {
        return Err(IntakeError::Invalid(format!(
            "Alertmanager payload version '{}' is not supported; keel reads version 4",
            payload.version
        )));
    }
    payload.alerts.into_iter().map(|alert| alert_event(alert, payload.external_url.as_deref())).collect()
}

fn alert_event(alert: Alert, external_url: Option<&str>) -> Result<NewIncidentEvent, IntakeError> {
    let (event, effect) = match alert.status.as_str() {
        "firing" => ("alertmanager.firing", Effect::Open),
        "resolved" => ("alertmanager.resolved", Effect::Resolve),
        other => {
            return Err(IntakeError::Invalid(format!("alert status '{other}' is neither 'firing' nor 'resolved'")));
        }
    };
    if alert.fingerprint.is_empty() {
        return Err(IntakeError::Invalid("an alert needs a non-empty \"fingerprint\"".to_owned()));
    }
    let name = alert.labels.get("alertname").cloned().unwrap_or_else(|| "alert".to_owned());
    let title = alert.annotations.get("summary").cloned().unwrap_or_else(|| format!("{name} is firing"));
    let detail = json!({
        "source": "alertmanager",
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at,
        "generator_url": alert.generator_url,
        "external_url": external_url,
    });
    Ok(NewIncidentEvent {
        fingerprint: format!("alertmanager:{}", alert.fingerprint),
        kind: kinds::EXTERNAL.to_owned(),
        title,
        upstream: alert.labels.get("upstream").cloned(),
        model: alert.labels.get("model").cloned(),
        event: event.to_owned(),
        effect,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_timeout_opens_an_incident_per_session() {
        let events = read_events(br#"{"type": "session.timeout", "session_id": "chat-7", "agent": "triage"}"#).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].fingerprint, "session_timeout:chat-7");
        assert_eq!(events[0].effect, Effect::Open);
        assert_eq!(events[0].title, "session chat-7 of agent triage timed out");
        assert_eq!(events[0].detail["source"], "api");
    }

    #[test]
    fn unknown_types_list_the_accepted_ones() {
        let error = read_events(br#"{"type": "disk.full"}"#).unwrap_err();
        assert_eq!(error, IntakeError::UnknownType("disk.full".to_owned()));
        assert!(error.to_string().contains("session.timeout, session.active, upstream.down"), "{error}");
    }

    #[test]
    fn unknown_fields_and_missing_ones_are_refused() {
        let extra = read_events(br#"{"type": "session.timeout", "session_id": "a", "sesion": "b"}"#).unwrap_err();
        assert!(extra.to_string().contains("unknown field `sesion`"), "{extra}");
        let missing = read_events(br#"{"type": "upstream.down"}"#).unwrap_err();
        assert!(missing.to_string().contains("missing field `upstream`"), "{missing}");
        assert!(read_events(b"[1]").is_err());
        assert!(read_events(b"nope").is_err());
    }

    #[test]
    fn upstream_events_share_the_breakers_fingerprint() {
        let events = read_events(
            br#"[{"type": "upstream.down", "upstream": "local"}, {"type": "upstream.up", "upstream": "local"}]"#,
        )
        .unwrap();
        assert_eq!(events[0].fingerprint, rules::fingerprint("local", None));
        assert_eq!((events[0].effect, events[1].effect), (Effect::Open, Effect::Resolve));
    }

    #[test]
    fn alertmanager_alerts_use_their_fingerprint() {
        let body =
            br#"{"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "keel",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "alerts": [{"status": "firing", "labels": {"alertname": "OllamaDown", "upstream": "local"},
                        "annotations": {"summary": "Ollama is down"}, "startsAt": "2026-12-04T03:00:00Z",
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph", "fingerprint": "c0ffee"},
                       {"status": "resolved", "labels": {"alertname": "DiskFull"}, "annotations": {},
                        "fingerprint": "beef"}]}"#;
        let events = read_alertmanager(body).unwrap();
        assert_eq!(events[0].fingerprint, "alertmanager:c0ffee");
        assert_eq!((events[0].title.as_str(), events[0].effect), ("Ollama is down", Effect::Open));
        assert_eq!(events[0].upstream.as_deref(), Some("local"));
        assert_eq!(events[1].effect, Effect::Resolve);
        let old = read_alertmanager(br#"{"version": "3", "alerts": []}"#).unwrap_err();
        assert!(old.to_string().contains("version 4"), "{old}");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_events_or_an_error(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = read_events(&body);
            let _ = read_alertmanager(&body);
        }
    }
}
