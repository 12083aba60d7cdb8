//! The background work of a serving gateway: the breaker event pump (metrics, log lines, idle
//! model expiry, openings shared with other instances), health probes, breaker sharing through
//! Redis, the sweep of idle sessions and of idle rate-limit state, the refresh of the store's API
//! keys.

use crate::state::Gateway;

/// Starts the background work of a serving gateway on the current runtime: breaker event
/// pump, health probes, breaker sharing and the sweep of idle sessions. The tasks end when the returned guard is dropped.
pub(crate) fn spawn(gateway: &Gateway) -> BackgroundTasks {
    let mut tasks = Vec::new();
    let openings = match crate::shared::Sharing::from_config(gateway) {
        Some(sharing) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tasks.push(tokio::spawn(sharing.clone().publish(gateway.inner.config.breaker.cooldown, rx)));
            tasks.push(tokio::spawn(sharing.subscribe(gateway.clone())));
            Some(tx)
        }
        None => None,
    };
    tasks.push(tokio::spawn(pump_breaker_events(gateway.clone(), openings)));
    tasks.push(tokio::spawn(std::sync::Arc::clone(&gateway.inner.limits).sweep()));
    if gateway.inner.keys.reads_store() {
        tasks.push(tokio::spawn(crate::api_keys::refresh_loop(std::sync::Arc::clone(&gateway.inner.keys))));
    }
    if gateway.inner.store.is_some() {
        tasks.push(tokio::spawn(crate::stages::session::sample_active(gateway.clone())));
    }
    if gateway.inner.store.is_some() && !gateway.inner.config.sessions.idle_timeout.is_zero() {
        tasks.push(tokio::spawn(crate::stages::session::sweep_idle(gateway.clone())));
    }
    tasks.extend(crate::incident_worker::spawn(gateway));
    if gateway.inner.history.is_some() {
        tasks.push(tokio::spawn(crate::ui::record_loop(gateway.clone())));
    }
    for up in &gateway.inner.config.upstreams {
        if !up.health_interval.is_zero() {
            tasks.push(tokio::spawn(crate::probes::probe_loop(
                gateway.clone(),
                up.upstream.clone(),
                up.health_interval,
            )));
        }
    }
    BackgroundTasks(tasks)
}

/// Background tasks of a serving gateway; aborted on drop.
pub(crate) struct BackgroundTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// How often breaker transitions are turned into metrics and log lines.
const EVENT_PUMP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Turns every breaker transition into a metric and a log line, and keeps the state gauges true;
/// openings go to `openings` too when breaker state is shared with other instances.
pub(crate) async fn pump_breaker_events(
    gateway: Gateway,
    openings: Option<tokio::sync::mpsc::UnboundedSender<keel_breaker::Transition>>,
) {
    use keel_telemetry::names;
    // (The configured targets' and upstreams' state gauges start at 0 in `startup_series`.)
    let mut tick = tokio::time::interval(EVENT_PUMP_INTERVAL);
    let breakers = metrics::gauge!(names::BREAKERS);
    let mut last_expiry = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if last_expiry.elapsed() >= std::time::Duration::from_secs(60) {
            last_expiry = tokio::time::Instant::now();
            gateway.expire_idle_models();
        }
        breakers.set(gateway.breakers().len() as f64);
        for event in gateway.breakers().drain_events() {
            if let Some(openings) = &openings
                && crate::shared::Sharing::shares(&event)
            {
                let _ = openings.send(event.clone());
            }
            let target = event.target.to_string();
            metrics::counter!(names::BREAKER_TRANSITIONS_TOTAL,
                "target" => target.clone(), "from" => event.from.as_str(), "to" => event.to.as_str(), "reason" => event.reason.as_str())
            .increment(1);
            let level = match event.to {
                keel_breaker::State::Closed => 0.0,
                keel_breaker::State::HalfOpen => 1.0,
                keel_breaker::State::Open => 2.0,
            };
            metrics::gauge!(names::BREAKER_STATE, "target" => target.clone()).set(level);
            let why = if event.to == keel_breaker::State::Open { gateway.open_reason(&target) } else { None };
            gateway.inner.dashboard.breaker_moved(&event, why.as_deref());
            if let Some(log) = &gateway.inner.incidents {
                log.breaker_moved(&event, &target_facts(&gateway, &target));
            }
            tracing::warn!(
                target = %target,
                from = event.from.as_str(),
                to = event.to.as_str(),
                reason = %event.reason,
                why = why.unwrap_or_default(),
                cooldown = event.cooldown.map(keel_types::duration::format).unwrap_or_default(),
                "circuit breaker {}",
                event.to.as_str()
            );
        }
    }
}

/// What an incident says of a breaker's target: its upstream's address and its last failure.
fn target_facts(gateway: &Gateway, target: &str) -> keel_incident::rules::TargetFacts {
    let (upstream, _) = keel_incident::rules::split_target(target);
    keel_incident::rules::TargetFacts {
        address: gateway.config().upstream(upstream).map(|up| up.upstream.base_url().to_owned()),
        why: gateway
            .inner
            .targets
            .lock()
            .get(target)
            .and_then(|stats| stats.last_failure.as_ref().map(|last| format!("{}: {}", last.class, last.detail))),
    }
}
