//! Attempts: a request's route targets tried in fallback order until one answers usably.
//!
//! A target whose circuit breaker is open is skipped without a call; a target that cannot be
//! reached, or answers 5xx or "server busy", is recorded against its breaker (the server's or the
//! model's, by who failed) and the next target is tried — always before anything was sent to the
//! client, so the client sees one clean answer. Failures that may pass are retried in further
//! rounds, within the retry budget and the request's deadline. When every target is out, keel
//! answers 503 with `Retry-After` and names each target and why it is out.
//!
//! With `[admission]`, a target admitted by its breakers is called only with a slot of its
//! `upstream:model` queue ([`crate::admission`]): the request waits for one (boxed, so requests
//! without admission pay nothing) or is shed there — not the target's fault, so no breaker hears
//! of it and the next target is tried. The slot is held until the answer's body ends.
//!
//! Takes a [`Call`] and a [`Forward`] from the stages; gives a [`Sent`]: the client's response,
//! its body handed to the [`relay`](crate::relay).
//!
//! - [`rounds`]: the retry loop and one attempt per target;
//! - [`admit`]: the target's breakers; [`prepare`]: its request; [`judge`]: its answer;
//! - [`tally`]: what the attempts found, the next round, the final error;
//! - [`respond`]: the client's response from an answer; [`resume`]: a broken stream continued.

mod admit;
mod judge;
mod prepare;
mod request;
mod respond;
mod resume;
mod rounds;
mod tally;

pub(crate) use prepare::mentions_format;
pub(crate) use request::{Call, Forward, Payload, Sent};
pub(crate) use respond::{KEEL_ATTEMPTS, KEEL_TARGET};
pub(crate) use rounds::send;
