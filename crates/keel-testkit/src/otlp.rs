//! A local OTLP/HTTP trace receiver that decodes what it gets (OTLP/HTTP protobuf), for tests of
//! keel's trace export. It can also be told to fail every request, as a collector that is down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::{AnyValue as Any, KeyValue};
use prost::Message;

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The span's name.
    pub name: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id (empty for a root).
    pub parent_span_id: String,
    /// `SPAN_KIND_*` as a number (1 internal, 2 server, 3 client).
    pub kind: i32,
    /// Attributes as text (numbers and booleans printed).
    pub attributes: HashMap<String, String>,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// The resource's `service.name`.
    pub service: String,
}

impl ReceivedSpan {
    /// An attribute's value, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One export request: where it was posted, its headers, its spans.
#[derive(Debug, Clone)]
pub struct Export {
    /// The request path.
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The spans it carried.
    pub spans: Vec<ReceivedSpan>,
}

#[derive(Default)]
struct Inbox {
    exports: Mutex<Vec<Export>>,
    failing: AtomicBool,
}

/// A running receiver on `127.0.0.1`, stopped when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    https: bool,
    inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Starts a receiver that accepts every path.
    pub async fn start() -> OtlpReceiver {
        let inbox = Arc::new(Inbox::default());
        let app = axum::Router::new().fallback(receive).with_state(Arc::clone(&inbox));
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(err) => panic!("cannot bind the OTLP receiver: {err}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(err) => panic!("no local addr: {err}"),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver { addr, https: false, inbox, task }
    }

    /// Starts a receiver over HTTPS, its certificate signed by a new test CA written to `ca_pem`
    /// (see [`crate::tls`]).
    pub async fn start_tls(ca_pem: &std::path::Path) -> OtlpReceiver {
        let inbox = Arc::new(Inbox::default());
        let app = axum::Router::new().fallback(receive).with_state(Arc::clone(&inbox));
        let (addr, task) = crate::tls::serve(app, ca_pem).await;
        OtlpReceiver { addr, https: true, inbox, task }
    }

    /// `http://127.0.0.1:port` (`https://localhost:port` over TLS).
    pub fn url(&self) -> String {
        if self.https { format!("https://localhost:{}", self.addr.port()) } else { format!("http://{}", self.addr) }
    }

    /// From now on, answer every export with 503 (or accept them again).
    pub fn set_failing(&self, failing: bool) {
        self.inbox.failing.store(failing, Ordering::SeqCst);
    }

    /// Every export received so far.
    pub fn exports(&self) -> Vec<Export> {
        self.inbox.exports.lock().clone()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.exports().into_iter().flat_map(|e| e.spans).collect()
    }

    /// Waits (up to 20 s) until `done` holds for the spans received; panics with them otherwise.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        for _ in 0..200 {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let names: Vec<String> = self.spans().iter().map(|s| s.name.clone()).collect();
        panic!("the OTLP receiver did not get {what}; it got spans {names:?}");
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    if inbox.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    // keel exports http/protobuf, OTLP's default.
    if headers.get("content-type").is_none_or(|v| v != "application/x-protobuf") {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else { return StatusCode::BAD_REQUEST };
    let spans = decode(request);
    inbox.exports.lock().push(Export { path: uri.path().to_owned(), headers, spans });
    StatusCode::OK
}

fn decode(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    status: span.status.map_or(0, |s| s.code),
                    service: service.clone(),
                });
            }
        }
    }
    spans
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default())).collect()
}

fn text(value: &Any) -> String {
    match &value.value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(n)) => n.to_string(),
        Some(AnyValue::DoubleValue(n)) => n.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
