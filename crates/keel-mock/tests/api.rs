//! Ollama's native API as keel-mock serves it.

mod common;

use common::{client, get, json, ndjson, post, post_raw, start};
use keel_mock::{ModelSpec, Scenario, ToolCall};
use serde_json::{Value, json};

const REPLY: &str = "Hello from keel-mock.";

#[tokio::test]
async fn root_and_version() {
    let s = start(Scenario::default()).await;
    let (status, ct, body) = get(&s, "/").await;
    assert_eq!((status, ct.as_str(), body.as_str()), (200, "text/plain; charset=utf-8", "Ollama is running"));

    let head = client().head(s.url()).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.text().await.unwrap(), "");

    let (status, ct, body) = get(&s, "/api/version").await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/json; charset=utf-8");
    assert_eq!(body, r#"{"version":"0.12.6"}"#);
    let head = client().head(format!("{}/api/version", s.url())).send().await.unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn unknown_path_and_wrong_method() {
    let s = start(Scenario::default()).await;
    let (status, ct, body) = get(&s, "/api/nope").await;
    assert_eq!((status, body.as_str()), (404, "404 page not found"));
    assert_eq!(ct, "text/plain; charset=utf-8");
    let (status, _, body) = get(&s, "/api/chat").await;
    assert_eq!((status, body.as_str()), (405, "405 method not allowed"));
    let (status, _, body) = post(&s, "/api/tags", json!({})).await;
    assert_eq!((status, body.as_str()), (405, "405 method not allowed"));
}

#[tokio::test]
async fn tags_lists_models_with_details() {
    let mut scenario = Scenario::default();
    scenario.models.push(ModelSpec { family: "qwen2".into(), ..ModelSpec::new("qwen2.5:0.5b", "hi") });
    let s = start(scenario).await;
    let (status, _, body) = get(&s, "/api/tags").await;
    assert_eq!(status, 200);
    let v = json(&body);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let m = &models[0];
    assert_eq!(m["name"], "llama3.2:latest");
    assert_eq!(m["model"], "llama3.2:latest");
    assert_eq!(m["modified_at"], "2026-01-01T00:00:00Z");
    assert!(m["size"].as_u64().unwrap() > 0);
    let digest = m["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        m["details"],
        json!({"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"3.2B","quantization_level":"Q4_K_M"})
    );
    assert_eq!(models[1]["name"], "qwen2.5:0.5b");
    assert_eq!(models[1]["details"]["family"], "qwen2");
    assert_ne!(models[1]["digest"], m["digest"]);
}

#[tokio::test]
async fn show_and_ps() {
    let mut scenario = Scenario::default();
    scenario.models.push(ModelSpec { loaded: false, ..ModelSpec::new("cold", "zzz") });
    let s = start(scenario).await;
    let (status, _, body) = post(&s, "/api/show", json!({"model": "llama3.2"})).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["model_info"]["llama.context_length"], 4096);
    assert_eq!(v["model_info"]["general.architecture"], "llama");
    assert_eq!(v["details"]["family"], "llama");
    assert!(v["modelfile"].as_str().unwrap().contains("FROM llama3.2:latest"));
    assert!(v["template"].is_string());
    assert!(v["parameters"].is_string());
    assert_eq!(v["capabilities"], json!(["completion"]));

    let (status, _, _) = post(&s, "/api/show", json!({"name": "llama3.2:latest"})).await;
    assert_eq!(status, 200);
    let (status, _, body) = post(&s, "/api/show", json!({"model": "nope"})).await;
    assert_eq!((status, body.as_str()), (404, r#"{"error":"model 'nope' not found"}"#));

    let (status, _, body) = get(&s, "/api/ps").await;
    assert_eq!(status, 200);
    let v = json(&body);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "only loaded models: {v}");
    let m = &models[0];
    assert_eq!(m["name"], "llama3.2:latest");
    assert_eq!(m["context_length"], 4096);
    for key in ["model", "size", "digest", "details", "expires_at", "size_vram"] {
        assert!(m.get(key).is_some(), "missing {key}");
    }
}

#[tokio::test]
async fn chat_streams_by_default() {
    let s = start(Scenario::default()).await;
    let (status, ct, body) =
        post(&s, "/api/chat", json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi there"}]}))
            .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/x-ndjson");
    let lines = ndjson(&body);
    assert!(lines.len() >= 3, "{body}");
    let (last, chunks) = lines.split_last().unwrap();
    let mut text = String::new();
    for l in chunks {
        assert_eq!(l["model"], "llama3.2");
        assert_eq!(l["done"], false);
        assert_eq!(l["message"]["role"], "assistant");
        assert!(l["created_at"].as_str().unwrap().starts_with("2026-01-01T"));
        text.push_str(l["message"]["content"].as_str().unwrap());
    }
    assert_eq!(text, REPLY);
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["prompt_eval_count"], 2);
    assert_eq!(last["eval_count"], chunks.len());
    for key in ["total_duration", "load_duration", "prompt_eval_duration", "eval_duration"] {
        assert!(last[key].as_u64().unwrap() > 0, "{key}");
    }
    assert_eq!(last["x_mock"], json!({"seed": 0}));
}

#[tokio::test]
async fn chat_non_stream() {
    let s = start(Scenario::single_model("llama3.2", "Just one answer.").with_seed(42)).await;
    let (status, ct, body) = post(
        &s,
        "/api/chat",
        json!({"model": "llama3.2:latest", "stream": false, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/json; charset=utf-8");
    let v = json(&body);
    assert_eq!(v["model"], "llama3.2:latest");
    assert_eq!(v["message"], json!({"role": "assistant", "content": "Just one answer."}));
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "stop");
    assert_eq!(v["eval_count"], 3);
    assert_eq!(v["x_mock"]["seed"], 42);
    assert!(body.ends_with('}'), "one JSON object, no newline framing");
}

#[tokio::test]
async fn chat_load_and_unload() {
    let s = start(Scenario::default()).await;
    let (status, _, body) = post(&s, "/api/chat", json!({"model": "llama3.2", "messages": []})).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "load");
    assert_eq!(v["message"]["content"], "");

    let (_, _, body) = post(&s, "/api/chat", json!({"model": "llama3.2", "keep_alive": 0})).await;
    assert_eq!(json(&body)["done_reason"], "unload");

    let (_, _, body) = post(&s, "/api/generate", json!({"model": "llama3.2"})).await;
    let v = json(&body);
    assert_eq!(v["done_reason"], "load");
    assert_eq!(v["response"], "");
}

#[tokio::test]
async fn request_errors() {
    let s = start(Scenario::default()).await;
    for path in ["/api/chat", "/api/generate", "/api/embed", "/api/show"] {
        let (status, _, body) = post_raw(&s, path, "").await;
        assert_eq!((status, body.as_str()), (400, r#"{"error":"missing request body"}"#), "{path}");
        let (status, _, body) = post_raw(&s, path, "{not json").await;
        assert_eq!(status, 400, "{path}");
        let msg = json(&body)["error"].as_str().unwrap().to_owned();
        assert!(msg.contains("line 1"), "serde message: {msg}");
    }
    for path in ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings"] {
        let (status, _, body) = post(&s, path, json!({"messages": []})).await;
        assert_eq!((status, body.as_str()), (400, r#"{"error":"model is required"}"#), "{path}");
        let (status, _, body) =
            post(&s, path, json!({"model": "ghost", "prompt": "x", "messages": [{"role":"user","content":"x"}]})).await;
        assert_eq!((status, body.as_str()), (404, r#"{"error":"model 'ghost' not found"}"#), "{path}");
    }
    let (status, _, _) = post(&s, "/api/chat", json!({"model": "llama3.2", "messages": "nope"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn generate_stream_and_non_stream() {
    let s = start(Scenario::default()).await;
    let (status, ct, body) =
        post(&s, "/api/generate", json!({"model": "llama3.2", "prompt": "Why is the sky blue?"})).await;
    assert_eq!((status, ct.as_str()), (200, "application/x-ndjson"));
    let lines = ndjson(&body);
    let (last, chunks) = lines.split_last().unwrap();
    let text: String = chunks.iter().map(|l| l["response"].as_str().unwrap()).collect();
    assert_eq!(text, REPLY);
    assert!(chunks.iter().all(|l| l.get("message").is_none()));
    assert_eq!(last["done"], true);
    assert_eq!(last["context"], json!([1, 2, 3]));
    assert_eq!(last["prompt_eval_count"], 5);

    let (status, _, body) =
        post(&s, "/api/generate", json!({"model": "llama3.2", "prompt": "hi", "stream": false})).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["response"], REPLY);
    assert_eq!(v["done"], true);
    assert_eq!(v["context"], json!([1, 2, 3]));
}

#[tokio::test]
async fn replies_cycle() {
    let s = start(Scenario {
        models: vec![ModelSpec { replies: vec!["one".into(), "two".into()], ..ModelSpec::new("m", "") }],
        ..Scenario::default()
    })
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let (_, _, body) = post(&s, "/api/generate", json!({"model": "m", "prompt": "x", "stream": false})).await;
        got.push(json(&body)["response"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, ["one", "two", "one"]);
}

#[tokio::test]
async fn structured_output() {
    let mut scenario = Scenario::default();
    scenario.models.push(ModelSpec { json_reply: Some(r#"{"answer": 42}"#.into()), ..ModelSpec::new("fixed", "text") });
    let s = start(scenario).await;

    let (_, _, body) = post(
        &s,
        "/api/chat",
        json!({"model": "llama3.2", "stream": false, "format": "json", "messages": [{"role":"user","content":"q"}]}),
    )
    .await;
    let content = json(&body)["message"]["content"].as_str().unwrap().to_owned();
    assert_eq!(json(&content), json!({"answer": REPLY}));

    let (_, _, body) =
        post(&s, "/api/generate", json!({"model": "fixed", "stream": false, "format": "json", "prompt": "q"})).await;
    assert_eq!(json(&body)["response"], r#"{"answer": 42}"#);

    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "temp": {"type": "number", "minimum": 10},
            "sunny": {"type": "boolean"},
            "days": {"type": "array", "items": {"type": "integer"}},
            "unit": {"enum": ["C", "F"]}
        },
        "required": ["city", "temp"]
    });
    // Streamed: the chunks concatenate to the JSON value.
    let (_, _, body) = post(
        &s,
        "/api/chat",
        json!({"model": "llama3.2", "format": schema, "messages": [{"role":"user","content":"q"}]}),
    )
    .await;
    let text: String = ndjson(&body).iter().map(|l| l["message"]["content"].as_str().unwrap().to_owned()).collect();
    let v = json(&text);
    assert!(v["city"].is_string());
    assert!(v["temp"].as_f64().unwrap() >= 10.0);
    assert_eq!(v["sunny"], true);
    assert!(v["days"][0].is_i64());
    assert_eq!(v["unit"], "C");
}

#[tokio::test]
async fn tool_calls() {
    let s = start(Scenario {
        models: vec![ModelSpec {
            tool_call: Some(ToolCall { name: "get_weather".into(), arguments: json!({"city": "Paris"}) }),
            ..ModelSpec::new("llama3.2", "no tools offered")
        }],
        ..Scenario::default()
    })
    .await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let (_, _, body) = post(&s, "/api/chat", json!({"model": "llama3.2", "stream": false, "tools": tools, "messages": [{"role":"user","content":"weather?"}]})).await;
    let v = json(&body);
    assert_eq!(v["message"]["content"], "");
    assert_eq!(
        v["message"]["tool_calls"],
        json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    );

    let (_, _, body) = post(
        &s,
        "/api/chat",
        json!({"model": "llama3.2", "tools": tools, "messages": [{"role":"user","content":"weather?"}]}),
    )
    .await;
    let lines = ndjson(&body);
    assert_eq!(lines[0]["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(lines.last().unwrap()["done"], true);

    // Without tools in the request: plain text.
    let (_, _, body) = post(
        &s,
        "/api/chat",
        json!({"model": "llama3.2", "stream": false, "messages": [{"role":"user","content":"weather?"}]}),
    )
    .await;
    assert_eq!(json(&body)["message"]["content"], "no tools offered");
    let (_, _, body) = post(&s, "/api/show", json!({"model": "llama3.2"})).await;
    assert_eq!(json(&body)["capabilities"], json!(["completion", "tools"]));
}

#[tokio::test]
async fn embeddings() {
    let s = start(Scenario::default()).await;
    let (status, _, body) = post(&s, "/api/embed", json!({"model": "llama3.2", "input": "hello world"})).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["model"], "llama3.2");
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].as_array().unwrap().len(), 8);
    assert_eq!(v["prompt_eval_count"], 2);
    assert!(v["total_duration"].is_u64() && v["load_duration"].is_u64());

    let (_, _, body) = post(&s, "/api/embed", json!({"model": "llama3.2", "input": ["hello world", "other"]})).await;
    let v2 = json(&body);
    assert_eq!(v2["embeddings"][0], e[0], "deterministic from the text");
    assert_ne!(v2["embeddings"][1], e[0]);

    let (_, _, body) = post(&s, "/api/embed", json!({"model": "llama3.2", "input": "x", "dimensions": 4})).await;
    assert_eq!(json(&body)["embeddings"][0].as_array().unwrap().len(), 4);

    let (_, _, body) = post(&s, "/api/embed", json!({"model": "llama3.2"})).await;
    assert_eq!(json(&body)["embeddings"], json!([]));

    let (status, _, body) = post(&s, "/api/embed", json!({"model": "llama3.2", "input": [1, 2]})).await;
    assert_eq!((status, body.as_str()), (400, r#"{"error":"invalid input type"}"#));

    let (status, _, body) = post(&s, "/api/embeddings", json!({"model": "llama3.2", "prompt": "hello world"})).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["embedding"], e[0]);
    assert_eq!(v.as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn model_management() {
    let s = start(Scenario::default()).await;
    // pull streams progress and adds the model
    let (status, ct, body) = post(&s, "/api/pull", json!({"model": "qwen2.5:0.5b"})).await;
    assert_eq!((status, ct.as_str()), (200, "application/x-ndjson"));
    let lines = ndjson(&body);
    assert_eq!(lines[0], json!({"status": "pulling manifest"}));
    let dl = lines.iter().find(|l| l.get("digest").is_some()).unwrap();
    assert!(dl["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(dl["total"].is_u64() && dl["completed"].is_u64());
    assert_eq!(lines.last().unwrap(), &json!({"status": "success"}));
    let (_, _, tags) = get(&s, "/api/tags").await;
    assert!(tags.contains("qwen2.5:0.5b"));

    let (status, _, body) = post(&s, "/api/pull", json!({"name": "other", "stream": false})).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"success"}"#));

    let (status, _, body) = post(&s, "/api/push", json!({"model": "other"})).await;
    assert_eq!(status, 200);
    assert_eq!(ndjson(&body).last().unwrap()["status"], "success");
    let (status, _, _) = post(&s, "/api/push", json!({"model": "ghost"})).await;
    assert_eq!(status, 404);

    let (status, _, body) =
        post(&s, "/api/create", json!({"model": "mine", "from": "llama3.2", "stream": false})).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"success"}"#));
    let (_, _, body) = post(&s, "/api/generate", json!({"model": "mine", "prompt": "x", "stream": false})).await;
    assert_eq!(json(&body)["response"], REPLY);
    let (status, _, body) = post(&s, "/api/create", json!({"model": "m2", "from": "ghost"})).await;
    assert_eq!((status, body.as_str()), (404, r#"{"error":"model 'ghost' not found"}"#));

    let (status, _, body) = post(&s, "/api/copy", json!({"source": "llama3.2", "destination": "copy:v1"})).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, _, _) = post(&s, "/api/show", json!({"model": "copy:v1"})).await;
    assert_eq!(status, 200);
    let (status, _, body) = post(&s, "/api/copy", json!({"source": "ghost", "destination": "x"})).await;
    assert_eq!((status, body.as_str()), (404, r#"{"error":"model \"ghost\" not found"}"#));

    let resp =
        client().delete(format!("{}/api/delete", s.url())).json(&json!({"model": "copy:v1"})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "");
    let resp =
        client().delete(format!("{}/api/delete", s.url())).json(&json!({"model": "copy:v1"})).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), r#"{"error":"model 'copy:v1' not found"}"#);
    let names: Vec<String> = s.scenario().models.iter().map(|m| m.name.clone()).collect();
    assert_eq!(names, ["llama3.2", "qwen2.5:0.5b", "other", "mine"]);
}

#[tokio::test]
async fn blobs() {
    let s = start(Scenario::default()).await;
    let digest = format!("sha256:{}", "ab".repeat(32));
    let url = format!("{}/api/blobs/{digest}", s.url());
    let resp = client().head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 405);

    // A large upload is consumed as it streams.
    let big = vec![7u8; 4 * 1024 * 1024];
    let resp = client().post(&url).body(big).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let resp = client().head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client().post(&url).body("again").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let recorded = s.requests();
    let upload = recorded.iter().find(|r| r.method == "POST").unwrap();
    assert!(upload.body.is_empty(), "uploads are not buffered");
}

#[tokio::test]
async fn head_on_post_routes_is_405() {
    let s = start(Scenario::default()).await;
    let resp = client().head(format!("{}/api/chat", s.url())).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let v: Value = json(&get(&s, "/api/tags").await.2);
    assert!(v["models"].is_array());
}
