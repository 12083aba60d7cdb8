//! The stages a proxied request goes through before its attempts, each a module of its own. The
//! [`pipeline`](crate::pipeline) runs them in order; a stage knows nothing of the others' order.
//!
//! - [`access`]: the host, the browser origin, model management closed by default;
//! - [`auth`]: the API key;
//! - [`limit`]: requests and tokens per minute per key (or client);
//! - [`intake`]: the body read and the route's targets found;
//! - [`session`]: a durable session's history attached, the answer stored;
//! - [`guard`]: structured output validated and repaired.
//!
//! A stage may answer by itself (a refusal, a stored answer); otherwise it hands its request to
//! the [`attempts`](crate::attempts), possibly more than once (a re-ask, a summary).

pub(crate) mod access;
pub(crate) mod auth;
pub(crate) mod guard;
pub(crate) mod intake;
pub(crate) mod limit;
pub(crate) mod session;
