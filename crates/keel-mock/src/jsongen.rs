//! Structured-output replies: JSON values generated from a JSON Schema, and garbling.

use serde_json::{Map, Value};

use crate::scenario::GarbleKind;

/// What output format a request asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonMode {
    /// Plain text.
    Text,
    /// Any JSON (`format: "json"`, `response_format: {"type": "json_object"}`).
    Json,
    /// JSON conforming to this schema.
    Schema(Value),
}

impl JsonMode {
    /// From Ollama's `format` field.
    pub(crate) fn from_ollama(format: Option<&Value>) -> JsonMode {
        match format {
            Some(Value::String(s)) if s == "json" => JsonMode::Json,
            Some(v @ Value::Object(_)) => JsonMode::Schema(v.clone()),
            _ => JsonMode::Text,
        }
    }

    /// From OpenAI's `response_format` field.
    pub(crate) fn from_openai(format: Option<&Value>) -> JsonMode {
        let schema = format.and_then(|f| f.get("json_schema")).and_then(|j| j.get("schema"));
        JsonMode::from_typed(format, schema)
    }

    /// From the Responses API's `text` field (`{"format": {"type": "json_schema", "schema"}}`)
    /// or Anthropic's `output_format` (`{"type": "json_schema", "schema"}`).
    pub(crate) fn from_format(format: Option<&Value>) -> JsonMode {
        JsonMode::from_typed(format, format.and_then(|f| f.get("schema")))
    }

    /// `json_object` → any JSON, `json_schema` → `schema` (any JSON without one), else text.
    fn from_typed(format: Option<&Value>, schema: Option<&Value>) -> JsonMode {
        match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
            Some("json_object") => JsonMode::Json,
            Some("json_schema") => match schema {
                Some(s) if s.is_object() => JsonMode::Schema(s.clone()),
                _ => JsonMode::Json,
            },
            _ => JsonMode::Text,
        }
    }

    /// Whether any JSON was asked for.
    pub(crate) fn is_json(&self) -> bool {
        !matches!(self, JsonMode::Text)
    }
}

/// The JSON text a model answers with for `mode` (never called for [`JsonMode::Text`]).
pub(crate) fn json_reply(json_reply: Option<&str>, mode: &JsonMode, text: &str) -> String {
    if let Some(r) = json_reply {
        return r.to_owned();
    }
    match mode {
        JsonMode::Schema(schema) => generate(schema, schema, 0).to_string(),
        _ => {
            let mut m = Map::new();
            m.insert("answer".to_owned(), Value::String(text.to_owned()));
            Value::Object(m).to_string()
        }
    }
}

/// A deterministic value conforming to (the common parts of) a JSON Schema.
pub(crate) fn generate(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return Value::String("example".to_owned());
    };
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(first) = obj.get("enum").and_then(Value::as_array).and_then(|a| a.first()) {
        return first.clone();
    }
    if let Some(target) = obj.get("$ref").and_then(Value::as_str).and_then(|r| resolve_ref(root, r)) {
        return generate(target, root, depth + 1);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = obj.get(key).and_then(Value::as_array) {
            let pick =
                alts.iter().find(|a| a.get("type").and_then(Value::as_str) != Some("null")).or_else(|| alts.first());
            if let Some(alt) = pick {
                return generate(alt, root, depth + 1);
            }
        }
    }
    if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in all {
            match generate(part, root, depth + 1) {
                Value::Object(m) => merged.extend(m),
                other if all.len() == 1 => return other,
                _ => {}
            }
        }
        return Value::Object(merged);
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ if obj.contains_key("properties") => "object",
        _ if obj.contains_key("items") => "array",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut m = Map::new();
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    m.insert(k.clone(), generate(s, root, depth + 1));
                }
            }
            Value::Object(m)
        }
        "array" => {
            let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = obj.get("maxItems").and_then(Value::as_u64).unwrap_or(u64::MAX);
            let n = min.max(1).min(max).min(64);
            let item_schema = obj.get("items").cloned().unwrap_or(Value::Bool(true));
            Value::Array(
                (0..n)
                    .map(|i| {
                        let v = generate(&item_schema, root, depth + 1);
                        match v {
                            // keep items distinct for uniqueItems
                            Value::String(s) if i > 0 => Value::String(format!("{s} {}", i + 1)),
                            other => other,
                        }
                    })
                    .collect(),
            )
        }
        "integer" => {
            let mut v: i64 = 1;
            if let Some(min) = obj.get("minimum").and_then(Value::as_f64) {
                v = v.max(min.ceil() as i64);
            }
            if let Some(min) = obj.get("exclusiveMinimum").and_then(Value::as_f64) {
                v = v.max(min.floor() as i64 + 1);
            }
            if let Some(max) = obj.get("maximum").and_then(Value::as_f64) {
                v = v.min(max.floor() as i64);
            }
            if let Some(max) = obj.get("exclusiveMaximum").and_then(Value::as_f64) {
                v = v.min(max.ceil() as i64 - 1);
            }
            Value::from(v)
        }
        "number" => {
            let mut v: f64 = 1.5;
            if let Some(min) = obj.get("minimum").and_then(Value::as_f64) {
                v = v.max(min);
            }
            if let Some(min) = obj.get("exclusiveMinimum").and_then(Value::as_f64)
                && v <= min
            {
                v = min + 0.5;
            }
            if let Some(max) = obj.get("maximum").and_then(Value::as_f64) {
                v = v.min(max);
            }
            if let Some(max) = obj.get("exclusiveMaximum").and_then(Value::as_f64)
                && v >= max
            {
                v = max - 0.5;
            }
            serde_json::Number::from_f64(v).map_or(Value::from(1), Value::Number)
        }
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::String(example_string(obj)),
    }
}

