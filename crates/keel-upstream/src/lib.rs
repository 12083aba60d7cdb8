//! Talking to model servers.
//!
//! - [`client`]: the pooled HTTP/1.1 client keel uses for every upstream call (keep-alive,
//!   `TCP_NODELAY`, a short connect timeout and a long time-to-first-byte for cold model loads),
//!   to `http://` model servers and `https://` ones (rustls, the TLS settings of
//!   [`keel_outbound::tls_config`] plus an upstream's own CA certificates), with per-upstream
//!   credential headers;
//! - [`pool`]: the idle upstream connections of one client (by scheme, authority and TLS
//!   settings), and the response body that hands its connection back when read to the end;
//! - [`classify`]: every failed call becomes exactly one [`keel_types::FailureClass`] (an
//!   untrusted TLS certificate too, with a [`TlsFailure`] saying what to fix);
//! - [`address`]: whether an upstream is on this machine or network, or remote;
//! - [`error_body`]: error bodies in the dialect of the endpoint (Ollama or OpenAI);
//! - [`wire`]: the few request fields keel reads (`model`, `stream`) without touching the rest.
//!
//! **Invariant:** request and response bodies are forwarded as bytes; keel never re-serializes a
//! body it does not need to change, so fields it does not know pass through untouched.

pub mod address;
pub mod classify;
pub mod client;
pub mod error_body;
mod h1;
pub mod pool;
mod tls;
pub mod translate;
pub mod wire;

pub use address::is_remote_host;
pub use classify::{
    TlsFailure, classify_body_error, classify_connect_error, classify_error_answer, classify_send_error,
    classify_tls_error, is_local_shortage,
};
pub use client::{
    BoxError, ClientConfig, RequestBody, Upstream, UpstreamClient, UpstreamError, UpstreamUrlError, empty_body,
    full_body, strip_hop_headers,
};
pub use error_body::{ErrorBody, anthropic_error_type, openai_error_type};
pub use h1::decode::{Decoded, Decoder, Framing};
pub use h1::{GrowingReads, HttpError, WholeResponse, read_response};
pub use pool::ResponseBody;
pub use wire::{RequestPeek, WireError};
