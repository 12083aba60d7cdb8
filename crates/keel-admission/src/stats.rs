//! What admission reports: [`BucketStats`] per bucket and cumulative [`Counters`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Permit, Shed, ShedReason};

/// One `upstream:model` bucket right now, for `/keel/status` and metrics. Only buckets with
/// requests running or queued exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketStats {
    /// The upstream's name.
    pub upstream: Arc<str>,
    /// The model's name.
    pub model: Arc<str>,
    /// Requests holding a slot.
    pub running: usize,
    /// Requests waiting for one.
    pub queued: usize,
    /// [`Settings::max_concurrent`](crate::Settings::max_concurrent).
    pub max_concurrent: usize,
    /// [`Settings::max_queue`](crate::Settings::max_queue).
    pub max_queue: usize,
    /// How long the longest-waiting queued request has waited; zero with an empty queue.
    pub oldest_wait: Duration,
    /// The recent average time a slot is held (exponentially weighted); `None` until one
    /// request has finished since the bucket was created.
    pub service_time: Option<Duration>,
    /// Requests running on all models of the upstream.
    pub upstream_running: usize,
    /// [`Settings::upstream_max_concurrent`](crate::Settings::upstream_max_concurrent).
    pub upstream_max_concurrent: Option<usize>,
}

/// Cumulative counts since the [`Admission`](crate::Admission) was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Requests given a slot, at once or after waiting.
    pub admitted: u64,
    /// Of those, the ones that waited in the queue first.
    pub admitted_after_queueing: u64,
    /// Requests whose client went away while they waited.
    pub cancelled: u64,
    /// Requests shed, by [`ShedReason`] (index with [`Counters::shed`]).
    pub shed_by_reason: [u64; ShedReason::ALL.len()],
}

impl Counters {
    /// Requests shed for `reason`.
    pub fn shed(&self, reason: ShedReason) -> u64 {
        self.shed_by_reason[reason.index()]
    }

    /// Requests shed for any reason.
    pub fn shed_total(&self) -> u64 {
        self.shed_by_reason.iter().sum()
    }
}

/// The live counters behind [`Counters`]: relaxed atomics, one add per request.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    admitted: AtomicU64,
    admitted_after_queueing: AtomicU64,
    cancelled: AtomicU64,
    shed: [AtomicU64; ShedReason::ALL.len()],
}

impl Tally {
    pub(crate) fn count(&self, result: &Result<Permit, Shed>) {
        match result {
            Ok(permit) => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                if permit.was_queued() {
                    self.admitted_after_queueing.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(shed) => {
                self.shed[shed.reason().index()].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn count_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            admitted: self.admitted.load(Ordering::Relaxed),
            admitted_after_queueing: self.admitted_after_queueing.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            shed_by_reason: self.shed.each_ref().map(|count| count.load(Ordering::Relaxed)),
        }
    }
}
