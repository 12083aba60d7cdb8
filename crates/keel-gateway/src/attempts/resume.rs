//! Continuing a broken chat stream on the route's next targets: when a streamed chat answer breaks
//! after bytes reached the client, the relay hands the text sent so far to a [`Resume`] (through
//! the relay's `Continue` trait, so the relay need not know how requests are sent; `rounds`
//! implements it), which gives the request that asks the next targets the same thing with the
//! partial answer appended as an assistant message (to `messages`, or a Responses request's
//! `input`; servers continue it rather than restart);
//! the relay splices that answer into the same client stream. The client sees one well-formed stream that ends with `done: true` or
//! `[DONE]`; when no target can continue, it ends with an error line.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

use super::request::{Call, Continuing, Forward, Payload};
use crate::endpoint::Endpoint;
use crate::state::Gateway;

/// Everything needed to ask the next targets to continue a stream.
pub(super) struct Resume {
    pub(super) gateway: Gateway,
    pub(super) endpoint: Endpoint,
    pub(super) method: http::Method,
    pub(super) headers: HeaderMap,
    pub(super) id: HeaderValue,
    pub(super) started: std::time::Instant,
    /// The targets after the one streaming now, in fallback order.
    pub(super) targets: Vec<keel_types::TargetId>,
    pub(super) route_model: String,
    pub(super) requested_model: String,
    pub(super) path_and_query: String,
    /// The client's request body as it arrived.
    pub(super) original: Bytes,
    /// Assistant text that earlier targets already streamed to the client.
    pub(super) prefix: String,
    /// The request's admission ticket (see [`Call::ticket`]).
    pub(super) ticket: Option<keel_admission::Ticket>,
    /// The trace context the broken call ran in (when traces are sent): the continuation's span
    /// is its child.
    pub(super) trace: Option<keel_telemetry::traces::Context>,
}

/// The request that continues a broken stream: where it goes and what it sends.
pub(super) struct Continued {
    pub(super) gateway: Gateway,
    pub(super) endpoint: Endpoint,
    pub(super) call: Call,
    pub(super) forward: Forward,
}

impl Resume {
    /// The same request to the next targets, with `partial` (the text this stream sent) appended
    /// to what earlier targets sent as an assistant message to continue. `None` when the body is
    /// not a chat request keel can extend.
    pub(super) fn continuation(self, partial: &str) -> Option<Continued> {
        let text = format!("{}{partial}", self.prefix);
        let body = continuation_body(&self.original, &text, self.endpoint.label)?;
        let Resume {
            gateway,
            endpoint,
            method,
            headers,
            id,
            started,
            targets,
            original,
            route_model,
            requested_model,
            path_and_query,
            ticket,
            ..
        } = self;
        let call = Call {
            method,
            headers,
            id,
            started,
            hold_permit: false,
            continuing: Some(Continuing { original, prefix: text }),
            ticket,
        };
        let forward = Forward {
            targets,
            route_model,
            requested_model,
            path_and_query,
            payload: Payload::Bytes(body),
            stream: true,
            withheld: Vec::new(),
        };
        Some(Continued { gateway, endpoint, call, forward })
    }
}

/// The request to `route` with the partial answer appended as an assistant message to continue:
/// to `messages`, or for the Responses API to `input` (a string `input` becoming a user message).
fn continuation_body(original: &[u8], partial: &str, route: &str) -> Option<Bytes> {
    let mut body: Map<String, Value> = serde_json::from_slice(original).ok()?;
    if !partial.is_empty() {
        let conversation =
            if route == "/v1/responses" { responses_input(&mut body)? } else { body.get_mut("messages")? };
        conversation.as_array_mut()?.push(json!({"role": "assistant", "content": partial}));
    }
    serde_json::to_vec(&body).ok().map(Bytes::from)
}

/// A Responses request's `input` as a list of items (a string is the user's message).
fn responses_input(body: &mut Map<String, Value>) -> Option<&mut Value> {
    let input = body.get_mut("input")?;
    if let Some(text) = input.as_str() {
        *input = json!([{"role": "user", "content": text}]);
    }
    Some(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_appends_the_partial_answer() {
        let body = continuation_body(
            br#"{"model":"m","messages":[{"role":"user","content":"q"}],"stream":true}"#,
            "Once upon",
            "/v1/chat/completions",
        )
        .unwrap();
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["messages"][1], json!({"role": "assistant", "content": "Once upon"}));
        assert_eq!(value["stream"], true);
        let same = continuation_body(br#"{"model":"m","messages":[]}"#, "", "/api/chat").unwrap();
        assert_eq!(&same[..], br#"{"model":"m","messages":[]}"#);
    }

    #[test]
    fn a_responses_continuation_appends_to_the_input() {
        let body = continuation_body(br#"{"model":"m","input":"q","stream":true}"#, "Once", "/v1/responses").unwrap();
        let value: Value = serde_json::from_slice(&body).unwrap();
        let expected = json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "Once"}]);
        assert_eq!(value["input"], expected);
        let items = br#"{"model":"m","input":[{"role":"user","content":"q"}]}"#;
        let value: Value = serde_json::from_slice(&continuation_body(items, "Once", "/v1/responses").unwrap()).unwrap();
        assert_eq!(value["input"], expected);
    }
}
