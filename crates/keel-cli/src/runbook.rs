//! `keel runbook generate`: writes the runbook of an incident (or of a session, as if it had
//! timed out) now, from the store and the config: the read-only checks run at once, the
//! template's words, and — when a model route is set and keel answers — the model's words,
//! asked through the running keel so the guard validates them.
//!
//! `keel runbook deployment`: writes the runbook of the whole deployment (its upstreams, routes,
//! the failures local agents meet, daily checks) and Prometheus alerting rules for it, from the
//! config and — when keel runs — what its health probes learned.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use futures_util::future::BoxFuture;
use keel_gateway::config::{Config, Overrides};
use keel_incident::runbook::deployment::{self, AdmissionFacts, BreakerFacts, DeploymentFacts, RunningKeel};
use keel_incident::runbook::{self, Evidence, ModelWriter, model};
use keel_session::{Effect, Incident, IncidentEvent, IncidentStatus, Runbook, Stores, now_millis};
use serde_json::Value;

use crate::connect::{ConnectArgs, Keel};

/// A line of progress on stderr (stdout carries the runbook).
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Flags of `keel runbook`.
#[derive(Debug, Args)]
pub(crate) struct RunbookArgs {
    #[command(subcommand)]
    command: RunbookCommand,
}

/// The `keel runbook` subcommands.
#[derive(Debug, Subcommand)]
enum RunbookCommand {
    /// Write an incident's (or a session's) runbook now and print it.
    #[command(after_help = "\
The runbook is printed (Markdown) and, for an incident, stored (GET /keel/incidents/ID/runbook)
and written under [incidents] runbook_dir. The model route is --model, else [incidents] model;
it is asked through the running keel (--url), so its answer is repaired and validated; when it
does not answer, the template's runbook is kept.

Examples:
  keel runbook generate --incident inc_0193…
  keel runbook generate --incident inc_0193… --model llama3.2
  keel runbook generate --session chat-42 --no-model")]
    Generate(GenerateArgs),
    /// Write the deployment's runbook and Prometheus alerting rules for it.
    #[command(after_help = "\
Writes DIR/deployment-runbook.md (what this deployment is; each upstream, how to check and restart
it; each route's fallback chain; the failures local LLM agents meet, with the sign keel shows and
the fix; the alerts; the daily checks) and DIR/keel-alerts.yml (Prometheus alerting rules: each
upstream's breaker, 503s per routed model, open incidents, failed jobs and notifications,
structured output, shedding). DIR is --output, else [incidents] runbook_dir, else ./runbooks.

The upstreams, routes and store come from the config (--config, KEEL_CONFIG, or ./keel.toml if it
exists). When keel runs (--url, else the config's [server] listen), its health probes add each
server's version and loaded models; when it does not answer, the runbook says so.

Examples:
  keel runbook deployment
  keel runbook deployment --config /etc/keel/keel.toml --output /etc/keel/runbooks
  keel runbook deployment --url http://10.0.0.7:11435 --key \"$KEEL_KEY_OPS\"
  promtool check rules runbooks/keel-alerts.yml")]
    Deployment(DeploymentArgs),
}

/// Flags of `keel runbook generate`.
#[derive(Debug, Args)]
struct GenerateArgs {
    /// The incident whose runbook to write.
    #[arg(long, value_name = "ID", conflicts_with = "session", required_unless_present = "session")]
    incident: Option<String>,
    /// Write a runbook for this session as if it had timed out (nothing is stored).
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// The model route that writes it [default: [incidents] model].
    #[arg(long, value_name = "ROUTE")]
    model: Option<String>,
    /// The template only, no model.
    #[arg(long, conflicts_with = "model")]
    no_model: bool,
    /// The store [default: the config file's [store] url, else sqlite://keel.db].
    #[arg(long, env = "KEEL_STORE", hide_env_values = true, value_name = "URL")]
    store: Option<String>,
    /// Where the running keel is (for the model), and its key.
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Flags of `keel runbook deployment`.
#[derive(Debug, Args)]
struct DeploymentArgs {
    /// Where to write the runbook and the rules [default: [incidents] runbook_dir, else ./runbooks].
    #[arg(long, short, value_name = "DIR")]
    output: Option<PathBuf>,
    /// The config file, where the running keel is (for its probe results), and its key.
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs `keel runbook`.
pub(crate) async fn run(args: RunbookArgs) -> anyhow::Result<()> {
    match args.command {
        RunbookCommand::Generate(args) => generate(args).await,
        RunbookCommand::Deployment(args) => write_deployment(args).await,
    }
}

/// The config of `--config` (else `./keel.toml`, else the built-in defaults).
fn load_config(explicit: Option<PathBuf>) -> anyhow::Result<Config> {
    let env = |name: &str| std::env::var(name).ok();
    Ok(match crate::config_file::locate(explicit) {
        Some(path) => Config::load(&path, &Overrides::default(), &env)?,
        None => Config::without_file(&Overrides::default(), &env)?,
    })
}

/// Runs `keel runbook deployment`.
async fn write_deployment(args: DeploymentArgs) -> anyhow::Result<()> {
    let config = load_config(args.connect.config.clone())?;
    let keel = args.connect.resolve()?;
    let running = match crate::status::fetch(&keel).await {
        Ok(status) => {
            note!("Read the probe results of the running keel at {}.", keel.url);
            Some(RunningKeel::from_status(&status))
        }
        Err(why) => {
            note!("No probe results in the runbook (keel's health probes add them): {why:#}");
            None
        }
    };
    let facts = DeploymentFacts {
        deployment: config.deployment(),
        config_file: config
            .source
            .as_ref()
            .map(|path| std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()).display().to_string()),
        store_url: keel_session::redact_url(&config.store_url),
        breaker: BreakerFacts {
            failure_threshold: config.breaker.failure_threshold,
            cooldown: keel_types::duration::format(config.breaker.cooldown),
        },
        admission: config.admission.as_ref().map(|admission| AdmissionFacts {
            max_concurrent: admission.max_concurrent,
            max_queue: admission.max_queue,
            max_wait: keel_types::duration::format(admission.max_wait),
        }),
        notify_count: config.incidents.notify.len(),
        running,
        generated_at: now_millis(),
    };
    let markdown = deployment::render(&facts).map_err(anyhow::Error::msg)?;
    let rules = deployment::alerts_yaml(&facts);
    let dir = args.output.or_else(|| config.incidents.runbook_dir.clone()).unwrap_or_else(|| PathBuf::from("runbooks"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    for (file, text) in [(deployment::RUNBOOK_FILE, &markdown), (deployment::RULES_FILE, &rules)] {
        let path = dir.join(file);
        write_file(&path, text)?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(())
}

/// Writes `text` to `path` through a temporary file beside it, so a reader never sees half.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs `keel runbook generate`.
async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let config = load_config(args.connect.config.clone())?;
    let stores = crate::incidents::open_stores(args.store.clone(), args.connect.config.clone()).await?;
    let client = reqwest::Client::builder().no_proxy().build().context("cannot build the HTTP client")?;
    let deployment = config.deployment();
    note!("Gathering evidence and running the read-only checks…");
    let evidence = match (&args.incident, &args.session) {
        (Some(id), _) => {
            runbook::gather(stores.incidents.as_ref(), Some(stores.sessions.as_ref()), &deployment, &client, id)
                .await?
                .with_context(|| format!("no incident '{id}' in the store; `keel incidents list` shows them"))?
        }
        (None, Some(session)) => session_evidence(&stores, &deployment, &client, session).await?,
        (None, None) => bail!("give --incident ID or --session ID"),
    };
    let mut written = runbook::write_template(&evidence).map_err(anyhow::Error::msg)?;
    let route = if args.no_model { None } else { args.model.clone().or_else(|| config.incidents.model.clone()) };
    if let Some(route) = route {
        let writer = HttpWriter { keel: args.connect.resolve()?, client: client.clone() };
        let waiting = spinner(&format!("asking the model route '{route}' through keel"));
        let written_by_model = runbook::write_with_model(&evidence, &writer, &route).await;
        waiting.finish_and_clear();
        match written_by_model {
            Ok(runbook) => written = runbook,
            Err(why) => note!("The model's runbook is not usable ({why}); printing the template's."),
        }
    }
    if args.incident.is_some() {
        keep(&stores, &config, &written).await?;
    }
    std::io::stdout().lock().write_all(written.markdown.as_bytes())?;
    Ok(())
}

/// A spinner with the time waited on stderr when it is a terminal (a local model may take a
/// minute); a plain line otherwise.
fn spinner(what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        note!("{what}…");
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner().with_message(what.to_owned());
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}

/// Stores the runbook and writes its file under `runbook_dir`.
async fn keep(stores: &Stores, config: &Config, runbook: &Runbook) -> anyhow::Result<()> {
    stores.incidents.put_runbook(runbook.clone()).await.context("cannot store the runbook")?;
    if let Some(dir) = &config.incidents.runbook_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}.md", runbook.incident_id));
        std::fs::write(&path, &runbook.markdown).with_context(|| format!("cannot write {}", path.display()))?;
        note!("Stored, and written to {}.", path.display());
    }
    Ok(())
}

/// The evidence of a session as if it had just timed out (an incident that is not stored).
async fn session_evidence(
    stores: &Stores,
    deployment: &runbook::Deployment,
    client: &reqwest::Client,
    session_id: &str,
) -> anyhow::Result<Evidence> {
    let Some(session) = stores.sessions.get_session(session_id).await? else {
        bail!("no session '{session_id}' in the store; `keel sessions list` shows them");
    };
    let event = keel_incident::rules::session_timed_out(
        &session.id,
        session.owner.as_deref(),
        session.model.as_deref(),
        (now_millis() - session.updated_at) / 1000,
    );
    let now = now_millis();
    let incident = Incident {
        id: format!("session-{}", session.id),
        fingerprint: event.fingerprint.clone(),
        kind: event.kind.clone(),
        title: event.title.clone(),
        status: IncidentStatus::Open,
        upstream: None,
        model: None,
        opened_at: now,
        updated_at: now,
        mitigated_at: None,
        resolved_at: None,
        event_count: 1,
    };
    let events = vec![IncidentEvent {
        incident_id: incident.id.clone(),
        seq: 1,
        at: now,
        event: event.event,
        effect: Effect::Open,
        detail: event.detail,
    }];
    let playbook = stores.incidents.playbook(&incident.fingerprint).await?;
    let keel_health = format!("{}/keel/health", deployment.keel_url);
    let checks = vec![runbook::evidence::http_check(client, "keel itself", &keel_health).await];
    let messages = stores.sessions.messages(session_id, session.message_count.saturating_sub(8), 8).await?;
    let transcript = messages.into_iter().map(|message| (message.role, message.content)).collect();
    Ok(Evidence { incident, events, playbook, deployment: deployment.clone(), checks, transcript })
}

/// Asks a model through the running keel's `/api/chat`.
struct HttpWriter {
    keel: Keel,
    client: reqwest::Client,
}

impl ModelWriter for HttpWriter {
    fn ask<'a>(
        &'a self,
        route: &'a str,
        system: &'a str,
        prompt: String,
        schema: Value,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let url = crate::connect::join(&self.keel.url, &["api", "chat"]).map_err(|e| e.to_string())?;
            let mut request = self
                .client
                .post(url)
                .timeout(std::time::Duration::from_secs(120))
                .json(&model::chat_request(route, system, &prompt, schema));
            if let Some(key) = &self.keel.key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.map_err(|err| {
                format!("cannot reach keel at {}: {}", self.keel.url, crate::connect::root_cause(&err))
            })?;
            let status = response.status();
            let body = response.bytes().await.map_err(|err| err.to_string())?;
            if !status.is_success() {
                return Err(format!(
                    "keel answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ));
            }
            model::answer_content(&body)
        })
    }
}
