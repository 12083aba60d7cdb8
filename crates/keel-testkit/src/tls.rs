//! HTTPS for the test servers: a new test CA per server (written as PEM for the client under
//! test to trust) and a certificate for `localhost` and `127.0.0.1` signed by it.

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

/// A TLS acceptor with a certificate for `localhost`/`127.0.0.1` signed by a new CA, whose
/// certificate is written to `ca_pem`.
fn acceptor(ca_pem: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, Box<dyn std::error::Error>> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "keel test CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    std::fs::write(ca_pem, ca_cert.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?.signed_by(&leaf_key, &issuer)?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
