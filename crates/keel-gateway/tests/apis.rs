//! The Anthropic Messages API and the OpenAI Responses API through keel: forwarded to upstreams
//! that speak them, translated for those that do not, errors in each API's shape, a broken
//! Anthropic or Responses stream continued on the next target, and remote (HTTPS) upstreams used only when a
//! route allows them, within their daily token budget.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_mock::MockServer;
use keel_testkit::{TestGateway, config_from_toml, post_json, scenario};
use keel_upstream::translate::sse::{SseEvent, SseReader};
use serde_json::{Value, json};

const MODEL: &str = "[[model]]\nname = \"m\"\nreply = \"Hello from the model.\"\n";

async fn mock(toml: &str) -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), scenario(toml)).await.unwrap()
}

/// keel with one upstream of `dialect` at `mock`.
async fn keel_in_front_of(mock: &MockServer, dialect: &str) -> TestGateway {
    TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"up\"\nurl = \"{}\"\ndialect = \"{dialect}\"\nhealth_interval = \"0s\"\n",
        mock.url()
    )))
    .await
}

fn paths(mock: &MockServer) -> Vec<String> {
    mock.requests().into_iter().map(|r| r.path).collect()
}

fn events(text: &str) -> Vec<SseEvent> {
    let mut reader = SseReader::new();
    let mut events = Vec::new();
    reader.push(text.as_bytes(), &mut events).unwrap();
    events.extend(reader.finish());
    events
}

fn data(events: &[SseEvent]) -> Vec<Value> {
    events.iter().map(|e| serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {:?}", e.data))).collect()
}

fn messages_request(stream: bool) -> Value {
    json!({"model": "m", "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn responses_request(stream: bool) -> Value {
    json!({"model": "m", "input": "hi", "stream": stream})
}

/// The text of an Anthropic stream and its event types, checked to be one well-formed message.
fn anthropic_stream(text: &str) -> (String, Vec<String>) {
    let values = data(&events(text));
    let kinds: Vec<String> = values.iter().map(|v| v["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("message_start"), "{text}");
    assert_eq!(kinds.last().map(String::as_str), Some("message_stop"), "{text}");
    assert_eq!(kinds.iter().filter(|k| *k == "message_start").count(), 1, "{text}");
    // Every delta writes into a block that was started and not yet stopped.
    let mut open = std::collections::BTreeSet::new();
    for value in &values {
        let index = value["index"].as_u64();
        match value["type"].as_str().unwrap() {
            "content_block_start" => assert!(open.insert(index.unwrap()), "{text}"),
            "content_block_delta" => assert!(open.contains(&index.unwrap()), "delta outside a block: {text}"),
            "content_block_stop" => assert!(open.remove(&index.unwrap()), "{text}"),
            _ => {}
        }
    }
    assert!(open.is_empty(), "blocks left open: {text}");
    let joined = values.iter().filter_map(|v| v.pointer("/delta/text").and_then(Value::as_str)).collect();
    (joined, kinds)
}

async fn messages_through(keel: &TestGateway) -> (Value, String) {
    let response = post_json(&format!("{}/v1/messages", keel.url()), &messages_request(false)).await;
    assert_eq!(response.status(), 200);
    let whole: Value = response.json().await.unwrap();
    let response = post_json(&format!("{}/v1/messages", keel.url()), &messages_request(true)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    (whole, response.text().await.unwrap())
}

#[tokio::test]
async fn messages_are_forwarded_to_an_ollama_upstream_and_translated_for_an_openai_one() {
    for (dialect, upstream_path) in [("ollama", "/v1/messages"), ("openai", "/v1/chat/completions")] {
        let api = if dialect == "openai" { "api = \"openai\"\n" } else { "" };
        let upstream = mock(&format!("{api}{MODEL}")).await;
        let keel = keel_in_front_of(&upstream, dialect).await;
        let (whole, stream) = messages_through(&keel).await;
        assert_eq!(whole["type"], "message", "{dialect}: {whole}");
        assert_eq!(whole["role"], "assistant");
        assert_eq!(whole["content"][0]["text"], "Hello from the model.", "{dialect}: {whole}");
        assert!(whole["usage"]["output_tokens"].as_u64().unwrap() > 0, "{whole}");
        let (text, _) = anthropic_stream(&stream);
        assert_eq!(text, "Hello from the model.", "{dialect}");
        assert!(paths(&upstream).iter().all(|p| p == upstream_path), "{dialect}: {:?}", paths(&upstream));
    }
}

#[tokio::test]
async fn responses_are_forwarded_to_an_ollama_upstream_and_translated_for_an_openai_one() {
    for (dialect, upstream_path) in [("ollama", "/v1/responses"), ("openai", "/v1/chat/completions")] {
        let api = if dialect == "openai" { "api = \"openai\"\n" } else { "" };
        let upstream = mock(&format!("{api}{MODEL}")).await;
        let keel = keel_in_front_of(&upstream, dialect).await;
        let response = post_json(&format!("{}/v1/responses", keel.url()), &responses_request(false)).await;
        assert_eq!(response.status(), 200);
        let whole: Value = response.json().await.unwrap();
        assert_eq!(whole["object"], "response", "{dialect}: {whole}");
        assert_eq!(whole["status"], "completed");
        let text = whole["output"][0]["content"][0]["text"].as_str().unwrap();
        assert_eq!(text, "Hello from the model.", "{dialect}");
        let response = post_json(&format!("{}/v1/responses", keel.url()), &responses_request(true)).await;
        let values = data(&events(&response.text().await.unwrap()));
        assert_eq!(values.last().unwrap()["type"], "response.completed", "{dialect}: {values:?}");
        let deltas: String = values
            .iter()
            .filter(|v| v["type"] == "response.output_text.delta")
            .map(|v| v["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, "Hello from the model.", "{dialect}");
        assert!(paths(&upstream).iter().all(|p| p == upstream_path), "{dialect}: {:?}", paths(&upstream));
    }
}

#[tokio::test]
async fn keels_errors_on_messages_come_in_anthropics_shape() {
    let (first, second) = (mock(MODEL).await, mock(MODEL).await);
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"a\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[upstream]]\nname = \"b\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"m\"\ntargets = [\"a\", \"b\"]\n",
        first.url(),
        second.url()
    )))
    .await;
    let unknown = json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&format!("{}/v1/messages", keel.url()), &unknown).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");
    // Every target down: Anthropic's "overloaded", 529, which its SDKs retry.
    first.shutdown().await;
    second.shutdown().await;
    let response = post_json(&format!("{}/v1/messages", keel.url()), &messages_request(false)).await;
    assert_eq!(response.status().as_u16(), 529);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
}

#[tokio::test]
async fn a_broken_messages_stream_is_continued_on_the_backup_as_one_message() {
    let primary = mock(
        "[[model]]\nname = \"m\"\nreply = \"Once upon a time there was a proxy\"\n\
         [[model.fault]]\nkind = \"cut\"\nafter_chunks = 4\n",
    )
    .await;
    let backup = mock("[[model]]\nname = \"m\"\nreply = \" that never dropped a story.\"\n").await;
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"primary\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[upstream]]\nname = \"backup\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"m\"\ntargets = [\"primary\", \"backup\"]\n",
        primary.url(),
        backup.url()
    )))
    .await;
    let response = post_json(&format!("{}/v1/messages", keel.url()), &messages_request(true)).await;
    assert_eq!(response.status(), 200);
    let stream = response.text().await.unwrap();
    let (text, _) = anthropic_stream(&stream);
    let sent: Vec<Value> = backup
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent.len(), 1, "{stream}");
    let partial = sent[0]["messages"][1]["content"].as_str().unwrap();
    assert!(partial.starts_with("Once") && "Once upon a time there was a proxy".starts_with(partial), "{partial}");
    assert_eq!(text, format!("{partial} that never dropped a story."), "{stream}");
}

