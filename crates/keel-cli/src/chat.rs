//! `keel chat`: talk to a model through keel (or straight to Ollama) — a line-editing REPL, or
//! one answer with `--non-interactive`.
//!
//! The network part ([`Endpoint::ask`], [`Endpoint::session_history`]) knows nothing about the
//! terminal: it writes the answer's tokens to any [`Write`] as they arrive and returns the whole
//! text, so it is tested against `keel-mock` without a terminal. [`Conversation`] decides what
//! each request carries (the whole history, or only the new message in a session keel keeps);
//! the REPL around them reads lines with rustyline on a thread of its own.

use std::io::{IsTerminal as _, Read as _, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use crate::connect::{ConnectArgs, DEFAULT_URL, root_cause};

/// The request header that names a durable session.
const SESSION_HEADER: &str = "X-Keel-Session";
/// Messages asked for per page of `/history`.
const HISTORY_PAGE: usize = 1_000;

/// Flags of `keel chat`.
#[derive(Debug, Args)]
#[command(after_help = "\
Without --session-id the conversation lives in this process: every request carries the whole
history, and it is gone when you exit. With --session-id (or --new-session) keel keeps the
conversation in its store (X-Keel-Session): each request carries only the new message, and the
conversation survives restarts of keel, of Ollama and of this client. Plain Ollama keeps no
sessions: use --session-id only against keel.

In the REPL: /history shows the conversation, /new starts over (a new session id in session
mode), /session prints the session id, /help lists the commands, /exit or Ctrl+D leaves.
Ctrl+C while an answer streams stops that answer; Ctrl+C twice at the prompt exits.
Line history is kept in $XDG_STATE_HOME/keel/chat_history (default ~/.local/state/keel/).

keel is found like `keel status` finds it: --url (or KEEL_URL), else the [server] listen of the
config file (--config, KEEL_CONFIG, or ./keel.toml if it exists), else http://127.0.0.1:11435.

Examples:
  keel chat --model llama3.2                                     a conversation through keel
  keel chat --model llama3.2 --new-session                       one keel keeps; prints its id
  keel chat --model llama3.2 --session-id 0193a5c2-…             resume it later
  keel chat --model llama3.2 --non-interactive --prompt 'Why is the sky blue?'
  echo 'Summarize: …' | keel chat -m llama3.2 --non-interactive --prompt -
  keel chat --model llama3.2 --url http://127.0.0.1:11434        straight to Ollama")]
pub(crate) struct ChatArgs {
    /// The model to talk to, e.g. llama3.2.
    #[arg(long, short, env = "KEEL_MODEL", value_name = "NAME")]
    model: String,
    /// Resume (or start with this name) a conversation keel keeps: requests carry
    /// `X-Keel-Session: ID` and only the new message. 1–128 letters, digits, '.', '_', ':', '-'.
    #[arg(long, value_name = "ID", conflicts_with = "new_session")]
    session_id: Option<String>,
    /// Start a conversation keel keeps, with a fresh id (printed, to resume with --session-id).
    #[arg(long)]
    new_session: bool,
    /// Send --prompt, print the answer on stdout and exit (non-zero, with the reason on stderr,
    /// when no answer came).
    #[arg(long, requires = "prompt")]
    non_interactive: bool,
    /// The message to send; `-` reads it from stdin. Without --non-interactive it opens the
    /// conversation, which then goes on at the prompt.
    #[arg(long, short, value_name = "TEXT")]
    prompt: Option<String>,
    /// A system message: sent first in every request without a session; in session mode sent
    /// with the first message this process sends in the session (keel stores it).
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Where keel is (or Ollama itself, with --url), and the API key.
    #[command(flatten)]
    connect: ConnectArgs,
}

/// One chat message as Ollama's `/api/chat` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub(crate) role: String,
    /// The text.
    pub(crate) content: String,
}

impl ChatMessage {
    /// A message with this role and text.
    pub(crate) fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage { role: role.to_owned(), content: content.into() }
    }

    fn to_json(&self) -> Value {
        json!({"role": self.role, "content": self.content})
    }
}

