//! keel's own HTTP/1.1 server side of a client connection.
//!
//! A connection is its socket and the bytes read from it and not yet used. Requests are read,
//! handed to the service and answered in the connection's own task, one after another
//! (keep-alive; pipelined requests are answered in order). A request's body is read from the
//! socket as the service asks for it (`100 Continue` first when the client waits for it); a body
//! already all read with the head, the usual case, is handed over whole. While the service works
//! and while an answer streams, a client that closes the connection is noticed at once and the
//! answer dropped, which ends the call upstream. Between requests a connection holds no buffer;
//! while an answer streams, only the bytes of its latest pieces. (hyper's server connection kept
//! two 8 KiB buffers per connection, a page of each resident: half of what a stream cost keel.)
//!
//! What it does not do: protocol upgrades (`CONNECT`, WebSocket), HTTP/2, trailers in answers.
//! Header read timeouts, minimum body rates and idle timeouts are the connection watcher's
//! (`connections.rs`), which stops a connection through the stop signal or by dropping it.

mod request;
mod response;

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use http::{Method, StatusCode};
use http_body::Body;
use keel_upstream::{Decoded, GrowingReads};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use request::{Feeder, Feeding, HeadError, RequestHead};
use response::Outgoing;

/// Longest request head read; past it the answer is a 431.
const MAX_HEAD: usize = 256 * 1024;
/// After an answer that leaves a request body unread, how long the connection goes on reading
/// (and dropping) what the client still sends before it closes, so that the client reads the
/// answer instead of a reset.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// ... and how many bytes at most.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// What a stop signal asks of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Close at once, whatever is in flight.
    Now,
    /// Finish the request in hand (if any), then close.
    AfterRequest,
}

/// Why a connection ended other than by the client closing it between requests.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The client sent a request keel cannot read; it was answered with an error and closed.
    #[error("refused a request: {0}")]
    Refused(HeadError),
    /// The client closed the connection before its answer was complete.
    #[error("the client closed the connection before the answer was complete")]
    ClientGone,
    /// The answer's body failed while it was being sent.
    #[error("the answer's body failed: {0}")]
    AnswerBody(axum::Error),
    /// The answer's body did not match the length its head announced.
    #[error(transparent)]
    Mismatch(#[from] response::BodyMismatch),
}

/// The service a connection hands its requests to.
pub(crate) trait Service {
    /// The answer to `request`.
    fn call(
        &self,
        request: http::Request<axum::body::Body>,
    ) -> impl Future<Output = axum::response::Response> + Send + 'static;
}

/// Serves requests on `io` with `service` until the client closes the connection, `stop` says
/// so, or (with `keep_alive` false) after the first answer.
pub(crate) async fn serve<IO, S>(
    io: IO,
    service: &S,
    keep_alive: bool,
    stop: impl Future<Output = Stop>,
) -> Result<(), ConnectionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service,
{
    let stop = std::pin::pin!(stop);
    let mut stop = StopSignal { future: stop, fired: None };
    let mut connection = Connection { io, buffer: BytesMut::new(), reads: GrowingReads::default() };
    loop {
        let head = match connection.read_head(&mut stop).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(ConnectionError::Refused(error)) => return connection.refuse(error).await,
            Err(error) => return Err(error),
        };
        match connection.exchange(head, service, keep_alive, &mut stop).await? {
            Next::Request => {}
            Next::Close { linger } => {
                connection.close(linger).await;
                return Ok(());
            }
            Next::Drop => return Ok(()),
        }
    }
}

/// The stop signal, polled wherever the connection waits; remembers what it said.
struct StopSignal<'a, F> {
    future: Pin<&'a mut F>,
    fired: Option<Stop>,
}

impl<F: Future<Output = Stop>> StopSignal<'_, F> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Option<Stop> {
        if self.fired.is_none()
            && let Poll::Ready(stop) = self.future.as_mut().poll(cx)
        {
            self.fired = Some(stop);
        }
        self.fired
    }
}

/// What follows an answer.
enum Next {
    /// Read the next request.
    Request,
    /// Close the connection, reading what the client still sends for a moment first when
    /// `linger` (its request body was not read).
    Close { linger: bool },
    /// Drop the connection at once.
    Drop,
}

