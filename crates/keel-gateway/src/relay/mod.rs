//! Relaying an upstream response body to the client, chunk by chunk.
//!
//! Each chunk is passed on as soon as it arrives (never buffered whole). A body that breaks —
//! cut off, or silent for longer than the upstream's `idle_timeout` — ends with an error line in
//! the stream's own framing (`{"error": …}` for NDJSON, a `data:` event for SSE) instead of a bare
//! EOF, so clients raise a clear error; so does a stream still open when keel's shutdown grace
//! runs out ("keel is shutting down; retry the request"). [`Completion`] records metrics, logs and the target's health
//! when the body ends or the client goes away (dropping the body cancels the upstream request).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body::Frame;
use keel_telemetry::names;
use keel_types::{Dialect, FailureClass};
use keel_upstream::ResponseBody;
use keel_upstream::translate::{StreamTranslator, sse};
use keel_upstream::{ErrorBody, classify_body_error};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub(crate) use completion::{Answer, Completion, record};
pub(crate) use hook::{Continuation, Continue};
use splice::Splice;
use tap::{Tap, TapFraming};

mod completion;
mod hook;
mod splice;
pub(crate) mod tap;

/// How the body is framed, which decides how a mid-body failure is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `application/x-ndjson`: one JSON object per line.
    NdJson,
    /// `text/event-stream`: `data: …` events.
    Sse,
    /// Anything else, or a body with a declared length: a failure can only abort the body.
    Opaque,
}

impl Framing {
    fn of(headers: &HeaderMap) -> Framing {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Framing::Opaque;
        }
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type.contains("ndjson") {
            Framing::NdJson
        } else if content_type.contains("event-stream") {
            Framing::Sse
        } else {
            Framing::Opaque
        }
    }

    /// The final chunk that tells the client the stream broke, if this framing can carry one: an
    /// NDJSON error line, an SSE `data:` error event, or the named `error` event of Anthropic's
    /// and the Responses API's streams.
    fn error_chunk(self, dialect: Dialect, route: &str, message: &str) -> Option<Bytes> {
        let json = ErrorBody::json(dialect, StatusCode::BAD_GATEWAY, message);
        match self {
            Framing::NdJson => Some(Bytes::from(format!("{json}\n"))),
            Framing::Sse if dialect == Dialect::Anthropic => Some(sse::write_event(Some("error"), &json.to_string())),
            Framing::Sse if route == "/v1/responses" => {
                let event = serde_json::json!({
                    "type": "error", "code": "server_error", "message": message, "param": null, "sequence_number": 0,
                });
                Some(sse::write_event(Some("error"), &event.to_string()))
            }
            Framing::Sse => Some(Bytes::from(format!("data: {json}\n\n"))),
            Framing::Opaque => None,
        }
    }
}

/// What `poll_frame` answers.
type PolledFrame = Poll<Option<Result<Frame<Bytes>, std::io::Error>>>;

/// What polling a continuation gave.
enum Step {
    /// Something changed: look at the pending lines and the state again.
    Continue,
    /// Nothing yet.
    Pending,
    /// The continuation's body failed.
    Failed(std::io::Error),
}

/// Where the relayed bytes come from.
enum Source {
    /// The upstream's response body.
    Upstream(ResponseBody),
    /// The upstream broke mid-answer; the next target is being asked to continue.
    Resuming(Continuation),
    /// The continuation's answer, relayed (with its own timeouts and bookkeeping).
    Continued(Body),
}

