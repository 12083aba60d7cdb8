//! `keel status`: ask a running keel what it sees. [`fetch`] gets `GET /keel/status`; [`render`]
//! turns the answer into text, and reads every field optionally, so an older or newer keel never
//! makes it fail.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;
use reqwest::StatusCode;
use serde_json::Value;

use crate::connect::{ConnectArgs, Keel};

/// Flags of `keel status`.
#[derive(Debug, Args)]
#[command(after_help = "\
keel is found at --url (or KEEL_URL), else at the [server] listen of the config file (--config,
KEEL_CONFIG, or ./keel.toml if it exists), else at http://127.0.0.1:11435.

Examples:
  keel status                                 the keel of ./keel.toml, or the default one
  keel status --config /etc/keel/keel.toml    the keel that runs with that file
  keel status --url http://10.0.0.7:11435 --key \"$KEEL_KEY_OPS\"
  keel status --json | jq .targets            everything keel reports, as JSON")]
pub(crate) struct StatusArgs {
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
    /// Where keel is, and the API key (admin scope, when keel has [auth] keys).
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs `keel status`.
pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let keel = args.connect.resolve()?;
    let body = fetch(&keel).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
    } else {
        out.write_all(render(&body).as_bytes())?;
    }
    Ok(())
}

/// `GET /keel/status` of `keel`; errors say what to do.
pub(crate) async fn fetch(keel: &Keel) -> anyhow::Result<Value> {
    let url = crate::connect::join(&keel.url, &["keel", "status"])?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;
    let mut request = client.get(url.clone());
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
    let text = response.text().await.with_context(|| format!("the answer of {url} broke off"))?;
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        anyhow::bail!(
            "keel at {url} refused ({status}): pass a key with the admin scope with --key or KEEL_KEY ({})",
            snippet(&text)
        );
    }
    if status == StatusCode::NOT_FOUND {
        anyhow::bail!("{url} answered 404: is {} keel (Ollama has no /keel/status)? ({})", keel.url, keel.origin);
    }
    if !status.is_success() {
        anyhow::bail!("keel at {url} answered {status}: {}", snippet(&text));
    }
    serde_json::from_str(&text)
        .with_context(|| format!("{url} answered something that is not JSON: {}", snippet(&text)))
}

/// The start of a response body, for error messages.
fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() { "no details".to_owned() } else { text.chars().take(300).collect() }
}

/// The status as text: a header line, then upstreams, routes and targets.
pub(crate) fn render(body: &Value) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_status(&mut out, body);
    out
}

fn write_status(out: &mut String, body: &Value) -> std::fmt::Result {
    let uptime = body["uptime_seconds"].as_u64().map_or_else(|| "?".to_owned(), human_duration);
    writeln!(out, "keel {} on {}, up {uptime}", text(&body["version"], "?"), text(&body["listen"], "?"))?;
    let mut about = Vec::new();
    if let Some(store) = body["store"].as_str() {
        about.push(format!("store: {store}"));
    }
    if body.get("config_file").is_some() {
        about.push(format!("config: {}", text(&body["config_file"], "built-in defaults")));
    }
    if let Some(auth) = body["auth"].as_bool() {
        about.push(if auth { "API keys: required" } else { "API keys: none needed" }.to_owned());
    }
    if !about.is_empty() {
        writeln!(out, "{}", about.join(", "))?;
    }
    write_limits(out, &body["limits"])?;
    write_traces(out, &body["traces"])?;
    if let (Some(path), Some(listen)) = (body["dashboard"].as_str(), body["listen"].as_str()) {
        writeln!(out, "dashboard: http://{listen}{path}")?;
    }
    write_incidents(out, &body["incidents"])?;
    write_upstreams(out, items(&body["upstreams"]))?;
    write_routes(out, items(&body["routes"]))?;
    write_targets(out, items(&body["targets"]))?;
    write_admission(out, &body["admission"])
}

/// The incidents not resolved, when the keel reports them: one line each, newest first.
fn write_incidents(out: &mut String, incidents: &Value) -> std::fmt::Result {
    if !incidents.is_object() {
        return Ok(());
    }
    if incidents["enabled"].as_bool() == Some(false) {
        return writeln!(out, "incidents: off");
    }
    let open = items(&incidents["open"]);
    if open.is_empty() {
        return writeln!(out, "incidents: none open");
    }
    writeln!(out, "\nincidents ({} not resolved; `keel incidents show ID --runbook`):", open.len())?;
    for incident in open {
        writeln!(
            out,
            "  {}  {:<9}  {}",
            text(&incident["id"], "?"),
            text(&incident["status"], "?"),
            text(&incident["title"], "?")
        )?;
    }
    Ok(())
}

