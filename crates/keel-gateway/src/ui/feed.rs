//! What the dashboard's live feed carries: a snapshot of keel's state (`/keel/status` and the
//! totals of the counters it shows as rates), rebuilt once a second while a tab is open — once
//! whatever the number of tabs ([`crate::dashboard_feed`] hands it to each).

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::dashboard_feed::Subscription;
use crate::state::Gateway;

/// How often the snapshot is rebuilt while a tab is open.
pub(super) const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// Subscribes a tab, starting the snapshot task if no tab had it running.
pub(super) fn subscribe(gateway: &Gateway) -> Subscription {
    let (mut subscription, first) = gateway.inner.dashboard.subscribe();
    // The latest snapshot goes to the new tab at once, not a second later.
    subscription.snapshot.mark_changed();
    if first {
        // The first snapshot now, so a new tab shows something at once.
        gateway.inner.dashboard.publish(snapshot(gateway).to_string());
        tokio::spawn(build_while_watched(gateway.clone()));
    }
    subscription
}

/// Rebuilds the snapshot every second until no tab is left.
async fn build_while_watched(gateway: Gateway) {
    let mut tick = tokio::time::interval(SNAPSHOT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if !gateway.inner.dashboard.still_watched() {
            return;
        }
        gateway.inner.dashboard.publish(snapshot(&gateway).to_string());
    }
}

/// What the dashboard shows: `/keel/status`, and totals of the counters it turns into rates.
pub(super) fn snapshot(gateway: &Gateway) -> Value {
    let mut status = crate::admin::status_json(gateway);
    status["totals"] = totals(&crate::admin::metrics_page(gateway));
    status["at"] = json!(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
    status
}

/// Sums of the series the dashboard shows, from the Prometheus page: requests (and 5xx among
/// them), fallbacks, retries, continuations, sheds, rate-limit refusals, structured outcomes by
/// outcome, active sessions, trace spans dropped.
pub(super) fn totals(page: &str) -> Value {
    let mut sums: Map<String, Value> = Map::new();
    let mut structured: Map<String, Value> = Map::new();
    let add = |map: &mut Map<String, Value>, key: &str, value: f64| {
        let entry = map.entry(key.to_owned()).or_insert(json!(0.0));
        *entry = json!(entry.as_f64().unwrap_or(0.0) + value);
    };
    for line in page.lines().filter(|l| l.starts_with("keel_")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| {
            let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
            labels[start..].split('"').next()
        };
        let key = match name {
            "keel_requests_total" => {
                if label("status").is_some_and(|s| s.starts_with('5')) {
                    add(&mut sums, "errors", value);
                }
                "requests"
            }
            "keel_fallbacks_total" => "fallbacks",
            "keel_retries_total" => "retries",
            "keel_stream_continuations_total" => "continuations",
            "keel_admission_shed_total" => "shed",
            "keel_rate_limited_total" => "rate_limited",
            "keel_sessions_active" => "sessions_active",
            "keel_session_messages_appended_total" => "messages_appended",
            "keel_trace_spans_dropped_total" => "spans_dropped",
            "keel_structured_outputs_total" => {
                if let Some(outcome) = label("outcome") {
                    add(&mut structured, outcome, value);
                }
                continue;
            }
            _ => continue,
        };
        add(&mut sums, key, value);
    }
    sums.insert("structured".into(), Value::Object(structured));
    Value::Object(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_the_series_the_dashboard_shows() {
        let page = "# TYPE keel_requests_total counter\n\
            keel_requests_total{route=\"/api/chat\",model=\"m\",status=\"200\"} 7\n\
            keel_requests_total{route=\"/api/chat\",model=\"m\",status=\"503\"} 2\n\
            keel_requests_total{route=\"/v1/chat/completions\",model=\"m\",status=\"502\"} 1\n\
            keel_fallbacks_total{route=\"/api/chat\"} 3\n\
            keel_structured_outputs_total{route=\"/api/chat\",model=\"m\",outcome=\"repaired\"} 4\n\
            keel_structured_outputs_total{route=\"/api/generate\",model=\"m\",outcome=\"repaired\"} 1\n\
            keel_sessions_active 5\n";
        let totals = totals(page);
        assert_eq!(totals["requests"], 10.0);
        assert_eq!(totals["errors"], 3.0);
        assert_eq!(totals["fallbacks"], 3.0);
        assert_eq!(totals["structured"]["repaired"], 5.0);
        assert_eq!(totals["sessions_active"], 5.0);
    }
}
