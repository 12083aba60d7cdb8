//! The deployment runbook: what one keel deployment is (keel, its store, the upstreams, the
//! routes), how to check and restart each model server, what happens when a route runs out of
//! targets, the failures local LLM agents meet (each with the sign keel shows and the fix), the
//! alerts and the daily checks. [`render`] lays [`DeploymentFacts`] out with `deployment.md.j2`
//! (minijinja, strict about undefined values); [`alerts_yaml`] writes Prometheus alerting rules
//! for the same deployment; [`RunningKeel::from_status`] reads what a running keel's
//! `GET /keel/status` says about its upstreams. Everything here is pure: the caller gathers the
//! facts.

use keel_types::ModelName;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;

use super::evidence::{Deployment, RouteFacts, UpstreamFacts};
use crate::webhook::rfc3339;

const TEMPLATE: &str = include_str!("deployment.md.j2");

/// The file the runbook is written to.
pub const RUNBOOK_FILE: &str = "deployment-runbook.md";

/// The file the alerting rules are written to.
pub const RULES_FILE: &str = "keel-alerts.yml";

/// The name of the one rule group in [`RULES_FILE`].
pub const RULE_GROUP: &str = "keel-deployment";

/// The failures of the catalogue, in the order the runbook lists them.
pub const FAILURES: [&str; 10] = [
    "Model not pulled",
    "Model too large for memory",
    "Context overflow",
    "Slow first token under load",
    "Queue full",
    "Malformed structured output",
    "Tool-call JSON errors",
    "Agent loops",
    "Hang on cold load",
    "Disk full for the store",
];

/// The most model names shown for one upstream's probe.
const MAX_MODELS_SHOWN: usize = 12;

/// The most `ollama pull` commands the catalogue lists.
const MAX_PULLS_SHOWN: usize = 6;

/// Everything the deployment runbook and its alerts are written from.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentFacts {
    /// keel's address, the upstreams and the routes.
    pub deployment: Deployment,
    /// The config file they come from (`None`: keel's built-in defaults).
    pub config_file: Option<String>,
    /// The store URL, password removed (see [`keel_session::redact_url`]; [`render`] removes it again).
    pub store_url: String,
    /// When breakers open and how long they stay open.
    pub breaker: BreakerFacts,
    /// The `[admission]` queue, when it is on.
    pub admission: Option<AdmissionFacts>,
    /// How many `[[notify]]` webhooks are configured.
    pub notify_count: usize,
    /// What the running keel said, `None` when it did not answer.
    pub running: Option<RunningKeel>,
    /// When the runbook is written, in Unix milliseconds.
    pub generated_at: i64,
}

/// The `[breaker]` settings a runbook reader needs.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerFacts {
    /// Consecutive failures that open a breaker (`0`: they do not).
    pub failure_threshold: u32,
    /// How long an open breaker refuses before it probes, as text (`30s`).
    pub cooldown: String,
}

/// The `[admission]` queue settings.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionFacts {
    /// Requests running at once per model.
    pub max_concurrent: usize,
    /// Requests waiting per model before keel sheds.
    pub max_queue: usize,
    /// The longest wait, as text (`30s`).
    pub max_wait: String,
}

/// What a running keel reported (`GET /keel/status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunningKeel {
    /// Its version.
    pub version: Option<String>,
    /// The last health probe of each upstream it knows.
    pub probes: Vec<ProbeFacts>,
}

/// What the last health probe of one upstream found.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeFacts {
    /// The upstream's name.
    pub upstream: String,
    /// Whether it answered (`None`: not probed yet, or probes are off).
    pub reachable: Option<bool>,
    /// The server's version, when it says.
    pub version: Option<String>,
    /// The models loaded in memory.
    pub models: Vec<String>,
    /// The models the server has (Ollama `/api/tags`), when keel read them.
    pub available: Option<Vec<String>>,
    /// Why the probe failed.
    pub error: Option<String>,
    /// How long ago the probe ran, in seconds.
    pub checked_seconds_ago: Option<u64>,
}

impl RunningKeel {
    /// Reads the `upstreams` of a `GET /keel/status` answer; every field is optional, so an
    /// older or newer keel gives what it has.
    pub fn from_status(status: &Value) -> RunningKeel {
        let text = |value: &Value| value.as_str().filter(|text| !text.is_empty()).map(str::to_owned);
        let names = |value: &Value| -> Option<Vec<String>> {
            value.as_array().map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        };
        let probes = status["upstreams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|upstream| {
                let health = &upstream["health"];
                let reachable = match upstream["state"].as_str() {
                    Some("up") => Some(true),
                    Some("down") => Some(false),
                    _ => health["ok"].as_bool(),
                };
                Some(ProbeFacts {
                    upstream: text(&upstream["name"])?,
                    reachable,
                    version: text(&health["version"]),
                    models: if reachable == Some(true) {
                        names(&health["loaded_models"]).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                    available: names(&health["models"]),
                    error: text(&health["error"]),
                    checked_seconds_ago: health["checked_seconds_ago"].as_u64(),
                })
            })
            .collect();
        RunningKeel { version: text(&status["version"]), probes }
    }

    fn probe(&self, upstream: &str) -> Option<&ProbeFacts> {
        self.probes.iter().find(|probe| probe.upstream == upstream)
    }
}

/// One upstream as the runbook speaks of it.
struct Server<'a> {
    facts: &'a UpstreamFacts,
}

impl Server<'_> {
    fn ollama(&self) -> bool {
        self.facts.kind != "openai"
    }

    fn base(&self) -> &str {
        self.facts.address.trim_end_matches('/')
    }

    fn service(&self) -> &'static str {
        if self.ollama() { "ollama" } else { "llama-server" }
    }

    /// `curl` of its liveness endpoint.
    fn liveness(&self) -> String {
        let path = if self.ollama() { "/api/version" } else { "/health" };
        format!("curl -sS --max-time 5 {}{path}", self.base())
    }

    /// An `ollama` command aimed at this server (`OLLAMA_HOST=…` when not the default address).
    fn ollama_command(&self, args: &str) -> String {
        match self.base().strip_prefix("http://") {
            Some("127.0.0.1:11434" | "localhost:11434") => format!("ollama {args}"),
            Some(host) => format!("OLLAMA_HOST={host} ollama {args}"),
            None => format!("OLLAMA_HOST={} ollama {args}", self.base()),
        }
    }

    /// The commands that check it: liveness, then what is loaded.
    fn checks(&self) -> Vec<String> {
        if self.ollama() {
            vec![self.liveness(), self.ollama_command("ps"), self.ollama_command("list")]
        } else {
            vec![self.liveness(), format!("curl -sS --max-time 5 {}/v1/models", self.base())]
        }
    }
}

