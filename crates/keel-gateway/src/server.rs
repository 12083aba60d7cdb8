//! Serving: one single-threaded runtime per core, `TCP_NODELAY` on every accepted socket,
//! keep-alive, graceful and bounded shutdown.
//!
//! Like nginx's worker processes, each serving thread runs its own event loop. The caller's
//! runtime accepts connections and hands them out round-robin; from then on a connection, its
//! requests, their upstream connections and response streams never leave that thread. Measured against one multi-threaded runtime
//! this removes cross-thread wake-ups from the request path: +29% requests/s at 64 connections
//! and a p99 at 8 connections that fell from ~4 ms to ~0.5 ms (BENCHMARKS.md).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use keel_types::Dialect;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;

use crate::app::app;
use crate::connections::{AcceptBackoff, Conn, Connections, Limits, Registration, TrackedIo};
use crate::error::ProxyError;
use crate::http1::Stop;
use crate::state::{Gateway, GatewayError};

/// How long connections get, after the shutdown grace ran out and their streams were ended with
/// an error line, to write those last bytes before `serve` returns.
const FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// The most bytes of header names and values keel takes in one request; more is refused with a
/// 431 in the endpoint's dialect. (Below the HTTP/1.1 reader's own limits, a 256 KiB head and
/// 128 header fields, past which it answers a 431 itself, in Ollama's form.)
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener or a serving thread failed.
    #[error("server error: {0}")]
    Io(#[from] io::Error),
    /// A serving thread's upstream clients could not be built.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// A serving thread ended without reporting why.
    #[error("a serving thread stopped unexpectedly")]
    WorkerLost,
}

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting and waits for
/// in-flight requests (streams included) for at most `[server] shutdown_grace`. What is still open
/// then ends with an error saying to retry (a 503, or an error line in the stream's framing), with
/// a second to be sent.
///
/// Runs `[server] workers` serving threads (one per core by default); the caller's runtime only
/// waits for `shutdown`.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let traces = gateway.inner.traces.clone();
    let served = serve_until(listener, gateway, shutdown).await;
    // The spans of the last requests are sent before keel exits.
    if let Some(traces) = traces {
        traces.flush(TRACE_FLUSH).await;
    }
    served
}

/// How long the last spans may take to reach their collector at shutdown.
const TRACE_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// [`serve`] without the final flush of traces.
async fn serve_until(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let grace = gateway.config().server.shutdown_grace;
    let workers = gateway.config().server.workers.max(1);
    let connections = Connections::new(limits(&gateway));
    let watcher = tokio::spawn(Arc::clone(&connections).watch());
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace_over = CancellationToken::new();
    let mut finished = Vec::with_capacity(workers);
    let mut handoff = Vec::with_capacity(workers);
    for index in 0..workers {
        let gateway = if index == 0 { gateway.clone() } else { gateway.with_own_clients()? };
        let (done_tx, done_rx) = oneshot::channel();
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let stop = stop_rx.clone();
        // One child per thread: requests and streams wait on their own thread's token.
        let grace_over = grace_over.child_token();
        std::thread::Builder::new().name(format!("keel-worker-{index}")).spawn(move || {
            let incoming = Incoming { connections: conn_rx };
            let _ = done_tx.send(run_worker(incoming, gateway, stop, grace_over));
        })?;
        finished.push(done_rx);
        handoff.push(conn_tx);
    }

    let background = crate::background::spawn(&gateway);
    let all_done = futures_util::future::join_all(finished);
    let mut all_done = std::pin::pin!(all_done);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0;
    let mut backoff = AcceptBackoff::new();
    loop {
        tokio::select! {
            results = &mut all_done => return first_error(results),
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    next = hand_over(stream, peer, connections.register(peer.ip()), &handoff, next);
                }
                // Out of file descriptors and the like: free some, back off instead of spinning.
                Err(err) => {
                    if keel_upstream::is_local_shortage(&err) {
                        gateway.relieve_descriptor_pressure();
                        connections.close_one_idle();
                    }
                    let pause = backoff.failed(&err, connections.open(), std::time::Instant::now());
                    tokio::time::sleep(pause).await;
                }
            },
        }
    }
    // Stop accepting: the port closes, new connections are refused.
    drop(listener);
    watcher.abort();
    drop(background);
    drop(handoff);
    tracing::info!(grace = %keel_types::duration::format(grace), "shutting down: no new connections; waiting for in-flight requests");
    let _ = stop_tx.send(true);
    if let Ok(results) = tokio::time::timeout(grace, all_done.as_mut()).await {
        tracing::info!("all requests finished; stopped");
        return first_error(results);
    }
    // Nothing ends bare: what is still open gets an error saying to retry, then a moment to send it.
    tracing::warn!("shutdown grace period over; ending the remaining requests with an error");
    grace_over.cancel();
    match tokio::time::timeout(FLUSH, all_done).await {
        Ok(results) => first_error(results),
        Err(_) => {
            tracing::warn!("closing the remaining connections");
            Ok(())
        }
    }
}

