//! Request heads as clients send them, and the body a request hands to the service: fed by the
//! connection from its socket as the service reads it.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use keel_upstream::{Decoded, Decoder, Framing};
use parking_lot::Mutex;

/// Most header fields read in one request head; more is a 431.
const MAX_HEADERS: usize = 128;

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    /// Not HTTP/1.x as keel reads it (a 400).
    #[error("{0}")]
    Malformed(&'static str),
    /// Too many header fields, or a head too long (a 431).
    #[error("the request head is too large: at most {MAX_HEADERS} header fields and 256 KiB")]
    TooLarge,
    /// An `Expect` other than `100-continue` (a 417).
    #[error("only `Expect: 100-continue` is understood")]
    UnknownExpectation,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// How many bytes of the buffer the head took.
    pub(crate) length: usize,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    /// How the body is framed.
    pub(crate) framing: Framing,
    /// The client allows another request on this connection after this one.
    pub(crate) keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub(crate) expects_continue: bool,
}

/// The request head at the start of `bytes`; `None` until all of it has arrived.
pub(crate) fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    // (Uninitialised: zeroing 128 fields per request cost more than parsing a usual head.)
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let length = match request.parse_with_uninit_headers(bytes, &mut fields) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("the request is not HTTP/1.1")),
    };
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("the request method is not valid"))?;
    // The target and the header values are slices of one copy of the head: one allocation per
    // request instead of one per value.
    let copy = Bytes::copy_from_slice(&bytes[..length]);
    let shared = |part: &[u8]| {
        let start = offset(&bytes[..length], part);
        copy.slice(start..(start + part.len()).min(copy.len()))
    };
    let uri = Uri::from_maybe_shared(shared(request.path.unwrap_or_default().as_bytes()))
        .map_err(|_| HeadError::Malformed("the request target is not a valid URI"))?;
    let version = if request.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError::Malformed("a header name is not valid"))?;
        let value = HeaderValue::from_maybe_shared(shared(field.value))
            .map_err(|_| HeadError::Malformed("a header value is not valid"))?;
        headers.append(name, value);
    }
    let framing = framing(&headers)?;
    let expects_continue = expects_continue(&headers, version)?;
    let mut keep_alive = keeps_alive(version, &headers);
    // Both framings: chunked wins, the length goes, and the connection closes after the answer
    // (RFC 9112 §6.3: such a message may be a smuggling attempt).
    if framing == Framing::Chunked && headers.remove(CONTENT_LENGTH).is_some() {
        keep_alive = false;
    }
    Ok(Some(RequestHead { length, method, uri, version, headers, framing, keep_alive, expects_continue }))
}

/// Where `part` (a slice of `whole`, as httparse gives them) starts in `whole`.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize).min(whole.len())
}

/// How the request's body is framed: chunked when its last transfer coding says so, else its
/// `Content-Length`, else none.
fn framing(headers: &HeaderMap) -> Result<Framing, HeadError> {
    let codings: Vec<&[u8]> = headers.get_all(TRANSFER_ENCODING).iter().map(HeaderValue::as_bytes).collect();
    if let Some(last) = codings.last() {
        let last = last.rsplit(|b| *b == b',').next().unwrap_or_default().trim_ascii();
        if !last.eq_ignore_ascii_case(b"chunked") {
            return Err(HeadError::Malformed("a request's transfer-encoding must end in chunked"));
        }
        return Ok(Framing::Chunked);
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = std::str::from_utf8(part.trim_ascii()).unwrap_or_default();
            let n: u64 = part.parse().map_err(|_| HeadError::Malformed("content-length is not a number"))?;
            if length.is_some_and(|seen| seen != n) {
                return Err(HeadError::Malformed("the request has two different content-lengths"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Empty, Framing::Length))
}

/// Whether the client waits for `100 Continue` (HTTP/1.1 only; HTTP/1.0 clients do not wait).
fn expects_continue(headers: &HeaderMap, version: Version) -> Result<bool, HeadError> {
    let Some(expect) = headers.get(EXPECT) else { return Ok(false) };
    if !expect.as_bytes().trim_ascii().eq_ignore_ascii_case(b"100-continue") {
        return Err(HeadError::UnknownExpectation);
    }
    Ok(version == Version::HTTP_11)
}

/// Whether the client keeps the connection open after this request: HTTP/1.1 unless it says
/// `close`, HTTP/1.0 only when it says `keep-alive`.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    if version == Version::HTTP_10 {
        connection_says(headers, b"keep-alive")
    } else {
        !connection_says(headers, b"close")
    }
}

