//! HTTPS: `MockServer::start_tls` with a certificate the client trusts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use keel_mock::{MockServer, Scenario};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

/// A self-signed certificate for `localhost` and `127.0.0.1`: (cert PEM, key PEM, cert DER).
fn self_signed() -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem(), cert.cert.der().clone())
}

/// One HTTPS POST trusting only `root`; status and body.
async fn post(
    addr: SocketAddr,
    root: rustls::pki_types::CertificateDer<'static>,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let (cert, key, der) = self_signed();
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = MockServer::start_tls(addr, Scenario::default(), cert.as_bytes(), key.as_bytes()).await.unwrap();
    assert!(server.url().starts_with("https://127.0.0.1:"), "{}", server.url());
    let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}"#;
    let (status, text) = post(server.addr(), der, "/api/chat", body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(common::json(&text)["message"]["content"], "Hello from keel-mock.");
    assert_eq!(server.requests().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_not_trusting_the_certificate_is_refused() {
    let (cert, key, _) = self_signed();
    let (_, _, other) = self_signed();
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = MockServer::start_tls(addr, Scenario::default(), cert.as_bytes(), key.as_bytes()).await.unwrap();
    let outcome = tokio::spawn(post(server.addr(), other, "/api/version", "")).await;
    assert!(outcome.is_err(), "the handshake must fail for an untrusted certificate");
    // Plain HTTP to the HTTPS port gets no HTTP answer either.
    let plain = common::client().get(format!("http://{}/api/version", server.addr())).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn bad_pem_is_a_tls_error() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let err = MockServer::start_tls(addr, Scenario::default(), b"not a cert", b"nor a key").await.unwrap_err();
    assert!(err.to_string().starts_with("TLS:"), "{err}");
    let (cert, _, _) = self_signed();
    let (_, other_key, _) = self_signed();
    let err =
        MockServer::start_tls(addr, Scenario::default(), cert.as_bytes(), other_key.as_bytes()).await.unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
}