/// The connection limits `[server]` sets (`max_connections = 0` resolved from the open-file
/// limit).
fn limits(gateway: &Gateway) -> Limits {
    let server = &gateway.config().server;
    let max_connections = match server.max_connections {
        0 => crate::connections::auto_max_connections(),
        max => max,
    };
    Limits { header_timeout: server.header_timeout, idle_timeout: server.idle_timeout, max_connections }
}

/// An accepted connection on its way to a serving thread.
type Handoff = (std::net::TcpStream, SocketAddr, Registration);

/// Hands an accepted connection to serving thread `next` (with `TCP_NODELAY` set); gives the
/// next thread's index.
fn hand_over(
    stream: TcpStream,
    peer: SocketAddr,
    registration: Registration,
    handoff: &[mpsc::UnboundedSender<Handoff>],
    next: usize,
) -> usize {
    // Without this, Nagle's algorithm and delayed ACKs stall small writes by ~40 ms.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "could not set TCP_NODELAY on an accepted connection");
    }
    match stream.into_std() {
        Ok(stream) => {
            let _ = handoff[next].send((stream, peer, registration));
            (next + 1) % handoff.len()
        }
        Err(err) => {
            tracing::debug!(%err, "could not hand over an accepted connection");
            next
        }
    }
}

/// The connections handed to one serving thread.
struct Incoming {
    connections: mpsc::UnboundedReceiver<Handoff>,
}