/// One line on traces, when the keel reports them.
fn write_traces(out: &mut String, traces: &Value) -> std::fmt::Result {
    if !traces.is_object() {
        return Ok(());
    }
    if let Some(problem) = traces["problem"].as_str() {
        return writeln!(out, "traces: NOT sent — {problem}");
    }
    let destinations: Vec<String> = items(&traces["destinations"])
        .iter()
        .map(|d| format!("{} {}", text(&d["kind"], "?"), text(&d["endpoint"], "?")))
        .collect();
    if destinations.is_empty() {
        return writeln!(out, "traces: not sent (set OTEL_EXPORTER_OTLP_ENDPOINT or LANGFUSE_* to send them)");
    }
    let content =
        if traces["content"].as_bool() == Some(true) { "with prompts and answers" } else { "without content" };
    writeln!(out, "traces: sent to {}, {content}", destinations.join(", "))
}

/// One line on rate limits, when the keel reports them.
fn write_limits(out: &mut String, limits: &Value) -> std::fmt::Result {
    if !limits.is_object() {
        return Ok(());
    }
    let per_minute = |field: &str, unit: &str| match limits[field].as_u64() {
        Some(0) | None => None,
        Some(n) => Some(format!("{n} {unit}/min")),
    };
    let defaults: Vec<String> =
        [per_minute("requests_per_minute", "requests"), per_minute("tokens_per_minute", "tokens")]
            .into_iter()
            .flatten()
            .collect();
    let mut line = if defaults.is_empty() {
        "rate limits: none by default".to_owned()
    } else {
        format!("rate limits: {} per key or client", defaults.join(", "))
    };
    if limits["routes_limited"].as_bool() == Some(true) {
        line.push_str(", some routes have their own");
    }
    if limits["shared"].as_bool() == Some(true) {
        line.push_str(&format!(", shared through Redis (if it fails: {})", text(&limits["on_store_error"], "?")));
    }
    writeln!(out, "{line}")
}

/// Queues per model server and model, when admission control is on.
fn write_admission(out: &mut String, admission: &Value) -> std::fmt::Result {
    if !admission.is_object() {
        return Ok(());
    }
    writeln!(
        out,
        "
admission:"
    )?;
    if admission["enabled"].as_bool() != Some(true) {
        return writeln!(out, "  off (add an [admission] section to queue requests per model)");
    }
    let wait = admission["max_wait_ms"].as_u64().map_or_else(|| "?".to_owned(), |ms| human_duration(ms / 1000));
    writeln!(
        out,
        "  {} at a time per model, up to {} waiting, at most {wait} each",
        count(&admission["max_concurrent"]),
        count(&admission["max_queue"]),
    )?;
    let counters = &admission["counters"];
    writeln!(out, "  admitted {}, shed {}", count(&counters["admitted"]), count(&counters["shed_total"]))?;
    for bucket in items(&admission["buckets"]) {
        let oldest = bucket["oldest_wait_ms"].as_u64().unwrap_or(0);
        writeln!(
            out,
            "  {}:{}  running {}/{}, waiting {}/{}{}",
            text(&bucket["upstream"], "?"),
            text(&bucket["model"], "?"),
            count(&bucket["running"]),
            count(&bucket["max_concurrent"]),
            count(&bucket["queued"]),
            count(&bucket["max_queue"]),
            if oldest > 0 { format!(", oldest waiting {:.1} s", oldest as f64 / 1000.0) } else { String::new() },
        )?;
    }
    Ok(())
}

