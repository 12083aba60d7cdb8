//! The structured-output guard end to end: keel in front of fake Ollamas whose JSON answers are
//! broken in scripted ways. Every answer a client gets is valid against its schema, repaired,
//! re-asked, from the next target, canned — or a clear 422; never broken JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_mock::MockServer;
use keel_testkit::{TestGateway, config_from_toml, post_json, scenario};
use serde_json::{Value, json};

async fn mock(toml: &str) -> MockServer {
    MockServer::start(([127, 0, 0, 1], 0).into(), scenario(toml)).await.unwrap()
}

/// One model `m` whose JSON answers cycle through `replies`.
async fn model_answering(replies: &[&str]) -> MockServer {
    let replies: Vec<String> = replies.iter().map(|r| format!("{r:?}")).collect();
    mock(&format!("[[model]]\nname = \"m\"\njson_replies = [{}]\n", replies.join(", "))).await
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"label": {"enum": ["bug", "billing"]}, "confidence": {"type": "number"}},
        "required": ["label", "confidence"],
        "additionalProperties": false
    })
}

fn chat(format: Value, stream: bool) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "classify"}], "format": format, "stream": stream})
}

/// keel with route `m` → the given upstreams in order, plus extra config.
async fn keel(upstreams: &[&MockServer], extra: &str) -> TestGateway {
    let mut toml = String::new();
    let mut names = Vec::new();
    for (i, up) in upstreams.iter().enumerate() {
        toml.push_str(&format!("[[upstream]]\nname = \"u{i}\"\nurl = \"{}\"\n", up.url()));
        names.push(format!("\"u{i}\""));
    }
    toml.push_str(&format!("[[route]]\nmodel = \"m\"\ntargets = [{}]\n{extra}", names.join(", ")));
    TestGateway::start(config_from_toml(&toml)).await
}

