//! Stage: rate limits. Requests and tokens per minute per key (per client address without keys),
//! GCRA in this process or shared between keel instances through Redis ([`keel_limit`]).
//!
//! Takes the request head with its [`Sender`] (the [`Caller`], else the client's address): [`admit_request`] charges one
//! request before the body is read. After the body, [`reserve_tokens`]
//! reserves the tokens the request may use (its size and `num_predict` / `max_tokens`). The answer
//! goes out through [`Grant::meter`]: `RateLimit-*` headers, and a body that settles the
//! reservation from the token counts the model server reported when it ends.
//!
//! Answers by itself 429 in the endpoint's dialect with `Retry-After` and `RateLimit-*` when a
//! limit is used up, 429 without `Retry-After` when one request alone exceeds a whole minute's
//! tokens, and 503 when the shared store cannot be reached and `on_store_error = "closed"`.

use std::sync::Arc;

use axum::response::Response;
use http::request::Parts;
use keel_limit::{Decision, Quota};
use keel_telemetry::names;

use crate::answer_tail::{AnswerWatch, Tail, Usage, watched};
use crate::attempts::{Forward, Payload};
use crate::client::{Caller, Sender};
use crate::config::Config;
use crate::error::ProxyError;
use crate::rate_limits::RateLimits;

/// Tokens reserved for the answer when the request sets no `num_predict` / `max_tokens`.
pub(crate) const DEFAULT_ANSWER_RESERVATION: u64 = 512;

/// Bytes of a request body counted as one prompt token (a deliberate over-estimate: JSON syntax
/// counts too; the reservation is settled from the server's count after the answer).
const BYTES_PER_TOKEN: u64 = 4;