/// A route's target split into its upstream and model (`None`: the model the client asked for).
fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once(':') {
        Some((upstream, model)) => (upstream, Some(model)),
        None => (target, None),
    }
}

/// The model a target of `route` asks for, when it is known from the config.
fn target_model<'a>(route: &'a RouteFacts, target: &'a str) -> Option<&'a str> {
    match split_target(target) {
        (_, Some(model)) => Some(model),
        (_, None) if route.model != "*" => Some(route.model.as_str()),
        _ => None,
    }
}

/// How a route is named in prose.
fn route_name(route: &RouteFacts) -> String {
    if route.model == "*" { "any other model (`*`)".to_owned() } else { format!("`{}`", route.model) }
}

/// `items` as `a`, `a and b` or `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// The names in `names` cut to [`MAX_MODELS_SHOWN`].
fn some_names(names: &[String]) -> String {
    let mut shown = names.iter().take(MAX_MODELS_SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > MAX_MODELS_SHOWN {
        shown.push_str(&format!(" and {} more", names.len() - MAX_MODELS_SHOWN));
    }
    shown
}

fn ago(seconds: Option<u64>) -> String {
    match seconds {
        Some(seconds) => format!(" ({seconds} s before this was written)"),
        None => String::new(),
    }
}

#[derive(Serialize)]
struct View {
    keel_url: String,
    written_at: String,
    config_source: String,
    regenerate: String,
    store_url: String,
    upstream_list: String,
    route_list: String,
    breaker: String,
    admission: String,
    notify: String,
    probe_summary: String,
    upstreams: Vec<UpstreamView>,
    routes: Vec<RouteView>,
    all_down: String,
    failures: Vec<FailureView>,
    rules_file: &'static str,
    rule_group: &'static str,
    metrics_target: String,
    alerts: Vec<String>,
    daily: Vec<DailyCheck>,
}

#[derive(Serialize)]
struct UpstreamView {
    name: String,
    address: String,
    kind: String,
    serves: String,
    probe: String,
    warnings: Vec<String>,
    checks: Vec<String>,
    restart: Vec<String>,
}

#[derive(Serialize)]
struct RouteView {
    title: String,
    targets: Vec<String>,
    when_down: String,
}

#[derive(Serialize)]
struct FailureView {
    name: &'static str,
    signs: String,
    fix: String,
}

#[derive(Serialize)]
struct DailyCheck {
    command: String,
    expect: String,
}

/// Renders the deployment runbook (Markdown).
pub fn render(facts: &DeploymentFacts) -> Result<String, String> {
    let view = view(facts);
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.trim_blocks(true).keep_trailing_newline(true);
    environment.set_syntax(syntax.build().map_err(|error| format!("deployment template syntax: {error}"))?);
    environment.add_template("deployment", TEMPLATE).map_err(|error| format!("deployment template: {error}"))?;
    let template = environment.get_template("deployment").map_err(|error| format!("deployment template: {error}"))?;
    template.render(minijinja::value::Serde(view)).map_err(|error| format!("deployment template: {error:#}"))
}

fn keel_url(facts: &DeploymentFacts) -> String {
    let url = facts.deployment.keel_url.trim_end_matches('/');
    if url.is_empty() { "http://127.0.0.1:11435".to_owned() } else { url.to_owned() }
}

fn config_flag(facts: &DeploymentFacts) -> String {
    facts.config_file.as_ref().map_or_else(String::new, |path| format!(" --config {path}"))
}

fn view(facts: &DeploymentFacts) -> View {
    let deployment = &facts.deployment;
    let keel_url = keel_url(facts);
    let upstream_list =
        deployment.upstreams.iter().map(|up| format!("{} ({}, {})", up.name, up.address, up.kind)).collect::<Vec<_>>();
    let route_list = deployment
        .routes
        .iter()
        .map(|route| format!("{} → {}", route_name(route), route.targets.join(" → ")))
        .collect::<Vec<_>>();
    let breaker = if facts.breaker.failure_threshold == 0 {
        format!(
            "consecutive failures do not open them (`failure_threshold = 0`); an open breaker waits {} before it probes",
            facts.breaker.cooldown
        )
    } else {
        format!(
            "a target's breaker opens after {} in a row (or a high failure rate) and waits {} before it probes",
            plural(usize::try_from(facts.breaker.failure_threshold).unwrap_or(usize::MAX), "failure", "failures"),
            facts.breaker.cooldown
        )
    };
    let admission = match &facts.admission {
        Some(queue) => format!(
            "on: {} at once per model, up to {} waiting for at most {}; beyond that keel sheds with 503",
            queue.max_concurrent, queue.max_queue, queue.max_wait
        ),
        None => "off (`[admission]` is not set): requests go straight to the servers, which queue them".to_owned(),
    };
    let notify = match facts.notify_count {
        0 => "no `[[notify]]` webhook: incidents are only seen with `keel incidents list` and `/keel/incidents`"
            .to_owned(),
        count => format!(
            "{} told of each incident's changes",
            plural(count, "`[[notify]]` webhook is", "`[[notify]]` webhooks are")
        ),
    };
    let probe_summary = match &facts.running {
        None => "keel was not running when this was written: no probe results. Write it again while keel runs to see each server's version and loaded models.".to_owned(),
        Some(running) => format!(
            "from the running keel{} at {keel_url}, which probes each upstream.",
            running.version.as_ref().map_or_else(String::new, |version| format!(" {version}"))
        ),
    };
    View {
        written_at: rfc3339(facts.generated_at),
        config_source: facts
            .config_file
            .as_ref()
            .map_or_else(|| "keel's built-in defaults (no config file)".to_owned(), |path| format!("`{path}`")),
        regenerate: format!("keel runbook deployment{}", config_flag(facts)),
        store_url: keel_session::redact_url(&facts.store_url),
        upstream_list: and_list(&upstream_list),
        route_list: if route_list.is_empty() { "no routes".to_owned() } else { route_list.join("; ") },
        breaker,
        admission,
        notify,
        probe_summary,
        upstreams: deployment.upstreams.iter().map(|up| upstream_view(facts, up)).collect(),
        routes: deployment.routes.iter().map(|route| route_view(deployment, route)).collect(),
        all_down: format!(
            "When every target of a route is out, keel does not wait: it answers 503 at once with a \
             `Retry-After` header (the seconds until the first breaker probes again) and names each target \
             and why. Agents should wait that long and retry. `keel status --url {keel_url}` shows which \
             breakers are open and why; the alert KeelModelUnavailable fires on these 503s."
        ),
        failures: catalogue(facts),
        rules_file: RULES_FILE,
        rule_group: RULE_GROUP,
        metrics_target: keel_url.trim_start_matches("http://").trim_start_matches("https://").to_owned(),
        alerts: alert_rules(facts).iter().map(AlertingRule::line).collect(),
        daily: daily_checks(facts, &keel_url),
        keel_url,
    }
}

fn upstream_view(facts: &DeploymentFacts, up: &UpstreamFacts) -> UpstreamView {
    let server = Server { facts: up };
    let deployment = &facts.deployment;
    let mut serves = Vec::new();
    for route in &deployment.routes {
        let Some(position) = route.targets.iter().position(|target| split_target(target).0 == up.name.as_str()) else {
            continue;
        };
        serves.push(if position == 0 {
            format!("first choice for {}", route_name(route))
        } else {
            format!("fallback {} of {} for {}", position + 1, route.targets.len(), route_name(route))
        });
    }
    let probe = match &facts.running {
        None => "keel was not running when this was written: no probe results.".to_owned(),
        Some(running) => match running.probe(&up.name) {
            Some(probe) if probe.reachable == Some(true) => {
                let mut said = format!("up at keel's last probe{}", ago(probe.checked_seconds_ago));
                if let Some(version) = &probe.version {
                    said.push_str(&format!(", version {version}"));
                }
                if server.ollama() {
                    if probe.models.is_empty() {
                        said.push_str("; no model was loaded in memory");
                    } else {
                        said.push_str(&format!("; loaded in memory: {}", some_names(&probe.models)));
                    }
                }
                if let Some(available) = &probe.available {
                    said.push_str(&format!("; {} on the server", plural(available.len(), "model", "models")));
                    if !available.is_empty() {
                        said.push_str(&format!(" ({})", some_names(available)));
                    }
                }
                said.push('.');
                said
            }
            Some(probe) if probe.reachable == Some(false) => format!(
                "DOWN at keel's last probe{}: {}.",
                ago(probe.checked_seconds_ago),
                probe.error.as_deref().unwrap_or("it did not answer")
            ),
            _ => "keel runs but has not probed it yet (`health_interval = \"0s\"` turns its probes off).".to_owned(),
        },
    };
    let mut warnings = Vec::new();
    let available =
        facts.running.as_ref().and_then(|running| running.probe(&up.name)).and_then(|p| p.available.as_ref());
    if let Some(available) = available.filter(|_| server.ollama()) {
        let mut missing: Vec<&str> = Vec::new();
        for route in &deployment.routes {
            for target in route.targets.iter().filter(|target| split_target(target).0 == up.name.as_str()) {
                if let Some(model) = target_model(route, target)
                    && !available.iter().any(|name| ModelName::new(model).same_model(name))
                    && !missing.contains(&model)
                {
                    missing.push(model);
                }
            }
        }
        warnings.extend(missing.into_iter().map(|model| {
            format!(
                "`{model}` is routed here but is not on {}: `{}`.",
                up.name,
                server.ollama_command(&format!("pull {model}"))
            )
        }));
    }
    UpstreamView {
        name: up.name.clone(),
        address: up.address.clone(),
        kind: if server.ollama() {
            "Ollama".to_owned()
        } else {
            "an OpenAI-compatible server (llama-server)".to_owned()
        },
        serves: if serves.is_empty() { "no route sends requests to it".to_owned() } else { serves.join("; ") },
        probe,
        warnings,
        checks: server.checks(),
        restart: vec![
            format!("sudo systemctl restart {}", server.service()),
            format!("journalctl -u {} --since \"1 hour ago\" | tail -50", server.service()),
        ],
    }
}

fn route_view(deployment: &Deployment, route: &RouteFacts) -> RouteView {
    let targets = route
        .targets
        .iter()
        .map(|target| {
            let (upstream, _) = split_target(target);
            let model = target_model(route, target)
                .map_or_else(|| "the model the client asked for".to_owned(), |model| format!("`{model}`"));
            match deployment.upstream(upstream) {
                Some(up) => format!("`{target}`: {model} on {upstream} ({})", up.address),
                None => format!("`{target}`: {model} on {upstream}"),
            }
        })
        .collect();
    let when_down = match route.targets.as_slice() {
        [only] => format!(
            "No fallback: when `{only}` is out, requests for {} get 503. Add a target on another server to \
             `targets` in this route to keep agents answered.",
            route_name(route)
        ),
        all => format!(
            "When the first is out keel answers from the next (counted in `keel_fallbacks_total`); when all {} \
             are out, requests for {} get 503.",
            all.len(),
            route_name(route)
        ),
    };
    RouteView {
        title: if route.model == "*" { "Any other model (`*`)".to_owned() } else { format!("`{}`", route.model) },
        targets,
        when_down,
    }
}

/// The failures of [`FAILURES`], with signs and fixes for this deployment.
fn catalogue(facts: &DeploymentFacts) -> Vec<FailureView> {
    let deployment = &facts.deployment;
    let servers: Vec<Server<'_>> = deployment.upstreams.iter().map(|facts| Server { facts }).collect();
    let ollama = servers.iter().find(|server| server.ollama());
    let first = ollama.or(servers.first());
    let ps = ollama.map_or_else(|| "ollama ps".to_owned(), |server| server.ollama_command("ps"));
    let address = first.map_or_else(|| "http://127.0.0.1:11434".to_owned(), |server| server.base().to_owned());
    // A target with a known model, for the examples: its upstream and model.
    let (example_upstream, model) = deployment
        .routes
        .iter()
        .flat_map(|route| {
            route.targets.iter().filter_map(move |target| Some((split_target(target).0, target_model(route, target)?)))
        })
        .next()
        .unwrap_or((first.map_or("local", |server| server.facts.name.as_str()), "llama3.2"));
    let breaker_key = format!("{example_upstream}:{}", model.strip_suffix(":latest").unwrap_or(model));
    let mut pulls: Vec<String> = Vec::new();
    for route in &deployment.routes {
        for target in &route.targets {
            let (upstream, _) = split_target(target);
            let server = servers.iter().find(|server| server.facts.name == upstream && server.ollama());
            if let (Some(server), Some(model)) = (server, target_model(route, target)) {
                let pull = format!("`{}`", server.ollama_command(&format!("pull {model}")));
                if !pulls.contains(&pull) {
                    pulls.push(pull);
                }
            }
        }
    }
    pulls.truncate(MAX_PULLS_SHOWN);
    let pulls = if pulls.is_empty() {
        "`ollama pull` the name in the 404 on the server that answered it".to_owned()
    } else {
        format!("pull the routed models on their Ollama servers: {}", pulls.join(", "))
    };
    let config = facts.config_file.as_deref().unwrap_or("keel.toml");
    let queue = match &facts.admission {
        Some(admission) => format!(
            "keel's own queue sheds beyond `[admission] max_queue = {}`: `keel_admission_shed_total{{reason=\"queue_full\"}}` rises and the log says `admission shed the request at this target`",
            admission.max_queue
        ),
        None => {
            "with `[admission]` on, keel's own queue sheds first: `keel_admission_shed_total{reason=\"queue_full\"}`"
                .to_owned()
        }
    };
    vec![
        FailureView {
            name: FAILURES[0],
            signs: format!(
                "the server answers 404 (`model \"…\" not found`): keel's log says `target failed` with `class=model_not_found` and keel tries the route's next target; when no target has the model the client gets the 404 (`keel_requests_total{{status=\"404\"}}` rises). `keel doctor{}` lists routed models missing on their upstream",
                config_flag(facts)
            ),
            fix: format!("{pulls}; `{}` shows what is there.", ollama.map_or_else(|| "ollama list".to_owned(), |s| s.ollama_command("list"))),
        },
        FailureView {
            name: FAILURES[1],
            signs: format!(
                "the server answers 500: keel's log says `target failed` with `class=model_load` and the server's words (\"model requires more system memory\", \"llama runner process has terminated\"); the model's breaker opens (`keel_breaker_state{{target={}}} == 2`); `journalctl -k | grep -i oom` shows kills",
                promql_string(&breaker_key)
            ),
            fix: format!(
                "a smaller model or quantization (q4_K_M), a smaller context (`num_ctx`, it costs memory too), or `OLLAMA_MAX_LOADED_MODELS=1` so models do not share memory; check with `{ps}` and `free -h`. Give the route a fallback on another server."
            ),
        },
        FailureView {
            name: FAILURES[2],
            signs: "Ollama cuts a prompt longer than the model's context (`num_ctx`) without an error: the agent forgets its instructions or the start of the task, and the server's log says `truncating input prompt`; for sessions keel trims instead and `keel_session_context_trimmed_total` rises".to_owned(),
            fix: "set `[sessions] max_context_tokens` below the model's context so keel trims or summarizes old messages (`overflow = \"summarize\"`); raise the context with `OLLAMA_CONTEXT_LENGTH=8192` on the server (it needs memory) or `options.num_ctx` per request; keep tool outputs short.".to_owned(),
        },
        FailureView {
            name: FAILURES[3],
            signs: "`keel_time_to_first_chunk_seconds` grows (p95 over 20 s: `keel:time_to_first_chunk_seconds:p95_10m` from keel-rules.yml) while `keel_admission_queue_wait_seconds` and `keel_requests_in_flight` rise; the server runs requests one or two at a time".to_owned(),
            fix: format!(
                "set `OLLAMA_NUM_PARALLEL` to what memory allows and `[[upstream]] max_concurrent` to the same in {config}, so requests wait in keel's queue (by priority) rather than in the server; move batch agents to another upstream or route; check `{ps}`."
            ),
        },
        FailureView {
            name: FAILURES[4],
            signs: format!(
                "Ollama answers 503 \"server busy\" when its queue (`OLLAMA_MAX_QUEUE`, 512) is full: keel's log says `target failed` with `class=busy` and keel tries the next target; {queue}; clients get 503 with `Retry-After`"
            ),
            fix: "more capacity (another server as a fallback target), or fewer requests: per-key `requests_per_minute` in `[auth]` keys, agents that honour `Retry-After`. Raise `max_queue` or `OLLAMA_MAX_QUEUE` only when the server keeps up and the waits are acceptable.".to_owned(),
        },
        FailureView {
            name: FAILURES[5],
            signs: "`keel_structured_outputs_total{outcome=\"failed\"}` (and `canned`) rises; the log says `structured answer invalid`, then `no valid structured answer`; clients get 422 naming what was wrong, or the route's canned value".to_owned(),
            fix: "give the route a `schema` so the request's format constrains the model's decoding (`forward_format = true` on the upstream), raise `[guard] reasks`, add a larger model as the route's fallback target, or a `canned` answer; `keel repair < answer.txt` shows what keel can fix in a saved answer.".to_owned(),
        },
        FailureView {
            name: FAILURES[6],
            signs: "keel passes tool calls through as the model wrote them, so keel answers 200 and its metrics look healthy; the agent's log shows arguments it cannot parse, or a call written as text in `content` instead of `tool_calls`".to_owned(),
            fix: format!(
                "use a model trained for tool calls (`ollama show {model}` lists `tools` under Capabilities), a lower temperature and fewer, simpler tools; check saved arguments with `keel repair`; for session traffic, `keel sessions show ID` shows what the model wrote."
            ),
        },
        FailureView {
            name: FAILURES[7],
            signs: "one key or session sends the same requests again and again: `keel_requests_by_key_total` for one key and `keel_session_messages_appended_total` climb; with `[breaker] max_tokens_per_minute` the breaker opens with reason `cost_budget` (`keel_breaker_transitions_total{reason=\"cost_budget\"}`); with limits, `keel_rate_limited_total` rises".to_owned(),
            fix: "stop the agent; `keel sessions list` shows the session and its message count. Cap its steps in the agent framework, and set per-key `requests_per_minute`/`tokens_per_minute` and `[breaker] max_tokens_per_minute` so one loop cannot take the server.".to_owned(),
        },
        FailureView {
            name: FAILURES[8],
            signs: format!(
                "the first request after a quiet spell waits while the server reads the model from disk: `keel_upstream_errors_total{{class=\"timeout\"}}` and the log `upstream call failed` with `class=timeout`, or a first chunk after minutes; `{ps}` shows nothing loaded, then the model"
            ),
            fix: format!(
                "keep models loaded with `OLLAMA_KEEP_ALIVE=24h` on the server and load one after a restart: `curl -sS {address}/api/generate -d '{{\"model\": \"{model}\", \"keep_alive\": \"24h\"}}'`; set `[[upstream]] response_timeout` above the load time; `prefer_loaded = true` on a route sends requests to a target that has the model in memory."
            ),
        },
        FailureView {
            name: FAILURES[9],
            signs: format!(
                "keel's log says `could not store the answer` and the store refuses writes (SQLite: \"database or disk is full\"); sessions stop growing and `keel_jobs{{status=\"failed\"}}` rises; `keel doctor{}` reports the store; `df -h` shows the disk at 100%",
                config_flag(facts)
            ),
            fix: format!(
                "free space: models are usually the largest files (`{}` removes one you no longer route to, `du -sh ~/.ollama/models /usr/share/ollama/.ollama/models`); delete old sessions with `keel sessions delete ID`; move the store ({}) to a larger disk. Then `keel doctor{}`.",
                ollama.map_or_else(|| "ollama rm NAME".to_owned(), |s| s.ollama_command("rm NAME")),
                keel_session::redact_url(&facts.store_url),
                config_flag(facts)
            ),
        },
    ]
}

fn daily_checks(facts: &DeploymentFacts, keel_url: &str) -> Vec<DailyCheck> {
    let config = config_flag(facts);
    vec![
        DailyCheck {
            command: format!("keel status --url {keel_url}"),
            expect: "every upstream up, every breaker closed, the routed models loaded".to_owned(),
        },
        DailyCheck {
            command: format!("keel doctor{config}"),
            expect: "no problem: the config, the store, each upstream and its routed models".to_owned(),
        },
        DailyCheck {
            command: format!("keel incidents list --status open{config}"),
            expect:
                "`No incidents.` (resolve a fixed one with `keel incidents resolve ID --fixed-by \"what you did\"`)"
                    .to_owned(),
        },
    ]
}

/// One Prometheus alerting rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertingRule {
    /// Its name (the same for the rules of one kind; labels tell them apart).
    pub alert: &'static str,
    /// The PromQL expression.
    pub expr: String,
    /// How long it must hold before the alert fires (`2m`), if at all.
    pub hold: Option<&'static str>,
    /// `page`, `warn` or `info`.
    pub severity: &'static str,
    /// Labels besides `severity` (`upstream`, `model`).
    pub labels: Vec<(&'static str, String)>,
    /// One line: what is wrong.
    pub summary: String,
    /// What to do.
    pub description: String,
}

impl AlertingRule {
    /// The rule as one Markdown list item.
    fn line(&self) -> String {
        let about = self.labels.iter().map(|(_, value)| value.as_str()).collect::<Vec<_>>().join(", ");
        format!(
            "**{}**{} ({}): `{}`{}: {}.",
            self.alert,
            if about.is_empty() { String::new() } else { format!(" for {about}") },
            self.severity,
            self.expr,
            self.hold.map_or_else(String::new, |hold| format!(" for {hold}")),
            self.summary
        )
    }
}

/// A PromQL string literal holding `value`.
fn promql_string(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// `value` as a regular expression matching itself only.
fn regex_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The alerting rules for this deployment: one per upstream (its breaker open), one per routed
/// model (503s), and the global ones (incidents, jobs, notifications, structured output,
/// shedding).
pub fn alert_rules(facts: &DeploymentFacts) -> Vec<AlertingRule> {
    let deployment = &facts.deployment;
    let keel_url = keel_url(facts);
    let mut rules = Vec::new();
    for up in &deployment.upstreams {
        let server = Server { facts: up };
        let alone: Vec<String> = deployment
            .routes
            .iter()
            .filter(|route| {
                !route.targets.is_empty() && route.targets.iter().all(|target| split_target(target).0 == up.name)
            })
            .map(route_name)
            .collect();
        let affected = if alone.is_empty() {
            "Its routes answer from their other targets.".to_owned()
        } else {
            format!("Requests for {} get 503: no other target serves them.", and_list(&alone))
        };
        rules.push(AlertingRule {
            alert: "KeelUpstreamOut",
            expr: format!("keel_breaker_state{{target={}}} == 2", promql_string(&up.name)),
            hold: Some("2m"),
            severity: if alone.is_empty() { "warn" } else { "page" },
            labels: vec![("upstream", up.name.clone())],
            summary: format!("upstream {} ({}) has been out for 2 minutes", up.name, up.address),
            description: format!(
                "keel's breaker for {} is open. {affected} Check it: `{}`; restart it: `sudo systemctl restart {}`; `keel status --url {keel_url}` says why the breaker opened.",
                up.name,
                server.liveness(),
                server.service()
            ),
        });
    }
    let named: Vec<&str> =
        deployment.routes.iter().filter(|route| route.model != "*").map(|route| route.model.as_str()).collect();
    for route in &deployment.routes {
        let (selector, model) = if route.model == "*" {
            let others = named.iter().map(|model| regex_escape(model)).collect::<Vec<_>>().join("|");
            let matcher = if others.is_empty() { String::new() } else { format!(",model!~{}", promql_string(&others)) };
            (format!("status=\"503\"{matcher}"), "*".to_owned())
        } else {
            (format!("model={},status=\"503\"", promql_string(&route.model)), route.model.clone())
        };
        rules.push(AlertingRule {
            alert: "KeelModelUnavailable",
            expr: format!("sum by (instance) (rate(keel_requests_total{{{selector}}}[5m])) > 0"),
            hold: Some("5m"),
            severity: "page",
            labels: vec![("model", model)],
            summary: format!("keel answers 503 to requests for {}: every target is out", route_name(route).replace('`', "")),
            description: format!(
                "Its targets, in order: {}. Check each server (see the deployment runbook), start or restart the one that is down; `keel status --url {keel_url}` names each target and why it is out.",
                route.targets.join(", ")
            ),
        });
    }
    rules.push(AlertingRule {
        alert: "KeelIncidentOpen",
        expr: "sum by (instance) (keel_incidents_open{status=\"open\"}) > 0".to_owned(),
        hold: Some("10m"),
        severity: "warn",
        labels: Vec::new(),
        summary: "an incident has been open for 10 minutes".to_owned(),
        description: format!(
            "`keel incidents list --status open{0}` lists them; `keel incidents show ID --runbook` has what to do. Resolve a fixed one with `keel incidents resolve ID --fixed-by \"what you did\"`.",
            config_flag(facts)
        ),
    });
    rules.push(AlertingRule {
        alert: "KeelJobsFailed",
        expr: "sum by (instance) (keel_jobs{status=\"failed\"}) > 0".to_owned(),
        hold: None,
        severity: "warn",
        labels: Vec::new(),
        summary: "a notification or runbook job failed after all its retries".to_owned(),
        description: format!(
            "`curl -s {keel_url}/keel/jobs` shows the failed jobs and their last error: a webhook receiver that is down, or a store that refuses writes (`keel doctor{}`).",
            config_flag(facts)
        ),
    });
    rules.push(AlertingRule {
        alert: "KeelNotificationsFailing",
        expr: "sum by (instance) (increase(keel_notifications_total{outcome=~\"failed|disabled\"}[15m])) > 0"
            .to_owned(),
        hold: None,
        severity: "warn",
        labels: Vec::new(),
        summary: "incident notifications are not delivered".to_owned(),
        description: format!(
            "A [[notify]] receiver refused or did not answer after its retries (failed), or answered 410 Gone (disabled: keel sends it nothing more). Check the receivers ({}); `keel incidents list --status open{}` shows what people were not told.",
            plural(facts.notify_count, "is configured", "are configured"),
            config_flag(facts)
        ),
    });
    rules.push(AlertingRule {
        alert: "KeelStructuredOutputFailed",
        expr: "sum by (instance, model) (rate(keel_structured_outputs_total{outcome=\"failed\"}[15m])) > 0"
            .to_owned(),
        hold: Some("15m"),
        severity: "warn",
        labels: Vec::new(),
        summary: "keel cannot get valid structured answers from a model".to_owned(),
        description: "Clients get 422: the model's JSON could not be repaired, re-asked or answered by a fallback. Give the route a schema and a stronger fallback model, or a canned answer; see \"Malformed structured output\" in the deployment runbook.".to_owned(),
    });
    rules.push(AlertingRule {
        alert: "KeelAdmissionShedding",
        expr: "sum by (instance, reason) (rate(keel_admission_shed_total[5m])) > 0".to_owned(),
        hold: Some("10m"),
        severity: "warn",
        labels: Vec::new(),
        summary: "keel sheds requests (503 with Retry-After): more arrive than the servers serve".to_owned(),
        description: "The reason label says why (queue_full, wait_too_long, displaced, deadline_unmeetable, deadline_passed). Add a server or slow the agents; raise [admission] limits only if the server has room. See \"Queue full\" in the deployment runbook.".to_owned(),
    });
    rules
}

/// `text` as a single-quoted YAML scalar on one line.
fn yaml_quote(text: &str) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    format!("'{}'", one_line.replace('\'', "''"))
}

/// `text` safe from Prometheus's template expansion (labels and annotations are Go templates).
fn go_template_safe(text: &str) -> String {
    text.replace("{{", "{{ \"{{\" }}")
}

/// A comment line's text: one line.
fn comment(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The Prometheus alerting rules file for this deployment (YAML, group [`RULE_GROUP`]).
pub fn alerts_yaml(facts: &DeploymentFacts) -> String {
    let keel_url = keel_url(facts);
    let mut out = String::new();
    out.push_str(&comment(&format!(
        "# Prometheus alerting rules for the keel at {keel_url}, written by `keel runbook deployment` at {} from {}.",
        rfc3339(facts.generated_at),
        facts.config_file.as_deref().unwrap_or("keel's built-in defaults")
    )));
    out.push('\n');
    out.push_str(&format!("# What each alert means and what to do: {RUNBOOK_FILE} next to this file.\n"));
    out.push_str(&format!(
        "# Load with `rule_files: [{RULES_FILE}]` next to a scrape job for keel's /metrics; check with `promtool check rules {RULES_FILE}`.\n"
    ));
    out.push_str("groups:\n");
    out.push_str(&format!("  - name: {}\n", yaml_quote(RULE_GROUP)));
    out.push_str("    rules:\n");
    for rule in alert_rules(facts) {
        out.push_str(&format!("      - alert: {}\n", yaml_quote(rule.alert)));
        out.push_str(&format!("        expr: {}\n", yaml_quote(&rule.expr)));
        if let Some(hold) = rule.hold {
            out.push_str(&format!("        for: {}\n", yaml_quote(hold)));
        }
        out.push_str("        labels:\n");
        out.push_str(&format!("          severity: {}\n", yaml_quote(rule.severity)));
        for (name, value) in &rule.labels {
            out.push_str(&format!("          {name}: {}\n", yaml_quote(&go_template_safe(value))));
        }
        out.push_str("        annotations:\n");
        out.push_str(&format!("          summary: {}\n", yaml_quote(&go_template_safe(&rule.summary))));
        out.push_str(&format!("          description: {}\n", yaml_quote(&go_template_safe(&rule.description))));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

    use serde_json::json;

    use super::*;
    use crate::runbook::placeholders;

    fn two_upstreams() -> DeploymentFacts {
        DeploymentFacts {
            deployment: Deployment {
                keel_url: "http://127.0.0.1:11435".to_owned(),
                upstreams: vec![
                    UpstreamFacts {
                        name: "gpu".to_owned(),
                        address: "http://127.0.0.1:11434".to_owned(),
                        kind: "ollama".to_owned(),
                    },
                    UpstreamFacts {
                        name: "cpu".to_owned(),
                        address: "http://10.0.0.7:8080".to_owned(),
                        kind: "openai".to_owned(),
                    },
                ],
                routes: vec![
                    RouteFacts {
                        model: "llama3.2".to_owned(),
                        targets: vec!["gpu".to_owned(), "cpu:qwen2.5".to_owned()],
                    },
                    RouteFacts { model: "coder".to_owned(), targets: vec!["gpu:qwen2.5-coder:7b".to_owned()] },
                ],
            },
            config_file: Some("/etc/keel/keel.toml".to_owned()),
            store_url: "postgres://keel:s3cret@db/keel".to_owned(),
            breaker: BreakerFacts { failure_threshold: 5, cooldown: "30s".to_owned() },
            admission: None,
            notify_count: 1,
            running: None,
            generated_at: 1_780_000_000_000,
        }
    }

    fn with_probes() -> DeploymentFacts {
        let mut facts = two_upstreams();
        facts.running = Some(RunningKeel::from_status(&json!({
            "version": "0.9.0",
            "upstreams": [
                {"name": "gpu", "state": "up", "health": {"ok": true, "version": "0.6.2",
                    "loaded_models": ["llama3.2:latest"], "models": ["llama3.2:latest"], "error": null,
                    "latency_ms": 3, "checked_seconds_ago": 4}},
                {"name": "cpu", "state": "down", "health": {"ok": false, "version": null, "loaded_models": [],
                    "error": "connection refused", "latency_ms": 1, "checked_seconds_ago": 2}},
            ],
        })));
        facts
    }

    /// The text with every code span removed (commands and metric selectors may say `none`).
    fn prose(text: &str) -> String {
        text.split('`').step_by(2).collect::<Vec<_>>().join(" ")
    }

    fn assert_clean(markdown: &str) {
        assert_eq!(placeholders::find(markdown), None, "{markdown}");
        for word in prose(markdown).split(|c: char| !c.is_alphanumeric()) {
            assert!(
                !["none", "null", "undefined", "nil"].contains(&word.to_lowercase().as_str()),
                "{word}: {markdown}"
            );
        }
        assert!(!markdown.contains("{{") && !markdown.contains("{%"), "{markdown}");
    }

    #[test]
    fn renders_a_two_upstream_two_route_deployment() {
        let markdown = render(&two_upstreams()).unwrap();
        assert!(markdown.starts_with("# Deployment runbook: keel at http://127.0.0.1:11435\n"), "{markdown}");
        for section in
            ["## Upstreams", "## Routes and fallbacks", "## Failure catalogue", "## Alerts", "## Daily checks"]
        {
            assert!(markdown.contains(&format!("\n{section}\n")), "{section} missing:\n{markdown}");
        }
        // The head: keel, the store without its password, the upstreams and routes.
        assert!(markdown.contains("postgres://keel:***@db/keel") && !markdown.contains("s3cret"), "{markdown}");
        assert!(markdown.contains("2 upstreams") && markdown.contains("2 routes"), "{markdown}");
        // Each upstream: address, kind, how to check and restart it.
        assert!(markdown.contains("### gpu") && markdown.contains("### cpu"), "{markdown}");
        assert!(markdown.contains("curl -sS --max-time 5 http://127.0.0.1:11434/api/version"), "{markdown}");
        assert!(markdown.contains("curl -sS --max-time 5 http://10.0.0.7:8080/health"), "{markdown}");
        assert!(markdown.contains("sudo systemctl restart ollama"), "{markdown}");
        assert!(markdown.contains("sudo systemctl restart llama-server"), "{markdown}");
        assert!(markdown.contains("\nollama ps\n"), "the default address needs no OLLAMA_HOST:\n{markdown}");
        assert_eq!(markdown.matches("keel was not running when this was written: no probe results").count(), 3);
        // Routes in fallback order, and what happens when all are out.
        let first = markdown.find("1. `gpu`: `llama3.2` on gpu").unwrap();
        let second = markdown.find("2. `cpu:qwen2.5`: `qwen2.5` on cpu (http://10.0.0.7:8080)").unwrap();
        assert!(first < second, "{markdown}");
        assert!(markdown.contains("503") && markdown.contains("Retry-After"), "{markdown}");
        assert!(markdown.contains("No fallback: when `gpu:qwen2.5-coder:7b` is out"), "{markdown}");
        // Alerts and daily checks.
        assert!(markdown.contains("`keel-alerts.yml`") && markdown.contains("KeelUpstreamOut"), "{markdown}");
        for check in [
            "keel status --url http://127.0.0.1:11435",
            "keel doctor --config /etc/keel/keel.toml",
            "keel incidents list --status open --config /etc/keel/keel.toml",
        ] {
            assert!(markdown.contains(check), "{check}:\n{markdown}");
        }
        assert_clean(&markdown);
    }

    #[test]
    fn every_failure_of_the_catalogue_is_there_with_signs_and_fix() {
        let markdown = render(&two_upstreams()).unwrap();
        let catalogue = &markdown[markdown.find("## Failure catalogue").unwrap()..markdown.find("## Alerts").unwrap()];
        for (index, failure) in FAILURES.iter().enumerate() {
            let heading = format!("### {}. {failure}\n", index + 1);
            let at = catalogue.find(&heading).unwrap_or_else(|| panic!("{failure} missing:\n{catalogue}"));
            let entry = &catalogue[at + heading.len()..];
            let entry = &entry[..entry.find("\n### ").unwrap_or(entry.len())];
            assert!(entry.contains("- **Signs:** ") && entry.contains("- **Fix:** "), "{failure}:\n{entry}");
        }
        assert_eq!(catalogue.matches("\n### ").count(), FAILURES.len(), "{catalogue}");
        // Every sign names something keel or the server shows.
        assert!(catalogue.contains("`target failed` with `class=model_not_found`"), "{catalogue}");
        assert!(catalogue.contains("`ollama pull llama3.2`"), "{catalogue}");
        assert!(catalogue.contains("keel_admission_shed_total{reason=\"queue_full\"}"), "{catalogue}");
        assert!(catalogue.contains("keel_structured_outputs_total{outcome=\"failed\"}"), "{catalogue}");
    }

    #[test]
    fn probe_results_are_shown_and_missing_models_named() {
        let mut facts = with_probes();
        facts.deployment.upstreams[0].address = "http://10.0.0.5:11434".to_owned();
        let markdown = render(&facts).unwrap();
        assert!(!markdown.contains("no probe results"), "{markdown}");
        assert!(
            markdown.contains("up at keel's last probe (4 s before this was written), version 0.6.2"),
            "{markdown}"
        );
        assert!(markdown.contains("loaded in memory: llama3.2:latest"), "{markdown}");
        assert!(markdown.contains("DOWN at keel's last probe (2 s before this was written): connection refused"));
        assert!(
            markdown.contains("`qwen2.5-coder:7b` is routed here but is not on gpu: `OLLAMA_HOST=10.0.0.5:11434 ollama pull qwen2.5-coder:7b`"),
            "{markdown}"
        );
        assert!(markdown.contains("\nOLLAMA_HOST=10.0.0.5:11434 ollama ps\n"), "{markdown}");
        assert!(!markdown.contains("`llama3.2` is routed here"), "llama3.2 is pulled:\n{markdown}");
        assert_clean(&markdown);
    }

    #[test]
    fn an_unprobed_upstream_and_odd_names_render_without_placeholders() {
        let mut facts = with_probes();
        facts.running.as_mut().unwrap().probes.truncate(1);
        facts.running.as_mut().unwrap().version = None;
        facts.config_file = None;
        facts.breaker.failure_threshold = 0;
        facts.admission = Some(AdmissionFacts { max_concurrent: 2, max_queue: 16, max_wait: "30s".to_owned() });
        facts.notify_count = 0;
        facts.deployment.routes.push(RouteFacts { model: "*".to_owned(), targets: vec!["gpu".to_owned()] });
        let markdown = render(&facts).unwrap();
        assert!(markdown.contains("keel runs but has not probed it yet"), "{markdown}");
        assert!(
            markdown.contains("keel's built-in defaults") && markdown.contains("`keel doctor`: expect"),
            "{markdown}"
        );
        assert!(markdown.contains("`[admission] max_queue = 16`"), "{markdown}");
        assert!(markdown.contains("the model the client asked for"), "{markdown}");
        assert_clean(&markdown);

        let empty = DeploymentFacts { deployment: Deployment::default(), ..facts };
        assert_clean(&render(&empty).unwrap());
    }

    #[test]
    fn status_without_health_gives_unprobed_upstreams() {
        let running =
            RunningKeel::from_status(&json!({"upstreams": [{"name": "gpu", "state": "unknown", "health": null}]}));
        assert_eq!(running.version, None);
        assert_eq!(running.probes.len(), 1);
        assert_eq!(running.probes[0].reachable, None);
        assert!(running.probes[0].models.is_empty() && running.probes[0].available.is_none());
        assert!(RunningKeel::from_status(&json!("not a status")).probes.is_empty());
    }

    #[test]
    fn the_rules_cover_each_upstream_route_and_the_global_signals() {
        let facts = two_upstreams();
        let rules = alert_rules(&facts);
        let expr = |alert: &str, label: &str| {
            rules
                .iter()
                .find(|rule| rule.alert == alert && rule.labels.iter().any(|(_, value)| value == label))
                .map(|rule| rule.expr.clone())
                .unwrap_or_else(|| panic!("{alert} {label}: {rules:#?}"))
        };
        assert_eq!(expr("KeelUpstreamOut", "gpu"), "keel_breaker_state{target=\"gpu\"} == 2");
        assert_eq!(expr("KeelUpstreamOut", "cpu"), "keel_breaker_state{target=\"cpu\"} == 2");
        assert_eq!(
            expr("KeelModelUnavailable", "llama3.2"),
            "sum by (instance) (rate(keel_requests_total{model=\"llama3.2\",status=\"503\"}[5m])) > 0"
        );
        assert!(expr("KeelModelUnavailable", "coder").contains("model=\"coder\""));
        let gpu = rules.iter().find(|rule| rule.labels == [("upstream", "gpu".to_owned())]).unwrap();
        assert_eq!((gpu.severity, gpu.hold), ("page", Some("2m")), "coder has no other target than gpu");
        let cpu = rules.iter().find(|rule| rule.labels == [("upstream", "cpu".to_owned())]).unwrap();
        assert_eq!(cpu.severity, "warn");
        for (alert, metric) in [
            ("KeelIncidentOpen", "keel_incidents_open"),
            ("KeelJobsFailed", "keel_jobs{status=\"failed\"}"),
            ("KeelNotificationsFailing", "increase(keel_notifications_total{outcome=~\"failed|disabled\"}[15m])"),
            ("KeelStructuredOutputFailed", "keel_structured_outputs_total{outcome=\"failed\"}"),
            ("KeelAdmissionShedding", "keel_admission_shed_total"),
        ] {
            let rule = rules.iter().find(|rule| rule.alert == alert).unwrap_or_else(|| panic!("{alert}"));
            assert!(rule.expr.contains(metric), "{alert}: {}", rule.expr);
        }
        assert_eq!(rules.iter().find(|rule| rule.alert == "KeelIncidentOpen").unwrap().hold, Some("10m"));
    }

    #[test]
    fn the_rules_use_only_metrics_keel_exports() {
        use keel_telemetry::names;
        let exported = [
            names::BREAKER_STATE,
            names::REQUESTS_TOTAL,
            names::INCIDENTS_OPEN,
            names::JOBS,
            names::NOTIFICATIONS_TOTAL,
            names::STRUCTURED_OUTPUTS_TOTAL,
            names::ADMISSION_SHED_TOTAL,
        ];
        let mut facts = two_upstreams();
        facts.deployment.routes.push(RouteFacts { model: "*".to_owned(), targets: vec!["gpu".to_owned()] });
        for rule in alert_rules(&facts) {
            let used: Vec<&str> = rule
                .expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("keel_"))
                .collect();
            assert!(!used.is_empty(), "{rule:?}");
            for metric in used {
                assert!(exported.contains(&metric), "{metric} is not a keel metric: {}", rule.expr);
            }
        }
    }

    #[test]
    fn the_catch_all_route_excludes_the_named_models_as_regular_expressions() {
        let mut facts = two_upstreams();
        facts.deployment.routes.push(RouteFacts { model: "*".to_owned(), targets: vec!["gpu".to_owned()] });
        let rules = alert_rules(&facts);
        let any = rules.iter().find(|rule| rule.labels == [("model", "*".to_owned())]).unwrap();
        assert_eq!(
            any.expr,
            r#"sum by (instance) (rate(keel_requests_total{status="503",model!~"llama3\\.2|coder"}[5m])) > 0"#
        );
    }

    #[test]
    fn the_yaml_quotes_every_value() {
        let mut facts = two_upstreams();
        facts.deployment.upstreams[0].name = "it's {{ odd }}".to_owned();
        facts.deployment.routes[0].model = "say \"hi\"".to_owned();
        let yaml = alerts_yaml(&facts);
        assert!(yaml.starts_with("# Prometheus alerting rules for the keel at http://127.0.0.1:11435"), "{yaml}");
        assert!(
            yaml.contains("\ngroups:\n  - name: 'keel-deployment'\n    rules:\n      - alert: 'KeelUpstreamOut'\n")
        );
        assert!(
            yaml.contains("        expr: 'keel_breaker_state{target=\"it''s {{ odd }}\"} == 2'\n"),
            "single quotes doubled, the PromQL string as written:\n{yaml}"
        );
        assert!(yaml.contains("          upstream: 'it''s {{ \"{{\" }} odd }}'\n"), "{yaml}");
        assert!(yaml.contains(
            r#"expr: 'sum by (instance) (rate(keel_requests_total{model="say \"hi\"",status="503"}[5m])) > 0'"#
        ));
        assert!(yaml.contains("        for: '2m'\n"), "{yaml}");
        assert!(!yaml.contains("s3cret"));
        // Every line is a comment, a key, or a list item, indented by two.
        for line in yaml.lines() {
            let body = line.trim_start();
            assert_eq!((line.len() - body.len()) % 2, 0, "{line}");
            assert!(
                body.starts_with('#') || body.starts_with("- ") || body.contains(": ") || body.ends_with(':'),
                "{line}"
            );
        }
        assert_eq!(yaml.matches("      - alert: ").count(), alert_rules(&facts).len());
    }
}
