#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! Who may do what through keel: the access matrix (every kind of endpoint × no key, a wrong key
//! and each scope, with model management closed and open), model management closed by default
//! without keys, the DNS-rebinding guard on `Host`, and CORS (allowed origins, preflights,
//! refusals).

use keel_testkit::{MODEL_MANAGEMENT, Stack};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

/// The keys of the matrix: name, secret, scopes.
const KEYS: [(&str, &str, &str); 3] = [
    ("inf", "inference-key-1", r#"["inference"]"#),
    ("adm", "admin-key-12345", r#"["admin"]"#),
    ("mod", "models-key-1234", r#"["models"]"#),
];

/// What a client presents.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Presented {
    Nothing,
    Wrong,
    Key(&'static str),
}

/// One endpoint of the matrix and which scope it needs.
struct Case {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    need: Need,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    Nothing,
    Inference,
    Admin,
    /// Model management: `admin` or `models`, and only when it is allowed.
    Models,
}

fn cases() -> Vec<Case> {
    let chat = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let case = |method: Method, path, body: Option<Value>, need| Case { method, path, body, need };
    vec![
        case(Method::GET, "/keel/health", None, Need::Nothing),
        case(Method::GET, "/keel/status", None, Need::Admin),
        case(Method::GET, "/metrics", None, Need::Admin),
        case(Method::GET, "/keel/sessions", None, Need::Admin),
        case(Method::POST, "/api/chat", Some(chat.clone()), Need::Inference),
        case(Method::POST, "/v1/chat/completions", Some(chat), Need::Inference),
        case(Method::GET, "/api/tags", None, Need::Inference),
        case(Method::GET, "/v1/models", None, Need::Inference),
        case(Method::POST, "/api/show", Some(json!({"model": "llama3.2"})), Need::Inference),
        case(Method::POST, "/api/pull", Some(json!({"model": "llama3.2", "stream": false})), Need::Models),
        case(Method::POST, "/api/push", Some(json!({"model": "llama3.2", "stream": false})), Need::Models),
        case(
            Method::POST,
            "/api/create",
            Some(json!({"model": "mine", "from": "llama3.2", "stream": false})),
            Need::Models,
        ),
        case(Method::POST, "/api/copy", Some(json!({"source": "llama3.2", "destination": "copy"})), Need::Models),
        case(Method::DELETE, "/api/delete", Some(json!({"model": "copy"})), Need::Models),
        case(Method::HEAD, "/api/blobs/sha256:0123", None, Need::Models),
        case(Method::POST, "/api/me", None, Need::Models),
    ]
}

/// A keel with the matrix's keys (in key files) in front of a mock.
async fn keyed_stack(open: bool) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for (name, secret, scopes) in KEYS {
        let file = dir.path().join(name);
        std::fs::write(&file, secret).unwrap();
        keys.push(format!("{{ name = \"{name}\", key_file = \"{}\", scopes = {scopes} }}", file.display()));
    }
    let auth = format!("[auth]\nallow_model_management = {open}\nkeys = [{}]\n", keys.join(", "));
    (Stack::basic_with(&auth).await, dir)
}

/// The status keel must answer, or `None` when the request must reach the upstream (whatever
/// the upstream answers).
fn expected(case: &Case, presented: Presented, open: bool) -> Option<u16> {
    let scope = match presented {
        Presented::Key(name) => KEYS.iter().find(|k| k.0 == name).map(|k| k.2).unwrap(),
        _ => "",
    };
    let valid = matches!(presented, Presented::Key(_));
    match case.need {
        Need::Nothing => Some(200),
        _ if !valid => Some(401),
        Need::Inference if scope.contains("inference") => None,
        Need::Admin if scope.contains("admin") => Some(200),
        Need::Models if scope.contains("admin") || scope.contains("models") => (!open).then_some(403),
        _ => Some(403),
    }
}

async fn send(client: &reqwest::Client, url: &str, case: &Case, presented: Presented) -> reqwest::Response {
    let mut request = client.request(case.method.clone(), format!("{url}{}", case.path));
    if let Some(body) = &case.body {
        request = request.json(body);
    }
    request = match presented {
        Presented::Nothing => request,
        Presented::Wrong => request.bearer_auth("not-a-key-of-keel"),
        Presented::Key(name) => request.bearer_auth(KEYS.iter().find(|k| k.0 == name).unwrap().1),
    };
    request.send().await.unwrap()
}

/// The error message of a refusal, in the path's dialect (`{"error": "…"}` on `/api`, keel's own
/// paths and `/`; `{"error": {"message"}}` on `/v1`).
fn message(path: &str, body: &Value) -> String {
    let error = if path.starts_with("/v1/") { &body["error"]["message"] } else { &body["error"] };
    error.as_str().unwrap_or_else(|| panic!("{path}: no error message in dialect: {body}")).to_owned()
}

#[tokio::test]
async fn the_access_matrix_holds() {
    let client = reqwest::Client::new();
    for open in [false, true] {
        let (stack, _dir) = keyed_stack(open).await;
        let keel = &stack.keel;
        let presented =
            [Presented::Nothing, Presented::Wrong, Presented::Key("inf"), Presented::Key("adm"), Presented::Key("mod")];
        for case in cases() {
            for who in presented {
                let before = stack.mock.requests().len();
                let response = send(&client, &keel.url(), &case, who).await;
                let status = response.status().as_u16();
                let what = format!("{} {} with {who:?}, model management open: {open}", case.method, case.path);
                let forwarded = stack.mock.requests().len() > before;
                match expected(&case, who, open) {
                    None => assert!(forwarded && status != 401 && status != 403, "{what}: {status}"),
                    Some(code) => {
                        assert_eq!(status, code, "{what}");
                        let upstream_call = case.need == Need::Models || case.need == Need::Inference;
                        assert!(!(upstream_call && forwarded), "{what}: reached the upstream");
                        if code >= 400 && case.method != Method::HEAD {
                            let body: Value = response.json().await.unwrap();
                            let said = message(case.path, &body);
                            if code == 403 && case.need == Need::Models {
                                // Closed for everyone, or this key lacks the scope: the message says which.
                                let why = if scope_allows_models(who) {
                                    "allow_model_management = true"
                                } else {
                                    "lacks the 'admin' or 'models' scope"
                                };
                                assert!(said.contains(why), "{what}: {said}");
                            }
                        }
                    }
                }
            }
        }
    }
}

fn scope_allows_models(who: Presented) -> bool {
    matches!(who, Presented::Key("adm" | "mod"))
}

#[tokio::test]
async fn without_keys_model_management_is_closed_until_opened() {
    let stack = Stack::basic().await;
    let client = reqwest::Client::new();
    for (path, dialect_message) in [("/api/pull", "/api/pull"), ("/api/delete", "/api/delete")] {
        let method = if path == "/api/delete" { Method::DELETE } else { Method::POST };
        let response = client
            .request(method, format!("{}{path}", stack.keel.url()))
            .json(&json!({"model": "llama3.2", "stream": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let body: Value = response.json().await.unwrap();
        let said = message(path, &body);
        assert!(said.contains(dialect_message) && said.contains("[auth]"), "{said}");
        assert!(said.contains("allow_model_management = true"), "{said}");
    }
    assert!(stack.mock.requests().is_empty(), "nothing reached the model server");

    let open = Stack::basic_with(MODEL_MANAGEMENT).await;
    let response = client
        .post(format!("{}/api/pull", open.keel.url()))
        .json(&json!({"model": "llama3.2", "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(open.mock.requests().iter().any(|r| r.path == "/api/pull"));
}

/// A request to keel's port with `Host` set to `host`.
async fn with_host(url: &str, path: &str, host: &str) -> reqwest::Response {
    reqwest::Client::new().get(format!("{url}{path}")).header("host", host).send().await.unwrap()
}

#[tokio::test]
async fn foreign_host_names_are_refused_unless_allowed() {
    let stack = Stack::basic().await;
    let url = stack.keel.url();
    for path in ["/api/tags", "/keel/status", "/v1/models"] {
        let response = with_host(&url, path, "attacker.example").await;
        assert_eq!(response.status(), 403, "{path}");
        let body: Value = response.json().await.unwrap();
        let said = message(path, &body);
        assert!(said.contains("'attacker.example'") && said.contains("allowed_hosts"), "{said}");
        for host in ["localhost:11435", "127.0.0.1", "[::1]:80", "app.localhost"] {
            assert_eq!(with_host(&url, path, host).await.status(), 200, "{path} {host}");
        }
    }
    assert_eq!(
        stack.mock.requests().iter().filter(|r| r.path == "/api/tags").count(),
        4,
        "only allowed hosts reach it"
    );

    let allowed = Stack::basic_with_server("allowed_hosts = [\"Keel.Internal\"]\n").await;
    assert_eq!(with_host(&allowed.keel.url(), "/api/tags", "keel.internal:11435").await.status(), 200);
    assert_eq!(with_host(&allowed.keel.url(), "/api/tags", "other.internal").await.status(), 403);
}

/// A CORS preflight for `path` from `origin`.
async fn preflight(url: &str, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, format!("{url}{path}"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, authorization")
        .send()
        .await
        .unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(HeaderName::from_bytes(name.as_bytes()).unwrap()).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn browsers_get_cors_answers_for_allowed_origins_only() {
    let stack = Stack::basic_with_server("cors_origins = [\"https://app.example:*\", \"http://tool.example\"]\n").await;
    let url = stack.keel.url();
    for origin in ["http://localhost:3000", "https://app.example:8443", "http://tool.example"] {
        for path in ["/api/chat", "/keel/status"] {
            let response = preflight(&url, path, origin).await;
            assert_eq!(response.status(), 204, "{origin} {path}");
            let headers = response.headers();
            assert_eq!(header(headers, "access-control-allow-origin"), Some(origin));
            assert!(header(headers, "access-control-allow-methods").unwrap().contains("POST"));
            assert_eq!(header(headers, "access-control-allow-headers"), Some("content-type, authorization"));
        }
    }
    assert!(stack.mock.requests().is_empty(), "preflights never reach the model server");
    // The request itself: the answer says which origin may read it.
    let response = reqwest::Client::new()
        .post(format!("{url}/api/chat"))
        .header("origin", "http://localhost:3000")
        .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "access-control-allow-origin"), Some("http://localhost:3000"));
    assert!(header(response.headers(), "access-control-expose-headers").unwrap().contains("x-keel-target"));
    // Without an Origin (not a browser), no CORS headers.
    let plain = reqwest::Client::new().get(format!("{url}/api/tags")).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(header(plain.headers(), "access-control-allow-origin").is_none());
    // Origins not allowed: refused, preflight or not, saying which setting allows them.
    for origin in ["https://evil.example", "http://tool.example:8080", "http://app.example:8443"] {
        assert_eq!(preflight(&url, "/api/chat", origin).await.status(), 403, "{origin}");
        let response = reqwest::Client::new()
            .get(format!("{url}/v1/models"))
            .header("origin", HeaderValue::from_str(origin).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{origin}");
        let body: Value = response.json().await.unwrap();
        assert!(message("/v1/models", &body).contains("cors_origins"), "{body}");
    }
}

#[tokio::test]
async fn keys_may_come_in_x_api_key_and_never_reach_the_model_server() {
    let (stack, _dir) = keyed_stack(false).await;
    let keel = &stack.keel;
    let client = reqwest::Client::new();
    let chat = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    for (name, value) in [("x-api-key", "inference-key-1"), ("authorization", "Bearer inference-key-1")] {
        let response =
            client.post(format!("{}/api/chat", keel.url())).header(name, value).json(&chat).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let seen = stack.mock.requests().into_iter().last().unwrap();
        assert!(seen.header("x-api-key").is_none() && seen.header("authorization").is_none(), "{name}: {seen:?}");
    }
    let wrong = client
        .post(format!("{}/api/chat", keel.url()))
        .header("x-api-key", "nope-nope-nope")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert!(message("/api/chat", &body).contains("X-API-Key"), "{body}");
}
