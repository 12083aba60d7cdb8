//! The pipeline: the one place that knows the order in which a proxied request goes through its
//! stages. Each stage is a module of its own (`stages/`), says what it takes, what it gives the
//! next stage and what it may answer by itself:
//!
//! 1. classify the endpoint ([`Endpoint::classify`]) and take the request id;
//! 2. [`access`]: the `Host` and browser `Origin` (a CORS preflight is answered here); after
//!    [`auth`] (the API key, when `[auth]` or the store has keys), model management closed by default;
//! 3. keel's request headers: `X-Keel-Deadline` ([`crate::retry::check_deadline`]), with
//!    `[admission]` `X-Keel-Priority` and who the request queues as ([`crate::admission::ticket`]),
//!    and the session headers ([`SessionRequest::detect`]);
//! 4. [`limit`]: a request charged to the caller's requests per minute; [`intake`]: the body
//!    read, the route's targets found; [`limit`] again: the tokens it may use reserved (settled
//!    when its answer ends);
//! 5. [`session`] attach (with `X-Keel-Session`), else the
//!    [`guard`] (structured output asked for), else straight on;
//! 6. [`attempts`](crate::attempts): the route's targets in fallback order, with breakers, the
//!    target's admission queue (`[admission]`) and retry rounds, one upstream call each;
//! 7. [`relay`](crate::relay): the answer's body to the client, and its bookkeeping.
//!
//! A new stage is one more module under `stages/` and one more line here, in its place.

use std::future::Future;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use keel_types::Dialect;
use tracing::Instrument;

use crate::attempts::{Call, Forward, send};
use crate::client::Caller;
use crate::endpoint::Endpoint;
use crate::error::{InDialect, ProxyError};
use crate::relay::Completion;
use crate::request_id::{REQUEST_ID, request_id};
use crate::stages::limit::{self, Grants};
use crate::stages::session::SessionRequest;
use crate::stages::{access, auth, guard, intake, session};
use crate::state::Gateway;
use crate::traces::{self, Stage};

/// Handles every request that is not keel's own (`/keel/*`, `/metrics`): runs it through the
/// stages in order.
pub(crate) async fn proxy(State(gateway): State<Gateway>, request: Request) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let endpoint = Endpoint::classify(&parts.method, parts.uri.path());
    let id = request_id(&parts.headers);
    let root = traces::request(gateway.tracing(), &parts.method, &parts.headers, endpoint, &id);
    let origin = match access::check(&gateway, &parts) {
        Ok(origin) => origin,
        Err(answer) => return traces::finish_request(root, answer),
    };
    // A span for the key check only when there are keys to check.
    let auth_stage = root
        .as_ref()
        .filter(|_| gateway.inner.keys.required())
        .and_then(|root| Stage::under(gateway.tracing(), root, "auth"));
    let refused = match auth::admit(&gateway, &mut parts) {
        Ok(()) => access::model_management(&gateway, &parts).err(),
        Err(refused) => Some(refused),
    };
    drop(auth_stage);
    if let Some(mut refused) = refused {
        access::allow_origin(&mut refused, origin);
        return traces::finish_request(root, refused);
    }
    let caller = parts.extensions.get::<Caller>();
    traces::set_user(root.as_ref(), caller.map_or("", |caller| &caller.name));
    // keel's own paths reach this handler only as the router's fallback: none of its endpoints.
    if crate::endpoint::is_keel_own(parts.uri.path()) {
        let err = ProxyError::NoKeelEndpoint { method: parts.method.to_string(), path: parts.uri.path().to_owned() };
        let mut response = rejected(Dialect::Ollama, endpoint, err, started);
        response.headers_mut().insert(REQUEST_ID, id);
        return traces::finish_request(root, response);
    }
    let span = tracing::info_span!(
        "request",
        id = %String::from_utf8_lossy(id.as_bytes()),
        method = %parts.method,
        route = endpoint.label,
        // The name of the key that admitted it (never the key); empty without keys.
        key = caller.map_or("", |caller| &caller.name),
    );
    let in_root = root.clone();
    let answered = async move {
        let (mut grants, mut ticket) = (Grants::default(), None);
        let mut response = match read_request(&gateway, &parts, endpoint, body, &mut grants, &mut ticket).await {
            Ok((forward, session)) => {
                let call = Call {
                    method: parts.method,
                    headers: parts.headers,
                    id: id.clone(),
                    started,
                    hold_permit: false,
                    continuing: None,
                    ticket,
                };
                // Stage 5, then 6 and 7 inside each path. The session and guard paths are boxed:
                // their futures are large, and inline they would make every request's future
                // (moved into a box per request) as large. (Inline, not a function of its own: a
                // nested future would be moved into place once more per request.)
                match session {
                    Some(session) => {
                        let stage = Stage::session(gateway.tracing(), in_root.as_ref(), session.id());
                        let handled = session::handle(&gateway, call, endpoint, forward, session);
                        Box::pin(traces::within(traces::context_of(&stage), handled)).await
                    }
                    None => match guard::Structured::detect(&gateway, endpoint, &forward) {
                        Some(structured) => {
                            let stage = Stage::start(gateway.tracing(), "guard");
                            let guarded = guard::guard(&gateway, call, endpoint, forward, structured);
                            Box::pin(traces::within(traces::context_of(&stage), guarded)).await
                        }
                        None => send(&gateway, call, endpoint, forward).await.response,
                    },
                }
            }
            Err(err) => rejected(endpoint.dialect, endpoint, err, started),
        };
        response = grants.meter(&gateway.inner.limits, response);
        response.headers_mut().insert(REQUEST_ID, id);
        access::allow_origin(&mut response, origin);
        response
    }
    .instrument(span);
    // Without traces the request's future is awaited as it is (no wrapper to move it into).
    match root {
        None => answered.await,
        Some(root) => {
            let response = traces::within(Some(root.clone()), answered).await;
            traces::finish_request(Some(root), response)
        }
    }
}