/// A server to chat with: keel or Ollama at `host`, one model, an optional API key.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    http: reqwest::Client,
    host: Url,
    model: String,
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
    fn host(&self) -> &str {
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

/// Checks a session id the way keel does.
fn check_session_id(id: &str) -> anyhow::Result<()> {
    let valid = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !valid {
        bail!("--session-id {id:?}: use 1 to 128 letters, digits, '.', '_', ':' or '-'");
    }
    Ok(())
}

/// A fresh session id (UUID v7: time-ordered).
fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What one conversation has said, and what each request must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conversation {
    /// The session keel keeps (managed mode), or `None` when this process keeps the history.
    session: Option<String>,
    /// The `--system` message.
    system: Option<String>,
    /// Session mode: the system message went out in this session already.
    system_sent: bool,
    /// The turns so far. Without a session this is what every request carries (after the
    /// system message); with one it is only this process's record for `/history` fallbacks.
    turns: Vec<ChatMessage>,
}

impl Conversation {
    /// A conversation in `session` (or in memory), with an optional system message.
    pub(crate) fn new(session: Option<String>, system: Option<String>) -> Self {
        Conversation { session, system, system_sent: false, turns: Vec::new() }
    }

    /// The session id, in session mode.
    pub(crate) fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The messages the request for `user` carries: the whole history without a session; only
    /// the new message (after the system message, the first time) in a session keel keeps.
    pub(crate) fn request(&self, user: &str) -> Vec<ChatMessage> {
        let mut messages = Vec::new();
        if let Some(system) = &self.system
            && (self.session.is_none() || !self.system_sent)
        {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        if self.session.is_none() {
            messages.extend(self.turns.iter().cloned());
        }
        messages.push(ChatMessage::new("user", user));
        messages
    }

    /// Records an answered turn.
    pub(crate) fn record(&mut self, user: &str, answer: String) {
        self.turns.push(ChatMessage::new("user", user));
        self.turns.push(ChatMessage::new("assistant", answer));
        self.system_sent = true;
    }

    /// Starts over: a new session (session mode) or an empty history.
    pub(crate) fn reset(&mut self) {
        if self.session.is_some() {
            self.session = Some(new_session_id());
        }
        self.system_sent = false;
        self.turns.clear();
    }

    /// The turns this process saw.
    pub(crate) fn turns(&self) -> &[ChatMessage] {
        &self.turns
    }
}

/// Runs `keel chat`.
pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let keel = args.connect.resolve()?;
    let endpoint = Endpoint::new(keel.url, &args.model, keel.key)?;
    let session = match (args.session_id, args.new_session) {
        (Some(id), _) => {
            check_session_id(&id)?;
            Some(id)
        }
        (None, true) => Some(new_session_id()),
        (None, false) => None,
    };
    let prompt = match args.prompt {
        Some(prompt) if prompt == "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("cannot read the prompt from stdin")?;
            Some(text.trim_end().to_owned())
        }
        other => other,
    };
    let mut conversation = Conversation::new(session, args.system);
    if args.non_interactive {
        let prompt = prompt.unwrap_or_default();
        if prompt.trim().is_empty() {
            bail!("--prompt is empty: nothing to ask");
        }
        if args.new_session
            && let Some(id) = conversation.session()
        {
            // stderr: stdout holds only the answer.
            writeln!(std::io::stderr(), "session {id} (resume with --session-id {id})")?;
        }
        let messages = conversation.request(&prompt);
        endpoint.ask(&messages, conversation.session(), &mut std::io::stdout()).await?;
        return Ok(());
    }
    repl(&endpoint, &mut conversation, prompt).await
}

/// The `/help` text.
const HELP: &str = "\
/history   show the conversation (in session mode: as keel stored it)
/new       start over: a new session id in session mode, else an empty history
/session   print the session id
/help      this list
/exit      leave (also /quit, Ctrl+D, or Ctrl+C twice at the prompt)
Ctrl+C while an answer streams stops it.";

