//! Who is asking and how urgently: [`Ticket`] and its [`Priority`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// How urgently a request wants a slot. Higher priorities are served first; a waiting request is
/// raised one level per [`Settings::aging`](crate::Settings::aging) waited, so `Batch` still
/// progresses under constant `Interactive` load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Background work (bulk jobs, evaluations): served when nothing more urgent waits.
    Batch,
    /// The default.
    #[default]
    Normal,
    /// A person is waiting on the answer.
    Interactive,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 3] = [Priority::Batch, Priority::Normal, Priority::Interactive];

    /// The name used in headers and config: `batch`, `normal` or `interactive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Batch => "batch",
            Priority::Normal => "normal",
            Priority::Interactive => "interactive",
        }
    }

    /// The level, 0 (`Batch`) to 2 (`Interactive`).
    pub(crate) fn level(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority name that is none of `interactive`, `normal`, `batch`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {0:?}: write interactive, normal or batch")]
pub struct ParsePriorityError(pub String);

impl FromStr for Priority {
    type Err = ParsePriorityError;

    /// Parses `interactive`, `normal` or `batch`, ignoring ASCII case and surrounding spaces.
    fn from_str(text: &str) -> Result<Priority, ParsePriorityError> {
        let text = text.trim();
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| ParsePriorityError(text.to_owned()))
    }
}

/// One request asking for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Who is asking, for fair share: the API key's name, or the client's IP without a key.
    pub tenant: Arc<str>,
    /// How urgently.
    pub priority: Priority,
    /// The client's deadline, if it sent one. A request whose deadline cannot be met is shed at
    /// once instead of queued; one still queued when its deadline passes leaves the queue.
    pub deadline: Option<Instant>,
    /// How long the request already waited in other queues (those of targets tried before this
    /// one): `max_wait` bounds its waiting in all of them together, not in each.
    pub waited_before: Duration,
}

impl Ticket {
    /// A ticket of `tenant` at `priority`, without a deadline, that has not waited yet.
    pub fn new(tenant: impl Into<Arc<str>>, priority: Priority) -> Ticket {
        Ticket { tenant: tenant.into(), priority, deadline: None, waited_before: Duration::ZERO }
    }

    /// The same ticket with a deadline.
    pub fn with_deadline(self, deadline: Instant) -> Ticket {
        Ticket { deadline: Some(deadline), ..self }
    }

    /// The same ticket, having waited `waited` in other queues already.
    pub fn with_waited_before(self, waited: Duration) -> Ticket {
        Ticket { waited_before: waited, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse_and_print_back() {
        for priority in Priority::ALL {
            assert_eq!(priority.to_string().parse::<Priority>(), Ok(priority));
        }
        assert_eq!(" Interactive ".parse::<Priority>(), Ok(Priority::Interactive));
        assert_eq!(Priority::default(), Priority::Normal);
        let error = "urgent".parse::<Priority>().unwrap_err();
        assert_eq!(error.to_string(), r#"unknown priority "urgent": write interactive, normal or batch"#);
    }

    #[test]
    fn priorities_order_from_batch_to_interactive() {
        assert!(Priority::Batch < Priority::Normal && Priority::Normal < Priority::Interactive);
        assert_eq!(Priority::ALL.map(Priority::level), [0, 1, 2]);
    }
}
