//! The dashboard's timeline of the last hours, kept in the store so that it survives restarts:
//! once a minute this keel stores the totals the live feed shows (one sample per instance and
//! minute, [`keel_session::HistoryStore`]), drops those older than [`KEEP`], and
//! `GET /keel/ui/timeline?hours=N` answers them for the page to draw.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::state::Gateway;

/// How long samples are kept.
pub(crate) const KEEP: Duration = Duration::from_secs(48 * 3600);

/// The most hours one request reads.
const MAX_HOURS: i64 = 48;

/// Stores a sample at the start of every minute until the task is dropped; prunes once an hour.
pub(crate) async fn record_loop(gateway: Gateway) {
    let Some(history) = gateway.inner.history.clone() else { return };
    let source = gateway.instance_name();
    let mut last_prune = None::<tokio::time::Instant>;
    loop {
        let now = keel_session::now_millis();
        let next_minute = (now / 60_000 + 1) * 60_000;
        tokio::time::sleep(Duration::from_millis(u64::try_from(next_minute - now).unwrap_or(60_000))).await;
        let minute = keel_session::now_millis() / 60_000;
        let totals = super::feed::totals(&crate::admin::metrics_page(&gateway));
        if let Err(error) = history.put_sample(&source, minute, totals).await {
            tracing::warn!(%error, "dashboard timeline: cannot store this minute's sample; the timeline has a gap");
        }
        if last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
            last_prune = Some(tokio::time::Instant::now());
            let before = minute - i64::try_from(KEEP.as_secs() / 60).unwrap_or(i64::MAX);
            if let Err(error) = history.prune_samples(before).await {
                tracing::warn!(%error, "dashboard timeline: cannot prune old samples");
            }
        }
    }
}

/// `?hours=N` (1 to 48, default 6).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimelineQuery {
    hours: Option<i64>,
}

/// `GET /keel/ui/timeline?hours=N`: `{"source", "minutes": [{"minute", "sample"}]}`, oldest
/// first; each sample holds the totals of one minute (the page turns them into rates).
pub(crate) async fn timeline(State(gateway): State<Gateway>, Query(query): Query<TimelineQuery>) -> Response {
    let hours = query.hours.unwrap_or(6);
    if !(1..=MAX_HOURS).contains(&hours) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("hours must be 1 to {MAX_HOURS}, got {hours}")})),
        )
            .into_response();
    }
    let Some(history) = &gateway.inner.history else {
        return Json(json!({"source": null, "minutes": [], "note": "this keel runs without a store: no timeline"}))
            .into_response();
    };
    let source = gateway.instance_name();
    let since = keel_session::now_millis() / 60_000 - hours * 60;
    match history.samples(&source, since).await {
        Ok(samples) => Json(json!({"source": source, "minutes": samples})).into_response(),
        Err(error) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": format!("store: {error}")}))).into_response()
        }
    }
}
