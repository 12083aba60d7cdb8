//! [`Shed`]: a request refused fast, with what happened and when to come back.

use std::fmt;
use std::time::Duration;

/// Why a request was refused instead of served. The proxy answers 503 with `Retry-After`
/// ([`Shed::retry_after`]) in the client's dialect.
///
/// Every message names the `upstream:model` bucket, what happened and what the operator can
/// change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Shed {
    /// The bucket's queue was full when the request arrived.
    #[error(
        "{target}: shed at once, {queued} requests already wait for it ([admission] max_queue); retry in {}, \
         or if this is the normal load raise max_queue, or max_concurrent if the server has spare capacity",
        Human(*retry_after)
    )]
    QueueFull {
        /// The bucket, `upstream:model`.
        target: String,
        /// Requests waiting when this one arrived.
        queued: usize,
        /// When the queue ahead is expected to have drained (at least 1 s).
        retry_after: Duration,
    },
    /// The queue was full and a more urgent request took this one's place: a higher priority,
    /// or the same priority from a tenant with fewer requests running.
    #[error(
        "{target}: shed after {} in the queue, a more urgent request took its place in the full queue \
         ([admission] max_queue); retry in {}, or send bulk work with priority batch",
        Human(*waited),
        Human(*retry_after)
    )]
    Displaced {
        /// The bucket, `upstream:model`.
        target: String,
        /// How long it had waited.
        waited: Duration,
        /// When the queue ahead is expected to have drained (at least 1 s).
        retry_after: Duration,
    },
    /// The request waited `max_wait` without getting a slot.
    #[error(
        "{target}: shed after waiting {} for a slot ([admission] max_wait): the model serves slower than \
         requests arrive; retry in {}, add capacity or lower the load",
        Human(*waited),
        Human(*retry_after)
    )]
    WaitTooLong {
        /// The bucket, `upstream:model`.
        target: String,
        /// How long it waited, here and in the queues of targets tried before.
        waited: Duration,
        /// When the queue ahead is expected to have drained (at least 1 s).
        retry_after: Duration,
    },
    /// The client's deadline is sooner than the expected wait: shed at once rather than queued.
    #[error(
        "{target}: shed at once, the client's deadline is {} away but the queue ahead needs about {}; \
         retry in {} or with a longer deadline",
        Human(*time_left),
        Human(*expected_wait),
        Human(*retry_after)
    )]
    DeadlineUnmeetable {
        /// The bucket, `upstream:model`.
        target: String,
        /// The wait estimated from the bucket's recent service times and the queue ahead.
        expected_wait: Duration,
        /// Time left until the client's deadline when the request arrived.
        time_left: Duration,
        /// When the queue ahead is expected to have drained (at least 1 s).
        retry_after: Duration,
    },
    /// The client's deadline passed while the request waited.
    #[error(
        "{target}: shed after waiting {}, the client's deadline passed before a slot was free; retry in {} \
         or with a longer deadline",
        Human(*waited),
        Human(*retry_after)
    )]
    DeadlinePassed {
        /// The bucket, `upstream:model`.
        target: String,
        /// How long it waited, here and in the queues of targets tried before.
        waited: Duration,
        /// When the queue ahead is expected to have drained (at least 1 s).
        retry_after: Duration,
    },
}

impl Shed {
    /// How long the client should wait before trying again (the `Retry-After` header): the
    /// estimated time for the queue ahead to drain, at least 1 s.
    pub fn retry_after(&self) -> Duration {
        match self {
            Shed::QueueFull { retry_after, .. }
            | Shed::Displaced { retry_after, .. }
            | Shed::WaitTooLong { retry_after, .. }
            | Shed::DeadlineUnmeetable { retry_after, .. }
            | Shed::DeadlinePassed { retry_after, .. } => *retry_after,
        }
    }

    /// The bucket, `upstream:model`.
    pub fn target(&self) -> &str {
        match self {
            Shed::QueueFull { target, .. }
            | Shed::Displaced { target, .. }
            | Shed::WaitTooLong { target, .. }
            | Shed::DeadlineUnmeetable { target, .. }
            | Shed::DeadlinePassed { target, .. } => target,
        }
    }

    /// The reason, for metrics labels and counters.
    pub fn reason(&self) -> ShedReason {
        match self {
            Shed::QueueFull { .. } => ShedReason::QueueFull,
            Shed::Displaced { .. } => ShedReason::Displaced,
            Shed::WaitTooLong { .. } => ShedReason::WaitTooLong,
            Shed::DeadlineUnmeetable { .. } => ShedReason::DeadlineUnmeetable,
            Shed::DeadlinePassed { .. } => ShedReason::DeadlinePassed,
        }
    }
}

/// The kind of a [`Shed`], without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// [`Shed::QueueFull`].
    QueueFull,
    /// [`Shed::Displaced`].
    Displaced,
    /// [`Shed::WaitTooLong`].
    WaitTooLong,
    /// [`Shed::DeadlineUnmeetable`].
    DeadlineUnmeetable,
    /// [`Shed::DeadlinePassed`].
    DeadlinePassed,
}

impl ShedReason {
    /// Every reason, in declaration order (the index of a reason is its position here).
    pub const ALL: [ShedReason; 5] = [
        ShedReason::QueueFull,
        ShedReason::Displaced,
        ShedReason::WaitTooLong,
        ShedReason::DeadlineUnmeetable,
        ShedReason::DeadlinePassed,
    ];

    /// The label used in metrics: `queue_full`, `displaced`, `wait_too_long`,
    /// `deadline_unmeetable`, `deadline_passed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::Displaced => "displaced",
            ShedReason::WaitTooLong => "wait_too_long",
            ShedReason::DeadlineUnmeetable => "deadline_unmeetable",
            ShedReason::DeadlinePassed => "deadline_passed",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ShedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A duration for people: `250ms`, `2.5s`, `90s`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        match millis {
            0..1000 => write!(f, "{millis}ms"),
            1000..10_000 => write!(f, "{:.1}s", self.0.as_secs_f64()),
            _ => write!(f, "{}s", self.0.as_secs_f64().round()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_happened_and_what_to_do() {
        let shed = Shed::QueueFull {
            target: "local:llama3.2".to_owned(),
            queued: 64,
            retry_after: Duration::from_millis(2500),
        };
        assert_eq!(
            shed.to_string(),
            "local:llama3.2: shed at once, 64 requests already wait for it ([admission] max_queue); retry in 2.5s, \
             or if this is the normal load raise max_queue, or max_concurrent if the server has spare capacity"
        );
        assert_eq!(shed.retry_after(), Duration::from_millis(2500));
        assert_eq!((shed.target(), shed.reason().as_str()), ("local:llama3.2", "queue_full"));
        let late = Shed::DeadlineUnmeetable {
            target: "local:qwen3".to_owned(),
            expected_wait: Duration::from_secs(42),
            time_left: Duration::from_millis(800),
            retry_after: Duration::from_secs(42),
        };
        assert_eq!(
            late.to_string(),
            "local:qwen3: shed at once, the client's deadline is 800ms away but the queue ahead needs about 42s; \
             retry in 42s or with a longer deadline"
        );
    }

    #[test]
    fn reasons_index_their_position() {
        for (index, reason) in ShedReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), index);
        }
    }
}