impl Incoming {
    /// The next connection; pending forever once the acceptor has stopped (shutdown follows).
    async fn accept(&mut self) -> (TcpStream, Registration) {
        loop {
            match self.connections.recv().await {
                Some((stream, peer, registration)) => {
                    match stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
                        Ok(stream) => return (stream, registration),
                        Err(err) => tracing::debug!(%err, %peer, "could not adopt a handed-over connection"),
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// Routes a request: keel's own endpoints (`/keel/*`, `/metrics`) to the axum router, everything
/// else straight to the proxy.
///
/// The proxied path skips the router and its tower layers (route matching, two boxed futures per
/// request, response mapping): callgrind counted them at about a tenth of keel's instructions
/// per proxied request.
#[derive(Clone)]
struct Dispatch {
    gateway: Gateway,
    router: axum::Router,
    /// This serving thread's [`crate::shutdown::grace_over`].
    grace_over: CancellationToken,
    /// The connection served (set per connection).
    conn: Option<Arc<Conn>>,
}

impl crate::http1::Service for Dispatch {
    fn call(
        &self,
        request: http::Request<axum::body::Body>,
    ) -> impl Future<Output = axum::response::Response> + Send + 'static {
        self.answer(request)
    }
}

impl Dispatch {
    /// The answer to `request`, boxed (the proxy's future is large: it is allocated once).
    fn answer(&self, request: http::Request<axum::body::Body>) -> BoxFuture<'static, axum::response::Response> {
        if let Some(refused) = headers_too_large(&request).or_else(|| self.over_capacity(&request)) {
            return Box::pin(std::future::ready(refused));
        }
        let mut request = request;
        let busy = self.conn.as_ref().map(|conn| {
            request.extensions_mut().insert(crate::client::ClientIp(conn.peer));
            conn.begin()
        });
        if crate::endpoint::is_keel_own(request.uri().path()) {
            let router = self.router.clone();
            return Box::pin(async move {
                let _busy = busy;
                let (method, path) = (request.method().clone(), request.uri().path().to_owned());
                let Ok(response) = tower::ServiceExt::oneshot(router, request).await;
                errors_as_json(response, &method, &path).await
            });
        }
        let gateway = self.gateway.clone();
        let grace_over = self.grace_over.clone();
        Box::pin(async move {
            let _busy = busy;
            let dialect = Dialect::of_path(request.uri().path());
            // (`select!` polls the request's future where it is: it is large, moving it costs.)
            tokio::select! {
                biased;
                response = crate::pipeline::proxy(axum::extract::State(gateway), request) => response,
                () = grace_over.cancelled() => {
                    tracing::warn!("shutdown grace period over before the answer came; answering 503");
                    ProxyError::ShuttingDown.into_response_in(dialect)
                }
            }
        })
    }

    /// A 503 (and the connection closed after it) for everything but `/keel/health` on a
    /// connection taken beyond `[server] max_connections`.
    fn over_capacity<B>(&self, request: &http::Request<B>) -> Option<axum::response::Response> {
        let max = self.conn.as_ref()?.over_capacity?;
        if request.uri().path() == "/keel/health" {
            return None;
        }
        let dialect = Dialect::of_path(request.uri().path());
        let mut response = ProxyError::AtConnectionLimit { max }.into_response_in(dialect);
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        Some(response)
    }
}

/// A 431 in the endpoint's dialect when the request's headers exceed [`MAX_HEADER_BYTES`].
fn headers_too_large<B>(request: &http::Request<B>) -> Option<axum::response::Response> {
    let size: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if size <= MAX_HEADER_BYTES {
        return None;
    }
    tracing::info!(status = 431, size, "request rejected: headers too large");
    let dialect = Dialect::of_path(request.uri().path());
    let mut response = ProxyError::HeadersTooLarge { size, limit: MAX_HEADER_BYTES }.into_response_in(dialect);
    // The body, if any, is not read: the connection cannot be reused.
    response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    Some(response)
}

/// keel's own endpoints answer JSON, errors included: an error the router produced itself (a
/// method an endpoint does not take, a path or query it could not read; bare or plain text) is
/// given an `{"error": "..."}` body saying what to send instead.
async fn errors_as_json(
    response: axum::response::Response,
    method: &http::Method,
    path: &str,
) -> axum::response::Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let message = if status == http::StatusCode::METHOD_NOT_ALLOWED {
        let allowed = parts.headers.get(http::header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
        format!("{path} does not take {method}; it takes {allowed}")
    } else {
        let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let reason = status.canonical_reason().unwrap_or("error");
        if text.trim().is_empty() { format!("{path}: {reason}") } else { format!("{path}: {}", text.trim()) }
    };
    let body = keel_upstream::ErrorBody::new(Dialect::Ollama, status, &message).body;
    let mut response = axum::response::IntoResponse::into_response((status, body));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json; charset=utf-8"));
    for name in [http::header::ALLOW, crate::request_id::REQUEST_ID] {
        if let Some(value) = parts.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// Serves one client connection (HTTP/1.1, keep-alive) until it closes, or until `closing`
/// (shutdown) or the connection watcher asks it to close: at once for a request head that takes
/// too long, else after the request in hand.
async fn serve_connection(
    stream: TcpStream,
    registration: Registration,
    mut dispatch: Dispatch,
    mut closing: watch::Receiver<bool>,
) {
    let conn = Arc::clone(registration.conn());
    dispatch.conn = Some(Arc::clone(&conn));
    let keep_alive = conn.over_capacity.is_none();
    let stop = async {
        tokio::select! {
            // (the value `wait_for` returns borrows the channel; it is dropped before going on)
            () = async { drop(closing.wait_for(|closing| *closing).await) } => Stop::AfterRequest,
            now = conn.close_requested() => if now { Stop::Now } else { Stop::AfterRequest },
        }
    };
    let io = TrackedIo::new(stream, Arc::clone(&conn));
    if let Err(err) = crate::http1::serve(io, &dispatch, keep_alive, stop).await {
        tracing::debug!(%err, "client connection ended with an error");
    }
}

fn first_error(results: Vec<Result<io::Result<()>, oneshot::error::RecvError>>) -> Result<(), ServeError> {
    for result in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(ServeError::Io(err)),
            Err(_) => return Err(ServeError::WorkerLost),
        }
    }
    Ok(())
}

/// Keeps a timer due within the next second on this serving thread.
///
/// When the event loop goes to sleep with no timer due, tokio has to wake it (an eventfd write
/// and one more `epoll_wait`) for the first timer registered after, and every proxied request
/// registers one (its response timeout): `strace` counted that on ~15% of requests at 8
/// connections. With a timer always due soon, a request's later timeout never interrupts the loop.
/// Each tick also closes this thread's upstream connections idle past `pool_idle_timeout`, so an
/// idle keel holds no sockets open to its model servers, and all of its idle ones when keel has
/// run short of file descriptors since the last tick.
async fn keep_a_timer_due(gateway: Gateway) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pressure_seen = 0;
    loop {
        tick.tick().await;
        let pressure = gateway.inner.descriptor_pressure.load(std::sync::atomic::Ordering::Relaxed);
        if pressure != pressure_seen {
            pressure_seen = pressure;
            gateway.close_idle_upstream_connections();
        }
        for upstream in gateway.upstreams.iter() {
            upstream.client.close_expired();
        }
    }
}

/// One serving thread: a single-threaded runtime serving the connections handed to it. When
/// `stop` turns true it takes no more connections, lets each finish its in-flight request, and
/// returns once all are closed.
fn run_worker(
    mut incoming: Incoming,
    gateway: Gateway,
    mut stop: watch::Receiver<bool>,
    grace_over: CancellationToken,
) -> io::Result<()> {
    crate::shutdown::set_grace_over(&grace_over);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        tokio::spawn(keep_a_timer_due(gateway.clone()));
        let dispatch = Dispatch { router: app(gateway.clone()), gateway, grace_over, conn: None };
        // The same signal tells each connection to finish its request and close.
        let closing = stop.clone();
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                (stream, registration) = incoming.accept() => {
                    connections.spawn(serve_connection(stream, registration, dispatch.clone(), closing.clone()));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        while connections.join_next().await.is_some() {}
        Ok(())
    })
}
