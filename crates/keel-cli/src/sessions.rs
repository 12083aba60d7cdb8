//! `keel sessions`: list, show, export and delete the durable sessions in keel's store, reading
//! the store directly (keel need not run).

use std::io::{BufRead as _, IsTerminal as _, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use keel_session::{Message, Page, Session, SessionFilter, SessionStatus, Store};
use serde_json::json;

/// The store keel uses when nothing else is configured.
const DEFAULT_STORE: &str = "sqlite://keel.db";
/// Messages read per call to the store.
const MESSAGE_PAGE: usize = 1_000;

/// Flags of `keel sessions`.
#[derive(Debug, Args)]
#[command(after_help = "\
The store is the one `keel serve` uses: --store (or KEEL_STORE), else the [store] url of the
config file (--config, KEEL_CONFIG, or ./keel.toml if it exists), else sqlite://keel.db.
keel need not be running; SQLite, PostgreSQL and Redis stores all work.

Examples:
  keel sessions list                                  the 50 most recently updated sessions
  keel sessions list --status active --model llama3.2 --limit 200
  keel sessions list --json | jq -r .id               JSON lines, one session each
  keel sessions show 0193a5c2-…                       header and messages
  keel sessions export 0193a5c2-… --format markdown > chat.md
  keel sessions delete 0193a5c2-… --yes
  keel sessions --store postgres://keel@db/keel list")]
pub(crate) struct SessionsArgs {
    /// The store: sqlite://FILE, postgres://… or redis://… [default: the config file's
    /// [store] url, else sqlite://keel.db].
    #[arg(long, env = "KEEL_STORE", hide_env_values = true, global = true, value_name = "URL")]
    store: Option<String>,
    /// The keel config file whose [store] url to use. Default: ./keel.toml if it exists.
    #[arg(long, short, env = "KEEL_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: SessionsCommand,
}

/// The `keel sessions` subcommands.
#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List sessions, most recently updated first: id, model, status, messages, tokens, updated.
    List(ListArgs),
    /// Show a session: its header, then each message (role: content).
    Show {
        /// The session id.
        id: String,
    },
    /// Print a whole session to stdout.
    Export {
        /// The session id.
        id: String,
        /// json: {"session": …, "messages": […]}; jsonl: one message per line; markdown: a
        /// readable transcript.
        #[arg(long, value_enum, default_value_t = ExportFormat::Json, value_name = "FORMAT")]
        format: ExportFormat,
    },
    /// Delete a session and all its messages (asks first unless --yes).
    Delete {
        /// The session id.
        id: String,
        /// Do not ask (required when stdin is not a terminal).
        #[arg(long, short)]
        yes: bool,
    },
}

/// Flags of `keel sessions list`.
#[derive(Debug, Args)]
struct ListArgs {
    /// Only sessions of this owner (an API key name).
    #[arg(long, value_name = "OWNER")]
    owner: Option<String>,
    /// Only sessions in this status.
    #[arg(long, value_enum, value_name = "STATUS")]
    status: Option<StatusArg>,
    /// Only sessions of this model (exact name, e.g. llama3.2).
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// At most this many sessions.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// A session status on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StatusArg {
    /// Messages are being exchanged.
    Active,
    /// No traffic for a while.
    Idle,
    /// Closed on purpose.
    Ended,
    /// Closed by keel after a timeout.
    #[value(name = "timed_out")]
    TimedOut,
}

impl From<StatusArg> for SessionStatus {
    fn from(status: StatusArg) -> Self {
        match status {
            StatusArg::Active => SessionStatus::Active,
            StatusArg::Idle => SessionStatus::Idle,
            StatusArg::Ended => SessionStatus::Ended,
            StatusArg::TimedOut => SessionStatus::TimedOut,
        }
    }
}

/// How `export` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    /// One JSON document: the session and its messages.
    Json,
    /// One message per line.
    Jsonl,
    /// A Markdown transcript.
    Markdown,
}

/// Runs `keel sessions`.
pub(crate) async fn run(args: SessionsArgs) -> anyhow::Result<()> {
    let url = store_url(args.store, args.config)?;
    let store = open(&url).await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        SessionsCommand::List(list_args) => list(store.as_ref(), list_args, &mut out).await,
        SessionsCommand::Show { id } => show(store.as_ref(), &id, &mut out).await,
        SessionsCommand::Export { id, format } => export(store.as_ref(), &id, format, &mut out).await,
        SessionsCommand::Delete { id, yes } => delete(store.as_ref(), &id, yes, &mut out).await,
    }
}

