//! keel's own HTTP/1.1 client connection to a model server.
//!
//! One [`Connection`] is a socket (TCP, or TLS over it) and the bytes read from it and not yet
//! used. A request is written whole and its response head read in the caller's task; the body is
//! then read by whoever polls the [`ResponseBody`](crate::ResponseBody) that owns the connection.
//! There is no task per connection and no channel between the caller and the socket: an idle
//! connection is a socket and an empty buffer, and a streamed answer costs its socket and the
//! few hundred bytes of its latest chunk. (hyper's client kept a task, a request channel and two
//! 8 KiB buffers per connection: about half of keel's memory per stream.)
//!
//! What it does not do, because model servers do not need it: pipelining, `Expect: 100-continue`,
//! protocol upgrades. Informational (1xx) answers are skipped.

pub(crate) mod decode;
mod head;
mod reads;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::client::RequestBody;
pub(crate) use decode::{Decoded, Decoder};
use head::{BodyLength, ResponseHead};
pub use reads::GrowingReads;
use reads::MAX_READ;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What went wrong talking HTTP/1.1 to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before a response head arrived.
    #[error("the connection closed before a response arrived")]
    ClosedBeforeHead,
    /// The server closed the connection before the body's announced end.
    #[error("the connection closed before the end of the answer")]
    IncompleteBody,
    /// The server sent something that is not HTTP/1.1 as keel reads it.
    #[error("the server's answer is not valid HTTP/1.1: {0}")]
    Protocol(&'static str),
    /// The request body failed while it was being sent.
    #[error("the request body failed: {0}")]
    RequestBody(crate::client::BoxError),
}

/// The socket under a connection.
pub(crate) enum Transport {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One open HTTP/1.1 connection to an upstream.
pub(crate) struct Connection {
    io: Transport,
    /// Bytes read and not yet used: the rest of a head, or body bytes not yet decoded.
    buffer: BytesMut,
    /// How much the next read reserves.
    reads: GrowingReads,
}

/// An answer's head, and how to read its body.
pub(crate) struct Answer {
    pub(crate) response: http::Response<()>,
    pub(crate) decoder: Decoder,
    pub(crate) keep_alive: bool,
}

/// How far a request got before it failed: only a request that never left keel may go to
/// another connection.
#[derive(Debug)]
pub(crate) struct SendFailure {
    pub(crate) error: HttpError,
    /// Nothing of the request reached the socket, and its body is here again.
    pub(crate) unsent: Option<RequestBody>,
}

impl SendFailure {
    /// A failure after which the request goes nowhere else: some of it may have reached the
    /// server, or its body failed.
    fn for_good(error: impl Into<HttpError>) -> SendFailure {
        SendFailure { error: error.into(), unsent: None }
    }
}

impl Connection {
    /// A connection over an open socket.
    pub(crate) fn new(io: Transport) -> Connection {
        Connection { io, buffer: BytesMut::new(), reads: GrowingReads::default() }
    }

    /// Whether an idle connection is still usable: the server has not closed it, and sent
    /// nothing unasked. Never waits.
    pub(crate) fn is_open(&mut self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut probe), Poll::Pending)
    }

    /// Sends a request and reads its response head. `headers` are sent as they are (the caller
    /// set `Host`); the body's length is said from its size (`Content-Length`, or chunked).
    pub(crate) async fn send(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        mut body: RequestBody,
    ) -> Result<Answer, SendFailure> {
        let length = body.size_hint().exact().map_or(BodyLength::Chunked, BodyLength::Known);
        let mut out = Vec::with_capacity(256);
        head::write_request(&mut out, method, target, headers, length);
        // A body that is one piece of known length (the usual case) goes out with the head in
        // one write; if that write fails at once, the request can still go elsewhere.
        let whole = match length {
            BodyLength::Known(n) if n <= MAX_READ as u64 => Some(one_piece(&mut body).await?),
            _ => None,
        };
        if let Some(data) = &whole {
            out.extend_from_slice(data);
        }
        if let Err(error) = self.io.write_all(&out).await {
            let unsent = whole.map(crate::client::full_body);
            return Err(SendFailure { error: error.into(), unsent });
        }
        drop(out);
        if whole.is_none() {
            self.write_body(body, length).await.map_err(SendFailure::for_good)?;
        }
        self.io.flush().await.map_err(SendFailure::for_good)?;
        self.read_head(method).await.map_err(SendFailure::for_good)
    }

    /// Writes a body of several pieces (or of unknown length, chunked) as it comes.
    async fn write_body(&mut self, mut body: RequestBody, length: BodyLength) -> Result<(), HttpError> {
        let chunked = length == BodyLength::Chunked;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(HttpError::RequestBody)?;
            let Ok(mut data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            if chunked {
                self.io.write_all(format!("{:x}\r\n", data.len()).as_bytes()).await?;
                self.io.write_all_buf(&mut data).await?;
                self.io.write_all(b"\r\n").await?;
            } else {
                self.io.write_all_buf(&mut data).await?;
            }
        }
        if chunked {
            self.io.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    /// Reads until a final (non-1xx) response head has arrived.
    async fn read_head(&mut self, method: &Method) -> Result<Answer, HttpError> {
        loop {
            if let Some(head) = take_final_head(&mut self.buffer, method)? {
                return Ok(answer(head));
            }
            if std::future::poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return Err(HttpError::ClosedBeforeHead);
            }
        }
    }

    /// Reads more bytes into the buffer: how many (0 when the server closed the connection).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.reads.poll_fill(&mut self.io, cx, &mut self.buffer)
    }

    /// The next piece of the body `decoder` reads: data, or `None` at its end.
    pub(crate) fn poll_body(
        &mut self,
        decoder: &mut Decoder,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, HttpError>>> {
        loop {
            match decoder.decode(&mut self.buffer) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    if let Err(error) = decoder.eof() {
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
            }
        }
    }
}

