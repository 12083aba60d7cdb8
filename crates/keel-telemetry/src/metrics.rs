//! The Prometheus recorder and the name of every metric keel emits.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Metric names. Labels are documented next to each name.
pub mod names {
    /// Counter of requests answered by keel. Labels: `route`, `model`, `status`.
    pub const REQUESTS_TOTAL: &str = "keel_requests_total";
    /// Histogram of time from request to response head, in seconds. Labels: `route`, `model`,
    /// `status`.
    pub const REQUEST_DURATION_SECONDS: &str = "keel_request_duration_seconds";
    /// Histogram of whole-response time including the streamed body, in seconds. Labels: `route`,
    /// `model`, `status`.
    pub const RESPONSE_DURATION_SECONDS: &str = "keel_response_duration_seconds";
    /// Gauge of requests in flight (head not yet sent, or body still streaming). Label: `route`.
    pub const REQUESTS_IN_FLIGHT: &str = "keel_requests_in_flight";
    /// Counter of failed upstream calls. Labels: `upstream`, `class` (a `FailureClass` name).
    pub const UPSTREAM_ERRORS_TOTAL: &str = "keel_upstream_errors_total";
    /// Histogram of upstream time to response head, in seconds. Labels: `upstream`.
    pub const UPSTREAM_DURATION_SECONDS: &str = "keel_upstream_duration_seconds";
    /// Counter of requests the client abandoned before the response finished. Label: `route`.
    pub const CLIENT_DISCONNECTS_TOTAL: &str = "keel_client_disconnects_total";
    /// Counter of circuit breaker transitions. Labels: `target`, `from`, `to`, `reason`.
    pub const BREAKER_TRANSITIONS_TOTAL: &str = "keel_breaker_transitions_total";
    /// Gauge of each target's breaker: 0 closed, 1 half-open, 2 open. Label: `target`.
    pub const BREAKER_STATE: &str = "keel_breaker_state";
    /// Gauge: how many circuit breakers exist (configured targets, upstreams, and models asked
    /// for through the `"*"` route, bounded by `[breaker] max_breakers`).
    pub const BREAKERS: &str = "keel_breakers";
    /// Counter: requests sent to a target whose breaker was open because every target of the
    /// route was out for partial failures (`[breaker] panic_share`).
    pub const BREAKER_PANIC_REQUESTS_TOTAL: &str = "keel_breaker_panic_requests_total";
    /// Gauge set to 1 with a `version` label, for dashboards.
    pub const BUILD_INFO: &str = "keel_build_info";
    /// Counter: answers to structured-output requests by `route`, `model` and `outcome`
    /// (`valid`, `repaired`, `reasked`, `fallback`, `canned`, `failed`).
    pub const STRUCTURED_OUTPUTS_TOTAL: &str = "keel_structured_outputs_total";
    /// Counter: streams that broke mid-answer and were continued on the next target, by `route`.
    pub const STREAM_CONTINUATIONS_TOTAL: &str = "keel_stream_continuations_total";
    /// Counter: session requests whose stored context was trimmed to `max_context_tokens`, by `model`.
    pub const SESSION_CONTEXT_TRIMMED_TOTAL: &str = "keel_session_context_trimmed_total";
    /// Counter: sessions marked `timed_out` after `[sessions] idle_timeout` without a message.
    pub const SESSIONS_TIMED_OUT_TOTAL: &str = "keel_sessions_timed_out_total";
    /// Counter: repair fixes applied to structured answers, by `strategy` and `model`.
    pub const REPAIR_FIXES_TOTAL: &str = "keel_repair_fixes_total";
    /// Gauge: open client connections.
    pub const CLIENT_CONNECTIONS: &str = "keel_client_connections";
    /// Counter: client connections keel closed, by `reason` (`header_timeout`, `idle`, `capacity`,
    /// `descriptors`).
    pub const CLIENT_CONNECTIONS_CLOSED_TOTAL: &str = "keel_client_connections_closed_total";
    /// Counter: requests refused by a rate limit, by `limit` (`requests`, `tokens`, `too_large`).
    pub const RATE_LIMITED_TOTAL: &str = "keel_rate_limited_total";
    /// Counter: rate-limit checks the shared store (Redis) could not answer, by `outcome`
    /// (`allowed` with `on_store_error = "open"`, `refused` with `"closed"`).
    pub const RATE_LIMIT_STORE_ERRORS_TOTAL: &str = "keel_rate_limit_store_errors_total";
    /// Gauge: requests waiting in an admission queue (`[admission]`), by `upstream` and `model`
    /// (models without a label of their own share `other`); set when `/metrics` is scraped.
    pub const ADMISSION_QUEUE_DEPTH: &str = "keel_admission_queue_depth";
    /// Gauge: requests holding an admission slot, by `upstream` and `model` (as
    /// [`ADMISSION_QUEUE_DEPTH`]).
    pub const ADMISSION_RUNNING: &str = "keel_admission_running";
    /// Histogram: how long admitted requests waited for a slot, in seconds (0 for those admitted
    /// at once).
    pub const ADMISSION_QUEUE_WAIT_SECONDS: &str = "keel_admission_queue_wait_seconds";
    /// Counter: requests an admission queue shed (503), by `reason` (`queue_full`, `displaced`,
    /// `wait_too_long`, `deadline_unmeetable`, `deadline_passed`); every reason from start-up.
    pub const ADMISSION_SHED_TOTAL: &str = "keel_admission_shed_total";
    /// Counter: requests given an admission slot, at once or after waiting.
    pub const ADMISSION_ADMITTED_TOTAL: &str = "keel_admission_admitted_total";
    /// Counter: requests admitted with an API key, by `key` (the key's name, never its secret;
    /// bounded: keys are made by the operator). The only series labelled by key.
    pub const REQUESTS_BY_KEY_TOTAL: &str = "keel_requests_by_key_total";
    /// Histogram: time from request to the first chunk of the answer's body, in seconds. Labels:
    /// `route`, `model`.
    pub const TIME_TO_FIRST_CHUNK_SECONDS: &str = "keel_time_to_first_chunk_seconds";
    /// Counter: calls keel made to an upstream (every attempt, retries and fallbacks included),
    /// by `upstream`. Failed ones are also in [`UPSTREAM_ERRORS_TOTAL`] by class.
    pub const UPSTREAM_REQUESTS_TOTAL: &str = "keel_upstream_requests_total";
    /// Counter: calls keel made to a remote upstream (one outside this network: the request left
    /// the premises), by `upstream` and `route`.
    pub const REMOTE_REQUESTS_TOTAL: &str = "keel_remote_requests_total";
    /// Counter: tokens charged to an upstream's daily budget (`tokens_per_day`), by `upstream`.
    pub const UPSTREAM_BUDGET_TOKENS_TOTAL: &str = "keel_upstream_budget_tokens_total";
    /// Counter: retry rounds (the route's targets tried again after a pause), by `route`.
    pub const RETRIES_TOTAL: &str = "keel_retries_total";
    /// Counter: answers that came from a target after an earlier one failed or was skipped, by
    /// `route`.
    pub const FALLBACKS_TOTAL: &str = "keel_fallbacks_total";
    /// Counter: structured-output re-asks (the model asked again with the validation error), by
    /// `route`.
    pub const STRUCTURED_REASKS_TOTAL: &str = "keel_structured_reasks_total";
    /// Gauge: sessions in status `active` with a message in the last hour; sampled every 30 s.
    pub const SESSIONS_ACTIVE: &str = "keel_sessions_active";
    /// Counter: messages appended to sessions (the client's and the answers).
    pub const SESSION_MESSAGES_APPENDED_TOTAL: &str = "keel_session_messages_appended_total";
    /// Counter: spans sent to a trace destination, by `destination` (`otlp`, `langfuse`).
    pub const TRACE_SPANS_EXPORTED_TOTAL: &str = "keel_trace_spans_exported_total";
    /// Counter: spans dropped, by `destination` and `reason` (`queue_full`: the collector is too
    /// slow or down and the queue is full; `export_failed`: the collector refused or did not answer).
    pub const TRACE_SPANS_DROPPED_TOTAL: &str = "keel_trace_spans_dropped_total";
    /// Gauge: incidents not resolved, by `kind` and `status` (`open`, `mitigated`).
    pub const INCIDENTS_OPEN: &str = "keel_incidents_open";
    /// Counter: incident events recorded, by `kind` and `effect`; `dropped` events the recorder
    /// could not keep up with are counted with `effect="dropped"`.
    pub const INCIDENT_EVENTS_TOTAL: &str = "keel_incident_events_total";
    /// Gauge: durable jobs in the store, by `status` (`queued`, `running`, `done`, `failed`).
    pub const JOBS: &str = "keel_jobs";
    /// Counter: job runs by this instance, by `kind` and `outcome` (`done`, `retry`, `failed`).
    pub const JOB_RUNS_TOTAL: &str = "keel_job_runs_total";
    /// Counter: webhook deliveries, by `format` and `outcome` (`delivered`, `retry`, `failed`,
    /// `disabled`: the receiver answered 410 Gone).
    pub const NOTIFICATIONS_TOTAL: &str = "keel_notifications_total";
    /// Counter: runbooks written, by `source` (`template`, `model`) and `outcome` (`written`,
    /// `refused`: the model's answer was not usable and the template's stands).
    pub const RUNBOOKS_TOTAL: &str = "keel_runbooks_total";
}