/// The store URL: `--store`/`KEEL_STORE`, else the config file's, else the default — the same
/// order `keel serve` applies.
pub(crate) fn store_url(store: Option<String>, config: Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(url) = store.filter(|url| !url.is_empty()) {
        return Ok(url);
    }
    match crate::config_file::locate(config) {
        Some(path) => Ok(crate::config_file::read(&path)?.store.url),
        None => Ok(DEFAULT_STORE.to_owned()),
    }
}

/// Opens the store; a SQLite file that does not exist is an error here, not a new empty store.
async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = sqlite_path(url)
        && !path.exists()
    {
        bail!(
            "no session store at {}: keel creates it when `keel serve` first runs with that store; \
             pass --store URL or --config FILE (the one keel serve uses)",
            path.display()
        );
    }
    keel_session::open(url).await.context("cannot open the session store")
}

/// The file of a `sqlite://` URL.
pub(crate) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let scheme = url.get(..7)?;
    if !scheme.eq_ignore_ascii_case("sqlite:") {
        return None;
    }
    let rest = &url[7..];
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    (!path.is_empty()).then(|| PathBuf::from(path))
}

async fn list(store: &dyn Store, args: ListArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let filter = SessionFilter {
        owner: args.owner,
        status: args.status.map(SessionStatus::from),
        model: args.model,
        updated_since: None,
    };
    let wanted = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut sessions = Vec::new();
    let mut cursor = None;
    while sessions.len() < wanted {
        let limit = (wanted - sessions.len()).min(Page::MAX_LIMIT);
        let page = match cursor.take() {
            Some(cursor) => Page::after(cursor, limit),
            None => Page::first(limit),
        };
        let page = store.list_sessions(filter.clone(), page).await.context("cannot list sessions")?;
        sessions.extend(page.sessions);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if args.json {
        for session in &sessions {
            writeln!(out, "{}", serde_json::to_string(session)?)?;
        }
        return Ok(());
    }
    if sessions.is_empty() {
        writeln!(out, "no sessions")?;
        return Ok(());
    }
    let rows: Vec<[String; 6]> = sessions
        .iter()
        .map(|s| {
            [
                s.id.clone(),
                s.model.clone().unwrap_or_else(|| "-".into()),
                s.status.to_string(),
                s.message_count.to_string(),
                s.token_count.to_string(),
                timestamp(s.updated_at),
            ]
        })
        .collect();
    let header = ["ID", "MODEL", "STATUS", "MESSAGES", "TOKENS", "UPDATED"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let [w0, w1, w2, w3, w4, _] = widths;
    let [h0, h1, h2, h3, h4, h5] = header;
    writeln!(out, "{h0:<w0$}  {h1:<w1$}  {h2:<w2$}  {h3:>w3$}  {h4:>w4$}  {h5}")?;
    for [id, model, status, messages, tokens, updated] in &rows {
        writeln!(out, "{id:<w0$}  {model:<w1$}  {status:<w2$}  {messages:>w3$}  {tokens:>w4$}  {updated}")?;
    }
    Ok(())
}

/// The session, or an error naming the id.
async fn session(store: &dyn Store, id: &str) -> anyhow::Result<Session> {
    store
        .get_session(id)
        .await
        .with_context(|| format!("cannot read session '{id}'"))?
        .with_context(|| format!("no session '{id}' in the store (`keel sessions list` shows the ids)"))
}

/// Every message of a session, in order.
/// Every message of session `id` (of which there are about `expected`), a page at a time, with a
/// progress bar on stderr when it is a terminal and the session is long.
async fn messages(store: &dyn Store, id: &str, expected: u64) -> anyhow::Result<Vec<Message>> {
    let progress = if expected > MESSAGE_PAGE as u64 && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(expected)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("reading messages {bar:30} {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |m: &Message| m.seq);
        let page = store
            .messages(id, after, MESSAGE_PAGE)
            .await
            .with_context(|| format!("cannot read the messages of session '{id}'"))?;
        let full = page.len() >= MESSAGE_PAGE;
        all.extend(page);
        progress.set_position(all.len() as u64);
        if !full {
            progress.finish_and_clear();
            return Ok(all);
        }
    }
}

async fn show(store: &dyn Store, id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let session = session(store, id).await?;
    let messages = messages(store, id, session.message_count).await?;
    writeln!(out, "session   {}", session.id)?;
    writeln!(out, "model     {}", session.model.as_deref().unwrap_or("-"))?;
    writeln!(out, "owner     {}", session.owner.as_deref().unwrap_or("-"))?;
    writeln!(out, "status    {}", session.status)?;
    writeln!(out, "created   {}", timestamp(session.created_at))?;
    writeln!(out, "updated   {}", timestamp(session.updated_at))?;
    writeln!(out, "messages  {} ({} tokens), version {}", session.message_count, session.token_count, session.version)?;
    if session.metadata.as_object().is_none_or(|m| !m.is_empty()) {
        writeln!(out, "metadata  {}", session.metadata)?;
    }
    writeln!(out)?;
    for message in &messages {
        let partial = if message.complete { "" } else { " [cut off]" };
        let prefix = format!("{:>4} {}: ", message.seq, message.role);
        let indent = " ".repeat(prefix.chars().count());
        let mut lines = message.content.lines();
        writeln!(out, "{prefix}{}{partial}", lines.next().unwrap_or_default())?;
        for line in lines {
            writeln!(out, "{indent}{line}")?;
        }
        if let Some(calls) = &message.tool_calls {
            writeln!(out, "{indent}tool calls: {calls}")?;
        }
    }
    Ok(())
}

async fn export(store: &dyn Store, id: &str, format: ExportFormat, out: &mut impl Write) -> anyhow::Result<()> {
    let session = session(store, id).await?;
    let messages = messages(store, id, session.message_count).await?;
    match format {
        ExportFormat::Json => {
            let document = json!({"session": session, "messages": messages});
            writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
        }
        ExportFormat::Jsonl => {
            for message in &messages {
                writeln!(out, "{}", serde_json::to_string(message)?)?;
            }
        }
        ExportFormat::Markdown => {
            writeln!(out, "# Session {}\n", session.id)?;
            writeln!(out, "- model: {}", session.model.as_deref().unwrap_or("-"))?;
            writeln!(out, "- owner: {}", session.owner.as_deref().unwrap_or("-"))?;
            writeln!(out, "- status: {}", session.status)?;
            writeln!(out, "- created: {}", timestamp(session.created_at))?;
            writeln!(out, "- updated: {}", timestamp(session.updated_at))?;
            writeln!(out, "- messages: {}, tokens: {}", session.message_count, session.token_count)?;
            for message in &messages {
                let partial = if message.complete { "" } else { " (cut off)" };
                writeln!(out, "\n## {} {}{partial}\n", message.seq, message.role)?;
                writeln!(out, "{}", message.content)?;
                if let Some(calls) = &message.tool_calls {
                    writeln!(out, "\n```json\n{}\n```", serde_json::to_string_pretty(calls)?)?;
                }
            }
        }
    }
    Ok(())
}

async fn delete(store: &dyn Store, id: &str, yes: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let session = session(store, id).await?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("not deleting session '{id}' without confirmation: stdin is not a terminal, pass --yes");
        }
        let mut stderr = std::io::stderr();
        write!(
            stderr,
            "Delete session '{id}' ({} messages, model {})? This cannot be undone. [y/N] ",
            session.message_count,
            session.model.as_deref().unwrap_or("-")
        )?;
        stderr.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).context("cannot read the answer")?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            writeln!(out, "kept session '{id}'")?;
            return Ok(());
        }
    }
    if !store.delete_session(id).await.with_context(|| format!("cannot delete session '{id}'"))? {
        bail!("no session '{id}' in the store (deleted meanwhile?)");
    }
    writeln!(out, "deleted session '{id}' ({} messages)", session.message_count)?;
    Ok(())
}

/// Unix milliseconds as `2026-11-24T10:32:05Z`.
fn timestamp(millis: i64) -> String {
    match u64::try_from(millis) {
        Ok(millis) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(millis)).to_string(),
        Err(_) => millis.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_path("sqlite://keel.db"), Some(PathBuf::from("keel.db")));
        assert_eq!(sqlite_path("SQLITE:///var/lib/keel.db?synchronous=full"), Some(PathBuf::from("/var/lib/keel.db")));
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
        assert_eq!(sqlite_path("sqlite://"), None);
    }

    #[test]
    fn store_url_prefers_the_flag_then_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("keel.toml");
        std::fs::write(&config, "[store]\nurl = \"sqlite:///tmp/x.db\"\n").unwrap();
        assert_eq!(store_url(Some("redis://h/0".into()), Some(config.clone())).unwrap(), "redis://h/0");
        assert_eq!(store_url(None, Some(config)).unwrap(), "sqlite:///tmp/x.db");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[store]\nurll = 1\n").unwrap();
        let err = store_url(None, Some(bad)).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("urll"), "{err}");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp(-5), "-5");
    }
}
