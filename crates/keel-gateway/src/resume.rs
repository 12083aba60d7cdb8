//! Mid-stream recovery: a streamed chat answer whose upstream breaks after bytes reached the client
//! is continued on the route's next target, spliced into the same client stream.
//!
//! While such a stream is relayed, a [`Tap`] reads its lines (Ollama NDJSON or OpenAI SSE) to keep
//! the assistant text sent so far and to notice an upstream error line. When the stream breaks —
//! cut, an error line, silence past `idle_timeout` — before its final chunk, the next target is
//! asked the same request with the partial answer appended as an assistant message (which servers
//! continue rather than restart), and its stream is relayed in the same response. The client sees
//! one well-formed stream that ends with `done: true` or `[DONE]`; when no target can continue, it
//! ends with an error line as before.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

use crate::endpoint::Endpoint;
use crate::proxy::{Call, Forward, Payload, Sent, send};
use crate::state::Gateway;

/// Everything needed to ask the next targets to continue a stream.
pub(crate) struct Resume {
    pub(crate) gateway: Gateway,
    pub(crate) endpoint: Endpoint,
    pub(crate) method: http::Method,
    pub(crate) headers: HeaderMap,
    pub(crate) id: HeaderValue,
    pub(crate) started: std::time::Instant,
    /// The targets after the one streaming now, in fallback order.
    pub(crate) targets: Vec<keel_types::TargetId>,
    pub(crate) route_model: String,
    pub(crate) requested_model: String,
    pub(crate) path_and_query: String,
    /// The client's request body as it arrived.
    pub(crate) original: Bytes,
    /// Assistant text that earlier targets already streamed to the client.
    pub(crate) prefix: String,
}

/// What a continuation call is continuing: the client's original body and the text so far.
#[derive(Clone)]
pub(crate) struct Continuing {
    pub(crate) original: Bytes,
    pub(crate) prefix: String,
}

/// The future of the continuation call.
pub(crate) type Continuation = Pin<Box<dyn Future<Output = Sent> + Send>>;

impl Resume {
    /// Asks the next targets to continue after `partial` (the text this stream sent).
    pub(crate) fn start(self, partial: &str) -> Option<Continuation> {
        let text = format!("{}{partial}", self.prefix);
        let body = continuation_body(&self.original, &text)?;
        let Resume { gateway, endpoint, method, headers, id, started, targets, .. } = self;
        let call = Call {
            method,
            headers,
            id,
            started,
            hold_permit: false,
            continuing: Some(Continuing { original: self.original, prefix: text }),
        };
        let forward = Forward {
            targets,
            route_model: self.route_model,
            requested_model: self.requested_model,
            path_and_query: self.path_and_query,
            payload: Payload::Bytes(body),
            stream: true,
        };
        tracing::info!(targets = forward.targets.len(), "stream broke mid-answer; continuing on the next target");
        Some(Box::pin(async move { send(&gateway, call, endpoint, forward).await }))
    }
}

/// The request with the partial answer appended as an assistant message to continue.
fn continuation_body(original: &[u8], partial: &str) -> Option<Bytes> {
    let mut body: Map<String, Value> = serde_json::from_slice(original).ok()?;
    if !partial.is_empty() {
        body.get_mut("messages")?.as_array_mut()?.push(json!({"role": "assistant", "content": partial}));
    }
    serde_json::to_vec(&body).ok().map(Bytes::from)
}

/// How the tapped stream is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TapFraming {
    /// Ollama NDJSON: `{"message": {"content": …}, "done": …}` per line.
    NdJson,
    /// OpenAI SSE: `data: {"choices": [{"delta": {"content": …}}]}` events, then `data: [DONE]`.
    Sse,
}

/// What one chunk fed to the [`Tap`] gave.
pub(crate) struct Fed {
    /// Whole lines to pass on to the client.
    pub(crate) pass: Bytes,
    /// The upstream reported an error in the stream (its line is not passed on).
    pub(crate) error: Option<String>,
}

/// Reads a relayed stream line by line: the assistant text so far, the end, error lines.
pub(crate) struct Tap {
    framing: TapFraming,
    /// The start of a line whose end has not arrived yet.
    partial_line: Vec<u8>,
    /// Assistant text passed on so far.
    pub(crate) text: String,
    /// The final chunk (`done: true`, or `[DONE]`) was passed on: nothing left to continue.
    pub(crate) finished: bool,
    /// Tokens the server reported for the answer (`eval_count`, or `usage.completion_tokens`).
    pub(crate) answer_tokens: Option<u64>,
    /// Tokens the server reported for the prompt (`prompt_eval_count`, or `usage.prompt_tokens`).
    pub(crate) prompt_tokens: Option<u64>,
}

