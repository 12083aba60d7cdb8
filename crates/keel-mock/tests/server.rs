//! Server behaviour: determinism, recording, counters, keep-alive, scenario swaps, admin API,
//! `serve()` and shutdown.

mod common;

use std::net::SocketAddr;

use common::{client, get, json, post, start};
use keel_mock::{Fault, FaultKind, ModelSpec, Scenario};
use serde_json::json;

fn chaos() -> Scenario {
    let mut s = Scenario::single_model("llama3.2", "alpha beta gamma delta").with_seed(99);
    s.models[0].faults = vec![
        Fault::new(FaultKind::Busy).with_rate(0.2),
        Fault::new(FaultKind::Garble).with_rate(0.5),
        Fault::new(FaultKind::ErrorLine).with_rate(0.2).with_after_chunks(1),
    ];
    s
}

async fn transcript(scenario: Scenario) -> Vec<(u16, String)> {
    let s = start(scenario).await;
    let mut out = Vec::new();
    for i in 0..20 {
        let (path, body) = match i % 4 {
            0 => ("/api/chat", json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})),
            1 => ("/api/generate", json!({"model": "llama3.2", "prompt": "p", "format": "json", "stream": false})),
            2 => (
                "/v1/chat/completions",
                json!({"model": "llama3.2", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            _ => ("/api/embed", json!({"model": "llama3.2", "input": format!("text {i}")})),
        };
        let (status, _, text) = post(&s, path, body).await;
        out.push((status, text));
    }
    out
}

#[tokio::test]
async fn same_seed_same_bytes() {
    let a = transcript(chaos()).await;
    let b = transcript(chaos()).await;
    assert_eq!(a, b);
    assert!(a.iter().any(|(s, _)| *s == 503), "busy happened");
    assert!(a.iter().any(|(s, _)| *s == 200), "successes happened");
    let c = transcript(chaos().with_seed(100)).await;
    assert_ne!(a, c);
}

#[tokio::test]
async fn records_requests_with_headers_and_body() {
    let s = start(Scenario::default()).await;
    let resp = client()
        .post(format!("{}/api/chat?trace=1", s.url()))
        .header("x-keel-session", "s-1")
        .header("authorization", "Bearer k")
        .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let (status, _, _) = get(&s, "/api/tags").await;
    assert_eq!(status, 200);

    let reqs = s.requests();
    assert_eq!(reqs.len(), 2);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/chat?trace=1");
    assert_eq!(r.header("X-Keel-Session"), Some("s-1"));
    assert_eq!(r.header("authorization"), Some("Bearer k"));
    assert!(r.headers.iter().any(|(k, v)| k == "content-type" && v == "application/json"));
    assert_eq!(r.json().unwrap()["messages"][0]["content"], "hi");
    assert_eq!(reqs[1].method, "GET");
    assert_eq!(reqs[1].path, "/api/tags");
    assert!(reqs[1].body.is_empty());

    // The admin endpoint shows the same list and is not itself recorded or counted.
    let (status, _, body) = get(&s, "/mock/requests").await;
    assert_eq!(status, 200);
    let list = json(&body);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["path"], "/api/chat?trace=1");
    assert!(list[0]["body"].as_str().unwrap().contains("\"hi\""));
    assert!(list[0]["headers"].as_array().unwrap().iter().any(|h| h[0] == "x-keel-session" && h[1] == "s-1"));
    let (_, _, body) = get(&s, "/mock/stats").await;
    assert_eq!(
        json(&body),
        json!({"requests": 2, "completed": 2, "cancelled": 0, "connections": json(&body)["connections"]})
    );

    s.clear_requests();
    assert!(s.requests().is_empty());
}

