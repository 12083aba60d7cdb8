//! Webhook bodies and their signatures per the Standard Webhooks spec
//! (<https://www.standardwebhooks.com>): `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` = `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")), the
//! secret written as `whsec_` + base64 of its bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit as _, Mac as _};
use keel_session::{Incident, IncidentStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What every Standard Webhooks secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// A webhook signing secret (the bytes behind `whsec_…`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Reads `whsec_` + base64 (the prefix may be left out, as the spec's libraries allow).
    pub fn parse(text: &str) -> Result<Secret, String> {
        let encoded = text.trim().strip_prefix(SECRET_PREFIX).unwrap_or(text.trim());
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|error| format!("a webhook secret must be '{SECRET_PREFIX}' + base64 ({error})"))?;
        if bytes.len() < 16 {
            return Err(format!(
                "a webhook secret must hold at least 16 bytes, this one holds {}; make one with `openssl rand -base64 32`",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }

    /// The `webhook-signature` value for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable_hmac());
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// HMAC takes keys of any length; this is never reached.
fn unreachable_hmac() -> hmac::Hmac<sha2::Sha256> {
    #[allow(clippy::expect_used, reason = "HMAC accepts every key length")]
    hmac::Hmac::<sha2::Sha256>::new_from_slice(&[0]).expect("HMAC accepts every key length")
}

/// The shape of a webhook's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"type", "timestamp", "data": {"incident", "from", "to", …}}`.
    #[default]
    Json,
    /// A Slack incoming webhook: `{"text": …}`.
    Slack,
    /// A Discord webhook: `{"content": …}`.
    Discord,
}

impl Format {
    /// `json`, `slack` or `discord` (as written in `[[notify]] format`, and as a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
            Format::Discord => "discord",
        }
    }
}

/// One state change of an incident, as a webhook tells it.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// The incident as it is after the change.
    pub incident: &'a Incident,
    /// Its status before (`None`: it just opened).
    pub from: Option<IncidentStatus>,
    /// Its status after.
    pub to: IncidentStatus,
    /// When it changed (Unix milliseconds).
    pub at: i64,
    /// Where its runbook can be read (`http://…/keel/incidents/ID/runbook`), if known.
    pub runbook_url: Option<String>,
}

impl Change<'_> {
    /// `incident.opened`, `incident.mitigated`, `incident.reopened` or `incident.resolved`.
    pub fn event_type(&self) -> &'static str {
        match (self.from, self.to) {
            (None, _) => "incident.opened",
            (_, IncidentStatus::Mitigated) => "incident.mitigated",
            (_, IncidentStatus::Open) => "incident.reopened",
            (_, IncidentStatus::Resolved) => "incident.resolved",
        }
    }

    /// One line for a person: what changed and what to do.
    pub fn line(&self) -> String {
        let incident = self.incident;
        let what = match self.event_type() {
            "incident.opened" if incident.status == IncidentStatus::Mitigated => "opened (keel serves from a fallback)",
            "incident.opened" => "opened",
            "incident.mitigated" => "mitigated: keel serves from a fallback",
            "incident.reopened" => "open again: the fallback no longer covers it",
            _ => "resolved",
        };
        let read = match &self.runbook_url {
            Some(url) if self.to != IncidentStatus::Resolved => format!(" Runbook: {url}"),
            _ => String::new(),
        };
        format!("[keel] {} {what}: {}.{read}", incident.id, incident.title)
    }

    /// The body in `format`.
    pub fn body(&self, format: Format) -> Vec<u8> {
        let value = match format {
            Format::Json => json!({
                "type": self.event_type(),
                "timestamp": rfc3339(self.at),
                "data": {
                    "incident": self.incident,
                    "from": self.from,
                    "to": self.to,
                    "summary": self.line(),
                    "runbook_url": self.runbook_url,
                },
            }),
            Format::Slack => json!({ "text": self.line() }),
            Format::Discord => json!({ "content": self.line() }),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

/// Unix milliseconds as RFC 3339 in UTC (`2026-12-04T03:00:00.000Z`); times before 1970 read as
/// 1970.
pub fn rfc3339(millis: i64) -> String {
    let since_epoch = std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_spec_example() {
        // The example of the Standard Webhooks spec (and its reference libraries' tests).
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn bad_secrets_say_how_to_make_one() {
        assert!(Secret::parse("whsec_!!").unwrap_err().contains("base64"));
        assert!(Secret::parse("whsec_c2hvcnQ=").unwrap_err().contains("openssl rand"));
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_356_800_123), "2026-12-04T04:00:00.123Z");
    }
}
