#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! `https://` upstreams against a real local HTTPS server with a certificate of a test CA.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method, header};
use http_body_util::{BodyExt, Full};
use keel_types::{Blame, Dialect, FailureClass};
use keel_upstream::{ClientConfig, TlsFailure, Upstream, UpstreamClient, UpstreamError, empty_body};
use tokio_rustls::rustls;

/// A test CA's certificate (DER) and a TLS acceptor whose certificate, for `localhost` and
/// `127.0.0.1`, it signed.
fn test_ca() -> (Vec<u8>, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "keel-upstream test CA");
    let ca_der = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let leaf = CertificateParams::new(names).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (ca_der, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Answers every request with the `authorization`, `x-api-key` and `anthropic-version` values it
/// carried, one `name: value` a line.
async fn echo_credentials(
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let mut seen = String::new();
    for name in ["authorization", "x-api-key", "anthropic-version"] {
        for value in request.headers().get_all(name) {
            seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
        }
    }
    Ok(http::Response::new(Full::new(Bytes::from(seen))))
}

/// An HTTPS server on `127.0.0.1:0`: its port, its CA's certificate and how many TCP
/// connections it accepted.
async fn https_server() -> (u16, Vec<u8>, Arc<AtomicUsize>) {
    let (ca_der, acceptor) = test_ca();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(echo_credentials);
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (port, ca_der, connections)
}

fn upstream(name: &str, url: &str) -> Upstream {
    Upstream::new(name, url.parse().unwrap(), Dialect::OpenAi).unwrap()
}

/// GETs `/v1/models` with `headers`: the answer's body, or the error.
async fn get(client: &UpstreamClient, upstream: &Upstream, headers: HeaderMap) -> Result<String, UpstreamError> {
    let response = client.send(upstream, Method::GET, "/v1/models", headers, empty_body()).await?;
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn with_its_ca_an_https_upstream_answers_on_one_pooled_connection() {
    let (port, ca, connections) = https_server().await;
    let client = UpstreamClient::new(ClientConfig::default());
    for host in ["localhost", "127.0.0.1"] {
        let cloud = upstream("cloud", &format!("https://{host}:{port}"))
            .with_ca_certificates(std::slice::from_ref(&ca))
            .unwrap();
        get(&client, &cloud, HeaderMap::new()).await.unwrap();
        get(&client, &cloud, HeaderMap::new()).await.unwrap();
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2, "one connection per host name, reused");
}

#[tokio::test]
async fn without_its_ca_the_certificate_is_refused_with_what_to_do() {
    let (port, _, _) = https_server().await;
    let client = UpstreamClient::new(ClientConfig::default());
    let cloud = upstream("cloud", &format!("https://localhost:{port}"));
    let error = get(&client, &cloud, HeaderMap::new()).await.unwrap_err();
    assert_eq!(
        (error.class, error.tls, error.connecting),
        (FailureClass::Refused, Some(TlsFailure::Certificate), true)
    );
    assert_eq!(error.blame(), Blame::Server, "not held against keel");
    assert_eq!(error.status(), http::StatusCode::BAD_GATEWAY);
    let message = error.client_message();
    for part in ["upstream 'cloud'", &format!("https://localhost:{port}"), "not trusted", "UnknownIssuer", "ca_file"] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
}

#[tokio::test]
async fn configured_headers_arrive_instead_of_the_clients() {
    let (port, ca, _) = https_server().await;
    let client = UpstreamClient::new(ClientConfig::default());
    let mut credentials = HeaderMap::new();
    credentials.insert("x-api-key", "sk-ant-secret".parse().unwrap());
    credentials.insert("anthropic-version", "2023-06-01".parse().unwrap());
    credentials.insert(header::AUTHORIZATION, "Bearer sk-upstream".parse().unwrap());
    let cloud = upstream("claude", &format!("https://localhost:{port}"))
        .with_ca_certificates(&[ca])
        .unwrap()
        .with_headers(credentials);
    let mut from_client = HeaderMap::new();
    from_client.insert(header::AUTHORIZATION, "Bearer keel-client-key".parse().unwrap());
    from_client.append("x-api-key", "client-1".parse().unwrap());
    from_client.append("x-api-key", "client-2".parse().unwrap());
    let seen = get(&client, &cloud, from_client).await.unwrap();
    assert_eq!(seen, "authorization: Bearer sk-upstream\nx-api-key: sk-ant-secret\nanthropic-version: 2023-06-01\n");
    assert!(!format!("{cloud:?}").contains("sk-ant-secret"));
}

#[tokio::test]
async fn an_http_upstream_on_the_same_port_never_gets_the_tls_connection() {
    let (port, ca, connections) = https_server().await;
    let client = UpstreamClient::new(ClientConfig::default());
    let secure = upstream("secure", &format!("https://127.0.0.1:{port}")).with_ca_certificates(&[ca]).unwrap();
    get(&client, &secure, HeaderMap::new()).await.unwrap();
    let plain = upstream("plain", &format!("http://127.0.0.1:{port}"));
    let error = get(&client, &plain, HeaderMap::new()).await.unwrap_err();
    assert_eq!(error.tls, None, "{error}");
    assert_eq!(connections.load(Ordering::SeqCst), 2, "the plain request opened its own connection");
    get(&client, &secure, HeaderMap::new()).await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 2, "the TLS connection is still pooled for https");
}

#[tokio::test]
async fn https_to_a_plain_server_is_a_handshake_failure() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
        }
    });
    let client = UpstreamClient::new(ClientConfig::default());
    let error = get(&client, &upstream("mislabelled", &format!("https://127.0.0.1:{port}")), HeaderMap::new())
        .await
        .unwrap_err();
    assert_eq!((error.class, error.tls), (FailureClass::Refused, Some(TlsFailure::Handshake)), "{error}");
    assert!(error.client_message().contains("http://"), "{}", error.client_message());
}

#[tokio::test]
async fn a_handshake_that_never_ends_times_out_within_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            open.push(tcp);
        }
    });
    let config = ClientConfig { connect_timeout: std::time::Duration::from_millis(150), ..ClientConfig::default() };
    let client = UpstreamClient::new(config);
    let started = std::time::Instant::now();
    let error =
        get(&client, &upstream("silent", &format!("https://127.0.0.1:{port}")), HeaderMap::new()).await.unwrap_err();
    assert_eq!((error.class, error.connecting, error.tls), (FailureClass::Timeout, true, None), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