impl Tap {
    pub(crate) fn new(framing: TapFraming) -> Tap {
        Tap {
            framing,
            partial_line: Vec::new(),
            text: String::new(),
            finished: false,
            answer_tokens: None,
            prompt_tokens: None,
        }
    }

    /// Takes a chunk; hands back the complete lines to pass on (a line's start is held until its
    /// end arrives), stopping at an upstream error line.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Fed {
        let mut buffer = std::mem::take(&mut self.partial_line);
        buffer.extend_from_slice(chunk);
        let mut pass = Vec::with_capacity(buffer.len());
        let mut consumed = 0;
        while let Some(end) = memchr::memchr(b'\n', &buffer[consumed..]) {
            let line = &buffer[consumed..consumed + end + 1];
            consumed += end + 1;
            if let Some(message) = self.read_line(line) {
                return Fed { pass: Bytes::from(pass), error: Some(message) };
            }
            pass.extend_from_slice(line);
        }
        buffer.drain(..consumed);
        self.partial_line = buffer;
        Fed { pass: Bytes::from(pass), error: None }
    }

    /// The held start of an unfinished line, at the end of a stream that ended cleanly.
    pub(crate) fn rest(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.partial_line))
    }

    /// Notes what a line says; returns the error message of an error line.
    fn read_line(&mut self, line: &[u8]) -> Option<String> {
        let json = match self.framing {
            TapFraming::NdJson => line,
            TapFraming::Sse => {
                let data = line.strip_prefix(b"data:")?;
                let data = data.trim_ascii();
                if data == b"[DONE]" {
                    self.finished = true;
                    return None;
                }
                data
            }
        };
        let value: Value = serde_json::from_slice(json).ok()?;
        if let Some(error) = value.get("error") {
            let message = error.get("message").unwrap_or(error);
            return Some(message.as_str().map_or_else(|| message.to_string(), str::to_owned));
        }
        if let Some(tokens) = crate::answer::answer_tokens(&value) {
            self.answer_tokens = Some(tokens);
        }
        if let Some(tokens) = crate::answer::prompt_tokens(&value) {
            self.prompt_tokens = Some(tokens);
        }
        let content = match self.framing {
            TapFraming::NdJson => {
                if value.get("done").and_then(Value::as_bool) == Some(true) {
                    self.finished = true;
                }
                value.pointer("/message/content")
            }
            TapFraming::Sse => value.pointer("/choices/0/delta/content"),
        };
        if let Some(content) = content.and_then(Value::as_str) {
            self.text.push_str(content);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_are_read_whole_and_error_lines_stop() {
        let mut tap = Tap::new(TapFraming::NdJson);
        let fed = tap.feed(br#"{"message":{"content":"Hel"},"done":false}"#);
        assert!(fed.pass.is_empty(), "half a line is held");
        let fed = tap.feed(b"\n{\"message\":{\"content\":\"lo\"},\"done\":false}\n{\"err");
        assert_eq!(fed.pass.iter().filter(|b| **b == b'\n').count(), 2);
        assert_eq!(tap.text, "Hello");
        let fed = tap.feed(b"or\":\"boom\"}\n{\"message\":{}}\n");
        assert!(fed.pass.is_empty());
        assert_eq!(fed.error.as_deref(), Some("boom"));
        assert!(!tap.finished);
    }

    #[test]
    fn sse_text_and_done() {
        let mut tap = Tap::new(TapFraming::Sse);
        let fed = tap.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n");
        assert_eq!(&fed.pass[..], b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n");
        assert_eq!(tap.text, "Hi");
        assert!(tap.finished);
        let mut tap = Tap::new(TapFraming::Sse);
        let fed = tap.feed(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n");
        assert_eq!(fed.error.as_deref(), Some("overloaded"));
    }

    #[test]
    fn continuation_appends_the_partial_answer() {
        let body = continuation_body(
            br#"{"model":"m","messages":[{"role":"user","content":"q"}],"stream":true}"#,
            "Once upon",
        )
        .unwrap();
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["messages"][1], json!({"role": "assistant", "content": "Once upon"}));
        assert_eq!(value["stream"], true);
        let same = continuation_body(br#"{"model":"m","messages":[]}"#, "").unwrap();
        assert_eq!(&same[..], br#"{"model":"m","messages":[]}"#);
    }
}
