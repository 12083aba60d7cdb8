//! The network side of `keel chat`: one model at one server (keel or Ollama), asked through
//! `/api/chat` with the answer's tokens written to any [`Write`] as they arrive, and a session's
//! stored history read from keel's `/keel/sessions` API. Knows nothing about the terminal.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use super::conversation::ChatMessage;
use crate::connect::{DEFAULT_URL, root_cause};

/// The request header that names a durable session.
const SESSION_HEADER: &str = "X-Keel-Session";
/// Messages asked for per page of `/history`.
const HISTORY_PAGE: usize = 1_000;

/// A server to chat with: keel or Ollama at `host`, one model, an optional API key.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    http: reqwest::Client,
    host: Url,
    pub(super) model: String,
    api_key: Option<String>,
}

impl Endpoint {
    /// An endpoint for the server at `host` (see [`crate::connect::parse_url`]).
    pub(crate) fn new(host: Url, model: &str, api_key: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Endpoint { http, host, model: model.to_owned(), api_key: api_key.filter(|key| !key.is_empty()) })
    }

    /// The host as given, without a trailing slash (for messages).
    pub(super) fn host(&self) -> &str {
        self.host.as_str().trim_end_matches('/')
    }

    /// `host` with `segments` appended to its path (each percent-encoded).
    fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        crate::connect::join(&self.host, segments)
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `messages` to `/api/chat` with `stream: true` (and `X-Keel-Session` when `session`
    /// is set), writes the answer's tokens to `out` as they arrive (flushing each) followed by a
    /// newline, and returns the whole answer. Errors say what went wrong and what to do; a
    /// partly written answer is ended with a newline first.
    pub(crate) async fn ask(
        &self,
        messages: &[ChatMessage],
        session: Option<&str>,
        out: &mut impl Write,
    ) -> anyhow::Result<String> {
        let body = json!({
            "model": self.model,
            "messages": messages.iter().map(ChatMessage::to_json).collect::<Vec<_>>(),
            "stream": true,
        });
        let mut request = self.authorize(self.http.post(self.url(&["api", "chat"])?).json(&body));
        if let Some(id) = session {
            request = request.header(SESSION_HEADER, id);
        }
        let response = request.send().await.map_err(|err| self.send_error(&err))?;
        if !response.status().is_success() {
            return Err(self.status_error(response).await);
        }
        let mut answer = String::new();
        let result = self.stream(response, &mut answer, out).await;
        if result.is_err() && !answer.is_empty() {
            let _ = writeln!(out);
        }
        result.map(|()| answer)
    }

    /// Reads the NDJSON stream into `answer`, writing each piece of content to `out`.
    async fn stream(
        &self,
        mut response: reqwest::Response,
        answer: &mut String,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        let mut pending = Vec::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => bail!(
                    "the answer broke off: {} (the connection to {} failed); ask again",
                    root_cause(&err),
                    self.host()
                ),
            };
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if self.line(&line, answer, out)? {
                    writeln!(out)?;
                    out.flush()?;
                    return Ok(());
                }
            }
        }
        if !pending.is_empty() && self.line(&pending, answer, out)? {
            writeln!(out)?;
            out.flush()?;
            return Ok(());
        }
        bail!("the answer ended before it was complete (the server or its connection to the model broke); ask again")
    }

    /// Handles one line of the stream; `true` once the final chunk (`done: true`) came.
    fn line(&self, line: &[u8], answer: &mut String, out: &mut impl Write) -> anyhow::Result<bool> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(false);
        }
        let value: Value = serde_json::from_slice(line).with_context(|| {
            format!(
                "{} answered something that is not Ollama's chat stream: {:?}; is --url keel or Ollama?",
                self.host(),
                String::from_utf8_lossy(&line[..line.len().min(120)])
            )
        })?;
        if let Some(error) = value.get("error") {
            bail!("the answer broke off: {}", error_message(error));
        }
        if let Some(content) = value.pointer("/message/content").and_then(Value::as_str)
            && !content.is_empty()
        {
            answer.push_str(content);
            out.write_all(content.as_bytes())?;
            out.flush()?;
        }
        Ok(value.get("done").and_then(Value::as_bool) == Some(true))
    }

    /// What to tell the user when the request could not be sent.
    fn send_error(&self, err: &reqwest::Error) -> anyhow::Error {
        let host = self.host();
        if err.is_connect() || err.is_timeout() {
            let keel_default = self.host.port_or_known_default() == Some(11435);
            let hint = if keel_default {
                "is keel running? start it with `keel serve` (or talk to Ollama directly with --url http://127.0.0.1:11434)"
            } else {
                "is keel running? start it with `keel serve` (or, if --url is Ollama, start it with `ollama serve`)"
            };
            anyhow::anyhow!("cannot reach {host} ({}): {hint}", root_cause(err))
        } else {
            anyhow::anyhow!("the request to {host} failed: {}", root_cause(err))
        }
    }

    /// What to tell the user about an error status of `/api/chat`.
    async fn status_error(&self, response: reqwest::Response) -> anyhow::Error {
        let status = response.status();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let message = error_body(response).await;
        let host = self.host();
        let model = &self.model;
        match status {
            StatusCode::NOT_FOUND if message.contains("not found") && message.contains("model") => anyhow::anyhow!(
                "{message}: pull it with `ollama pull {model}` on the machine that runs Ollama, or pick one \
                 `ollama list` shows"
            ),
            StatusCode::NOT_FOUND => anyhow::anyhow!(
                "{host} has no /api/chat (404: {message}): is --url keel (default {DEFAULT_URL}) or Ollama?"
            ),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => anyhow::anyhow!(
                "{host} refused the request ({status}: {message}): pass a key with the inference scope with \
                 --key or KEEL_KEY"
            ),
            StatusCode::SERVICE_UNAVAILABLE if message.contains("session") => {
                anyhow::anyhow!("{host} cannot keep the session ({status}): {message}")
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
                let wait = retry_after.map(|s| format!(" in {s}s")).unwrap_or_default();
                let start = if message.contains("ollama serve") { "" } else { "; is Ollama running (`ollama serve`)?" };
                anyhow::anyhow!("no answer from the model ({status}): {message}{start}; try again{wait}")
            }
            _ => anyhow::anyhow!("{host} answered {status}: {message}"),
        }
    }

    /// The session's stored messages, from keel's `GET /keel/sessions/{id}/messages`.
    pub(crate) async fn session_history(&self, id: &str) -> anyhow::Result<SessionHistory> {
        let mut messages = Vec::new();
        let mut after = 0;
        loop {
            let mut url = self.url(&["keel", "sessions", id, "messages"])?;
            url.query_pairs_mut()
                .append_pair("after", &after.to_string())
                .append_pair("limit", &HISTORY_PAGE.to_string());
            let response = self.authorize(self.http.get(url)).send().await.map_err(|err| self.send_error(&err))?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                let message = error_body(response).await;
                return Ok(if message.contains("session") {
                    SessionHistory::Unknown
                } else {
                    SessionHistory::NoSessions
                });
            }
            if !status.is_success() {
                let message = error_body(response).await;
                let hint = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                    " (reading sessions needs a key with the admin scope)"
                } else {
                    ""
                };
                bail!("{} answered {status}: {message}{hint}", self.host());
            }
            let body: Value =
                response.json().await.context("keel answered /keel/sessions with something that is not JSON")?;
            let page: Vec<StoredMessage> = body["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| StoredMessage {
                    seq: m["seq"].as_u64().unwrap_or(0),
                    role: m["role"].as_str().unwrap_or("?").to_owned(),
                    content: m["content"].as_str().unwrap_or_default().to_owned(),
                    complete: m["complete"].as_bool().unwrap_or(true),
                })
                .collect();
            let full = page.len() >= HISTORY_PAGE;
            let last = page.last().map(|m| m.seq);
            messages.extend(page);
            match last {
                Some(last) if full && last > after => after = last,
                _ => return Ok(SessionHistory::Messages(messages)),
            }
        }
    }
}

