//! Every series dashboards and alerts rely on, registered at zero when keel starts: a counter
//! that does not exist yet cannot be alerted on (`rate()` of nothing is nothing, not zero). Labels
//! come from the config (routes' models, upstreams, targets) and from the fixed sets of classes,
//! reasons and outcomes, so the set stays bounded. (Rate limits, admission, connections and
//! traces register their own series where they are set up.)

use keel_telemetry::names;
use keel_types::FailureClass;

use crate::config::Config;

/// The routes model requests arrive on, for the request series.
const MODEL_ROUTES: [&str; 3] = ["/api/chat", "/api/generate", "/v1/chat/completions"];
/// Routes whose streams may be continued on the next target.
const CHAT_ROUTES: [&str; 2] = ["/api/chat", "/v1/chat/completions"];
/// What a structured-output request can end as (`keel_structured_outputs_total{outcome}`).
pub(crate) const STRUCTURED_OUTCOMES: [&str; 6] = ["valid", "repaired", "reasked", "fallback", "canned", "failed"];
/// Why a breaker opens, closes or probes (`keel_breaker_transitions_total{from,to,reason}`), the
/// transitions that happen without an operator.
const TRANSITIONS: [(&str, &str, &str); 9] = [
    ("closed", "open", "consecutive_failures"),
    ("closed", "open", "failure_rate"),
    ("closed", "open", "slow_calls"),
    ("closed", "open", "low_confidence"),
    ("closed", "open", "cost_budget"),
    ("open", "half_open", "cooldown_elapsed"),
    ("half_open", "closed", "probe_succeeded"),
    ("half_open", "open", "probe_failed"),
    ("open", "closed", "health_probe"),
];

/// Registers every series at zero (counters and histograms) for what `config` names.
pub(crate) fn register(config: &Config, target_keys: &[String]) {
    let models: Vec<String> = config.routes.iter().map(|r| r.model.clone()).filter(|m| m != "*").collect();
    requests(&models);
    for upstream in &config.upstreams {
        let name = upstream.name.clone();
        metrics::counter!(names::UPSTREAM_REQUESTS_TOTAL, "upstream" => name.clone()).increment(0);
        let _ = metrics::histogram!(names::UPSTREAM_DURATION_SECONDS, "upstream" => name.clone());
        if upstream.tokens_per_day > 0 {
            metrics::counter!(names::UPSTREAM_BUDGET_TOKENS_TOTAL, "upstream" => name.clone()).increment(0);
        }
        for class in FailureClass::ALL {
            metrics::counter!(names::UPSTREAM_ERRORS_TOTAL, "upstream" => name.clone(), "class" => class.as_str())
                .increment(0);
        }
    }
    // The targets' breakers and each upstream's own.
    let upstreams = config.upstreams.iter().map(|u| &u.name);
    for target in target_keys.iter().chain(upstreams) {
        metrics::gauge!(names::BREAKER_STATE, "target" => target.clone()).set(0.0);
        for (from, to, reason) in TRANSITIONS {
            metrics::counter!(names::BREAKER_TRANSITIONS_TOTAL, "target" => target.clone(), "from" => from, "to" => to, "reason" => reason)
                .increment(0);
        }
    }
    metrics::counter!(names::BREAKER_PANIC_REQUESTS_TOTAL).increment(0);
    structured_outputs(&models);
    sessions();
    if config.incidents.enabled {
        incidents(config);
    }
}

/// The incident log's series: open incidents by kind and status, jobs by status, job runs,
/// webhook deliveries per configured format and runbooks written.
fn incidents(config: &Config) {
    for kind in keel_incident::kinds::ALL {
        for status in ["open", "mitigated"] {
            metrics::gauge!(names::INCIDENTS_OPEN, "kind" => kind, "status" => status).set(0.0);
        }
    }
    for status in ["queued", "running", "done", "failed"] {
        metrics::gauge!(names::JOBS, "status" => status).set(0.0);
    }
    for kind in
        [keel_session::INCIDENT_CHANGED_JOB, keel_incident::worker::NOTIFY_JOB, keel_incident::worker::RUNBOOK_JOB]
    {
        for outcome in ["done", "retry", "failed"] {
            metrics::counter!(names::JOB_RUNS_TOTAL, "kind" => kind, "outcome" => outcome).increment(0);
        }
    }
    for endpoint in &config.incidents.notify {
        for outcome in ["delivered", "retry", "failed", "disabled"] {
            metrics::counter!(names::NOTIFICATIONS_TOTAL, "format" => endpoint.format.as_str(), "outcome" => outcome)
                .increment(0);
        }
    }
    for (source, outcome) in [("template", "written"), ("model", "written"), ("model", "refused")] {
        metrics::counter!(names::RUNBOOKS_TOTAL, "source" => source, "outcome" => outcome).increment(0);
    }
}

/// Requests, latency, time to first chunk, retries, fallbacks and continuations per route and
/// configured model.
fn requests(models: &[String]) {
    for route in MODEL_ROUTES {
        metrics::counter!(names::RETRIES_TOTAL, "route" => route).increment(0);
        metrics::counter!(names::FALLBACKS_TOTAL, "route" => route).increment(0);
        // Registered, not set: another gateway in this process may have requests in flight.
        metrics::gauge!(names::REQUESTS_IN_FLIGHT, "route" => route).increment(0.0);
        metrics::counter!(names::CLIENT_DISCONNECTS_TOTAL, "route" => route).increment(0);
        for model in models {
            let model = model.clone();
            let _ = metrics::histogram!(names::TIME_TO_FIRST_CHUNK_SECONDS, "route" => route, "model" => model.clone());
            for status in ["200", "503"] {
                let labels = [("route", route.to_owned()), ("model", model.clone()), ("status", status.to_owned())];
                metrics::counter!(names::REQUESTS_TOTAL, &labels).increment(0);
                let _ = metrics::histogram!(names::REQUEST_DURATION_SECONDS, &labels);
                let _ = metrics::histogram!(names::RESPONSE_DURATION_SECONDS, &labels);
            }
        }
    }
    for route in CHAT_ROUTES {
        metrics::counter!(names::STREAM_CONTINUATIONS_TOTAL, "route" => route).increment(0);
    }
}

/// Structured-output outcomes, re-asks and repair fixes per strategy.
fn structured_outputs(models: &[String]) {
    for route in MODEL_ROUTES {
        metrics::counter!(names::STRUCTURED_REASKS_TOTAL, "route" => route).increment(0);
        for model in models {
            for outcome in STRUCTURED_OUTCOMES {
                metrics::counter!(names::STRUCTURED_OUTPUTS_TOTAL, "route" => route, "model" => model.clone(), "outcome" => outcome)
                    .increment(0);
            }
        }
    }
    for model in models {
        for strategy in keel_repair::Strategy::ALL {
            metrics::counter!(names::REPAIR_FIXES_TOTAL, "strategy" => strategy.as_str(), "model" => model.clone())
                .increment(0);
        }
    }
}

fn sessions() {
    metrics::gauge!(names::SESSIONS_ACTIVE).set(0.0);
    metrics::counter!(names::SESSION_MESSAGES_APPENDED_TOTAL).increment(0);
    metrics::counter!(names::SESSIONS_TIMED_OUT_TOTAL).increment(0);
}
