//! Any bytes, as a client's request body or an upstream's answer: keel's wire parsers must not
//! panic and must finish; the SSE → NDJSON converter must only ever emit whole JSON lines, and
//! the same bytes fed in two different splits must give the same lines. As an upstream's HTTP/1.1
//! response (head and body), they must read the same whatever the split.
#![no_main]

use keel_upstream::RequestPeek;
use keel_upstream::translate::{self, OllamaEndpoint, SseToNdjson};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Every line the converter emits: one JSON value ending in `\n`.
fn assert_json_lines(chunks: &[bytes::Bytes]) -> Vec<u8> {
    let mut all = Vec::new();
    for chunk in chunks {
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            assert_eq!(line.last(), Some(&b'\n'), "an NDJSON line without its newline");
            let value: Value = serde_json::from_slice(line).expect("an NDJSON line that is not JSON");
            assert!(value.is_object(), "an NDJSON line that is not an object: {value}");
        }
        all.extend_from_slice(chunk);
    }
    all
}

/// Converts `data` as an SSE stream fed in pieces of `step` bytes; returns what the client gets.
fn convert(endpoint: OllamaEndpoint, data: &[u8], step: usize) -> Vec<u8> {
    let mut converter = SseToNdjson::new(endpoint, "m".to_owned());
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        out.extend(converter.push(piece));
    }
    if let Ok(Some(last)) = converter.finish() {
        out.push(last);
    }
    assert_json_lines(&out)
}

/// `created_at` is the time of conversion: equal streams may differ only there.
fn without_timestamps(ndjson: &[u8]) -> Vec<Value> {
    ndjson
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .map(|mut value| {
            if let Some(object) = value.as_object_mut() {
                object.remove("created_at");
            }
            value
        })
        .collect()
}

/// The response `data` reads as, compared across splits (an error is an error, whichever limit
/// a split reaches first).
fn response(data: &[u8], step: usize) -> Result<Option<(u16, Vec<u8>)>, ()> {
    keel_upstream::read_response(data, &http::Method::POST, step)
        .map(|read| read.map(|(head, body)| (head.status().as_u16(), body)))
        .map_err(drop)
}

fuzz_target!(|data: &[u8]| {
    let _ = RequestPeek::parse(data);
    assert_eq!(response(data, data.len()), response(data, 1), "the split changed the response");
    let status = data.first().map_or(500, |b| 400 + u16::from(*b));
    let _ = translate::openai_error_to_ollama(status, data);
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let _ = translate::ollama_chat_to_openai(&value);
        let _ = translate::ollama_generate_to_openai(&value);
        for endpoint in [OllamaEndpoint::Chat, OllamaEndpoint::Generate] {
            let _ = translate::ollama_preload_response(endpoint, &value);
            let _ = translate::openai_response_to_ollama(endpoint, &value, "m", None);
        }
    }
    for endpoint in [OllamaEndpoint::Chat, OllamaEndpoint::Generate] {
        let whole = convert(endpoint, data, data.len());
        let bytewise = convert(endpoint, data, 1);
        assert_eq!(without_timestamps(&whole), without_timestamps(&bytewise), "the split changed the stream");
    }
});
