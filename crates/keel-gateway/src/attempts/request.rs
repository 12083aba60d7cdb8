//! What the stages hand to the attempts: the request as sent upstream ([`Call`]), where it may go
//! and with what body ([`Forward`]), and what the attempts give back ([`Sent`]).

use std::time::Instant;

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use keel_breaker::Permit;
use keel_types::TargetId;
use keel_upstream::RequestBody;

/// The request body, kept so that it can be sent again to a fallback target when it was read.
pub(crate) enum Payload {
    /// Read whole: replayable.
    Bytes(Bytes),
    /// Streamed through unread: can be sent once.
    Stream(Option<RequestBody>),
}

/// Where a request may go and with what body.
pub(crate) struct Forward {
    /// Targets in fallback order.
    pub(crate) targets: Vec<TargetId>,
    /// The route's model name (`"*"` for the wildcard route): with the target it names the breaker.
    pub(crate) route_model: String,
    /// The model the client asked for ("" when the endpoint names none).
    pub(crate) requested_model: String,
    pub(crate) path_and_query: String,
    pub(crate) payload: Payload,
    /// The client asked for a streamed answer (else a 2xx answer is read whole before it is sent).
    pub(crate) stream: bool,
    /// The route's targets not asked, and why (remote upstreams the route does not allow).
    pub(crate) withheld: Vec<String>,
}

impl Forward {
    /// Another request to the same targets (the summarizer, `/api/show`): `path_and_query` and a
    /// body keel wrote.
    pub(crate) fn same_targets(&self, path_and_query: &str, body: Bytes) -> Forward {
        Forward {
            targets: self.targets.clone(),
            route_model: self.route_model.clone(),
            requested_model: self.requested_model.clone(),
            path_and_query: path_and_query.to_owned(),
            payload: Payload::Bytes(body),
            stream: false,
            withheld: Vec::new(),
        }
    }
}

/// What one pass over a request's targets produced.
pub(crate) struct Sent {
    /// The answer for the client (an upstream's, relayed, or keel's own error).
    pub(crate) response: Response,
    /// Index into the targets of the one that answered; `None` when keel answered itself.
    pub(crate) answered: Option<usize>,
    /// The answering target's breaker permit, when the caller asked to judge the answer itself
    /// (the structured-output guard records it after validation).
    pub(crate) permit: Option<Permit>,
}

impl Sent {
    /// An answer keel produced itself.
    pub(crate) fn keel(response: Response) -> Sent {
        Sent { response, answered: None, permit: None }
    }
}

/// One request as sent upstream: the client's method and headers.
pub(crate) struct Call {
    pub(crate) method: http::Method,
    pub(crate) headers: HeaderMap,
    pub(crate) id: HeaderValue,
    pub(crate) started: Instant,
    /// Keep the answering target's permit for the caller instead of recording it at the end.
    pub(crate) hold_permit: bool,
    /// Set when this call continues a stream that broke on an earlier target.
    pub(crate) continuing: Option<Continuing>,
    /// Who asks and how urgently, for admission queues (`[admission]`); `None` when admission is
    /// off. The request's deadline is added per call.
    pub(crate) ticket: Option<keel_admission::Ticket>,
}

impl Call {
    /// A further request keel makes on behalf of this one (a summary, `/api/show`): a `POST` with
    /// the same headers, request id and deadline.
    pub(crate) fn on_behalf(&self) -> Call {
        Call {
            method: http::Method::POST,
            headers: self.headers.clone(),
            id: self.id.clone(),
            started: self.started,
            hold_permit: false,
            continuing: None,
            ticket: self.ticket.clone(),
        }
    }
}

/// What a continuation call is continuing: the client's original body and the text so far.
#[derive(Clone)]
pub(crate) struct Continuing {
    pub(super) original: Bytes,
    pub(super) prefix: String,
}
