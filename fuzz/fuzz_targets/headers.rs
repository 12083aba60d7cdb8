//! Any values of the request headers keel reads (`Host`, `Origin` and the CORS preflight
//! headers, `Authorization`, `X-API-Key`, `X-Keel-Deadline`, `X-Keel-Session*`, `X-Request-Id`, …) on any of
//! its kinds of paths, through the whole router: keel must not panic, must answer, and must
//! never blame itself (500) for what a client sent.
#![no_main]

use std::sync::OnceLock;

use keel_gateway::config::{Config, Overrides, RawConfig};
use keel_gateway::{Gateway, app};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

const NAMES: [&str; 15] = [
    "host",
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
    "authorization",
    "x-keel-deadline",
    "x-keel-session",
    "x-keel-session-mode",
    "x-keel-idempotency-key",
    "x-request-id",
    "content-type",
    "content-length",
    "transfer-encoding",
    "x-keel-priority",
    "x-api-key",
];
const PATHS: [&str; 10] = [
    "/api/chat",
    "/v1/chat/completions",
    "/api/tags",
    "/api/pull",
    "/keel/health",
    "/keel/status",
    "/keel/sessions/x",
    "/metrics",
    "/v1/models/m",
    "/keel/nothing",
];
const METHODS: [&str; 5] = ["GET", "POST", "OPTIONS", "DELETE", "HEAD"];

/// A gateway whose upstream refuses connections at once, with keys, CORS and a session store.
fn gateway() -> &'static (tokio::runtime::Runtime, Gateway) {
    static GATEWAY: OnceLock<(tokio::runtime::Runtime, Gateway)> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let key = std::env::temp_dir().join("keel-fuzz-key");
        std::fs::write(&key, "fuzz-key-123").expect("cannot write the fuzz key file");
        let toml = format!(
            "[server]\ncors_origins = [\"http://app.example\"]\n[retry]\nattempts = 0\n\
             [[upstream]]\nname = \"default\"\nurl = \"http://127.0.0.1:1\"\nhealth_interval = \"0s\"\n\
             [limits]\nrequests_per_minute = 1000000\ntokens_per_minute = 100000000\n\
             [auth]\nallow_model_management = true\n\
             keys = [{{ name = \"k\", key_file = \"{}\", scopes = [\"inference\", \"admin\"] }}]\n",
            key.display()
        );
        let raw = RawConfig::parse(&toml).expect("the fuzz config parses");
        let config = Config::from_raw(raw, None, &Overrides::default(), &|_| None).expect("the fuzz config is valid");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let db = std::env::temp_dir().join(format!("keel-fuzz-{}.db", std::process::id()));
        let store = runtime.block_on(keel_session::open(&format!("sqlite://{}", db.display()))).expect("a session store");
        let gateway = Gateway::with_store(config, store).expect("a gateway");
        (runtime, gateway)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else { return };
    let method = METHODS[usize::from(choice) % METHODS.len()];
    let path = PATHS[usize::from(choice / 8) % PATHS.len()];
    let mut request = http::Request::builder().method(method).uri(path);
    // Then headers: a name index byte, a length byte, that many value bytes; the rest is the body.
    let mut rest = rest;
    while let [name, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (value, after) = tail.split_at(len);
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            request = request.header(NAMES[usize::from(*name) % NAMES.len()], value);
        }
        rest = after;
        if name & 0x80 != 0 {
            break;
        }
    }
    let Ok(request) = request.body(axum::body::Body::from(rest.to_vec())) else { return };
    let (runtime, gateway) = gateway();
    let response = runtime.block_on(app(gateway.clone()).oneshot(request)).expect("the router is infallible");
    assert_ne!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR, "{method} {path}");
});
