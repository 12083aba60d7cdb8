//! Turning transport errors into failure classes.

use std::error::Error as StdError;
use std::io;

use keel_types::FailureClass;

use crate::h1::HttpError;

/// Classifies an error from sending a request on an open connection (no response head was
/// received): the socket's error decides; a connection closed before the answer, or an answer
/// keel cannot read, is [`FailureClass::Reset`]; a request body that failed (the client's) is
/// [`FailureClass::BadRequest`], which breakers ignore.
pub fn classify_send_error(err: &HttpError) -> FailureClass {
    match err {
        // The client's own body broke (it went away mid-upload): nothing about the server.
        HttpError::RequestBody(_) => FailureClass::BadRequest,
        _ => classify_chain(err, false),
    }
}

/// Classifies an error from opening a connection: refused unless it timed out (an unreachable
/// host, no route and a failed name lookup all mean nothing is listening there for keel).
pub fn classify_connect_error(err: &io::Error) -> FailureClass {
    classify_chain(err, true)
}

/// What went wrong in a failed TLS handshake with an upstream, for the client's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// keel does not accept the server's certificate: signed by a CA it does not trust, expired,
    /// or issued for another name. The fix is keel's configuration (`ca_file`, the url's host) or
    /// the server's certificate.
    Certificate,
    /// The handshake failed otherwise: no HTTPS server on that port (plain HTTP), no protocol
    /// version or cipher in common, or the connection closed during the handshake.
    Handshake,
}

/// Classifies an error from the TLS handshake with an upstream. A handshake that failed is the
/// server's (or its configuration's) fault like any failure while connecting:
/// [`FailureClass::Refused`], never [`FailureClass::Local`] (so it is held against the server,
/// not keel), together with what went wrong. A handshake that ran out of time, or failed for
/// lack of keel's own resources, is classified as a connect error and carries no [`TlsFailure`].
pub fn classify_tls_error(err: &io::Error) -> (FailureClass, Option<TlsFailure>) {
    use tokio_rustls::rustls::Error as Tls;
    match err.get_ref().and_then(|inner| inner.downcast_ref::<Tls>()) {
        Some(Tls::InvalidCertificate(_) | Tls::NoCertificatesPresented) => {
            (FailureClass::Refused, Some(TlsFailure::Certificate))
        }
        Some(_) => (FailureClass::Refused, Some(TlsFailure::Handshake)),
        None => match classify_connect_error(err) {
            FailureClass::Refused => (FailureClass::Refused, Some(TlsFailure::Handshake)),
            class => (class, None),
        },
    }
}

/// Classifies an error while reading a response body that had started.
pub fn classify_body_error(err: &HttpError) -> FailureClass {
    match err {
        HttpError::Io(io) if io.kind() == io::ErrorKind::TimedOut => FailureClass::Timeout,
        _ => FailureClass::StreamBroken,
    }
}

/// What Ollama (and llama.cpp) say when a model cannot be loaded or its runner died: the
/// model's own failure, not the server's.
const LOAD_FAILURES: [&str; 9] = [
    "requires more system memory",
    "unable to load model",
    "llama runner process has terminated",
    "llama runner process no longer running",
    "error loading model",
    "failed to load model",
    "model runner has unexpectedly stopped",
    "out of memory",
    "insufficient memory",
];

/// Classifies an error answer (status and the start of its body): a 5xx whose message says the
/// model could not be loaded or run is [`FailureClass::ModelLoad`], everything else follows
/// [`FailureClass::from_status`]. `None` for success statuses.
pub fn classify_error_answer(status: u16, body: &[u8]) -> Option<FailureClass> {
    let class = FailureClass::from_status(status)?;
    if status >= 500 && status != 503 {
        let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
        if LOAD_FAILURES.iter().any(|marker| text.contains(marker)) {
            return Some(FailureClass::ModelLoad);
        }
    }
    Some(class)
}

/// Linux/macOS error numbers of local resource exhaustion: keel's own problem, not the server's.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
const ENOMEM: i32 = 12;
const ENOBUFS_LINUX: i32 = 105;
const EADDRNOTAVAIL_LINUX: i32 = 99;

/// Whether an I/O error means keel ran out of descriptors, memory, buffers or local ports: its
/// own shortage, whether met connecting upstream or accepting a client.
pub fn is_local_shortage(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::OutOfMemory | io::ErrorKind::AddrNotAvailable)
        || matches!(err.raw_os_error(), Some(EMFILE | ENFILE | ENOMEM | ENOBUFS_LINUX | EADDRNOTAVAIL_LINUX))
}

