//! Human-written durations (`"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`) for configuration files.
//!
//! Use with serde as `#[serde(with = "keel_types::duration")]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses a duration such as `"30s"`, `"5m"` or `"250ms"`. A bare number is rejected: units are
/// required so that `timeout = 30` cannot silently mean milliseconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|err| {
        format!("invalid duration {text:?}: {err} (write it with a unit, e.g. \"30s\", \"5m\", \"250ms\")")
    })
}

/// Formats a duration the way [`parse`] reads it (`"30s"`, `"5m"`, `"250ms"`).
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Serde deserializer for a duration written as a string.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Serde serializer writing a duration as a string.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse(" 1h 30m ").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn rejects_bare_numbers_with_advice() {
        let err = parse("30").unwrap_err();
        assert!(err.contains("\"30s\""), "{err}");
    }

    #[test]
    fn round_trips() {
        for d in [Duration::from_secs(30), Duration::from_millis(1500), Duration::from_secs(600)] {
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
