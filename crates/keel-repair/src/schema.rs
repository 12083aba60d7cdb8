//! Compiled schemas: normalized once, validated with the `jsonschema` crate, cached by their
//! canonical text.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use crate::error::RepairError;

/// How many compiled schemas a cache keeps before it starts over.
pub const DEFAULT_CAPACITY: usize = 256;

/// A schema ready to use: the normalized schema (OpenAPI `nullable` folded into `type`) and its
/// compiled validator.
pub struct CompiledSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Normalizes and compiles `schema`.
    ///
    /// # Errors
    /// [`RepairError::InvalidSchema`] when `schema` is not a valid JSON Schema.
    pub fn compile(schema: &Value) -> Result<Self, RepairError> {
        let mut schema = schema.clone();
        normalize(&mut schema, 0);
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&schema)
            .map_err(|err| RepairError::InvalidSchema { message: err.to_string() })?;
        Ok(Self { schema, validator })
    }

    /// The normalized schema.
    #[must_use]
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Why `value` is not valid (at most `limit` reasons, each with its JSON pointer); empty when
    /// it is.
    #[must_use]
    pub fn problems(&self, value: &Value, limit: usize) -> Vec<String> {
        if self.validator.is_valid(value) {
            return Vec::new();
        }
        self.validator
            .iter_errors(value)
            .take(limit)
            .map(|err| {
                let at = err.instance_path().to_string();
                format!("{err} at {}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect()
    }

    /// True when `value` satisfies the schema.
    #[must_use]
    pub fn is_valid(&self, value: &Value) -> bool {
        self.validator.is_valid(value)
    }
}

/// Folds OpenAPI's `nullable: true` into `type` (and `enum`), which JSON Schema validators do not
/// know.
fn normalize(schema: &mut Value, depth: usize) {
    if depth > 64 {
        return;
    }
    match schema {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                match map.get_mut("type") {
                    Some(Value::String(name)) if name != "null" => {
                        let name = std::mem::take(name);
                        map.insert("type".to_owned(), Value::Array(vec![Value::String(name), "null".into()]));
                    }
                    Some(Value::Array(names)) if !names.iter().any(|n| n == "null") => {
                        names.push("null".into());
                    }
                    _ => {}
                }
                if let Some(Value::Array(allowed)) = map.get_mut("enum")
                    && !allowed.iter().any(Value::is_null)
                {
                    allowed.push(Value::Null);
                }
            }
            for value in map.values_mut() {
                normalize(value, depth + 1);
            }
        }
        Value::Array(items) => {
            for item in items {
                normalize(item, depth + 1);
            }
        }
        _ => {}
    }
}

/// How deep (below the root) the cache key of a schema reads.
const HASH_DEPTH: usize = 1;

/// A structural hash of a JSON value that ignores object key order (equal values hash equal).
///
/// Cheap on purpose (it runs on every repair with a schema): it reads the first
/// [`HASH_DEPTH`] + 1 levels only — a schema's keywords with their scalar values and the names of
/// its properties, not the property schemas (values that differ only deeper share a bucket and
/// are told apart by [`same_value`]) — string bytes mixed eight at a time.
pub(crate) fn structural_hash(value: &Value) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    #[inline]
    fn mix(h: u64, x: u64) -> u64 {
        (h ^ x).wrapping_mul(K).rotate_left(29)
    }
    #[inline]
    fn bytes(h: u64, b: &[u8]) -> u64 {
        let mut h = mix(h, b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for chunk in &mut chunks {
            let word: [u8; 8] = chunk.try_into().unwrap_or_default();
            h = mix(h, u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            for (dst, src) in word.iter_mut().zip(rest) {
                *dst = *src;
            }
            h = mix(h, u64::from_le_bytes(word));
        }
        h
    }
    fn walk(value: &Value, depth: usize) -> u64 {
        if depth > HASH_DEPTH {
            return 0;
        }
        match value {
            Value::Null => 1,
            Value::Bool(b) => 2 + u64::from(*b),
            Value::Number(n) => mix(
                4,
                n.as_u64()
                    .or_else(|| n.as_i64().map(i64::cast_unsigned))
                    .unwrap_or_else(|| n.as_f64().map_or(0, f64::to_bits)),
            ),
            Value::String(s) => bytes(5, s.as_bytes()),
            Value::Array(items) => {
                items.iter().fold(mix(6, items.len() as u64), |h, item| mix(h, walk(item, depth + 1)))
            }
            Value::Object(map) => {
                // Order-insensitive: sum the entries' hashes.
                let sum = map
                    .iter()
                    .fold(0u64, |acc, (k, v)| acc.wrapping_add(mix(bytes(7, k.as_bytes()), walk(v, depth + 1))));
                mix(mix(8, map.len() as u64), sum)
            }
        }
    }
    walk(value, 0)
}

/// `a == b`, fast when objects list their keys in the same order (a schema sent again, as it
/// always is): members are compared pairwise, and only an object whose keys are in another order
/// falls back to `serde_json`'s lookups by key.
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return false;
            }
            for ((ka, va), (kb, vb)) in x.iter().zip(y) {
                if !same_str(ka, kb) {
                    return a == b;
                }
                if !same_value(va, vb) {
                    return false;
                }
            }
            true
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b)),
        (Value::String(x), Value::String(y)) => same_str(x, y),
        _ => a == b,
    }
}