/// Walks an error's source chain: the innermost `io::Error` kind decides.
fn classify_chain(err: &(dyn StdError + 'static), connecting: bool) -> FailureClass {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    let mut io_kind = None;
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<io::Error>() {
            if is_local_shortage(io) {
                return FailureClass::Local;
            }
            io_kind = Some(io.kind());
        }
        source = inner.source();
    }
    match io_kind {
        Some(io::ErrorKind::ConnectionRefused) => FailureClass::Refused,
        Some(io::ErrorKind::TimedOut) => FailureClass::Timeout,
        // A connect error without a more specific cause: unreachable host, no route, DNS.
        _ if connecting => FailureClass::Refused,
        _ => FailureClass::Reset,
    }
}

#[cfg(test)]
mod shortage_tests {
    use super::*;

    #[test]
    fn a_failed_request_body_is_the_clients_and_a_closed_connection_a_reset() {
        let body = HttpError::RequestBody("client went away".into());
        assert_eq!(classify_send_error(&body), FailureClass::BadRequest);
        assert_eq!(classify_send_error(&HttpError::ClosedBeforeHead), FailureClass::Reset);
        let refused = HttpError::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify_send_error(&refused), FailureClass::Refused);
        let emfile = HttpError::Io(io::Error::from_raw_os_error(EMFILE));
        assert_eq!(classify_send_error(&emfile), FailureClass::Local);
        assert_eq!(classify_body_error(&HttpError::IncompleteBody), FailureClass::StreamBroken);
    }

    #[test]
    fn tls_failures_are_the_servers() {
        use tokio_rustls::rustls::{CertificateError, Error as Tls};
        let untrusted =
            io::Error::new(io::ErrorKind::InvalidData, Tls::InvalidCertificate(CertificateError::UnknownIssuer));
        assert_eq!(classify_tls_error(&untrusted), (FailureClass::Refused, Some(TlsFailure::Certificate)));
        let plain = io::Error::new(io::ErrorKind::InvalidData, Tls::General("corrupt".to_owned()));
        assert_eq!(classify_tls_error(&plain), (FailureClass::Refused, Some(TlsFailure::Handshake)));
        let closed = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(classify_tls_error(&closed), (FailureClass::Refused, Some(TlsFailure::Handshake)));
        let emfile = io::Error::from_raw_os_error(EMFILE);
        assert_eq!(classify_tls_error(&emfile), (FailureClass::Local, None));
        let slow = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(classify_tls_error(&slow), (FailureClass::Timeout, None));
    }

    #[test]
    fn running_out_of_files_is_keels_own_fault() {
        let emfile = io::Error::from_raw_os_error(EMFILE);
        assert_eq!(classify_connect_error(&emfile), FailureClass::Local);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_connect_error(&refused), FailureClass::Refused);
    }

    #[test]
    fn load_failures_are_the_models() {
        let body = br#"{"error":"model requires more system memory (12.5 GiB) than is available (4.1 GiB)"}"#;
        assert_eq!(classify_error_answer(500, body), Some(FailureClass::ModelLoad));
        let crash = br#"{"error":"llama runner process has terminated: exit status 2"}"#;
        assert_eq!(classify_error_answer(500, crash), Some(FailureClass::ModelLoad));
        assert_eq!(classify_error_answer(500, br#"{"error":"boom"}"#), Some(FailureClass::ServerError));
        assert_eq!(classify_error_answer(503, b"out of memory"), Some(FailureClass::Busy));
        assert_eq!(classify_error_answer(200, b""), None);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderMap, Method};
    use keel_types::Dialect;

    use super::*;
    use crate::{ClientConfig, Upstream, UpstreamClient, empty_body};

    fn upstream(addr: &str) -> Upstream {
        Upstream::new("test", addr.parse().unwrap(), Dialect::Ollama).unwrap()
    }

    async fn send_to(addr: &str, config: ClientConfig) -> FailureClass {
        let client = UpstreamClient::new(config);
        client.send(&upstream(addr), Method::GET, "/", HeaderMap::new(), empty_body()).await.unwrap_err().class
    }

    #[tokio::test]
    async fn refused_connection_is_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert_eq!(send_to(&format!("http://127.0.0.1:{port}"), ClientConfig::default()).await, FailureClass::Refused);
    }

    #[tokio::test]
    async fn slow_server_is_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _accepting = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let config = ClientConfig { response_timeout: Duration::from_millis(100), ..ClientConfig::default() };
        assert_eq!(send_to(&format!("http://{addr}"), config).await, FailureClass::Timeout);
    }

    #[tokio::test]
    async fn closed_before_head_is_reset() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _accepting = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            drop(socket);
        });
        assert_eq!(send_to(&format!("http://{addr}"), ClientConfig::default()).await, FailureClass::Reset);
    }
}
