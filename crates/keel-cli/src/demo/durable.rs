//! Scene 4 of `keel demo`: a conversation survives a restart of keel, and an agent run resumes
//! from its checkpoint without charging the card twice.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use keel_agent::{Agent, AgentRun, CheckpointStore, LlmTurn, StepError, ToolCall, ToolError};
use keel_gateway::Gateway;
use keel_gateway::config::{Config, Overrides, RawConfig};
use keel_types::FailureClass;
use serde_json::{Value, json};

/// Runs the scene.
pub(super) async fn scene() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("keel-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let result = conversation(&dir).await;
    let result = match result {
        Ok(()) => checkpoint(&dir).await,
        Err(err) => Err(err),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A keel with its session store in `dir`, in front of `upstream`.
async fn start_keel(
    dir: &std::path::Path,
    upstream: &str,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let store_url = format!("sqlite://{}", dir.join("keel.db").display());
    let raw = RawConfig::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"{store_url}\"\n[[upstream]]\nname = \"local\"\nurl = \"{upstream}\"\nhealth_interval = \"0s\"\n"
    ))
    .map_err(anyhow::Error::msg)?;
    let config = Config::from_raw(raw, None, &Overrides::default(), &super::trace_env)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let gateway = Gateway::with_store(config, keel_session::open(&store_url).await?)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = keel_gateway::serve(listener, gateway, async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok((url, stop, server))
}

async fn say(http: &reqwest::Client, keel: &str, text: &str) -> anyhow::Result<String> {
    let body: Value = http
        .post(format!("{keel}/api/chat"))
        .header("X-Keel-Session", "demo-ada")
        .json(&json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await?
        .json()
        .await?;
    Ok(body["message"]["content"].as_str().unwrap_or_default().to_owned())
}

async fn conversation(dir: &std::path::Path) -> anyhow::Result<()> {
    let scenario = keel_mock::Scenario::from_toml_str(
        "[[model]]\nname = \"llama3.2\"\nreplies = [\"Nice to meet you, Ada.\", \"Your name is Ada.\"]\n",
    )?;
    let mock = keel_mock::MockServer::start("127.0.0.1:0".parse()?, scenario).await?;
    let http = reqwest::Client::new();
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nScene 4 — conversations and agent runs survive restarts")?;
    writeln!(out, "--------------------------------------------------------")?;
    drop(out);

    let (keel, stop, server) = start_keel(dir, &mock.url()).await?;
    let first = say(&http, &keel, "My name is Ada.").await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "agent (X-Keel-Session: demo-ada): \"My name is Ada.\"  → {first:?}")?;
    writeln!(out, "(keel stops; its SQLite store stays on disk)")?;
    drop(out);
    let _ = stop.send(());
    let _ = server.await;

    let (keel, stop, server) = start_keel(dir, &mock.url()).await?;
    let second = say(&http, &keel, "What is my name?").await?;
    let sent = mock
        .requests()
        .iter()
        .filter(|r| r.path == "/api/chat")
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .last()
        .map(|body| body["messages"].as_array().map_or(0, Vec::len))
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    writeln!(out, "agent, to the restarted keel: \"What is my name?\"  → {second:?}")?;
    writeln!(out, "  the agent sent 1 message; keel sent the model {sent}: the conversation came back from the store")?;
    drop(out);
    let _ = stop.send(());
    let _ = server.await;
    mock.shutdown().await;
    Ok(())
}

/// An agent that pays an order: the model asks for `charge_card`, then confirms — but the model
/// server is down the first time it is asked to confirm.
struct Checkout {
    charges: AtomicU32,
    server_down: AtomicBool,
}

impl Agent for Checkout {
    async fn llm(&self, iteration: u32, _history: &[Value]) -> Result<LlmTurn, StepError> {
        if iteration == 0 {
            let call = ToolCall { id: None, name: "charge_card".into(), arguments: json!({"order": 7, "amount": 42}) };
            return Ok(LlmTurn::with_tool_calls(json!({"role": "assistant", "content": ""}), vec![call]));
        }
        if self.server_down.swap(false, Ordering::SeqCst) {
            return Err(StepError::from(FailureClass::Refused));
        }
        Ok(LlmTurn::answer(json!({"role": "assistant", "content": "Paid 42 € for order 7."})))
    }

    async fn tool(&self, _call: &ToolCall, _idempotency_key: &str) -> Result<String, ToolError> {
        self.charges.fetch_add(1, Ordering::SeqCst);
        Ok("charged 42 €".into())
    }
}

async fn checkpoint(dir: &std::path::Path) -> anyhow::Result<()> {
    let store = keel_session::open(&format!("sqlite://{}", dir.join("runs.db").display())).await?;
    let checkpoints = CheckpointStore::new(Arc::clone(&store));
    let agent = Checkout { charges: AtomicU32::new(0), server_down: AtomicBool::new(true) };
    let run = AgentRun::new(agent, checkpoints.clone());
    let mut out = std::io::stdout().lock();
    writeln!(out, "agent run \"order-7\": the model asks for charge_card, then the model server goes down")?;
    drop(out);
    let failed = run.start("order-7", json!("Pay order 7")).await;
    let mut out = std::io::stdout().lock();
    match &failed {
        Ok(_) => writeln!(out, "  (the run finished without a failure)")?,
        Err(err) => {
            let point = err.failure_point();
            writeln!(
                out,
                "  run stopped at iteration {}, phase {}, kind {}; charges so far: {}",
                point.map_or(0, |p| p.iteration),
                point.map_or("?", |p| p.phase.as_str()),
                point.map_or("?", |p| p.kind.as_str()),
                run.agent().charges.load(Ordering::SeqCst)
            )?;
        }
    }
    drop(out);
    let Some(saved) = checkpoints.load("order-7").await? else {
        anyhow::bail!("the run left no checkpoint");
    };
    let outcome = run.resume(saved).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "  resumed from the checkpoint → {:?}; card charged {} time(s): the completed tool call was not run again",
        outcome.output["content"].as_str().unwrap_or_default(),
        run.agent().charges.load(Ordering::SeqCst)
    )?;
    Ok(())
}
