//! Webhook delivery: one signed POST of an incident's state change to one `[[notify]]` endpoint,
//! and what its answer means for the job that carries it (done, again later, or never).

use std::time::Duration;

use keel_session::{Incident, IncidentStatus, now_millis};
use serde::{Deserialize, Serialize};

use http::{HeaderMap, HeaderValue};

use crate::webhook::{Change, Format, Secret};

/// How long one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest `Retry-After` honoured; longer ones are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One `[[notify]]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to POST.
    pub url: String,
    /// The body's shape.
    pub format: Format,
    /// The signing secret, if one is set.
    pub secret: Option<Secret>,
    /// CA certificates (DER) trusted for this receiver besides the system's (`ca_file`).
    pub ca: Vec<Vec<u8>>,
}

/// A delivery to make: what a `notify` job's payload holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The incident that changed.
    pub incident_id: String,
    /// Its status before (`None`: it opened).
    pub from: Option<IncidentStatus>,
    /// Its status after.
    pub to: IncidentStatus,
    /// When it changed (Unix milliseconds).
    pub at: i64,
    /// The index of the endpoint in `[[notify]]`.
    pub endpoint: usize,
    /// The `webhook-id`: the same on every attempt of this delivery.
    pub webhook_id: String,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver took it (2xx).
    Delivered,
    /// Try again, after at least this long (a `Retry-After`), with why.
    Again(Option<Duration>, String),
    /// The receiver answered 410 Gone: stop sending to it.
    Gone,
    /// The receiver refused it for good (a 4xx other than 408, 409, 425, 429), with why.
    Refused(String),
}

/// POSTs the change to the endpoint through `client`, signed when it has a secret.
pub async fn deliver(
    client: &keel_outbound::Client,
    endpoint: &Endpoint,
    delivery: &Delivery,
    incident: &Incident,
    runbook_url: Option<String>,
) -> Attempt {
    let change = Change { incident, from: delivery.from, to: delivery.to, at: delivery.at, runbook_url };
    let body = change.body(endpoint.format);
    let timestamp = now_millis() / 1000;
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static(concat!("keel/", env!("CARGO_PKG_VERSION"))));
    let signature = endpoint.secret.as_ref().map(|secret| secret.sign(&delivery.webhook_id, timestamp, &body));
    for (name, value) in [
        ("webhook-id", Some(delivery.webhook_id.clone())),
        ("webhook-timestamp", Some(timestamp.to_string())),
        ("webhook-signature", signature),
    ] {
        if let Some(value) = value.and_then(|value| HeaderValue::from_str(&value).ok()) {
            headers.insert(name, value);
        }
    }
    match client.post(&endpoint.url, headers, body, DELIVERY_TIMEOUT).await {
        Ok(answer) => judge(
            answer.status().as_u16(),
            answer.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()),
        ),
        Err(why) => Attempt::Again(None, why),
    }
}

/// What a receiver's status (and `Retry-After`) mean.
pub fn judge(status: u16, retry_after: Option<&str>) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered,
        410 => Attempt::Gone,
        408 | 409 | 425 | 429 | 500..=599 => {
            Attempt::Again(retry_after.and_then(parse_retry_after), format!("the receiver answered {status}"))
        }
        _ => Attempt::Refused(format!(
            "the receiver answered {status}; check the [[notify]] url and the receiver's logs"
        )),
    }
}

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            httpdate::parse_http_date(value).ok()?.duration_since(std::time::SystemTime::now()).unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_mean_what_webhook_senders_agree_on() {
        assert_eq!(judge(204, None), Attempt::Delivered);
        assert_eq!(judge(410, None), Attempt::Gone);
        assert_eq!(
            judge(429, Some("7")),
            Attempt::Again(Some(Duration::from_secs(7)), "the receiver answered 429".into())
        );
        assert!(matches!(judge(503, None), Attempt::Again(None, _)));
        assert!(matches!(judge(404, None), Attempt::Refused(_)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
