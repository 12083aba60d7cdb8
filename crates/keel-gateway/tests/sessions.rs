//! Durable sessions through the proxy: `X-Keel-Session` conversations kept in the store (managed
//! and record modes), answers stored before they are acknowledged, idempotent retries, the admin
//! API, and a conversation that survives a restart of keel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_mock::MockServer;
use keel_testkit::{TestGateway, config_from_toml, scenario};
use serde_json::{Value, json};

async fn mock(replies: &[&str]) -> MockServer {
    let replies: Vec<String> = replies.iter().map(|r| format!("{r:?}")).collect();
    MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        scenario(&format!("[[model]]\nname = \"m\"\nreplies = [{}]\n", replies.join(", "))),
    )
    .await
    .unwrap()
}

/// A model that calls `get_weather` for Paris when offered tools, and says "Sunny it is." after
/// the tool's result.
async fn weather_mock() -> MockServer {
    MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        scenario("[[model]]\nname = \"m\"\nreply = \"Sunny it is.\"\ntool_call = { name = \"get_weather\", arguments = { city = \"Paris\" } }\n"),
    )
    .await
    .unwrap()
}

/// The session's messages as keel's sessions API lists them.
async fn stored_messages(keel: &TestGateway, session: &str) -> Value {
    reqwest::get(format!("{}/keel/sessions/{session}/messages", keel.url())).await.unwrap().json().await.unwrap()
}

async fn keel(up: &MockServer, extra: &str) -> TestGateway {
    TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"local\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n{extra}",
        up.url()
    )))
    .await
}

async fn chat(keel: &TestGateway, session: &str, headers: &[(&str, &str)], body: Value) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(format!("{}/api/chat", keel.url())).header("x-keel-session", session);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.json(&body).send().await.unwrap()
}

fn user(text: &str, stream: bool) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": text}], "stream": stream})
}

fn upstream_chats(up: &MockServer) -> Vec<Value> {
    up.requests().iter().filter(|r| r.path == "/api/chat").map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

async fn transcript(keel: &TestGateway, session: &str) -> Vec<(String, String, bool)> {
    let body = stored_messages(keel, session).await;
    assert_eq!(body["session"]["id"], session, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            assert_eq!(m["seq"], i as u64 + 1, "{body}");
            (m["role"].as_str().unwrap().into(), m["content"].as_str().unwrap().into(), m["complete"] == true)
        })
        .collect()
}

fn owned(items: &[(&str, &str)]) -> Vec<(String, String, bool)> {
    items.iter().map(|(r, c)| ((*r).into(), (*c).into(), true)).collect()
}

#[tokio::test]
async fn managed_mode_keeps_the_history_and_sends_it_upstream() {
    let up = mock(&["Hi Ada.", "You are Ada."]).await;
    let keel = keel(&up, "").await;
    let first = chat(&keel, "s1", &[], user("I am Ada.", false)).await;
    assert_eq!(first.status(), 200);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["message"]["content"], "Hi Ada.");
    let second: Value = chat(&keel, "s1", &[], user("Who am I?", false)).await.json().await.unwrap();
    assert_eq!(second["message"]["content"], "You are Ada.");

    // The second upstream request carried the whole conversation.
    let sent = upstream_chats(&up);
    assert_eq!(
        sent[1]["messages"],
        json!([
            {"role": "user", "content": "I am Ada."},
            {"role": "assistant", "content": "Hi Ada."},
            {"role": "user", "content": "Who am I?"}
        ])
    );
    assert_eq!(
        transcript(&keel, "s1").await,
        owned(&[("user", "I am Ada."), ("assistant", "Hi Ada."), ("user", "Who am I?"), ("assistant", "You are Ada.")])
    );
}

#[tokio::test]
async fn a_streamed_answer_is_stored_whole_before_the_final_chunk() {
    let up = mock(&["Once upon a time."]).await;
    let keel = keel(&up, "").await;
    let text = chat(&keel, "s2", &[], user("Tell a story", true)).await.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["done"], true);
    let streamed: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(streamed, "Once upon a time.");
    // Once the client has the final chunk, the answer is already in the store.
    assert_eq!(transcript(&keel, "s2").await, owned(&[("user", "Tell a story"), ("assistant", "Once upon a time.")]));
}

