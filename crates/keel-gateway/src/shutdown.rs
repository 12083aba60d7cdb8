//! The end of the shutdown grace, per serving thread: the server sets it, and answers still open
//! when it fires end with an error saying to retry (a 503 before the head, an error line in a
//! stream's framing after it).

use tokio_util::sync::CancellationToken;

thread_local! {
    /// This serving thread's "the shutdown grace is over" signal (see [`grace_over`]).
    static GRACE_OVER: std::cell::OnceCell<CancellationToken> = const { std::cell::OnceCell::new() };
}

/// Cancelled when the shutdown grace runs out: requests still waiting for an answer get a 503,
/// streams still open end with an error line in their framing (`relay`). `None` outside keel's
/// serving threads (a router driven directly, in tests).
pub(crate) fn grace_over() -> Option<CancellationToken> {
    GRACE_OVER.with(|token| token.get().cloned())
}

/// Sets this serving thread's signal (once; a second call changes nothing).
pub(crate) fn set_grace_over(token: &CancellationToken) {
    GRACE_OVER.with(|cell| drop(cell.set(token.clone())));
}
