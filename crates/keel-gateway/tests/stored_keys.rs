#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! API keys kept in the store (`keel keys`): accepted beside `[auth]`'s, refused within a second
//! of their revocation, and turning keys on for a keel that started without any.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_session::{KeyStore, NewKey, generate_secret, open_key_store};
use keel_testkit::{TestGateway, config_from_toml};
use serde_json::Value;

/// How long a creation or revocation may take to reach a running keel.
const WITHIN: Duration = Duration::from_millis(1500);

struct Setup {
    mock: keel_mock::MockServer,
    keel: TestGateway,
    keys: Arc<dyn KeyStore>,
    _dir: tempfile::TempDir,
}

/// A mock model server, a SQLite store (with `keys` created in it first) and keel on both;
/// `auth` is more TOML (an `[auth]` section).
async fn start(keys: &[NewKey], auth: &str) -> Setup {
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), keel_mock::Scenario::single_model("m", "hi"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keel.db").display());
    let store = open_key_store(&url).await.unwrap();
    for key in keys {
        store.create_key(key.clone()).await.unwrap();
    }
    let config = config_from_toml(&format!(
        "[store]\nurl = \"{url}\"\n[[upstream]]\nname = \"default\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n{auth}",
        mock.url()
    ));
    let keel = TestGateway::start(config).await;
    Setup { mock, keel, keys: store, _dir: dir }
}

/// The status of `POST /api/chat` with `headers`.
async fn chat(keel: &TestGateway, headers: &[(&str, &str)]) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/chat", keel.url()))
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":false}"#);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

fn bearer(secret: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {secret}"))
}

