//! `keel doctor`: checks what keel needs before (or while) it serves — the config, the store,
//! each upstream and the routes' models on it, Redis when configured, the clock, the listen
//! address — and prints each problem with its fix. Exits non-zero when it finds a problem.

mod redis_ping;
mod upstreams;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use keel_gateway::config::{Config, Overrides};

/// Flags of `keel doctor`.
#[derive(Debug, Args)]
#[command(after_help = "Exit status: 0 when nothing is wrong (warnings allowed), 1 when a problem was found.

Examples:
  keel doctor                              check ./keel.toml (or the built-in defaults)
  keel doctor --config /etc/keel/keel.toml check the installed config")]
pub(crate) struct DoctorArgs {
    /// Config file. Default: ./keel.toml if it exists, else built-in defaults.
    #[arg(long, short, env = "KEEL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Store to check instead of the config's [store] url.
    #[arg(long, env = "KEEL_STORE", value_name = "URL")]
    store: Option<String>,
    /// How long each network check may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    timeout: Duration,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finding {
    /// Fine: what was seen.
    Ok(String),
    /// Works, but worth knowing: what, and what to do.
    Warning(String, String),
    /// keel will not work as configured: what is wrong, and the fix.
    Problem(String, String),
}

/// The findings so far, printed as they come.
struct Report<W: std::io::Write> {
    out: W,
    problems: usize,
    warnings: usize,
}

impl<W: std::io::Write> Report<W> {
    fn add(&mut self, subject: &str, finding: Finding) -> std::io::Result<()> {
        match finding {
            Finding::Ok(what) => writeln!(self.out, "  ok       {subject}: {what}"),
            Finding::Warning(what, fix) => {
                self.warnings += 1;
                writeln!(self.out, "  warning  {subject}: {what}\n           fix: {fix}")
            }
            Finding::Problem(what, fix) => {
                self.problems += 1;
                writeln!(self.out, "  PROBLEM  {subject}: {what}\n           fix: {fix}")
            }
        }
    }
}

pub(crate) async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut report = Report { out: std::io::stdout().lock(), problems: 0, warnings: 0 };
    let path = crate::config_file::locate(args.config);
    let source =
        path.as_ref().map_or_else(|| "built-in defaults (no keel.toml here)".to_owned(), |p| p.display().to_string());
    writeln!(report.out, "keel doctor: config {source}")?;
    let overrides = Overrides { store: args.store, ..Overrides::default() };
    let env = |name: &str| std::env::var(name).ok();
    let loaded = match &path {
        Some(path) => Config::load(path, &overrides, &env),
        None => Config::without_file(&overrides, &env),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(err) => {
            let fix = "correct the setting named above (`keel init -` prints every setting with its default)";
            report.add("config", Finding::Problem(err.to_string(), fix.into()))?;
            return finish(report);
        }
    };
    report.add("config", config_summary(&config))?;
    report.add("traces", traces(&config))?;
    let (finding, keys) = store(&config.store_url, args.timeout).await;
    report.add(&format!("store {}", config.store_url), finding)?;
    if let Some(keys) = keys {
        report.add("api keys", api_keys(&config, keys.as_ref(), args.timeout).await)?;
    }
    let mut clocks = Vec::new();
    for upstream in &config.upstreams {
        let checked = upstreams::check(upstream, &config, args.timeout).await;
        for (subject, finding) in checked.findings {
            report.add(&subject, finding)?;
        }
        clocks.extend(checked.clock.map(|at| (format!("upstream {:?}", upstream.name), at)));
    }
    for (what, url) in redis_urls(&config) {
        let (finding, clock) = redis_ping::check(&url, args.timeout).await;
        report.add(&format!("redis {url} ({what})"), finding)?;
        clocks.extend(clock.map(|at| (format!("redis {url}"), at)));
    }
    if config.incidents.enabled {
        for (index, endpoint) in config.incidents.notify.iter().enumerate() {
            let subject = format!("notify #{} {}", index + 1, endpoint.url);
            report.add(&subject, receiver(endpoint, args.timeout).await)?;
        }
    }
    report.add("clock", clock(&clocks))?;
    report.add(&format!("listen {}", config.server.listen), listen(&config, args.timeout).await)?;
    finish(report)
}

/// The closing line and the exit status.
fn finish<W: std::io::Write>(mut report: Report<W>) -> anyhow::Result<()> {
    match (report.problems, report.warnings) {
        (0, 0) => writeln!(report.out, "no problems found")?,
        (0, warnings) => writeln!(report.out, "no problems found ({warnings} warning(s))")?,
        (problems, _) => {
            writeln!(report.out, "{problems} problem(s) found")?;
            report.out.flush()?;
            anyhow::bail!("keel doctor found {problems} problem(s); each is listed above with its fix");
        }
    }
    Ok(())
}

