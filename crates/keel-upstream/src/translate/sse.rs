//! Server-sent events, both ways: [`SseReader`] splits a byte stream into events incrementally
//! (any split of the input gives the same events), [`write_event`] writes one.
//!
//! Follows the WHATWG "event stream interpretation": lines end in `\n`, `\r\n` or `\r`; a blank
//! line dispatches the event; `data:` lines are joined with `\n`; `:` starts a comment; one space
//! after the colon is dropped.

use std::mem;

use bytes::{BufMut, Bytes, BytesMut};

/// The largest event (or unterminated line, or tool-call argument text a translation assembles)
/// accepted; a stream exceeding it fails instead of growing memory without bound.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field (`None`: the default "message").
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An event or line over [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event in the upstream's stream is larger than {} MiB", MAX_EVENT_BYTES >> 20)]
pub struct EventTooLarge;

/// Splits bytes into server-sent events as they arrive.
#[derive(Debug, Default)]
pub struct SseReader {
    line: Vec<u8>,
    after_cr: bool,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseReader {
    /// A reader at the start of a stream.
    pub fn new() -> SseReader {
        SseReader::default()
    }

    /// Feeds bytes; appends the events they complete to `events`.
    pub fn push(&mut self, bytes: &[u8], events: &mut Vec<SseEvent>) -> Result<(), EventTooLarge> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if mem::take(&mut self.after_cr) && rest[0] == b'\n' {
                rest = &rest[1..];
                continue;
            }
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(end) => {
                    if self.line.is_empty() {
                        self.line_done(&rest[..end], events);
                    } else {
                        let mut line = mem::take(&mut self.line);
                        line.extend_from_slice(&rest[..end]);
                        self.line_done(&line, events);
                    }
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                }
            }
            if self.line.len().saturating_add(self.data.len()) > MAX_EVENT_BYTES {
                return Err(EventTooLarge);
            }
        }
        Ok(())
    }

    /// At the end of the stream: the last event when it had data but no blank line after it.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let line = mem::take(&mut self.line);
            let mut events = Vec::new();
            self.line_done(&line, &mut events);
            if let Some(event) = events.pop() {
                return Some(event);
            }
        }
        self.dispatch()
    }

    fn line_done(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            events.extend(self.dispatch());
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !mem::take(&mut self.has_data) {
            return None;
        }
        let data = String::from_utf8_lossy(&mem::take(&mut self.data)).into_owned();
        Some(SseEvent { event, data })
    }
}

/// A stream translation driven by the events of an upstream's SSE stream: the one loop that feeds
/// bytes to its [`SseReader`] and its events to the translation while the stream is open.
pub(crate) trait EventDriven {
    /// The translation's reader.
    fn reader(&mut self) -> &mut SseReader;
    /// Whether the stream is still open (no final or error event written yet).
    fn streaming(&self) -> bool;
    /// Translates one event, appending what it produces to `out`.
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<Bytes>);
    /// Ends the stream because an event was larger than [`MAX_EVENT_BYTES`].
    fn too_large(&mut self, out: &mut Vec<Bytes>, error: EventTooLarge);

    /// Feeds raw upstream bytes; returns what the events they complete produced. Nothing after
    /// the stream is over.
    fn push_events(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !self.streaming() {
            return out;
        }
        let mut events = Vec::new();
        let read = self.reader().push(bytes, &mut events);
        for event in &events {
            if !self.streaming() {
                break;
            }
            self.on_event(event, &mut out);
        }
        if let Err(error) = read
            && self.streaming()
        {
            self.too_large(&mut out, error);
        }
        out
    }
}

/// One event as bytes: `event: NAME\n` (when named), `data: …` per line of `data`, a blank line.
pub fn write_event(event: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    if let Some(name) = event {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn read_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut reader = SseReader::new();
        let mut events = Vec::new();
        for chunk in chunks {
            reader.push(chunk, &mut events).unwrap();
        }
        events.extend(reader.finish());
        events
    }

    #[test]
    fn named_events_comments_and_joined_data() {
        let events =
            read_all(&[b": ping\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\ndata:x\ndata: y\n\ndata: last"]);
        assert_eq!(
            events,
            vec![
                SseEvent { event: Some("message_start".into()), data: "{\"a\":1}".into() },
                SseEvent { event: None, data: "x\ny".into() },
                SseEvent { event: None, data: "last".into() },
            ]
        );
        assert_eq!(read_all(&[b"event: only\n\n"]), vec![]);
    }

    #[test]
    fn written_events_read_back() {
        let bytes = write_event(Some("content_block_delta"), "{\"t\":\"a\"}");
        assert_eq!(&bytes[..], b"event: content_block_delta\ndata: {\"t\":\"a\"}\n\n");
        assert_eq!(read_all(&[&bytes])[0].data, "{\"t\":\"a\"}");
    }

    #[test]
    fn oversize_lines_fail() {
        let mut reader = SseReader::new();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert_eq!(reader.push(&big, &mut Vec::new()), Err(EventTooLarge));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(text in "(event: [a-z_]{1,8}\r?\n|data: [a-z{}\":]{0,12}\r?\n|: c\n|\r?\n){0,24}", cut in any::<prop::sample::Index>()) {
            let bytes = text.as_bytes();
            let at = cut.index(bytes.len() + 1);
            prop_assert_eq!(read_all(&[bytes]), read_all(&[&bytes[..at], &bytes[at..]]));
            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(read_all(&[bytes]), read_all(&bytewise));
        }
    }
}
