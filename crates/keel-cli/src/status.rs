//! `keel status`: ask a running keel what it sees.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;

use crate::connect::ConnectArgs;

/// Flags of `keel status`.
#[derive(Debug, Args)]
#[command(after_help = "\
keel is found at --url (or KEEL_URL), else at the [server] listen of the config file (--config,
KEEL_CONFIG, or ./keel.toml if it exists), else at http://127.0.0.1:11435.")]
pub(crate) struct StatusArgs {
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
    /// Where keel is, and the API key (admin scope, when keel has [auth] keys).
    #[command(flatten)]
    connect: ConnectArgs,
}

pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let keel = args.connect.resolve()?;
    let url = crate::connect::join(&keel.url, &["keel", "status"])?;
    let mut request = reqwest::Client::new().get(url.clone());
    if let Some(key) = &keel.key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|err| {
        anyhow::anyhow!(
            "cannot reach keel at {} ({}): {}. Is `keel serve` running, and is that its address?",
            keel.url,
            keel.origin,
            crate::connect::root_cause(&err)
        )
    })?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("keel answered something that is not JSON")?;
    if !status.is_success() {
        anyhow::bail!("keel answered {status}: {body}");
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "keel {} on {}, up {}s",
        body["version"].as_str().unwrap_or("?"),
        body["listen"].as_str().unwrap_or("?"),
        body["uptime_seconds"]
    )?;
    writeln!(out, "\nupstreams:")?;
    for up in body["upstreams"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:<12} {:<32} {}",
            up["name"].as_str().unwrap_or(""),
            up["url"].as_str().unwrap_or(""),
            up["dialect"].as_str().unwrap_or("")
        )?;
    }
    writeln!(out, "\ntargets:")?;
    writeln!(out, "  {:<32} {:<10} {:>8} {:>8}  last failure", "name", "breaker", "requests", "failures")?;
    for t in body["targets"].as_array().into_iter().flatten() {
        let last = t["last_failure"]["class"].as_str().unwrap_or("-");
        writeln!(
            out,
            "  {:<32} {:<10} {:>8} {:>8}  {last}",
            t["name"].as_str().unwrap_or(""),
            t["breaker"].as_str().unwrap_or(""),
            t["requests"].as_u64().unwrap_or(0),
            t["failures"].as_u64().unwrap_or(0)
        )?;
    }
    Ok(())
}