fn config_summary(config: &Config) -> Finding {
    let keys = config.api_keys().len();
    let auth = if keys == 0 { "no [auth] keys".to_owned() } else { format!("{keys} [auth] key(s)") };
    Finding::Ok(format!("{} upstream(s), {} route(s), {auth}", config.upstreams.len(), config.routes.len()))
}

/// Where traces go, from the environment (`OTEL_*`, `LANGFUSE_*`).
fn traces(config: &Config) -> Finding {
    let tracing = &config.tracing;
    if let Some(problem) = &tracing.problem {
        let fix = "correct the variable named above; keel serves without traces until then";
        return Finding::Problem(problem.clone(), fix.into());
    }
    if tracing.exports.is_empty() {
        return Finding::Ok("not sent (set OTEL_EXPORTER_OTLP_ENDPOINT or LANGFUSE_* to send them)".into());
    }
    let places: Vec<String> = tracing.exports.iter().map(|e| format!("{} {}", e.destination, e.endpoint)).collect();
    Finding::Ok(format!("sent to {}", places.join(", ")))
}

/// Opens the store (which applies its migrations) and writes and deletes a probe session; gives
/// its API keys (`keel keys`) when it opened.
async fn store(url: &str, timeout: Duration) -> (Finding, Option<std::sync::Arc<dyn keel_session::KeyStore>>) {
    let fix = match url.split_once(':').map(|(scheme, _)| scheme) {
        Some("sqlite") => {
            "make the file's directory writable by the user keel runs as, or point [store] url / --store elsewhere"
        }
        Some("postgres" | "postgresql") => {
            "check that PostgreSQL runs and the URL's user may create tables in its database"
        }
        Some("redis" | "rediss") => "check that Redis runs at that address and accepts writes",
        _ => "use sqlite://FILE, postgres://… or redis://…",
    };
    let probe = async {
        let (store, keys) = keel_session::open_with_keys(url).await.map_err(|err| format!("cannot open it: {err}"))?;
        let id = format!("keel-doctor-{}-{}", std::process::id(), keel_session::now_millis());
        store
            .create_session(keel_session::NewSession::new(id.clone()))
            .await
            .map_err(|err| format!("opened, but cannot write to it: {err}"))?;
        let _ = store.delete_session(&id).await;
        Ok::<_, String>((store.backend(), keys))
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok((backend, keys))) => {
            (Finding::Ok(format!("{backend}: opened, migrations applied, writable")), Some(keys))
        }
        Ok(Err(what)) => (Finding::Problem(what, fix.into()), None),
        Err(_) => {
            (Finding::Problem(format!("no answer within {}", humantime::format_duration(timeout)), fix.into()), None)
        }
    }
}

/// Whether keel has the API keys it needs: listening off loopback without `[auth]` keys (and
/// without `allow_remote_without_auth`), `keel serve` refuses to start until the store holds one.
async fn api_keys(config: &Config, keys: &dyn keel_session::KeyStore, timeout: Duration) -> Finding {
    let unread = |what: String| Finding::Problem(what, "check the store as for the store line above".into());
    let active = match tokio::time::timeout(timeout, keys.active_keys()).await {
        Ok(Ok(active)) => active.len(),
        Ok(Err(err)) => return unread(format!("cannot read the keys in the store: {err}")),
        Err(_) => {
            return unread(format!("the store did not list its keys within {}", humantime::format_duration(timeout)));
        }
    };
    let configured = config.api_keys().len();
    if config.server.needs_stored_keys && active == 0 {
        let fix = "create one: `keel keys create NAME` (or take another way out named above)";
        return Finding::Problem(
            format!("keel serve will refuse to start: {}", config.unprotected_listen()),
            fix.into(),
        );
    }
    Finding::Ok(match (configured, active) {
        (0, 0) if config.server.listen.ip().is_loopback() => {
            "none (keel listens on loopback; anyone on this machine may use it)".to_owned()
        }
        (0, 0) => "none; [server] allow_remote_without_auth = true lets anyone on the network use it".to_owned(),
        (configured, active) => format!("{configured} in [auth], {active} active in the store (`keel keys list`)"),
    })
}

