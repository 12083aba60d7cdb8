//! OpenTelemetry traces, exported over OTLP/HTTP to a collector (Jaeger, Tempo, an OpenTelemetry
//! Collector) or to Langfuse.
//!
//! Where spans go is read from the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (plus `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`), and from
//! `LANGFUSE_PUBLIC_KEY`, `LANGFUSE_SECRET_KEY` and `LANGFUSE_HOST`. Nothing set: no tracer, and
//! no cost on the request path.
//!
//! Finished spans wait in a bounded queue per destination and are sent in batches by a task of
//! their own. A collector that is down or slow never blocks a request and never grows memory:
//! spans that do not fit the queue, or whose batch could not be sent, are dropped and counted in
//! `keel_trace_spans_dropped_total` (with a log line at most once a minute).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, watch};

pub use opentelemetry::Context;

use crate::names;

/// Langfuse's OTLP path, appended to `LANGFUSE_HOST`.
const LANGFUSE_PATH: &str = "/api/public/otel/v1/traces";
/// Langfuse Cloud, when `LANGFUSE_HOST` is not set.
const LANGFUSE_CLOUD: &str = "https://cloud.langfuse.com";

/// A trace setting that cannot work, said in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Only one of the two Langfuse keys is set.
    #[error("{missing} is not set but {set} is: set both Langfuse keys to send traces to Langfuse, or neither")]
    HalfLangfuse {
        /// The variable that is missing.
        missing: &'static str,
        /// The variable that is set.
        set: &'static str,
    },
    /// An endpoint is not an `http://` URL keel can send to.
    #[error(
        "cannot send traces to {endpoint:?} ({variable}): {reason}. Use an http:// address, e.g. an OpenTelemetry Collector next to keel that forwards over TLS"
    )]
    BadEndpoint {
        /// The variable the endpoint came from.
        variable: &'static str,
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A protocol other than OTLP over HTTP.
    #[error(
        "{variable}={protocol:?}: keel sends traces over OTLP/HTTP only; set it to \"http/protobuf\" (or \"http/json\") and point the endpoint at the collector's HTTP port (usually 4318)"
    )]
    Protocol {
        /// The variable that set it.
        variable: &'static str,
        /// The protocol asked for.
        protocol: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot set up the trace exporter for {endpoint}: {reason}")]
    Exporter {
        /// Where it would have sent spans.
        endpoint: String,
        /// The exporter's own words.
        reason: String,
    },
}

/// One place finished spans are sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// `otlp` or `langfuse`: the `destination` label of the trace metrics.
    pub destination: &'static str,
    /// The full URL spans are posted to.
    pub endpoint: String,
    /// Extra request headers (authorization); `OTEL_EXPORTER_OTLP_HEADERS` is added by the exporter.
    pub headers: Vec<(String, String)>,
    /// Send OTLP as JSON (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) instead of protobuf.
    pub json: bool,
    /// A PEM file of CA certificates to trust for an `https://` endpoint besides the system's
    /// (`OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` / `OTEL_EXPORTER_OTLP_CERTIFICATE`).
    pub certificate: Option<String>,
}

impl TraceExport {
    /// An OTLP/HTTP destination at `endpoint` (the full `/v1/traces` URL).
    pub fn otlp(endpoint: impl Into<String>) -> TraceExport {
        TraceExport {
            destination: "otlp",
            endpoint: endpoint.into(),
            headers: Vec::new(),
            json: false,
            certificate: None,
        }
    }

    /// Langfuse at `host` (e.g. `http://127.0.0.1:3000`), with its project's keys.
    pub fn langfuse(host: &str, public_key: &str, secret_key: &str) -> TraceExport {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{public_key}:{secret_key}"));
        TraceExport {
            destination: "langfuse",
            endpoint: format!("{}{LANGFUSE_PATH}", host.trim_end_matches('/')),
            headers: vec![
                ("authorization".into(), format!("Basic {credentials}")),
                ("x-langfuse-ingestion-version".into(), "4".into()),
            ],
            json: false,
            certificate: None,
        }
    }

