//! The keel HTTP proxy.
//!
//! A drop-in for Ollama: every Ollama endpoint and the OpenAI-compatible `/v1` endpoints are
//! relayed to the configured upstreams, streams chunk by chunk, bodies as bytes (unknown fields
//! pass through untouched), errors in the dialect of the endpoint. Around that sit the admin API
//! (`/keel/health`, `/keel/status`), Prometheus metrics (`/metrics`), request ids, structured logs,
//! optional API keys and graceful shutdown.
//!
//! - [`config`]: `keel.toml`, env and flag overrides, validation, the `keel init` template;
//! - [`Gateway`]: the shared state; [`app()`] builds the axum `Router` (tests call it directly);
//! - [`serve`]: binds the listener with `TCP_NODELAY`, serves until the shutdown signal, then
//!   drains in-flight requests for at most the configured grace period.
//!
//! A proxied request runs through `pipeline.rs`, which alone knows the order of its stages
//! (`stages/`), then the attempts over its targets (`attempts/`) and the relay of the answer
//! (`relay/`); imports run one way, from serving down to the foundation modules (ARCHITECTURE.md).

pub mod config;

// Serving: the listener, the router, background work, keel's own endpoints.
mod admin;
mod app;
mod background;
mod connections;
mod http1;
mod incident_worker;
mod incidents;
mod probes;
mod server;
mod shared;
mod ui;

// The request path, top to bottom (each layer imports only layers below it; see ARCHITECTURE.md
// and `tests/import_order.rs`).
mod attempts;
mod pipeline;
mod relay;
mod stages;

// Foundation, used by every layer.
mod admission;
mod answer;
mod answer_tail;
mod api_keys;
mod bridge;
mod client;
mod dashboard_feed;
mod endpoint;
mod error;
mod incident_log;
mod rate_limits;
mod remote;
mod request_id;
mod request_metrics;
mod retry;
mod routing;
mod shutdown;
mod startup_series;
mod state;
mod traces;

pub use app::app;
pub use endpoint::{Endpoint, EndpointKind};
pub use error::ProxyError;
pub use http1::serve_bytes;
pub use routing::RouteTable;
pub use server::{ServeError, serve};
pub use state::{Gateway, GatewayError};
