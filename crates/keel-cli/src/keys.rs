//! `keel keys`: create, list and revoke the API keys kept in keel's store, reading and writing
//! the store directly (keel need not run; running keel instances pick the changes up by
//! themselves).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use keel_session::{KeyStore, NewKey, StoreError, StoredKey, generate_secret};
use serde_json::json;

/// Flags of `keel keys`.
#[derive(Debug, Args)]
#[command(after_help = "\
Keys live in the store `keel serve` uses: --store (or KEEL_STORE), else the [store] url of the
config file (--config, KEEL_CONFIG, or ./keel.toml if it exists), else sqlite://keel.db. Every
keel instance using that store sees a new or revoked key within a second, without a restart.
Only a key's SHA-256 hash and the first 8 characters of its secret are stored; the secret is
printed once, by `create`.

Examples:
  keel keys create ci-bot                             a key for the model endpoints (inference)
  keel keys create ops --scope admin --scope inference
  keel keys create nightly --requests-per-minute 30 --tokens-per-minute 200000 --priority batch
  KEY=$(keel keys create ci-bot)                      the secret alone is on stdout
  keel keys list                                      every key, revoked ones too
  keel keys revoke ci-bot                             refused by keel within a second
  keel keys --store postgres://keel@db/keel list")]
pub(crate) struct KeysArgs {
    /// The store: sqlite://FILE, postgres://… or redis://… [default: the config file's
    /// [store] url, else sqlite://keel.db].
    #[arg(long, env = "KEEL_STORE", hide_env_values = true, global = true, value_name = "URL")]
    store: Option<String>,
    /// The keel config file whose [store] url to use. Default: ./keel.toml if it exists.
    #[arg(long, short, env = "KEEL_CONFIG", global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: KeysCommand,
}

/// The `keel keys` subcommands.
#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print its secret — the only time it is shown.
    #[command(after_help = "\
The secret goes to stdout on a line of its own, the rest to stderr, so `KEY=$(keel keys create
NAME)` captures just the secret. Clients send it as `Authorization: Bearer <secret>` or
`X-API-Key: <secret>`. A name taken by a key that is not revoked is refused; revoke that key
first to reuse the name.")]
    Create(CreateArgs),
    /// List the keys: name, start of the secret, scopes, limits, priority, created, revoked.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: keel instances using the store refuse it within a second. Cannot be undone
    /// (create a new key, which may have the same name).
    Revoke {
        /// The key's name (as `keel keys list` shows it).
        name: String,
    },
}

/// Flags of `keel keys create`.
#[derive(Debug, Args)]
struct CreateArgs {
    /// The key's name: who or what holds it (an agent, a team, a CI job). Shown in logs and
    /// `keel keys list`, and as the owner of the sessions it opens.
    name: String,
    /// What the key may do; repeat the flag (or separate with commas) for several
    /// [default: inference].
    #[arg(long = "scope", value_enum, value_delimiter = ',', value_name = "SCOPE")]
    scopes: Vec<ScopeArg>,
    /// The most requests per minute this key may make [default: no limit of its own].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64), value_name = "N")]
    requests_per_minute: Option<u64>,
    /// The most tokens per minute this key may use (prompt and answer) [default: no limit of
    /// its own].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64), value_name = "N")]
    tokens_per_minute: Option<u64>,
    /// The priority of this key's requests when keel has to queue [default: normal].
    #[arg(long, value_enum, value_name = "PRIORITY")]
    priority: Option<PriorityArg>,
}

/// A scope on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScopeArg {
    /// The model endpoints: chat, generate, embeddings, the OpenAI-compatible /v1 API.
    Inference,
    /// keel's own API (/keel/*), /metrics, and model management when it is allowed.
    Admin,
    /// Model management only (pull, push, create, copy, delete), when it is allowed.
    Models,
    /// Posting events only (POST /keel/events, /keel/events/alertmanager): for monitors.
    Events,
}

