//! `keel incidents`: list, show and resolve the incidents in keel's store, reading the store
//! directly (keel need not run). A resolve made here is seen by every running keel: the
//! notification of it goes out from the store's job queue.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use keel_incident::webhook::rfc3339;
use keel_session::{Incident, IncidentStatus, Stores};

/// Flags of `keel incidents`.
#[derive(Debug, Args)]
#[command(after_help = "\
The store is the one `keel serve` uses: --store (or KEEL_STORE), else the [store] url of the
config file (--config, KEEL_CONFIG, or ./keel.toml if it exists), else sqlite://keel.db.

Examples:
  keel incidents list                                 the 50 newest incidents
  keel incidents list --status open
  keel incidents show inc_0193…                       the incident, its timeline and runbook
  keel incidents resolve inc_0193… --fixed-by \"restarted ollama after a disk cleanup\"
                                                      the fix is shown first in the next runbook
                                                      of the same kind of incident")]
pub(crate) struct IncidentsArgs {
    /// The store: sqlite://FILE, postgres://… or redis://… [default: the config file's
    /// [store] url, else sqlite://keel.db].
    #[arg(long, env = "KEEL_STORE", hide_env_values = true, global = true, value_name = "URL")]
    store: Option<String>,
    /// The keel config file whose [store] url to use. Default: ./keel.toml if it exists.
    #[arg(long, short, env = "KEEL_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: IncidentsCommand,
}

/// The `keel incidents` subcommands.
#[derive(Debug, Subcommand)]
enum IncidentsCommand {
    /// List incidents, newest first: id, status, kind, opened, title.
    List {
        /// Only incidents in this status.
        #[arg(long, value_enum, value_name = "STATUS")]
        status: Option<StatusArg>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
        limit: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show an incident: its header, its timeline and where its runbook is.
    Show {
        /// The incident id (inc_…).
        id: String,
        /// Print the runbook (Markdown) after the timeline.
        #[arg(long)]
        runbook: bool,
    },
    /// Resolve an incident by hand, and remember what fixed it.
    Resolve {
        /// The incident id (inc_…).
        id: String,
        /// What fixed it: shown first in the runbooks of later incidents of the same cause.
        #[arg(long, value_name = "TEXT")]
        fixed_by: Option<String>,
        /// Who resolved it (default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// An incident status on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StatusArg {
    /// Failing, nothing covers for it.
    Open,
    /// Failing, keel serves from a fallback.
    Mitigated,
    /// Over.
    Resolved,
}

impl From<StatusArg> for IncidentStatus {
    fn from(status: StatusArg) -> Self {
        match status {
            StatusArg::Open => IncidentStatus::Open,
            StatusArg::Mitigated => IncidentStatus::Mitigated,
            StatusArg::Resolved => IncidentStatus::Resolved,
        }
    }
}

/// Runs `keel incidents`.
pub(crate) async fn run(args: IncidentsArgs) -> anyhow::Result<()> {
    let stores = open_stores(args.store, args.config).await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        IncidentsCommand::List { status, limit, json } => {
            let limit = usize::try_from(limit).unwrap_or(50);
            let incidents = stores
                .incidents
                .list_incidents(status.map(Into::into), limit)
                .await
                .context("cannot list incidents")?;
            print_list(&incidents, json, &mut out)
        }
        IncidentsCommand::Show { id, runbook } => show(&stores, &id, runbook, &mut out).await,
        IncidentsCommand::Resolve { id, fixed_by, by } => {
            let by = by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "keel incidents resolve".to_owned());
            let Some(incident) = stores.incidents.resolve_incident(&id, &by, fixed_by.clone()).await? else {
                bail!("no incident '{id}' in the store; `keel incidents list` shows them");
            };
            writeln!(out, "{} is resolved.", incident.id)?;
            if fixed_by.is_some() {
                writeln!(out, "The fix is kept: the next runbook for \"{}\" shows it first.", incident.title)?;
            }
            Ok(())
        }
    }
}

/// Opens every part of the store `keel serve` uses (an SQLite file must exist already).
pub(crate) async fn open_stores(store: Option<String>, config: Option<PathBuf>) -> anyhow::Result<Stores> {
    let url = crate::sessions::store_url(store, config)?;
    if let Some(path) = crate::sessions::sqlite_path(&url)
        && !path.exists()
    {
        bail!(
            "no store at {}: keel creates it when `keel serve` first runs with that store; \
             pass --store URL or --config FILE (the one keel serve uses)",
            path.display()
        );
    }
    keel_session::open_stores(&url).await.with_context(|| format!("cannot open the store {url}"))
}

fn print_list(incidents: &[Incident], json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json {
        for incident in incidents {
            writeln!(out, "{}", serde_json::to_string(incident)?)?;
        }
        return Ok(());
    }
    if incidents.is_empty() {
        writeln!(out, "No incidents.")?;
        return Ok(());
    }
    writeln!(out, "{:<40} {:<10} {:<16} {:<20} TITLE", "ID", "STATUS", "KIND", "OPENED")?;
    for incident in incidents {
        writeln!(
            out,
            "{:<40} {:<10} {:<16} {:<20} {}",
            incident.id,
            incident.status.as_str(),
            incident.kind,
            &rfc3339(incident.opened_at)[..19].replace('T', " "),
            incident.title
        )?;
    }
    Ok(())
}

async fn show(stores: &Stores, id: &str, with_runbook: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let Some(incident) = stores.incidents.incident(id).await? else {
        bail!("no incident '{id}' in the store; `keel incidents list` shows them");
    };
    writeln!(out, "{}  {}  ({})", incident.id, incident.status, incident.kind)?;
    writeln!(out, "{}", incident.title)?;
    writeln!(out, "opened   {}", rfc3339(incident.opened_at))?;
    if let Some(at) = incident.mitigated_at {
        writeln!(out, "mitigated {}", rfc3339(at))?;
    }
    if let Some(at) = incident.resolved_at {
        writeln!(out, "resolved {}", rfc3339(at))?;
    }
    writeln!(out, "\nTimeline:")?;
    for event in stores.incidents.incident_events(id).await? {
        writeln!(out, "  {}  {:<26} {}", rfc3339(event.at), event.event, event.detail)?;
    }
    match stores.incidents.runbook(id).await? {
        Some(runbook) if with_runbook => writeln!(out, "\n{}", runbook.markdown)?,
        Some(runbook) => writeln!(
            out,
            "\nRunbook: written {} by {}; `keel incidents show {id} --runbook` prints it.",
            rfc3339(runbook.generated_at),
            runbook.source
        )?,
        None => writeln!(out, "\nNo runbook yet: `keel runbook generate --incident {id}` writes one now.")?,
    }
    Ok(())
}
