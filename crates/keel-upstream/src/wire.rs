//! The few request fields keel reads, parsed without disturbing the rest of the body.

use keel_types::Dialect;
use serde::Deserialize;

/// What keel needs to know about an inference request: which model, and whether it streams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestPeek {
    /// The `model` field (Ollama also accepts the older `name` on some endpoints).
    pub model: Option<String>,
    /// The `stream` field as sent; `None` when absent (or `null`).
    pub stream: Option<bool>,
}

/// A request body keel cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body was empty.
    #[error("missing request body")]
    Empty,
    /// The body is not a JSON object (the message is the parser's).
    #[error("{0}")]
    Malformed(String),
    /// The body is valid JSON, but not an object (an array, string, number, boolean or null).
    #[error("request body must be a JSON object, not {0}: send {{\"model\": \"<name>\", ...}}")]
    NotObject(&'static str),
    /// The body is not UTF-8 text.
    #[error("request body is not valid UTF-8 (invalid byte at offset {offset}): send JSON text encoded as UTF-8")]
    NotUtf8 {
        /// Where the first invalid byte is.
        offset: usize,
    },
}

#[derive(Deserialize)]
struct Fields {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
}

impl RequestPeek {
    /// Reads `model`/`name` and `stream` from a JSON object body. Other fields are skipped, not
    /// validated: the upstream judges them.
    pub fn parse(body: &[u8]) -> Result<RequestPeek, WireError> {
        let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
            return Err(WireError::Empty);
        };
        // serde_json does not check the bytes of the strings it skips.
        if let Err(err) = std::str::from_utf8(body) {
            return Err(WireError::NotUtf8 { offset: err.valid_up_to() });
        }
        // A struct deserializes from a JSON array too (`["m"]` would name the model "m").
        if *first != b'{' {
            return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => WireError::NotObject(match first {
                    b'[' => "an array",
                    b'"' => "a string",
                    b't' | b'f' => "a boolean",
                    b'n' => "null",
                    _ => "a number",
                }),
                Err(err) => WireError::Malformed(describe(&err)),
            });
        }
        let fields: Fields = serde_json::from_slice(body).map_err(|err| WireError::Malformed(describe(&err)))?;
        let model = match fields.model.or(fields.name) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(_) => return Err(WireError::Malformed("field \"model\" must be a string".into())),
        };
        let stream = match fields.stream {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Bool(b)) => Some(b),
            Some(_) => return Err(WireError::Malformed("field \"stream\" must be a boolean".into())),
        };
        Ok(RequestPeek { model, stream })
    }

    /// Whether the response will be streamed, applying the dialect's default.
    pub fn streams(&self, dialect: Dialect) -> bool {
        self.stream.unwrap_or(dialect.streams_by_default())
    }
}

fn describe(err: &serde_json::Error) -> String {
    if err.is_data() {
        // e.g. the body is an array, not an object
        format!("invalid request body: expected a JSON object ({err})")
    } else {
        format!("invalid JSON in request body: {err}")
    }
}

/// The context length an Ollama `/api/show` answer reports (`model_info`'s
/// `<architecture>.context_length`), when it reports one.
pub fn context_length(show: &serde_json::Value) -> Option<u64> {
    show.get("model_info")?
        .as_object()?
        .iter()
        .find(|(key, _)| key.ends_with(".context_length"))
        .and_then(|(_, value)| value.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_model_and_stream() {
        let p = RequestPeek::parse(br#"{"model":"llama3.2","messages":[],"stream":false,"x":{"y":1}}"#).unwrap();
        assert_eq!(p.model.as_deref(), Some("llama3.2"));
        assert_eq!(p.stream, Some(false));
        assert!(!p.streams(Dialect::Ollama));
    }

    #[test]
    fn defaults_follow_dialect() {
        let p = RequestPeek::parse(br#"{"model":"m"}"#).unwrap();
        assert!(p.streams(Dialect::Ollama));
        assert!(!p.streams(Dialect::OpenAi));
    }

    #[test]
    fn name_is_accepted() {
        let p = RequestPeek::parse(br#"{"name":"m"}"#).unwrap();
        assert_eq!(p.model.as_deref(), Some("m"));
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert_eq!(RequestPeek::parse(b"  "), Err(WireError::Empty));
        assert!(matches!(RequestPeek::parse(b"{\"model\":"), Err(WireError::Malformed(_))));
        assert!(matches!(RequestPeek::parse(b"[1"), Err(WireError::Malformed(_))));
        assert!(matches!(RequestPeek::parse(br#"{"model":1}"#), Err(WireError::Malformed(_))));
        assert!(matches!(RequestPeek::parse(br#"{"stream":"yes"}"#), Err(WireError::Malformed(_))));
    }

    #[test]
    fn only_objects_are_requests() {
        for (body, what) in [
            (&b"[]"[..], "an array"),
            (b" [\"llama3.2\"] ", "an array"),
            (b"\"x\"", "a string"),
            (b"1", "a number"),
            (b"-2.5e3", "a number"),
            (b"null", "null"),
            (b"true", "a boolean"),
        ] {
            let got = RequestPeek::parse(body);
            assert_eq!(got, Err(WireError::NotObject(what)), "{}", String::from_utf8_lossy(body));
        }
        let message = WireError::NotObject("an array").to_string();
        assert!(message.starts_with("request body must be a JSON object, not an array"), "{message}");
        assert!(matches!(RequestPeek::parse(b"nope"), Err(WireError::Malformed(_))));
    }

    #[test]
    fn bodies_must_be_utf8() {
        let skipped_field = b"{\"model\":\"m\",\"x\":\"\xff\"}";
        assert_eq!(RequestPeek::parse(skipped_field), Err(WireError::NotUtf8 { offset: 18 }));
        assert_eq!(RequestPeek::parse(b"\xfe{}"), Err(WireError::NotUtf8 { offset: 0 }));
        assert!(RequestPeek::parse("{\"model\":\"m\",\"x\":\"\u{e9}\"}".as_bytes()).is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = RequestPeek::parse(&body);
        }

        #[test]
        fn never_panics_on_jsonish(body in r#"[{}\[\]":,a-z0-9 \\]{0,64}"#) {
            let _ = RequestPeek::parse(body.as_bytes());
        }
    }

    #[test]
    fn context_length_is_read_from_model_info() {
        let show = serde_json::json!({"model_info": {"general.architecture": "llama", "llama.context_length": 131072}});
        assert_eq!(context_length(&show), Some(131072));
        assert_eq!(context_length(&serde_json::json!({"model_info": {}})), None);
        assert_eq!(context_length(&serde_json::json!({"error": "model not found"})), None);
    }
}
