//! Which endpoint a request is for, and how keel handles it.

use http::Method;
use keel_types::Dialect;

/// How keel forwards a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// A JSON body naming a model: read whole (bounded), checked, routed by its `model`.
    ModelInBody,
    /// The model is the last path segment (`/v1/models/{model}`): routed by it, no body.
    ModelInPath,
    /// Everything else (listings, version, model management, blobs, endpoints Ollama adds later):
    /// the body streams through unread to the default upstream (reads without a body may fall
    /// back to the other upstreams).
    Passthrough,
}

/// Whether a path is keel's own (`/keel`, `/keel/*`, `/metrics`): answered by keel, never
/// forwarded (a path that is none of its endpoints gets a 404 listing them).
pub(crate) fn is_keel_own(path: &str) -> bool {
    path.starts_with("/keel/") || path == "/metrics" || path == "/keel"
}

/// Whether a request manages the server's models (pull, push, create, copy, delete, blobs) or
/// its account (Ollama's sign-in routes): closed unless `[auth] allow_model_management`.
pub(crate) fn is_model_management(_method: &http::Method, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    match path {
        "/api/pull" | "/api/push" | "/api/create" | "/api/copy" | "/api/delete" => true,
        "/api/me" | "/api/signin" | "/api/signout" => true,
        // Uploads of model files (`HEAD` checks one exists, `POST` sends it).
        _ => path.starts_with("/api/blobs/") || path.starts_with("/api/user/"),
    }
}

/// keel's own endpoints, named in the answer to a `/keel/...` request that is none of them. Keep
/// in step with the router in `state::app` (`tests/bad_input.rs` checks each one is served).
pub(crate) const KEEL_ENDPOINTS: [&str; 11] = [
    "GET /keel/health",
    "GET /keel/ui",
    "GET /keel/status",
    "GET /metrics",
    "POST /keel/breakers/{target}/{open|close|reset}",
    "GET /keel/sessions",
    "GET|DELETE /keel/sessions/{id}",
    "GET /keel/sessions/{id}/messages",
    "GET|POST /keel/sessions/{id}/participants",
    "DELETE /keel/sessions/{id}/participants/{name}",
    "POST /keel/sessions/{id}/handoff",
];

/// A classified request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// How it is handled.
    pub kind: EndpointKind,
    /// The dialect of its responses and errors.
    pub dialect: Dialect,
    /// A bounded route label for metrics and logs (`/api/chat`, `/v1/models/{model}`, `other`).
    pub label: &'static str,
}

const MODEL_IN_BODY: [&str; 11] = [
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
];

const KNOWN_PASSTHROUGH: [&str; 14] = [
    "/",
    "/api/version",
    "/api/tags",
    "/api/ps",
    "/api/pull",
    "/api/push",
    "/api/create",
    "/api/copy",
    "/api/delete",
    "/api/status",
    "/v1/models",
    "/api/me",
    "/api/signout",
    "/api/experimental/web_search",
];

impl Endpoint {
    /// Classifies a request by method and path.
    pub fn classify(method: &Method, path: &str) -> Endpoint {
        let dialect = Dialect::of_path(path);
        if *method == Method::POST
            && let Some(label) = MODEL_IN_BODY.iter().find(|p| **p == path)
        {
            return Endpoint { kind: EndpointKind::ModelInBody, dialect, label };
        }
        if let Some(model) = path.strip_prefix("/v1/models/")
            && !model.is_empty()
            && (*method == Method::GET || *method == Method::HEAD)
        {
            return Endpoint { kind: EndpointKind::ModelInPath, dialect, label: "/v1/models/{model}" };
        }
        let label = if let Some(label) = MODEL_IN_BODY.iter().chain(KNOWN_PASSTHROUGH.iter()).find(|p| **p == path) {
            label
        } else if path.starts_with("/api/blobs/") {
            "/api/blobs/{digest}"
        } else {
            "other"
        };
        Endpoint { kind: EndpointKind::Passthrough, dialect, label }
    }

    /// The model named in a `/v1/models/{model}` path (percent-decoding `%3A` as `:`).
    pub fn model_in_path(path: &str) -> Option<String> {
        let raw = path.strip_prefix("/v1/models/")?;
        Some(raw.replace("%3A", ":").replace("%3a", ":").replace("%2F", "/").replace("%2f", "/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let chat = Endpoint::classify(&Method::POST, "/api/chat");
        assert_eq!(chat.kind, EndpointKind::ModelInBody);
        assert_eq!(chat.dialect, Dialect::Ollama);
        let v1 = Endpoint::classify(&Method::POST, "/v1/chat/completions");
        assert_eq!((v1.kind, v1.dialect), (EndpointKind::ModelInBody, Dialect::OpenAi));
        assert_eq!(Endpoint::classify(&Method::GET, "/api/chat").kind, EndpointKind::Passthrough);
        assert_eq!(Endpoint::classify(&Method::GET, "/v1/models/llama3.2").kind, EndpointKind::ModelInPath);
        assert_eq!(Endpoint::classify(&Method::GET, "/v1/models").kind, EndpointKind::Passthrough);
        assert_eq!(Endpoint::classify(&Method::POST, "/api/blobs/sha256:ab").label, "/api/blobs/{digest}");
        assert_eq!(Endpoint::classify(&Method::GET, "/whatever").label, "other");
        assert_eq!(Endpoint::model_in_path("/v1/models/llama3.2%3Alatest").unwrap(), "llama3.2:latest");
    }
}
