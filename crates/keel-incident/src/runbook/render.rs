//! A runbook as Markdown: [`Content`] and [`Evidence`] laid out by one template
//! (`runbook.md.j2`, minijinja, strict about undefined values). Values are prepared here as
//! plain strings — times as RFC 3339, event details as `key: value` — so that nothing
//! renders as `null`, `none` or a raw object.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;

use super::content::Content;
use super::evidence::{Check, Evidence, cut};
use crate::webhook::rfc3339;

const TEMPLATE: &str = include_str!("runbook.md.j2");

/// The longest event detail shown in the timeline, in bytes.
const MAX_DETAIL_SHOWN: usize = 300;

/// The most timeline rows shown (the first ones, and the last few).
const MAX_EVENTS_SHOWN: usize = 40;

#[derive(Serialize)]
struct View<'a> {
    id: &'a str,
    title: &'a str,
    status: &'a str,
    opened_at: String,
    resolved_at: Option<String>,
    event_count: u64,
    written_at: String,
    source: &'a str,
    content: &'a Content,
    playbook: Vec<PlaybookLine>,
    checks: &'a [Check],
    events: Vec<EventLine>,
    routes: Vec<RouteLine>,
    transcript: Vec<TranscriptLine>,
}

#[derive(Serialize)]
struct PlaybookLine {
    fix: String,
    incident_id: String,
    at: String,
}

#[derive(Serialize)]
struct EventLine {
    at: String,
    event: String,
    detail: String,
}

#[derive(Serialize)]
struct RouteLine {
    model: String,
    targets: String,
}

#[derive(Serialize)]
struct TranscriptLine {
    role: String,
    content: String,
}

/// Renders the runbook written by `source` (`template` or `model:<route>`) at `written_at`.
pub fn render(evidence: &Evidence, content: &Content, source: &str, written_at: i64) -> Result<String, String> {
    let incident = &evidence.incident;
    let view = View {
        id: &incident.id,
        title: &incident.title,
        status: incident.status.as_str(),
        opened_at: rfc3339(incident.opened_at),
        resolved_at: incident.resolved_at.map(rfc3339),
        event_count: incident.event_count,
        written_at: rfc3339(written_at),
        source,
        content,
        playbook: evidence
            .playbook
            .iter()
            .map(|entry| PlaybookLine {
                fix: one_line(&entry.fix),
                incident_id: entry.incident_id.clone(),
                at: rfc3339(entry.at),
            })
            .collect(),
        checks: &evidence.checks,
        events: timeline(evidence),
        routes: evidence
            .deployment
            .routes
            .iter()
            .map(|route| RouteLine { model: route.model.clone(), targets: route.targets.join(" → ") })
            .collect(),
        transcript: evidence
            .transcript
            .iter()
            .map(|(role, content)| TranscriptLine { role: role.clone(), content: one_line(&cut(content, 400)) })
            .collect(),
    };
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.trim_blocks(true).keep_trailing_newline(true);
    environment.set_syntax(syntax.build().map_err(|error| format!("runbook template syntax: {error}"))?);
    environment.add_template("runbook", TEMPLATE).map_err(|error| format!("runbook template: {error}"))?;
    let template = environment.get_template("runbook").map_err(|error| format!("runbook template: {error}"))?;
    template.render(minijinja::value::Serde(view)).map_err(|error| format!("runbook template: {error:#}"))
}

/// The timeline rows: all events when few, else the first ones and the last five.
fn timeline(evidence: &Evidence) -> Vec<EventLine> {
    let events = &evidence.events;
    let keep =
        |index: usize| events.len() <= MAX_EVENTS_SHOWN || index < MAX_EVENTS_SHOWN - 5 || index >= events.len() - 5;
    let mut lines = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if keep(index) {
            lines.push(EventLine {
                at: rfc3339(event.at),
                event: event.event.clone(),
                detail: detail_line(&event.detail),
            });
        } else if index == MAX_EVENTS_SHOWN - 5 {
            let skipped = events.len() - MAX_EVENTS_SHOWN;
            lines.push(EventLine {
                at: "…".to_owned(),
                event: format!("{skipped} more events"),
                detail: String::new(),
            });
        }
    }
    lines
}

/// An event's detail as `key: value; …` (nulls left out), safe inside a table cell.
fn detail_line(detail: &Value) -> String {
    let Value::Object(map) = detail else { return String::new() };
    let parts: Vec<String> = map
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| match value {
            Value::String(text) => format!("{key}: {text}"),
            other => format!("{key}: {other}"),
        })
        .collect();
    one_line(&cut(&parts.join("; "), MAX_DETAIL_SHOWN)).replace('|', "\\|")
}

/// `text` on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