impl ScopeArg {
    fn as_str(self) -> &'static str {
        match self {
            ScopeArg::Inference => "inference",
            ScopeArg::Admin => "admin",
            ScopeArg::Models => "models",
            ScopeArg::Events => "events",
        }
    }
}

/// A priority on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PriorityArg {
    /// A person waits for the answer: served first.
    Interactive,
    /// The default.
    Normal,
    /// Background work: served when nothing more urgent waits.
    Batch,
}

impl PriorityArg {
    fn as_str(self) -> &'static str {
        match self {
            PriorityArg::Interactive => "interactive",
            PriorityArg::Normal => "normal",
            PriorityArg::Batch => "batch",
        }
    }
}

/// Runs `keel keys`.
pub(crate) async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let url = crate::sessions::store_url(args.store, args.config)?;
    let creating = matches!(args.command, KeysCommand::Create(_));
    let keys = open(&url, creating).await?;
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    match args.command {
        KeysCommand::Create(create_args) => create(keys.as_ref(), &url, create_args, &mut out, &mut err).await,
        KeysCommand::List { json } => list(keys.as_ref(), json, &mut out).await,
        KeysCommand::Revoke { name } => revoke(keys.as_ref(), &name, &mut out).await,
    }
}

/// Opens the store's keys. Only `create` makes a SQLite file that does not exist yet (so keys can
/// be made before keel first runs); reading a missing file is an error naming it.
async fn open(url: &str, create: bool) -> anyhow::Result<Arc<dyn KeyStore>> {
    if !create
        && let Some(path) = crate::sessions::sqlite_path(url)
        && !path.exists()
    {
        bail!(
            "no store at {}: `keel keys create` or `keel serve` creates it; pass --store URL or --config FILE \
             (the one keel serve uses)",
            path.display()
        );
    }
    keel_session::open_key_store(url)
        .await
        .with_context(|| format!("cannot open the key store {}", keel_session::redact_url(url)))
}

