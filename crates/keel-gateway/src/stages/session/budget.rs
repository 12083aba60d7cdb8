//! How many tokens of context a managed session may send: `[sessions] max_context_tokens` when
//! set; otherwise what the model can take — the request's `options.num_ctx`, else the context
//! length the upstream reports in `/api/show` (asked once per model) — less a quarter kept free
//! for the answer; else 8192.

use bytes::Bytes;
use serde_json::json;

use crate::attempts::{Call, Forward, send};
use crate::endpoint::Endpoint;
use crate::state::Gateway;

/// The budget when neither the config nor the model says.
pub(crate) const FALLBACK_BUDGET: u64 = 8192;
/// The budget for this request (before calibration).
pub(super) async fn budget(gateway: &Gateway, call: &Call, route: Forward, num_ctx: Option<u64>) -> u64 {
    if let Some(budget) = gateway.config().sessions.max_context_tokens {
        return budget;
    }
    let length = match num_ctx {
        Some(length) => Some(length),
        None => match gateway.inner.context_lengths.get(&route.requested_model) {
            Some(known) => known,
            None => {
                let model = route.requested_model.clone();
                let asked = ask_context_length(gateway, call, route).await;
                gateway.inner.context_lengths.put(&model, asked);
                asked
            }
        },
    };
    length.map_or(FALLBACK_BUDGET, |length| (length - length / 4).max(1))
}

/// Asks the route's targets for the model's context length (`/api/show`, `model_info`
/// `<architecture>.context_length`).
async fn ask_context_length(gateway: &Gateway, call: &Call, route: Forward) -> Option<u64> {
    let model = route.requested_model.clone();
    let forward = route.same_targets("/api/show", Bytes::from(json!({"model": model}).to_string()));
    let endpoint = Endpoint::classify(&http::Method::POST, "/api/show");
    let response = send(gateway, call.on_behalf(), endpoint, forward).await.response;
    if !response.status().is_success() {
        return None;
    }
    let show = crate::answer::read_json(response, 4 << 20).await?;
    let length = keel_upstream::wire::context_length(&show);
    tracing::debug!(%model, ?length, "context length from /api/show");
    length
}
