//! `keel init`: write the commented default config.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

/// Flags of `keel init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Where to write the config; `-` prints it to stdout.
    #[arg(default_value = "keel.toml", value_name = "FILE")]
    path: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: InitArgs) -> anyhow::Result<()> {
    let text = keel_gateway::config::template::DEFAULT_CONFIG;
    if args.path.as_os_str() == "-" {
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(());
    }
    if args.path.exists() && !args.force {
        anyhow::bail!("{} already exists; pass --force to overwrite it", args.path.display());
    }
    std::fs::write(&args.path, text).with_context(|| format!("cannot write {}", args.path.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "wrote {}", args.path.display())?;
    writeln!(out, "next: edit the [[upstream]] url if Ollama is not on 127.0.0.1:11434, then run `keel serve`")?;
    Ok(())
}
