//! Answers as HTTP/1.1 sends them: the head (status line, headers, `date`, framing, `connection`)
//! and the body's bytes, gathered so that a small answer leaves in one write.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{StatusCode, Version};
use tokio::io::AsyncWrite;

/// Data pieces at least this long are written from where they are instead of being copied.
const COPY_BELOW: usize = 4096;
/// Pieces that are ready together are gathered up to this much before a write.
pub(super) const GATHER: usize = 16 * 1024;

/// How an answer's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`HEAD`, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks, ended by a zero-size one.
    Chunked,
    /// Bytes until the connection closes (HTTP/1.0 clients, length unknown).
    UntilClose,
}

/// An answer whose head is written (into the pending bytes) and whose body is being sent.
pub(super) struct Outgoing {
    /// Bytes to write next: the head, chunk lines, small pieces of data.
    out: Vec<u8>,
    written: usize,
    /// A large piece of data to write after `out`, then `tail`.
    large: Option<Bytes>,
    tail: &'static [u8],
    framing: Framing,
    /// Body bytes taken so far.
    sent: u64,
    /// The body has ended (its last bytes may still be pending).
    pub(super) ended: bool,
    /// The connection closes after this answer.
    pub(super) close: bool,
}

/// Why an answer's body could not be sent as its head announced.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyMismatch {
    /// More data than the `content-length` said.
    #[error("the answer's body is longer than its content-length")]
    TooLong,
    /// The body ended before its `content-length`.
    #[error("the answer's body ended before its content-length")]
    TooShort,
}

impl Outgoing {
    /// Starts an answer: its head, framed for `version` (the request's), the body's size hint
    /// (`exact_size`) and whether the request was a `HEAD`; `close` says the connection closes
    /// after it (an answer's own `connection: close` says so too).
    pub(super) fn new(
        parts: &http::response::Parts,
        exact_size: Option<u64>,
        is_head: bool,
        version: Version,
        close: bool,
    ) -> Outgoing {
        let close = close || super::request::connection_says(&parts.headers, b"close");
        let status = parts.status;
        let declared = declared_length(&parts.headers);
        let bodiless =
            status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let framing = match (bodiless, declared.or(exact_size)) {
            (true, _) => Framing::None,
            (false, Some(n)) => Framing::Length(n),
            (false, None) if version == Version::HTTP_10 => Framing::UntilClose,
            (false, None) => Framing::Chunked,
        };
        let close = close || framing == Framing::UntilClose;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(if version == Version::HTTP_10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
                continue;
            }
            header(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
        match framing {
            Framing::Length(n) if !(is_head && declared.is_none() && exact_size == Some(0)) => {
                header(&mut out, b"content-length", itoa::Buffer::new().format(n).as_bytes());
            }
            Framing::Chunked if !is_head => header(&mut out, b"transfer-encoding", b"chunked"),
            _ => {}
        }
        if close {
            header(&mut out, b"connection", b"close");
        } else if version == Version::HTTP_10 {
            header(&mut out, b"connection", b"keep-alive");
        }
        if !parts.headers.contains_key(DATE) {
            with_date(|date| header(&mut out, b"date", date));
        }
        out.extend_from_slice(b"\r\n");
        let framing = if is_head { Framing::None } else { framing };
        Outgoing { out, written: 0, large: None, tail: b"", framing, sent: 0, ended: framing == Framing::None, close }
    }

    /// Whether more body may be taken now (nothing large waits, and not too much gathered).
    pub(super) fn has_room(&self) -> bool {
        !self.ended && self.large.is_none() && self.out.len() < GATHER
    }

    /// Adds a piece of body data.
    pub(super) fn push(&mut self, data: Bytes) -> Result<(), BodyMismatch> {
        if data.is_empty() {
            return Ok(());
        }
        self.sent += data.len() as u64;
        match self.framing {
            Framing::None => return Ok(()),
            Framing::Length(n) if self.sent > n => return Err(BodyMismatch::TooLong),
            Framing::Chunked => {
                let mut size = [0u8; 16];
                let digits = hex(data.len(), &mut size);
                self.out.extend_from_slice(digits);
                self.out.extend_from_slice(b"\r\n");
                self.add(data, b"\r\n");
            }
            Framing::Length(_) | Framing::UntilClose => self.add(data, b""),
        }
        Ok(())
    }

    /// Ends the body.
    pub(super) fn finish(&mut self) -> Result<(), BodyMismatch> {
        match self.framing {
            Framing::Length(n) if self.sent < n => return Err(BodyMismatch::TooShort),
            Framing::Chunked => self.out.extend_from_slice(b"0\r\n\r\n"),
            _ => {}
        }
        self.ended = true;
        Ok(())
    }

    fn add(&mut self, data: Bytes, tail: &'static [u8]) {
        if data.len() < COPY_BELOW {
            self.out.extend_from_slice(&data);
            self.out.extend_from_slice(tail);
        } else {
            self.large = Some(data);
            self.tail = tail;
        }
    }

    /// Whether nothing is waiting to be written.
    pub(super) fn is_flushed(&self) -> bool {
        self.out.is_empty() && self.large.is_none()
    }

    /// Writes what is pending.
    pub(super) fn poll_write<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if let Some(large) = &mut self.large {
            while large.has_remaining() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, large))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                large.advance(n);
            }
            self.large = None;
        }
        while !self.tail.is_empty() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, self.tail))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tail = &self.tail[n..];
        }
        self.out.clear();
        self.written = 0;
        Pin::new(&mut *io).poll_flush(cx)
    }
}