/// The final (non-1xx) response head at the start of `buffer`, taken off it together with the
/// informational heads before it; `None` until it has arrived. A switch of protocols, or a head
/// over [`MAX_HEAD`], is an error.
fn take_final_head(buffer: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, HttpError> {
    while let Some(head) = head::parse_response(buffer, method)? {
        buffer.advance(head.length);
        if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(HttpError::Protocol("the server switched protocols"));
        }
        if !head.status.is_informational() {
            return Ok(Some(head));
        }
    }
    if buffer.len() >= MAX_HEAD {
        return Err(HttpError::Protocol("the response head is over 64 KiB"));
    }
    Ok(None)
}

/// A response's head and its whole decoded body.
pub type WholeResponse = (http::Response<()>, Vec<u8>);

/// Reads a whole HTTP/1.1 response to a `method` request from `bytes` fed in pieces of `step`
/// bytes, as a connection would: the final head and the decoded body, `None` when the bytes end
/// before the answer does. For tests and fuzzing of the parsers; keel reads sockets with
/// [`Connection`].
pub fn read_response(bytes: &[u8], method: &Method, step: usize) -> Result<Option<WholeResponse>, HttpError> {
    let mut buffer = BytesMut::new();
    let mut pieces = bytes.chunks(step.max(1));
    let head = loop {
        if let Some(head) = take_final_head(&mut buffer, method)? {
            break head;
        }
        let Some(piece) = pieces.next() else { return Ok(None) };
        buffer.extend_from_slice(piece);
    };
    let Answer { response, mut decoder, .. } = answer(head);
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buffer)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::End => return Ok(Some((response, body))),
            Decoded::NeedMore => match pieces.next() {
                Some(piece) => buffer.extend_from_slice(piece),
                None => {
                    decoder.eof()?;
                }
            },
        }
    }
}

/// The whole of a short body of known length: its data (not copied when it is one piece, as
/// keel's own bodies are), or the body's failure.
async fn one_piece(body: &mut RequestBody) -> Result<Bytes, SendFailure> {
    let mut pieces = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| SendFailure::for_good(HttpError::RequestBody(error)))?;
        if let Ok(data) = frame.into_data() {
            pieces.push(data);
        }
    }
    Ok(match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.swap_remove(0),
        _ => pieces.concat().into(),
    })
}

/// The answer a response head begins.
fn answer(head: ResponseHead) -> Answer {
    let mut response = http::Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    Answer { response, decoder: Decoder::new(head.framing), keep_alive: head.keep_alive }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

    use super::*;

    #[test]
    fn whole_responses_read_the_same_in_any_pieces() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for step in [1, 2, 7, bytes.len()] {
            let (head, body) = read_response(bytes, &Method::POST, step).unwrap().unwrap();
            assert_eq!((head.status(), body.as_slice()), (http::StatusCode::OK, &b"abcde"[..]));
        }
        let cut = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";
        assert!(matches!(read_response(cut, &Method::POST, 4), Err(HttpError::IncompleteBody)));
        let until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert_eq!(read_response(until_close, &Method::POST, 3).unwrap().unwrap().1, b"all of it");
        assert!(read_response(b"HTTP/1.1 200 OK\r\n", &Method::POST, 3).unwrap().is_none());
    }

    #[test]
    fn a_switch_of_protocols_or_an_endless_head_is_refused() {
        let switched = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
        assert!(matches!(read_response(switched, &Method::GET, 5), Err(HttpError::Protocol(_))));
        let endless = format!("HTTP/1.1 200 OK\r\nx-long: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(read_response(endless.as_bytes(), &Method::GET, 4096), Err(HttpError::Protocol(_))));
    }
}
