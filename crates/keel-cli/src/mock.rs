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
}

pub(crate) async fn run(args: MockArgs) -> anyhow::Result<()> {
    keel_telemetry::init_logging(keel_telemetry::LogFormat::Text, "warn");
    let scenario = match &args.scenario {
        Some(path) => keel_mock::Scenario::load(path)?,
        None => keel_mock::Scenario::single_model("llama3.2", "Hello from keel-mock."),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}: is something else using it? Pass --listen ADDR", args.listen))?;
    let addr = listener.local_addr()?;
    writeln!(std::io::stdout().lock(), "keel mock: fake Ollama on http://{addr} (Ctrl+C stops it)")?;
    keel_mock::serve(listener, scenario, crate::shutdown_signal()).await?;
    Ok(())
}
