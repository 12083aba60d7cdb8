//! HTTPS to model servers: the TLS settings of an `https://` upstream and its handshake.
//!
//! The settings come from [`keel_outbound::tls_config`] (rustls with ring, ALPN `http/1.1`, the
//! system's and Mozilla's roots), so keel trusts the same servers for model calls as for its
//! webhooks and trace exports. The settings without extra CA certificates are made once per
//! process and shared by every upstream that needs no `ca_file`.

use std::io;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

/// The TLS settings trusting the system's and Mozilla's roots (made on first use).
pub(crate) fn system_config() -> Result<Arc<ClientConfig>, String> {
    static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    SYSTEM.get_or_init(|| keel_outbound::tls_config(&[])).clone()
}

/// The TLS settings trusting `extra` (DER CA certificates) besides the system's and Mozilla's.
pub(crate) fn config_with(extra: &[Vec<u8>]) -> Result<Arc<ClientConfig>, String> {
    keel_outbound::tls_config(extra)
}

/// The name the server's certificate must carry: `host` (a DNS name or an IP address, without
/// brackets), sent as SNI when it is a name.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, io::Error> {
    ServerName::try_from(host.to_owned()).map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))
}

/// The TLS handshake with `host` over an open connection.
pub(crate) async fn handshake(
    config: &Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> io::Result<TlsStream<TcpStream>> {
    tokio_rustls::TlsConnector::from(Arc::clone(config)).connect(server_name(host)?, tcp).await
}
