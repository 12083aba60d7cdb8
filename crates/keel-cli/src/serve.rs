//! `keel serve`: the proxy.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use keel_gateway::Gateway;
use keel_gateway::config::{Config, Overrides};

/// Flags of `keel serve`. Each also reads a `KEEL_*` environment variable; flags win over the
/// environment, which wins over the config file.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Config file. Default: ./keel.toml if it exists, else built-in defaults (see `keel init`).
    #[arg(long, short, env = "KEEL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:11435].
    #[arg(long, env = "KEEL_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Shorthand for one Ollama upstream named "default" with a route "*" to it; replaces the
    /// config file's upstreams and routes [default: http://127.0.0.1:11434].
    #[arg(long, env = "KEEL_UPSTREAM", value_name = "URL")]
    upstream: Option<String>,
    /// Store for sessions, incidents and checkpoints: sqlite://FILE, postgres://… or redis://…
    /// [default: sqlite://keel.db].
    #[arg(long, env = "KEEL_STORE", value_name = "URL")]
    store: Option<String>,
    /// Log format on stderr: text or json.
    #[arg(long, env = "KEEL_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter in RUST_LOG syntax, e.g. info or keel_gateway=debug.
    #[arg(long, env = "KEEL_LOG", value_name = "FILTER")]
    log_level: Option<String>,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        upstream: args.upstream,
        store: args.store,
        log_format: args.log_format,
        log_level: args.log_level,
    };
    let env = |name: &str| std::env::var(name).ok();
    let path = crate::config_file::locate(args.config);
    let config = match &path {
        Some(path) => Config::load(path, &overrides, &env)?,
        None => Config::without_file(&overrides, &env)?,
    };
    keel_telemetry::init_logging(config.log.format, &config.log.level);
    crate::open_files::raise_and_log();

    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}: is another keel (or anything else) using it? Stop it or pass --listen ADDR")
    })?;
    let stores = keel_session::open_stores(&config.store_url).await.with_context(|| {
        format!(
            "cannot open the session store {}: check [store] url / --store (sqlite://FILE, postgres://…, redis://…)",
            config.store_url
        )
    })?;
    // The API keys kept in the store (`keel keys`) are read once now, then every 500 ms.
    if config.server.needs_stored_keys {
        let keys = stores.keys.active_keys().await.context("cannot read the API keys in the store")?;
        if keys.is_empty() {
            anyhow::bail!(config.unprotected_listen());
        }
    }
    let gateway = Gateway::with_stores(config.clone(), stores).await?;
    // The bound address, not the configured one: `--listen 127.0.0.1:0` names the port it got.
    let listen = listener.local_addr().unwrap_or(listen);
    tracing::info!(
        listen = %listen,
        config = %path.as_ref().map_or_else(|| "built-in defaults".to_owned(), |p| p.display().to_string()),
        store = %config.store_url,
        "keel is serving: point agents at http://{listen}"
    );
    for upstream in &config.upstreams {
        tracing::info!(name = %upstream.name, url = %upstream.upstream.base_url(), dialect = %upstream.upstream.dialect, "upstream");
    }
    keel_gateway::serve(listener, gateway, crate::shutdown_signal()).await?;
    Ok(())
}
