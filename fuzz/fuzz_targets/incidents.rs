//! Any bytes as a `POST /keel/events` body or an Alertmanager webhook body: the readers must not
//! panic; what they accept must be events the store would take, and a refusal must say what to
//! send instead.
#![no_main]

use keel_incident::intake::{read_alertmanager, read_events};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for read in [read_events, read_alertmanager] {
        match read(data) {
            Ok(events) => {
                for event in events {
                    assert!(!event.fingerprint.is_empty() && !event.kind.is_empty(), "{event:?}");
                    assert!(event.detail.is_object(), "{event:?}");
                }
            }
            Err(err) => assert!(!err.to_string().trim().is_empty(), "an empty refusal"),
        }
    }
});
