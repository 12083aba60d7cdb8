//! The body of a streamed session answer: relayed chunk by chunk, its text collected, and the
//! chunk that ends it held back until the answer is stored — the client's acknowledgement never
//! comes before the data is durable. While it streams, the text so far is saved every second (or
//! every 2 KiB) and when the stream ends early, so a crash or a broken stream leaves the partial
//! answer in the session, marked incomplete.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body::Frame;
use keel_session::MessageCompletion;

use super::SharedStore;
use crate::answer::Kind;
use crate::relay::tap::{Tap, TapFraming};

type Saving = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Relays a streamed answer and stores it (message `seq` of session `id`) before its last chunk.
pub(super) struct SessionBody {
    inner: Body,
    tap: Tap,
    framing: TapFraming,
    store: SharedStore,
    id: String,
    seq: u64,
    /// The final chunk, sent once the answer is stored.
    held: Option<Bytes>,
    saving: Option<Saving>,
    saved: bool,
    /// The gateway, model and estimated context tokens, to calibrate against the model's count.
    calibrate: Option<(crate::state::Gateway, String, u64)>,
    /// Bytes of text already saved as the partial answer, and when.
    partial_saved: usize,
    partial_at: std::time::Instant,
}

/// How often the partial answer of a stream is saved.
const PARTIAL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Or after this much new text.
const PARTIAL_BYTES: usize = 2048;

impl SessionBody {
    pub(super) fn new(
        inner: Body,
        headers: &HeaderMap,
        kind: Kind,
        store: SharedStore,
        id: String,
        seq: u64,
        calibrate: Option<(crate::state::Gateway, String, u64)>,
    ) -> SessionBody {
        let framing = framing(kind, headers);
        SessionBody {
            inner,
            tap: Tap::new(framing),
            framing,
            store,
            id,
            seq,
            held: None,
            saving: None,
            saved: false,
            calibrate,
            partial_saved: 0,
            partial_at: std::time::Instant::now(),
        }
    }

    fn start_saving(&mut self) {
        if let (Some((gateway, model, estimated)), Some(actual)) = (self.calibrate.take(), self.tap.prompt_tokens) {
            gateway.inner.calibration.observe(&model, estimated, actual);
        }
        let store = self.store.clone();
        let (id, seq) = (self.id.clone(), self.seq);
        let content = self.tap.text.clone();
        let tokens = self.tap.answer_tokens.unwrap_or_else(|| super::estimate_tokens(&content));
        // The answer's tool calls go into the session with it: the agent's tool results refer to them.
        let tool_calls = self.tap.tool_calls();
        self.saving = Some(Box::pin(async move {
            let completion = MessageCompletion { content: Some(content), token_count: Some(tokens), tool_calls };
            store.complete_message(&id, seq, completion).await.map(|_| ()).map_err(|e| e.to_string())
        }));
    }

    /// Saves the text so far as the (still incomplete) answer, in the background.
    fn save_partial(&mut self) {
        if self.tap.text.len() <= self.partial_saved {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        self.partial_saved = self.tap.text.len();
        self.partial_at = std::time::Instant::now();
        let store = self.store.clone();
        let (id, seq, content) = (self.id.clone(), self.seq, self.tap.text.clone());
        let tokens = super::estimate_tokens(&content);
        runtime.spawn(async move {
            let partial = MessageCompletion { content: Some(content), token_count: Some(tokens), tool_calls: None };
            // Refused once the answer is complete: the final save already has the whole text.
            if let Err(err) = store.save_partial(&id, seq, partial).await {
                tracing::debug!(session = %id, seq, error = %err, "partial answer not saved");
            }
        });
    }

    /// What the client gets instead of the final chunk when the answer could not be stored.
    fn store_failed(&self, error: &str) -> Bytes {
        let message = format!("keel: the answer could not be stored in the session ({error}); retry the request");
        let dialect = match self.framing {
            TapFraming::NdJson => keel_types::Dialect::Ollama,
            TapFraming::Sse | TapFraming::Responses => keel_types::Dialect::OpenAi,
            TapFraming::Anthropic => keel_types::Dialect::Anthropic,
        };
        let json = keel_upstream::ErrorBody::json(dialect, http::StatusCode::SERVICE_UNAVAILABLE, &message);
        match self.framing {
            TapFraming::NdJson => Bytes::from(format!("{json}\n")),
            TapFraming::Sse => Bytes::from(format!("data: {json}\n\n")),
            TapFraming::Anthropic => keel_upstream::translate::sse::write_event(Some("error"), &json.to_string()),
            TapFraming::Responses => {
                let event =
                    serde_json::json!({"type": "error", "code": "server_error", "message": message, "param": null});
                keel_upstream::translate::sse::write_event(Some("error"), &event.to_string())
            }
        }
    }
}

/// How the answer of a `kind` endpoint streams: the Messages and Responses APIs by their named
/// events (both `text/event-stream`, so the endpoint decides), the chat APIs by content type.
fn framing(kind: Kind, headers: &HeaderMap) -> TapFraming {
    let sse =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("event-stream"));
    match kind {
        Kind::Messages => TapFraming::Anthropic,
        Kind::Responses => TapFraming::Responses,
        Kind::OllamaChat | Kind::OllamaGenerate | Kind::OpenAiChat if sse => TapFraming::Sse,
        Kind::OllamaChat | Kind::OllamaGenerate | Kind::OpenAiChat => TapFraming::NdJson,
    }
}

impl http_body::Body for SessionBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(saving) = &mut this.saving {
                let result = match saving.as_mut().poll(cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => return Poll::Pending,
                };
                this.saving = None;
                this.saved = true;
                let held = this.held.take().unwrap_or_default();
                let chunk = match result {
                    Ok(()) => held,
                    Err(error) => {
                        tracing::error!(session = %this.id, seq = this.seq, %error, "could not store the answer");
                        this.store_failed(&error)
                    }
                };
                if !chunk.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                continue;
            }
            return match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Some(data) = frame.data_ref() else { return Poll::Ready(Some(Ok(frame))) };
                    if this.saved {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    let was_finished = this.tap.finished;
                    let _ = this.tap.feed(data);
                    if !was_finished && this.tap.finished {
                        // The chunk that ends the answer waits for the store.
                        this.held = frame.into_data().ok();
                        this.start_saving();
                        continue;
                    }
                    if this.tap.text.len() >= this.partial_saved + PARTIAL_BYTES
                        || this.partial_at.elapsed() >= PARTIAL_EVERY
                    {
                        this.save_partial();
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(None) => {
                    if !this.saved && this.saving.is_none() {
                        tracing::warn!(session = %this.id, seq = this.seq, "stream ended before its final chunk; the answer stays incomplete");
                        this.save_partial();
                    }
                    Poll::Ready(None)
                }
                other => other,
            };
        }
    }
}

impl Drop for SessionBody {
    /// A client that leaves mid-answer: what it got so far stays in the session, incomplete.
    fn drop(&mut self) {
        if !self.saved && self.saving.is_none() {
            self.save_partial();
        }
    }
}
