//! Upstream connections kept open between requests.
//!
//! Each [`UpstreamClient`](crate::UpstreamClient) owns one pool. keel gives every serving thread
//! its own clients, so a pool's lock is never contended and a connection never leaves the thread
//! that opened it. A connection goes back to the pool when its response body has been read to
//! the end (see [`ResponseBody`]); a body dropped half-read closes its connection, since the rest
//! of that answer would still be on the wire.
//!
//! Idle connections are taken newest first (the warmest socket) and are closed once they have been
//! idle for `pool_idle_timeout`, checked whenever the pool is used and by
//! [`UpstreamClient::close_expired`](crate::UpstreamClient::close_expired), which the gateway
//! calls on a timer.
//!
//! Connections are pooled by origin: the upstream's authority and, for HTTPS, the TLS
//! settings the connection was verified with, so a plain connection never carries an `https://`
//! request (nor a TLS one an `http://` request), and a connection verified trusting one
//! upstream's `ca_file` never serves an upstream that does not trust it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tokio_rustls::rustls::ClientConfig;

use crate::h1::{Connection, Decoder, HttpError};

/// Which pooled connections may carry a request: the same authority, and the same TLS settings
/// (compared by identity: upstreams built alike share them) or none for both.
#[derive(Clone)]
pub(crate) struct Origin {
    /// `host:port` as written in the upstream's URL.
    pub(crate) authority: Authority,
    /// For `https://`, the TLS settings its connections are made with.
    pub(crate) tls: Option<Arc<ClientConfig>>,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_tls && self.authority == other.authority
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin").field("authority", &self.authority).field("tls", &self.tls.is_some()).finish()
    }
}

/// One connection waiting for its next request.
struct Idle {
    connection: Connection,
    since: Instant,
}

/// Idle connections by upstream origin.
pub(crate) struct Pool {
    /// A handful of upstreams at most: a list compares faster than a map hashes.
    idle: Mutex<Vec<(Origin, Vec<Idle>)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("max_idle", &self.max_idle).field("idle_timeout", &self.idle_timeout).finish()
    }
}

impl Pool {
    /// An empty pool keeping at most `max_idle` connections per upstream, each for at most
    /// `idle_timeout`.
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool { idle: Mutex::new(Vec::new()), max_idle, idle_timeout }
    }

    /// The most recently used open connection to `origin`, if one is idle. Connections the
    /// server closed while they were idle are dropped on the way.
    pub(crate) fn checkout(&self, origin: &Origin) -> Option<Connection> {
        let mut idle = self.idle.lock();
        let (_, connections) = idle.iter_mut().find(|(o, _)| o == origin)?;
        self.evict_expired(connections);
        while let Some(mut idle) = connections.pop() {
            if idle.connection.is_open() {
                return Some(idle.connection);
            }
        }
        None
    }

    /// Puts a connection whose last answer was read to the end back for the next request.
    pub(crate) fn checkin(&self, origin: &Origin, mut connection: Connection) {
        if !connection.is_open() {
            return;
        }
        let mut idle = self.idle.lock();
        let index = match idle.iter().position(|(o, _)| o == origin) {
            Some(index) => index,
            None => {
                idle.push((origin.clone(), Vec::new()));
                idle.len() - 1
            }
        };
        let connections = &mut idle[index].1;
        self.evict_expired(connections);
        if connections.len() < self.max_idle {
            connections.push(Idle { connection, since: Instant::now() });
        }
    }

    /// Closes every connection idle for longer than the timeout, to any upstream.
    pub(crate) fn close_expired(&self) {
        let mut idle = self.idle.lock();
        for (_, connections) in idle.iter_mut() {
            self.evict_expired(connections);
        }
    }

    /// Closes every idle connection (keel is short of file descriptors: each holds one).
    pub(crate) fn close_idle(&self) {
        self.idle.lock().clear();
    }

    /// Closes the connections idle for longer than the timeout (the oldest are first).
    fn evict_expired(&self, connections: &mut Vec<Idle>) {
        let fresh = connections.iter().position(|c| c.since.elapsed() < self.idle_timeout).unwrap_or(connections.len());
        connections.drain(..fresh);
    }

    /// How many connections to `origin` are idle (for tests).
    #[cfg(test)]
    pub(crate) fn idle_count(&self, origin: &Origin) -> usize {
        self.idle.lock().iter().find(|(o, _)| o == origin).map_or(0, |(_, c)| c.len())
    }
}

/// Where a connection goes back to when its answer has been read.
struct Return {
    pool: Arc<Pool>,
    origin: Origin,
}

/// An upstream's response body, read straight from its connection by whoever polls it. Reading
/// it to the end hands the connection back to the pool (when the server keeps it open);
/// dropping it before closes the connection.
pub struct ResponseBody {
    connection: Option<Connection>,
    decoder: Decoder,
    give_back: Option<Return>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("decoder", &self.decoder).finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// The body `decoder` reads from `connection`, which goes back to `pool` at the body's end
    /// when `keep_alive`.
    pub(crate) fn new(
        connection: Connection,
        decoder: Decoder,
        keep_alive: bool,
        pool: Arc<Pool>,
        origin: Origin,
    ) -> ResponseBody {
        let give_back = keep_alive.then_some(Return { pool, origin });
        let mut body = ResponseBody { connection: Some(connection), decoder, give_back };
        // An answer with no body (204, HEAD, Content-Length: 0) is over before anyone reads it.
        if body.decoder.is_done() {
            body.release();
        }
        body
    }

