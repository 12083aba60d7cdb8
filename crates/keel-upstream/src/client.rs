//! The pooled HTTP/1.1 client keel uses for every upstream call.
//!
//! Built directly on hyper's HTTP/1.1 connections and keel's own [pool](crate::pool) rather than a
//! general-purpose client: the request path needs no redirects, cookies, proxies, URL re-parsing
//! or cross-thread pool, and callgrind counted those layers (hashing the pool key, its lock, the
//! `Host` header formatted per request) at about a tenth of keel's instructions per request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header, uri};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper_util::rt::TokioIo;
use keel_types::{Blame, Dialect, FailureClass};

use crate::classify::{classify_connect_error, classify_send_error};
use crate::pool::{Pool, ResponseBody, Sender};

/// Any error a request body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body: whole bytes or a stream forwarded as it arrives.
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request body holding `bytes`.
pub fn full_body(bytes: Bytes) -> RequestBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// An empty request body.
pub fn empty_body() -> RequestBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Timeouts and pooling for upstream connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Time allowed to open a TCP connection. Short: a dead host should fail fast.
    pub connect_timeout: Duration,
    /// Time allowed from sending a request to receiving the response head. Long: Ollama loads a
    /// cold model before it answers, and a non-streamed answer is generated before the head.
    pub response_timeout: Duration,
    /// Idle connections are closed after this long in the pool.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(600),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
        }
    }
}

/// One model server keel forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The `[[upstream]]` name, used in routes, logs and metrics.
    pub name: String,
    /// Which API the server speaks.
    pub dialect: Dialect,
    /// `http://host:port` with no trailing slash, for messages.
    base: String,
    pub(crate) authority: uri::Authority,
    /// The `Host` header every request to it carries (Ollama answers 403 to foreign hosts).
    host: HeaderValue,
    /// A path prefix such as `/ollama` (empty for none).
    prefix: String,
}

/// A base URL keel cannot send to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream url {url:?} {reason}")]
pub struct UpstreamUrlError {
    url: String,
    reason: &'static str,
}

impl Upstream {
    /// An upstream at `base` (`http://host:port`, optionally with a path prefix).
    pub fn new(name: &str, base: Uri, dialect: Dialect) -> Result<Upstream, UpstreamUrlError> {
        let error = |reason| UpstreamUrlError { url: base.to_string(), reason };
        if base.scheme() != Some(&uri::Scheme::HTTP) {
            return Err(error(
                "must start with http:// (keel talks plain HTTP to model servers on this machine or network)",
            ));
        }
        let authority = base.authority().cloned().ok_or_else(|| error("has no host"))?;
        if base.query().is_some() {
            return Err(error("must not have a query string"));
        }
        let prefix = base.path().trim_end_matches('/').to_owned();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| error("has an invalid host"))?;
        Ok(Upstream {
            name: name.to_owned(),
            dialect,
            base: format!("http://{authority}{prefix}"),
            authority,
            host,
            prefix,
        })
    }

    /// The server's host and port (80 when the URL names none), for traces.
    pub fn server_address(&self) -> (&str, u16) {
        (self.authority.host(), self.authority.port_u16().unwrap_or(80))
    }

    /// The base URL as written (`http://host:port[/prefix]`), for messages and status.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The request target sent upstream for a path (which starts with `/`) and optional query:
    /// origin-form, with the upstream's path prefix.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let path_and_query: uri::PathAndQuery = if self.prefix.is_empty() {
            path_and_query.parse()?
        } else {
            format!("{}{path_and_query}", self.prefix).parse()?
        };
        Ok(Uri::from(path_and_query))
    }

    /// The host and port to connect to (IPv6 literals without their brackets).
    fn host_and_port(&self) -> (&str, u16) {
        let host = self.authority.host();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        (host, self.authority.port_u16().unwrap_or(80))
    }
}

/// An upstream call that produced no usable response head.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream '{upstream}' ({url}): {detail}")]
pub struct UpstreamError {
    /// The upstream's name.
    pub upstream: String,
    /// The upstream's base URL.
    pub url: String,
    /// What kind of failure this was.
    pub class: FailureClass,
    /// The underlying error, for logs.
    pub detail: String,
    /// The call failed while opening the connection (nothing reached the server).
    pub connecting: bool,
}

impl UpstreamError {
    /// Who the failure is held against: keel's own resources, the server as a whole (it could not
    /// be reached, or dropped the connection before answering), or the model that was asked (no
    /// answer in time on an open connection).
    pub fn blame(&self) -> Blame {
        match self.class {
            FailureClass::Local => Blame::Keel,
            _ if self.connecting => Blame::Server,
            class => class.blame(),
        }
    }

