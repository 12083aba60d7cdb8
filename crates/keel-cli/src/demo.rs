//! `keel demo`: a self-contained tour of keel against a fake Ollama.
//!
//! Each scene starts what it needs on 127.0.0.1 (random ports), sends real HTTP requests through
//! keel and prints what happened in plain words. Later capabilities add their scenes here.

mod durable;
mod incident;

use std::io::Write as _;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use keel_gateway::Gateway;
use keel_gateway::config::{Config, Overrides};
use serde_json::{Value, json};

/// Flags of `keel demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {}

/// A running fake Ollama and a keel in front of it.
struct Stage {
    mock: keel_mock::MockServer,
    keel: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Stage {
    /// A fake Ollama answering `llama3.2`, and keel forwarding everything to it.
    async fn start() -> anyhow::Result<Stage> {
        let mock = start_mock("Hello! I am a fake Ollama model answering through keel.").await?;
        let overrides =
            Overrides { listen: Some("127.0.0.1:0".into()), upstream: Some(mock.url()), ..Overrides::default() };
        let config = Config::without_file(&overrides, &trace_env)?;
        Stage::serve(mock, config).await
    }

    async fn serve(mock: keel_mock::MockServer, config: Config) -> anyhow::Result<Stage> {
        let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
        let keel = format!("http://{}", listener.local_addr()?);
        let gateway = Gateway::new(config)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = keel_gateway::serve(listener, gateway, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Stage { mock, keel, http: reqwest::Client::new(), stop: Some(stop), server })
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.server.await;
        self.mock.shutdown().await;
    }
}

pub(crate) async fn run(_args: DemoArgs) -> anyhow::Result<()> {
    let stage = Stage::start().await.context("cannot start the demo servers on 127.0.0.1")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "keel demo")?;
    writeln!(out, "=========")?;
    writeln!(out, "A fake Ollama (keel mock) listens on {}.", stage.mock.url())?;
    writeln!(out, "keel listens on {} and forwards to it.", stage.keel)?;
    writeln!(out, "An agent changes only its base URL from the first address to the second.\n")?;
    drop(out);

    scene_pass_through(&stage).await?;
    stage.stop().await;
    scene_fallback().await?;
    scene_structured().await?;
    durable::scene().await?;
    incident::scene().await?;
    writeln!(std::io::stdout().lock(), "\nDone. Run `keel serve` in front of your own Ollama to do this for real.")?;
    Ok(())
}

async fn start_mock(reply: &str) -> anyhow::Result<keel_mock::MockServer> {
    Ok(keel_mock::MockServer::start("127.0.0.1:0".parse()?, keel_mock::Scenario::single_model("llama3.2", reply))
        .await?)
}

/// The demo's environment: only where traces go (`OTEL_*`, `LANGFUSE_*`), so a demo run shows up
/// in the user's tracing tool when they have one.
pub(crate) fn trace_env(name: &str) -> Option<String> {
    (name.starts_with("OTEL_") || name.starts_with("LANGFUSE_")).then(|| std::env::var(name).ok()).flatten()
}

/// Where to watch a scene while it runs.
pub(crate) fn where_to_look(keel: &str) -> String {
    format!("(watch it: dashboard {keel}/keel/ui · metrics {keel}/metrics · status {keel}/keel/status)")
}

/// Sends one chat through keel; returns the target that answered, the status and the reply text.
async fn ask(stage: &Stage) -> anyhow::Result<(String, u16, String)> {
    let response = stage
        .http
        .post(format!("{}/api/chat", stage.keel))
        .json(
            &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "Are you there?"}], "stream": false}),
        )
        .send()
        .await?;
    let status = response.status().as_u16();
    let target = response.headers().get("x-keel-target").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let body: Value = response.json().await?;
    let text = body["message"]["content"].as_str().or(body["error"].as_str()).unwrap_or("").to_owned();
    Ok((target, status, text))
}