#[tokio::test]
async fn record_mode_stores_only_what_is_new() {
    let up = mock(&["A1", "A2"]).await;
    let keel = keel(&up, "").await;
    let record = [("x-keel-session-mode", "record")];
    chat(&keel, "s3", &record, json!({"model": "m", "messages": [{"role": "user", "content": "Q1"}], "stream": false}))
        .await;
    let full = json!({"model": "m", "stream": false, "messages": [
        {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]});
    chat(&keel, "s3", &record, full.clone()).await;
    // Forwarded as the client sent it.
    assert_eq!(upstream_chats(&up)[1]["messages"], full["messages"]);
    assert_eq!(
        transcript(&keel, "s3").await,
        owned(&[("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2")])
    );
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_stored_answer() {
    let up = mock(&["first answer", "second answer"]).await;
    let keel = keel(&up, "").await;
    let key = [("x-keel-idempotency-key", "req-1")];
    let a: Value = chat(&keel, "s4", &key, user("hello", false)).await.json().await.unwrap();
    let retry = chat(&keel, "s4", &key, user("hello", false)).await;
    assert_eq!(retry.headers()["x-keel-replayed"], "true");
    let b: Value = retry.json().await.unwrap();
    assert_eq!(a["message"]["content"], "first answer");
    assert_eq!(b["message"]["content"], "first answer");
    assert_eq!(upstream_chats(&up).len(), 1, "the model was asked once");
    assert_eq!(transcript(&keel, "s4").await, owned(&[("user", "hello"), ("assistant", "first answer")]));
    // A streamed retry gets the stored answer as a stream.
    let text = chat(&keel, "s4", &key, user("hello", true)).await.text().await.unwrap();
    assert!(text.lines().last().unwrap().contains("\"done\":true"), "{text}");
}

#[tokio::test]
async fn the_context_is_a_sliding_window_within_the_token_budget() {
    let up = mock(&["ok"]).await;
    let keel = keel(&up, "[sessions]\nmax_context_tokens = 40\n").await;
    let system = json!({"model": "m", "stream": false, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "abc ".repeat(50)}]});
    chat(&keel, "s5", &[], system).await;
    chat(&keel, "s5", &[], user("last question", false)).await;
    let sent = upstream_chats(&up);
    let roles: Vec<&str> =
        sent[1]["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    // The 200-byte message (~50 tokens) no longer fits; the system prompt always goes.
    assert_eq!(roles, vec!["system", "assistant", "user"], "{}", sent[1]);
    assert_eq!(sent[1]["messages"][2]["content"], "last question");
}

#[tokio::test]
async fn openai_clients_use_sessions_too() {
    let up = mock(&["one", "two"]).await;
    let keel = keel(&up, "").await;
    for (text, stream) in [("first", false), ("second", true)] {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", keel.url()))
            .header("x-keel-session", "s6")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": text}], "stream": stream}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.text().await.unwrap();
    }
    let sent: Vec<Value> = up
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent[1]["messages"].as_array().unwrap().len(), 3, "{}", sent[1]);
    assert_eq!(
        transcript(&keel, "s6").await,
        owned(&[("user", "first"), ("assistant", "one"), ("user", "second"), ("assistant", "two")])
    );
}