/// One client connection.
struct Connection<IO> {
    io: IO,
    /// Bytes read and not yet used: the rest of a head, body bytes, a pipelined request.
    buffer: BytesMut,
    /// How much the next read reserves.
    reads: GrowingReads,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// Reads the next request head; `None` when the client closed the connection, or the stop
    /// signal came, between requests.
    async fn read_head<F: Future<Output = Stop>>(
        &mut self,
        stop: &mut StopSignal<'_, F>,
    ) -> Result<Option<RequestHead>, ConnectionError> {
        loop {
            match request::parse(&self.buffer) {
                Ok(Some(head)) => {
                    self.buffer.advance(head.length);
                    return Ok(Some(head));
                }
                Ok(None) if self.buffer.len() > MAX_HEAD => return Err(ConnectionError::Refused(HeadError::TooLarge)),
                Ok(None) => {}
                Err(error) => return Err(ConnectionError::Refused(error)),
            }
            let between_requests = self.buffer.iter().all(|b| b.is_ascii_whitespace());
            let read = poll_fn(|cx| match stop.poll(cx) {
                Some(Stop::Now) => Poll::Ready(None),
                Some(Stop::AfterRequest) if between_requests => Poll::Ready(None),
                _ => self.poll_fill(cx).map(Some),
            })
            .await;
            match read {
                None | Some(Ok(0)) => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
            }
        }
    }