async fn breaker_of(stage: &Stage, target: &str) -> anyhow::Result<String> {
    let status: Value = stage.http.get(format!("{}/keel/status", stage.keel)).send().await?.json().await?;
    Ok(status["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == target)
        .and_then(|t| t["breaker"].as_str())
        .unwrap_or("?")
        .to_owned())
}

/// Scene 2: the primary dies, its breaker opens, the backup serves, the primary recovers.
async fn scene_fallback() -> anyhow::Result<()> {
    let primary = start_mock("Primary here.").await?;
    let backup = start_mock("Backup here, the primary is out.").await?;
    let raw = keel_gateway::config::RawConfig::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nname = \"primary\"\nurl = \"{}\"\n[[upstream]]\nname = \"backup\"\nurl = \"{}\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"primary\", \"backup\"]\n\
         [breaker]\nfailure_threshold = 3\ncooldown = \"2s\"\n",
        primary.url(),
        backup.url()
    ))
    .map_err(anyhow::Error::msg)?;
    let config = Config::from_raw(raw, None, &Overrides::default(), &trace_env)?;
    let stage = Stage::serve(primary, config).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nScene 2 — the primary dies, the backup serves, the primary comes back")?;
    writeln!(out, "----------------------------------------------------------------------")?;
    writeln!(out, "Route: llama3.2 → [primary, backup]; breaker opens after 3 failures, probes after 2 s.")?;
    writeln!(out, "{}", where_to_look(&stage.keel))?;
    let (target, status, text) = ask(&stage).await?;
    writeln!(out, "healthy:        {status} from {target}: {text:?}")?;

    stage.mock.set_scenario(keel_mock::Scenario::from_toml_str(
        "[[model]]\nname = \"llama3.2\"\n[[model.fault]]\nkind = \"busy\"\n",
    )?);
    writeln!(out, "(the primary now answers 503 \"server busy\" to everything)")?;
    for i in 1..=5 {
        let (target, status, text) = ask(&stage).await?;
        writeln!(out, "request {i}:      {status} from {target}: {text:?}")?;
    }
    writeln!(
        out,
        "primary breaker: {}   (the last requests did not even try it)",
        breaker_of(&stage, "primary:llama3.2").await?
    )?;

    stage.mock.set_scenario(keel_mock::Scenario::single_model("llama3.2", "Primary here, back again."));
    writeln!(out, "(the primary is healthy again; waiting out the 2 s cooldown)")?;
    drop(out);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut out = std::io::stdout().lock();
    let (target, status, text) = ask(&stage).await?;
    writeln!(out, "probe:          {status} from {target}: {text:?}")?;
    writeln!(out, "primary breaker: {}", breaker_of(&stage, "primary:llama3.2").await?)?;
    drop(out);
    backup.shutdown().await;
    stage.stop().await;
    Ok(())
}

