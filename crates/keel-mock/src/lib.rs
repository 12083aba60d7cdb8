//! keel-mock: a deterministic, fault-injecting fake Ollama server.
//!
//! It speaks Ollama's native API (`/api/*`), the OpenAI-compatible endpoints Ollama serves
//! (`/v1/*`), the Anthropic Messages API (`/v1/messages`) and the OpenAI Responses API
//! (`/v1/responses`) closely enough for clients and for keel's proxy — or, with the scenario's
//! `api`, only what llama.cpp's `llama-server` or Anthropic's API serve — optionally over HTTPS
//! ([`MockServer::start_tls`]) and behind an API key, and injects the failures keel is
//! built to absorb: "server busy", 404s, 500s, arbitrary statuses, hangs, TCP resets, streams
//! cut mid-body, error lines mid-stream, garbled JSON and slow first bytes. Every random choice
//! comes from one seeded generator, so the same scenario and the same sequence of requests give
//! the same bytes.
//!
//! Used by keel's integration tests, demos and benchmarks, and by `keel mock --scenario FILE`
//! for chaos drills.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keel_mock::Error> {
//! use keel_mock::{Fault, FaultKind, MockServer, ModelSpec, Scenario};
//!
//! let scenario = Scenario::single_model("llama3.2", "Hello!").with_seed(42);
//! let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
//! let server = MockServer::start(addr, scenario).await?;
//! let base = server.url(); // point the client (or keel) here
//!
//! // later: the primary dies
//! let dead = Scenario {
//!     models: vec![ModelSpec::new("llama3.2", "").with_fault(Fault::new(FaultKind::Busy))],
//!     ..Scenario::default()
//! };
//! server.set_scenario(dead);
//! # drop(base);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The admin API: `GET /mock/requests`, `DELETE /mock/requests`, `GET /mock/stats`,
//! `GET /mock/scenario`, `POST /mock/scenario` (TOML or JSON body replaces the scenario).

mod body;
mod handlers;
mod jsongen;
mod names;
mod scenario;
mod server;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use body::Stats;
pub use scenario::{ApiSurface, Fault, FaultKind, GarbleKind, ModelSpec, Scenario, ToolCall};
pub use server::{MockServer, TlsIdentity, serve, serve_tls};
pub use state::RecordedRequest;

/// Errors of keel-mock: scenario parsing and binding the listen address.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario text is invalid (unknown key, wrong type, bad value).
    #[error("invalid scenario: {0}")]
    Scenario(String),
    /// A scenario file could not be read.
    #[error("cannot read scenario file {}: {source}", path.display())]
    ReadScenario {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A scenario file is invalid.
    #[error("invalid scenario file {}: {message}", path.display())]
    ScenarioFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the offending key).
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another server using the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// Any other I/O error of the server.
    #[error("mock server I/O error: {0}")]
    Io(#[from] std::io::Error),
}
