//! Every incident kind's template runbook is whole: the four sections, the failing upstream's
//! address, the output of the checks keel ran, and no placeholder text; a model's answer is
//! taken only when it has the runbook's shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_incident::kinds;
use keel_incident::runbook::{self, Check, Deployment, Evidence, RouteFacts, UpstreamFacts, model, placeholders};
use keel_session::{Effect, Incident, IncidentEvent, IncidentStatus, PlaybookEntry};
use serde_json::json;

fn deployment() -> Deployment {
    Deployment {
        keel_url: "http://127.0.0.1:11435".into(),
        upstreams: vec![
            UpstreamFacts { name: "local".into(), address: "http://127.0.0.1:11434".into(), kind: "ollama".into() },
            UpstreamFacts { name: "backup".into(), address: "http://10.0.0.2:8080".into(), kind: "openai".into() },
        ],
        routes: vec![RouteFacts { model: "llama3.2".into(), targets: vec!["local".into(), "backup:qwen2.5".into()] }],
    }
}

fn evidence(
    kind: &str,
    upstream: Option<&str>,
    model: Option<&str>,
    details: Vec<(&str, serde_json::Value)>,
) -> Evidence {
    let incident = Incident {
        id: "inc_0192".into(),
        fingerprint: format!("{kind}:x"),
        kind: kind.into(),
        title: format!("{kind} happened"),
        status: IncidentStatus::Open,
        upstream: upstream.map(Into::into),
        model: model.map(Into::into),
        opened_at: 1_796_356_800_000,
        updated_at: 1_796_356_860_000,
        mitigated_at: None,
        resolved_at: None,
        event_count: details.len() as u64,
    };
    let events = details
        .into_iter()
        .enumerate()
        .map(|(index, (event, detail))| IncidentEvent {
            incident_id: incident.id.clone(),
            seq: index as u64 + 1,
            at: incident.opened_at + index as i64 * 1000,
            event: event.into(),
            effect: Effect::Note,
            detail,
        })
        .collect();
    let checks = vec![Check {
        name: "local is Ollama up".into(),
        command: "curl -sS --max-time 5 http://127.0.0.1:11434/api/version".into(),
        at: "2026-12-04T04:01:00.000Z".into(),
        ok: false,
        output: "could not connect: tcp connect error: Connection refused (os error 111)".into(),
    }];
    Evidence {
        incident,
        events,
        playbook: vec![PlaybookEntry {
            fingerprint: "f".into(),
            fix: "sudo systemctl restart ollama".into(),
            incident_id: "inc_0001".into(),
            at: 1_796_000_000_000,
        }],
        deployment: deployment(),
        checks,
        transcript: vec![("user".into(), "where is my order?".into()), ("assistant".into(), "Let me look.".into())],
    }
}

fn every_kind() -> Vec<Evidence> {
    vec![
        evidence(
            kinds::UPSTREAM_DOWN,
            Some("local"),
            None,
            vec![
                (
                    "breaker.opened",
                    json!({"why": "refused: connection refused", "address": "http://127.0.0.1:11434", "cooldown": "5s", "nothing": null}),
                ),
                ("fallback.served", json!({"served_by": "backup:qwen2.5", "answers": 412})),
            ],
        ),
        evidence(
            kinds::MODEL_FAILING,
            Some("local"),
            Some("llama3.2"),
            vec![("breaker.opened", json!({"why": "model_not_found: model 'llama3.2' not found"}))],
        ),
        evidence(
            kinds::SESSION_TIMEOUT,
            None,
            None,
            vec![("session.timeout", json!({"session_id": "chat-7", "agent": "triage"}))],
        ),
        evidence(
            kinds::STRUCTURED_OUTPUT,
            Some("local"),
            Some("llama3.2"),
            vec![("structured.failed", json!({"count": 12}))],
        ),
        evidence(kinds::SHEDDING, Some("local"), None, vec![("admission.shed", json!({"count": 40}))]),
        evidence(kinds::RATE_LIMITED, None, None, vec![("limit.refused", json!({"count": 500}))]),
        evidence(
            kinds::EXTERNAL,
            None,
            None,
            vec![(
                "alertmanager.firing",
                json!({"labels": {"alertname": "DiskFull"}, "ends_at": null, "generator_url": "http://prom:9090/graph"}),
            )],
        ),
    ]
}