/// Who a limit applies to, as shown in errors and used in the limiter's keys.
pub(crate) struct Subject {
    /// `key 'agent'`, `client 10.0.0.7`.
    shown: String,
    /// `key:agent`, `ip:10.0.0.7`.
    id: String,
    requests_per_minute: (u64, &'static str),
    tokens_per_minute: (u64, &'static str),
}

impl Subject {
    /// The limiter's key for `unit` (`rpm`, `tpm`).
    fn key(&self, unit: &str) -> String {
        format!("{}:{unit}", self.id)
    }
}

/// What one subject's limits let through: carried to the answer, which reports and settles it.
pub(crate) struct Grant {
    subject: Subject,
    /// The request charged, with its quota and decision (for the `RateLimit-*` headers).
    requests: Option<(Quota, Decision)>,
    /// Tokens reserved, with their quota and decision.
    tokens: Option<(Quota, u64, Decision)>,
}

/// What the limits granted a request: under the caller's own limits, then under its route's.
#[derive(Default)]
pub(crate) struct Grants(Vec<Grant>);

impl Grants {
    /// Charges one request to `subject`'s requests per minute (found by [`subject`] or
    /// [`route_subject`]). A refusal gives back what the request was charged so far.
    pub(crate) async fn admit(&mut self, limits: &Arc<RateLimits>, subject: Subject) -> Result<(), ProxyError> {
        match admit_request(limits, subject).await {
            Ok(grant) => {
                self.0.push(grant);
                Ok(())
            }
            Err(refused) => Err(self.give_back(limits, refused)),
        }
    }

    /// Whether a grant counts tokens (so the request's tokens must be estimated).
    pub(crate) fn count_tokens(&self) -> bool {
        self.0.iter().any(Grant::counts_tokens)
    }

    /// Reserves `needed` tokens (from [`tokens_needed`]) under every grant that counts tokens. A
    /// refusal gives back what the request was charged so far.
    pub(crate) async fn reserve_tokens(&mut self, limits: &Arc<RateLimits>, needed: u64) -> Result<(), ProxyError> {
        for index in 0..self.0.len() {
            if let Err(refused) = reserve_tokens(limits, &mut self.0[index], needed).await {
                return Err(self.give_back(limits, refused));
            }
        }
        Ok(())
    }

    /// Gives back the requests and tokens charged to a request that is refused, and passes the
    /// refusal on; nothing is left to meter.
    fn give_back(&mut self, limits: &Arc<RateLimits>, refused: ProxyError) -> ProxyError {
        for grant in self.0.drain(..) {
            if let Some((quota, _)) = grant.requests {
                limits.settle(grant.subject.key("rpm"), quota, -1);
            }
            if let Some((quota, reserved, _)) = grant.tokens {
                limits.settle(grant.subject.key("tpm"), quota, -i64::try_from(reserved).unwrap_or(i64::MAX));
            }
        }
        refused
    }

    /// The answer metered by each grant (see [`Grant::meter`]); the caller's `RateLimit-*`
    /// headers win over the route's.
    pub(crate) fn meter(self, limits: &Arc<RateLimits>, response: Response) -> Response {
        self.0.into_iter().rev().fold(response, |response, grant| grant.meter(limits, response))
    }
}

/// Charges one request to `subject`'s requests per minute.
async fn admit_request(limits: &RateLimits, subject: Subject) -> Result<Grant, ProxyError> {
    let (rpm, setting) = subject.requests_per_minute;
    let mut grant = Grant { subject, requests: None, tokens: None };
    if rpm > 0 {
        let quota = Quota::per_minute(rpm);
        match limits.check(&grant.subject.key("rpm"), quota, 1).await? {
            Some(decision @ Decision::Allowed { .. }) => grant.requests = Some((quota, decision)),
            Some(decision) => return Err(refusal(&grant.subject, "requests", setting, decision, 1)),
            None => {}
        }
    }
    Ok(grant)
}

/// The tokens a request may use, when it is a model call whose body keel read (see
/// [`estimate_tokens`]); `None` for everything else, which no token limit counts.
pub(crate) fn tokens_needed(forward: &Forward) -> Option<u64> {
    match &forward.payload {
        Payload::Bytes(body) if !forward.requested_model.is_empty() => Some(estimate_tokens(body)),
        _ => None,
    }
}

/// Reserves `needed` tokens against `grant`'s tokens per minute, when it has such a limit.
async fn reserve_tokens(limits: &RateLimits, grant: &mut Grant, needed: u64) -> Result<(), ProxyError> {
    let (tpm, setting) = grant.subject.tokens_per_minute;
    if tpm == 0 {
        return Ok(());
    }
    let quota = Quota::per_minute(tpm);
    match limits.check(&grant.subject.key("tpm"), quota, needed).await? {
        Some(decision @ Decision::Allowed { .. }) => {
            grant.tokens = Some((quota, needed, decision));
            Ok(())
        }
        Some(decision) => Err(refusal(&grant.subject, "tokens", setting, decision, needed)),
        None => Ok(()),
    }
}

/// The limits that apply to the request's caller; `None` when none does.
pub(crate) fn subject(limits: &RateLimits, parts: &Parts) -> Option<Subject> {
    let caller = parts.extensions.get::<Caller>();
    let pick = |own: Option<u64>, default: u64, own_setting, default_setting| match own {
        Some(own) => (own, own_setting),
        None => (default, default_setting),
    };
    let own = caller.map(|c| c.limits).unwrap_or_default();
    let requests_per_minute = pick(
        own.requests_per_minute,
        limits.requests_per_minute,
        "the key's requests_per_minute",
        "[limits] requests_per_minute",
    );
    let tokens_per_minute = pick(
        own.tokens_per_minute,
        limits.tokens_per_minute,
        "the key's tokens_per_minute",
        "[limits] tokens_per_minute",
    );
    if requests_per_minute.0 == 0 && tokens_per_minute.0 == 0 {
        return None;
    }
    let (shown, id) = identity(parts);
    Some(Subject { shown, id, requests_per_minute, tokens_per_minute })
}

/// The caller on the request's route, when that `[[route]]` has limits of its own: a budget per
/// key (or client) and route, besides the caller's own.
pub(crate) fn route_subject(limits: &RateLimits, config: &Config, parts: &Parts, forward: &Forward) -> Option<Subject> {
    if !limits.routes_limited {
        return None;
    }
    let route = config.routes.iter().find(|route| route.model == forward.route_model)?;
    if route.requests_per_minute == 0 && route.tokens_per_minute == 0 {
        return None;
    }
    let (shown, id) = identity(parts);
    Some(Subject {
        shown: format!("{shown} on route '{}'", route.model),
        id: format!("{id}:route:{}", route.model),
        requests_per_minute: (route.requests_per_minute, "the route's requests_per_minute"),
        tokens_per_minute: (route.tokens_per_minute, "the route's tokens_per_minute"),
    })
}

/// Who the request is from, as shown in errors (`key 'agent'`, `client 10.0.0.7`) and as the
/// limiter's key (`key:agent`, `ip:10.0.0.7`).
fn identity(parts: &Parts) -> (String, String) {
    match Sender::of(&parts.extensions) {
        Sender::Key(name) => (format!("key '{name}'"), format!("key:{name}")),
        Sender::Address(ip) => (format!("client {ip}"), format!("ip:{ip}")),
        Sender::Local => ("this client".to_owned(), "local".to_owned()),
    }
}

/// The 429 for a limit `decision` that did not allow `cost`.
fn refusal(subject: &Subject, unit: &'static str, setting: &'static str, decision: Decision, cost: u64) -> ProxyError {
    let who = subject.shown.clone();
    match decision {
        Decision::TooLarge { limit } => {
            metrics::counter!(names::RATE_LIMITED_TOTAL, "limit" => "too_large").increment(1);
            tracing::info!(%who, needed = cost, limit, "request larger than a whole minute's token budget");
            ProxyError::OverTokenBudget { who, needed: cost, limit, setting }
        }
        Decision::Limited { limit, reset, .. } | Decision::Allowed { limit, reset, .. } => {
            let retry_after = decision.retry_after().unwrap_or_default();
            metrics::counter!(names::RATE_LIMITED_TOTAL, "limit" => unit).increment(1);
            tracing::info!(%who, unit, limit, retry_after_ms = retry_after.as_millis() as u64, "rate limited");
            ProxyError::RateLimited { who, unit, limit, retry_after, reset, setting }
        }
    }
}

impl Grant {
    /// Whether a tokens-per-minute limit applies (else the body need not be read for tokens).
    fn counts_tokens(&self) -> bool {
        self.subject.tokens_per_minute.0 > 0
    }

    /// The answer with `RateLimit-*` headers (the requests limit's, else the tokens limit's); its
    /// body settles the token reservation from the server's counts when it ends.
    fn meter(self, limits: &Arc<RateLimits>, mut response: Response) -> Response {
        let shown = self.requests.map(|(_, decision)| decision).or(self.tokens.map(|(_, _, decision)| decision));
        if let Some(Decision::Allowed { limit, remaining, reset }) = shown {
            crate::error::rate_limit_headers(response.headers_mut(), limit, remaining, Some(reset));
        }
        let Some((quota, reserved, _)) = self.tokens else {
            return response;
        };
        let settle = Settle {
            limits: Arc::clone(limits),
            key: self.subject.key("tpm"),
            quota,
            reserved,
            tail: Tail::default(),
            ended: false,
        };
        response.map(|body| watched(body, settle))
    }
}

/// A request's tokens, estimated before the call: its size, plus the answer's cap.
pub(crate) fn estimate_tokens(body: &[u8]) -> u64 {
    let prompt = (body.len() as u64).div_ceil(BYTES_PER_TOKEN);
    prompt + answer_cap(body).unwrap_or(DEFAULT_ANSWER_RESERVATION)
}

/// The answer's token cap the request sets: `options.num_predict` (Ollama), `max_tokens` or
/// `max_completion_tokens` (OpenAI); `None` when unset or unbounded (negative).
fn answer_cap(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Caps {
        max_tokens: Option<i64>,
        max_completion_tokens: Option<i64>,
        options: Option<Options>,
    }
    #[derive(serde::Deserialize)]
    struct Options {
        num_predict: Option<i64>,
    }
    let caps: Caps = serde_json::from_slice(body).ok()?;
    let cap = caps.options.and_then(|o| o.num_predict).or(caps.max_completion_tokens).or(caps.max_tokens)?;
    u64::try_from(cap).ok()
}

/// A token reservation waiting for the answer's counts.
struct Settle {
    limits: Arc<RateLimits>,
    key: String,
    quota: Quota,
    reserved: u64,
    /// The answer's last bytes.
    tail: Tail,
    /// The body ended cleanly (counts, if any, are in `tail`).
    ended: bool,
}

impl Drop for Settle {
    fn drop(&mut self) {
        // Without counts (a cut answer, an endpoint that reports none) the reservation stands.
        let used = if self.ended { self.tail.usage().map(Usage::total) } else { None };
        if let Some(used) = used {
            let delta = i64::try_from(used).unwrap_or(i64::MAX).saturating_sub(self.reserved as i64);
            self.limits.settle(std::mem::take(&mut self.key), self.quota, delta);
        }
    }
}

impl AnswerWatch for Settle {
    fn tail(&mut self) -> &mut Tail {
        &mut self.tail
    }
    fn ended(&mut self) {
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_size_plus_the_answer_cap() {
        let body = br#"{"model":"m","prompt":"hi","options":{"num_predict":100}}"#;
        assert_eq!(estimate_tokens(body), (body.len() as u64).div_ceil(4) + 100);
        let body = br#"{"model":"m","messages":[],"max_tokens":7}"#;
        assert_eq!(estimate_tokens(body), (body.len() as u64).div_ceil(4) + 7);
        let body = br#"{"model":"m","options":{"num_predict":-1}}"#;
        assert_eq!(estimate_tokens(body), (body.len() as u64).div_ceil(4) + DEFAULT_ANSWER_RESERVATION);
        assert_eq!(estimate_tokens(b"not json"), 2 + DEFAULT_ANSWER_RESERVATION);
    }
}
