use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_str(text: &str) -> Result<Config, ConfigError> {
    let raw = RawConfig::parse(text).map_err(|message| ConfigError::Parse { path: "keel.toml".into(), message })?;
    Config::from_raw(raw, Some("keel.toml".into()), &Overrides::default(), &no_env)
}

#[test]
fn defaults_need_no_file() {
    let config = Config::without_file(&Overrides::default(), &no_env).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:11435".parse().unwrap());
    assert_eq!(config.store_url, "sqlite://keel.db");
    assert_eq!(config.upstreams.len(), 1);
    assert_eq!(config.upstreams[0].name, "default");
    assert_eq!(config.upstreams[0].upstream.base_url(), "http://127.0.0.1:11434");
    assert_eq!(config.routes[0].model, "*");
    assert_eq!(config.breaker.failure_threshold, 5);
    assert_eq!(config.server.max_request_body, 32 << 20);
}

#[test]
fn template_parses_to_the_defaults() {
    let raw = RawConfig::parse(template::DEFAULT_CONFIG).unwrap();
    let defaults = RawConfig::default();
    assert_eq!(raw.server, defaults.server);
    assert_eq!(raw.store, defaults.store);
    assert_eq!(raw.breaker, defaults.breaker);
    assert_eq!(raw.log, defaults.log);
    assert_eq!(raw.guard, defaults.guard);
    assert_eq!(raw.sessions, defaults.sessions);
    assert_eq!(raw.auth, None);
    let config = load_str(template::DEFAULT_CONFIG).unwrap();
    let implicit = Config::without_file(&Overrides::default(), &no_env).unwrap();
    assert_eq!(config.upstreams[0].upstream.base_url(), implicit.upstreams[0].upstream.base_url());
    assert_eq!(config.upstreams[0].connect_timeout, implicit.upstreams[0].connect_timeout);
    assert_eq!(config.upstreams[0].response_timeout, implicit.upstreams[0].response_timeout);
    assert_eq!(config.upstreams[0].idle_timeout, implicit.upstreams[0].idle_timeout);
}

#[test]
fn design_md_example_loads() {
    let text = r#"
[server]
listen = "127.0.0.1:11435"

[store]
url = "sqlite://keel.db"

[[upstream]]
name = "local"
url = "http://127.0.0.1:11434"
dialect = "ollama"

[[upstream]]
name = "backup"
url = "http://127.0.0.1:11436"

[[route]]
model = "llama3.2"
targets = ["local", "backup", "local:qwen2.5:0.5b"]

[breaker]
failure_threshold = 5
cooldown = "30s"

[auth]
keys = [{ name = "agent", key_env = "KEEL_KEY_AGENT", scopes = ["inference"] },
        { name = "ops",   key_env = "KEEL_KEY_OPS",   scopes = ["inference", "admin"] }]
"#;
    let raw = RawConfig::parse(text).unwrap();
    let env = |name: &str| name.starts_with("KEEL_KEY_").then(|| format!("secret-for-{name}"));
    let config = Config::from_raw(raw, None, &Overrides::default(), &env).unwrap();
    assert_eq!(config.routes[0].targets.len(), 3);
    assert_eq!(config.routes[0].targets[2].model.as_deref(), Some("qwen2.5:0.5b"));
    let auth = config.auth.unwrap();
    assert_eq!(auth.keys[1].scopes, vec![Scope::Inference, Scope::Admin]);
    assert_eq!(auth.keys[0].secret, "secret-for-KEEL_KEY_AGENT");
    assert!(!format!("{:?}", auth.keys[0]).contains("secret-for"), "secrets must not be printed");
}

