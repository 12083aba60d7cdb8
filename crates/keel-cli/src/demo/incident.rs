//! Scene 5 of `keel demo`: the only model server dies, an incident opens, a signed webhook tells
//! a (local) receiver, the runbook is printed; the server comes back and the incident resolves.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keel_gateway::Gateway;
use keel_gateway::config::{Config, Overrides, RawConfig};
use parking_lot::Mutex;
use serde_json::Value;

/// The demo receiver's signing secret (a real one comes from `secret_env`).
const SECRET: &str = "whsec_ZGVtby1vbmx5LWtlZWwtd2ViaG9vay1zZWNyZXQ=";

/// How many lines of the runbook the scene prints.
const RUNBOOK_LINES: usize = 28;

/// Runs the scene.
pub(super) async fn scene() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("keel-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let result = play(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn play(dir: &std::path::Path) -> anyhow::Result<()> {
    let mock = super::start_mock("Hello from the model server.").await?;
    let addr = mock.addr();
    let receiver = Receiver::start().await?;
    let store_url = format!("sqlite://{}", dir.join("keel.db").display());
    let raw = RawConfig::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"{store_url}\"\n\
         [[upstream]]\nname = \"local\"\nurl = \"{}\"\nhealth_interval = \"500ms\"\n\
         [breaker]\nfailure_threshold = 2\ncooldown = \"1s\"\n\
         [incidents]\nrunbook_dir = \"{}\"\n\
         [[notify]]\nurl = \"{}\"\nformat = \"json\"\nsecret_env = \"DEMO_WEBHOOK_SECRET\"\n",
        mock.url(),
        dir.join("runbooks").display(),
        receiver.url
    ))
    .map_err(anyhow::Error::msg)?;
    let env = |name: &str| if name == "DEMO_WEBHOOK_SECRET" { Some(SECRET.to_owned()) } else { super::trace_env(name) };
    let config = Config::from_raw(raw, None, &Overrides::default(), &env)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let keel = format!("http://{}", listener.local_addr()?);
    let gateway = Gateway::with_stores(config, keel_session::open_stores(&store_url).await?).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = keel_gateway::serve(listener, gateway, async {
            let _ = stopped.await;
        })
        .await;
    });
    let http = reqwest::Client::new();
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nScene 5 — the model server dies: an incident, a notification, a runbook")?;
    writeln!(out, "------------------------------------------------------------------------")?;
    writeln!(out, "keel records failures as incidents and tells a webhook (here a local receiver) once per change.")?;
    writeln!(out, "{}", super::where_to_look(&keel))?;
    drop(out);

    mock.shutdown().await;
    say(&format!("(the model server at http://{addr} is stopped)"));
    let started = Instant::now();
    until("the breaker to open", Duration::from_secs(15), || async {
        let _ = http.post(format!("{keel}/api/chat")).json(&chat()).send().await;
        breaker_open(&http, &keel).await.unwrap_or(false)
    })
    .await?;
    let incident = wait_for(Duration::from_secs(15), || async {
        let list: Value = http.get(format!("{keel}/keel/incidents")).send().await.ok()?.json().await.ok()?;
        list["incidents"].as_array()?.first().cloned()
    })
    .await
    .context("no incident opened")?;
    let id = incident["id"].as_str().unwrap_or_default().to_owned();
    say(&format!(
        "incident opened after {:.1} s: {id} ({}, {})\n  \"{}\"",
        started.elapsed().as_secs_f64(),
        incident["kind"].as_str().unwrap_or("?"),
        incident["status"].as_str().unwrap_or("?"),
        incident["title"].as_str().unwrap_or("?")
    ));
    let delivered =
        wait_for(Duration::from_secs(15), || async { receiver.first() }).await.context("no notification")?;
    say(&format!(
        "webhook delivered: {} (signed: webhook-signature {}…)",
        delivered.0,
        &delivered.1[..12.min(delivered.1.len())]
    ));

    let runbook = wait_for(Duration::from_secs(15), || async {
        let response = http.get(format!("{keel}/keel/incidents/{id}/runbook")).send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        response.text().await.ok()
    })
    .await
    .context("no runbook")?;
    say(&format!("runbook (GET {keel}/keel/incidents/{id}/runbook), its first lines:\n"));
    let head: Vec<&str> = runbook.lines().take(RUNBOOK_LINES).collect();
    say(&format!("    {}\n    …", head.join("\n    ")));

    let _back =
        keel_mock::MockServer::start(addr, keel_mock::Scenario::single_model("llama3.2", "Back again.")).await?;
    say("(the model server is back)");
    until("an answer", Duration::from_secs(15), || async {
        http.post(format!("{keel}/api/chat")).json(&chat()).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await?;
    let resolved = wait_for(Duration::from_secs(15), || async {
        let shown: Value = http.get(format!("{keel}/keel/incidents/{id}")).send().await.ok()?.json().await.ok()?;
        (shown["incident"]["status"] == "resolved").then_some(shown)
    })
    .await
    .context("the incident did not resolve")?;
    let events = resolved["events"].as_array().map_or(0, Vec::len);
    say(&format!("incident resolved by itself ({events} events on its timeline)"));
    if let Some(last) = wait_for(Duration::from_secs(15), || async { receiver.nth(1) }).await {
        say(&format!("webhook delivered: {}", last.0));
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

fn chat() -> Value {
    serde_json::json!({"model": "llama3.2", "messages": [{"role": "user", "content": "Still there?"}], "stream": false})
}

fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

async fn breaker_open(http: &reqwest::Client, keel: &str) -> anyhow::Result<bool> {
    let status: Value = http.get(format!("{keel}/keel/status")).send().await?.json().await?;
    Ok(status.to_string().contains("\"open\""))
}

async fn until<F, Fut>(what: &str, within: Duration, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        if start.elapsed() > within {
            bail!("waited {within:?} for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn wait_for<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A local webhook receiver: keeps each delivery's type and signature.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let keep = Arc::clone(&got);
        let app = axum::Router::new().fallback(move |headers: http::HeaderMap, body: axum::body::Bytes| {
            let keep = Arc::clone(&keep);
            async move {
                let kind =
                    serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["type"].as_str().map(str::to_owned));
                let signature = headers.get("webhook-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                keep.lock().push((kind.unwrap_or_default(), signature));
                http::StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { url, got })
    }

    fn first(&self) -> Option<(String, String)> {
        self.nth(0)
    }

    fn nth(&self, index: usize) -> Option<(String, String)> {
        self.got.lock().get(index).cloned()
    }
}
