//! API keys kept in keel's store: the [`KeyStore`] trait, its data ([`NewKey`], [`StoredKey`])
//! and the secret helpers ([`generate_secret`], [`hash_secret`]).
//!
//! A key is a name, the SHA-256 hash of a secret, the secret's first characters (to recognise it
//! in lists), scopes, optional limits and a priority. The secret itself is never stored: it is
//! shown once when the key is made, and a request's secret is checked by hashing it
//! ([`StoredKey::verify`], or a map from [`StoredKey::hash`] to key).
//!
//! Each backend keeps keys beside its sessions, on the same connection(s):
//!
//! - SQLite and PostgreSQL: a table `api_keys` (migration 3), one row per key; a revoked key keeps
//!   its row with `revoked_at` set, and a partial unique index makes names unique among the keys
//!   not revoked.
//! - Redis: the hash `P apikeys` (name → the key as JSON) holds the keys not revoked, and the list
//!   `P apikeys:revoked` holds `REVOKED_AT JSON` entries, `P` being the store's prefix.
//!
//! Scopes, the priority and limits are kept as given; what they mean (`inference`, `admin`,
//! `models`; `interactive`, `normal`, `batch`) is the gateway's business.

mod postgres;
mod redis;
mod sqlite;

use std::fmt;
use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use crate::StoreError;
use crate::store::{StoreFuture, check_name};

/// What every secret made by [`generate_secret`] starts with.
pub const SECRET_PREFIX: &str = "keel_";

/// How many characters of a secret a key keeps as its [`StoredKey::prefix`].
pub const PREFIX_LEN: usize = 8;

/// The longest [`NewKey::prefix`] a store accepts, in characters: a guard against storing (most
/// of) a secret by mistake.
pub const MAX_PREFIX_LEN: usize = 16;

/// The scope of a key made by [`NewKey::new`]: calling the model endpoints.
pub const DEFAULT_SCOPE: &str = "inference";

/// API keys kept in keel's store, shared by every keel instance using the store.
///
/// Every method is one atomic step of the backend. A name belongs to at most one key that is not
/// revoked; once that key is revoked the name may be given to a new key, and the revoked one
/// stays listed. Obtain one with [`open_with_keys`](crate::open_with_keys) or
/// [`open_key_store`](crate::open_key_store).
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Stores a new key and returns it (with `created_at` set); [`StoreError::KeyExists`] if a
    /// key of this name is not revoked, [`StoreError::InvalidInput`] for a bad name, prefix,
    /// scope, limit or priority (see [`NewKey`]).
    fn create_key(&self, new: NewKey) -> StoreFuture<'_, StoredKey>;

    /// Every key, revoked ones too, oldest first (by `created_at`, then name).
    fn list_keys(&self) -> StoreFuture<'_, Vec<StoredKey>>;

    /// Revokes the key of this name; `false` if no key of this name is active (none, or only
    /// revoked ones). A revoked key is no longer in [`KeyStore::active_keys`].
    fn revoke_key<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool>;

    /// The keys not revoked, by name: what a gateway accepts. One cheap read (a query on an
    /// index, one `HVALS`), meant to be polled every few hundred milliseconds.
    fn active_keys(&self) -> StoreFuture<'_, Vec<StoredKey>>;
}

/// A key to store: [`StoredKey`] without its timestamps.
///
/// Checked by [`KeyStore::create_key`]: the name is 1 to 255 bytes without control characters
/// (like a participant's name); the prefix 1 to [`MAX_PREFIX_LEN`] characters without control
/// characters; at least one scope, each 1 to 255 bytes without whitespace or control characters
/// (repeats are dropped); limits at least 1; the priority like a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The key's name, unique among the keys not revoked (e.g. the agent or team using it).
    pub name: String,
    /// The SHA-256 hash of the secret ([`hash_secret`]).
    pub hash: [u8; 32],
    /// The first characters of the secret, to recognise it in lists.
    pub prefix: String,
    /// What the key may do (`inference`, `admin`, `models`; checked by the gateway).
    pub scopes: Vec<String>,
    /// Requests per minute allowed; `None` for no limit of the key's own.
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute allowed; `None` for no limit of the key's own.
    pub tokens_per_minute: Option<u64>,
    /// The priority of its requests (`interactive`, `normal`, `batch`); `None` for the default.
    pub priority: Option<String>,
}

