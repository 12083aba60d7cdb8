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
}

impl FailureClass {
    /// Every class, for metrics pre-registration and exhaustive tests.
    pub const ALL: [FailureClass; 9] = [
        FailureClass::Busy,
        FailureClass::Timeout,
        FailureClass::Refused,
        FailureClass::Reset,
        FailureClass::ServerError,
        FailureClass::BadRequest,
        FailureClass::ModelNotFound,
        FailureClass::StreamBroken,
        FailureClass::InvalidOutput,
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
        }
    }

    /// Whether the upstream (not the client) is at fault. Only these count against a breaker by
    /// default; a client's bad request or an unknown model says nothing about the server's health.
    pub fn is_upstream_fault(self) -> bool {
        !matches!(self, FailureClass::BadRequest | FailureClass::ModelNotFound)
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
