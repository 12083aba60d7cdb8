//! The TCP side: accepting connections (plain or TLS), serving HTTP/1.1 with hyper, graceful
//! shutdown, and the per-connection kill switch behind the `reset` fault.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::body::Stats;
use crate::state::{RecordedRequest, State};
use crate::{Error, Scenario};

/// How long in-flight responses may run after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate and key for serving HTTPS (see [`MockServer::start_tls`] and [`serve_tls`]).
#[derive(Clone)]
pub struct TlsIdentity {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// From PEM: the certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsIdentity, Error> {
        let tls = |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("{what}: {e}"));
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls("invalid certificate PEM", &e))?;
        if chain.is_empty() {
            return Err(Error::Tls("no certificate in the certificate PEM".to_owned()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls("invalid private key PEM", &e))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls("TLS setup", &e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls("certificate and key do not work together", &e))?;
        Ok(TlsIdentity { acceptor: TlsAcceptor::from(Arc::new(config)) })
    }
}

/// Lets a handler abort its connection with a TCP reset.
pub(crate) struct ConnKill {
    fired: AtomicBool,
    notify: Notify,
}

impl ConnKill {
    fn new() -> ConnKill {
        ConnKill { fired: AtomicBool::new(false), notify: Notify::new() }
    }

    /// Resets the connection (SO_LINGER 0, then close) as soon as the connection task sees it.
    pub(crate) fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// The accepted socket; when dropped after [`ConnKill::fire`] it closes with a RST.
struct ConnIo {
    inner: TcpStream,
    kill: Arc<ConnKill>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.kill.fired.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serves the mock on `listener` until `shutdown` completes, then finishes in-flight responses
/// (for at most a few seconds) and returns. This is what `keel mock` runs.
pub async fn serve(
    listener: TcpListener,
    scenario: Scenario,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run(listener, Arc::new(State::new(scenario)), None, shutdown).await
}

/// [`serve`] over HTTPS with `tls`'s certificate (`keel mock --tls-cert --tls-key`).
pub async fn serve_tls(
    listener: TcpListener,
    scenario: Scenario,
    tls: TlsIdentity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run(listener, Arc::new(State::new(scenario)), Some(tls.acceptor), shutdown).await
}

async fn run(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut shutdown = std::pin::pin!(shutdown);
    // Every connection task holds a sender; when all are gone, recv() returns None.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    state.counters.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(accept(stream, tls.clone(), Arc::clone(&state), alive_tx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly, keep serving.
                    tracing::warn!(error = %e, "keel-mock: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    drop(listener);
    state.shutdown.send_replace(true);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
    tracing::debug!("keel-mock: stopped");
    Ok(())
}

/// Serves one accepted connection, after the TLS handshake when serving HTTPS.
async fn accept(stream: TcpStream, tls: Option<TlsAcceptor>, state: Arc<State>, alive: mpsc::Sender<()>) {
    let kill = Arc::new(ConnKill::new());
    let io = ConnIo { inner: stream, kill: Arc::clone(&kill) };
    let Some(acceptor) = tls else {
        return serve_connection(io, kill, state, alive).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(tls_io)) => serve_connection(tls_io, kill, state, alive).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "keel-mock: TLS handshake failed"),
        Err(_) => tracing::debug!("keel-mock: TLS handshake timed out"),
    }
}

async fn serve_connection<I>(io: I, kill: Arc<ConnKill>, state: Arc<State>, _alive: mpsc::Sender<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let svc_state = Arc::clone(&state);
    let svc_kill = Arc::clone(&kill);
    let svc = service_fn(move |req| {
        let state = Arc::clone(&svc_state);
        let kill = Arc::clone(&svc_kill);
        async move { Ok::<_, Infallible>(crate::handlers::dispatch(state, kill, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).timer(TokioTimer::new()).header_read_timeout(None);
    let conn = builder.serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = state.shutdown.subscribe();
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "keel-mock: connection ended with an error");
            }
            return;
        }
        () = kill.notify.notified() => return,
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        () = kill.notify.notified() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
}

/// A running mock server on its own task; dropping it stops the server.
pub struct MockServer {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MockServer {
    /// Binds `addr` (`127.0.0.1:0` picks a free port) and starts serving `scenario`.
    pub async fn start(addr: SocketAddr, scenario: Scenario) -> Result<MockServer, Error> {
        MockServer::spawn(addr, scenario, None).await
    }

    /// Like [`MockServer::start`], serving HTTPS with the PEM certificate chain (leaf first) and
    /// private key; [`MockServer::url`] then starts with `https://`.
    pub async fn start_tls(
        addr: SocketAddr,
        scenario: Scenario,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<MockServer, Error> {
        let tls = TlsIdentity::from_pem(cert_chain_pem, key_pem)?;
        MockServer::spawn(addr, scenario, Some(tls.acceptor)).await
    }

    async fn spawn(addr: SocketAddr, scenario: Scenario, tls: Option<TlsAcceptor>) -> Result<MockServer, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        let state = Arc::new(State::new(scenario));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, Arc::clone(&state), tls, async move {
            let _ = stopped.await;
        }));
        Ok(MockServer { addr: local, scheme, state, stop: Some(stop), task: Some(task) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT` (`https://` when started with TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Replaces the scenario (and reseeds the RNG); requests already running keep the old one.
    pub fn set_scenario(&self, scenario: Scenario) {
        self.state.set_scenario(scenario);
    }

    /// The scenario now in force (including models added by pull, create or copy).
    pub fn scenario(&self) -> Scenario {
        self.state.snapshot().to_scenario()
    }

    /// Every request received (up to `max_recorded`, oldest dropped first), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    /// Counters: requests, completed, cancelled, connections.
    pub fn stats(&self) -> Stats {
        self.state.counters.snapshot()
    }

    /// Stops accepting, lets in-flight responses finish (a few seconds at most), and waits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