    /// Every destination the environment names (none: tracing is off). `OTEL_SDK_DISABLED=true`
    /// or `OTEL_TRACES_EXPORTER=none` turn the OTLP destination off.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Vec<TraceExport>, TraceError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut exports = Vec::new();
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if !disabled {
            let endpoint = if let Some(endpoint) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(checked("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)?)
            } else if let Some(base) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
                let base = checked("OTEL_EXPORTER_OTLP_ENDPOINT", base)?;
                Some(format!("{}/v1/traces", base.trim_end_matches('/')))
            } else {
                None
            };
            if let Some(endpoint) = endpoint {
                let json = json_protocol(&set)?;
                let certificate =
                    set("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE").or_else(|| set("OTEL_EXPORTER_OTLP_CERTIFICATE"));
                exports.push(TraceExport { json, certificate, ..TraceExport::otlp(endpoint) });
            }
        }
        match (set("LANGFUSE_PUBLIC_KEY"), set("LANGFUSE_SECRET_KEY")) {
            (Some(public), Some(secret)) => {
                let host = checked("LANGFUSE_HOST", set("LANGFUSE_HOST").unwrap_or_else(|| LANGFUSE_CLOUD.into()))?;
                exports.push(TraceExport::langfuse(&host, &public, &secret));
            }
            (Some(_), None) => {
                return Err(TraceError::HalfLangfuse { missing: "LANGFUSE_SECRET_KEY", set: "LANGFUSE_PUBLIC_KEY" });
            }
            (None, Some(_)) => {
                return Err(TraceError::HalfLangfuse { missing: "LANGFUSE_PUBLIC_KEY", set: "LANGFUSE_SECRET_KEY" });
            }
            (None, None) => {}
        }
        Ok(exports)
    }
}

/// Whether `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` (else `OTEL_EXPORTER_OTLP_PROTOCOL`) asks for
/// JSON; protobuf, OTLP's default, otherwise.
fn json_protocol(set: &dyn Fn(&str) -> Option<String>) -> Result<bool, TraceError> {
    let Some((variable, protocol)) = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]
        .into_iter()
        .find_map(|name| set(name).map(|value| (name, value)))
    else {
        return Ok(false);
    };
    match protocol.trim() {
        "http/protobuf" => Ok(false),
        "http/json" => Ok(true),
        other => Err(TraceError::Protocol { variable, protocol: other.to_owned() }),
    }
}

/// The endpoint when keel can send to it: an `http://` or `https://` URL with a host.
fn checked(variable: &'static str, endpoint: String) -> Result<String, TraceError> {
    let bad = |reason: &str| TraceError::BadEndpoint { variable, endpoint: endpoint.clone(), reason: reason.into() };
    let uri: http::Uri = endpoint.parse().map_err(|err: http::uri::InvalidUri| bad(&err.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(endpoint),
        _ => Err(bad("not an http:// or https:// URL")),
    }
}

/// keel's own HTTP(S) client (`keel-outbound`: rustls with ring) as the OTLP exporter's.
#[derive(Debug)]
struct Outbound {
    client: keel_outbound::Client,
    timeout: Duration,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Outbound {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        self.client.send(request, self.timeout).await.map_err(opentelemetry_http::HttpError::from)
    }
}

/// How spans are batched: the standard `OTEL_BSP_*` variables, with their standard defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Finished spans waiting to be sent, per destination; more are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue: usize,
    /// Spans per request to the collector (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_batch: usize,
    /// How long a batch waits to fill (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds).
    pub delay: Duration,
    /// How long one request to the collector may take (`OTEL_BSP_EXPORT_TIMEOUT`, milliseconds).
    pub timeout: Duration,
}

impl Default for Batching {
    fn default() -> Batching {
        Batching { max_queue: 2048, max_batch: 512, delay: Duration::from_secs(5), timeout: Duration::from_secs(30) }
    }
}

impl Batching {
    /// The defaults, changed by whichever `OTEL_BSP_*` variables are set to a number.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Batching {
        let number = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0);
        let defaults = Batching::default();
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE").map_or(defaults.max_queue, |n| n as usize);
        Batching {
            max_queue,
            max_batch: number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
                .map_or(defaults.max_batch, |n| n as usize)
                .min(max_queue),
            delay: number("OTEL_BSP_SCHEDULE_DELAY").map_or(defaults.delay, Duration::from_millis),
            timeout: number("OTEL_BSP_EXPORT_TIMEOUT").map_or(defaults.timeout, Duration::from_millis),
        }
    }
}

/// The tracer and its exporting tasks. Dropping it stops nothing: call [`Traces::shutdown`] to
/// send what is queued.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    stop: watch::Sender<bool>,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    exports: Vec<TraceExport>,
}

