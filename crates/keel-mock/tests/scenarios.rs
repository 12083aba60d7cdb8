//! Scenario files: the shipped examples load, and mistakes are reported by name.

mod common;

use std::path::{Path, PathBuf};

use keel_mock::{Error, FaultKind, GarbleKind, Scenario};
use serde_json::json;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)
}

#[test]
fn shipped_examples_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!s.models.is_empty(), "{}", path.display());
            count += 1;
        }
    }
    assert!(count >= 3);

    let basic = Scenario::load(&example("basic.toml")).unwrap();
    assert_eq!(basic.seed, 42);
    assert_eq!(basic.models.len(), 2);
    assert_eq!(basic.models[0].tool_call.as_ref().unwrap().name, "get_weather");
    assert_eq!(basic.models[1].replies.len(), 3);

    let flaky = Scenario::load(&example("flaky.toml")).unwrap();
    let faults = &flaky.models[0].faults;
    assert_eq!(faults[0].kind, FaultKind::Busy);
    assert!((faults[0].rate - 0.3).abs() < 1e-9);
    assert_eq!(faults[1].kind, FaultKind::Cut);
    assert!((faults[1].rate - 0.1).abs() < 1e-9);

    let garbled = Scenario::load(&example("garbled-json.toml")).unwrap();
    assert_eq!(garbled.models[0].faults[0].kind, FaultKind::Garble);
    assert_eq!(garbled.models[0].faults[0].garble.len(), GarbleKind::ALL.len());
}

#[tokio::test]
async fn flaky_example_serves_a_mix() {
    let s = common::start(Scenario::load(&example("flaky.toml")).unwrap()).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (status, _, _) = common::post(
            &s,
            "/api/chat",
            json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        statuses.push(status);
    }
    assert!(statuses.contains(&503) && statuses.contains(&200), "{statuses:?}");
}

#[test]
fn unknown_keys_are_named() {
    for (text, key) in [
        ("sede = 1", "sede"),
        ("[[model]]\nname = \"x\"\nrepyl = \"hi\"", "repyl"),
        ("[[model]]\nname = \"x\"\n[[model.fault]]\nkind = \"busy\"\nrat = 0.5", "rat"),
        ("[[model]]\ntool_call = { name = \"f\", args = {} }", "args"),
    ] {
        let err = Scenario::from_toml_str(text).unwrap_err();
        assert!(matches!(err, Error::Scenario(_)));
        let msg = err.to_string();
        assert!(msg.contains(key), "error for {text:?} should name `{key}`: {msg}");
    }
    let msg = Scenario::from_toml_str("[[model]]\n[[model.fault]]\nkind = \"busyy\"").unwrap_err().to_string();
    assert!(msg.contains("busyy") && msg.contains("slow_first_byte"), "{msg}");
}

#[test]
fn load_errors_name_the_file() {
    let missing = example("does-not-exist.toml");
    let msg = Scenario::load(&missing).unwrap_err().to_string();
    assert!(msg.contains("does-not-exist.toml"), "{msg}");

    let path = std::env::temp_dir().join(format!("keel-mock-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[[model]]\nname = \"x\"\nbogus_key = 1\n").unwrap();
    let err = Scenario::load(&path).unwrap_err();
    let _ = std::fs::remove_file(&path);
    let msg = err.to_string();
    assert!(matches!(err, Error::ScenarioFile { .. }));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("bogus_key"), "{msg}");
}

#[test]
fn defaults_and_conveniences() {
    let s = Scenario::from_toml_str("").unwrap();
    assert_eq!(s, Scenario::default());
    assert_eq!(s.version, "0.12.6");
    let m = &s.models[0];
    assert_eq!((m.name.as_str(), m.context_length, m.embedding_dim, m.loaded), ("llama3.2", 4096, 8, true));
    let one = Scenario::single_model("qwen2.5:0.5b", "hi");
    assert_eq!(one.models.len(), 1);
    assert_eq!(one.models[0].reply, "hi");
    let mut one = one;
    assert!(one.model_mut("qwen2.5:0.5b").is_some());
    assert!(one.model_mut("qwen2.5").is_none());
    let toml = one.to_toml_string().unwrap();
    assert_eq!(Scenario::from_toml_str(&toml).unwrap(), one);
}
