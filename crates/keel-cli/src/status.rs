//! `keel status`: ask a running keel what it sees.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;

/// Flags of `keel status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Base URL of the running keel.
    #[arg(long, env = "KEEL_URL", default_value = "http://127.0.0.1:11435", value_name = "URL")]
    url: String,
    /// API key with the admin scope (when keel has [auth] keys).
    #[arg(long, env = "KEEL_KEY", value_name = "KEY")]
    key: Option<String>,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let url = format!("{}/keel/status", args.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&url);
    if let Some(key) = &args.key {
        request = request.bearer_auth(key);
    }
    let response =
        request.send().await.with_context(|| format!("cannot reach keel at {url}: is `keel serve` running?"))?;
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