impl Traces {
    /// Starts exporting to `exports` (at least one) on the current Tokio runtime. `service` names
    /// the service when `OTEL_SERVICE_NAME` does not.
    pub fn start(exports: Vec<TraceExport>, batching: Batching, service: &str) -> Result<Traces, TraceError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TraceError::Exporter {
            endpoint: exports.first().map(|e| e.endpoint.clone()).unwrap_or_default(),
            reason: "traces are sent from a Tokio runtime and none is running".into(),
        })?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service.to_owned());
        }
        let resource =
            resource.with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build();
        let (stop, stopped) = watch::channel(false);
        let mut provider = SdkTracerProvider::builder().with_resource(resource.clone());
        let mut tasks = Vec::new();
        for export in &exports {
            let mut exporter = build_exporter(export, batching.timeout)?;
            exporter.set_resource(&resource);
            let (queue, spans) = mpsc::channel(batching.max_queue);
            register(export.destination);
            let sender = Sender { destination: export.destination, endpoint: export.endpoint.clone(), exporter };
            tasks.push(runtime.spawn(sender.run(spans, batching, stopped.clone())));
            provider = provider.with_span_processor(Queue { queue, destination: export.destination });
        }
        let provider = provider.build();
        let tracer = provider.tracer("keel");
        Ok(Traces { provider, tracer, stop, tasks: parking_lot::Mutex::new(tasks), exports })
    }

    /// The tracer spans are started with.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Where spans go, for the start-up log line.
    pub fn exports(&self) -> &[TraceExport] {
        &self.exports
    }

    /// Sends what is queued (waiting at most `within`), then stops exporting.
    pub async fn shutdown(&self, within: Duration) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        let _ = tokio::time::timeout(within, async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
        let _ = self.provider.shutdown();
    }
}

/// Every trace series from start-up, at zero.
fn register(destination: &'static str) {
    metrics::counter!(names::TRACE_SPANS_EXPORTED_TOTAL, "destination" => destination).increment(0);
    for reason in ["queue_full", "export_failed"] {
        metrics::counter!(names::TRACE_SPANS_DROPPED_TOTAL, "destination" => destination, "reason" => reason)
            .increment(0);
    }
}

fn build_exporter(export: &TraceExport, timeout: Duration) -> Result<opentelemetry_otlp::SpanExporter, TraceError> {
    let failed = |reason: String| TraceError::Exporter { endpoint: export.endpoint.clone(), reason };
    let extra = match &export.certificate {
        Some(file) => keel_outbound::pem_certificates(std::path::Path::new(file))
            .map_err(|e| failed(format!("OTEL_EXPORTER_OTLP_CERTIFICATE {file}: {e}")))?,
        None => Vec::new(),
    };
    let client = keel_outbound::Client::new(&extra).map_err(failed)?;
    let headers: HashMap<String, String> = export.headers.iter().cloned().collect();
    let protocol =
        if export.json { opentelemetry_otlp::Protocol::HttpJson } else { opentelemetry_otlp::Protocol::HttpBinary };
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Outbound { client, timeout })
        .with_protocol(protocol)
        .with_endpoint(export.endpoint.clone())
        .with_headers(headers)
        .with_timeout(timeout)
        .build()
        .map_err(|err| failed(err.to_string()))
}

