//! The pooled HTTP/1.1 client keel uses for every upstream call, over plain TCP (`http://`) or
//! TLS (`https://`).
//!
//! Built on keel's own HTTP/1.1 connections ([`crate::h1`]) and [pool](crate::pool) rather than a
//! general-purpose client: the request path needs no redirects, cookies, proxies, URL re-parsing
//! or cross-thread pool, and callgrind counted those layers (hashing the pool key, its lock, the
//! `Host` header formatted per request) at about a tenth of keel's instructions per request; a
//! connection needs no task or channel of its own, which halved keel's memory per stream.
//!
//! An `https://` upstream (a cloud API, or a model server behind a TLS proxy) is verified against
//! the system's and Mozilla's root certificates and its own `ca_file` (see
//! [`keel_outbound::tls_config`]), with ALPN `http/1.1`; the handshake is part of opening the
//! connection, so it counts against the connect timeout and a connection is pooled with its TLS
//! session. An untrusted certificate is a [`TlsFailure::Certificate`] whose message says to set
//! `ca_file`. An upstream may carry credentials ([`Upstream::with_headers`]) set on every request
//! to it; plain upstreams without any pay nothing for either.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header, uri};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use keel_types::{Blame, Dialect, FailureClass};

use crate::classify::{TlsFailure, classify_connect_error, classify_send_error, classify_tls_error};
use crate::h1::{Answer, Connection, HttpError, SendFailure, Transport};
use crate::pool::{Origin, Pool, ResponseBody};
use crate::tls;

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
///
/// Its `Debug` shows the names of the headers it sets, never their values (credentials).
#[derive(Clone)]
pub struct Upstream {
    /// The `[[upstream]]` name, used in routes, logs and metrics.
    pub name: String,
    /// Which API the server speaks.
    pub dialect: Dialect,
    /// `http(s)://host:port` with no trailing slash, for messages.
    base: String,
    /// Where connections go, and the key of its pooled connections.
    pub(crate) origin: Origin,
    /// The `Host` header every request to it carries (Ollama answers 403 to foreign hosts).
    host: HeaderValue,
    /// A path prefix such as `/ollama` (empty for none).
    prefix: String,
    /// CA certificates (DER) trusted for it besides the system's and Mozilla's.
    ca_certificates: Vec<Vec<u8>>,
    /// Headers set on every request (credentials: values marked sensitive). Empty for most.
    headers: HeaderMap,
}

impl PartialEq for Upstream {
    fn eq(&self, other: &Upstream) -> bool {
        // The TLS settings follow from the scheme (in `base`) and the CA certificates.
        self.name == other.name
            && self.dialect == other.dialect
            && self.base == other.base
            && self.ca_certificates == other.ca_certificates
            && self.headers == other.headers
    }
}

impl Eq for Upstream {}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("dialect", &self.dialect)
            .field("base", &self.base)
            .field("ca_certificates", &self.ca_certificates.len())
            .field("headers", &header_names)
            .finish_non_exhaustive()
    }
}

/// A base URL (or its TLS settings) keel cannot send to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream url {url:?} {reason}")]
pub struct UpstreamUrlError {
    url: String,
    reason: Cow<'static, str>,
}