fn example_string(obj: &Map<String, Value>) -> String {
    let mut s = match obj.get("format").and_then(Value::as_str) {
        Some("date-time") => "2026-01-01T00:00:00Z".to_owned(),
        Some("date") => "2026-01-01".to_owned(),
        Some("time") => "00:00:00".to_owned(),
        Some("email") => "user@example.com".to_owned(),
        Some("uri" | "url") => "https://example.com/".to_owned(),
        Some("uuid") => "00000000-0000-4000-8000-000000000000".to_owned(),
        Some("ipv4") => "127.0.0.1".to_owned(),
        _ => "example".to_owned(),
    };
    if let Some(min) = obj.get("minLength").and_then(Value::as_u64) {
        while (s.chars().count() as u64) < min.min(4096) {
            s.push('x');
        }
    }
    if let Some(max) = obj.get("maxLength").and_then(Value::as_u64) {
        s = s.chars().take(usize::try_from(max).unwrap_or(usize::MAX)).collect();
    }
    s
}

fn resolve_ref<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let pointer = r.strip_prefix('#')?;
    root.pointer(pointer)
}

/// Mangles JSON text the way small models do. `frac` (0..1, seeded) picks the truncation point.
pub(crate) fn garble(json: &str, kind: GarbleKind, frac: f64) -> String {
    let parsed: Option<Value> = serde_json::from_str(json).ok();
    match kind {
        GarbleKind::Fence => format!("```json\n{json}\n```"),
        GarbleKind::Prose => {
            format!("Sure! Here is the JSON you asked for:\n{json}\nLet me know if you need anything else.")
        }
        GarbleKind::Truncate => {
            let len = json.len();
            if len < 2 {
                return format!("{json}{{");
            }
            let mut cut = 1 + ((len - 2) as f64 * frac.clamp(0.0, 1.0)) as usize;
            while cut > 1 && !json.is_char_boundary(cut) {
                cut -= 1;
            }
            json[..cut].to_owned()
        }
        GarbleKind::TrailingComma | GarbleKind::SingleQuotes | GarbleKind::PythonLiterals => {
            let Some(v) = parsed else {
                // Not JSON to begin with: still make it worse.
                return format!("{json},");
            };
            let style = Style {
                trailing_comma: kind == GarbleKind::TrailingComma,
                single_quotes: kind != GarbleKind::TrailingComma,
                python: kind == GarbleKind::PythonLiterals,
            };
            let mut out = String::with_capacity(json.len() + 16);
            write_value(&v, style, &mut out);
            if !v.is_object() && !v.is_array() && style.trailing_comma {
                out.push(',');
            }
            out
        }
    }
}

#[derive(Clone, Copy)]
struct Style {
    trailing_comma: bool,
    single_quotes: bool,
    python: bool,
}

fn write_value(v: &Value, st: Style, out: &mut String) {
    match v {
        Value::Null => out.push_str(if st.python { "None" } else { "null" }),
        Value::Bool(b) => out.push_str(match (st.python, b) {
            (true, true) => "True",
            (true, false) => "False",
            (false, true) => "true",
            (false, false) => "false",
        }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(s, st, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(item, st, out);
            }
            if st.trailing_comma && !items.is_empty() {
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(k, st, out);
                out.push_str(": ");
                write_value(item, st, out);
            }
            if st.trailing_comma && !m.is_empty() {
                out.push(',');
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, st: Style, out: &mut String) {
    if !st.single_quotes {
        out.push_str(&Value::String(s.to_owned()).to_string());
        return;
    }
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_generation() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 10},
                "age": {"type": "integer", "minimum": 18},
                "score": {"type": "number", "maximum": 1},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "kind": {"enum": ["a", "b"]},
                "when": {"type": "string", "format": "date-time"},
                "maybe": {"type": ["null", "integer"]},
                "addr": {"$ref": "#/$defs/addr"}
            },
            "required": ["name"],
            "$defs": {"addr": {"type": "object", "properties": {"city": {"type": "string"}}}}
        });
        let v = generate(&schema, &schema, 0);
        assert_eq!(v["name"].as_str().unwrap().len(), 10);
        assert_eq!(v["age"], 18);
        assert_eq!(v["score"], 1.0);
        assert_eq!(v["ok"], true);
        assert_eq!(v["tags"], json!(["example", "example 2"]));
        assert_eq!(v["kind"], "a");
        assert_eq!(v["when"], "2026-01-01T00:00:00Z");
        assert_eq!(v["maybe"], 1);
        assert_eq!(v["addr"]["city"], "example");
    }

    #[test]
    fn json_reply_forms() {
        assert_eq!(json_reply(None, &JsonMode::Json, "hi"), r#"{"answer":"hi"}"#);
        assert_eq!(json_reply(Some("{\"a\":1}"), &JsonMode::Json, "hi"), "{\"a\":1}");
    }

    #[test]
    fn garbles_are_invalid_json() {
        let src = r#"{"answer": 42, "ok": true, "none": null, "list": [1, "two"]}"#;
        for kind in GarbleKind::ALL {
            for frac in [0.0, 0.3, 0.99] {
                let g = garble(src, kind, frac);
                assert!(serde_json::from_str::<Value>(&g).is_err(), "{kind:?} produced valid JSON: {g}");
            }
        }
        assert_eq!(
            garble(src, GarbleKind::PythonLiterals, 0.0),
            "{'answer': 42, 'ok': True, 'none': None, 'list': [1, 'two']}"
        );
        assert_eq!(garble(r#"{"a":[1]}"#, GarbleKind::TrailingComma, 0.0), r#"{"a": [1,],}"#);
    }
}