/// Whether a `[[notify]]` receiver can be reached: a `GET` of its URL (nothing is delivered); any
/// HTTP answer means keel's webhooks will arrive there.
async fn receiver(endpoint: &keel_incident::notify::Endpoint, timeout: Duration) -> Finding {
    let fix = "start the receiver, or correct this [[notify]] url (for https with your own CA, set its ca_file)";
    let client = match keel_outbound::Client::new(&endpoint.ca) {
        Ok(client) => client,
        Err(error) => return Finding::Problem(format!("cannot set up TLS for it: {error}"), fix.into()),
    };
    let request = match http::Request::get(endpoint.url.as_str()).body(bytes::Bytes::new()) {
        Ok(request) => request,
        Err(error) => return Finding::Problem(format!("not a URL keel can call: {error}"), fix.into()),
    };
    match client.send(request, timeout).await {
        Ok(answer) => Finding::Ok(format!("reachable (a GET was answered {})", answer.status())),
        Err(error) => {
            Finding::Problem(format!("not reachable: {error}; incident notifications would not arrive"), fix.into())
        }
    }
}

/// The Redis servers the config uses, and for what.
fn redis_urls(config: &Config) -> Vec<(&'static str, String)> {
    let mut urls = Vec::new();
    if let Some(url) = &config.limits.store {
        urls.push(("[limits] store", url.clone()));
    }
    if let Some(url) = &config.breaker.shared {
        urls.push(("[breaker] shared", url.clone()));
    }
    urls
}

/// Most difference between this machine's clock and another's before it is a problem.
const MAX_SKEW: Duration = Duration::from_secs(5);
/// A difference worth a warning (HTTP dates have whole seconds: a second off is rounding).
const NOTICEABLE_SKEW: Duration = Duration::from_secs(2);

/// This machine's clock against the servers that told their time (HTTP `Date`, Redis `TIME`).
fn clock(others: &[(String, SystemTime)]) -> Finding {
    let now = SystemTime::now();
    let worst = others
        .iter()
        .map(|(who, at)| {
            let skew = now.duration_since(*at).unwrap_or_else(|e| e.duration());
            (who, skew)
        })
        .max_by_key(|(_, skew)| *skew);
    match worst {
        None => Finding::Ok("no server told its time to compare with".into()),
        Some((who, skew)) if skew > MAX_SKEW => Finding::Problem(
            format!("this machine's clock is {} off {who}'s", whole_seconds(skew)),
            "turn on time sync on both machines (`timedatectl set-ntp true`): sessions' times and shared rate limits depend on it".into(),
        ),
        Some((who, skew)) if skew > NOTICEABLE_SKEW => Finding::Warning(
            format!("this machine's clock is {} off {who}'s", whole_seconds(skew)),
            "turn on time sync (`timedatectl set-ntp true`) before it drifts further".into(),
        ),
        Some(_) => Finding::Ok(format!("agrees with {} server(s) within {}", others.len(), humantime::format_duration(NOTICEABLE_SKEW))),
    }
}

/// A skew as people say it, to the nearest second (`1m 30s`).
fn whole_seconds(skew: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(skew.as_secs_f64().round() as u64))
}

/// Whether keel can listen where it is configured to: free, or a keel already serving there.
async fn listen(config: &Config, timeout: Duration) -> Finding {
    let addr = config.server.listen;
    if std::net::TcpListener::bind(addr).is_ok() {
        return Finding::Ok("free for `keel serve`".into());
    }
    let client = reqwest::Client::builder().timeout(timeout).build().unwrap_or_default();
    match client.get(format!("http://{addr}/keel/health")).send().await {
        Ok(response) if response.status().is_success() => Finding::Ok("a keel is serving here".into()),
        _ => Finding::Problem(
            "the address is taken by something that is not keel".into(),
            "stop what listens there (`ss -ltnp` shows it) or set [server] listen / --listen to another address".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_a_problem_past_five_seconds() {
        let now = SystemTime::now();
        assert!(matches!(clock(&[]), Finding::Ok(_)));
        assert!(matches!(clock(&[("a".into(), now - Duration::from_secs(1))]), Finding::Ok(_)));
        assert!(matches!(clock(&[("a".into(), now - Duration::from_secs(4))]), Finding::Warning(..)));
        let Finding::Problem(what, fix) = clock(&[("upstream \"x\"".into(), now + Duration::from_secs(90))]) else {
            panic!("a clock 90 s off is a problem")
        };
        assert!(what.contains("1m 30s off upstream \"x\""), "{what}");
        assert!(fix.contains("timedatectl"), "{fix}");
    }

    #[test]
    fn problems_make_the_report_fail_and_are_printed_with_their_fix() {
        let mut report = Report { out: Vec::new(), problems: 0, warnings: 0 };
        report.add("store", Finding::Ok("fine".into())).unwrap();
        report.add("upstream", Finding::Problem("down".into(), "start it".into())).unwrap();
        let text = String::from_utf8(report.out.clone()).unwrap();
        assert!(text.contains("  ok       store: fine"), "{text}");
        assert!(text.contains("  PROBLEM  upstream: down\n           fix: start it"), "{text}");
        assert!(finish(report).is_err());
    }
}