impl Upstream {
    /// An upstream at `base` (`http://host[:port]` or `https://host[:port]`, optionally with a
    /// path prefix). An `https://` upstream trusts the system's and Mozilla's root certificates;
    /// add a private CA with [`Upstream::with_ca_certificates`].
    pub fn new(name: &str, base: Uri, dialect: Dialect) -> Result<Upstream, UpstreamUrlError> {
        let error = |reason: Cow<'static, str>| UpstreamUrlError { url: base.to_string(), reason };
        let https = match base.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(error("must start with http:// or https://".into())),
        };
        let authority = base.authority().cloned().ok_or_else(|| error("has no host".into()))?;
        if base.query().is_some() {
            return Err(error("must not have a query string".into()));
        }
        let prefix = base.path().trim_end_matches('/').to_owned();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| error("has an invalid host".into()))?;
        let tls = if https {
            tls::server_name(bare_host(&authority))
                .map_err(|_| error("has a host that cannot be checked against a TLS certificate".into()))?;
            Some(tls::system_config().map_err(|e| error(e.into()))?)
        } else {
            None
        };
        let scheme = if https { "https" } else { "http" };
        Ok(Upstream {
            name: name.to_owned(),
            dialect,
            base: format!("{scheme}://{authority}{prefix}"),
            origin: Origin { authority, tls },
            host,
            prefix,
            ca_certificates: Vec::new(),
            headers: HeaderMap::new(),
        })
    }

    /// This `https://` upstream, also trusting the CA certificates `ders` (DER, e.g. the
    /// `ca_file` of its `[[upstream]]` read by `keel_outbound::pem_certificates`). An error for a
    /// plain `http://` upstream or a certificate rustls cannot use.
    pub fn with_ca_certificates(mut self, ders: &[Vec<u8>]) -> Result<Upstream, UpstreamUrlError> {
        let error = |reason: String| UpstreamUrlError { url: self.base.clone(), reason: reason.into() };
        if self.origin.tls.is_none() {
            return Err(error(
                "is plain http://: CA certificates (ca_file) apply to https:// upstreams only".to_owned(),
            ));
        }
        let config = tls::config_with(ders).map_err(|e| error(format!("cannot trust its ca_file: {e}")))?;
        self.origin.tls = Some(config);
        self.ca_certificates = ders.to_vec();
        Ok(self)
    }

    /// This upstream, setting `headers` on every request to it and replacing any header of the
    /// same name the client sent: credentials such as `Authorization: Bearer …` or `x-api-key`.
    /// Their values are marked sensitive and never shown (not in `Debug`, logs or errors).
    /// Hop-by-hop headers and `Host` among them are ignored.
    pub fn with_headers(mut self, mut headers: HeaderMap) -> Upstream {
        strip_hop_headers(&mut headers);
        for value in headers.values_mut() {
            value.set_sensitive(true);
        }
        self.headers = headers;
        self
    }

    /// The server's host and port (80 or 443 when the URL names none), for traces.
    pub fn server_address(&self) -> (&str, u16) {
        (self.origin.authority.host(), self.port())
    }

    /// The base URL as written (`http(s)://host[:port][/prefix]`), for messages and status.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Whether keel talks to it over TLS (`https://`).
    pub fn is_https(&self) -> bool {
        self.origin.tls.is_some()
    }

    /// Whether the server is outside loopback and private networks (see
    /// [`is_remote_host`](crate::address::is_remote_host)): a cloud API rather than a model
    /// server on this machine or network.
    pub fn is_remote(&self) -> bool {
        crate::address::is_remote_host(self.origin.authority.host())
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
        (bare_host(&self.origin.authority), self.port())
    }

    /// The port in the URL, or the scheme's default.
    fn port(&self) -> u16 {
        let default = if self.is_https() { 443 } else { 80 };
        self.origin.authority.port_u16().unwrap_or(default)
    }

    /// Sets this upstream's own headers on a request's, replacing those of the same name.
    fn set_headers(&self, headers: &mut HeaderMap) {
        for name in self.headers.keys() {
            headers.remove(name);
        }
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// The host of `authority`, IPv6 literals without their brackets.
fn bare_host(authority: &uri::Authority) -> &str {
    let host = authority.host();
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
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
    /// For a failed TLS handshake, what went wrong (the class is then
    /// [`FailureClass::Refused`]).
    pub tls: Option<TlsFailure>,
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
        match self.tls {
            Some(TlsFailure::Certificate) => {
                return format!(
                    "upstream '{upstream}' at {url}: the server's TLS certificate is not trusted ({}). \
                     If it is signed by your own CA, set ca_file for this [[upstream]] in keel.toml; \
                     if it was issued for another name, use that name in the upstream url",
                    self.detail
                );
            }
            Some(TlsFailure::Handshake) => {
                return format!(
                    "keel could not open a TLS connection to upstream '{upstream}' at {url} ({}). \
                     Does the server speak HTTPS on that port? For a plain-HTTP server, write http:// \
                     in the upstream url in keel.toml",
                    self.detail
                );
            }
            None => {}
        }
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
    Tls(std::io::Error),
    Http(HttpError),
}

/// A request's head, as sent on a connection.
#[derive(Clone, Copy)]
struct Outgoing<'a> {
    method: &'a Method,
    /// Path and query.
    target: &'a str,
    headers: &'a HeaderMap,
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
            tls: None,
        };
        strip_hop_headers(&mut headers);
        // The connection says the length from the body itself (keel may have rewritten it).
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::HOST, upstream.host.clone());
        if !upstream.headers.is_empty() {
            upstream.set_headers(&mut headers);
        }
        let uri = upstream.uri_for(path_and_query).map_err(|e| {
            error(FailureClass::BadRequest, format!("invalid request path {path_and_query:?}: {e}"), false)
        })?;
        let target = uri.path_and_query().map_or("/", uri::PathAndQuery::as_str);
        let request = Outgoing { method: &method, target, headers: &headers };
        match tokio::time::timeout(head_timeout, self.request(upstream, request, body)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(SendError::Connect(err))) => {
                Err(error(classify_connect_error(&err), format!("tcp connect error: {}", describe(&err)), true))
            }
            Ok(Err(SendError::Tls(err))) => {
                let (class, tls) = classify_tls_error(&err);
                Err(UpstreamError { tls, ..error(class, format!("tls handshake error: {}", describe(&err)), true) })
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
    /// take (it closed while idle, and nothing of the request left keel) goes to the next one;
    /// nothing is sent twice.
    async fn request(
        &self,
        upstream: &Upstream,
        request: Outgoing<'_>,
        mut body: RequestBody,
    ) -> Result<http::Response<ResponseBody>, SendError> {
        loop {
            let (mut connection, pooled) = match self.pool.checkout(&upstream.origin) {
                Some(connection) => (connection, true),
                // Boxed: opening a connection (a TLS session is kilobytes) is rare, and every
                // request's future would otherwise carry its state.
                None => (Box::pin(self.connect(upstream)).await?, false),
            };
            match connection.send(request.method, request.target, request.headers, body).await {
                Ok(Answer { response, decoder, keep_alive }) => {
                    let pool = Arc::clone(&self.pool);
                    let origin = upstream.origin.clone();
                    let body = ResponseBody::new(connection, decoder, keep_alive, pool, origin);
                    return Ok(response.map(|()| body));
                }
                Err(SendFailure { unsent: Some(unsent), .. }) if pooled => body = unsent,
                Err(SendFailure { error, .. }) => return Err(SendError::Http(error)),
            }
        }
    }

    /// Opens a connection (`TCP_NODELAY`; for `https://` the TLS handshake too, all within the
    /// connect timeout).
    async fn connect(&self, upstream: &Upstream) -> Result<Connection, SendError> {
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        let tcp = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(upstream.host_and_port()))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(SendError::Connect)?;
        // Without this, Nagle's algorithm and delayed ACKs stall small writes by ~40 ms.
        tcp.set_nodelay(true).map_err(SendError::Connect)?;
        match &upstream.origin.tls {
            None => Ok(Connection::new(Transport::Tcp(tcp))),
            Some(config) => self.secure(config, upstream, tcp, deadline).await,
        }
    }

    /// The TLS handshake with the upstream's host over `tcp` (by `deadline`), then HTTP/1.1 over it.
    async fn secure(
        &self,
        config: &Arc<tokio_rustls::rustls::ClientConfig>,
        upstream: &Upstream,
        tcp: tokio::net::TcpStream,
        deadline: tokio::time::Instant,
    ) -> Result<Connection, SendError> {
        let (host, _) = upstream.host_and_port();
        let stream = tokio::time::timeout_at(deadline, tls::handshake(config, host, tcp))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(SendError::Tls)?;
        Ok(Connection::new(Transport::Tls(Box::new(stream))))
    }

    /// The error of a connection not open within the connect timeout.
    fn timed_out(&self) -> SendError {
        let waited = keel_types::duration::format(self.config.connect_timeout);
        let message = format!("no connection within {waited}");
        SendError::Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, message))
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
    fn http_and_https_bases_with_their_default_ports() {
        let plain = upstream("http://ollama");
        assert_eq!(
            (plain.server_address(), plain.host_and_port(), plain.is_https()),
            (("ollama", 80), ("ollama", 80), false)
        );
        assert_eq!(plain.host, "ollama");
        let cloud = upstream("https://api.openai.com/v1/");
        assert_eq!(cloud.server_address(), ("api.openai.com", 443));
        assert_eq!(cloud.host_and_port(), ("api.openai.com", 443));
        assert!(cloud.is_https());
        assert_eq!(cloud.host, "api.openai.com");
        assert_eq!(cloud.base_url(), "https://api.openai.com/v1");
        assert_eq!(cloud.uri_for("/chat/completions").unwrap(), "/v1/chat/completions");
        let v6 = upstream("https://[::1]:8443");
        assert_eq!((v6.host_and_port(), v6.server_address()), (("::1", 8443), ("[::1]", 8443)));
        assert_eq!(v6.host, "[::1]:8443");
        assert_ne!(plain.origin, upstream("https://ollama:80").origin, "never pooled together");
        assert_eq!(cloud.origin, upstream("https://api.openai.com").origin, "same settings, same pool");
    }

    #[test]
    fn other_bases_are_refused() {
        for base in ["ftp://h:1", "http://h:1/?q", "/relative"] {
            let error = Upstream::new("a", base.parse().unwrap(), Dialect::Ollama).unwrap_err().to_string();
            assert!(error.contains(base.trim_start_matches('/')), "{error}");
        }
        let error = Upstream::new("a", "ftp://h".parse().unwrap(), Dialect::Ollama).unwrap_err();
        assert!(error.to_string().contains("http:// or https://"), "{error}");
    }

    #[test]
    fn ca_certificates_are_for_https_and_must_be_certificates() {
        let error = upstream("http://h:1").with_ca_certificates(&[]).unwrap_err();
        assert!(error.to_string().contains("https:// upstreams only"), "{error}");
        let error = upstream("https://h:1").with_ca_certificates(&[b"not DER".to_vec()]).unwrap_err();
        assert!(error.to_string().contains("ca_file"), "{error}");
        assert!(upstream("https://h").with_ca_certificates(&[]).is_ok());
    }

    #[test]
    fn remote_or_local_follows_the_host() {
        assert!(!upstream("http://127.0.0.1:11434").is_remote());
        assert!(!upstream("http://ollama:11434").is_remote());
        assert!(!upstream("http://[::1]:11434").is_remote());
        assert!(upstream("https://api.anthropic.com").is_remote());
    }

    #[test]
    fn credentials_replace_the_clients_and_are_never_shown() {
        let mut credentials = HeaderMap::new();
        credentials.insert(header::AUTHORIZATION, "Bearer sk-secret-123".parse().unwrap());
        credentials.append("x-extra", "one".parse().unwrap());
        credentials.append("x-extra", "two".parse().unwrap());
        credentials.insert(header::HOST, "elsewhere".parse().unwrap());
        let up = upstream("https://api.example.com").with_headers(credentials);
        let mut request = HeaderMap::new();
        request.insert(header::AUTHORIZATION, "Bearer client".parse().unwrap());
        request.insert("x-extra", "client".parse().unwrap());
        request.insert(header::HOST, "api.example.com".parse().unwrap());
        up.set_headers(&mut request);
        assert_eq!(request.get(header::AUTHORIZATION).unwrap(), "Bearer sk-secret-123");
        assert!(request.get(header::AUTHORIZATION).unwrap().is_sensitive());
        assert_eq!(request.get_all("x-extra").iter().collect::<Vec<_>>(), ["one", "two"]);
        assert_eq!(request.get(header::HOST).unwrap(), "api.example.com", "Host is never a credential");

        let shown = format!("{up:?} {:#?}", up.clone());
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
        let error = UpstreamError {
            upstream: up.name.clone(),
            url: up.base_url().to_owned(),
            class: FailureClass::Refused,
            detail: "tls handshake error".to_owned(),
            connecting: true,
            tls: Some(TlsFailure::Certificate),
        };
        let shown = format!("{error:?} {error} {}", error.client_message());
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(error.client_message().contains("ca_file"));
        assert_eq!(error.blame(), Blame::Server);
        assert_ne!(up, upstream("https://api.example.com"), "credentials make a different upstream");
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