/// Waits (at most [`WITHIN`] from `since`) until `chat` with `headers` answers `status`.
async fn becomes(keel: &TestGateway, headers: &[(&str, &str)], status: u16, since: Instant) {
    loop {
        let got = chat(keel, headers).await;
        if got == status {
            return;
        }
        assert!(since.elapsed() < WITHIN, "still {got} (not {status}) {:?} after the change", since.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn stored_keys_are_accepted_and_revocations_take_effect_within_a_second() {
    let agent = generate_secret();
    let ops = generate_secret();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cfg.key"), "config-secret-123\n").unwrap();
    let auth = format!(
        "[auth]\nkeys = [{{ name = \"cfg\", key_file = \"{}\", scopes = [\"inference\"] }}]\n",
        dir.path().join("cfg.key").display()
    );
    let setup = start(
        &[
            NewKey::new("stored-agent", &agent).with_requests_per_minute(1000).with_priority("interactive"),
            NewKey::new("stored-ops", &ops).with_scopes(["inference", "admin"]),
        ],
        &auth,
    )
    .await;
    let keel = &setup.keel;
    let (name, value) = bearer(&agent);
    assert_eq!(chat(keel, &[(name, &value)]).await, 200);
    assert_eq!(chat(keel, &[]).await, 401);
    assert_eq!(chat(keel, &[("authorization", "Bearer keel_0000000000")]).await, 401);
    assert_eq!(chat(keel, &[("x-api-key", &agent)]).await, 200);
    assert_eq!(chat(keel, &[("X-Api-Key", &ops)]).await, 200);
    // The [auth] key works beside the store's.
    assert_eq!(chat(keel, &[("authorization", "Bearer config-secret-123")]).await, 200);

    // Scopes: an inference-only key cannot read the admin API.
    let client = reqwest::Client::new();
    let status = |secret: &str| client.get(format!("{}/keel/status", keel.url())).bearer_auth(secret).send();
    assert_eq!(status(&agent).await.unwrap().status(), 403);
    assert_eq!(status(&ops).await.unwrap().status(), 200);
    let response = client.get(format!("{}/keel/status", keel.url())).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("keel keys create"), "{body}");
    assert_eq!(client.get(format!("{}/keel/health", keel.url())).send().await.unwrap().status(), 200);

    // The key never reaches the model server.
    assert!(setup.mock.requests().iter().all(|r| {
        !r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("x-api-key"))
    }));

    // A session made with a key is owned by the key's name.
    let turn = |path: &str, secret: &str| {
        client
            .post(format!("{}{path}", keel.url()))
            .bearer_auth(secret)
            .header("x-keel-session", "owned-1")
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":false}"#)
            .send()
    };
    // A keel admin endpoint's JSON, read with the admin key.
    let admin_json = async |path: &str| -> Value {
        client.get(format!("{}{path}", keel.url())).bearer_auth(&ops).send().await.unwrap().json().await.unwrap()
    };
    assert_eq!(turn("/api/chat", &agent).await.unwrap().status(), 200);
    let session = admin_json("/keel/sessions/owned-1").await;
    assert_eq!(session["session"]["owner"], "stored-agent", "{session}");

    // Another inference key cannot read or continue it (403 in the endpoint's dialect, naming
    // the owner); a key with the admin scope can.
    let refused = turn("/api/chat", "config-secret-123").await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("session 'owned-1' belongs to API key 'stored-agent'"), "{body}");
    let refused = turn("/v1/chat/completions", "config-secret-123").await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("belongs to API key 'stored-agent'"), "{body}");
    assert_eq!(turn("/api/chat", &ops).await.unwrap().status(), 200);
    assert_eq!(turn("/api/chat", &agent).await.unwrap().status(), 200);
    let messages = admin_json("/keel/sessions/owned-1/messages").await;
    // The first turn (2 messages) and the two allowed ones; nothing from the refused key.
    assert_eq!(messages["messages"].as_array().unwrap().len(), 6, "{messages}");

    // Requests are counted by key name, never by secret.
    let metrics = client.get(format!("{}/metrics", keel.url())).bearer_auth(&ops).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains(r#"keel_requests_by_key_total{key="stored-agent"}"#), "{metrics}");
    // cfg: its chat and its two refused session turns.
    assert!(metrics.contains(r#"keel_requests_by_key_total{key="cfg"} 3"#), "{metrics}");
    assert!(!metrics.contains(&agent[8..]) && !metrics.contains(&ops[8..]));

    // Revoked in the store (as `keel keys revoke` does): refused within a second.
    let revoked = Instant::now();
    assert!(setup.keys.revoke_key("stored-agent").await.unwrap());
    becomes(keel, &[(name, &value)], 401, revoked).await;
    assert_eq!(chat(keel, &[("x-api-key", &ops)]).await, 200);

    // A key created while keel runs is accepted within a second.
    let late = generate_secret();
    let created = Instant::now();
    setup.keys.create_key(NewKey::new("late", &late)).await.unwrap();
    let (name, value) = bearer(&late);
    becomes(keel, &[(name, &value)], 200, created).await;
}

#[tokio::test]
async fn a_key_created_in_the_store_turns_keys_on_for_a_running_keel() {
    let setup = start(&[], "").await;
    let keel = &setup.keel;
    // No keys anywhere: open, and Authorization is the upstream's business.
    assert_eq!(chat(keel, &[]).await, 200);
    assert_eq!(chat(keel, &[("authorization", "Bearer for-the-upstream")]).await, 200);
    assert!(setup.mock.requests().iter().any(|r| r.headers.iter().any(|(_, v)| v == "Bearer for-the-upstream")));

    let secret = generate_secret();
    let created = Instant::now();
    setup.keys.create_key(NewKey::new("first", &secret)).await.unwrap();
    becomes(keel, &[], 401, created).await;
    assert_eq!(chat(keel, &[("x-api-key", &secret)]).await, 200);
    let status = reqwest::Client::new().get(format!("{}/keel/status", keel.url())).send().await.unwrap();
    assert_eq!(status.status(), 401);

    // Revoking the last key does not open keel again: keys stay required, none is accepted.
    let revoked = Instant::now();
    assert!(setup.keys.revoke_key("first").await.unwrap());
    becomes(keel, &[("x-api-key", &secret)], 401, revoked).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(chat(keel, &[]).await, 401);
}

#[tokio::test]
async fn a_keel_started_on_a_store_with_only_revoked_keys_requires_keys() {
    let secret = generate_secret();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keel.db").display());
    let store = open_key_store(&url).await.unwrap();
    store.create_key(NewKey::new("gone", &secret)).await.unwrap();
    assert!(store.revoke_key("gone").await.unwrap());
    let mock = keel_mock::MockServer::start(([127, 0, 0, 1], 0).into(), keel_mock::Scenario::single_model("m", "hi"))
        .await
        .unwrap();
    let config = config_from_toml(&format!(
        "[store]\nurl = \"{url}\"\n[[upstream]]\nname = \"default\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n",
        mock.url()
    ));
    let keel = TestGateway::start(config).await;
    // From the first request on: no window in which keel is open.
    assert_eq!(chat(&keel, &[]).await, 401);
    assert_eq!(chat(&keel, &[("x-api-key", &secret)]).await, 401);
    assert!(mock.requests().is_empty());
}