    /// A message for the client: what happened and what to do about it.
    pub fn client_message(&self) -> String {
        let Self { upstream, url, .. } = self;
        match self.class {
            FailureClass::Local => format!(
                "keel could not call upstream '{upstream}' at {url} because keel itself ran out of a local \
                 resource ({}). The model server is not at fault; see keel's log, and raise keel's open-file \
                 limit (ulimit -n) or free memory",
                self.detail
            ),
            FailureClass::Refused => format!(
                "keel could not connect to upstream '{upstream}' at {url}: connection refused ({}). \
                 Is the model server running there? (for Ollama: `ollama serve`; or fix the upstream url in keel.toml)",
                self.detail
            ),
            FailureClass::Timeout => format!(
                "upstream '{upstream}' at {url} did not answer in time ({}). \
                 The model may still be loading; retry later or raise the upstream timeouts in keel.toml",
                self.detail
            ),
            _ => format!(
                "upstream '{upstream}' at {url} closed the connection without a complete answer ({}); retry the request",
                self.detail
            ),
        }
    }

    /// The status keel answers with: 504 for timeouts, 503 for keel's own resource shortage, 502
    /// for every other transport failure.
    pub fn status(&self) -> http::StatusCode {
        match self.class {
            FailureClass::Timeout => http::StatusCode::GATEWAY_TIMEOUT,
            FailureClass::Local => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }
}

/// Whether a header describes one hop, not the message, and is never forwarded. `host` is
/// rewritten to the upstream's own (Ollama answers 403 to foreign hosts).
fn is_hop_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// Removes the hop-by-hop headers (and any named in `Connection`) from a header map, in place.
///
/// One pass over the names finds them; only those present are removed (each removal hashes), and
/// no header name is built for the ones `Connection` lists.
pub fn strip_hop_headers(headers: &mut HeaderMap) {
    let listed = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            is_hop_header(name) || listed.split(',').any(|listed| listed.trim().eq_ignore_ascii_case(name))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// A pooled client. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    pub(crate) pool: Arc<Pool>,
    config: ClientConfig,
}

/// Why no response head arrived.
enum SendError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl UpstreamClient {
    /// Builds the client and its (empty) connection pool.
    pub fn new(config: ClientConfig) -> UpstreamClient {
        let pool = Arc::new(Pool::new(config.pool_max_idle_per_host, config.pool_idle_timeout));
        UpstreamClient { pool, config }
    }

    /// The timeouts in force.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Closes every pooled idle connection, e.g. when keel runs short of file descriptors.
    pub fn close_idle(&self) {
        self.pool.close_idle();
    }

    /// Closes the pooled connections idle for longer than `pool_idle_timeout` (call it on a
    /// timer: otherwise they are closed only when the pool is next used).
    pub fn close_expired(&self) {
        self.pool.close_expired();
    }

    /// Sends one request and waits for the response head (not the body).
    ///
    /// `headers` are forwarded after hop-by-hop headers are removed; `Host` becomes the upstream's
    /// and `Content-Length` is recomputed from `body`.
    /// A non-2xx response is returned as `Ok`: the caller relays it and classifies its status.
    pub async fn send(
        &self,
        upstream: &Upstream,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: RequestBody,
    ) -> Result<http::Response<ResponseBody>, UpstreamError> {
        self.send_within(upstream, method, path_and_query, headers, body, self.config.response_timeout).await
    }

    /// [`UpstreamClient::send`] with a shorter time to the response head, e.g. what is left of the
    /// request's deadline (never longer than the configured `response_timeout`).
    pub async fn send_within(
        &self,
        upstream: &Upstream,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: RequestBody,
        head_timeout: Duration,
    ) -> Result<http::Response<ResponseBody>, UpstreamError> {
        let head_timeout = head_timeout.min(self.config.response_timeout);
        let error = |class: FailureClass, detail: String, connecting: bool| UpstreamError {
            upstream: upstream.name.clone(),
            url: upstream.base.clone(),
            class,
            detail,
            connecting,
        };
        strip_hop_headers(&mut headers);
        // hyper sets Content-Length from the body itself (keel may have rewritten it).
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::HOST, upstream.host.clone());
        let uri = upstream.uri_for(path_and_query).map_err(|e| {
            error(FailureClass::BadRequest, format!("invalid request path {path_and_query:?}: {e}"), false)
        })?;
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        match tokio::time::timeout(head_timeout, self.request(upstream, request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(SendError::Connect(err))) => {
                Err(error(classify_connect_error(&err), format!("tcp connect error: {}", describe(&err)), true))
            }
            Ok(Err(SendError::Http(err))) => Err(error(classify_send_error(&err), describe(&err), false)),
            Err(_) => Err(error(
                FailureClass::Timeout,
                format!("no response head within {}", keel_types::duration::format(head_timeout)),
                false,
            )),
        }
    }