fn write_upstreams(out: &mut String, upstreams: &[Value]) -> std::fmt::Result {
    writeln!(out, "\nupstreams:")?;
    if upstreams.is_empty() {
        return writeln!(out, "  none");
    }
    let width = column_width(upstreams.iter().map(|u| text(&u["name"], "?")));
    for up in upstreams {
        let health = &up["health"];
        let state = upstream_state(up);
        let word = match state {
            "up" => "up".to_owned(),
            "down" => "DOWN".to_owned(),
            other => other.to_owned(),
        };
        let mut line = format!("  {:<width$}  {word:<7}  {}", text(&up["name"], "?"), text(&up["url"], "?"));
        if let Some(dialect) = up["dialect"].as_str() {
            let _ = write!(line, " ({dialect})");
        }
        writeln!(out, "{}", line.trim_end())?;
        let indent = " ".repeat(width + 4);
        if health.is_object() {
            let mut facts = Vec::new();
            if let Some(version) = health["version"].as_str() {
                facts.push(format!("version {version}"));
            }
            if let Some(ms) = health["latency_ms"].as_u64() {
                facts.push(format!("answered in {ms} ms"));
            }
            if let Some(age) = health["checked_seconds_ago"].as_u64() {
                facts.push(format!("last checked {} ago", human_duration(age)));
            }
            if !facts.is_empty() {
                writeln!(out, "{indent}{}", facts.join(", "))?;
            }
            // A failed check lists no models: "none" would say something it does not know.
            if let Some(models) = health["loaded_models"].as_array().filter(|_| state != "down") {
                let names: Vec<&str> = models.iter().filter_map(Value::as_str).collect();
                let loaded = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
                writeln!(out, "{indent}models loaded: {loaded}")?;
            }
        } else if state == "unknown" {
            writeln!(out, "{indent}not checked yet")?;
        }
        if let Some(error) = upstream_error(up) {
            writeln!(out, "{indent}last error: {error}")?;
        }
        let breaker = &up["breaker"];
        if let Some(state) = breaker["state"].as_str()
            && state != "closed"
        {
            let reason = breaker["open_reason"].as_str().unwrap_or("server failures (refused, timed out, 5xx)");
            let mut line = format!("{indent}breaker {}: {reason}", breaker_word(state, false));
            if let Some(retry) = retry(breaker["retry_after_seconds"].as_u64(), None) {
                let _ = write!(line, "; {retry}");
            }
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// `up`, `down` or `unknown`: the upstream's `state`, else what its last health check saw.
fn upstream_state(up: &Value) -> &str {
    if let Some(state) = up["state"].as_str() {
        return state;
    }
    match up["health"]["ok"].as_bool() {
        Some(true) => "up",
        Some(false) => "down",
        None => "unknown",
    }
}

/// The upstream's `last_error`, else the error of its last health check.
fn upstream_error(up: &Value) -> Option<String> {
    failure(&up["last_error"]).or_else(|| up["health"]["error"].as_str().filter(|e| !e.is_empty()).map(str::to_owned))
}

fn write_routes(out: &mut String, routes: &[Value]) -> std::fmt::Result {
    writeln!(out, "\nroutes:")?;
    if routes.is_empty() {
        return writeln!(out, "  none");
    }
    let model = |route: &Value| match route["model"].as_str() {
        Some("*") => "* (any model)".to_owned(),
        other => other.unwrap_or("?").to_owned(),
    };
    let width = column_width(routes.iter().map(model));
    for route in routes {
        let targets: Vec<&str> = items(&route["targets"]).iter().filter_map(Value::as_str).collect();
        let targets = if targets.is_empty() { "no targets".to_owned() } else { targets.join(", then ") };
        writeln!(out, "  {:<width$}  → {targets}", model(route))?;
    }
    Ok(())
}

fn write_targets(out: &mut String, targets: &[Value]) -> std::fmt::Result {
    writeln!(out, "\ntargets:")?;
    if targets.is_empty() {
        return writeln!(out, "  none");
    }
    let rows: Vec<[String; 5]> = targets
        .iter()
        .map(|t| {
            let state = text(&t["breaker"], "?");
            let forced = t["breaker_detail"]["forced"].as_bool() == Some(true);
            [
                text(&t["name"], "?").to_owned(),
                breaker_word(state, forced),
                count(&t["requests"]),
                count(&t["failures"]),
                failure(&t["last_failure"]).unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let header = ["NAME", "BREAKER", "REQUESTS", "FAILURES", "LAST FAILURE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let [w0, w1, w2, w3, _] = widths;
    let [h0, h1, h2, h3, h4] = header;
    writeln!(out, "  {h0:<w0$}  {h1:<w1$}  {h2:>w2$}  {h3:>w3$}  {h4}")?;
    for (target, [name, breaker, requests, failures, last]) in targets.iter().zip(&rows) {
        writeln!(out, "  {name:<w0$}  {breaker:<w1$}  {requests:>w2$}  {failures:>w3$}  {last}")?;
        let state = text(&target["breaker"], "");
        if state == "closed" || state.is_empty() {
            continue;
        }
        let indent = "      ";
        writeln!(out, "{indent}why: {}", open_reason(target))?;
        let detail_retry = target["breaker_detail"]["retry_after"].as_str();
        if let Some(retry) = retry(target["retry_after_seconds"].as_u64(), detail_retry) {
            writeln!(out, "{indent}{retry}")?;
        }
    }
    Ok(())
}

/// Why a target's breaker is not closed: keel's own words when it gives them, else what its
/// counters say.
fn open_reason(target: &Value) -> String {
    if let Some(reason) = target["open_reason"].as_str().filter(|r| !r.is_empty()) {
        return reason.to_owned();
    }
    if target["breaker_detail"]["forced"].as_bool() == Some(true) {
        return "forced by an operator (POST /keel/breakers/NAME/reset hands it back to keel)".to_owned();
    }
    if text(&target["breaker"], "") == "half_open" {
        return "trying a few requests to see whether it is back".to_owned();
    }
    let mut reason = "too many failures".to_owned();
    if let Some(n) = target["consecutive_failures"].as_u64().filter(|&n| n > 0) {
        reason = format!("{n} failures in a row");
    }
    if let Some(last) = failure(&target["last_failure"]) {
        let _ = write!(reason, " (last: {last})");
    }
    reason
}

/// `retry in 25s` from keel's seconds, else from the breaker's own `retry_after` (`"24s 530ms"`).
fn retry(seconds: Option<u64>, fallback: Option<&str>) -> Option<String> {
    let seconds = match (seconds, fallback) {
        (Some(seconds), _) => seconds,
        (None, Some(text)) => match keel_types::duration::parse(text) {
            Ok(duration) => duration.as_secs() + u64::from(duration.subsec_nanos() > 0),
            Err(_) => return Some(format!("retry in {text}")),
        },
        (None, None) => return None,
    };
    Some(if seconds == 0 {
        "retry on the next request".to_owned()
    } else {
        format!("retry in {}", human_duration(seconds))
    })
}

/// A breaker state for people: trouble in capitals.
fn breaker_word(state: &str, forced: bool) -> String {
    let word = match state {
        "open" => "OPEN",
        "half_open" => "HALF-OPEN",
        other => other,
    };
    if forced { format!("{word} (forced)") } else { word.to_owned() }
}

/// `{"class", "detail", "at"}` as `class: detail, at AT`; `None` for null.
fn failure(value: &Value) -> Option<String> {
    if let Some(text) = value.as_str() {
        return Some(text.to_owned());
    }
    if !value.is_object() {
        return None;
    }
    let class = value["class"].as_str();
    let detail = value["detail"].as_str().filter(|d| !d.is_empty());
    let mut line = match (class, detail) {
        (Some(class), Some(detail)) => format!("{class}: {detail}"),
        (Some(only), None) | (None, Some(only)) => only.to_owned(),
        (None, None) => "failed".to_owned(),
    };
    if let Some(at) = value["at"].as_str() {
        let _ = write!(line, ", at {at}");
    }
    Some(line)
}

/// A JSON array's items (none for anything else).
fn items(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// A string field, or `missing`.
fn text<'a>(value: &'a Value, missing: &'a str) -> &'a str {
    value.as_str().unwrap_or(missing)
}

/// A counter, or `-`.
fn count(value: &Value) -> String {
    value.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// The widest of `cells`, in characters.
fn column_width<S: AsRef<str>>(cells: impl Iterator<Item = S>) -> usize {
    cells.map(|cell| cell.as_ref().chars().count()).max().unwrap_or(0)
}

/// Seconds for people: `45s`, `5m 3s`, `2h 3m`, `3d 4h` (the two largest units).
fn human_duration(seconds: u64) -> String {
    let (days, hours, minutes, secs) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60, seconds % 60);
    let (big, small) = if days > 0 {
        ((days, 'd'), (hours, 'h'))
    } else if hours > 0 {
        ((hours, 'h'), (minutes, 'm'))
    } else if minutes > 0 {
        ((minutes, 'm'), (secs, 's'))
    } else {
        return format!("{secs}s");
    };
    if small.0 == 0 { format!("{}{}", big.0, big.1) } else { format!("{}{} {}{}", big.0, big.1, small.0, small.1) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What a keel answers today (before the upstream breaker and open reasons).
    fn today() -> Value {
        json!({"version":"0.1.0","uptime_seconds":12,"listen":"127.0.0.1:11435","store":"sqlite://keel.db",
            "config_file":null,"auth":false,
            "upstreams":[{"name":"default","url":"http://127.0.0.1:11434","dialect":"ollama",
                "health":{"ok":true,"version":"0.5.1","loaded_models":["llama3.2:latest"],"error":null,
                    "latency_ms":3,"checked_seconds_ago":2}}],
            "routes":[{"model":"*","targets":["default"]}],
            "targets":[{"name":"default:llama3.2","upstream":"default","model":"llama3.2","breaker":"closed",
                "requests":5,"failures":0,"consecutive_failures":0,"last_failure":null}]})
    }

    /// A keel with a dead primary: upstream states, last errors and open reasons.
    fn trouble() -> Value {
        json!({"version":"0.2.0","uptime_seconds":7_385,"listen":"0.0.0.0:11435",
            "store":"postgres://keel:***@db/keel","config_file":"/etc/keel/keel.toml","auth":true,
            "upstreams":[
                {"name":"local","url":"http://127.0.0.1:11434","dialect":"ollama","state":"down",
                    "health":{"ok":false,"version":null,"loaded_models":[],"error":"connection refused",
                        "latency_ms":null,"checked_seconds_ago":4},
                    "last_error":{"class":"refused","detail":"connection refused","at":"2026-12-03T12:01:03Z"},
                    "breaker":{"state":"open",
                        "open_reason":"5 connections refused in a row since 12:01:03 (is Ollama running?)",
                        "retry_after_seconds":12}},
                {"name":"backup","url":"http://10.0.0.5:11434","dialect":"ollama","state":"up",
                    "health":{"ok":true,"version":"0.5.1","loaded_models":["llama3.2:latest","qwen3:8b"],
                        "error":null,"latency_ms":41,"checked_seconds_ago":1},
                    "last_error":null,
                    "breaker":{"state":"closed","open_reason":null,"retry_after_seconds":null}},
                {"name":"cloud","url":"https://api.example.com","dialect":"openai","state":"unknown",
                    "health":null,"last_error":null,
                    "breaker":{"state":"half_open","open_reason":"probing after a cooldown of 30s",
                        "retry_after_seconds":null}}],
            "routes":[{"model":"llama3.2","targets":["local:llama3.2","backup:llama3.2"]},
                {"model":"*","targets":["local","cloud"]}],
            "targets":[
                {"name":"local:llama3.2","upstream":"local","model":"llama3.2","breaker":"open",
                    "breaker_detail":{"forced":false,"retry_after":"25s"},
                    "requests":40,"failures":5,"consecutive_failures":5,
                    "last_failure":{"class":"server_error","detail":"upstream answered 500",
                        "at":"2026-12-03T12:01:03Z"},
                    "open_reason":"local:llama3.2: circuit open since 12:01:03 after 5 failures in a row (last: server_error: upstream answered 500)",
                    "retry_after_seconds":25},
                {"name":"backup:llama3.2","upstream":"backup","model":"llama3.2","breaker":"closed",
                    "requests":1_234,"failures":1,"consecutive_failures":0,
                    "last_failure":{"class":"timeout","detail":"no first byte within 120s",
                        "at":"2026-12-02T23:40:00Z"},
                    "open_reason":null,"retry_after_seconds":null},
                {"name":"cloud:*","upstream":"cloud","model":"*","breaker":"half_open",
                    "requests":3,"failures":3,"consecutive_failures":0,"last_failure":null,
                    "open_reason":null,"retry_after_seconds":null}]})
    }

    #[test]
    fn renders_what_keel_answers_today() {
        insta::assert_snapshot!("today", render(&today()));
    }

    #[test]
    fn says_where_traces_go_and_where_the_dashboard_is() {
        let mut body = today();
        body["dashboard"] = json!("/keel/ui");
        body["traces"] = json!({"destinations": [{"kind": "otlp", "endpoint": "http://127.0.0.1:4318/v1/traces"}], "content": false, "problem": null});
        let text = render(&body);
        assert!(text.contains("traces: sent to otlp http://127.0.0.1:4318/v1/traces, without content"), "{text}");
        assert!(text.contains("dashboard: http://"), "{text}");
        body["traces"] = json!({"destinations": [], "content": false, "problem": null});
        assert!(render(&body).contains("traces: not sent (set OTEL_EXPORTER_OTLP_ENDPOINT"));
        body["traces"] = json!({"destinations": [], "content": false, "problem": "LANGFUSE_SECRET_KEY is not set"});
        assert!(render(&body).contains("traces: NOT sent — LANGFUSE_SECRET_KEY is not set"));
    }

    #[test]
    fn lists_the_incidents_not_resolved() {
        let mut body = today();
        body["incidents"] = json!({"enabled": true, "open": []});
        assert!(render(&body).contains("incidents: none open"));
        body["incidents"] = json!({"enabled": true, "open": [
            {"id": "inc_01", "kind": "upstream_down", "status": "mitigated", "title": "upstream local is not answering", "opened_at": 1}]});
        let text = render(&body);
        assert!(text.contains("incidents (1 not resolved; `keel incidents show ID --runbook`):"), "{text}");
        assert!(text.contains("  inc_01  mitigated  upstream local is not answering"), "{text}");
        body["incidents"] = json!({"enabled": false, "open": []});
        assert!(render(&body).contains("incidents: off"));
    }

    #[test]
    fn renders_down_upstreams_and_open_breakers_with_their_reasons() {
        insta::assert_snapshot!("trouble", render(&trouble()));
    }

    #[test]
    fn reasons_fall_back_to_what_the_counters_say() {
        let mut body = today();
        body["upstreams"][0]["health"] = json!({"ok": false, "error": "connection refused", "loaded_models": []});
        body["targets"][0] = json!({"name": "default:llama3.2", "breaker": "open", "requests": 9, "failures": 5,
            "consecutive_failures": 5, "last_failure": {"class": "refused", "detail": "connection refused"},
            "breaker_detail": {"forced": false, "retry_after": "17s"}});
        insta::assert_snapshot!("fallbacks", render(&body));
    }

    #[test]
    fn renders_rate_limits_and_queues() {
        let mut body = today();
        body["limits"] = json!({"requests_per_minute": 60, "tokens_per_minute": 0, "routes_limited": true,
            "shared": true, "on_store_error": "open"});
        body["admission"] = json!({"enabled": true, "max_concurrent": 4, "max_queue": 64, "max_wait_ms": 30_000,
            "buckets": [{"upstream": "default", "model": "llama3.2", "running": 4, "queued": 7,
                "max_concurrent": 4, "max_queue": 64, "oldest_wait_ms": 1_250}],
            "counters": {"admitted": 120, "shed_total": 3}});
        insta::assert_snapshot!("queues", render(&body));
        body["limits"] = json!({"requests_per_minute": 0, "tokens_per_minute": 0, "shared": false});
        body["admission"] = json!({"enabled": false});
        let off = render(&body);
        assert!(
            off.contains("rate limits: none by default") && off.contains("off (add an [admission] section"),
            "{off}"
        );
    }

    #[test]
    fn never_fails_on_missing_or_odd_fields() {
        for body in [
            json!({}),
            json!(null),
            json!([]),
            json!({"upstreams": [{}], "routes": [{}], "targets": [{}]}),
            json!({"upstreams": 3, "routes": "x", "targets": [{"breaker": "open", "last_failure": 7}]}),
        ] {
            let text = render(&body);
            assert!(text.starts_with("keel ? on ?, up ?\n"), "{text}");
            assert!(text.contains("\nupstreams:\n") && text.contains("\nroutes:\n") && text.contains("\ntargets:\n"));
        }
    }

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(60), "1m");
        assert_eq!(human_duration(303), "5m 3s");
        assert_eq!(human_duration(7_380), "2h 3m");
        assert_eq!(human_duration(7_385), "2h 3m");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3_600 + 59), "3d 4h");
        assert_eq!(retry(Some(25), Some("9s")).as_deref(), Some("retry in 25s"));
        assert_eq!(retry(None, Some("9s")).as_deref(), Some("retry in 9s"));
        assert_eq!(retry(None, Some("0s")).as_deref(), Some("retry on the next request"));
        assert_eq!(retry(None, Some("24s 10ms")).as_deref(), Some("retry in 25s"));
        assert_eq!(retry(None, None), None);
    }
}