/// The answer's own `content-length`, when it set a valid one.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in lowercase hexadecimal, written at the end of `space`.
fn hex(mut n: usize, space: &mut [u8; 16]) -> &[u8] {
    let mut start = space.len();
    loop {
        start -= 1;
        space[start] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            return &space[start..];
        }
    }
}

/// The current time as an HTTP date, formatted once a second per thread.
fn with_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes());
    });
}

/// A bare answer (no service involved) to a request keel could not read, closing the
/// connection: the status and a JSON body saying what was wrong.
pub(super) fn refusal(status: StatusCode, message: &str) -> Vec<u8> {
    let body = keel_upstream::ErrorBody::new(keel_types::Dialect::Ollama, status, message).body;
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json; charset=utf-8"));
    let (parts, ()) = response.into_parts();
    let mut outgoing = Outgoing::new(&parts, Some(body.len() as u64), false, Version::HTTP_11, true);
    outgoing.out.extend_from_slice(&body);
    outgoing.out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

    use super::*;

    fn head_text(
        response: http::Response<()>,
        size: Option<u64>,
        is_head: bool,
        version: Version,
    ) -> (String, Outgoing) {
        let (parts, ()) = response.into_parts();
        let outgoing = Outgoing::new(&parts, size, is_head, version, false);
        let text = String::from_utf8(outgoing.out.clone()).unwrap();
        let without_date: Vec<&str> = text.split("\r\n").filter(|l| !l.starts_with("date: ")).collect();
        assert!(text.contains("\r\ndate: "), "{text}");
        (without_date.join("\r\n"), outgoing)
    }

    #[test]
    fn heads_say_length_chunks_or_close() {
        let response = http::Response::builder().header("x-a", "1").body(()).unwrap();
        let (text, _) = head_text(response, Some(5), false, Version::HTTP_11);
        assert_eq!(text, "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n");

        let (text, mut out) = head_text(http::Response::new(()), None, false, Version::HTTP_11);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        out.out.clear();
        out.push(Bytes::from_static(b"hello world, hello")).unwrap();
        out.finish().unwrap();
        assert_eq!(out.out, b"12\r\nhello world, hello\r\n0\r\n\r\n");

        let (text, out) = head_text(http::Response::new(()), None, false, Version::HTTP_10);
        assert_eq!(text, "HTTP/1.0 200 OK\r\nconnection: close\r\n\r\n");
        assert!(out.close);

        let response = http::Response::builder().status(204).header("content-length", "0").body(()).unwrap();
        let (text, out) = head_text(response, Some(0), false, Version::HTTP_11);
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
        assert!(out.ended);

        let response = http::Response::builder().header("connection", "close").body(()).unwrap();
        let (text, out) = head_text(response, Some(2), true, Version::HTTP_11);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n");
        assert!(out.close && out.ended);
    }

    #[test]
    fn a_body_must_match_its_length() {
        let (_, mut out) = head_text(http::Response::new(()), Some(3), false, Version::HTTP_11);
        out.push(Bytes::from_static(b"ab")).unwrap();
        assert!(matches!(out.finish(), Err(BodyMismatch::TooShort)));
        assert!(matches!(out.push(Bytes::from_static(b"cd")), Err(BodyMismatch::TooLong)));
    }

    #[test]
    fn hex_sizes() {
        let mut space = [0u8; 16];
        assert_eq!(hex(0, &mut space), b"0");
        assert_eq!(hex(255, &mut space), b"ff");
        assert_eq!(hex(4096, &mut space), b"1000");
    }
}