/// The events of a Responses stream, checked to be one well-formed response: one
/// `response.created`, sequence numbers 0.. without a gap, `response.completed` last.
fn responses_stream(text: &str) -> Vec<Value> {
    let values = data(&events(text));
    let created = values.iter().filter(|v| v["type"] == "response.created").count();
    assert_eq!(created, 1, "{text}");
    let sequences: Vec<u64> = values.iter().map(|v| v["sequence_number"].as_u64().unwrap()).collect();
    assert_eq!(sequences, (0..values.len() as u64).collect::<Vec<_>>(), "{text}");
    assert_eq!(values.last().unwrap()["type"], "response.completed", "{text}");
    values
}

#[tokio::test]
async fn a_broken_responses_stream_is_continued_on_the_backup_as_one_response() {
    let primary = mock(
        "[[model]]\nname = \"m\"\nreply = \"Once upon a time there was a proxy\"\n\
         [[model.fault]]\nkind = \"cut\"\nafter_chunks = 4\n",
    )
    .await;
    let backup = mock("[[model]]\nname = \"m\"\nreply = \" that never dropped a story.\"\n").await;
    let keel = TestGateway::start(config_from_toml(&format!(
        "[[upstream]]\nname = \"primary\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[upstream]]\nname = \"backup\"\nurl = \"{}\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"m\"\ntargets = [\"primary\", \"backup\"]\n",
        primary.url(),
        backup.url()
    )))
    .await;
    let response = post_json(&format!("{}/v1/responses", keel.url()), &responses_request(true)).await;
    assert_eq!(response.status(), 200);
    let stream = response.text().await.unwrap();
    let values = responses_stream(&stream);
    let sent: Vec<Value> = backup
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/responses")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent.len(), 1, "{stream}");
    let input = sent[0]["input"].as_array().unwrap();
    assert_eq!(input[0], json!({"role": "user", "content": "hi"}));
    assert_eq!(input.last().unwrap()["role"], "assistant");
    let partial = input.last().unwrap()["content"].as_str().unwrap();
    assert!(partial.starts_with("Once") && "Once upon a time there was a proxy".starts_with(partial), "{partial}");
    let whole = format!("{partial} that never dropped a story.");
    let deltas: Vec<&Value> = values.iter().filter(|v| v["type"] == "response.output_text.delta").collect();
    let text: String = deltas.iter().map(|v| v["delta"].as_str().unwrap()).collect();
    assert_eq!(text, whole, "{stream}");
    let item = (&deltas[0]["item_id"], &deltas[0]["output_index"], &deltas[0]["content_index"]);
    assert!(deltas.iter().all(|v| (&v["item_id"], &v["output_index"], &v["content_index"]) == item), "{stream}");
    let kind = |kind: &str| values.iter().filter(|v| v["type"] == kind).collect::<Vec<_>>();
    assert_eq!(kind("response.output_item.added").len(), 1, "{stream}");
    assert_eq!(kind("response.output_text.done")[0]["text"], whole.as_str());
    assert_eq!(kind("response.content_part.done")[0]["part"]["text"], whole.as_str());
    assert_eq!(kind("response.output_item.done")[0]["item"]["id"], *item.0);
    let completed = &values.last().unwrap()["response"];
    assert_eq!(completed["id"], kind("response.created")[0]["response"]["id"], "{stream}");
    assert_eq!(completed["output"][0]["content"][0]["text"], whole.as_str(), "{stream}");
}
