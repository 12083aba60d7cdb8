//! The shared vocabulary of keel.
//!
//! Small, dependency-light types that every other keel crate speaks: which API dialect a request
//! or upstream uses ([`Dialect`]), how a model is named ([`ModelName`]) and which upstream serves it
//! ([`TargetId`]), what went wrong with an upstream call ([`FailureClass`]), and how durations are
//! written in configuration ([`duration`]).
//!
//! **Invariant:** this crate performs no I/O and depends on no HTTP or async crate.

pub mod dialect;
pub mod duration;
pub mod failure;
pub mod model;

pub use dialect::Dialect;
pub use failure::{Blame, FailureClass};
pub use model::{ModelName, TargetId, TargetIdError};