#[tokio::test]
async fn recording_limits() {
    let scenario = Scenario { max_recorded: 3, ..Scenario::default() };
    let s = start(scenario).await;
    for i in 0..5 {
        get(&s, &format!("/api/version?i={i}")).await;
    }
    let paths: Vec<String> = s.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/api/version?i=2", "/api/version?i=3", "/api/version?i=4"]);

    let scenario = Scenario { record_requests: false, ..Scenario::default() };
    let s = start(scenario).await;
    get(&s, "/api/version").await;
    assert!(s.requests().is_empty());
    assert_eq!(s.stats().requests, 1);
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let s = start(Scenario::default()).await;
    let c = client();
    for i in 0..10 {
        let body = if i % 2 == 0 {
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
        } else {
            json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "hi"}]})
        };
        let resp = c.post(format!("{}/api/chat", s.url())).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let st = s.stats();
    assert_eq!(st.connections, 1, "{st:?}");
    assert_eq!((st.requests, st.completed, st.cancelled), (10, 10, 0));
}

#[tokio::test]
async fn set_scenario_at_runtime() {
    let s = start(Scenario::default()).await;
    let chat = json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&s, "/api/chat", chat.clone()).await.0, 200);
    s.set_scenario(Scenario {
        models: vec![ModelSpec::new("llama3.2", "").with_fault(Fault::new(FaultKind::Busy))],
        ..Scenario::default()
    });
    assert_eq!(post(&s, "/api/chat", chat.clone()).await.0, 503);

    // The same through the admin API, TOML and JSON.
    let resp = client()
        .post(format!("{}/mock/scenario", s.url()))
        .body("[[model]]\nname = \"llama3.2\"\nreply = \"back\"\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, _, body) = post(&s, "/api/chat", chat.clone()).await;
    assert_eq!(json(&body)["message"]["content"], "back");

    let resp = client()
        .post(format!("{}/mock/scenario", s.url()))
        .json(&json!({"seed": 3, "model": [{"name": "llama3.2", "reply": "json works"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, _, body) = post(&s, "/api/chat", chat.clone()).await;
    assert_eq!(json(&body)["message"]["content"], "json works");
    assert_eq!(s.scenario().seed, 3);
    let (_, _, body) = get(&s, "/mock/scenario").await;
    assert_eq!(json(&body)["seed"], 3);

    let resp =
        client().post(format!("{}/mock/scenario", s.url())).body("[[model]]\nnmae = \"typo\"\n").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let msg = json(&resp.text().await.unwrap())["error"].as_str().unwrap().to_owned();
    assert!(msg.contains("nmae"), "{msg}");
    let (status, _, _) = get(&s, "/mock/nothing").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn serve_with_own_listener_and_shutdown() {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(keel_mock::serve(listener, Scenario::default(), async move {
        let _ = stopped.await;
    }));
    let body = client().get(format!("http://{addr}/")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "Ollama is running");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(client().get(format!("http://{addr}/")).send().await.is_err(), "stopped");
}

#[tokio::test]
async fn graceful_shutdown_finishes_streams() {
    let mut scenario = Scenario::single_model("llama3.2", "a b c d e f g h");
    scenario.models[0].token_delay = std::time::Duration::from_millis(30);
    let s = start(scenario).await;
    let url = s.url();
    let resp = client()
        .post(format!("{url}/api/chat"))
        .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let shutdown = tokio::spawn(s.shutdown());
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("}"));
    assert!(text.contains("\"done\":true"), "in-flight stream completed: {text}");
    shutdown.await.unwrap();
}

#[tokio::test]
async fn concurrent_requests() {
    let s = start(Scenario::default()).await;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let c = c.clone();
        let url = s.url();
        tasks.push(tokio::spawn(async move {
            let resp = c
                .post(format!("{url}/api/generate"))
                .json(&json!({"model": "llama3.2", "prompt": format!("p{i}"), "stream": i % 2 == 0}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().contains("\"done\":true"));
    }
    let st = s.stats();
    assert_eq!((st.requests, st.completed, st.cancelled), (32, 32, 0));
}
