//! One POST per call over `http://` or `https://`, for webhook deliveries: a connection of its
//! own each time (deliveries are rare, and a receiver that broke a connection gets a fresh one),
//! HTTP/1.1 through hyper, TLS through rustls with the ring provider. The roots trusted are the
//! system's (`/etc/ssl/certs`, or `SSL_CERT_FILE`), Mozilla's (webpki-roots) and the endpoint's
//! own CA certificates, if it names some (`[[notify]] ca_file`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The most of an answer's body read (it is only logged).
const MAX_ANSWER: usize = 4096;

/// A POST client for one endpoint.
#[derive(Clone)]
pub struct Poster {
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Poster")
    }
}

/// An answer: status and headers (the body is read and dropped).
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
}

impl Poster {
    /// A client trusting the system's roots, Mozilla's, and `extra` (DER certificates).
    pub fn new(extra: &[Vec<u8>]) -> Result<Poster, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        for (index, der) in extra.iter().enumerate() {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|error| format!("CA certificate {} of ca_file is not usable: {error}", index + 1))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS set-up: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Poster { tls: Arc::new(tls) })
    }

    /// POSTs `body` with `headers` to `url` (`http://` or `https://`), within `timeout`.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        match tokio::time::timeout(timeout, self.send(url, headers, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
        }
    }

    async fn send(&self, url: &str, headers: HeaderMap, body: Vec<u8>) -> Result<Answer, String> {
        let uri: Uri = url.parse().map_err(|error| format!("bad URL {url:?}: {error}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{url}: only http:// and https:// are supported")),
        };
        let host = uri.host().ok_or_else(|| format!("{url}: no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let tcp = tokio::net::TcpStream::connect((bare_host.as_str(), port))
            .await
            .map_err(|error| format!("could not connect to {host}:{port}: {error}"))?;
        let _ = tcp.set_nodelay(true);
        let mut request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| error.to_string())?;
        *request.headers_mut() = headers;
        let authority = uri.authority().map_or(host.clone(), ToString::to_string);
        let host_header = HeaderValue::from_str(&authority).map_err(|error| error.to_string())?;
        request.headers_mut().insert(http::header::HOST, host_header);
        if https {
            let name = ServerName::try_from(bare_host.clone()).map_err(|error| format!("{host}: {error}"))?;
            let stream = TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await
                .map_err(|error| format!("TLS with {host}:{port} failed: {error}"))?;
            exchange(TokioIo::new(stream), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
    }
}

/// One request on a fresh HTTP/1.1 connection over `io`.
async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> Result<Answer, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|error| format!("HTTP handshake: {error}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender.send_request(request).await.map_err(|error| format!("the request failed: {error}"));
    let answer = match response {
        Ok(response) => {
            let (parts, mut body) = response.into_parts();
            let mut read = 0;
            while read < MAX_ANSWER {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    _ => break,
                }
            }
            Ok(Answer { status: parts.status.as_u16(), headers: parts.headers })
        }
        Err(error) => Err(error),
    };
    driver.abort();
    answer
}
