//! The background work of the incident log: the recording task and the job worker, whose
//! runbooks are asked of the model route `[incidents] model` through keel's own router
//! ([`PipelineWriter`]), so the structured-output guard repairs and validates the answer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use keel_incident::runbook::ModelWriter;
use keel_incident::{Worker, WorkerConfig};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::state::{Gateway, Inner};

/// How often the worker looks for due jobs when nothing wakes it.
const POLL: Duration = Duration::from_millis(500);

/// Starts the incident log's recording task and job worker (none without an incident log).
pub(crate) fn spawn(gateway: &Gateway) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(log) = &gateway.inner.incidents else { return Vec::new() };
    let mut tasks = Vec::new();
    if let Some(recording) = log.take_recording() {
        tasks.push(tokio::spawn(recording.run()));
    }
    let config = &gateway.config().incidents;
    let writer: Option<Arc<dyn ModelWriter>> = config.model.as_ref().map(|_| {
        Arc::new(PipelineWriter { gateway: Arc::downgrade(&gateway.inner), timeout: config.job_lease * 3 / 4 }) as _
    });
    let worker_config = WorkerConfig {
        worker_id: format!("{}-{}", gateway.instance_name(), uuid::Uuid::now_v7().simple()),
        deployment: gateway.config().deployment(),
        endpoints: config.notify.clone(),
        model_route: config.model.clone(),
        runbook_dir: config.runbook_dir.clone(),
        lease: config.job_lease,
        poll: POLL,
        model_retry: config.model_retry,
    };
    let worker = Arc::new(Worker::new(log.stores.clone(), worker_config, writer, Arc::clone(&log.wake)));
    tasks.push(tokio::spawn(worker.run()));
    tasks
}

/// Asks a model route for JSON through keel's own pipeline: a `/api/chat` request with the
/// schema as `format`, so the structured-output guard repairs and validates the answer.
struct PipelineWriter {
    /// The gateway (weak: the worker must not keep it alive).
    gateway: Weak<Inner>,
    /// How long one answer may take.
    timeout: Duration,
}

impl ModelWriter for PipelineWriter {
    fn ask<'a>(
        &'a self,
        route: &'a str,
        system: &'a str,
        prompt: String,
        schema: Value,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let gateway = Gateway::from_inner(self.gateway.upgrade().ok_or("keel is shutting down")?)
                .map_err(|error| error.to_string())?;
            let body = keel_incident::runbook::model::chat_request(route, system, &prompt, schema);
            let mut request = http::Request::post("/api/chat")
                .header(http::header::HOST, "127.0.0.1")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .map_err(|error| error.to_string())?;
            request.extensions_mut().insert(crate::client::Caller {
                name: Arc::from("keel-runbooks"),
                limits: crate::config::KeyLimits::default(),
                admin: false,
            });
            let call = crate::app(gateway).oneshot(request);
            let response = tokio::time::timeout(self.timeout, call)
                .await
                .map_err(|_| format!("the model gave no answer within {}", keel_types::duration::format(self.timeout)))?
                .map_err(|error| error.to_string())?;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 4 << 20).await.map_err(|error| error.to_string())?;
            if !status.is_success() {
                return Err(format!(
                    "keel answered {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                ));
            }
            let answer: Value =
                serde_json::from_slice(&bytes).map_err(|error| format!("the answer is not JSON: {error}"))?;
            let content = answer["message"]["content"].as_str().ok_or("the answer has no message content")?;
            serde_json::from_str(content).map_err(|error| format!("the model's content is not JSON: {error}"))
        })
    }
}
