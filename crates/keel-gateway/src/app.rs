//! keel's HTTP surface as an axum `Router`: its own endpoints (`/keel/*`, `/metrics`), each behind
//! the API-key check when keys may exist (`[auth]`, or the store's), and every other path to the
//! [`crate::pipeline`].

use axum::Router;
use axum::routing::{any, get};

use crate::state::Gateway;
use crate::{admin, incidents, pipeline, stages, ui};

/// The whole HTTP surface of keel as a `Router`: the server sends keel's own endpoints here (see
/// [`crate::serve`]); tests may send anything with `oneshot`.
pub fn app(gateway: Gateway) -> Router {
    let router = Router::new()
        .route("/keel/health", get(admin::health))
        .route("/keel/status", get(admin::status))
        .route("/metrics", get(admin::metrics))
        .route("/keel/breakers/{target}/{action}", axum::routing::post(admin::breaker_action))
        .route("/keel/sessions", get(stages::session::admin::list))
        .route("/keel/sessions/{id}", get(stages::session::admin::show).delete(stages::session::admin::delete))
        .route("/keel/sessions/{id}/messages", get(stages::session::admin::messages))
        .route(
            "/keel/sessions/{id}/participants",
            get(stages::session::admin::participants).post(stages::session::admin::add_participant),
        )
        .route(
            "/keel/sessions/{id}/participants/{name}",
            axum::routing::delete(stages::session::admin::remove_participant),
        )
        .route("/keel/sessions/{id}/handoff", axum::routing::post(stages::session::admin::handoff))
        .route("/keel/incidents", get(incidents::list))
        .route("/keel/incidents/{id}", get(incidents::show))
        .route("/keel/incidents/{id}/runbook", get(incidents::runbook))
        .route("/keel/incidents/{id}/resolve", axum::routing::post(incidents::resolve))
        .route("/keel/jobs", get(incidents::jobs))
        .route("/keel/events", axum::routing::post(incidents::post_events))
        .route("/keel/events/alertmanager", axum::routing::post(incidents::post_alertmanager))
        .route("/keel/ui", get(ui::index))
        .route("/keel/ui/", get(ui::index))
        .route("/keel/ui/events", get(ui::events))
        .route("/keel/ui/timeline", get(ui::timeline))
        .route("/keel/ui/{file}", get(ui::file))
        .fallback(any(pipeline::proxy));
    // keel's own endpoints check keys here; proxied requests (the fallback) in the pipeline, as
    // one of its stages, so they pay for no layer. Without [auth] or a key store there is nothing
    // to check: no layer at all.
    let router = if gateway.config().auth.is_some() || gateway.inner.keys.reads_store() {
        router.route_layer(axum::middleware::from_fn_with_state(gateway.clone(), stages::auth::require_key))
    } else {
        router
    };
    // Outermost: host and origin checks, CORS preflights and headers, with or without keys.
    let router = router.layer(axum::middleware::from_fn_with_state(gateway.clone(), stages::access::layer));
    router.with_state(gateway)
}
