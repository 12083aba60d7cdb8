//! keel's own outbound HTTP(S) requests that are not model calls: webhook deliveries and trace
//! exports. Each request gets a connection of its own (they are rare, and a receiver that broke
//! a connection gets a fresh one), HTTP/1.1 through hyper, TLS through rustls with the ring
//! provider (no process-wide provider to install, no C toolchain beyond ring's). The roots
//! trusted are the system's (`/etc/ssl/certs`, or `SSL_CERT_FILE`), Mozilla's (webpki-roots)
//! and the caller's own CA certificates (a `[[notify]] ca_file`, `OTEL_EXPORTER_OTLP_CERTIFICATE`).
//! Those TLS settings are made by [`tls_config`], which `keel-upstream` uses for HTTPS model
//! servers too.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The most of an answer's body kept.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// An HTTP(S) client with its trusted roots.
#[derive(Clone)]
pub struct Client {
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("keel_outbound::Client")
    }
}

impl Client {
    /// A client trusting the system's roots, Mozilla's, and `extra` (DER certificates).
    pub fn new(extra: &[Vec<u8>]) -> Result<Client, String> {
        Ok(Client { tls: tls_config(extra)? })
    }

    /// POSTs `body` with `headers` to `url` (`http://` or `https://`), within `timeout`.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Response<Bytes>, String> {
        let uri: Uri = url.parse().map_err(|error| format!("bad URL {url:?}: {error}"))?;
        let mut request = Request::post(uri).body(Bytes::from(body)).map_err(|error| error.to_string())?;
        *request.headers_mut() = headers;
        self.send(request, timeout).await
    }

    /// Sends `request` (its URI absolute: `http://…` or `https://…`) within `timeout`; the answer
    /// with at most [`MAX_ANSWER_BYTES`] of its body.
    pub async fn send(&self, request: Request<Bytes>, timeout: Duration) -> Result<Response<Bytes>, String> {
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
        }
    }

    async fn exchange(&self, request: Request<Bytes>) -> Result<Response<Bytes>, String> {
        let uri = request.uri().clone();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{uri}: only http:// and https:// are supported")),
        };
        let host = uri.host().ok_or_else(|| format!("{uri}: no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let tcp = tokio::net::TcpStream::connect((bare_host.as_str(), port))
            .await
            .map_err(|error| format!("could not connect to {host}:{port}: {error}"))?;
        let _ = tcp.set_nodelay(true);
        let (mut parts, body) = request.into_parts();
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        let authority = uri.authority().map_or(host.clone(), ToString::to_string);
        parts.headers.insert(http::header::HOST, HeaderValue::from_str(&authority).map_err(|e| e.to_string())?);
        let request = Request::from_parts(parts, Full::new(body));
        if https {
            let name = ServerName::try_from(bare_host).map_err(|error| format!("{host}: {error}"))?;
            let stream = TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await
                .map_err(|error| format!("TLS with {host}:{port} failed: {error}"))?;
            one_request(TokioIo::new(stream), request).await
        } else {
            one_request(TokioIo::new(tcp), request).await
        }
    }
}

/// The TLS client settings keel uses for every outbound HTTPS connection (these requests and
/// the model calls of `keel-upstream`): rustls with the ring provider, the safe default protocol
/// versions, ALPN `http/1.1` only, and as roots the system's, Mozilla's (webpki-roots) and `extra`
/// (DER certificates, e.g. from [`pem_certificates`]). An error names the unusable certificate.
pub fn tls_config(extra: &[Vec<u8>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for (index, der) in extra.iter().enumerate() {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|error| format!("CA certificate {} is not usable: {error}", index + 1))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS set-up: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// One request on a fresh HTTP/1.1 connection over `io`.
async fn one_request<T>(io: T, request: Request<Full<Bytes>>) -> Result<Response<Bytes>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|error| format!("HTTP handshake: {error}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let answer = async {
        let response = sender.send_request(request).await.map_err(|error| format!("the request failed: {error}"))?;
        let (parts, mut body) = response.into_parts();
        let mut kept = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| format!("the answer broke off: {error}"))?;
            if let Some(data) = frame.data_ref() {
                let room = MAX_ANSWER_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        Ok(Response::from_parts(parts, kept.freeze()))
    }
    .await;
    driver.abort();
    answer
}

/// The certificates (DER) of a PEM file; an error if it cannot be read or holds none.
pub fn pem_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let certificates: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read it ({e})"))?
        .map(|cert| cert.map(|cert| cert.to_vec()).map_err(|e| format!("not PEM certificates ({e})")))
        .collect::<Result<_, _>>()?;
    if certificates.is_empty() {
        return Err("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_with_what_to_put_in_it() {
        let dir = std::env::temp_dir().join(format!("keel-outbound-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("empty.pem");
        std::fs::write(&path, "nothing here\n").unwrap_or_default();
        assert!(pem_certificates(&path).unwrap_err().contains("BEGIN CERTIFICATE"));
        assert!(pem_certificates(&dir.join("missing.pem")).unwrap_err().contains("cannot read it"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn other_schemes_and_dead_ports_say_what_went_wrong() {
        let client = Client::new(&[]).unwrap_or_else(|e| unreachable!("{e}"));
        let error = client.post("ftp://127.0.0.1/x", HeaderMap::new(), Vec::new(), Duration::from_secs(1)).await;
        assert!(error.unwrap_err().contains("only http:// and https://"));
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(9);
        let error = client
            .post(&format!("http://127.0.0.1:{port}/"), HeaderMap::new(), Vec::new(), Duration::from_secs(1))
            .await;
        assert!(error.unwrap_err().contains("could not connect to 127.0.0.1"));
    }
}
