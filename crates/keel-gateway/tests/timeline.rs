//! The dashboard's timeline comes from the store: samples kept per instance and minute are
//! answered by `GET /keel/ui/timeline` in order, for the hours asked, and survive a restart of
//! keel (they are read back by a new gateway on the same store).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_testkit::{TestGateway, config_from_toml};
use serde_json::{Value, json};

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "keel".into())
}

#[tokio::test]
async fn the_timeline_answers_the_stored_minutes_of_this_instance() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keel.db").display());
    let config = config_from_toml(&format!(
        "[store]\nurl = \"{url}\"\n[[upstream]]\nname = \"local\"\nurl = \"http://127.0.0.1:9\"\nhealth_interval = \"0s\"\n"
    ));
    let stores = keel_session::open_stores(&url).await.unwrap();
    let now = keel_session::now_millis() / 60_000;
    // An instance is named HOSTNAME:PORT of its [server] listen (the test gateway's is port 0).
    let source = format!("{}:0", hostname());
    for minutes_ago in [150, 30, 20, 10] {
        let sample = json!({"requests": 1000 - minutes_ago, "errors": 0});
        stores.history.put_sample(&source, now - minutes_ago, sample).await.unwrap();
    }
    stores.history.put_sample("other-host:11435", now - 5, json!({"requests": 1})).await.unwrap();

    let keel = TestGateway::start(config).await;
    let body: Value =
        reqwest::get(format!("{}/keel/ui/timeline?hours=1", keel.url())).await.unwrap().json().await.unwrap();
    assert_eq!(body["source"], source.as_str());
    let minutes: Vec<i64> = body["minutes"].as_array().unwrap().iter().map(|m| m["minute"].as_i64().unwrap()).collect();
    assert_eq!(minutes, [now - 30, now - 20, now - 10], "the last hour of this instance, oldest first");
    assert_eq!(body["minutes"][2]["sample"]["requests"], 990);
    let longer: Value =
        reqwest::get(format!("{}/keel/ui/timeline?hours=3", keel.url())).await.unwrap().json().await.unwrap();
    assert_eq!(longer["minutes"].as_array().unwrap().len(), 4);
    for bad in ["hours=0", "hours=49", "hours=x", "days=1"] {
        let response = reqwest::get(format!("{}/keel/ui/timeline?{bad}", keel.url())).await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    keel.shutdown().await;
}