/// The response body handed to the client: the upstream's body, frame by frame.
struct RelayBody {
    source: Source,
    idle_timeout: Duration,
    /// Fires when the upstream may have been silent for `idle_timeout`; re-armed lazily from
    /// `last_data` so that a busy stream costs no timer updates.
    idle: Pin<Box<tokio::time::Sleep>>,
    last_data: tokio::time::Instant,
    framing: Framing,
    dialect: Dialect,
    completion: Completion,
    done: bool,
    /// Translates the upstream's stream into the client's API (a bridged call).
    convert: Option<Box<dyn StreamTranslator>>,
    /// Translated lines not yet handed to the client.
    pending: VecDeque<Bytes>,
    /// Bytes still expected when the upstream declared a Content-Length. The server stops polling
    /// a body once it has written that many bytes, so the end is recognised here, not by EOF.
    remaining: Option<u64>,
    /// Reads the lines of a stream that may be continued elsewhere (see [`tap`]).
    tap: Option<Tap>,
    /// How to continue on the next target when the stream breaks mid-answer.
    resume: Option<Box<dyn Continue>>,
    /// Fits a continuation's Anthropic or Responses stream into this one.
    splice: Option<Splice>,
    /// Cancelled when keel's shutdown grace is over: the body then ends with an error line.
    grace_over: Option<CancellationToken>,
    /// Waits for `grace_over`; made the first time the body has to wait for data.
    grace_wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

/// The line a stream still open when keel's shutdown grace runs out ends with.
const SHUTTING_DOWN: &str = "keel is shutting down; retry the request";

/// Wraps an upstream response body for the client. `bodyless` marks answers that carry no body
/// whatever their headers say (to `HEAD`, or 204/304); `convert` translates the upstream's stream
/// into the client's API on the way.
pub(crate) fn relay(
    upstream: ResponseBody,
    headers: &HeaderMap,
    dialect: Dialect,
    idle_timeout: Duration,
    mut completion: Completion,
    bodyless: bool,
    convert: Option<Box<dyn StreamTranslator>>,
) -> Body {
    let resume = completion.answer.resume.take();
    let remaining = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let done = bodyless || remaining == Some(0);
    if done {
        completion.finish(None);
    }
    let now = tokio::time::Instant::now();
    let framing = Framing::of(headers);
    let tap_framing = match framing {
        Framing::NdJson => Some(TapFraming::NdJson),
        Framing::Sse if dialect == Dialect::Anthropic => Some(TapFraming::Anthropic),
        Framing::Sse if completion.answer.route == "/v1/responses" => Some(TapFraming::Responses),
        Framing::Sse => Some(TapFraming::Sse),
        Framing::Opaque => None,
    };
    let (tap, resume) = match (tap_framing, resume) {
        (Some(tap_framing), Some(resume)) if !done => (Some(Tap::new(tap_framing)), Some(resume)),
        _ => (None, None),
    };
    let grace_over = if done { None } else { crate::shutdown::grace_over() };
    Body::new(RelayBody {
        source: Source::Upstream(upstream),
        idle_timeout,
        idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
        last_data: now,
        framing,
        dialect,
        completion,
        done,
        convert,
        pending: VecDeque::new(),
        remaining,
        tap,
        resume,
        splice: None,
        grace_over,
        grace_wait: None,
    })
}

impl RelayBody {
    /// A frame from the upstream: passed on as it is, or through the converter or the tap (then
    /// `None`: look at the pending lines again). Also notes the end of a body of declared length.
    #[inline]
    fn on_frame(&mut self, frame: Frame<Bytes>) -> Option<PolledFrame> {
        let Some(data) = frame.data_ref() else {
            // Trailers: pass them on untouched (never produced by a translated stream).
            return self.convert.is_none().then_some(Poll::Ready(Some(Ok(frame))));
        };
        self.last_data = tokio::time::Instant::now();
        self.completion.saw(data);
        if let Some(convert) = &mut self.convert {
            self.pending.extend(convert.push(data));
            // With a tap, the error line the converter wrote is the tap's to handle.
            if let (Some(error), None) = (convert.error(), &self.tap) {
                let detail = format!("the upstream reported an error mid-stream: {error}");
                self.done = true;
                self.completion.finish(Some((FailureClass::StreamBroken, detail)));
            }
            return None;
        }
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(data.len() as u64);
            if *remaining == 0 {
                self.done = true;
                self.completion.finish(None);
            }
        }
        if self.tap.is_some() {
            if let Ok(data) = frame.into_data() {
                self.pending.push_back(data);
            }
            return None;
        }
        Some(Poll::Ready(Some(Ok(frame))))
    }

    /// The upstream's body ended: the converter's last lines (or its error), then the end.
    fn on_end(&mut self) -> Option<PolledFrame> {
        if let Some(convert) = &mut self.convert {
            match convert.finish() {
                Ok(last) => self.pending.extend(last),
                Err(err) => return self.fail(FailureClass::StreamBroken, format!("the upstream stream {err}")),
            }
        }
        self.done = true;
        self.completion.finish(None);
        None
    }