    /// The body has ended: its connection goes back to the pool (which takes only one still
    /// open with nothing unread on it), or is closed.
    fn release(&mut self) {
        if let (Some(Return { pool, origin }), Some(connection)) = (self.give_back.take(), self.connection.take()) {
            pool.checkin(&origin, connection);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        let Some(connection) = this.connection.as_mut() else { return Poll::Ready(None) };
        let polled = std::task::ready!(connection.poll_body(&mut this.decoder, cx));
        match polled {
            Some(Ok(data)) => {
                // A server stops polling a body once it has sent Content-Length bytes, so the
                // end is recognised at the last frame, not only at `None`.
                if this.decoder.is_done() {
                    this.release();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => {
                this.release();
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                // The rest of that answer may still be on the wire: the connection is not reused.
                this.connection = None;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{HeaderMap, Method};
    use http_body_util::BodyExt;
    use keel_types::Dialect;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::{ClientConfig, Upstream, UpstreamClient, empty_body};

    /// A keep-alive HTTP/1.1 server answering every request with `body`; counts connections.
    /// With `close_after_one`, it closes each connection after its first answer (while the
    /// client believes it idle and reusable).
    async fn server(body: &'static str, close_after_one: bool) -> (Upstream, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if socket.write_all(answer.as_bytes()).await.is_err() || close_after_one {
                            return;
                        }
                    }
                });
            }
        });
        let upstream = Upstream::new("test", format!("http://{addr}").parse().unwrap(), Dialect::Ollama).unwrap();
        (upstream, connections)
    }

    async fn get(client: &UpstreamClient, upstream: &Upstream) -> http::Response<ResponseBody> {
        client.send(upstream, Method::GET, "/", HeaderMap::new(), empty_body()).await.unwrap()
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_is_reused() {
        let (upstream, connections) = server("hello", false).await;
        let client = UpstreamClient::new(ClientConfig::default());
        for _ in 0..5 {
            let body = get(&client, &upstream).await.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        assert_eq!(client.pool.idle_count(&upstream.origin), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_closes_its_connection() {
        let (upstream, connections) = server("hello", false).await;
        let client = UpstreamClient::new(ClientConfig::default());
        let unread = get(&client, &upstream).await;
        assert_eq!(client.pool.idle_count(&upstream.origin), 0, "not back before its body is read");
        drop(unread);
        get(&client, &upstream).await.into_body().collect().await.unwrap();
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_requests_open_their_own_connections() {
        let (upstream, connections) = server("hello", false).await;
        let client = UpstreamClient::new(ClientConfig::default());
        let (a, b) = tokio::join!(get(&client, &upstream), get(&client, &upstream));
        a.into_body().collect().await.unwrap();
        b.into_body().collect().await.unwrap();
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        assert_eq!(client.pool.idle_count(&upstream.origin), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_not_used() {
        let (upstream, connections) = server("hello", true).await;
        let client = UpstreamClient::new(ClientConfig::default());
        for _ in 0..3 {
            get(&client, &upstream).await.into_body().collect().await.unwrap();
            // Let the closed connection's task notice the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn bodyless_answers_give_their_connection_back_at_once() {
        let (upstream, connections) = server("", false).await;
        let client = UpstreamClient::new(ClientConfig::default());
        for _ in 0..3 {
            let response = get(&client, &upstream).await;
            assert_eq!(client.pool.idle_count(&upstream.origin), 1);
            drop(response);
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (upstream, connections) = server("hello", false).await;
        let config = ClientConfig { pool_idle_timeout: Duration::from_millis(50), ..ClientConfig::default() };
        let client = UpstreamClient::new(config);
        get(&client, &upstream).await.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        get(&client, &upstream).await.into_body().collect().await.unwrap();
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_connections_are_closed_without_a_request() {
        let (upstream, _) = server("hello", false).await;
        let config = ClientConfig { pool_idle_timeout: Duration::from_millis(50), ..ClientConfig::default() };
        let client = UpstreamClient::new(config);
        get(&client, &upstream).await.into_body().collect().await.unwrap();
        assert_eq!(client.pool.idle_count(&upstream.origin), 1);
        client.close_expired();
        assert_eq!(client.pool.idle_count(&upstream.origin), 1, "not yet expired");
        tokio::time::sleep(Duration::from_millis(120)).await;
        client.close_expired();
        assert_eq!(client.pool.idle_count(&upstream.origin), 0);
    }

    #[tokio::test]
    async fn idle_connections_can_all_be_closed_at_once() {
        let (upstream, _) = server("hello", false).await;
        let client = UpstreamClient::new(ClientConfig::default());
        get(&client, &upstream).await.into_body().collect().await.unwrap();
        assert_eq!(client.pool.idle_count(&upstream.origin), 1);
        client.close_idle();
        assert_eq!(client.pool.idle_count(&upstream.origin), 0);
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept() {
        let (upstream, _) = server("hello", false).await;
        let config = ClientConfig { pool_max_idle_per_host: 1, ..ClientConfig::default() };
        let client = UpstreamClient::new(config);
        let (a, b) = tokio::join!(get(&client, &upstream), get(&client, &upstream));
        a.into_body().collect().await.unwrap();
        b.into_body().collect().await.unwrap();
        assert_eq!(client.pool.idle_count(&upstream.origin), 1);
    }
}
