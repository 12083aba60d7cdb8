//! The hook through which the relay continues a stream that broke mid-answer: the layer above
//! (the attempts, which know how requests are sent) hands one down with the answer, so the relay
//! never imports it.

use std::future::Future;
use std::pin::Pin;

use axum::response::Response;

/// Continues an answer whose stream broke mid-answer, from above: the attempts layer gives the
/// relay one of these for a chat stream with targets left (the relay does not know how requests
/// are sent). `start` gets the assistant text this stream sent.
pub(crate) trait Continue: Send {
    /// Starts asking the next targets to continue after `partial`; `None` when the request cannot
    /// be continued (its body is not a chat request keel can extend).
    fn start(self: Box<Self>, partial: &str) -> Option<Continuation>;
}

/// The answer of the continuation call: relayed in the same stream when it succeeds.
pub(crate) type Continuation = Pin<Box<dyn Future<Output = Response> + Send>>;
