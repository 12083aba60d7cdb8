//! Any bytes, as a Responses request, a chat completion, or a chat-completion SSE stream: the
//! Responses translation must not panic and must finish; the stream converter must emit only
//! whole, named, numbered events, and the same bytes fed in two splits must give the same events.
#![no_main]

use bytes::Bytes;
use keel_upstream::translate::responses::{self, ChatSseToResponsesSse, ResponseIdentity};
use keel_upstream::translate::sse::SseReader;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Converts `data` fed in the given pieces; returns what the client gets.
fn convert(request: &Value, pieces: &[&[u8]]) -> Vec<u8> {
    let identity = ResponseIdentity::fixed("resp_fuzz", 0);
    let mut converter = ChatSseToResponsesSse::new(request, "m").with_identity(identity);
    let mut out: Vec<Bytes> = Vec::new();
    for piece in pieces {
        out.extend(converter.push(piece));
    }
    match converter.finish() {
        Ok(last) => out.extend(last),
        Err(err) => out.push(converter.error_event(&err.to_string())),
    }
    assert!(converter.is_finished(), "the stream did not end");
    out.concat()
}

/// Every event: JSON whose `type` is the event's name, numbered from 0.
fn assert_events(bytes: &[u8]) {
    let mut reader = SseReader::new();
    let mut events = Vec::new();
    reader.push(bytes, &mut events).expect("an oversize event");
    assert!(reader.finish().is_none(), "an event without its blank line");
    for (n, event) in events.iter().enumerate() {
        let value: Value = serde_json::from_str(&event.data).expect("an event that is not JSON");
        assert_eq!(event.event.as_deref(), value["type"].as_str(), "an event named unlike its type");
        assert_eq!(value["sequence_number"].as_u64(), Some(n as u64), "a sequence number out of order");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let _ = responses::responses_to_chat(&value);
        let request = json!({"model": "m", "input": "x"});
        if let Ok(response) = responses::chat_to_responses_response(&value, &request, "m") {
            let text = responses::response_output_text(&response).unwrap_or_default();
            let fixed = responses::with_output_text(&response, &text);
            assert_eq!(responses::response_output_text(&fixed).unwrap_or_default(), text);
        }
        let _ = responses::response_output_text(&value);
        let _ = responses::with_output_text(&value, "{}");
        let _ = responses::text_format_schema(&value);
    }
    let request = json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}]});
    let at = data.first().map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let whole = convert(&request, &[data]);
    assert_events(&whole);
    assert_eq!(whole, convert(&request, &[&data[..at], &data[at..]]), "the split changed the stream");
});
