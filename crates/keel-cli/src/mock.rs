//! `keel mock`: run the fake Ollama server.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

/// Flags of `keel mock`.
#[derive(Debug, Args)]
pub(crate) struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:11434", value_name = "ADDR")]
    listen: SocketAddr,
    /// Scenario file (TOML): models, replies, latency and faults. Default: one model "llama3.2"
    /// that answers politely. Examples are in crates/keel-mock/scenarios/.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first). Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The certificate and key of `--tls-cert` / `--tls-key`, when given.
fn tls_identity(args: &MockArgs) -> anyhow::Result<Option<keel_mock::TlsIdentity>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    let identity = keel_mock::TlsIdentity::from_pem(&read(cert)?, &read(key)?)
        .with_context(|| format!("--tls-cert {} / --tls-key {}", cert.display(), key.display()))?;
    Ok(Some(identity))
}

pub(crate) async fn run(args: MockArgs) -> anyhow::Result<()> {
    keel_telemetry::init_logging(keel_telemetry::LogFormat::Text, "warn");
    let scenario = match &args.scenario {
        Some(path) => keel_mock::Scenario::load(path)?,
        None => keel_mock::Scenario::single_model("llama3.2", "Hello from keel-mock."),
    };
    let tls = tls_identity(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}: is something else using it? Pass --listen ADDR", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = match scenario.api {
        keel_mock::ApiSurface::Ollama => "fake Ollama",
        keel_mock::ApiSurface::Openai => "fake OpenAI-compatible server (llama-server's endpoints)",
        keel_mock::ApiSurface::Anthropic => "fake Anthropic API",
    };
    writeln!(std::io::stdout().lock(), "keel mock: {server} on {scheme}://{addr} (Ctrl+C stops it)")?;
    match tls {
        Some(tls) => keel_mock::serve_tls(listener, scenario, tls, crate::shutdown_signal()).await?,
        None => keel_mock::serve(listener, scenario, crate::shutdown_signal()).await?,
    }
    Ok(())
}
