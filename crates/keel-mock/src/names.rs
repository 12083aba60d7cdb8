//! Model names, hashing, chunking, embeddings and timestamps: small deterministic helpers.

use std::borrow::Cow;
use std::ops::Range;
use std::time::{Duration, SystemTime};

/// The endpoints faults apply to.
pub(crate) const INFERENCE_ENDPOINTS: [&str; 9] = [
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/responses",
];

/// 2026-01-01T00:00:00Z: the mock's fixed epoch for every timestamp.
pub(crate) const EPOCH_SECS: u64 = 1_767_225_600;

/// Whether the name carries a tag (`:tag` in its last path segment).
fn has_tag(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.contains(':')
}

/// `llama3.2` → `llama3.2:latest`; tagged names unchanged.
pub(crate) fn full_name(name: &str) -> Cow<'_, str> {
    if has_tag(name) { Cow::Borrowed(name) } else { Cow::Owned(format!("{name}:latest")) }
}

/// Whether a request's model name refers to the model whose full name is `full`.
pub(crate) fn name_matches(full: &str, requested: &str) -> bool {
    if has_tag(requested) {
        full.eq_ignore_ascii_case(requested)
    } else {
        full.len() == requested.len() + 7
            && full.ends_with(":latest")
            && full[..requested.len()].eq_ignore_ascii_case(requested)
    }
}

/// FNV-1a, 64 bit.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// SplitMix64 finalizer.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// 64 hex digits, deterministic from `name` (looks like a sha256 digest).
pub(crate) fn digest_hex(name: &str) -> String {
    use std::fmt::Write;
    let seed = fnv1a(name.as_bytes());
    let mut out = String::with_capacity(64);
    for i in 0..4u64 {
        let _ = write!(out, "{:016x}", splitmix(seed ^ i.wrapping_mul(0x1234_5678_9abc_def1)));
    }
    out
}

/// A unit-length vector of `dim` floats, deterministic from `text`.
pub(crate) fn embedding(text: &str, dim: usize) -> Vec<f32> {
    let seed = fnv1a(text.as_bytes());
    let mut v: Vec<f32> = (0..dim as u64)
        .map(|i| {
            let x = splitmix(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // 24 high bits → [-1, 1)
            ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

/// Maximum bytes in one streamed chunk.
const MAX_CHUNK: usize = 16;

/// Splits text into word-sized chunks: whitespace attaches to the following word, so
/// `"Hello from keel"` becomes `"Hello"`, `" from"`, `" keel"`. Concatenation gives the text back.
pub(crate) fn chunk_ranges(s: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_ws = true;
    for (i, c) in s.char_indices() {
        let ws = c.is_whitespace();
        let word_starts_ws = ws && !prev_ws;
        if i > start && (word_starts_ws || i - start >= MAX_CHUNK) {
            out.push(start..i);
            start = i;
        }
        prev_ws = ws;
    }
    if start < s.len() {
        out.push(start..s.len());
    }
    out
}

/// Rough token count: whitespace-separated words, at least 1.
pub(crate) fn word_count(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// RFC 3339 timestamp `secs` seconds and `millis` milliseconds after the mock epoch.
pub(crate) fn timestamp(secs: u64, millis: u64) -> String {
    let t =
        SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS.saturating_add(secs)) + Duration::from_millis(millis);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(full_name("llama3.2"), "llama3.2:latest");
        assert_eq!(full_name("qwen2.5:0.5b"), "qwen2.5:0.5b");
        assert_eq!(full_name("host:5000/ns/m"), "host:5000/ns/m:latest");
        assert!(name_matches("llama3.2:latest", "llama3.2"));
        assert!(name_matches("llama3.2:latest", "llama3.2:latest"));
        assert!(name_matches("llama3.2:latest", "Llama3.2"));
        assert!(!name_matches("llama3.2:latest", "llama3.2:1b"));
        assert!(!name_matches("llama3.2:latest", "llama3"));
        assert!(!name_matches("qwen2.5:0.5b", "qwen2.5"));
    }

    #[test]
    fn chunks_concatenate() {
        for s in [
            "Hello from keel-mock.",
            "",
            " lead and trail ",
            "a\n\nb",
            "averyveryverylongwordthatkeepsgoing ok",
            "héllo wörld ünïcode",
        ] {
            let chunks = chunk_ranges(s);
            let joined: String = chunks.iter().map(|r| &s[r.clone()]).collect();
            assert_eq!(joined, s);
            assert!(chunks.iter().all(|r| !r.is_empty()));
        }
        let s = "Hello from keel";
        let parts: Vec<&str> = chunk_ranges(s).into_iter().map(|r| &s[r]).collect();
        assert_eq!(parts, ["Hello", " from", " keel"]);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello", 16);
        assert_eq!(a, embedding("hello", 16));
        assert_ne!(a, embedding("world", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn digests_and_timestamps() {
        let d = digest_hex("llama3.2:latest");
        assert_eq!(d.len(), 64);
        assert_eq!(d, digest_hex("llama3.2:latest"));
        assert_eq!(timestamp(0, 0), "2026-01-01T00:00:00.000Z");
        assert_eq!(timestamp(61, 5), "2026-01-01T00:01:01.005Z");
    }
}