/// What keel says about a session's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionHistory {
    /// The stored messages, in order.
    Messages(Vec<StoredMessage>),
    /// keel does not know the session (nothing was sent in it yet).
    Unknown,
    /// The server keeps no sessions (plain Ollama, or a keel without the sessions API).
    NoSessions,
}

/// One message of a session as keel stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    /// Its position in the session.
    pub(crate) seq: u64,
    /// `system`, `user`, `assistant`, …
    pub(crate) role: String,
    /// The text.
    pub(crate) content: String,
    /// `false` for an answer that was cut off.
    pub(crate) complete: bool,
}

/// The message of an Ollama or OpenAI error value.
fn error_message(error: &Value) -> String {
    let message = error.get("message").unwrap_or(error);
    message.as_str().map_or_else(|| message.to_string(), str::to_owned)
}

/// The message of an error response's body (`{"error": …}`, or the text itself).
async fn error_body(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(value) if value.get("error").is_some() => error_message(&value["error"]),
        _ if text.trim().is_empty() => "no details".to_owned(),
        _ => text.trim().chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_mock::{Fault, FaultKind, MockServer, ModelSpec, Scenario};

    fn scenario(model: ModelSpec) -> Scenario {
        Scenario { models: vec![model], ..Scenario::default() }
    }

    fn url(text: &str) -> Url {
        crate::connect::parse_url(text).unwrap()
    }

    async fn mock(model: ModelSpec) -> MockServer {
        MockServer::start(([127, 0, 0, 1], 0).into(), scenario(model)).await.unwrap()
    }

    #[tokio::test]
    async fn ask_streams_the_answer_and_returns_it() {
        let server = mock(ModelSpec::new("llama3.2", "Hello from the mock.")).await;
        let endpoint = Endpoint::new(url(&server.url()), "llama3.2", Some("k1".into())).unwrap();
        let mut out = Vec::new();
        let answer = endpoint.ask(&[ChatMessage::new("user", "hi")], Some("s-1"), &mut out).await.unwrap();
        assert_eq!(answer, "Hello from the mock.");
        assert_eq!(String::from_utf8(out).unwrap(), "Hello from the mock.\n");
        let request = server.requests().pop().unwrap();
        assert_eq!(request.path, "/api/chat");
        assert_eq!(request.header("x-keel-session"), Some("s-1"));
        assert_eq!(request.header("authorization"), Some("Bearer k1"));
        let body = request.json().unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn an_error_line_mid_stream_is_an_error_after_the_partial_text() {
        let model = ModelSpec::new("llama3.2", "one two three four")
            .with_fault(Fault::new(FaultKind::ErrorLine).with_after_chunks(1).with_message("runner died"));
        let server = mock(model).await;
        let endpoint = Endpoint::new(url(&server.url()), "llama3.2", None).unwrap();
        let mut out = Vec::new();
        let err = endpoint.ask(&[ChatMessage::new("user", "hi")], None, &mut out).await.unwrap_err();
        assert!(err.to_string().contains("runner died"), "{err}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("one") && text.ends_with('\n'), "{text:?}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_cut_stream_is_an_error() {
        let model = ModelSpec::new("llama3.2", "one two three four")
            .with_fault(Fault::new(FaultKind::Cut).with_after_chunks(1));
        let server = mock(model).await;
        let endpoint = Endpoint::new(url(&server.url()), "llama3.2", None).unwrap();
        let err = endpoint.ask(&[ChatMessage::new("user", "hi")], None, &mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("broke off") || err.to_string().contains("ended before"), "{err}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn busy_and_unauthorized_say_what_to_do() {
        let server = mock(ModelSpec::new("llama3.2", "x").with_fault(Fault::new(FaultKind::Busy))).await;
        let endpoint = Endpoint::new(url(&server.url()), "llama3.2", None).unwrap();
        let err = endpoint.ask(&[ChatMessage::new("user", "hi")], None, &mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("server busy") && err.to_string().contains("try again"), "{err}");
        server.set_scenario(scenario(
            ModelSpec::new("llama3.2", "x").with_fault(Fault::new(FaultKind::Status).with_status(401, "")),
        ));
        let err = endpoint.ask(&[ChatMessage::new("user", "hi")], None, &mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("--key"), "{err}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn history_against_a_server_without_sessions() {
        let server = mock(ModelSpec::new("llama3.2", "x")).await;
        let endpoint = Endpoint::new(url(&server.url()), "llama3.2", None).unwrap();
        assert_eq!(endpoint.session_history("abc").await.unwrap(), SessionHistory::NoSessions);
        server.shutdown().await;
    }

    #[test]
    fn hosts_without_a_scheme_get_http_and_keep_their_path() {
        let endpoint = Endpoint::new(url("127.0.0.1:11435"), "m", None).unwrap();
        assert_eq!(endpoint.url(&["api", "chat"]).unwrap().as_str(), "http://127.0.0.1:11435/api/chat");
        let endpoint = Endpoint::new(url("http://proxy.local/ollama/"), "m", Some(String::new())).unwrap();
        assert_eq!(endpoint.url(&["api", "chat"]).unwrap().as_str(), "http://proxy.local/ollama/api/chat");
        assert_eq!(endpoint.api_key, None);
        assert_eq!(
            endpoint.url(&["keel", "sessions", "a/b", "messages"]).unwrap().as_str(),
            "http://proxy.local/ollama/keel/sessions/a%2Fb/messages"
        );
    }
}
