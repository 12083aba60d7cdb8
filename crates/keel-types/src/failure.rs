//! One classification of every upstream result: the only thing breakers, retries, metrics and
//! incidents read about a failed call.

use serde::{Deserialize, Serialize};

/// Why an upstream call did not produce a usable answer.
///
/// Streams are classified at their end: a `200` whose body breaks halfway is
/// [`FailureClass::StreamBroken`], not a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The server answered 503 "server busy" (Ollama's queue is full).
    Busy,
    /// No answer (or no next byte) within the allowed time.
    Timeout,
    /// The TCP connection was refused: nothing listens at the upstream address.
    Refused,
    /// The connection was reset or closed before a complete response head.
    Reset,
    /// The server answered with a 5xx other than busy.
    ServerError,
    /// The server rejected the request as malformed (4xx other than 404): the client's fault.
    BadRequest,
    /// The server does not have the requested model (404).
    ModelNotFound,
    /// The response started but its body broke: cut off, or an error line mid-stream.
    StreamBroken,
    /// The answer arrived whole but is not valid for the request (e.g. broken structured output).
    InvalidOutput,
    /// The server could not load or run the requested model (Ollama: "model requires more system
    /// memory", "unable to load model", "llama runner process has terminated"). The model's own
    /// failure: asking the same server again will not help, another target may answer.
    ModelLoad,
    /// keel itself ran out of a local resource (open files, memory, ports) while calling the
    /// upstream. Never held against the upstream.
    Local,
}

/// Who a failed call is held against: which breaker, if any, counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// The model server as a whole (refused, connect timeout, reset before any answer): every model
    /// on that upstream fails fast together.
    Server,
    /// The one model that was asked (its 5xx, load failure, time-out, broken or invalid answer).
    Model,
    /// keel's own resources: counted against nobody.
    Keel,
    /// The client's request (bad request, unknown model): counted against nobody.
    Client,
}

impl FailureClass {
    /// Every class, for metrics pre-registration and exhaustive tests.
    pub const ALL: [FailureClass; 11] = [
        FailureClass::Busy,
        FailureClass::Timeout,
        FailureClass::Refused,
        FailureClass::Reset,
        FailureClass::ServerError,
        FailureClass::BadRequest,
        FailureClass::ModelNotFound,
        FailureClass::StreamBroken,
        FailureClass::InvalidOutput,
        FailureClass::ModelLoad,
        FailureClass::Local,
    ];

    /// The snake_case name used in logs, metrics labels and config.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Busy => "busy",
            FailureClass::Timeout => "timeout",
            FailureClass::Refused => "refused",
            FailureClass::Reset => "reset",
            FailureClass::ServerError => "server_error",
            FailureClass::BadRequest => "bad_request",
            FailureClass::ModelNotFound => "model_not_found",
            FailureClass::StreamBroken => "stream_broken",
            FailureClass::InvalidOutput => "invalid_output",
            FailureClass::ModelLoad => "model_load",
            FailureClass::Local => "local",
        }
    }

    /// Whether the upstream (not the client) is at fault. Only these count against a breaker by
    /// default; a client's bad request or an unknown model says nothing about the server's health.
    pub fn is_upstream_fault(self) -> bool {
        !matches!(self, FailureClass::BadRequest | FailureClass::ModelNotFound | FailureClass::Local)
    }

    /// Who a failure of this class is held against when it happened after a connection was open.
    /// Failures while connecting are the server's whatever their class (see
    /// `keel_upstream::UpstreamError::connecting`), except [`FailureClass::Local`].
    pub fn blame(self) -> Blame {
        match self {
            FailureClass::Refused | FailureClass::Reset => Blame::Server,
            FailureClass::Local => Blame::Keel,
            FailureClass::BadRequest | FailureClass::ModelNotFound => Blame::Client,
            FailureClass::Busy
            | FailureClass::Timeout
            | FailureClass::ServerError
            | FailureClass::StreamBroken
            | FailureClass::InvalidOutput
            | FailureClass::ModelLoad => Blame::Model,
        }
    }

    /// Whether asking the same target again may help (a load failure or keel's own fault will not
    /// pass by retrying the same server within the same request).
    pub fn retry_same_target(self) -> bool {
        self.is_upstream_fault() && self != FailureClass::ModelLoad
    }

    /// Classifies an HTTP status of a complete response head. `None` for success statuses.
    pub fn from_status(status: u16) -> Option<FailureClass> {
        match status {
            0..=399 => None,
            404 => Some(FailureClass::ModelNotFound),
            408 | 504 => Some(FailureClass::Timeout),
            429 | 503 => Some(FailureClass::Busy),
            400..=499 => Some(FailureClass::BadRequest),
            _ => Some(FailureClass::ServerError),
        }
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify() {
        assert_eq!(FailureClass::from_status(200), None);
        assert_eq!(FailureClass::from_status(304), None);
        assert_eq!(FailureClass::from_status(503), Some(FailureClass::Busy));
        assert_eq!(FailureClass::from_status(404), Some(FailureClass::ModelNotFound));
        assert_eq!(FailureClass::from_status(400), Some(FailureClass::BadRequest));
        assert_eq!(FailureClass::from_status(500), Some(FailureClass::ServerError));
        assert_eq!(FailureClass::from_status(504), Some(FailureClass::Timeout));
    }

    #[test]
    fn blame_follows_what_failed() {
        assert_eq!(FailureClass::Refused.blame(), Blame::Server);
        assert_eq!(FailureClass::ServerError.blame(), Blame::Model);
        assert_eq!(FailureClass::ModelLoad.blame(), Blame::Model);
        assert_eq!(FailureClass::Local.blame(), Blame::Keel);
        assert!(!FailureClass::Local.is_upstream_fault());
        assert!(!FailureClass::ModelLoad.retry_same_target());
        assert!(FailureClass::ServerError.retry_same_target());
    }

    #[test]
    fn client_errors_are_not_upstream_faults() {
        assert!(!FailureClass::BadRequest.is_upstream_fault());
        assert!(!FailureClass::ModelNotFound.is_upstream_fault());
        assert!(FailureClass::Busy.is_upstream_fault());
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<_> = FailureClass::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FailureClass::ALL.len());
        for class in FailureClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
    }
}
