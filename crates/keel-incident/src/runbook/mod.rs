//! Runbooks written from evidence: [`gather`] collects the [`Evidence`] of an incident (its
//! timeline, the playbook, the deployment, read-only checks run now, a session's transcript);
//! [`write_template`] writes a runbook from it at once, by incident kind; [`write_with_model`]
//! asks a model for the words (validated, never placeholders) and falls back to nothing — the
//! caller keeps the template's runbook then.

pub mod content;
pub mod deployment;
pub mod evidence;
pub mod model;
pub mod placeholders;
pub mod render;

use keel_session::{IncidentStore, Runbook, Store, StoreError, now_millis};

pub use content::{Content, template_content};
pub use evidence::{Check, Deployment, Evidence, RouteFacts, UpstreamFacts};
pub use model::ModelWriter;

/// How many of a session's last messages a session-timeout runbook shows.
const TRANSCRIPT_MESSAGES: u64 = 8;

/// The `source` of a runbook written by the template.
pub const TEMPLATE_SOURCE: &str = "template";

/// Collects the evidence of incident `id` (`None` if there is no such incident), running the
/// read-only checks of its upstream and of keel itself now.
pub async fn gather(
    incidents: &dyn IncidentStore,
    sessions: Option<&dyn Store>,
    deployment: &Deployment,
    client: &reqwest::Client,
    id: &str,
) -> Result<Option<Evidence>, StoreError> {
    let Some(incident) = incidents.incident(id).await? else { return Ok(None) };
    let events = incidents.incident_events(id).await?;
    let playbook = incidents.playbook(&incident.fingerprint).await?;
    let mut checks = Vec::new();
    if let Some(upstream) = incident.upstream.as_deref().and_then(|name| deployment.upstream(name)) {
        checks.extend(evidence::check_upstream(client, upstream).await);
    }
    if !deployment.keel_url.is_empty() {
        let url = format!("{}/keel/health", deployment.keel_url.trim_end_matches('/'));
        checks.push(evidence::http_check(client, "keel itself", &url).await);
    }
    let session_id = events.iter().find_map(|event| event.detail.get("session_id")?.as_str().map(str::to_owned));
    let transcript = match (sessions, session_id) {
        (Some(sessions), Some(session_id)) => transcript(sessions, &session_id).await?,
        _ => Vec::new(),
    };
    Ok(Some(Evidence { incident, events, playbook, deployment: deployment.clone(), checks, transcript }))
}

/// The last messages of a session, oldest first.
async fn transcript(sessions: &dyn Store, id: &str) -> Result<Vec<(String, String)>, StoreError> {
    let Some(session) = sessions.get_session(id).await? else { return Ok(Vec::new()) };
    let after = session.message_count.saturating_sub(TRANSCRIPT_MESSAGES);
    let messages = sessions.messages(id, after, usize::try_from(TRANSCRIPT_MESSAGES).unwrap_or(8)).await?;
    Ok(messages.into_iter().map(|message| (message.role, message.content)).collect())
}

/// The runbook written by the template from `evidence`.
pub fn write_template(evidence: &Evidence) -> Result<Runbook, String> {
    let now = now_millis();
    let markdown = render::render(evidence, &template_content(evidence), TEMPLATE_SOURCE, now)?;
    Ok(Runbook {
        incident_id: evidence.incident.id.clone(),
        markdown,
        source: TEMPLATE_SOURCE.to_owned(),
        generated_at: now,
    })
}

/// The runbook written by the model route `route` through `writer`; `Err` (why) when the model
/// does not answer or its answer is not usable.
pub async fn write_with_model(evidence: &Evidence, writer: &dyn ModelWriter, route: &str) -> Result<Runbook, String> {
    let answer = writer.ask(route, model::SYSTEM, model::prompt(evidence), model::schema()).await?;
    let content = model::accept(answer)?;
    let now = now_millis();
    let source = format!("model:{route}");
    let markdown = render::render(evidence, &content, &source, now)?;
    if let Some(found) = placeholders::find(&markdown) {
        return Err(format!("the rendered runbook holds placeholder text ({found:?})"));
    }
    Ok(Runbook { incident_id: evidence.incident.id.clone(), markdown, source, generated_at: now })
}