    /// Hands one request to the service and writes its answer.
    async fn exchange<S: Service, F: Future<Output = Stop>>(
        &mut self,
        head: RequestHead,
        service: &S,
        keep_alive: bool,
        stop: &mut StopSignal<'_, F>,
    ) -> Result<Next, ConnectionError> {
        let RequestHead { method, uri, version, headers, framing, keep_alive: client_keeps, expects_continue, .. } =
            head;
        let is_head = method == Method::HEAD;
        let (body, mut feeder) = Feeder::new(framing, expects_continue, &mut self.buffer);
        let mut request = http::Request::new(axum::body::Body::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        // (In a block of its own: the service's future is dropped as soon as it has answered,
        // not held while the answer streams.)
        let answer = {
            let mut call = std::pin::pin!(service.call(request));
            poll_fn(|cx| {
                if stop.poll(cx) == Some(Stop::Now) {
                    return Poll::Ready(None);
                }
                if let Poll::Ready(response) = call.as_mut().poll(cx) {
                    return Poll::Ready(Some(Ok(response)));
                }
                match self.poll_client(cx, &mut feeder) {
                    Ok(()) => Poll::Pending,
                    Err(error) => Poll::Ready(Some(Err(error))),
                }
            })
            .await
        };
        let Some(response) = answer.transpose()? else { return Ok(Next::Drop) };
        // (A body not read by now and not all here makes the connection unusable after.)
        let body_unread = !feeder.can_finish(&self.buffer);
        let close = !keep_alive || !client_keeps || stop.fired.is_some() || body_unread;
        self.release_buffer();
        let (parts, body) = response.into_parts();
        let mut outgoing = Outgoing::new(&parts, body.size_hint().exact(), is_head, version, close);
        let mut body = (!outgoing.ended).then_some(body);
        let sent = poll_fn(|cx| self.poll_answer(cx, &mut outgoing, body.as_mut(), &mut feeder, stop)).await;
        match sent {
            Ok(true) => {}
            Ok(false) => return Ok(Next::Drop),
            Err(error) => return Err(error),
        }
        let body_read = feeder.finish(&mut self.buffer);
        if outgoing.close || !body_read || stop.fired.is_some() {
            return Ok(Next::Close { linger: !body_read });
        }
        self.release_buffer();
        Ok(Next::Request)
    }

    /// Writes the answer: gathers what its body has ready, writes it, and meanwhile watches the
    /// client. `Ok(false)` when the stop signal said to close at once.
    fn poll_answer<F: Future<Output = Stop>>(
        &mut self,
        cx: &mut Context<'_>,
        outgoing: &mut Outgoing,
        mut body: Option<&mut axum::body::Body>,
        feeder: &mut Feeder,
        stop: &mut StopSignal<'_, F>,
    ) -> Poll<Result<bool, ConnectionError>> {
        loop {
            if stop.poll(cx) == Some(Stop::Now) {
                return Poll::Ready(Ok(false));
            }
            let mut body_pending = false;
            while outgoing.has_room() {
                let Some(body) = body.as_deref_mut() else { break };
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            outgoing.push(data)?;
                        }
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(ConnectionError::AnswerBody(error))),
                    Poll::Ready(None) => outgoing.finish()?,
                    Poll::Pending => {
                        body_pending = true;
                        break;
                    }
                }
            }
            if !outgoing.is_flushed() || outgoing.ended {
                match outgoing.poll_write(&mut self.io, cx) {
                    Poll::Ready(Ok(())) if outgoing.ended => return Poll::Ready(Ok(true)),
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                    Poll::Pending => body_pending = true,
                }
            }
            if body_pending {
                self.poll_client(cx, feeder)?;
                return Poll::Pending;
            }
        }
    }

    /// While a request is served: feeds its body when the service wants more, and once the body
    /// has been read, notices a client that closes the connection.
    fn poll_client(&mut self, cx: &mut Context<'_>, feeder: &mut Feeder) -> Result<(), ConnectionError> {
        loop {
            match feeder.state {
                Feeding::Open => {}
                Feeding::Failed => return Ok(()),
                Feeding::Complete | Feeding::Abandoned => return self.poll_gone(cx),
            }
            if !feeder.poll_wants_more(cx) {
                return if feeder.state == Feeding::Abandoned { self.poll_gone(cx) } else { Ok(()) };
            }
            if let Some(written) = feeder.continue_owed {
                const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
                match Pin::new(&mut self.io).poll_write(cx, &CONTINUE[written..]) {
                    Poll::Ready(Ok(n)) if written + n >= CONTINUE.len() => feeder.continue_owed = None,
                    Poll::Ready(Ok(n)) => feeder.continue_owed = Some(written + n),
                    Poll::Ready(Err(error)) => return Err(error.into()),
                    Poll::Pending => return Ok(()),
                }
                continue;
            }
            match feeder.decoder.decode(&mut self.buffer) {
                Ok(Decoded::NeedMore) => match self.poll_fill(cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(Ok(0)) => {
                        let ended = feeder.decoder.eof().map(|()| Decoded::End);
                        feeder.deliver(ended.map_err(|_| "the client closed the connection mid-body".to_owned()));
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(error)) => feeder.deliver(Err(error.to_string())),
                },
                Ok(piece) => feeder.deliver(Ok(piece)),
                Err(error) => feeder.deliver(Err(error.to_string())),
            }
        }
    }

    /// Watches for the client closing the connection (`Err(ClientGone)`); bytes it sends
    /// meanwhile (a pipelined request) are kept for later, up to a head's worth.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Result<(), ConnectionError> {
        while self.buffer.len() < MAX_HEAD {
            let mut probe = [0u8; 256];
            let mut read = ReadBuf::new(&mut probe);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Err(ConnectionError::ClientGone),
                Poll::Ready(Ok(())) => self.buffer.extend_from_slice(read.filled()),
                Poll::Ready(Err(_)) => return Err(ConnectionError::ClientGone),
            }
        }
        Ok(())
    }

    /// Reads more bytes into the buffer: how many (0 when the client closed the connection).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.reads.poll_fill(&mut self.io, cx, &mut self.buffer)
    }

    /// Gives the buffer's memory back when nothing is in it (an idle or streaming connection
    /// holds none).
    fn release_buffer(&mut self) {
        if self.buffer.is_empty() {
            self.buffer = BytesMut::new();
            self.reads.reset();
        }
    }

    /// Answers a request keel could not read with an error saying why, and closes.
    async fn refuse(mut self, error: HeadError) -> Result<(), ConnectionError> {
        let status = match error {
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::UnknownExpectation => StatusCode::EXPECTATION_FAILED,
        };
        tracing::info!(status = status.as_u16(), %error, "request refused before reading it");
        self.io.write_all(&response::refusal(status, &error.to_string())).await?;
        self.close(true).await;
        Err(ConnectionError::Refused(error))
    }

    /// Closes the connection: the write side first; then, when the client may still be sending
    /// a body nobody read, reads and drops it for a moment so that the client gets the answer
    /// rather than a reset. (A client that left first makes the shutdown fail: nothing to
    /// report then.)
    async fn close(mut self, linger: bool) {
        let shut = self.io.shutdown().await;
        if linger && shut.is_ok() {
            let drain = async {
                let mut dropped = 0;
                let mut scratch = vec![0u8; 16 * 1024];
                while dropped < LINGER_BYTES {
                    match self.io.read(&mut scratch).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => dropped += n,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        }
    }
}

#[cfg(test)]
mod tests;

/// Serves `input` as all that one client sends on a connection, in reads of at most `step`
/// bytes, with a service that reads each request's body and answers with its length; returns
/// what keel wrote back. For fuzzing the HTTP/1.1 server: any bytes, in any split, must neither
/// panic nor hang it.
pub async fn serve_bytes(input: &[u8], step: usize) -> Vec<u8> {
    struct Measure;
    impl Service for Measure {
        #[allow(clippy::manual_async_fn, reason = "the future must not borrow `self`")]
        fn call(
            &self,
            request: http::Request<axum::body::Body>,
        ) -> impl Future<Output = axum::response::Response> + Send + 'static {
            async move {
                match axum::body::to_bytes(request.into_body(), 1 << 20).await {
                    Ok(body) => axum::response::Response::new(axum::body::Body::from(body.len().to_string())),
                    Err(error) => {
                        let mut response = axum::response::Response::new(axum::body::Body::from(error.to_string()));
                        *response.status_mut() = StatusCode::BAD_REQUEST;
                        response
                    }
                }
            }
        }
    }
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut from_keel, mut to_keel) = tokio::io::split(client);
    let send = async move {
        for piece in input.chunks(step.max(1)) {
            if to_keel.write_all(piece).await.is_err() {
                break;
            }
        }
        let _ = to_keel.shutdown().await;
    };
    let mut answers = Vec::new();
    let receive = from_keel.read_to_end(&mut answers);
    let (_, _, _) = tokio::join!(send, receive, serve(server, &Measure, true, std::future::pending()));
    answers
}
