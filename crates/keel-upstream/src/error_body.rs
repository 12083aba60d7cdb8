//! Error bodies in the dialect of the endpoint that failed.
//!
//! Ollama's `/api/*` answers `{"error": "message"}`; its OpenAI-compatible `/v1/*` answers
//! `{"error": {"message", "type", "param", "code"}}` with `type` chosen by status exactly as Ollama
//! does (`invalid_request_error` for 400, `not_found_error` for 404, `api_error` otherwise).
//! Anthropic's `/v1/messages` answers `{"type": "error", "error": {"type", "message"}}` with the
//! types Anthropic documents (`overloaded_error` for its 529, `rate_limit_error` for 429, …).

use bytes::Bytes;
use http::StatusCode;
use keel_types::Dialect;
use serde_json::json;

/// An error response: status plus a JSON body in one dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// HTTP status to answer with.
    pub status: StatusCode,
    /// The serialized JSON body.
    pub body: Bytes,
}

impl ErrorBody {
    /// Builds the error body for `dialect`.
    pub fn new(dialect: Dialect, status: StatusCode, message: &str) -> ErrorBody {
        ErrorBody { status, body: Bytes::from(Self::json(dialect, status, message).to_string()) }
    }

    /// The error as a JSON value, e.g. to embed as a line in a stream.
    pub fn json(dialect: Dialect, status: StatusCode, message: &str) -> serde_json::Value {
        match dialect {
            Dialect::Ollama => json!({ "error": message }),
            Dialect::OpenAi => json!({
                "error": {
                    "message": message,
                    "type": openai_error_type(status),
                    "param": null,
                    "code": null,
                }
            }),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": { "type": anthropic_error_type(status), "message": message },
            }),
        }
    }
}

/// The OpenAI error `type` Ollama uses for a status.
pub fn openai_error_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::METHOD_NOT_ALLOWED
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "invalid_request_error",
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "authentication_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        _ => "api_error",
    }
}

/// The Anthropic error `type` for a status (Anthropic's "HTTP errors" table).
pub fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 422 | 431 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_dialect() {
        let e = ErrorBody::new(Dialect::Ollama, StatusCode::NOT_FOUND, "model 'x' not found");
        assert_eq!(e.body, Bytes::from_static(br#"{"error":"model 'x' not found"}"#));
    }

    #[test]
    fn openai_dialect() {
        let e = ErrorBody::new(Dialect::OpenAi, StatusCode::BAD_REQUEST, "bad");
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert!(v["error"]["code"].is_null());
        let v = ErrorBody::json(Dialect::OpenAi, StatusCode::SERVICE_UNAVAILABLE, "busy");
        assert_eq!(v["error"]["type"], "api_error");
        let v = ErrorBody::json(Dialect::OpenAi, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "big");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn anthropic_dialect() {
        let e = ErrorBody::new(Dialect::Anthropic, StatusCode::NOT_FOUND, "model: x");
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["message"], "model: x");
        let status = StatusCode::from_u16(529).unwrap();
        assert_eq!(ErrorBody::json(Dialect::Anthropic, status, "busy")["error"]["type"], "overloaded_error");
        assert_eq!(anthropic_error_type(StatusCode::TOO_MANY_REQUESTS), "rate_limit_error");
    }
}
