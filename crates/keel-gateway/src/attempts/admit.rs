//! A target's breakers: the upstream's (the server as a whole) and the target's (the model on it)
//! are asked before a call; a refusal says why the target is out and when it may be asked again.

use std::time::Duration;

use keel_breaker::Permit;

use crate::state::Gateway;

/// The breaker permits of one attempt: the upstream's (the server as a whole) and the target's
/// (the model on it). `None` where no breaker watches (requests that name no model, panic mode).
#[derive(Default)]
pub(super) struct Permits {
    pub(super) server: Option<Permit>,
    pub(super) model: Option<Permit>,
}

impl Permits {
    /// One of them is a half-open breaker's probe.
    pub(super) fn probing(&self) -> bool {
        [&self.server, &self.model].into_iter().flatten().any(Permit::is_probe)
    }
}

/// Why a target was skipped without a call.
pub(super) struct Refusal {
    /// The target and why its breaker is out, with the failure that opened it.
    pub(super) reason: String,
    pub(super) retry_after: Duration,
    /// The target's model breaker is open but its failures are partial (it answered within the
    /// breaker's window): its consecutive failures, to pick the least-bad target in panic mode.
    pub(super) partial: Option<u64>,
}

impl Refusal {
    fn new(gateway: &Gateway, key: &str, rejected: keel_breaker::Rejected, partial: Option<u64>) -> Refusal {
        let reason = if rejected.forced {
            format!("{key}: circuit forced open by an operator (POST /keel/breakers/{key}/reset resumes traffic)")
        } else if rejected.state == keel_breaker::State::HalfOpen {
            format!("{key}: circuit half-open, a probe call is in flight")
        } else {
            gateway.open_reason(key).unwrap_or_else(|| format!("{key}: circuit open"))
        };
        Refusal { reason, retry_after: rejected.retry_after, partial }
    }
}

/// Asks the upstream's breaker, then the target's. A server that is down refuses every model on
/// it; a model's own breaker refuses only that model. In panic mode the model's breaker is passed.
pub(super) fn admit(gateway: &Gateway, upstream: &str, key: &str, panicking: bool) -> Result<Permits, Refusal> {
    let server =
        gateway.breaker(upstream).try_acquire().map_err(|rejected| Refusal::new(gateway, upstream, rejected, None))?;
    match gateway.breaker(key).try_acquire() {
        Ok(model) => Ok(Permits { server: Some(server), model: Some(model) }),
        Err(rejected) if panicking && !rejected.forced => Ok(Permits { server: Some(server), model: None }),
        Err(rejected) => {
            let partial = if rejected.forced { None } else { gateway.partial_failures(key) };
            Err(Refusal::new(gateway, key, rejected, partial))
        }
    }
}
