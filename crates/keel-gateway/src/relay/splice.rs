//! Splicing a continuation's stream into the stream it continues, so that the client sees one
//! answer. Anthropic: the continuation's `message_start` (and `ping`s) are dropped, its first text
//! block writes into the text block the broken stream left open, and its other blocks are
//! numbered after the blocks already sent. `message_delta` and `message_stop` end the message.
//! OpenAI Responses: see [`responses`].

use bytes::{Bytes, BytesMut};
use keel_upstream::translate::sse::{SseEvent, SseReader, write_event};
use serde_json::Value;

use super::tap::{Blocks, ResponseSeen};

mod responses;

/// Renumbers and filters a continuation's events, incrementally.
pub(crate) struct Splice {
    reader: SseReader,
    kind: Kind,
}

/// Which API's stream is spliced, and what the splice knows of the stream it continues.
enum Kind {
    /// Anthropic Messages, after a stream that reached these blocks.
    Messages(Blocks),
    /// OpenAI Responses.
    Responses(responses::Continued),
}

impl Splice {
    /// A splice of Anthropic events after a stream that reached `blocks`.
    pub(crate) fn messages(blocks: Blocks) -> Splice {
        Splice { reader: SseReader::new(), kind: Kind::Messages(blocks) }
    }

    /// A splice of Responses events after a stream that sent `seen`.
    pub(crate) fn responses(seen: ResponseSeen) -> Splice {
        Splice { reader: SseReader::new(), kind: Kind::Responses(responses::Continued::new(seen)) }
    }

    /// The continuation's next bytes; the events to pass on.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Bytes {
        let mut events = Vec::new();
        // An oversize event ends the splice's output; the relay's own limits end the stream.
        let _ = self.reader.push(chunk, &mut events);
        self.write(events)
    }

    /// The end of the continuation: its last event, if it had no blank line after it.
    pub(crate) fn finish(&mut self) -> Bytes {
        let last = self.reader.finish().into_iter().collect();
        self.write(last)
    }

    fn write(&mut self, events: Vec<SseEvent>) -> Bytes {
        let mut out = BytesMut::new();
        for event in events {
            if let Some(bytes) = self.map(event) {
                out.extend_from_slice(&bytes);
            }
        }
        out.freeze()
    }

    /// One event as the client gets it, or `None` when it is dropped.
    fn map(&mut self, event: SseEvent) -> Option<Bytes> {
        let Ok(mut value) = serde_json::from_str::<Value>(&event.data) else {
            return Some(write_event(event.event.as_deref(), &event.data));
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        let keep = match &mut self.kind {
            Kind::Messages(blocks) => map_message_event(*blocks, &kind, &mut value),
            Kind::Responses(continued) => continued.map(&kind, &mut value),
        };
        keep.then(|| write_event(event.event.as_deref().or(Some(kind.as_str())), &value.to_string()))
    }
}

/// Fits one Anthropic event of kind `kind` after `blocks` (its block renumbered); `false` when
/// it is dropped.
fn map_message_event(blocks: Blocks, kind: &str, value: &mut Value) -> bool {
    match kind {
        "message_start" | "ping" => return false,
        "content_block_start" | "content_block_delta" | "content_block_stop" => {
            let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
            let continues_text = blocks.open_text.is_some() && index == 0;
            let is_text = value.pointer("/content_block/type").and_then(Value::as_str) == Some("text");
            if kind == "content_block_start" && continues_text && is_text {
                return false;
            }
            let base = blocks.open_text.unwrap_or(blocks.next);
            if let Some(object) = value.as_object_mut() {
                object.insert("index".into(), Value::from(base + index));
            }
        }
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn event(name: &str, data: &str) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn continuation() -> String {
        [
            event("message_start", r#"{"type":"message_start","message":{"id":"msg_2"}}"#),
            event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            event("ping", r#"{"type":"ping"}"#),
            event(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" time"}}"#,
            ),
            event("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            event("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#),
            event("message_stop", r#"{"type":"message_stop"}"#),
        ]
        .concat()
    }

    fn spliced(blocks: Blocks, input: &str) -> Vec<Value> {
        parsed(&run(Splice::messages(blocks), input, 1))
    }

    /// The splice's output for `input` fed in pieces of `size` bytes.
    pub(super) fn run(mut splice: Splice, input: &str, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(size) {
            out.extend_from_slice(&splice.feed(piece));
        }
        out.extend_from_slice(&splice.finish());
        out
    }

    /// The data of the events in `out`.
    pub(super) fn parsed(out: &[u8]) -> Vec<Value> {
        let mut events = Vec::new();
        SseReader::new().push(out, &mut events).unwrap();
        events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect()
    }

    #[test]
    fn the_first_text_block_continues_the_open_one() {
        let events = spliced(Blocks { open_text: Some(2), next: 3 }, &continuation());
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(events[0]["index"], 2);
        assert_eq!(events[0]["delta"]["text"], " time");
        assert_eq!(events[1]["index"], 2);
    }

    #[test]
    fn after_closed_blocks_new_blocks_are_numbered_on() {
        let events = spliced(Blocks { open_text: None, next: 2 }, &continuation());
        assert_eq!(events[0]["type"], "content_block_start");
        assert!(events.iter().filter(|e| e.get("index").is_some()).all(|e| e["index"] == 2));
    }
}