    /// Sends on an idle connection, or on a new one. A request that an idle connection could not
    /// take (it closed while idle) goes to the next one; nothing is sent twice.
    async fn request(
        &self,
        upstream: &Upstream,
        mut request: http::Request<RequestBody>,
    ) -> Result<http::Response<ResponseBody>, SendError> {
        loop {
            let (mut sender, pooled) = match self.pool.checkout(&upstream.authority) {
                Some(sender) => (sender, true),
                None => (self.connect(upstream).await?, false),
            };
            if pooled && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let pool = Arc::clone(&self.pool);
                    let authority = upstream.authority.clone();
                    return Ok(response.map(|body| ResponseBody::new(body, pool, authority, sender)));
                }
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if pooled => request = unsent,
                    _ => return Err(SendError::Http(failed.into_error())),
                },
            }
        }
    }

    /// Opens a connection (`TCP_NODELAY`, within the connect timeout) and starts driving it.
    async fn connect(&self, upstream: &Upstream) -> Result<Sender, SendError> {
        let timed_out = || {
            let waited = keel_types::duration::format(self.config.connect_timeout);
            std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no connection within {waited}"))
        };
        let stream =
            tokio::time::timeout(self.config.connect_timeout, tokio::net::TcpStream::connect(upstream.host_and_port()))
                .await
                .map_err(|_| SendError::Connect(timed_out()))?
                .map_err(SendError::Connect)?;
        // Without this, Nagle's algorithm and delayed ACKs stall small writes by ~40 ms.
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }
}

/// The error with its source chain, e.g. "client error (Connect): tcp connect error: Connection refused".
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base: &str) -> Upstream {
        Upstream::new("a", base.parse().unwrap(), Dialect::Ollama).unwrap()
    }

    #[test]
    fn uris_keep_prefix() {
        let up = upstream("http://127.0.0.1:11434/ollama/");
        assert_eq!(up.uri_for("/api/chat?x=1").unwrap(), "/ollama/api/chat?x=1");
        assert_eq!(up.base_url(), "http://127.0.0.1:11434/ollama");
        let root = upstream("http://127.0.0.1:11434");
        assert_eq!(root.uri_for("/").unwrap(), "/");
        assert_eq!(root.uri_for("/v1/models/llama3.2:latest").unwrap(), "/v1/models/llama3.2:latest");
        assert_eq!(root.host_and_port(), ("127.0.0.1", 11434));
        let v6 = upstream("http://[::1]:8080");
        assert_eq!(v6.host_and_port(), ("::1", 8080));
        assert_eq!(v6.host, "[::1]:8080");
        assert_eq!(root.base_url(), "http://127.0.0.1:11434");
    }

    #[test]
    fn only_plain_http_bases() {
        assert!(Upstream::new("a", "https://h:1".parse().unwrap(), Dialect::Ollama).is_err());
        assert!(Upstream::new("a", "http://h:1/?q".parse().unwrap(), Dialect::Ollama).is_err());
    }

    #[test]
    fn hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "evil.example".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        h.insert("x-custom", "kept".parse().unwrap());
        strip_hop_headers(&mut h);
        assert!(h.get(header::HOST).is_none());
        assert!(h.get("x-private").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get("x-custom").unwrap(), "kept");
        assert_eq!(h.get(header::AUTHORIZATION).unwrap(), "Bearer k");

        // Names listed in Connection match whatever their case and spacing.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Keep-Alive ,  X-PRIVATE".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        strip_hop_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), "application/json");
    }

    #[tokio::test]
    async fn refused_upstream_explains_itself() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let up = upstream(&format!("http://127.0.0.1:{port}"));
        let client = UpstreamClient::new(ClientConfig::default());
        let err = client.send(&up, Method::GET, "/api/version", HeaderMap::new(), empty_body()).await.unwrap_err();
        assert_eq!(err.class, FailureClass::Refused);
        assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY);
        assert!(err.client_message().contains("ollama serve"), "{}", err.client_message());
        assert!(err.client_message().contains(&format!("127.0.0.1:{port}")));
    }

    #[tokio::test]
    async fn head_timeout_is_enforced() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let up = upstream(&format!("http://{addr}"));
        let client = UpstreamClient::new(ClientConfig {
            response_timeout: Duration::from_millis(100),
            ..ClientConfig::default()
        });
        let err = client.send(&up, Method::GET, "/", HeaderMap::new(), empty_body()).await.unwrap_err();
        assert_eq!(err.class, FailureClass::Timeout);
        assert_eq!(err.status(), http::StatusCode::GATEWAY_TIMEOUT);
    }
}