/// Latency buckets in seconds: fine below 100 ms (proxy overhead), coarse up to cold model loads.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

fn builder() -> PrometheusBuilder {
    // The suffix matcher only fails on an empty bucket list, which LATENCY_BUCKETS is not.
    match PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS) {
        Ok(builder) => builder,
        Err(_) => PrometheusBuilder::new(),
    }
}

/// How often histogram samples are folded into their buckets when nobody scrapes `/metrics`.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process-wide Prometheus handle, installing the global recorder on first use.
///
/// Histogram samples are buffered until folded into buckets; a background thread does that every
/// few seconds, so memory stays flat even when nothing scrapes `/metrics`.
///
/// If another recorder was installed first (an embedding program's own), keel's metrics go there
/// and this handle renders an empty page.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder: PrometheusRecorder = builder().build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("keel-metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot start the metrics upkeep thread; histograms are folded only when /metrics is scraped");
        }
        handle
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_recorded_metrics() {
        let handle = prometheus();
        metrics::counter!(names::REQUESTS_TOTAL, "route" => "/api/test", "model" => "m", "status" => "200")
            .increment(2);
        metrics::histogram!(names::REQUEST_DURATION_SECONDS, "route" => "/api/test", "model" => "m", "status" => "200")
            .record(0.003);
        let text = handle.render();
        assert!(text.contains("keel_requests_total{route=\"/api/test\",model=\"m\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("keel_request_duration_seconds_bucket"), "{text}");
        assert!(text.contains("keel_build_info"), "{text}");
    }
}
