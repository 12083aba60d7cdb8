//! `keel chat`: talk to a model through keel (or straight to Ollama) — a line-editing REPL, or
//! one answer with `--non-interactive`.
//!
//! - [`client`]: the network part (`Endpoint::ask`, `Endpoint::session_history`) knows nothing
//!   about the terminal: it writes the answer's tokens to any [`Write`] as they arrive and returns
//!   the whole text, so it is tested against `keel-mock` without a terminal;
//! - [`conversation`]: what each request carries (the whole history, or only the new message in
//!   a session keel keeps);
//! - [`line_reader`]: rustyline on a thread of its own;
//! - this module: the flags, and the REPL or the one answer around them.

use std::io::{Read as _, Write};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::connect::ConnectArgs;
use client::{Endpoint, SessionHistory};
use conversation::{Conversation, check_session_id, new_session_id};
use line_reader::{Input, LineReader};

mod client;
mod conversation;
mod line_reader;

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