    /// Nothing from the upstream yet: wait, unless it has been silent past `idle_timeout` (then
    /// the stream fails) or the shutdown grace is over.
    fn on_pending(&mut self, cx: &mut Context<'_>) -> Option<PolledFrame> {
        if self.idle.as_mut().poll(cx).is_pending() {
            return self.wait_or_shut_down(cx);
        }
        let deadline = self.last_data + self.idle_timeout;
        if deadline <= tokio::time::Instant::now() {
            let idle = keel_types::duration::format(self.idle_timeout);
            return self.fail(FailureClass::Timeout, format!("the upstream sent nothing for {idle} (idle_timeout)"));
        }
        // Data arrived since the timer was set: re-arm it and look again.
        self.idle.as_mut().reset(deadline);
        None
    }
    /// Ends the body after a failure: an error frame where the framing allows (after the lines
    /// already translated), else an error.
    /// `None` when the answer is being continued on another target instead.
    fn fail(&mut self, class: FailureClass, detail: String) -> Option<PolledFrame> {
        self.done = true;
        let class = if class == FailureClass::Timeout { class } else { FailureClass::StreamBroken };
        if self.try_resume(class, &detail) {
            return None;
        }
        let message = format!("keel: {detail}; the answer is incomplete, retry the request");
        let chunk = self.framing.error_chunk(self.dialect, self.completion.answer.route, &message);
        self.completion.finish(Some((class, detail)));
        // Lines not yet passed on are dropped: the error line says the answer is incomplete.
        self.tap = None;
        Some(match chunk {
            Some(chunk) => {
                self.pending.push_back(chunk);
                Poll::Ready(self.pending.pop_front().map(|chunk| Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(Some(Err(std::io::Error::other(message)))),
        })
    }
}

impl RelayBody {
    /// About to wait for data: `Pending` (woken when keel's shutdown grace is over too), or, once
    /// it is over, the end of the body as [`RelayBody::shut_down`] says.
    fn wait_or_shut_down(&mut self, cx: &mut Context<'_>) -> Option<PolledFrame> {
        if let Some(token) = &self.grace_over {
            let wait = self.grace_wait.get_or_insert_with(|| Box::pin(token.clone().cancelled_owned()));
            if wait.as_mut().poll(cx).is_ready() {
                self.grace_over = None;
                self.grace_wait = None;
                return self.shut_down();
            }
        }
        Some(Poll::Pending)
    }

    /// Ends the body because keel's shutdown grace is over: after the lines already passed on,
    /// an error line in the stream's framing (an error where the framing has no place for one).
    /// `None` when the error line is queued.
    fn shut_down(&mut self) -> Option<PolledFrame> {
        self.done = true;
        self.resume = None;
        // Raw chunks not yet through the tap may end mid-line: the error line replaces them.
        if self.tap.take().is_some() {
            self.pending.clear();
        }
        tracing::warn!(id = %self.completion.answer.id, "shutdown grace period over; ending the stream with an error");
        // Neither the target's failure nor its success: its breaker records nothing.
        drop(self.completion.answer.permit.take());
        self.completion.finish(None);
        match self.framing.error_chunk(self.dialect, self.completion.answer.route, SHUTTING_DOWN) {
            Some(chunk) => {
                self.pending.push_back(chunk);
                None
            }
            None => Some(Poll::Ready(Some(Err(std::io::Error::other(SHUTTING_DOWN))))),
        }
    }

    /// Starts continuing the answer on the next target, when the stream can be continued: it is
    /// a chat stream with targets left and its final chunk has not been sent.
    fn try_resume(&mut self, class: FailureClass, detail: &str) -> bool {
        let Some(tap) = &mut self.tap else { return false };
        if tap.finished {
            return false;
        }
        let Some(continuation) = self.resume.take().and_then(|resume| resume.start(&tap.text)) else { return false };
        tracing::warn!(class = %class, detail, "upstream stream broke mid-answer; asking the next target to continue");
        metrics::counter!(names::STREAM_CONTINUATIONS_TOTAL, "route" => self.completion.answer.route).increment(1);
        self.completion.finish(Some((class, detail.to_owned())));
        self.pending.clear();
        // The continuation's events follow whole events.
        self.pending.extend(tap.cut());
        self.source = Source::Resuming(continuation);
        self.done = false;
        true
    }

    /// Takes the continuation's answer: relayed when it streams, else the stream ends with an error.
    fn take_continuation(&mut self, response: Response) {
        let status = response.status();
        if status.is_success() {
            self.splice = self.tap.as_ref().and_then(|tap| match tap.framing {
                TapFraming::Anthropic => Some(Splice::messages(tap.blocks)),
                TapFraming::Responses => Some(Splice::responses(tap.response.clone())),
                TapFraming::NdJson | TapFraming::Sse => None,
            });
            self.source = Source::Continued(response.into_body());
            return;
        }
        self.done = true;
        let message = format!("keel: the upstream broke mid-answer and no other target could continue it ({status})");
        if let Some(chunk) = self.framing.error_chunk(self.dialect, self.completion.answer.route, &message) {
            self.pending.push_back(chunk);
        }
    }

    /// Passes a chunk through the tap (when there is one): whole lines go on, an upstream error
    /// line breaks the stream (continued elsewhere, or replaced by keel's error line).
    fn through_tap(&mut self, chunk: Bytes) -> Option<Bytes> {
        let Some(tap) = &mut self.tap else { return Some(chunk) };
        let fed = tap.feed(&chunk);
        if let Some(error) = fed.error {
            let detail = format!("the upstream reported an error mid-stream: {error}");
            if !self.try_resume(FailureClass::StreamBroken, &detail) {
                self.done = true;
                self.pending.clear();
                self.completion.finish(Some((FailureClass::StreamBroken, detail)));
                let message = format!("keel: the upstream reported an error mid-stream: {error}");
                if let Some(chunk) = self.framing.error_chunk(self.dialect, self.completion.answer.route, &message) {
                    self.pending.push_back(chunk);
                }
                // The tap's job is done: the error line goes out as is.
                self.tap = None;
            }
        }
        (!fed.pass.is_empty()).then_some(fed.pass)
    }

    /// Polls a continuation in progress or relayed; `None` while there is none.
    fn poll_continuation(&mut self, cx: &mut Context<'_>) -> Option<Step> {
        match &mut self.source {
            Source::Upstream(_) => None,
            Source::Resuming(continuation) => match continuation.as_mut().poll(cx) {
                Poll::Ready(response) => {
                    self.take_continuation(response);
                    Some(Step::Continue)
                }
                Poll::Pending => Some(Step::Pending),
            },
            Source::Continued(body) => match http_body::Body::poll_frame(Pin::new(body), cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let data = match &mut self.splice {
                            Some(splice) => splice.feed(&data),
                            None => data,
                        };
                        self.pending.push_back(data);
                    }
                    Some(Step::Continue)
                }
                Poll::Ready(None) => {
                    // Whatever the tap still holds goes out as is.
                    if let Some(mut tap) = self.tap.take() {
                        let rest = tap.rest();
                        if !rest.is_empty() {
                            self.pending.push_back(rest);
                        }
                    }
                    if let Some(mut splice) = self.splice.take() {
                        self.pending.push_back(splice.finish());
                    }
                    self.done = true;
                    Some(Step::Continue)
                }
                Poll::Ready(Some(Err(err))) => {
                    self.done = true;
                    Some(Step::Failed(std::io::Error::other(err.to_string())))
                }
                Poll::Pending => Some(Step::Pending),
            },
        }
    }
}

impl http_body::Body for RelayBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                if let Some(pass) = this.through_tap(chunk) {
                    return Poll::Ready(Some(Ok(Frame::data(pass))));
                }
                continue;
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.poll_continuation(cx) {
                Some(Step::Continue) => continue,
                Some(Step::Pending) => match this.wait_or_shut_down(cx) {
                    Some(poll) => return poll,
                    None => continue,
                },
                Some(Step::Failed(err)) => return Poll::Ready(Some(Err(err))),
                None => {}
            }
            let Source::Upstream(upstream) = &mut this.source else { continue };
            let step = match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => this.on_frame(frame),
                Poll::Ready(None) => this.on_end(),
                Poll::Ready(Some(Err(err))) => {
                    this.fail(classify_body_error(&err), format!("the upstream stream broke: {err}"))
                }
                Poll::Pending => this.on_pending(cx),
            };
            if let Some(poll) = step {
                return poll;
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/x-ndjson".parse().unwrap());
        assert_eq!(Framing::of(&h), Framing::NdJson);
        h.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        assert_eq!(Framing::of(&h), Framing::Sse);
        h.insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        assert_eq!(Framing::of(&h), Framing::Opaque);
    }

    #[test]
    fn error_chunks_follow_framing() {
        let nd = Framing::NdJson.error_chunk(Dialect::Ollama, "/api/chat", "boom").unwrap();
        assert_eq!(&nd[..], b"{\"error\":\"boom\"}\n");
        let sse = Framing::Sse.error_chunk(Dialect::OpenAi, "/v1/chat/completions", "boom").unwrap();
        assert!(sse.starts_with(b"data: {\"error\":{\"message\":\"boom\""));
        assert!(sse.ends_with(b"\n\n"));
        assert!(Framing::Opaque.error_chunk(Dialect::Ollama, "/api/chat", "boom").is_none());
    }
}
