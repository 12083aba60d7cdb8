//! Response bodies: whole buffers, and paced streams that can be cut, with completion guards.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::time::Sleep;

/// Server counters, shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) connections: AtomicU64,
}

/// Counters of a running mock server (see [`crate::MockServer::stats`]).
///
/// `requests == completed + cancelled + (requests in flight)`. Injected faults (`cut`,
/// `reset`, error statuses) count as completed: the mock did what it meant to. Requests to the
/// `/mock/*` admin endpoints are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// Responses the mock finished (including injected faults).
    pub completed: u64,
    /// Requests whose handler or body was dropped before finishing (the client went away).
    pub cancelled: u64,
    /// TCP connections accepted.
    pub connections: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

/// Counts a request as completed when finished, or as cancelled when dropped before that.
pub(crate) struct Guard {
    counters: Arc<Counters>,
    done: bool,
}

impl Guard {
    pub(crate) fn new(counters: Arc<Counters>) -> Guard {
        Guard { counters, done: false }
    }

    pub(crate) fn finish(mut self) {
        self.done = true;
        self.counters.completed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The error a cut body ends with: hyper aborts the connection mid-body.
#[derive(Debug)]
pub(crate) struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("keel-mock: response body cut by an injected fault")
    }
}

impl std::error::Error for Aborted {}

/// Every response body the mock sends.
pub(crate) enum MockBody {
    Full(Option<Bytes>),
    Stream(Box<Streamer>),
}

impl MockBody {
    pub(crate) fn empty() -> MockBody {
        MockBody::Full(None)
    }

    pub(crate) fn full(b: impl Into<Bytes>) -> MockBody {
        let b = b.into();
        if b.is_empty() { MockBody::Full(None) } else { MockBody::Full(Some(b)) }
    }
}

/// A list of frames sent one by one with `delay` between them, then the end (or an abort).
pub(crate) struct Streamer {
    frames: VecDeque<Bytes>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    wait: bool,
    abort: bool,
    flushed: bool,
    guard: Option<Guard>,
}

impl Streamer {
    pub(crate) fn new(frames: VecDeque<Bytes>, delay: Duration, abort: bool, guard: Option<Guard>) -> Streamer {
        Streamer { frames, delay, sleep: None, wait: false, abort, flushed: false, guard }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        if self.wait && !self.delay.is_zero() {
            let delay = self.delay;
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        self.wait = false;
        match self.frames.pop_front() {
            Some(b) => {
                self.wait = !self.frames.is_empty();
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            None => {
                if let Some(g) = self.guard.take() {
                    g.finish();
                }
                if !self.abort {
                    return Poll::Ready(None);
                }
                if !self.flushed {
                    // hyper drops unflushed output when a body fails: yield once so the
                    // bytes sent so far reach the client before the abort.
                    self.flushed = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(Aborted)))
            }
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Stream(s) => s.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Stream(_) => SizeHint::default(),
        }
    }
}