#[test]
fn unknown_keys_are_named() {
    let err = load_str("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err().to_string();
    assert!(err.contains("keel.toml"), "{err}");
    assert!(err.contains("listen_port"), "{err}");
    let err = load_str("[serverr]\n").unwrap_err().to_string();
    assert!(err.contains("serverr"), "{err}");
    let err = load_str("[[upstream]]\nname = \"a\"\nurl = \"http://x:1\"\ntimeout = \"1s\"\n").unwrap_err().to_string();
    assert!(err.contains("timeout"), "{err}");
}

#[test]
fn bad_values_say_how_to_fix_them() {
    let err = load_str("[breaker]\ncooldown = \"30\"\n").unwrap_err().to_string();
    assert!(err.contains("\"30s\""), "{err}");
    let err =
        load_str("[[upstream]]\nname = \"a\"\nurl = \"http://x:1\"\n[[route]]\nmodel = \"*\"\ntargets = [\"b\"]\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("not declared") && err.contains("declared: a"), "{err}");
    // Off loopback without [auth]: allowed only if the store holds keys (checked by `keel serve`).
    let open = load_str("[server]\nlisten = \"0.0.0.0:11435\"\n").unwrap();
    assert!(open.server.needs_stored_keys);
    assert!(open.unprotected_listen().contains("keel keys create"), "{}", open.unprotected_listen());
    let allowed = load_str("[server]\nlisten = \"0.0.0.0:11435\"\nallow_remote_without_auth = true\n").unwrap();
    assert!(!allowed.server.needs_stored_keys);
    let err = load_str("[store]\nurl = \"mysql://x\"\n").unwrap_err().to_string();
    assert!(err.contains("sqlite://"), "{err}");
    let err = load_str("[[upstream]]\nname = \"a\"\nurl = \"ftp://x\"\n").unwrap_err().to_string();
    assert!(err.contains("http://"), "{err}");
    let https = load_str("[[upstream]]\nname = \"a\"\nurl = \"https://x:1\"\n").unwrap();
    assert!(https.upstreams[0].upstream.is_https());
    let err = load_str(
        "[[upstream]]\nname = \"a\"\nurl = \"http://x:1\"\n[[upstream]]\nname = \"a\"\nurl = \"http://y:1\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("twice"), "{err}");
    let err = load_str("[auth]\nkeys = [{ name = \"a\", key_env = \"NOPE\", scopes = [\"inference\"] }]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("NOPE") && err.contains("not set"), "{err}");
}

#[test]
fn overrides_win() {
    let overrides = Overrides {
        listen: Some("127.0.0.1:9999".into()),
        upstream: Some("http://127.0.0.1:7777".into()),
        store: Some("postgres://postgres@127.0.0.1/test".into()),
        log_format: Some("json".into()),
        log_level: None,
    };
    let raw = RawConfig::parse(template::DEFAULT_CONFIG).unwrap();
    let config = Config::from_raw(raw, None, &overrides, &no_env).unwrap();
    assert_eq!(config.server.listen.port(), 9999);
    assert_eq!(config.upstreams.len(), 1);
    assert_eq!(config.upstreams[0].name, "default");
    assert_eq!(config.upstreams[0].upstream.base_url(), "http://127.0.0.1:7777");
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.store_url, "postgres://postgres@127.0.0.1/test");
    assert_eq!(config.log.format, keel_telemetry::LogFormat::Json);
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert_eq!(parse_size("1 GB").unwrap(), 1_000_000_000);
    assert!(parse_size("12 parsecs").unwrap_err().contains("unit"));
    assert!(parse_size("MiB").is_err());
}

#[test]
fn a_canned_answer_is_checked_against_the_route_schema_at_load() {
    let base = "[[upstream]]\nname = \"local\"\nurl = \"http://127.0.0.1:11434\"\n[[route]]\nmodel = \"c\"\ntargets = [\"local\"]\n";
    let schema =
        "schema = { type = \"object\", required = [\"label\"], properties = { label = { type = \"string\" } } }\n";
    let ok = load_str(&format!("{base}{schema}canned = {{ label = \"unknown\" }}\n")).unwrap();
    assert_eq!(ok.routes[0].canned.as_deref(), Some(&serde_json::json!({"label": "unknown"})));
    let err = load_str(&format!("{base}{schema}canned = {{ label = 3 }}\n")).unwrap_err().to_string();
    assert!(err.contains("canned answer does not match the route's schema"), "{err}");
    assert!(err.contains("label"), "{err}");
    let err = load_str(&format!("{base}schema = {{ type = 5 }}\n")).unwrap_err().to_string();
    assert!(err.contains("not a valid JSON Schema"), "{err}");
    let err = load_str(&format!("{base}schema = \"missing.json\"\n")).unwrap_err().to_string();
    assert!(err.contains("cannot read schema file"), "{err}");
    let err = load_str(&format!("{base}[guard]\nstream = \"maybe\"\n")).unwrap_err().to_string();
    assert!(err.contains("stream"), "{err}");
}

#[test]
fn admission_is_off_without_its_section_and_on_with_defaults_with_it() {
    assert_eq!(load_str("").unwrap().admission, None);
    let on = load_str("[admission]\n").unwrap().admission.unwrap();
    assert_eq!(on, keel_admission::Settings::default());
    assert_eq!((on.max_concurrent, on.max_queue, on.max_wait), (4, 64, Duration::from_secs(30)));
    let set = load_str(
        "[admission]\nmax_concurrent = 2\nmax_queue = 8\nmax_wait = \"5s\"\nupstream_max_concurrent = 3\naging = \"1s\"\n",
    )
    .unwrap()
    .admission
    .unwrap();
    assert_eq!(set.max_concurrent, 2);
    assert_eq!(set.max_queue, 8);
    assert_eq!(set.max_wait, Duration::from_secs(5));
    assert_eq!(set.upstream_max_concurrent, Some(3));
    assert_eq!(set.aging, Duration::from_secs(1));
    // The template's commented section, uncommented, is the defaults (plus its example cap).
    let section: String = template::DEFAULT_CONFIG
        .lines()
        .skip_while(|line| *line != "# [admission]")
        .take_while(|line| line.starts_with('#'))
        .map(|line| format!("{}\n", line.trim_start_matches("# ")))
        .collect();
    let uncommented = load_str(&section).unwrap().admission.unwrap();
    assert_eq!(uncommented, keel_admission::Settings { upstream_max_concurrent: Some(8), ..on });
}

#[test]
fn bad_admission_values_say_how_to_fix_them() {
    let err = load_str("[admission]\nmax_concurrent = 0\n").unwrap_err().to_string();
    assert!(err.contains("[admission] max_concurrent") && err.contains("1 or more"), "{err}");
    let err = load_str("[admission]\nupstream_max_concurrent = 0\n").unwrap_err().to_string();
    assert!(err.contains("upstream_max_concurrent"), "{err}");
    let err = load_str("[admission]\nmax_wait = \"0s\"\n").unwrap_err().to_string();
    assert!(err.contains("max_wait") && err.contains("max_queue = 0"), "{err}");
    assert!(load_str("[admission]\nmax_wait = \"0s\"\nmax_queue = 0\n").is_ok(), "no queue at all is valid");
    let err = load_str("[admission]\naging = \"0s\"\n").unwrap_err().to_string();
    assert!(err.contains("aging"), "{err}");
    let err = load_str("[admission]\nmax_concurent = 2\n").unwrap_err().to_string();
    assert!(err.contains("max_concurent"), "{err}");
    let err = load_str("[admission]\nmax_wait = \"soon\"\n").unwrap_err().to_string();
    assert!(err.contains("max_wait"), "{err}");
}

#[test]
fn a_trace_destination_keel_cannot_use_is_a_problem_not_an_error() {
    let env = |name: &str| (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "collector.example:4318".to_owned());
    let config = Config::without_file(&Overrides::default(), &env).unwrap();
    assert!(config.tracing.exports.is_empty());
    assert!(config.tracing.problem.as_deref().unwrap().contains("not an http:// or https:// URL"));
    let env = |name: &str| (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:4318".to_owned());
    let config = Config::without_file(&Overrides::default(), &env).unwrap();
    assert_eq!(config.tracing.exports[0].endpoint, "http://127.0.0.1:4318/v1/traces");
    assert_eq!(config.tracing.problem, None);
}
