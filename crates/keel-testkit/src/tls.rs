//! HTTPS for the test servers: a new test CA per server (written as PEM for the client under
//! test to trust) and a certificate for `localhost` and `127.0.0.1` signed by it; [`test_ca`]
//! gives the same as PEM for servers started elsewhere (`keel_mock::MockServer::start_tls`).

use std::net::SocketAddr;
use std::sync::Arc;

/// Serves `app` over HTTPS on `127.0.0.1:0` with a certificate of a new test CA, whose
/// certificate is written to `ca_pem`; its address and the serving task.
pub async fn serve(app: axum::Router, ca_pem: &std::path::Path) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let acceptor = match acceptor(ca_pem) {
        Ok(acceptor) => acceptor,
        Err(err) => panic!("cannot make the test certificates: {err}"),
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(err) => panic!("cannot bind a TLS test server: {err}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => panic!("no local addr: {err}"),
    };
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A new test CA and a certificate for `localhost` and `127.0.0.1` signed by it, all as PEM:
/// start a server with [`TestCa::cert_pem`] and [`TestCa::key_pem`] (e.g.
/// `keel_mock::MockServer::start_tls`) and give the client [`TestCa::ca_pem`] to trust.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA's certificate: what the client under test trusts.
    pub ca_pem: String,
    /// The server certificate (`localhost`, `127.0.0.1`) signed by the CA.
    pub cert_pem: String,
    /// The server certificate's private key (PKCS#8).
    pub key_pem: String,
}

/// Makes a new [`TestCa`]; panics (stopping the test) if rcgen cannot.
pub fn test_ca() -> TestCa {
    match make_test_ca() {
        Ok(ca) => ca,
        Err(err) => panic!("cannot make the test certificates: {err}"),
    }
}

fn make_test_ca() -> Result<TestCa, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "keel test CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?.signed_by(&leaf_key, &issuer)?;
    Ok(TestCa { ca_pem: ca_cert.pem(), cert_pem: leaf.pem(), key_pem: leaf_key.serialize_pem() })
}

/// A TLS acceptor with a certificate for `localhost`/`127.0.0.1` signed by a new CA, whose
/// certificate is written to `ca_pem`.
fn acceptor(ca_pem: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, Box<dyn std::error::Error>> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = make_test_ca()?;
    std::fs::write(ca_pem, &ca.ca_pem)?;
    let leaf = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())?;
    let key = PrivateKeyDer::from_pem_slice(ca.key_pem.as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

    /// The mock serves HTTPS with the leaf of [`super::test_ca`], and a client trusting only the
    /// CA's PEM gets an answer.
    #[tokio::test]
    async fn mock_over_https_trusted_through_the_test_ca() {
        let ca = super::test_ca();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let scenario = keel_mock::Scenario::default();
        let mock = keel_mock::MockServer::start_tls(addr, scenario, ca.cert_pem.as_bytes(), ca.key_pem.as_bytes())
            .await
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.ca_pem.as_bytes()).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"version\""), "{answer}");
        mock.shutdown().await;
    }
}
