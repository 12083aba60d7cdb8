//! Any bytes through the Anthropic ⇄ chat translations: as an SSE stream to both stream
//! translators (and their chain), split at a point taken from the input, and as JSON to the four
//! body translations. Nothing may panic; the stream translators must emit only whole events whose
//! data is JSON (or `[DONE]`), and the split must not change their output.
#![no_main]

use http::StatusCode;
use keel_upstream::translate::anthropic::{
    self, ChatSseToMessagesSse, MessagesSseToChatSse, chat_to_messages_request, chat_to_messages_response,
    messages_to_chat, messages_to_chat_response,
};
use keel_upstream::translate::sse::{SseEvent, SseReader};
use keel_upstream::translate::{Chain, StreamTranslator};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// What the translator emits for `pieces`, and whether it finished cleanly.
fn run(translator: &mut dyn StreamTranslator, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    for piece in pieces {
        for bytes in translator.push(piece) {
            out.extend_from_slice(&bytes);
        }
    }
    let finished = match translator.finish() {
        Ok(last) => {
            out.extend(last.iter().flat_map(|b| b.to_vec()));
            true
        }
        Err(_) => {
            assert!(translator.error().is_some(), "an early end without an error");
            false
        }
    };
    (out, finished)
}

/// The output is whole SSE events with JSON data.
fn assert_well_formed(out: &[u8]) {
    let mut reader = SseReader::new();
    let mut events: Vec<SseEvent> = Vec::new();
    reader.push(out, &mut events).expect("an oversized output event");
    assert_eq!(reader.finish(), None, "output ends inside an event");
    for event in events {
        if event.data != "[DONE]" {
            let value: Value = serde_json::from_str(&event.data).expect("an event whose data is not JSON");
            assert!(value.is_object(), "an event whose data is not an object");
        }
    }
}

fn check(make: impl Fn() -> Box<dyn StreamTranslator>, data: &[u8], cut: usize) {
    let whole = run(&mut *make(), &[data]);
    let split = run(&mut *make(), &[&data[..cut], &data[cut..]]);
    assert_well_formed(&whole.0);
    assert_eq!(whole, split, "the split changed the stream");
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else { return };
    let cut = usize::from(first).min(data.len());
    check(|| Box::new(ChatSseToMessagesSse::new("m".into()).with_id("msg_f".into())), data, cut);
    check(|| Box::new(MessagesSseToChatSse::new().with_created(0)), data, cut);
    check(
        || {
            Box::new(Chain::new(
                MessagesSseToChatSse::new().with_created(0),
                ChatSseToMessagesSse::new("m".into()).with_id("msg_f".into()),
            ))
        },
        data,
        cut,
    );
    let status = StatusCode::from_u16(400 + u16::from(first % 200)).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = anthropic::error_to_anthropic(status, data);
    assert!(serde_json::from_slice::<Value>(&body).is_ok());
    let _ = anthropic::anthropic_error_message(data);
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let _ = messages_to_chat(&value);
        let _ = chat_to_messages_request(&value);
        let _ = chat_to_messages_response(&value, "m");
        let _ = messages_to_chat_response(&value);
    }
});