impl NewKey {
    /// A key named `name` for `secret` (hashed, and its first [`PREFIX_LEN`] characters kept),
    /// with the scope [`DEFAULT_SCOPE`], no limits and the default priority.
    pub fn new(name: impl Into<String>, secret: &str) -> Self {
        NewKey {
            name: name.into(),
            hash: hash_secret(secret),
            prefix: secret_prefix(secret),
            scopes: vec![DEFAULT_SCOPE.to_owned()],
            requests_per_minute: None,
            tokens_per_minute: None,
            priority: None,
        }
    }

    /// Replaces the scopes.
    #[must_use]
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the requests-per-minute limit.
    #[must_use]
    pub fn with_requests_per_minute(mut self, limit: u64) -> Self {
        self.requests_per_minute = Some(limit);
        self
    }

    /// Sets the tokens-per-minute limit.
    #[must_use]
    pub fn with_tokens_per_minute(mut self, limit: u64) -> Self {
        self.tokens_per_minute = Some(limit);
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: impl Into<String>) -> Self {
        self.priority = Some(priority.into());
        self
    }

    /// The stored key, created at `created_at`.
    pub(crate) fn into_stored(self, created_at: i64) -> StoredKey {
        StoredKey {
            name: self.name,
            hash: self.hash,
            prefix: self.prefix,
            scopes: self.scopes,
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            priority: self.priority,
            created_at,
            revoked_at: None,
        }
    }
}

/// An API key as the store keeps it: no secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key's name.
    pub name: String,
    /// The SHA-256 hash of the secret.
    pub hash: [u8; 32],
    /// The first characters of the secret, to recognise it in lists.
    pub prefix: String,
    /// What the key may do.
    pub scopes: Vec<String>,
    /// Requests per minute allowed, if the key has its own limit.
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute allowed, if the key has its own limit.
    pub tokens_per_minute: Option<u64>,
    /// The priority of its requests, if not the default.
    pub priority: Option<String>,
    /// When it was created, unix milliseconds (UTC).
    pub created_at: i64,
    /// When it was revoked, unix milliseconds (UTC); `None` while it is active.
    pub revoked_at: Option<i64>,
}