/// The interactive loop.
async fn repl(endpoint: &Endpoint, conversation: &mut Conversation, first: Option<String>) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let kept = match conversation.session() {
        Some(id) => format!("session {id}, kept by keel (resume with --session-id {id})"),
        None => "history kept in memory; --new-session keeps it in keel".to_owned(),
    };
    writeln!(out, "keel chat: {} at {} — {kept}", endpoint.model, endpoint.host())?;
    writeln!(out, "/help for commands, /exit or Ctrl+D to leave.")?;
    let reader = LineReader::spawn()?;
    if let Some(first) = first.filter(|p| !p.trim().is_empty()) {
        writeln!(out, ">>> {first}")?;
        turn(endpoint, conversation, &first).await?;
    }
    let mut interrupts = 0;
    loop {
        let input = tokio::select! {
            input = reader.read(">>> ") => input,
            // Only when stdin is not a terminal: at a terminal rustyline reads Ctrl+C as a key.
            _ = tokio::signal::ctrl_c() => Input::Eof,
        };
        let line = match input {
            Input::Line(line) => line,
            Input::Interrupted => {
                interrupts += 1;
                if interrupts >= 2 {
                    break;
                }
                writeln!(std::io::stderr(), "(Ctrl+C again or Ctrl+D to exit)")?;
                continue;
            }
            Input::Eof => break,
            Input::Failed(err) => bail!("cannot read the terminal: {err}"),
        };
        interrupts = 0;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line {
            "/exit" | "/quit" | "/bye" => break,
            "/help" | "/?" => writeln!(out, "{HELP}")?,
            "/session" => match conversation.session() {
                Some(id) => writeln!(out, "{id}")?,
                None => writeln!(out, "no session: this process keeps the history (start with --new-session)")?,
            },
            "/new" => {
                conversation.reset();
                match conversation.session() {
                    Some(id) => writeln!(out, "new session {id}")?,
                    None => writeln!(out, "history cleared")?,
                }
            }
            "/history" => history(endpoint, conversation, &mut out).await?,
            command if command.starts_with('/') && !command.contains(char::is_whitespace) => {
                writeln!(out, "unknown command {command}; /help lists them")?;
            }
            text => turn(endpoint, conversation, text).await?,
        }
    }
    Ok(())
}

