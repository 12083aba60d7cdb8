//! Test-only helpers shared by keel's integration tests.
//!
//! - [`TestGateway`]: a real keel gateway serving on `127.0.0.1:0`, stopped on drop;
//! - [`Stack`]: a fake Ollama ([`keel_mock::MockServer`]) with a keel in front of it;
//! - [`config_for`]: the default config pointed at one upstream; [`scenario`] for mock scenarios;
//! - [`post_json`], [`post_json_text`]: one-line requests for tests;
//! - [`client_tool`]: where the project's test script installed external clients (Python, Node);
//! - [`process`]: a real `keel serve` process, killed on drop;
//! - [`otlp`]: a local OTLP/HTTP trace receiver that decodes what it gets;
//! - [`test_ca`]: a new CA and a `localhost` certificate signed by it, as PEM (HTTPS mocks).
//!
//! Never a dependency of non-test code.

#![allow(clippy::panic, reason = "a test helper that cannot do its job must stop the test loudly")]

pub mod otlp;
pub mod process;
pub mod tls;
pub mod webhooks;

pub use tls::{TestCa, test_ca};

use std::net::SocketAddr;
use std::path::PathBuf;

use keel_gateway::Gateway;
use keel_gateway::config::{Config, Overrides, RawConfig};

/// Installs a test log writer once (honours `RUST_LOG`; quiet by default).
pub fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The default configuration, listening on `127.0.0.1:0`, with one Ollama upstream at `upstream`.
/// Health probes are off, so the upstream sees only the test's own requests.
pub fn config_for(upstream: &str) -> Config {
    config_with(upstream, "", "")
}

/// [`config_for`] with more lines in its `[server]` table (`server`, e.g. `header_timeout =
/// "1s"`) and more TOML after it (`extra`: further sections, e.g. [`MODEL_MANAGEMENT`]).
pub fn config_with(upstream: &str, server: &str, extra: &str) -> Config {
    config_from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n{server}[[upstream]]\nname = \"default\"\nurl = \"{upstream}\"\nhealth_interval = \"0s\"\n{extra}"
    ))
}

/// The config section that lets model management (`/api/pull`, `/api/delete`, …) through keel.
pub const MODEL_MANAGEMENT: &str = "[auth]\nallow_model_management = true\n";

/// A configuration from TOML text (listen address forced to `127.0.0.1:0`). Panics on invalid
/// config: tests should fail loudly.
pub fn config_from_toml(text: &str) -> Config {
    config_from_toml_with_env(text, &|name| std::env::var(name).ok())
}

/// [`config_from_toml`] with environment variables from `env` instead of the process's (e.g.
/// `OTEL_EXPORTER_OTLP_ENDPOINT` for one test's gateway).
pub fn config_from_toml_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    let raw = match RawConfig::parse(text) {
        Ok(raw) => raw,
        Err(err) => panic!("invalid test config: {err}\n{text}"),
    };
    let overrides = Overrides { listen: Some("127.0.0.1:0".into()), ..Overrides::default() };
    match Config::from_raw(raw, None, &overrides, env) {
        Ok(config) => config,
        Err(err) => panic!("invalid test config: {err}"),
    }
}

/// A keel gateway serving on a random loopback port.
#[derive(Debug)]
pub struct TestGateway {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The test's own SQLite store directory (removed on drop), when the config used the default.
    store_dir: Option<PathBuf>,
}

