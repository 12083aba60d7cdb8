//! Judging an answer whose head arrived: an error answer is read (it is small) to tell a model that
//! cannot load from other 5xx, and goes to the next target while one may follow; a non-streamed
//! answer is read whole (so that one cut short fails like a 5xx); anything else is relayed as it
//! arrives.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use keel_types::{Dialect, FailureClass};

use crate::endpoint::Endpoint;
use crate::state::{Gateway, UpstreamHandle};

/// Where an attempt stands in its request: what decides whether its failure ends the request.
#[derive(Clone, Copy)]
pub(super) struct Place {
    /// No attempt may follow this one.
    pub(super) is_last: bool,
    /// No target follows this one in the current round.
    pub(super) last_in_round: bool,
    /// The body can be sent again (it was read whole).
    pub(super) replayable: bool,
}

/// What became of an answer whose head arrived.
#[allow(
    clippy::large_enum_variant,
    reason = "a short-lived return value, mostly the large variant; boxing it would cost an allocation per answer"
)]
pub(super) enum Judged {
    /// Unusable, and another target or round may do better.
    Failed((FailureClass, String)),
    /// Unusable, with nothing left to try (the last target's answer cut short).
    Unusable((FailureClass, String)),
    /// For the client, read whole or to be relayed, with the head's failure class (an error answer
    /// passed on) and what the upstream said in it.
    Answer(Whole, Option<FailureClass>, Option<String>),
}

/// Judges an answer whose head arrived: an error answer is read (it is small) to tell a model
/// that cannot load from other 5xx, and goes to the next target while one may follow; a
/// non-streamed answer is read whole when `buffer` (so that one cut short fails like a 5xx);
/// anything else is relayed as it arrives.
#[allow(clippy::too_many_arguments, reason = "one attempt's facts, each used once")]
pub(super) async fn judge(
    gateway: &Gateway,
    endpoint: Endpoint,
    response: http::Response<keel_upstream::ResponseBody>,
    handle: &UpstreamHandle,
    bridged: bool,
    place: Place,
    buffer: bool,
    model: &str,
) -> Judged {
    let status = response.status();
    let class = FailureClass::from_status(status.as_u16()).filter(|c| c.is_upstream_fault());
    if class.is_some() && !bridged {
        let (head, bytes) = read_error_answer(response, handle.idle_timeout).await;
        let class = keel_upstream::classify_error_answer(status.as_u16(), &bytes);
        let mut detail = None;
        if let Some(failure) = class {
            let said = format!("upstream answered {status}: {}", error_message(&bytes));
            // A model that cannot load is not asked again: its own error is the answer when no
            // other target follows in this round.
            let final_answer = place.is_last || (failure == FailureClass::ModelLoad && place.last_in_round);
            if !final_answer && place.replayable {
                return Judged::Failed((failure, said));
            }
            detail = Some(said);
        }
        let bytes = if class == Some(FailureClass::ModelLoad) {
            model_load_answer(endpoint.dialect, status, &bytes, &handle.upstream.name, model)
        } else {
            bytes
        };
        return Judged::Answer(Whole::Read(head, bytes), class, detail);
    }
    if let Some(class) = class
        && !place.is_last
        && place.replayable
    {
        return Judged::Failed((class, format!("upstream answered {status}")));
    }
    if buffer && status.is_success() {
        let limit = gateway.config().server.max_buffered_answer;
        return match read_whole_answer(response, limit, handle.idle_timeout).await {
            Ok((head, bytes)) => Judged::Answer(Whole::Read(head, bytes), None, None),
            Err(failure) if !place.is_last => Judged::Failed(failure),
            Err(failure) => Judged::Unusable(failure),
        };
    }
    Judged::Answer(Whole::Streaming(response), class, None)
}

/// An upstream answer as keel passes it on: read whole (an error, or a non-streamed answer), or
/// relayed as it arrives.
pub(super) enum Whole {
    Read(http::response::Parts, Bytes),
    Streaming(http::Response<keel_upstream::ResponseBody>),
}

/// Largest error answer keel reads to classify it.
const MAX_ERROR_ANSWER: usize = 64 * 1024;

/// Reads an error answer (bounded, within the idle timeout); what could not be read is left out.
async fn read_error_answer(
    response: http::Response<keel_upstream::ResponseBody>,
    idle_timeout: Duration,
) -> (http::response::Parts, Bytes) {
    let (head, body) = response.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_ERROR_ANSWER);
    let bytes = match tokio::time::timeout(idle_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => Bytes::new(),
    };
    (head, bytes)
}

/// Reads a non-streamed answer whole, so that one cut short is a failure of its target and not a
/// truncated 200. Each frame must come within `idle_timeout`.
async fn read_whole_answer(
    response: http::Response<keel_upstream::ResponseBody>,
    limit: usize,
    idle_timeout: Duration,
) -> Result<(http::response::Parts, Bytes), (FailureClass, String)> {
    let (head, mut body) = response.into_parts();
    let mut collected = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle_timeout, body.frame()).await {
            Err(_) => {
                let idle = keel_types::duration::format(idle_timeout);
                return Err((
                    FailureClass::Timeout,
                    format!("the upstream sent nothing of its answer for {idle} (idle_timeout)"),
                ));
            }
            Ok(None) => return Ok((head, collected.freeze())),
            Ok(Some(Err(err))) => {
                let class = keel_upstream::classify_body_error(&err);
                return Err((
                    class,
                    format!("the upstream cut its answer short after {} bytes: {err}", collected.len()),
                ));
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if collected.len() + data.len() > limit {
                        return Err((
                            FailureClass::Local,
                            format!(
                                "the answer is larger than [server] max_buffered_answer ({limit} bytes); raise it, or ask with \"stream\": true"
                            ),
                        ));
                    }
                    collected.extend_from_slice(&data);
                }
            }
        }
    }
}

/// The message of an upstream's error body (`{"error": "..."}` or `{"error": {"message": ...}}`),
/// else the body as text, shortened.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message =
        parsed.as_ref().and_then(|v| v["error"].as_str().or(v["error"]["message"].as_str()).map(str::to_owned));
    let text = message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    if text.chars().count() > 300 { format!("{}…", text.chars().take(300).collect::<String>()) } else { text }
}

/// The answer for a model the server could not load: the upstream's message and what to do, in
/// the endpoint's dialect, with the upstream's status.
fn model_load_answer(dialect: Dialect, status: http::StatusCode, body: &[u8], upstream: &str, model: &str) -> Bytes {
    let message = format!(
        "{} (keel: upstream '{upstream}' could not load or run model '{model}'; free memory on that machine, \
         use a smaller model or quantization, or add a fallback target to this model's route in keel.toml)",
        error_message(body)
    );
    keel_upstream::ErrorBody::new(dialect, status, &message).body
}