/// Asks one question; Ctrl+C stops the answer. Errors are reported and the REPL goes on.
async fn turn(endpoint: &Endpoint, conversation: &mut Conversation, text: &str) -> anyhow::Result<()> {
    let messages = conversation.request(text);
    let mut out = std::io::stdout();
    let result = tokio::select! {
        result = endpoint.ask(&messages, conversation.session(), &mut out) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    match result {
        Some(Ok(answer)) => conversation.record(text, answer),
        Some(Err(err)) => writeln!(std::io::stderr(), "error: {err:#}")?,
        None => {
            // Dropping the request closed the connection: keel (and Ollama) stop generating.
            writeln!(out)?;
            writeln!(std::io::stderr(), "(answer stopped)")?;
        }
    }
    Ok(())
}

/// `/history`.
async fn history(endpoint: &Endpoint, conversation: &Conversation, out: &mut impl Write) -> anyhow::Result<()> {
    let Some(id) = conversation.session() else {
        if conversation.turns().is_empty() {
            writeln!(out, "(nothing said yet)")?;
        }
        for message in conversation.turns() {
            writeln!(out, "{}: {}", message.role, message.content)?;
        }
        return Ok(());
    };
    let fetched = tokio::select! {
        fetched = endpoint.session_history(id) => fetched,
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    match fetched {
        Ok(SessionHistory::Messages(messages)) => {
            writeln!(out, "session {id}, {} messages stored by keel:", messages.len())?;
            for message in messages {
                let partial = if message.complete { "" } else { " [cut off]" };
                writeln!(out, "{:>4} {}: {}{partial}", message.seq, message.role, message.content)?;
            }
        }
        Ok(SessionHistory::Unknown) => writeln!(out, "session {id} has no messages in keel yet")?,
        Ok(SessionHistory::NoSessions) => {
            writeln!(
                out,
                "{} keeps no sessions (it is not keel, or a keel without the sessions API): \
                 the model saw no earlier messages. What this process sent and got:",
                endpoint.host()
            )?;
            for message in conversation.turns() {
                writeln!(out, "{}: {}", message.role, message.content)?;
            }
        }
        Err(err) => writeln!(std::io::stderr(), "error: {err:#}")?,
    }
    Ok(())
}

/// What the line editor read.
#[derive(Debug)]
enum Input {
    /// A line.
    Line(String),
    /// Ctrl+C at the prompt.
    Interrupted,
    /// Ctrl+D, or the end of stdin.
    Eof,
    /// The terminal failed.
    Failed(String),
}

/// The line editor on a thread of its own (rustyline blocks), one line per request.
struct LineReader {
    requests: std::sync::mpsc::Sender<(String, tokio::sync::oneshot::Sender<Input>)>,
}

impl LineReader {
    /// Starts the editor thread, loading the line history when stdin is a terminal.
    fn spawn() -> anyhow::Result<Self> {
        let config = rustyline::Config::builder()
            .max_history_size(1_000)
            .and_then(|b| b.history_ignore_dups(true))
            .map(|b| b.history_ignore_space(true).auto_add_history(false).build())
            .context("cannot configure the line editor")?;
        let mut editor = rustyline::DefaultEditor::with_config(config).context("cannot start the line editor")?;
        // Piped input is not the user's typing: keep it out of their history file.
        let history = if std::io::stdin().is_terminal() { history_path() } else { None };
        if let Some(path) = &history {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.load_history(path);
        }
        let (requests, receiver) = std::sync::mpsc::channel::<(String, tokio::sync::oneshot::Sender<Input>)>();
        std::thread::Builder::new()
            .name("keel-chat-input".into())
            .spawn(move || {
                while let Ok((prompt, reply)) = receiver.recv() {
                    let input = match editor.readline(&prompt) {
                        Ok(line) => {
                            if let Some(path) = &history
                                && !line.trim().is_empty()
                            {
                                let _ = editor.add_history_entry(line.as_str());
                                // Failing to write the history must not end the chat.
                                let _ = editor.save_history(path);
                            }
                            Input::Line(line)
                        }
                        Err(rustyline::error::ReadlineError::Interrupted) => Input::Interrupted,
                        Err(rustyline::error::ReadlineError::Eof) => Input::Eof,
                        Err(err) => Input::Failed(err.to_string()),
                    };
                    if reply.send(input).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the line editor thread")?;
        Ok(LineReader { requests })
    }

    /// Reads one line.
    async fn read(&self, prompt: &str) -> Input {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.requests.send((prompt.to_owned(), reply)).is_err() {
            return Input::Eof;
        }
        answer.await.unwrap_or(Input::Eof)
    }
}

/// `$XDG_STATE_HOME/keel/chat_history`, else `~/.local/state/keel/chat_history`.
fn history_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local").join("state")))?;
    Some(state.join("keel").join("chat_history"))
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

    #[test]
    fn in_memory_requests_carry_the_whole_history() {
        let mut chat = Conversation::new(None, Some("be brief".into()));
        assert_eq!(chat.request("a"), vec![ChatMessage::new("system", "be brief"), ChatMessage::new("user", "a")]);
        chat.record("a", "b".into());
        assert_eq!(chat.request("c").len(), 4);
        chat.reset();
        assert_eq!(chat.request("d").len(), 2);
        assert_eq!(chat.session(), None);
    }

    #[test]
    fn session_requests_carry_only_the_new_message_and_the_system_once() {
        let mut chat = Conversation::new(Some("s".into()), Some("be brief".into()));
        assert_eq!(chat.request("a").len(), 2);
        chat.record("a", "b".into());
        assert_eq!(chat.request("c"), vec![ChatMessage::new("user", "c")]);
        assert_eq!(chat.turns().len(), 2);
        chat.reset();
        let id = chat.session().unwrap().to_owned();
        assert_ne!(id, "s");
        assert!(check_session_id(&id).is_ok());
        assert_eq!(chat.request("d").len(), 2, "a new session gets the system message again");
    }

    #[test]
    fn session_ids_are_checked_like_keel_does() {
        assert!(check_session_id("chat-42:a.b_c").is_ok());
        assert!(check_session_id("").is_err());
        assert!(check_session_id("a b").is_err());
        assert!(check_session_id(&"x".repeat(129)).is_err());
    }
}