/// `a == b` for strings, without a call into `memcmp` for the short ones (keys and keywords):
/// up to 16 bytes are compared as two overlapping words.
#[inline]
pub(crate) fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..8 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        8..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        _ => a == b,
    }
}

/// `N` bytes of `bytes` from `at`, as a little-endian number (zero past the end).
#[inline]
fn word<const N: usize>(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(at..at + N) {
        word[..N].copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

/// Hashes the cache's keys, which already are hashes ([`structural_hash`]): passes them through.
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).rotate_left(5);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Schemas whose structural hashes collide, each with its compiled form.
type Bucket = Vec<(Value, Arc<CompiledSchema>)>;

/// Compiled schemas shared by every repair, keyed by the schema's value (key order does not
/// matter). Thread-safe; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SchemaCache {
    entries: Mutex<HashMap<u64, Bucket, BuildHasherDefault<KeyHasher>>>,
    capacity: usize,
}

impl Default for SchemaCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl SchemaCache {
    /// A cache that holds up to `capacity` schemas (then it is cleared and refilled).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::default()), capacity: capacity.max(1) }
    }

    /// The compiled form of `schema`, compiling it on first use.
    ///
    /// # Errors
    /// [`RepairError::InvalidSchema`] when `schema` is not a valid JSON Schema.
    pub fn get(&self, schema: &Value) -> Result<Arc<CompiledSchema>, RepairError> {
        let key = structural_hash(schema);
        if let Some(bucket) = self.entries.lock().get(&key)
            && let Some((_, found)) = bucket.iter().find(|(original, _)| same_value(original, schema))
        {
            return Ok(Arc::clone(found));
        }
        // Compile outside the lock: another thread may do the same work once, which is fine.
        let compiled = Arc::new(CompiledSchema::compile(schema)?);
        let mut entries = self.entries.lock();
        if entries.values().map(Vec::len).sum::<usize>() >= self.capacity {
            entries.clear();
        }
        let bucket = entries.entry(key).or_default();
        if !bucket.iter().any(|(original, _)| same_value(original, schema)) {
            bucket.push((schema.clone(), Arc::clone(&compiled)));
        }
        Ok(compiled)
    }

    /// How many schemas are compiled and kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.lock().values().map(Vec::len).sum()
    }

    /// True when no schema is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn same_str_is_string_equality() {
        let words = [
            "",
            "a",
            "b",
            "ab",
            "abc",
            "abd",
            "abcd",
            "abce",
            "abcdefg",
            "abcdefh",
            "bbcdefg",
            "abcdefgh",
            "abcdefgi",
            "abcdefghijklmnop",
            "abcdefghijklmnoq",
            "xbcdefghijklmnop",
            "abcdefghijklmnopq",
            "é",
            "ée",
        ];
        for a in words {
            for b in words {
                assert_eq!(same_str(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn hash_ignores_key_order() {
        let a = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {}}});
        let b = json!({"properties": {"b": {}, "a": {"type": "string"}}, "type": "object"});
        assert_eq!(structural_hash(&a), structural_hash(&b));
        assert_ne!(structural_hash(&a), structural_hash(&json!({"type": "object"})));
        assert_ne!(structural_hash(&json!([1, 2])), structural_hash(&json!([2, 1])));
        assert_ne!(structural_hash(&json!("abcdefgh1")), structural_hash(&json!("abcdefgh2")));
    }

    #[test]
    fn same_value_is_equality() {
        let a = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {}}, "x": [1, 2.5]});
        let b = json!({"properties": {"b": {}, "a": {"type": "string"}}, "type": "object", "x": [1, 2.5]});
        assert!(same_value(&a, &a.clone()));
        assert!(same_value(&a, &b));
        assert!(!same_value(&a, &json!({"type": "object"})));
        assert!(!same_value(&json!({"a": 1, "b": 2}), &json!({"a": 1, "b": 3})));
        assert!(!same_value(&json!({"a": 1, "b": 2}), &json!({"b": 1, "a": 2})));
        assert!(!same_value(&json!([1, 2]), &json!([2, 1])));
    }

    #[test]
    fn cache_compiles_once() {
        let cache = SchemaCache::new(4);
        let a = cache.get(&json!({"type": "integer", "minimum": 0})).unwrap();
        let b = cache.get(&json!({"minimum": 0, "type": "integer"})).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
        assert!(a.is_valid(&json!(3)));
        assert!(!a.problems(&json!(-1), 4).is_empty());
    }

    #[test]
    fn nullable_is_folded_into_type() {
        let compiled = CompiledSchema::compile(&json!({"type": "string", "nullable": true})).unwrap();
        assert!(compiled.is_valid(&Value::Null));
    }

    #[test]
    fn invalid_schema_is_an_error() {
        assert!(matches!(CompiledSchema::compile(&json!({"type": 12})), Err(RepairError::InvalidSchema { .. })));
    }
}