impl TestGateway {
    /// Starts serving `config` (its listen address is used; use `127.0.0.1:0`).
    pub async fn start(mut config: Config) -> TestGateway {
        trace_init();
        let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
            Ok(listener) => listener,
            Err(err) => panic!("cannot bind test gateway: {err}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(err) => panic!("no local addr: {err}"),
        };
        // The default store would be ./keel.db: each test gateway gets its own file instead.
        let (store_url, store_dir) = if config.store_url == "sqlite://keel.db" {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("keel-test-{}-{n}", std::process::id()));
            if let Err(err) = std::fs::create_dir_all(&dir) {
                panic!("cannot create {}: {err}", dir.display());
            }
            (format!("sqlite://{}", dir.join("keel.db").display()), Some(dir))
        } else {
            (config.store_url.clone(), None)
        };
        // A relative runbook_dir would be the crate's folder: runbooks go to a temporary one.
        if config.incidents.runbook_dir.as_ref().is_some_and(|dir| dir.is_relative()) {
            let dir = store_dir.clone().unwrap_or_else(std::env::temp_dir).join("runbooks");
            config.incidents.runbook_dir = Some(dir);
        }
        // Like `keel serve`: the sessions and the API keys of one store.
        let stores = match keel_session::open_stores(&store_url).await {
            Ok(opened) => opened,
            Err(err) => panic!("cannot open the test store {store_url}: {err}"),
        };
        let gateway = match Gateway::with_stores(config, stores).await {
            Ok(gateway) => gateway,
            Err(err) => panic!("cannot build gateway: {err}"),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = keel_gateway::serve(listener, gateway, async {
                let _ = stopped.await;
            })
            .await;
        });
        TestGateway { addr, stop: Some(stop), task: Some(task), store_dir }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends the shutdown signal and waits until serving stops (in-flight requests drain first).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Sends the shutdown signal without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server task to end (after [`TestGateway::begin_shutdown`]).
    pub async fn stopped(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(dir) = self.store_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A fake Ollama with a keel in front of it.
#[derive(Debug)]
pub struct Stack {
    /// The fake Ollama.
    pub mock: keel_mock::MockServer,
    /// keel, forwarding everything to `mock`.
    pub keel: TestGateway,
}

impl Stack {
    /// Starts a mock with `scenario` and a default-config keel in front of it.
    pub async fn start(scenario: keel_mock::Scenario) -> Stack {
        Stack::start_with(scenario, "", "").await
    }

    /// [`Stack::start`] with more lines in keel's `[server]` table and more TOML after it (see
    /// [`config_with`]).
    pub async fn start_with(scenario: keel_mock::Scenario, server: &str, extra: &str) -> Stack {
        let mock = match keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), scenario).await {
            Ok(mock) => mock,
            Err(err) => panic!("cannot start keel-mock: {err}"),
        };
        let keel = TestGateway::start(config_with(&mock.url(), server, extra)).await;
        Stack { mock, keel }
    }

    /// A mock answering `llama3.2` with a fixed reply, and keel in front.
    pub async fn basic() -> Stack {
        Stack::basic_with("").await
    }

    /// [`Stack::basic`] with more TOML after keel's config (further sections).
    pub async fn basic_with(extra: &str) -> Stack {
        Stack::start_with(keel_mock::Scenario::single_model("llama3.2", "Hello from keel-mock."), "", extra).await
    }

    /// [`Stack::basic`] with more lines in keel's `[server]` table.
    pub async fn basic_with_server(server: &str) -> Stack {
        Stack::start_with(keel_mock::Scenario::single_model("llama3.2", "Hello from keel-mock."), server, "").await
    }
}

/// A mock scenario from TOML text. Panics on an invalid scenario: tests should fail loudly.
pub fn scenario(toml: &str) -> keel_mock::Scenario {
    match keel_mock::Scenario::from_toml_str(toml) {
        Ok(scenario) => scenario,
        Err(err) => panic!("invalid test scenario: {err}\n{toml}"),
    }
}

/// POSTs `body` as JSON to `url` and returns the response (panics if no response arrives).
pub async fn post_json(url: &str, body: &serde_json::Value) -> reqwest::Response {
    match reqwest::Client::new().post(url).json(body).send().await {
        Ok(response) => response,
        Err(err) => panic!("POST {url} failed: {err}"),
    }
}

/// POSTs `body` as JSON to `url` and returns the whole response text, which must arrive complete
/// (a stream keel cut off fails the test).
pub async fn post_json_text(url: &str, body: &serde_json::Value) -> String {
    match post_json(url, body).await.text().await {
        Ok(text) => text,
        Err(err) => panic!("the response body from {url} did not end cleanly: {err}"),
    }
}

/// Where `scripts/test.sh` installed an external client tool (`python` in the venv, `node`
/// modules), or `None` if it is not installed. With `KEEL_REQUIRE_CLIENTS=1` (set by the test
/// script and CI) a missing tool panics instead, so CI cannot silently skip client tests.
pub fn client_tool(relative: &str) -> Option<PathBuf> {
    let root = workspace_root();
    let path = root.join(relative);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("KEEL_REQUIRE_CLIENTS").is_ok_and(|v| v == "1") {
        panic!("{} is missing: run scripts/test.sh, which installs the client test tools", path.display());
    }
    None
}

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
