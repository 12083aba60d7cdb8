//! `keel`: keeps local LLM agents running around the clock.
//!
//! The binary wires the library crates into commands: `serve` (the proxy), `init` (a commented
//! config), `mock` (a fake Ollama), `demo` (a guided tour), `status` (ask a running keel) and
//! `doctor` (check what keel needs).
//! It is the only crate that uses `anyhow`.

mod chat;
mod config_file;
mod connect;
mod demo;
mod doctor;
mod incidents;
mod init;
mod keys;
mod mock;
mod open_files;
mod repair;
mod runbook;
mod serve;
mod sessions;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a proxy allocates and frees many small buffers per
/// request, and glibc's malloc took ~12% of keel's CPU under load (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// keel keeps local LLM agents running: a drop-in proxy in front of Ollama.
///
/// Agents change only their base URL, http://127.0.0.1:11434 → http://127.0.0.1:11435, and every
/// Ollama endpoint and the OpenAI-compatible /v1 endpoints keep working through keel.
#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    propagate_version = true,
    after_help = "Examples:\n  keel serve                                  proxy 127.0.0.1:11435 → Ollama on 127.0.0.1:11434\n  keel serve --upstream http://10.0.0.5:11434  proxy to another Ollama\n  keel init                                   write a commented keel.toml\n  keel demo                                   a self-contained tour, no Ollama needed\n  keel status                                 what a running keel sees\n  keel doctor                                 check config, store, upstreams, models, Redis, clock"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy. Point agents at it instead of Ollama.
    Serve(serve::ServeArgs),
    /// Write a keel.toml with every setting at its default, each explained.
    Init(init::InitArgs),
    /// Run a fake Ollama server (for tests, demos and chaos drills).
    Mock(mock::MockArgs),
    /// A self-contained tour: starts a fake Ollama and keel, and sends requests through.
    Demo(demo::DemoArgs),
    /// Show what a running keel sees: upstreams, routes and targets.
    Status(status::StatusArgs),
    /// Repair a model's broken JSON output (fences, prose, quotes, commas, truncation, types), or refuse.
    Repair(repair::RepairArgs),
    /// Chat with a model through keel (or Ollama): a REPL, or one answer with --non-interactive.
    Chat(chat::ChatArgs),
    /// List, show, export or delete the durable sessions in keel's store.
    Sessions(sessions::SessionsArgs),
    /// Create, list or revoke the API keys in keel's store (picked up by running keel instances).
    Keys(keys::KeysArgs),
    /// List, show or resolve incidents (failures keel recorded, and events posted to it).
    Incidents(incidents::IncidentsArgs),
    /// Write an incident's runbook now, from the evidence (and a model, when one answers), or the
    /// deployment's runbook and its Prometheus alerts.
    Runbook(runbook::RunbookArgs),
    /// Check the config, the store, each upstream and its models, Redis and the clock; print each
    /// problem with its fix.
    Doctor(doctor::DoctorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` does its work on its own per-core threads; its main runtime only accepts
    // connections and waits for signals, so one thread is enough there.
    let runtime = match if matches!(cli.command, Command::Serve(_)) {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } {
        Ok(runtime) => runtime,
        Err(err) => {
            report(&anyhow::anyhow!("cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Init(args) => init::run(args),
            Command::Mock(args) => mock::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Repair(args) => repair::run(args),
            Command::Chat(args) => chat::run(args).await,
            Command::Sessions(args) => sessions::run(args).await,
            Command::Keys(args) => keys::run(args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Incidents(args) => incidents::run(args).await,
            Command::Runbook(args) => runbook::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error with its causes on stderr.
fn report(err: &anyhow::Error) {
    use std::io::Write as _;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {err}");
    for cause in err.chain().skip(1) {
        let _ = writeln!(stderr, "  caused by: {cause}");
    }
}

/// Resolves when the process gets Ctrl+C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