#[test]
fn every_kind_renders_whole_with_no_placeholders() {
    for evidence in every_kind() {
        let runbook = runbook::write_template(&evidence).unwrap();
        let text = &runbook.markdown;
        for section in ["## Failure modes", "## Alerts", "## Incident response", "## Health checks"] {
            assert!(text.contains(section), "{}: no {section}\n{text}", evidence.incident.kind);
        }
        assert_eq!(placeholders::find(text), None, "{}: placeholder in\n{text}", evidence.incident.kind);
        for forbidden in ["undefined", "null", "[object Object]", "{{", "TODO", "none", "None"] {
            assert!(!text.contains(forbidden), "{}: {forbidden:?} in\n{text}", evidence.incident.kind);
        }
        assert!(text.contains("Connection refused (os error 111)"), "the check's output is shown\n{text}");
        assert!(text.contains("2026-12-04T04:01:00.000Z"), "the check's time is shown");
        assert!(text.contains("sudo systemctl restart ollama"), "the playbook is shown");
        assert_eq!(runbook.source, "template");
    }
}

#[test]
fn an_upstream_down_runbook_names_the_address_what_keel_did_and_the_cause() {
    let evidence = &every_kind()[0];
    let text = runbook::write_template(evidence).unwrap().markdown;
    assert!(text.contains("curl -sS --max-time 5 http://127.0.0.1:11434/api/version"), "{text}");
    assert!(text.contains("412 requests were answered by backup:qwen2.5"), "{text}");
    assert!(text.contains("**Cause:** Nothing accepts connections at http://127.0.0.1:11434"), "{text}");
    let fixed_before = text.find("Fixed before").unwrap();
    assert!(fixed_before < text.find("## Incident response").unwrap(), "the confirmed fix comes first");
}

#[test]
fn an_undecided_cause_says_unknown_and_the_check_that_tells() {
    let mut evidence = every_kind().remove(0);
    evidence.checks[0].ok = true;
    evidence.checks[0].output = "HTTP 200: {\"version\":\"0.5.1\"}".into();
    let text = runbook::write_template(&evidence).unwrap().markdown;
    assert!(text.contains("**Cause unknown.**"), "{text}");
    assert!(text.contains("The check that tells them apart: `journalctl -u ollama"), "{text}");
}

#[test]
fn the_model_prompt_fits_a_small_context_and_carries_the_evidence() {
    let mut evidence = every_kind().remove(0);
    for seq in 0..500 {
        evidence.events.push(evidence.events[0].clone());
        evidence.events.last_mut().unwrap().seq = seq + 3;
    }
    let prompt = model::prompt(&evidence);
    assert!(prompt.len() <= model::MAX_PROMPT_BYTES, "{}", prompt.len());
    assert!(prompt.contains("ollama server at http://127.0.0.1:11434"), "{prompt}");
    assert!(prompt.contains("Connection refused"), "{prompt}");
}

#[test]
fn model_answers_are_taken_only_whole() {
    let good = json!({
        "what_broke": "Ollama at 127.0.0.1:11434 stopped.", "affected": "llama3.2 agents", "keel_did": "fell back",
        "todo": ["restart ollama"], "cause": {"known": true, "text": "stopped", "tell_apart": null},
        "failure_modes": [{"name": "stopped", "signs": "refused", "fix": "restart"}],
        "alerts": [{"name": "Down", "when": "keel_upstream_healthy == 0"}],
        "response": [{"action": "restart", "command": "sudo systemctl restart ollama"}],
        "health_checks": [{"command": "curl http://127.0.0.1:11434/api/version", "expect": "a version"}]
    });
    assert!(model::accept(good.clone()).is_ok());
    let mut placeholder = good.clone();
    placeholder["what_broke"] = json!("TODO describe");
    assert!(model::accept(placeholder).unwrap_err().contains("placeholder"));
    let mut empty = good.clone();
    empty["response"] = json!([]);
    assert!(model::accept(empty).is_err());
    assert!(model::accept(json!({"what_broke": "x"})).is_err());
    assert!(model::accept(json!("garbage")).is_err());
    // The schema keel sends is itself valid JSON Schema with every field required.
    let schema = model::schema();
    assert_eq!(schema["required"].as_array().unwrap().len(), 9);
}