fn chats(mock: &MockServer) -> Vec<Value> {
    mock.requests()
        .iter()
        .filter(|r| r.path == "/api/chat" || r.path == "/v1/chat/completions" || r.path == "/api/generate")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_valid_answer_passes_unchanged_with_header_none() {
    let up = model_answering(&[r#"{"label": "bug", "confidence": 0.5}"#]).await;
    let keel = keel(&[&up], "").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-repair"], "none");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"]["content"], r#"{"label": "bug", "confidence": 0.5}"#, "valid text is kept as written");
    assert_eq!(body["done"], true);
    // Upstream was asked without streaming, with the format passed on.
    let sent = chats(&up);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["stream"], false);
    assert_eq!(sent[0]["format"], schema());
}

#[tokio::test]
async fn a_garbled_answer_is_repaired_and_says_how() {
    let up = model_answering(&["Sure! ```json\n{'Label': 'BILLING', confidence: \"0.93\",}\n```"]).await;
    let keel = keel(&[&up], "").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-repair"], "extracted,fixed-syntax,coerced-types,renamed-keys");
    assert!(response.headers().get("x-keel-attempts").is_none());
    let body: Value = response.json().await.unwrap();
    let content: Value = serde_json::from_str(body["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"label": "billing", "confidence": 0.93}));
    assert_eq!(chats(&up).len(), 1, "a repairable answer needs no re-ask");
}

#[tokio::test]
async fn an_unrepairable_answer_is_reasked_with_the_error_as_feedback() {
    let up = model_answering(&[r#"{"label": "bug"}"#, r#"{"label": "bug", "confidence": 1}"#]).await;
    let keel = keel(&[&up], "").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-repair"], "reasked");
    assert_eq!(response.headers()["x-keel-attempts"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"]["content"], r#"{"label": "bug", "confidence": 1}"#);
    let sent = chats(&up);
    assert_eq!(sent.len(), 2);
    let messages = sent[1]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[1], json!({"role": "assistant", "content": r#"{"label": "bug"}"#}));
    let feedback = messages[2]["content"].as_str().unwrap();
    assert!(feedback.contains("missing required field \"confidence\""), "{feedback}");
    assert!(feedback.contains("JSON Schema"), "{feedback}");
}

#[tokio::test]
async fn after_the_reasks_the_next_target_answers() {
    let bad = model_answering(&["I cannot answer that."]).await;
    let good = model_answering(&[r#"{"label": "billing", "confidence": 0.2}"#]).await;
    let keel = keel(&[&bad, &good], "").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-target"], "u1:m");
    assert_eq!(response.headers()["x-keel-repair"], "reasked,fallback");
    assert_eq!(response.headers()["x-keel-attempts"], "3");
    assert_eq!(chats(&bad).len(), 2, "asked once and re-asked once ([guard] reasks = 1)");
    // The next target gets the original question, not the re-ask.
    assert_eq!(chats(&good)[0]["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_hopeless_route_answers_from_its_canned_value() {
    let bad = model_answering(&["{customer_name}"]).await;
    let extra = "canned = { label = \"bug\", confidence = 0 }\n[guard]\nreasks = 0\n";
    let keel = keel(&[&bad], extra).await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-repair"], "canned");
    assert_eq!(response.headers()["x-keel-target"], "keel:canned");
    let body: Value = response.json().await.unwrap();
    let content: Value = serde_json::from_str(body["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"label": "bug", "confidence": 0}));
    assert_eq!(body["done"], true);
}

#[tokio::test]
async fn without_a_canned_value_the_client_gets_a_422_naming_each_problem() {
    let bad = model_answering(&[r#"{"label": "spam", "confidence": 1}"#]).await;
    let keel = keel(&[&bad], "").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["x-keel-attempts"], "2");
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("no valid structured output for model 'm' after 2 attempt(s)"), "{error}");
    assert!(error.contains("u0:m:"), "{error}");
    assert!(error.contains("spam"), "{error}");
}

#[tokio::test]
async fn a_canned_value_that_misses_the_request_schema_is_not_used() {
    let bad = model_answering(&["nope"]).await;
    let keel = keel(&[&bad], "canned = { other = 1 }\n[guard]\nreasks = 0\n").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn a_streamed_request_gets_the_validated_answer_as_ndjson() {
    let up = model_answering(&["```json\n{\"label\": \"bug\", \"confidence\": 0.7,}\n```"]).await;
    let keel = keel(&[&up], "").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    let content: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&content).unwrap(), json!({"label": "bug", "confidence": 0.7}));
    assert_eq!(lines[1]["done"], true);
}

#[tokio::test]
async fn format_json_without_schema_uses_the_routes_schema() {
    let up = model_answering(&[r#"{"label": "bug"}"#]).await;
    let extra = format!("schema = {}\n[guard]\nreasks = 0\n", toml_inline(&schema()));
    let keel = keel(&[&up], &extra).await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(json!("json"), false)).await;
    assert_eq!(response.status(), 422, "the route's schema requires confidence");
    // Without a route schema, any JSON object passes.
    let plain = keel_with_no_schema(&up).await;
    let response = post_json(&format!("{}/api/chat", plain.url()), &chat(json!("json"), false)).await;
    assert_eq!(response.status(), 200);
}

async fn keel_with_no_schema(up: &MockServer) -> TestGateway {
    keel(&[up], "").await
}

/// A JSON object as a TOML inline table (enough for the test schemas).
fn toml_inline(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("{k:?} = {}", toml_inline(v))).collect();
            format!("{{ {} }}", fields.join(", "))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(toml_inline).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn generate_and_openai_requests_are_guarded_too() {
    let up = model_answering(&["Answer: {'label': 'bug', 'confidence': 1}"]).await;
    let keel = keel(&[&up], "").await;
    let generate = json!({"model": "m", "prompt": "classify", "format": schema(), "stream": false});
    let response = post_json(&format!("{}/api/generate", keel.url()), &generate).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["response"], r#"{"label":"bug","confidence":1}"#);

    let openai = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "classify"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema()}},
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let response = post_json(&format!("{}/v1/chat/completions", keel.url()), &openai).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(text.contains(r#""content":"{\"label\":\"bug\",\"confidence\":1}""#), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // The upstream was asked without streaming.
    let sent = chats(&up);
    assert_eq!(sent.last().unwrap()["stream"], false);
    assert!(sent.last().unwrap().get("stream_options").is_none());
}

#[tokio::test]
async fn openai_422_is_in_openai_dialect() {
    let up = model_answering(&["no"]).await;
    let keel = keel(&[&up], "[guard]\nreasks = 0\n").await;
    let openai = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "classify"}],
        "response_format": {"type": "json_object"}
    });
    let response = post_json(&format!("{}/v1/chat/completions", keel.url()), &openai).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("no JSON found"), "{body}");
}

#[tokio::test]
async fn requests_without_format_and_disabled_guard_pass_through() {
    let up = model_answering(&["not json"]).await;
    let keel = keel(&[&up], "[guard]\nenabled = false\n").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-keel-repair").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"]["content"], "not json");
}

#[tokio::test]
async fn an_invalid_request_schema_is_a_400() {
    let up = model_answering(&["{}"]).await;
    let keel = keel(&[&up], "").await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(json!({"type": 12}), false)).await;
    assert_eq!(response.status(), 400);
    assert!(chats(&up).is_empty(), "nothing was sent upstream");
}

#[tokio::test]
async fn outcomes_are_counted_in_metrics() {
    let up = model_answering(&["{'label': 'bug', 'confidence': 1,}"]).await;
    let keel = keel(&[&up], "").await;
    post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    let metrics = reqwest::get(format!("{}/metrics", keel.url())).await.unwrap().text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("keel_structured_outputs_total") && l.contains("outcome=\"repaired\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.contains("model=\"m\""), "{line}");
    assert!(
        metrics.lines().any(|l| l.starts_with("keel_repair_fixes_total") && l.contains("single_quotes")),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_upstream_that_must_not_get_format_is_guarded_all_the_same() {
    // Without `format` the fake model answers in free text: here, Python-ish JSON.
    let up = mock("[[model]]\nname = \"m\"\nreply = \"Here: {'label': 'bug', 'confidence': 1}\"\n").await;
    let toml = format!(
        "[[upstream]]\nname = \"u0\"\nurl = \"{}\"\nforward_format = false\n[[route]]\nmodel = \"m\"\ntargets = [\"u0\"]\n",
        up.url()
    );
    let keel = TestGateway::start(config_from_toml(&toml)).await;
    let response = post_json(&format!("{}/api/chat", keel.url()), &chat(schema(), false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"]["content"], r#"{"label":"bug","confidence":1}"#);
    let sent = chats(&up);
    assert!(sent[0].get("format").is_none(), "{:?}", sent[0]);
    assert_eq!(sent[0]["messages"], json!([{"role": "user", "content": "classify"}]));
}

/// Deep nesting is never silently changed: a valid 1,000-deep JSON answer passes as written, a
/// too-deep one is not passed on (re-asked, then a 422 naming the depth), for `format: "json"`.
#[tokio::test]
async fn deep_answers_pass_as_written_or_are_refused_naming_the_depth() {
    let deep = |depth: usize| format!("{}1{}", "{\"a\": [".repeat(depth / 2), "]}".repeat(depth / 2));
    let valid = deep(1000);
    let up = model_answering(&[&valid]).await;
    let gateway = keel(&[&up], "").await;
    let response = post_json(&format!("{}/api/chat", gateway.url()), &chat(json!("json"), false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-repair"], "none");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"]["content"].as_str(), Some(valid.as_str()), "valid text is kept as written");

    for too_deep in [deep(20_000), "[".repeat(100_000), "{\"a\":".repeat(100_000)] {
        let up = model_answering(&[&too_deep]).await;
        let gateway = keel(&[&up], "").await;
        let response = post_json(&format!("{}/api/chat", gateway.url()), &chat(json!("json"), false)).await;
        assert_eq!(response.status(), 422);
        assert!(response.headers().get("x-keel-repair").is_none());
        let body: Value = response.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("nested deeper than 10000 levels; keel does not repair JSON this deep"), "{error}");
        assert_eq!(chats(&up).len(), 2, "asked, then re-asked with the reason");
    }
}

/// The two client APIs the guard reads through their own shapes: the OpenAI Responses API and
/// Anthropic's Messages API.
#[derive(Debug, Clone, Copy)]
enum Api {
    Responses,
    Messages,
}

const APIS: [Api; 2] = [Api::Responses, Api::Messages];

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Responses => "/v1/responses",
            Api::Messages => "/v1/messages",
        }
    }

    /// A request for `schema()` in this API's structured-output field.
    fn request(self, stream: bool) -> Value {
        match self {
            Api::Responses => json!({
                "model": "m",
                "input": "classify",
                "text": {"format": {"type": "json_schema", "name": "ticket", "schema": schema(), "strict": true}},
                "stream": stream
            }),
            Api::Messages => json!({
                "model": "m",
                "max_tokens": 256,
                "messages": [{"role": "user", "content": "classify"}],
                "output_format": {"type": "json_schema", "schema": schema()},
                "stream": stream
            }),
        }
    }

    /// The answer's text: the Responses `output_text`, or the message's text blocks.
    fn text(self, answer: &Value) -> String {
        let (list, part) = match self {
            Api::Responses => ("output", "output_text"),
            Api::Messages => ("content", "text"),
        };
        let mut parts: Vec<&Value> = answer[list].as_array().unwrap().iter().collect();
        if let Api::Responses = self {
            parts = parts.iter().filter_map(|item| item["content"].as_array()).flatten().collect();
        }
        parts.iter().filter(|p| p["type"] == part).map(|p| p["text"].as_str().unwrap()).collect()
    }

    /// The structured-output field of a request as sent upstream.
    fn format(self, sent: &Value) -> &Value {
        match self {
            Api::Responses => &sent["text"]["format"],
            Api::Messages => &sent["output_format"],
        }
    }

    /// The conversation of a request as sent upstream (`input`, `messages`).
    fn conversation(self, sent: &Value) -> Vec<Value> {
        let key = match self {
            Api::Responses => "input",
            Api::Messages => "messages",
        };
        sent[key].as_array().unwrap_or_else(|| panic!("{sent}")).clone()
    }

    /// The text of a stream's deltas, and the name of its last event.
    fn streamed(self, events: &[Value]) -> (String, &'static str) {
        match self {
            Api::Responses => (
                events
                    .iter()
                    .filter(|e| e["type"] == "response.output_text.delta")
                    .map(|e| e["delta"].as_str().unwrap())
                    .collect(),
                "response.completed",
            ),
            Api::Messages => (
                events
                    .iter()
                    .filter(|e| e["type"] == "content_block_delta")
                    .filter_map(|e| e["delta"]["text"].as_str())
                    .collect(),
                "message_stop",
            ),
        }
    }
}

/// The JSON bodies `mock` got on `path`.
fn sent(mock: &MockServer, path: &str) -> Vec<Value> {
    mock.requests().iter().filter(|r| r.path == path).map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

/// The data of each named SSE event, checking each `event:` name against the data's `type`.
fn named_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let name = event.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_else(|| panic!("{event}"));
            let data: Value =
                serde_json::from_str(event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
            assert_eq!(data["type"], name, "{event}");
            data
        })
        .collect()
}

#[tokio::test]
async fn responses_and_messages_answers_are_repaired() {
    for api in APIS {
        let up = model_answering(&["```json\n{\"label\": \"bug\", \"confidence\": 0.7,}\n```"]).await;
        let keel = keel(&[&up], "").await;
        let response = post_json(&format!("{}{}", keel.url(), api.path()), &api.request(false)).await;
        assert_eq!(response.status(), 200, "{api:?}");
        let repair = response.headers()["x-keel-repair"].to_str().unwrap().to_owned();
        assert!(repair.contains("fixed-syntax"), "{api:?}: {repair}");
        let body: Value = response.json().await.unwrap();
        let text: Value = serde_json::from_str(&api.text(&body)).unwrap();
        assert_eq!(text, json!({"label": "bug", "confidence": 0.7}), "{api:?}: {body}");
        // Asked once, without streaming, with the structured-output field passed on.
        let sent = sent(&up, api.path());
        assert_eq!(sent.len(), 1, "{api:?}");
        assert_eq!(sent[0]["stream"], false);
        assert_eq!(api.format(&sent[0])["type"], "json_schema", "{api:?}");
    }
}

#[tokio::test]
async fn responses_and_messages_invalid_answers_are_reasked() {
    for api in APIS {
        let up = model_answering(&[r#"{"label": "bug"}"#, r#"{"label": "bug", "confidence": 1}"#]).await;
        let keel = keel(&[&up], "").await;
        let response = post_json(&format!("{}{}", keel.url(), api.path()), &api.request(false)).await;
        assert_eq!(response.status(), 200, "{api:?}");
        assert_eq!(response.headers()["x-keel-repair"], "reasked");
        assert_eq!(response.headers()["x-keel-attempts"], "2");
        let body: Value = response.json().await.unwrap();
        assert_eq!(api.text(&body), r#"{"label": "bug", "confidence": 1}"#, "{api:?}");
        let sent = sent(&up, api.path());
        assert_eq!(sent.len(), 2, "{api:?}");
        let conversation = api.conversation(&sent[1]);
        assert_eq!(conversation.len(), 3, "{api:?}: {conversation:?}");
        assert_eq!(conversation[0], json!({"role": "user", "content": "classify"}));
        assert_eq!(conversation[1], json!({"role": "assistant", "content": r#"{"label": "bug"}"#}));
        let feedback = conversation[2]["content"].as_str().unwrap();
        assert!(feedback.contains("missing required field \"confidence\""), "{api:?}: {feedback}");
    }
}

#[tokio::test]
async fn responses_and_messages_fall_back_to_the_canned_value() {
    for api in APIS {
        let bad = model_answering(&["{customer_name}"]).await;
        let keel = keel(&[&bad], "canned = { label = \"bug\", confidence = 0 }\n[guard]\nreasks = 0\n").await;
        let response = post_json(&format!("{}{}", keel.url(), api.path()), &api.request(false)).await;
        assert_eq!(response.status(), 200, "{api:?}");
        assert_eq!(response.headers()["x-keel-repair"], "canned");
        assert_eq!(response.headers()["x-keel-target"], "keel:canned");
        let body: Value = response.json().await.unwrap();
        let text: Value = serde_json::from_str(&api.text(&body)).unwrap();
        assert_eq!(text, json!({"label": "bug", "confidence": 0}), "{api:?}: {body}");
        assert_eq!(body["model"], "m");
        match api {
            Api::Responses => {
                assert_eq!(body["object"], "response");
                assert_eq!(body["status"], "completed");
                assert_eq!(body["text"]["format"]["name"], "ticket", "the request's parameters are echoed");
            }
            Api::Messages => {
                assert_eq!(body["type"], "message");
                assert_eq!(body["stop_reason"], "end_turn");
            }
        }
    }
}

#[tokio::test]
async fn responses_and_messages_streams_carry_the_validated_answer() {
    for api in APIS {
        let up = model_answering(&["Sure: {'label': 'billing', 'confidence': '0.5'}"]).await;
        let keel = keel(&[&up], "").await;
        let response = post_json(&format!("{}{}", keel.url(), api.path()), &api.request(true)).await;
        assert_eq!(response.status(), 200, "{api:?}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = response.text().await.unwrap();
        let events = named_events(&text);
        let (streamed, last) = api.streamed(&events);
        assert_eq!(events.last().unwrap()["type"], last, "{api:?}: {text}");
        let expected = json!({"label": "billing", "confidence": 0.5});
        assert_eq!(serde_json::from_str::<Value>(&streamed).unwrap(), expected, "{api:?}: {text}");
        match api {
            Api::Responses => {
                assert_eq!(events[0]["type"], "response.created");
                let numbers: Vec<u64> = events.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
                assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>(), "{text}");
                let completed = &events.last().unwrap()["response"];
                assert_eq!(api.text(completed), streamed);
            }
            Api::Messages => assert_eq!(events[0]["type"], "message_start"),
        }
        assert_eq!(sent(&up, api.path())[0]["stream"], false, "the upstream is asked without streaming");
    }
}

#[tokio::test]
async fn responses_through_an_openai_upstream_are_translated_and_guarded() {
    let up = model_answering(&[
        "{'label': 'bug', 'confidence': 1,}",
        r#"{"label": "spam"}"#,
        r#"{"label": "bug", "confidence": 0.1}"#,
    ])
    .await;
    let toml = format!(
        "[[upstream]]\nname = \"u0\"\nurl = \"{}\"\ndialect = \"openai\"\nhealth_interval = \"0s\"\n\
         [[route]]\nmodel = \"m\"\ntargets = [\"u0\"]\n",
        up.url()
    );
    let keel = TestGateway::start(config_from_toml(&toml)).await;
    let url = format!("{}/v1/responses", keel.url());
    // Repaired.
    let response = post_json(&url, &Api::Responses.request(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-keel-repair"], "fixed-syntax");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "response", "{body}");
    assert_eq!(Api::Responses.text(&body), r#"{"label":"bug","confidence":1}"#);
    // Re-asked, with the feedback as the last chat message.
    let response = post_json(&url, &Api::Responses.request(false)).await;
    assert_eq!(response.headers()["x-keel-repair"], "reasked");
    let body: Value = response.json().await.unwrap();
    assert_eq!(Api::Responses.text(&body), r#"{"label": "bug", "confidence": 0.1}"#);
    assert!(sent(&up, "/v1/responses").is_empty(), "an OpenAI upstream gets chat completions");
    let chats = sent(&up, "/v1/chat/completions");
    assert_eq!(chats.len(), 3);
    assert_eq!(
        chats[0]["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema(), "strict": true}})
    );
    assert_eq!(chats[0]["stream"], false);
    let messages = chats[2]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[1]["content"], r#"{"label": "spam"}"#);
    assert!(messages[2]["content"].as_str().unwrap().contains("Your previous answer could not be used"));
}

#[tokio::test]
async fn responses_and_messages_formats_are_dropped_for_an_upstream_that_must_not_get_them() {
    for api in APIS {
        let up = mock("[[model]]\nname = \"m\"\nreply = \"Here: {'label': 'bug', 'confidence': 1}\"\n").await;
        let toml = format!(
            "[[upstream]]\nname = \"u0\"\nurl = \"{}\"\nforward_format = false\n[[route]]\nmodel = \"m\"\ntargets = [\"u0\"]\n",
            up.url()
        );
        let keel = TestGateway::start(config_from_toml(&toml)).await;
        let response = post_json(&format!("{}{}", keel.url(), api.path()), &api.request(false)).await;
        assert_eq!(response.status(), 200, "{api:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(api.text(&body), r#"{"label":"bug","confidence":1}"#, "{api:?}");
        let sent = sent(&up, api.path());
        assert_eq!(sent.len(), 1, "{api:?}: the free-text answer was repaired, not re-asked");
        assert!(api.format(&sent[0]).is_null(), "{api:?}: {}", sent[0]);
    }
}
