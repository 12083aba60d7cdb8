//! [`Settings`]: the limits of every `upstream:model` bucket, and their validation.

use std::time::Duration;

/// The limits admission enforces. One set for every bucket; buckets are keyed by
/// `upstream:model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Requests served at once per `upstream:model`. Set it to the upstream's
    /// `OLLAMA_NUM_PARALLEL`: more only moves the queue into Ollama, where it has no bound.
    pub max_concurrent: usize,
    /// Requests waiting per `upstream:model`; one more is shed with
    /// [`Shed::QueueFull`](crate::Shed::QueueFull). 0 turns queueing off.
    pub max_queue: usize,
    /// The longest a request waits for a slot before it is shed with
    /// [`Shed::WaitTooLong`](crate::Shed::WaitTooLong): in all, over the queues of every target
    /// it tries ([`Ticket::waited_before`](crate::Ticket::waited_before)).
    pub max_wait: Duration,
    /// Requests served at once by all models of one upstream together (a server whose memory
    /// holds several models but whose GPU serves only so many requests); `None`: no cap.
    pub upstream_max_concurrent: Option<usize>,
    /// Waiting this long raises a request one priority level (batch → normal → interactive).
    pub aging: Duration,
}

impl Default for Settings {
    /// 4 at once and 64 waiting per model, 30 s longest wait, no upstream cap, 5 s aging.
    fn default() -> Settings {
        Settings {
            max_concurrent: 4,
            max_queue: 64,
            max_wait: Duration::from_secs(30),
            upstream_max_concurrent: None,
            aging: Duration::from_secs(5),
        }
    }
}

impl Settings {
    /// Checks that the settings can work; the error names the key and what to write instead.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |key, problem: &str| Err(Error::InvalidSettings { key, problem: problem.to_owned() });
        if self.max_concurrent == 0 {
            return invalid("max_concurrent", "is 0, so nothing would ever be served: write 1 or more");
        }
        if self.upstream_max_concurrent == Some(0) {
            return invalid(
                "upstream_max_concurrent",
                "is 0, so nothing would ever be served: write 1 or more, or leave it out for no cap",
            );
        }
        if self.aging.is_zero() {
            return invalid(
                "aging",
                "is 0, which would make every request interactive at once: write a duration such as \"5s\"",
            );
        }
        Ok(())
    }

    /// The cap of one upstream, `usize::MAX` without one.
    pub(crate) fn upstream_cap(&self) -> usize {
        self.upstream_max_concurrent.unwrap_or(usize::MAX)
    }
}

/// The crate's error: settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A key of `[admission]` has an unusable value.
    #[error("[admission] {key} {problem}")]
    InvalidSettings {
        /// The key, as written in the config file.
        key: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// One upstream's own settings do not validate.
    #[error("admission settings of upstream {upstream:?}: {source}")]
    InvalidUpstreamSettings {
        /// The upstream's name.
        upstream: String,
        /// What is wrong with its settings.
        source: Box<Error>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        assert_eq!(Settings::default().validate(), Ok(()));
    }

    #[test]
    fn unusable_values_are_named() {
        let zero = Settings { max_concurrent: 0, ..Settings::default() };
        let message = zero.validate().unwrap_err().to_string();
        assert_eq!(message, "[admission] max_concurrent is 0, so nothing would ever be served: write 1 or more");
        let zero_cap = Settings { upstream_max_concurrent: Some(0), ..Settings::default() };
        assert!(zero_cap.validate().unwrap_err().to_string().contains("upstream_max_concurrent"));
        let no_aging = Settings { aging: Duration::ZERO, ..Settings::default() };
        assert!(no_aging.validate().unwrap_err().to_string().contains("aging"));
        let no_queue = Settings { max_queue: 0, max_wait: Duration::ZERO, ..Settings::default() };
        assert_eq!(no_queue.validate(), Ok(()), "no queue at all is a valid choice");
    }
}
