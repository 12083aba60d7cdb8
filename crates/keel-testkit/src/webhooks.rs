//! A local webhook receiver for tests of keel's notifications: it keeps every delivery (headers
//! and body) and answers from a script — e.g. 500 twice, then 204 — so retries can be watched.
//! [`WebhookReceiver::start_tls`] serves it over HTTPS with a certificate of a test CA of its
//! own (for `localhost` and `127.0.0.1`), whose PEM it writes for keel's `ca_file`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Delivery {
    /// A header's value as text ("" if absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(value) => value,
            Err(err) => panic!("a delivery that is not JSON ({err}): {:?}", self.body),
        }
    }
}

#[derive(Default)]
struct Inbox {
    deliveries: Mutex<Vec<Delivery>>,
    /// Statuses (and `Retry-After` seconds) to answer next, in order; then 204.
    script: Mutex<VecDeque<(u16, Option<u64>)>>,
}

/// A running receiver on `127.0.0.1`, stopped when dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    scheme: &'static str,
    inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    /// Starts a receiver answering 204 to every POST.
    pub async fn start() -> WebhookReceiver {
        let inbox = Arc::new(Inbox::default());
        let app = axum::Router::new().fallback(receive).with_state(Arc::clone(&inbox));
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(err) => panic!("cannot bind the webhook receiver: {err}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(err) => panic!("no local addr: {err}"),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { addr, scheme: "http", inbox, task }
    }

    /// Starts a receiver answering over HTTPS, its certificate (for `localhost` and
    /// `127.0.0.1`) signed by a new test CA whose certificate is written to `ca_pem`.
    pub async fn start_tls(ca_pem: &std::path::Path) -> WebhookReceiver {
        let inbox = Arc::new(Inbox::default());
        let app = axum::Router::new().fallback(receive).with_state(Arc::clone(&inbox));
        let (addr, task) = crate::tls::serve(app, ca_pem).await;
        WebhookReceiver { addr, scheme: "https", inbox, task }
    }

    /// `http://127.0.0.1:port/hook` (`https://localhost:port/hook` for a TLS receiver).
    pub fn url(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}/hook", self.addr.port()),
            _ => format!("http://{}/hook", self.addr),
        }
    }

    /// Answers the next deliveries with these statuses (and `Retry-After` seconds), in order.
    pub fn answer_next(&self, statuses: &[(u16, Option<u64>)]) {
        self.inbox.script.lock().extend(statuses.iter().copied());
    }

    /// Every delivery so far, failed ones too.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inbox.deliveries.lock().clone()
    }

    /// The deliveries answered with 2xx.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries().into_iter().filter(|d| (200..300).contains(&d.answered)).collect()
    }

    /// Waits (up to `within`) until `done` holds for the deliveries; panics with them otherwise.
    pub async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let start = tokio::time::Instant::now();
        loop {
            let deliveries = self.deliveries();
            if done(&deliveries) {
                return deliveries;
            }
            if start.elapsed() > within {
                let bodies: Vec<String> =
                    deliveries.iter().map(|d| format!("{} {}", d.answered, String::from_utf8_lossy(&d.body))).collect();
                panic!("webhook receiver: no {what} within {within:?}; got {bodies:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, retry_after) = inbox.script.lock().pop_front().unwrap_or((204, None));
    inbox.deliveries.lock().push(Delivery { headers, body, answered: status });
    let mut response = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
    }
    response
}