impl StoredKey {
    /// Whether `secret` is this key's secret (hashes compared without an early exit).
    pub fn verify(&self, secret: &str) -> bool {
        let hash = hash_secret(secret);
        hash.iter().zip(&self.hash).fold(0_u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }

    /// Whether the key has this scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the key was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A new secret: [`SECRET_PREFIX`] and 32 random bytes (from the thread's CSPRNG) as lowercase
/// hex, 69 characters in all. Show it once; store only [`hash_secret`] of it.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut secret = String::with_capacity(SECRET_PREFIX.len() + 64);
    secret.push_str(SECRET_PREFIX);
    for byte in bytes {
        let _ = write!(secret, "{byte:02x}");
    }
    secret
}

/// The SHA-256 hash of a secret, as [`StoredKey::hash`] holds it.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The first [`PREFIX_LEN`] characters of `secret`.
fn secret_prefix(secret: &str) -> String {
    secret.chars().take(PREFIX_LEN).collect()
}

/// Checks a key's name (the rules of a participant's name).
pub(crate) fn check_key_name(name: &str) -> Result<(), StoreError> {
    check_name("key name", name)
}

/// Checks a key to store and returns it with repeated scopes dropped.
pub(crate) fn check_new_key(mut key: NewKey) -> Result<NewKey, StoreError> {
    check_key_name(&key.name)?;
    check_name("key prefix", &key.prefix)?;
    if key.prefix.chars().count() > MAX_PREFIX_LEN {
        return Err(StoreError::InvalidInput(format!(
            "key prefix must be at most {MAX_PREFIX_LEN} characters (only the start of the secret is kept)"
        )));
    }
    if key.scopes.is_empty() {
        return Err(StoreError::InvalidInput(format!("key '{}' needs at least one scope", key.name)));
    }
    let mut scopes: Vec<String> = Vec::with_capacity(key.scopes.len());
    for scope in key.scopes {
        check_name("scope", &scope)?;
        if scope.chars().any(char::is_whitespace) {
            return Err(StoreError::InvalidInput(format!("scope '{scope}' must not contain whitespace")));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    key.scopes = scopes;
    for (what, limit) in
        [("requests per minute", key.requests_per_minute), ("tokens per minute", key.tokens_per_minute)]
    {
        if let Some(limit) = limit
            && (limit == 0 || i64::try_from(limit).is_err())
        {
            return Err(StoreError::InvalidInput(format!(
                "{what} must be 1 to {} (leave it unset for no limit; revoke a key to stop it), got {limit}",
                i64::MAX
            )));
        }
    }
    if let Some(priority) = &key.priority {
        check_name("priority", priority)?;
    }
    Ok(key)
}

/// A limit as the SQL backends store it (checked to fit by [`check_new_key`]).
pub(crate) fn limit_to_i64(limit: Option<u64>) -> Option<i64> {
    limit.map(|limit| i64::try_from(limit).unwrap_or(i64::MAX))
}

/// The columns of `api_keys`, in the order every query selects them.
pub(crate) const KEY_COLUMNS: &str =
    "name, hash, prefix, scopes, requests_per_minute, tokens_per_minute, priority, created_at, revoked_at";

/// An `api_keys` row as the SQL backends read it.
#[derive(Debug)]
pub(crate) struct KeyRow {
    pub(crate) name: String,
    pub(crate) hash: Vec<u8>,
    pub(crate) prefix: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) requests_per_minute: Option<i64>,
    pub(crate) tokens_per_minute: Option<i64>,
    pub(crate) priority: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) revoked_at: Option<i64>,
}

impl KeyRow {
    /// The row checked into a [`StoredKey`].
    pub(crate) fn into_key(self, backend: &'static str) -> Result<StoredKey, StoreError> {
        let name = self.name;
        let corrupt = |what: String| StoreError::Corrupt { backend, message: format!("API key '{name}': {what}") };
        let hash = <[u8; 32]>::try_from(self.hash.as_slice())
            .map_err(|_| corrupt(format!("hash of {} bytes, not 32", self.hash.len())))?;
        let limit = |what: &str, value: Option<i64>| {
            value.map(|v| u64::try_from(v).map_err(|_| corrupt(format!("negative {what} {v}")))).transpose()
        };
        Ok(StoredKey {
            hash,
            prefix: self.prefix,
            scopes: self.scopes,
            requests_per_minute: limit("requests per minute", self.requests_per_minute)?,
            tokens_per_minute: limit("tokens per minute", self.tokens_per_minute)?,
            priority: self.priority,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_hex_after_the_prefix() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), SECRET_PREFIX.len() + 64);
        let hex = a.strip_prefix(SECRET_PREFIX).unwrap();
        assert!(hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)), "{a}");
    }

    #[test]
    fn hashes_are_sha256() {
        // echo -n abc | sha256sum
        let hex: String = hash_secret("abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn new_keys_keep_the_hash_and_the_start_of_the_secret() {
        let key = NewKey::new("ci", "keel_0123456789");
        assert_eq!(key.prefix, "keel_012");
        assert_eq!(key.scopes, [DEFAULT_SCOPE]);
        let stored = key.into_stored(5);
        assert!(stored.verify("keel_0123456789"));
        assert!(!stored.verify("keel_0123456788"));
        assert!(stored.has_scope("inference") && !stored.has_scope("admin") && !stored.is_revoked());
    }

    #[test]
    fn new_keys_are_checked() {
        let key = || NewKey::new("ci", "keel_x");
        let scopes = check_new_key(key().with_scopes(["admin", "inference", "admin"])).unwrap().scopes;
        assert_eq!(scopes, ["admin", "inference"]);
        assert!(check_new_key(key().with_requests_per_minute(1).with_tokens_per_minute(i64::MAX as u64)).is_ok());
        let bad = [
            NewKey { name: String::new(), ..key() },
            NewKey { name: "a\nb".into(), ..key() },
            NewKey { name: "x".repeat(256), ..key() },
            NewKey { prefix: String::new(), ..key() },
            NewKey { prefix: "keel_0123456789abcdef".into(), ..key() },
            key().with_scopes(Vec::<String>::new()),
            key().with_scopes(["in ference"]),
            key().with_scopes([""]),
            key().with_requests_per_minute(0),
            key().with_tokens_per_minute(u64::MAX),
            key().with_priority(""),
        ];
        for key in bad {
            assert!(matches!(check_new_key(key.clone()), Err(StoreError::InvalidInput(_))), "{key:?}");
        }
    }
}