#[tokio::test]
async fn bad_session_requests_get_a_clear_400() {
    let up = mock(&["x"]).await;
    let keel = keel(&up, "").await;
    let response = chat(&keel, "has space", &[], user("hi", false)).await;
    assert_eq!(response.status(), 400);
    let response = chat(&keel, "ok", &[("x-keel-session-mode", "weird")], user("hi", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("managed"), "{body}");
    let response = reqwest::Client::new()
        .post(format!("{}/api/generate", keel.url()))
        .header("x-keel-session", "ok")
        .json(&json!({"model": "m", "prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(upstream_chats(&up).is_empty());
}

#[tokio::test]
async fn the_admin_api_lists_shows_and_deletes_sessions() {
    let up = mock(&["a"]).await;
    let keel = keel(&up, "").await;
    let health: Value = reqwest::get(format!("{}/keel/health", keel.url())).await.unwrap().json().await.unwrap();
    assert_eq!(health["store"], "ok", "{health}");
    chat(&keel, "s7", &[], user("hi", false)).await;
    let list: Value =
        reqwest::get(format!("{}/keel/sessions?model=m", keel.url())).await.unwrap().json().await.unwrap();
    assert!(list["sessions"].as_array().unwrap().iter().any(|s| s["id"] == "s7"), "{list}");
    let show: Value = reqwest::get(format!("{}/keel/sessions/s7", keel.url())).await.unwrap().json().await.unwrap();
    assert_eq!(show["session"]["model"], "m");
    let client = reqwest::Client::new();
    assert_eq!(client.delete(format!("{}/keel/sessions/s7", keel.url())).send().await.unwrap().status(), 204);
    assert_eq!(client.delete(format!("{}/keel/sessions/s7", keel.url())).send().await.unwrap().status(), 404);
    assert_eq!(reqwest::get(format!("{}/keel/sessions/s7/messages", keel.url())).await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_conversation_survives_a_restart_of_keel() {
    let dir = std::env::temp_dir().join(format!("keel-sessions-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("[store]\nurl = \"sqlite://{}\"\n", dir.join("keel.db").display());
    let up = mock(&["Noted.", "Your name is Ada."]).await;
    let first = keel(&up, &store).await;
    chat(&first, "s8", &[], user("My name is Ada.", false)).await;
    first.shutdown().await;
    let second = keel(&up, &store).await;
    let answer: Value = chat(&second, "s8", &[], user("What is my name?", false)).await.json().await.unwrap();
    assert_eq!(answer["message"]["content"], "Your name is Ada.");
    assert_eq!(upstream_chats(&up)[1]["messages"].as_array().unwrap().len(), 3);
    second.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_idle_session_times_out_and_a_new_message_revives_it() {
    let up = mock(&["a", "b"]).await;
    let keel = keel(&up, "[sessions]\nidle_timeout = \"300ms\"\n").await;
    chat(&keel, "s9", &[], user("hi", false)).await;
    let status = |keel: &TestGateway| {
        let url = format!("{}/keel/sessions/s9", keel.url());
        async move {
            let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            body["session"]["status"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(status(&keel).await, "active");
    let started = std::time::Instant::now();
    while status(&keel).await != "timed_out" {
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "never timed out");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    chat(&keel, "s9", &[], user("back again", false)).await;
    assert_eq!(status(&keel).await, "active");
    assert_eq!(transcript(&keel, "s9").await.len(), 4);
}

#[tokio::test]
async fn summarize_replaces_what_left_the_window_with_a_stored_summary() {
    let up = mock(&["ok1", "Ada asked about a long thing.", "ok2"]).await;
    let keel = keel(&up, "[sessions]\nmax_context_tokens = 40\noverflow = \"summarize\"\n").await;
    let first = json!({"model": "m", "stream": false, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "abc ".repeat(50)}]});
    chat(&keel, "s10", &[], first).await;
    let answer: Value = chat(&keel, "s10", &[], user("last question", false)).await.json().await.unwrap();
    assert_eq!(answer["message"]["content"], "ok2");
    let sent = upstream_chats(&up);
    assert_eq!(sent.len(), 3, "one extra call wrote the summary");
    assert!(
        sent[1]["messages"][0]["content"].as_str().unwrap().starts_with("Summarize the conversation"),
        "{}",
        sent[1]
    );
    assert!(sent[1]["messages"][1]["content"].as_str().unwrap().starts_with("user: abc abc"), "{}", sent[1]);
    assert_eq!(
        sent[2]["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Summary of the earlier conversation: Ada asked about a long thing."},
            {"role": "assistant", "content": "ok1"},
            {"role": "user", "content": "last question"}
        ])
    );
    // The summary is stored in the session, for the next requests.
    let stored = transcript(&keel, "s10").await;
    assert!(stored.iter().any(|(role, content, _)| role == "system" && content == "Ada asked about a long thing."));
}

#[tokio::test]
async fn overflow_error_refuses_a_context_over_budget() {
    let up = mock(&["ok"]).await;
    let keel = keel(&up, "[sessions]\nmax_context_tokens = 40\noverflow = \"error\"\n").await;
    chat(&keel, "s11", &[], user(&"abc ".repeat(50), false)).await;
    let response = chat(&keel, "s11", &[], user("more", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("max_context_tokens = 40"), "{body}");
}

#[tokio::test]
async fn participants_and_handoff_through_the_admin_api() {
    let up = mock(&["hello", "taking over"]).await;
    let keel = keel(&up, "").await;
    chat(&keel, "s12", &[], user("hi", false)).await;
    let client = reqwest::Client::new();
    let base = format!("{}/keel/sessions/s12", keel.url());
    // Ten parallel adds all land.
    let adds = (0..10).map(|i| {
        let client = client.clone();
        let url = format!("{base}/participants");
        async move {
            client
                .post(url)
                .json(&json!({"name": format!("agent-{i}"), "role": "assistant"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    for status in futures_util::future::join_all(adds).await {
        assert_eq!(status, 200);
    }
    let list: Value = client.get(format!("{base}/participants")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["participants"].as_array().unwrap().len(), 10, "{list}");

    let handoff = client
        .post(format!("{base}/handoff"))
        .json(&json!({"from": "agent-0", "to": {"name": "ada", "kind": "human", "role": "support"}, "note": "needs a refund"}))
        .send()
        .await
        .unwrap();
    assert_eq!(handoff.status(), 200);
    let message: Value = handoff.json().await.unwrap();
    assert_eq!(message["message"]["role"], "handoff");
    let unknown = client
        .post(format!("{base}/handoff"))
        .json(&json!({"from": "nobody", "to": {"name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(client.delete(format!("{base}/participants/agent-9")).send().await.unwrap().status(), 204);
    assert_eq!(client.delete(format!("{base}/participants/agent-9")).send().await.unwrap().status(), 404);

    // The model sees the handoff as a note.
    chat(&keel, "s12", &[], user("still there?", false)).await;
    let sent = upstream_chats(&up);
    let note = &sent[1]["messages"][2];
    assert_eq!(note["role"], "system", "{}", sent[1]);
    assert!(note["content"].as_str().unwrap().contains("from agent-0 to ada: needs a refund"), "{note}");
}

#[tokio::test]
async fn the_budget_is_calibrated_by_the_prompt_counts_the_model_reports() {
    // The fake model counts a word per token: "w " is 2 bytes a token where keel estimates 4, so
    // after one answer keel knows this model's context fills ~1.7× faster than estimated.
    let up = mock(&["ok", "ok"]).await;
    let keel = keel(&up, "[sessions]\nmax_context_tokens = 60\n").await;
    let words = "w ".repeat(40);
    chat(&keel, "s13", &[], user(&words, false)).await;
    chat(&keel, "s13", &[], user(&words, false)).await;
    let sent = upstream_chats(&up);
    // Uncalibrated, the estimates (24 + 5 + 24 = 53) fit 60 and all three messages would go;
    // calibrated, the budget is ~36 estimated tokens and the oldest message is left out.
    assert_eq!(sent[1]["messages"].as_array().unwrap().len(), 2, "{}", sent[1]);
}

#[tokio::test]
async fn without_a_configured_budget_the_model_context_length_decides() {
    // /api/show of this model reports a context of 80 tokens: the budget is 60 (a quarter is
    // left for the answer).
    let up = MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        scenario("[[model]]\nname = \"m\"\nreplies = [\"ok\"]\ncontext_length = 80\n"),
    )
    .await
    .unwrap();
    let keel = keel(&up, "").await;
    let words = "abcd ".repeat(40); // 200 bytes, ~54 tokens
    chat(&keel, "s14", &[], user(&words, false)).await;
    chat(&keel, "s14", &[], user(&words, false)).await;
    let sent = upstream_chats(&up);
    // The first 200-byte message no longer fits next to the second; the answer between them does.
    assert_eq!(sent[1]["messages"].as_array().unwrap().len(), 2, "{}", sent[1]);
    assert_eq!(sent[1]["messages"][0]["role"], "assistant", "{}", sent[1]);
    assert_eq!(up.requests().iter().filter(|r| r.path == "/api/show").count(), 1, "asked once per model");
    // options.num_ctx in the request wins.
    let mut big = user(&words, false);
    big["options"] = json!({"num_ctx": 4096});
    chat(&keel, "s14", &[], big).await;
    assert_eq!(upstream_chats(&up)[2]["messages"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn odd_session_ids_in_the_admin_api_get_4xx_not_5xx() {
    let up = mock(&["a"]).await;
    let keel = keel(&up, "").await;
    let client = reqwest::Client::new();
    for id in ["%00", "a%0Ab", &"x".repeat(300), "%F0%9F%98%80", "..", "a%2Fb"] {
        for url in [format!("{}/keel/sessions/{id}", keel.url()), format!("{}/keel/sessions/{id}/messages", keel.url())]
        {
            let status = client.get(&url).send().await.unwrap().status();
            assert!(status.is_client_error(), "{url}: {status}");
        }
        let status = client.delete(format!("{}/keel/sessions/{id}", keel.url())).send().await.unwrap().status();
        assert!(status.is_client_error(), "DELETE {id}: {status}");
    }
    let status = client.get(format!("{}/keel/sessions?status=bogus", keel.url())).send().await.unwrap().status();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_stream_cut_off_mid_answer_leaves_its_partial_text_marked_incomplete() {
    let up = MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        scenario("[[model]]\nname = \"m\"\nreply = \"Once upon a time there was a proxy\"\n[[model.fault]]\nkind = \"cut\"\nafter_chunks = 3\n"),
    )
    .await
    .unwrap();
    let keel = keel(&up, "[retry]\nattempts = 0\n").await;
    let text = chat(&keel, "s15", &[], user("Tell a story", true)).await.text().await.unwrap_or_default();
    assert!(!text.contains("\"done\":true"), "{text}");
    let started = std::time::Instant::now();
    loop {
        let messages = transcript(&keel, "s15").await;
        if let Some((role, content, complete)) = messages.last().filter(|(_, c, _)| !c.is_empty()) {
            assert_eq!(role, "assistant");
            assert!(!complete, "a cut answer is not complete");
            assert!("Once upon a time there was a proxy".starts_with(content.as_str()), "{content:?}");
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "no partial text saved: {messages:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_answer_that_calls_tools_is_stored_with_its_tool_calls() {
    let up = MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        scenario("[[model]]\nname = \"m\"\ntool_call = { name = \"get_weather\", arguments = { city = \"Paris\" } }\n"),
    )
    .await
    .unwrap();
    let keel = keel(&up, "").await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let mut ask = user("Weather in Paris?", false);
    ask["tools"] = tools.clone();
    let answer: Value = chat(&keel, "s16", &[], ask).await.json().await.unwrap();
    assert!(answer["message"]["tool_calls"].is_array(), "{answer}");
    let stored = stored_messages(&keel, "s16").await;
    assert_eq!(stored["messages"][1]["tool_calls"], answer["message"]["tool_calls"], "{stored}");
    // The next request sends them back with the answer, so the tool result has its call.
    let result = json!({"model": "m", "stream": false, "tools": tools,
        "messages": [{"role": "tool", "content": "sunny", "tool_name": "get_weather"}]});
    chat(&keel, "s16", &[], result).await;
    let sent = upstream_chats(&up);
    assert_eq!(sent[1]["messages"][1]["tool_calls"], answer["message"]["tool_calls"], "{}", sent[1]);
}

/// The two APIs keel serves through chat completions, as a session client uses them.
#[derive(Debug, Clone, Copy)]
enum Api {
    /// Anthropic's `/v1/messages`.
    Messages,
    /// OpenAI's `/v1/responses`.
    Responses,
}

const APIS: [Api; 2] = [Api::Messages, Api::Responses];

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Messages => "/v1/messages",
            Api::Responses => "/v1/responses",
        }
    }

    /// A request with the system prompt and one user message.
    fn ask(self, text: &str, stream: bool) -> Value {
        match self {
            Api::Messages => json!({"model": "m", "max_tokens": 100, "system": "Be brief.", "stream": stream,
                "messages": [{"role": "user", "content": text}]}),
            Api::Responses => json!({"model": "m", "instructions": "Be brief.", "input": text, "stream": stream}),
        }
    }

    /// The same request with these conversation entries instead of the one user message.
    fn with(self, entries: Value) -> Value {
        let mut body = self.ask("", false);
        body[self.entries_field()] = entries;
        body
    }

    fn entries_field(self) -> &'static str {
        match self {
            Api::Messages => "messages",
            Api::Responses => "input",
        }
    }

    /// The text of a whole answer.
    fn text(self, answer: &Value) -> String {
        let (list, kind) = match self {
            Api::Messages => (&answer["content"], "text"),
            Api::Responses => (&answer["output"], "message"),
        };
        let blocks = list.as_array().unwrap().iter().filter(|b| b["type"] == kind);
        match self {
            Api::Messages => blocks.map(|b| b["text"].as_str().unwrap().to_owned()).collect(),
            Api::Responses => blocks.map(|m| m["content"][0]["text"].as_str().unwrap().to_owned()).collect(),
        }
    }

    /// What the upstream got in the conversation field of each request.
    fn sent(self, up: &MockServer) -> Vec<Value> {
        up.requests()
            .iter()
            .filter(|r| r.path == self.path())
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
            .collect()
    }

    /// A user message as the upstream gets it from keel's stored context.
    fn user(self, text: &str) -> Value {
        match self {
            Api::Messages => json!({"role": "user", "content": [{"type": "text", "text": text}]}),
            Api::Responses => json!({"role": "user", "content": text}),
        }
    }

    /// An assistant text message as the upstream gets it from keel's stored context.
    fn assistant(self, text: &str) -> Value {
        match self {
            Api::Messages => json!({"role": "assistant", "content": [{"type": "text", "text": text}]}),
            Api::Responses => json!({"role": "assistant", "content": text}),
        }
    }
}

async fn post(
    keel: &TestGateway,
    api: Api,
    session: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().post(format!("{}{}", keel.url(), api.path())).header("x-keel-session", session);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.json(body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{api:?}");
    response
}

#[tokio::test]
async fn messages_and_responses_clients_keep_a_managed_session() {
    for api in APIS {
        let up = mock(&["Hi Ada.", "You are Ada."]).await;
        let keel = keel(&up, "").await;
        let session = format!("managed-{api:?}");
        let first: Value = post(&keel, api, &session, &[], &api.ask("I am Ada.", false)).await.json().await.unwrap();
        assert_eq!(api.text(&first), "Hi Ada.");
        // The system prompt is sent again, as these clients do; only the new message is.
        let second: Value = post(&keel, api, &session, &[], &api.ask("Who am I?", false)).await.json().await.unwrap();
        assert_eq!(api.text(&second), "You are Ada.");

        let sent = api.sent(&up);
        let expected = json!([api.user("I am Ada."), api.assistant("Hi Ada."), api.user("Who am I?")]);
        assert_eq!(sent[1][api.entries_field()], expected, "{api:?}: {}", sent[1]);
        let system = match api {
            Api::Messages => &sent[1]["system"],
            Api::Responses => &sent[1]["instructions"],
        };
        assert_eq!(system, "Be brief.", "{api:?}: {}", sent[1]);
        if let Api::Messages = api {
            assert_eq!(sent[1]["max_tokens"], 100, "the client's other fields as sent");
        }
        assert_eq!(
            transcript(&keel, &session).await,
            owned(&[
                ("system", "Be brief."),
                ("user", "I am Ada."),
                ("assistant", "Hi Ada."),
                ("user", "Who am I?"),
                ("assistant", "You are Ada.")
            ]),
            "{api:?}"
        );
    }
}

#[tokio::test]
async fn messages_and_responses_streams_are_stored_whole() {
    for api in APIS {
        let up = mock(&["Once upon a time."]).await;
        let keel = keel(&up, "").await;
        let session = format!("stream-{api:?}");
        let text = post(&keel, api, &session, &[], &api.ask("Tell a story", true)).await.text().await.unwrap();
        let end = match api {
            Api::Messages => "event: message_stop",
            Api::Responses => "event: response.completed",
        };
        assert!(text.contains(end), "{api:?}: {text}");
        assert_eq!(
            transcript(&keel, &session).await,
            owned(&[("system", "Be brief."), ("user", "Tell a story"), ("assistant", "Once upon a time.")]),
            "{api:?}"
        );
    }
}

#[tokio::test]
async fn messages_and_responses_retries_replay_the_stored_answer() {
    for api in APIS {
        let up = mock(&["first answer", "second answer"]).await;
        let keel = keel(&up, "").await;
        let session = format!("retry-{api:?}");
        let key = [("x-keel-idempotency-key", "req-1")];
        let first: Value = post(&keel, api, &session, &key, &api.ask("hello", false)).await.json().await.unwrap();
        let retry = post(&keel, api, &session, &key, &api.ask("hello", false)).await;
        assert_eq!(retry.headers()["x-keel-replayed"], "true");
        let replayed: Value = retry.json().await.unwrap();
        assert_eq!(api.text(&first), "first answer");
        assert_eq!(api.text(&replayed), "first answer", "{api:?}: {replayed}");
        let shape = match api {
            Api::Messages => ("type", "message"),
            Api::Responses => ("object", "response"),
        };
        assert_eq!(replayed[shape.0], shape.1, "{api:?}: {replayed}");
        assert_eq!(api.sent(&up).len(), 1, "{api:?}: the model was asked once");
        assert_eq!(transcript(&keel, &session).await.len(), 3, "{api:?}");
        // A streamed retry gets the stored answer as the API's stream.
        let text = post(&keel, api, &session, &key, &api.ask("hello", true)).await.text().await.unwrap();
        assert!(text.contains("first answer") && text.contains("event: "), "{api:?}: {text}");
    }
}

#[tokio::test]
async fn messages_and_responses_record_mode_stores_only_what_is_new() {
    for api in APIS {
        let up = mock(&["A1", "A2"]).await;
        let keel = keel(&up, "").await;
        let session = format!("record-{api:?}");
        let record = [("x-keel-session-mode", "record")];
        post(&keel, api, &session, &record, &api.ask("Q1", false)).await;
        let full = api.with(json!([
            {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]));
        post(&keel, api, &session, &record, &full).await;
        // Forwarded as the client sent it.
        assert_eq!(api.sent(&up)[1][api.entries_field()], full[api.entries_field()], "{api:?}");
        assert_eq!(
            transcript(&keel, &session).await,
            owned(&[("system", "Be brief."), ("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2")]),
            "{api:?}"
        );
    }
}

#[tokio::test]
async fn messages_tool_use_survives_the_session() {
    let up = weather_mock().await;
    let keel = keel(&up, "").await;
    let mut ask = Api::Messages.ask("Weather in Paris?", false);
    ask["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    let answer: Value = post(&keel, Api::Messages, "tools-m", &[], &ask).await.json().await.unwrap();
    let tool_use = answer["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap().clone();
    let id = tool_use["id"].as_str().unwrap();
    let stored = stored_messages(&keel, "tools-m").await;
    assert_eq!(stored["messages"][2]["tool_calls"][0]["id"], id, "{stored}");
    assert_eq!(stored["messages"][2]["tool_calls"][0]["function"]["name"], "get_weather", "{stored}");

    let mut result = Api::Messages.with(json!([{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": id, "content": "sunny"}]}]));
    result["tools"] = ask["tools"].clone();
    post(&keel, Api::Messages, "tools-m", &[], &result).await;
    let sent = Api::Messages.sent(&up);
    let messages = sent[1]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{}", sent[1]);
    let call = messages[1]["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!((&call["id"], &call["name"], &call["input"]), (&tool_use["id"], &tool_use["name"], &tool_use["input"]));
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result", "{}", sent[1]);
    assert_eq!(messages[2]["content"][0]["tool_use_id"], id, "{}", sent[1]);
    assert_eq!(messages[2]["content"][0]["content"], "sunny", "{}", sent[1]);
}

#[tokio::test]
async fn responses_function_calls_survive_the_session() {
    let up = weather_mock().await;
    let keel = keel(&up, "").await;
    let mut ask = Api::Responses.ask("Weather in Paris?", false);
    ask["tools"] = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let answer: Value = post(&keel, Api::Responses, "tools-r", &[], &ask).await.json().await.unwrap();
    let call = answer["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").unwrap().clone();
    let call_id = call["call_id"].as_str().unwrap();
    let stored = stored_messages(&keel, "tools-r").await;
    assert_eq!(stored["messages"][2]["tool_calls"][0]["id"], call_id, "{stored}");

    let mut result =
        Api::Responses.with(json!([{"type": "function_call_output", "call_id": call_id, "output": "sunny"}]));
    result["tools"] = ask["tools"].clone();
    let last: Value = post(&keel, Api::Responses, "tools-r", &[], &result).await.json().await.unwrap();
    assert_eq!(Api::Responses.text(&last), "Sunny it is.", "{last}");
    let sent = Api::Responses.sent(&up);
    assert_eq!(
        sent[1]["input"],
        json!([
            Api::Responses.user("Weather in Paris?"),
            {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": call["arguments"]},
            {"type": "function_call_output", "call_id": call_id, "output": "sunny"}
        ]),
        "{}",
        sent[1]
    );
}

#[tokio::test]
async fn a_messages_session_through_an_openai_dialect_upstream() {
    let up = MockServer::start(
        ([127, 0, 0, 1], 0).into(),
        scenario("api = \"openai\"\n[[model]]\nname = \"m\"\nreplies = [\"Hi Ada.\", \"You are Ada.\"]\n"),
    )
    .await
    .unwrap();
    let keel = keel(&up, "dialect = \"openai\"\n").await;
    for (text, stream) in [("I am Ada.", false), ("Who am I?", true)] {
        let _ = post(&keel, Api::Messages, "openai-m", &[], &Api::Messages.ask(text, stream)).await.text().await;
    }
    let sent: Vec<Value> = up
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        sent[1]["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "I am Ada."},
            {"role": "assistant", "content": "Hi Ada."},
            {"role": "user", "content": "Who am I?"}
        ]),
        "{}",
        sent[1]
    );
    assert_eq!(
        transcript(&keel, "openai-m").await,
        owned(&[
            ("system", "Be brief."),
            ("user", "I am Ada."),
            ("assistant", "Hi Ada."),
            ("user", "Who am I?"),
            ("assistant", "You are Ada.")
        ])
    );
}

#[tokio::test]
async fn a_responses_session_still_refuses_previous_response_id() {
    let up = mock(&["x"]).await;
    let keel = keel(&up, "").await;
    let mut ask = Api::Responses.ask("hi", false);
    ask["previous_response_id"] = json!("resp_1");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/responses", keel.url()))
        .header("x-keel-session", "prev")
        .json(&ask)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("X-Keel-Session"), "{body}");
    assert!(Api::Responses.sent(&up).is_empty());
}

/// A streamed answer that calls a tool is stored with its calls, assembled from the stream's
/// pieces, in each API keel serves sessions on: the next turn's tool result has its call.
#[tokio::test]
async fn streamed_answers_are_stored_with_their_tool_calls() {
    let up = weather_mock().await;
    let keel = keel(&up, "").await;
    let chat_tools =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let asks = [
        (
            "/api/chat",
            json!({"model": "m", "stream": true, "tools": chat_tools,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "tools": chat_tools,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "m", "max_tokens": 100, "stream": true,
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "m", "stream": true, "input": "Weather in Paris?",
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]}),
        ),
    ];
    for (path, ask) in asks {
        let session = format!("streamed-tools{}", path.replace('/', "-"));
        let response = reqwest::Client::new()
            .post(format!("{}{path}", keel.url()))
            .header("x-keel-session", &session)
            .json(&ask)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let streamed = response.text().await.unwrap();
        assert!(streamed.contains("get_weather"), "{path}: {streamed}");
        let stored = stored_messages(&keel, &session).await;
        let answer = stored["messages"].as_array().unwrap().iter().rfind(|m| m["role"] == "assistant").unwrap();
        assert_eq!(answer["complete"], true, "{path}: {stored}");
        let call = &answer["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather", "{path}: {stored}");
        let arguments = match &call["function"]["arguments"] {
            Value::String(text) => serde_json::from_str(text).unwrap(),
            object => object.clone(),
        };
        assert_eq!(arguments, json!({"city": "Paris"}), "{path}: {stored}");
        if path != "/api/chat" {
            // Chat form: the id the client will answer with.
            let id = call["id"].as_str().unwrap();
            assert!(!id.is_empty() && streamed.contains(id), "{path}: {id:?} not in {streamed}");
        }
    }
    // Ollama: the tool result's turn sends the stored call back before it.
    let result = json!({"model": "m", "stream": true, "tools": chat_tools,
        "messages": [{"role": "tool", "content": "sunny", "tool_name": "get_weather"}]});
    let _ = chat(&keel, "streamed-tools-api-chat", &[], result).await.text().await.unwrap();
    let sent = upstream_chats(&up);
    let last = sent.last().unwrap();
    assert_eq!(last["messages"][1]["tool_calls"][0]["function"]["name"], "get_weather", "{last}");
    assert_eq!(last["messages"][2]["role"], "tool", "{last}");
}