/// Whether the `Connection` headers of a request or an answer list `token`.
pub(super) fn connection_says(headers: &HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|value| value.as_bytes().split(|b| *b == b',').any(|part| part.trim_ascii().eq_ignore_ascii_case(token)))
}

/// A request body could not be read from the client.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body from the client failed: {0}")]
pub(crate) struct BodyReadError(pub(crate) String);

/// What the connection and a request's body share: the next piece of body, and who waits.
#[derive(Default)]
struct Slot {
    /// Data handed over and not yet taken.
    data: Option<Bytes>,
    /// The end, once the connection has read it (or failed to).
    end: Option<Result<(), BodyReadError>>,
    /// The body wants more and the slot is empty.
    wanted: bool,
    /// The body was dropped: nobody will read the rest.
    abandoned: bool,
    /// The task reading the body.
    reader: Option<Waker>,
    /// The task feeding it (the connection's).
    feeder: Option<Waker>,
}

/// A request's body as the service reads it.
pub(crate) struct RequestBody {
    /// `None` once the end was read (or for a request without a body).
    slot: Option<Arc<Mutex<Slot>>>,
    /// Bytes still to come, when the request said how many.
    remaining: Option<u64>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyReadError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        let this = self.get_mut();
        let Some(shared) = &this.slot else { return Poll::Ready(None) };
        let mut slot = shared.lock();
        if let Some(data) = slot.data.take() {
            if let Some(remaining) = &mut this.remaining {
                *remaining = remaining.saturating_sub(data.len() as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match slot.end.take() {
            Some(end) => {
                drop(slot);
                this.slot = None;
                Poll::Ready(end.err().map(Err))
            }
            None => {
                slot.wanted = true;
                if !slot.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    slot.reader = Some(cx.waker().clone());
                }
                if let Some(feeder) = slot.feeder.take() {
                    feeder.wake();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(shared) = self.slot.take() {
            let mut slot = shared.lock();
            slot.abandoned = true;
            if let Some(feeder) = slot.feeder.take() {
                feeder.wake();
            }
        }
    }
}

/// Where feeding a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feeding {
    /// More is to be read from the client when the body wants it.
    Open,
    /// All of it was read (and handed over, or is waiting in the slot).
    Complete,
    /// The client sent something unreadable or left: the connection cannot be reused.
    Failed,
    /// The service dropped the body before its end: the rest is unread.
    Abandoned,
}

/// The connection's side of a request body.
pub(crate) struct Feeder {
    slot: Arc<Mutex<Slot>>,
    pub(crate) decoder: Decoder,
    pub(crate) state: Feeding,
    /// `100 Continue` is owed before the first read; how much of it was written.
    pub(crate) continue_owed: Option<usize>,
}

impl Feeder {
    /// A request's body and the connection's side of it. A body that is already all in
    /// `buffer` (the usual small request) is handed over whole at once.
    pub(crate) fn new(framing: Framing, expects_continue: bool, buffer: &mut BytesMut) -> (RequestBody, Feeder) {
        let remaining = match framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose => None,
        };
        let mut decoder = Decoder::new(framing);
        let mut slot = Slot::default();
        let mut state = Feeding::Open;
        if decoder.is_done() {
            slot.end = Some(Ok(()));
            state = Feeding::Complete;
        } else if matches!(framing, Framing::Length(n) if n <= buffer.len() as u64)
            && let Ok(Decoded::Data(data)) = decoder.decode(buffer)
        {
            slot.data = Some(data);
            slot.end = Some(Ok(()));
            state = Feeding::Complete;
        }
        let continue_owed = (expects_continue && state == Feeding::Open).then_some(0);
        let slot = Arc::new(Mutex::new(slot));
        let body = RequestBody { slot: Some(Arc::clone(&slot)), remaining };
        (body, Feeder { slot, decoder, state, continue_owed })
    }

    /// Whether the body waits for more now; if not, registers `cx` to be woken when it does.
    /// Notices a dropped body. (`false` too once feeding is over.)
    pub(crate) fn poll_wants_more(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state != Feeding::Open {
            return false;
        }
        let mut slot = self.slot.lock();
        if slot.abandoned {
            self.state = Feeding::Abandoned;
            return false;
        }
        if slot.wanted && slot.data.is_none() {
            return true;
        }
        if !slot.feeder.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.feeder = Some(cx.waker().clone());
        }
        false
    }

    /// Hands the next piece of body (or its end) to the body and wakes its reader.
    pub(crate) fn deliver(&mut self, piece: Result<Decoded, String>) {
        let mut slot = self.slot.lock();
        match piece {
            Ok(Decoded::Data(data)) => slot.data = Some(data),
            Ok(Decoded::End) => {
                slot.end = Some(Ok(()));
                self.state = Feeding::Complete;
            }
            Ok(Decoded::NeedMore) => return,
            Err(message) => {
                slot.end = Some(Err(BodyReadError(message)));
                self.state = Feeding::Failed;
            }
        }
        slot.wanted = false;
        if let Some(reader) = slot.reader.take() {
            reader.wake();
        }
    }

    /// Whether the body has been read, or the rest of it is already in `buffer`.
    pub(crate) fn can_finish(&self, buffer: &BytesMut) -> bool {
        self.state == Feeding::Complete
            || (self.state != Feeding::Failed
                && self.decoder.remaining().is_some_and(|left| left <= buffer.len() as u64))
    }

    /// After the answer: whether the whole body was read, so the connection can take another
    /// request. A body whose rest is already in `buffer` is skipped over.
    pub(crate) fn finish(&mut self, buffer: &mut BytesMut) -> bool {
        if matches!(self.state, Feeding::Open | Feeding::Abandoned)
            && self.decoder.remaining().is_some_and(|left| left <= buffer.len() as u64)
        {
            while let Ok(Decoded::Data(_)) = self.decoder.decode(buffer) {}
            return self.decoder.is_done();
        }
        self.state == Feeding::Complete
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

    use proptest::prelude::*;

    use super::*;

    fn head(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse(text.as_bytes())
    }

    #[test]
    fn heads_give_method_target_headers_framing_and_keep_alive() {
        let h = head("POST /api/chat?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody")
            .unwrap()
            .unwrap();
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.path(), "/api/chat");
        assert_eq!(h.uri.query(), Some("x=1"));
        assert_eq!(h.framing, Framing::Length(12));
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert!(h.keep_alive);
        assert_eq!(
            h.length,
            "POST /api/chat?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nX-A: 1\r\nX-A: 2\r\n\r\n".len()
        );

        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.framing, Framing::Empty);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h =
            head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.headers.contains_key(CONTENT_LENGTH) && !h.keep_alive);
        let h = head("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n").unwrap().unwrap();
        assert!(h.expects_continue);
    }

    #[test]
    fn partial_and_refused_heads() {
        assert!(head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert!(head("").unwrap().is_none());
        assert!(matches!(head("GET / HTTP/2\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert!(matches!(head("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert!(matches!(
            head("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), Err(HeadError::Malformed(_))));
        assert_eq!(head("POST / HTTP/1.1\r\nExpect: tea\r\n\r\n").unwrap_err(), HeadError::UnknownExpectation);
        let many: String = (0..200).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(), HeadError::TooLarge);
    }

    proptest! {
        /// No input panics, and a head that parses parses the same from any longer prefix.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn a_body_all_in_the_buffer_is_handed_over_at_once() {
        let mut buffer = BytesMut::from(&b"hello, next"[..]);
        let (mut body, feeder) = Feeder::new(Framing::Length(5), false, &mut buffer);
        assert_eq!(feeder.state, Feeding::Complete);
        assert_eq!(&buffer[..], b", next");
        assert_eq!(body.size_hint().exact(), Some(5));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let Poll::Ready(Some(Ok(frame))) = std::pin::Pin::new(&mut body).poll_frame(&mut cx) else { panic!() };
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(matches!(std::pin::Pin::new(&mut body).poll_frame(&mut cx), Poll::Ready(None)));
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_body_fed_piece_by_piece_wakes_its_reader_and_a_dropped_one_is_noticed() {
        let mut buffer = BytesMut::new();
        let (mut body, mut feeder) = Feeder::new(Framing::Chunked, true, &mut buffer);
        assert_eq!(feeder.continue_owed, Some(0));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(!feeder.poll_wants_more(&mut cx));
        assert!(std::pin::Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert!(feeder.poll_wants_more(&mut cx));
        feeder.deliver(Ok(Decoded::Data(Bytes::from_static(b"ab"))));
        let Poll::Ready(Some(Ok(frame))) = std::pin::Pin::new(&mut body).poll_frame(&mut cx) else { panic!() };
        assert_eq!(frame.into_data().unwrap(), "ab");
        drop(body);
        assert!(!feeder.poll_wants_more(&mut cx));
        assert_eq!(feeder.state, Feeding::Abandoned);
        assert!(!feeder.finish(&mut buffer));
    }
}