/// Scene 3: a garbled JSON answer is repaired; a hopeless one is answered from the canned value.
async fn scene_structured() -> anyhow::Result<()> {
    let garbled = "Sure! Here is the ticket:\n```json\n{'Label': 'BILLING', confidence: \"0.93\",}\n```";
    let hopeless = "I am sorry, I cannot classify {customer_name}.";
    let scenario = keel_mock::Scenario::from_toml_str(&format!(
        "[[model]]\nname = \"llama3.2\"\njson_replies = [{garbled:?}, {hopeless:?}, {hopeless:?}]\n"
    ))?;
    let mock = keel_mock::MockServer::start("127.0.0.1:0".parse()?, scenario).await?;
    let raw = keel_gateway::config::RawConfig::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"local\"\nurl = \"{}\"\n\
         [[route]]\nmodel = \"llama3.2\"\ntargets = [\"local\"]\n\
         canned = {{ label = \"unknown\", confidence = 0 }}\n",
        mock.url()
    ))
    .map_err(anyhow::Error::msg)?;
    let config = Config::from_raw(raw, None, &Overrides::default(), &trace_env)?;
    let stage = Stage::serve(mock, config).await?;
    let schema = json!({
        "type": "object",
        "properties": {"label": {"enum": ["bug", "billing", "unknown"]}, "confidence": {"type": "number"}},
        "required": ["label", "confidence"],
        "additionalProperties": false
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nScene 3 — broken JSON from the model is repaired, or answered from the canned value")?;
    writeln!(out, "------------------------------------------------------------------------------------")?;
    writeln!(out, "The agent asks for {schema} (Ollama `format`).")?;
    writeln!(out, "{}", where_to_look(&stage.keel))?;
    for (label, model_said) in [("garbled", garbled), ("hopeless", hopeless)] {
        let response = stage
            .http
            .post(format!("{}/api/chat", stage.keel))
            .json(&json!({
                "model": "llama3.2",
                "messages": [{"role": "user", "content": "Classify: 'I was charged twice.'"}],
                "format": schema,
                "stream": false
            }))
            .send()
            .await?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let (repair, attempts, target) = (header("x-keel-repair"), header("x-keel-attempts"), header("x-keel-target"));
        let status = response.status().as_u16();
        let body: Value = response.json().await?;
        writeln!(out, "{label}: the model said {model_said:?}")?;
        writeln!(
            out,
            "  agent got {status}: {}   (X-Keel-Repair: {repair}, X-Keel-Attempts: {attempts}, from {target})",
            body["message"]["content"].as_str().or(body["error"].as_str()).unwrap_or("")
        )?;
    }
    writeln!(out, "The hopeless answer was re-asked once with the validation error, then the route's canned value")?;
    writeln!(out, "answered: valid against the schema, and marked as canned — never invented data.")?;
    drop(out);
    stage.stop().await;
    Ok(())
}

/// Scene 1: a request passes through unchanged, streamed and not, and errors keep Ollama's shape.
async fn scene_pass_through(stage: &Stage) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "Scene 1 — a request passes through")?;
    writeln!(out, "-----------------------------------")?;
    writeln!(out, "{}", where_to_look(&stage.keel))?;

    let version: Value = stage.http.get(format!("{}/api/version", stage.keel)).send().await?.json().await?;
    writeln!(out, "GET  /api/version            → {version}")?;

    let started = Instant::now();
    let response = stage
        .http
        .post(format!("{}/api/chat", stage.keel))
        .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "Hi!"}], "stream": false}))
        .send()
        .await?;
    let target = response.headers().get("x-keel-target").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
    let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
    // `traceresponse: 00-<trace id>-<span id>-<flags>` when traces are sent somewhere.
    let trace = response
        .headers()
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .map(str::to_owned);
    let reply: Value = response.json().await?;
    writeln!(
        out,
        "POST /api/chat (stream=false) → {:?} in {} ms, served by {target}, request id {request_id}",
        reply["message"]["content"].as_str().unwrap_or(""),
        started.elapsed().as_millis()
    )?;
    match trace {
        Some(trace) => {
            writeln!(out, "   its trace: {trace} (in your tracing tool; spans per stage and the model call)")?
        }
        None => writeln!(
            out,
            "   (set OTEL_EXPORTER_OTLP_ENDPOINT, or LANGFUSE_PUBLIC_KEY/SECRET_KEY/HOST, to see each request as a trace)"
        )?,
    }

    write!(out, "POST /api/chat (streamed)     → ")?;
    out.flush()?;
    let mut response = stage
        .http
        .post(format!("{}/api/chat", stage.keel))
        .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "Hi again!"}]}))
        .send()
        .await?;
    let mut chunks = 0;
    let mut buffer = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&line)?;
            if let Some(piece) = value["message"]["content"].as_str() {
                write!(out, "{piece}")?;
                out.flush()?;
            }
            chunks += 1;
        }
    }
    writeln!(out, "   ({chunks} NDJSON chunks, relayed as they came)")?;

    let response = stage
        .http
        .post(format!("{}/api/chat", stage.keel))
        .json(&json!({"model": "no-such-model", "messages": []}))
        .send()
        .await?;
    writeln!(out, "POST /api/chat (unknown model) → {} {}", response.status().as_u16(), response.text().await?)?;

    let response = stage
        .http
        .post(format!("{}/v1/chat/completions", stage.keel))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    writeln!(
        out,
        "POST /v1/chat/completions (broken JSON) → {} {}",
        response.status().as_u16(),
        response.text().await?
    )?;

    let status: Value = stage.http.get(format!("{}/keel/status", stage.keel)).send().await?.json().await?;
    for target in status["targets"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "GET  /keel/status → target {} breaker {} ({} requests, {} failures)",
            target["name"].as_str().unwrap_or(""),
            target["breaker"].as_str().unwrap_or(""),
            target["requests"],
            target["failures"]
        )?;
    }
    Ok(())
}