async fn create(
    keys: &dyn KeyStore,
    url: &str,
    args: CreateArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<()> {
    let mut scopes: Vec<&str> = args.scopes.iter().map(|scope| scope.as_str()).collect();
    if scopes.is_empty() {
        scopes.push(ScopeArg::Inference.as_str());
    }
    let secret = generate_secret();
    let mut new = NewKey::new(args.name.clone(), &secret).with_scopes(scopes);
    new.requests_per_minute = args.requests_per_minute;
    new.tokens_per_minute = args.tokens_per_minute;
    new.priority = args.priority.map(|priority| priority.as_str().to_owned());
    let key = match keys.create_key(new).await {
        Ok(key) => key,
        Err(StoreError::KeyExists { name }) => bail!(
            "a key named '{name}' exists and is not revoked: choose another name, or `keel keys revoke {name}` \
             first"
        ),
        Err(error) => return Err(error).with_context(|| format!("cannot create the key '{}'", args.name)),
    };
    writeln!(
        err,
        "Created API key '{}' in {} — scopes {}, {}, priority {}. Its secret:",
        key.name,
        keel_session::redact_url(url),
        key.scopes.join(","),
        limits(&key),
        key.priority.as_deref().unwrap_or("normal (default)"),
    )?;
    err.flush()?;
    writeln!(out, "{secret}")?;
    out.flush()?;
    let hint = format!("{}…", key.prefix);
    writeln!(
        err,
        "This is the only time the secret is shown: keel keeps only its hash. Store it somewhere safe now.\n\
         Clients send it with each request, in either header:\n  \
         Authorization: Bearer {hint}\n  \
         X-API-Key: {hint}\n\
         keel instances using this store accept it within a second (no restart)."
    )?;
    Ok(())
}

async fn list(keys: &dyn KeyStore, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let keys = keys.list_keys().await.context("cannot list the keys")?;
    if json {
        for key in &keys {
            let line = json!({
                "name": key.name,
                "prefix": key.prefix,
                "scopes": key.scopes,
                "requests_per_minute": key.requests_per_minute,
                "tokens_per_minute": key.tokens_per_minute,
                "priority": key.priority,
                "created_at": key.created_at,
                "revoked_at": key.revoked_at,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    if keys.is_empty() {
        writeln!(out, "no keys (`keel keys create NAME` makes one)")?;
        return Ok(());
    }
    let dash = || "-".to_owned();
    let rows: Vec<[String; 8]> = keys
        .iter()
        .map(|key| {
            [
                key.name.clone(),
                format!("{}…", key.prefix),
                key.scopes.join(","),
                key.requests_per_minute.map_or_else(dash, |n| n.to_string()),
                key.tokens_per_minute.map_or_else(dash, |n| n.to_string()),
                key.priority.clone().unwrap_or_else(dash),
                timestamp(key.created_at),
                key.revoked_at.map_or_else(dash, timestamp),
            ]
        })
        .collect();
    let header = ["NAME", "PREFIX", "SCOPES", "REQ/MIN", "TOKENS/MIN", "PRIORITY", "CREATED", "REVOKED"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let [w0, w1, w2, w3, w4, w5, w6, _] = widths;
    let [h0, h1, h2, h3, h4, h5, h6, h7] = header;
    writeln!(out, "{h0:<w0$}  {h1:<w1$}  {h2:<w2$}  {h3:>w3$}  {h4:>w4$}  {h5:<w5$}  {h6:<w6$}  {h7}")?;
    for [name, prefix, scopes, rpm, tpm, priority, created, revoked] in &rows {
        writeln!(
            out,
            "{name:<w0$}  {prefix:<w1$}  {scopes:<w2$}  {rpm:>w3$}  {tpm:>w4$}  {priority:<w5$}  {created:<w6$}  {revoked}"
        )?;
    }
    Ok(())
}

async fn revoke(keys: &dyn KeyStore, name: &str, out: &mut impl Write) -> anyhow::Result<()> {
    if !keys.revoke_key(name).await.with_context(|| format!("cannot revoke the key '{name}'"))? {
        bail!("no active key named '{name}' in the store (`keel keys list` shows the keys)");
    }
    writeln!(out, "Revoked API key '{name}'. keel instances using this store refuse it within a second.")?;
    Ok(())
}

/// The limits of a key, for a sentence.
fn limits(key: &StoredKey) -> String {
    match (key.requests_per_minute, key.tokens_per_minute) {
        (None, None) => "no limits of its own".to_owned(),
        (Some(requests), None) => format!("at most {requests} requests/min"),
        (None, Some(tokens)) => format!("at most {tokens} tokens/min"),
        (Some(requests), Some(tokens)) => format!("at most {requests} requests/min and {tokens} tokens/min"),
    }
}

/// Unix milliseconds as `2026-11-24 10:32 UTC`.
fn timestamp(millis: i64) -> String {
    let Ok(millis) = u64::try_from(millis) else {
        return millis.to_string();
    };
    // `2026-11-24T10:32:05Z` → `2026-11-24 10:32 UTC`.
    let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(millis)).to_string();
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_readable() {
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14 22:13 UTC");
        assert_eq!(timestamp(-5), "-5");
    }

    #[test]
    fn limits_read_as_a_sentence() {
        let new = NewKey::new("k", "keel_x");
        let key = StoredKey {
            name: new.name,
            hash: new.hash,
            prefix: new.prefix,
            scopes: new.scopes,
            requests_per_minute: None,
            tokens_per_minute: None,
            priority: None,
            created_at: 0,
            revoked_at: None,
        };
        assert_eq!(limits(&key), "no limits of its own");
        let key = StoredKey { requests_per_minute: Some(5), tokens_per_minute: Some(9), ..key };
        assert_eq!(limits(&key), "at most 5 requests/min and 9 tokens/min");
    }
}