/// The span processor: hands finished spans to the destination's queue, never waiting.
#[derive(Debug)]
struct Queue {
    queue: mpsc::Sender<SpanData>,
    destination: &'static str,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            metrics::counter!(names::TRACE_SPANS_DROPPED_TOTAL, "destination" => self.destination, "reason" => "queue_full")
                .increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends one destination's queued spans in batches.
struct Sender {
    destination: &'static str,
    endpoint: String,
    exporter: opentelemetry_otlp::SpanExporter,
}

/// How often a failing destination is logged.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Sender {
    async fn run(self, mut spans: mpsc::Receiver<SpanData>, batching: Batching, mut stop: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(batching.max_batch);
        let mut last_failure_log: Option<Instant> = None;
        loop {
            let stopping = tokio::select! {
                received = spans.recv_many(&mut batch, batching.max_batch) => received == 0,
                _ = stop.wait_for(|stop| *stop) => true,
            };
            if stopping {
                // What is queued goes out in whole batches (the caller bounds how long), then the
                // task ends.
                loop {
                    while batch.len() < batching.max_batch
                        && let Ok(span) = spans.try_recv()
                    {
                        batch.push(span);
                    }
                    if batch.is_empty() {
                        return;
                    }
                    self.send(std::mem::take(&mut batch), batching.timeout, &mut last_failure_log).await;
                }
            }
            // Let the batch fill for a while, unless it is full already.
            let fill = async {
                while batch.len() < batching.max_batch {
                    let room = batching.max_batch - batch.len();
                    if spans.recv_many(&mut batch, room).await == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(batching.delay, fill).await;
            self.send(std::mem::take(&mut batch), batching.timeout, &mut last_failure_log).await;
        }
    }

    async fn send(&self, batch: Vec<SpanData>, timeout: Duration, last_failure_log: &mut Option<Instant>) {
        let count = batch.len() as u64;
        let result = match tokio::time::timeout(timeout, self.exporter.export(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        match result {
            Ok(()) => {
                metrics::counter!(names::TRACE_SPANS_EXPORTED_TOTAL, "destination" => self.destination)
                    .increment(count);
            }
            Err(reason) => {
                metrics::counter!(names::TRACE_SPANS_DROPPED_TOTAL, "destination" => self.destination, "reason" => "export_failed")
                    .increment(count);
                if last_failure_log.is_none_or(|at| at.elapsed() >= FAILURE_LOG_INTERVAL) {
                    *last_failure_log = Some(Instant::now());
                    tracing::warn!(
                        destination = self.destination,
                        endpoint = %self.endpoint,
                        spans = count,
                        error = %reason,
                        "cannot send traces; these spans are dropped (keel_trace_spans_dropped_total) and requests are not affected. Check that the collector at this address is running"
                    );
                }
            }
        }
    }
}

/// The W3C trace context (`traceparent`, `tracestate`) a request arrived with; an empty context
/// when it has none or it is malformed.
pub fn remote_context(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// Writes `cx`'s span as the W3C `traceparent` (and `tracestate`) of an outgoing request.
pub fn inject_context(cx: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut opentelemetry_http::HeaderInjector(headers));
}

/// Shared ownership of the traces, for the gateway's state.
pub type SharedTraces = Arc<Traces>;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn nothing_set_means_no_export() {
        assert!(TraceExport::from_env(&env(&[])).unwrap().is_empty());
    }

    #[test]
    fn the_traces_endpoint_wins_over_the_base() {
        let exports = TraceExport::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9999/custom"),
        ]))
        .unwrap();
        assert_eq!(exports, vec![TraceExport::otlp("http://127.0.0.1:9999/custom")]);
        let exports =
            TraceExport::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")])).unwrap();
        assert_eq!(exports, vec![TraceExport::otlp("http://127.0.0.1:4318/v1/traces")]);
        let off = TraceExport::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]))
        .unwrap();
        assert!(off.is_empty());
    }

    #[test]
    fn langfuse_gets_its_path_basic_auth_and_version_header() {
        let exports = TraceExport::from_env(&env(&[
            ("LANGFUSE_PUBLIC_KEY", "pk-lf-1"),
            ("LANGFUSE_SECRET_KEY", "sk-lf-2"),
            ("LANGFUSE_HOST", "http://127.0.0.1:3000/"),
        ]))
        .unwrap();
        let [langfuse] = exports.as_slice() else { panic!("{exports:?}") };
        assert_eq!(langfuse.endpoint, "http://127.0.0.1:3000/api/public/otel/v1/traces");
        // base64("pk-lf-1:sk-lf-2")
        assert!(langfuse.headers.contains(&("authorization".into(), "Basic cGstbGYtMTpzay1sZi0y".into())));
        assert!(langfuse.headers.contains(&("x-langfuse-ingestion-version".into(), "4".into())));
    }

    #[test]
    fn https_endpoints_and_their_certificate_are_taken() {
        let exports = TraceExport::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/keel/collector-ca.pem"),
            ("LANGFUSE_PUBLIC_KEY", "pk"),
            ("LANGFUSE_SECRET_KEY", "sk"),
        ]))
        .unwrap();
        assert_eq!(exports[0].endpoint, "https://collector.example:4318/v1/traces");
        assert_eq!(exports[0].certificate.as_deref(), Some("/etc/keel/collector-ca.pem"));
        assert_eq!(
            exports[1].endpoint, "https://cloud.langfuse.com/api/public/otel/v1/traces",
            "Langfuse Cloud by default"
        );
    }

    #[test]
    fn half_a_langfuse_setup_and_bad_endpoints_are_refused_with_the_fix() {
        let err = TraceExport::from_env(&env(&[("LANGFUSE_PUBLIC_KEY", "pk")])).unwrap_err().to_string();
        assert!(err.contains("LANGFUSE_SECRET_KEY is not set"), "{err}");
        let err =
            TraceExport::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")])).unwrap_err().to_string();
        assert!(err.contains("not an http:// or https:// URL") && err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
        const GRPC: &[(&str, &str)] =
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        let err = TraceExport::from_env(&env(GRPC)).unwrap_err().to_string();
        assert!(err.contains("http/protobuf") && err.contains("4318"), "{err}");
        const JSON: &[(&str, &str)] =
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")];
        assert!(TraceExport::from_env(&env(JSON)).unwrap()[0].json);
    }

    #[test]
    fn batching_reads_the_standard_variables() {
        let batching =
            Batching::from_env(&env(&[("OTEL_BSP_SCHEDULE_DELAY", "200"), ("OTEL_BSP_MAX_QUEUE_SIZE", "10")]));
        assert_eq!(batching.delay, Duration::from_millis(200));
        assert_eq!(batching.max_queue, 10);
        assert_eq!(batching.max_batch, 10);
    }

    #[test]
    fn trace_context_round_trips_through_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
        let cx = remote_context(&headers);
        let mut out = http::HeaderMap::new();
        inject_context(&cx, &mut out);
        assert_eq!(out["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let none = remote_context(&http::HeaderMap::new());
        let mut out = http::HeaderMap::new();
        inject_context(&none, &mut out);
        assert!(out.get("traceparent").is_none());
    }
}
