//! Any text as `keel.toml`: the parser and the validation must not panic, and every error must
//! say something (a message a person can act on, never empty).
#![no_main]

use keel_gateway::config::{Config, Overrides, RawConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match RawConfig::parse(text) {
        Err(err) => assert!(!err.to_string().trim().is_empty(), "an empty parse error"),
        // Secrets come from a resolver that knows none; key files may name anything on disk and
        // are only read.
        Ok(raw) => {
            if let Err(err) = Config::from_raw(raw, None, &Overrides::default(), &|_| None) {
                assert!(!err.to_string().trim().is_empty(), "an empty validation error");
            }
        }
    }
});