/// Stages 3 and 4: keel's request headers, the rate limits, the body and the route's targets. A
/// malformed or limited request is refused here, before anything is sent upstream; what the
/// limits granted is left in `grants` for the answer to report and settle, and with `[admission]`
/// who the request queues as (and how urgently) in `ticket`, for the attempts.
async fn read_request(
    gateway: &Gateway,
    parts: &Parts,
    endpoint: Endpoint,
    body: Body,
    grants: &mut Grants,
    ticket: &mut Option<keel_admission::Ticket>,
) -> Result<(Forward, Option<SessionRequest>), ProxyError> {
    crate::retry::check_deadline(&parts.headers)?;
    if gateway.inner.admission.is_some() {
        *ticket = Some(crate::admission::ticket(parts)?);
    }
    let session = SessionRequest::detect(endpoint, &parts.headers)
        .transpose()?
        .map(|session| session.owned_by(parts.extensions.get::<Caller>()));
    let limits = &gateway.inner.limits;
    // (Boxed: only limited requests pay for the limiter's future.)
    if let Some(subject) = limit::subject(limits, parts) {
        Box::pin(limit_stage(gateway, grants.admit(limits, subject))).await?;
    }
    let forward = intake::intake(gateway, parts, endpoint, body).await?;
    if let Some(subject) = limit::route_subject(limits, gateway.config(), parts, &forward) {
        Box::pin(limit_stage(gateway, grants.admit(limits, subject))).await?;
    }
    if grants.count_tokens()
        && let Some(needed) = limit::tokens_needed(&forward)
    {
        Box::pin(limit_stage(gateway, grants.reserve_tokens(limits, needed))).await?;
    }
    Ok((forward, session))
}

/// A rate-limit check in its trace span (`keel.limit`), marked failed when it refuses.
async fn limit_stage(gateway: &Gateway, check: impl Future<Output = Result<(), ProxyError>>) -> Result<(), ProxyError> {
    let stage = Stage::start(gateway.tracing(), "limit");
    let checked = check.await;
    if let (Some(stage), Err(refused)) = (&stage, &checked) {
        stage.failed("rate_limited", refused.to_string());
    }
    if let (Some(log), Err(ProxyError::RateLimited { who, unit, .. })) = (&gateway.inner.incidents, &checked) {
        log.rate_limited(who, unit);
    }
    checked
}

/// keel's answer to a request it refused before any upstream call, logged and counted.
fn rejected(dialect: Dialect, endpoint: Endpoint, err: ProxyError, started: Instant) -> Response {
    let status = err.status();
    tracing::info!(status = status.as_u16(), error = %err, "request rejected");
    Completion::rejected(endpoint.label, status, started);
    InDialect(dialect, err).into_response()
}

#[cfg(test)]
mod future_size {
    /// Every request's future is moved into a box as the server dispatches it; the session and
    /// guard paths are boxed inside it so that plain proxying does not copy their state. At 9 KiB
    /// (moved twice by axum's router then) the copies were 18% of keel's instructions per request
    /// (callgrind).
    #[test]
    fn the_request_future_stays_small() {
        let config = crate::config::Config::without_file(&Default::default(), &|_| None).unwrap();
        let gateway = crate::state::Gateway::new(config).unwrap();
        let request = axum::extract::Request::new(axum::body::Body::empty());
        let future = super::proxy(axum::extract::State(gateway), request);
        let size = std::mem::size_of_val(&future);
        assert!(size <= 6 * 1024, "the proxy future grew to {size} bytes; box the new large path");
    }
}
