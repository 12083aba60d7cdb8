//! [`KeyStore`] on the Redis store, on its connection and under its prefix `P`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P apikeys` | hash | name → the key as JSON, for the keys not revoked |
//! | `P apikeys:revoked` | list | `REVOKED_AT JSON` per revoked key, in the order revoked |
//!
//! Creating is one `HSETNX` (so a name is taken once, atomically across keel instances);
//! revoking one script that moves the entry from the hash to the list; `active_keys` one `HVALS`.

use std::sync::LazyLock;

use redis::Script;
use serde::{Deserialize, Serialize};

use super::{KeyStore, NewKey, StoredKey, check_key_name, check_new_key};
use crate::StoreError;
use crate::redis_store::{RedisStore, corrupt, redis_error};
use crate::store::{StoreFuture, now_millis};

/// `KEYS` active hash, revoked list; `ARGV` name, now. Returns 1 if the key was revoked.
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[2] .. ' ' .. stored)
return 1
",
    )
});

/// A key as stored in JSON (the hash as lowercase hex).
#[derive(Debug, Serialize, Deserialize)]
struct KeyJson {
    name: String,
    hash: String,
    prefix: String,
    scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requests_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<String>,
    created_at: i64,
}

impl KeyJson {
    fn encode(key: &StoredKey) -> Result<String, StoreError> {
        let json = KeyJson {
            name: key.name.clone(),
            hash: key.hash.iter().map(|b| format!("{b:02x}")).collect(),
            prefix: key.prefix.clone(),
            scopes: key.scopes.clone(),
            requests_per_minute: key.requests_per_minute,
            tokens_per_minute: key.tokens_per_minute,
            priority: key.priority.clone(),
            created_at: key.created_at,
        };
        serde_json::to_string(&json).map_err(|e| StoreError::InvalidInput(format!("key cannot be stored: {e}")))
    }

    fn decode(json: &str, revoked_at: Option<i64>) -> Result<StoredKey, StoreError> {
        let key: KeyJson = serde_json::from_str(json).map_err(|e| corrupt(format!("API key {json:?}: {e}")))?;
        let hash = decode_hex(&key.hash).ok_or_else(|| corrupt(format!("API key '{}' has a bad hash", key.name)))?;
        Ok(StoredKey {
            name: key.name,
            hash,
            prefix: key.prefix,
            scopes: key.scopes,
            requests_per_minute: key.requests_per_minute,
            tokens_per_minute: key.tokens_per_minute,
            priority: key.priority,
            created_at: key.created_at,
            revoked_at,
        })
    }

    /// A revoked list entry, `REVOKED_AT JSON`.
    fn decode_revoked(entry: &str) -> Result<StoredKey, StoreError> {
        let (at, json) = entry.split_once(' ').ok_or_else(|| corrupt(format!("revoked API key {entry:?}")))?;
        let at = at.parse().map_err(|_| corrupt(format!("revoked API key with time {at:?}")))?;
        KeyJson::decode(json, Some(at))
    }
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0_u8; 32];
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

impl RedisStore {
    fn active_keys_key(&self) -> String {
        format!("{}apikeys", self.prefix)
    }

    fn revoked_keys_key(&self) -> String {
        format!("{}apikeys:revoked", self.prefix)
    }
}

impl KeyStore for RedisStore {
    fn create_key(&self, new: NewKey) -> StoreFuture<'_, StoredKey> {
        Box::pin(async move {
            let key = check_new_key(new)?.into_stored(now_millis());
            let created: i64 = redis::cmd("HSETNX")
                .arg(self.active_keys_key())
                .arg(&key.name)
                .arg(KeyJson::encode(&key)?)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if created == 0 {
                return Err(StoreError::KeyExists { name: key.name });
            }
            Ok(key)
        })
    }

    fn list_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(async move {
            let (active, revoked): (Vec<String>, Vec<String>) = redis::pipe()
                .atomic()
                .cmd("HVALS")
                .arg(self.active_keys_key())
                .cmd("LRANGE")
                .arg(self.revoked_keys_key())
                .arg(0)
                .arg(-1)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            let mut keys = active
                .iter()
                .map(|json| KeyJson::decode(json, None))
                .chain(revoked.iter().map(|entry| KeyJson::decode_revoked(entry)))
                .collect::<Result<Vec<_>, _>>()?;
            // The order of the SQL backends: created, then name, a revoked key before an active one.
            keys.sort_by(|a, b| {
                (a.created_at, &a.name, a.revoked_at.is_none()).cmp(&(b.created_at, &b.name, b.revoked_at.is_none()))
            });
            Ok(keys)
        })
    }

    fn revoke_key<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_key_name(name)?;
            let revoked: i64 = REVOKE
                .key(self.active_keys_key())
                .key(self.revoked_keys_key())
                .arg(name)
                .arg(now_millis())
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            Ok(revoked == 1)
        })
    }

    fn active_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(async move {
            let values: Vec<String> = redis::cmd("HVALS")
                .arg(self.active_keys_key())
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            let mut keys = values.iter().map(|json| KeyJson::decode(json, None)).collect::<Result<Vec<_>, _>>()?;
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(keys)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_json() {
        let key = NewKey::new("ci", "keel_abc").with_requests_per_minute(5).with_priority("batch").into_stored(7);
        let json = KeyJson::encode(&key).unwrap();
        assert_eq!(KeyJson::decode(&json, None).unwrap(), key);
        let revoked = KeyJson::decode_revoked(&format!("9 {json}")).unwrap();
        assert_eq!(revoked, StoredKey { revoked_at: Some(9), ..key });
        assert!(KeyJson::decode_revoked(&json).is_err());
        assert_eq!(decode_hex("00"), None);
    }
}
