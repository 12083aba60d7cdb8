//! The API keys keel accepts: `[auth]`'s (secrets from the environment or files) and the keys
//! kept in the store (`keel keys create|list|revoke`).
//!
//! The store's keys are cached in memory as a map from the SHA-256 hash of a secret to the key,
//! swapped whole by [`refresh_loop`] every [`REFRESH_INTERVAL`] (a creation or revocation on any
//! keel sharing the store takes effect here within a second). A request never waits on the store:
//! it hashes the secret it presents and looks it up in the current map. When the store cannot be
//! read, the keys read last stay in force and one warning says so per streak of failures.
//!
//! Keys are required when `[auth]` has keys or the store holds any key, revoked ones included (so
//! revoking the last key does not silently open keel); that is one atomic load per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel_session::{KeyStore, StoreError, StoredKey, hash_secret};
use parking_lot::{Mutex, RwLock};

use crate::config::{ApiKey, KeyLimits, Scope};

/// How often the store's keys are read again.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// The longest one read of the store's keys may take before it counts as a failure.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// A key a request may be admitted with, whichever place it came from.
#[derive(Debug)]
pub(crate) struct Key {
    /// The key's name (never the secret): what logs, metrics and sessions carry.
    pub(crate) name: Arc<str>,
    /// What it may do.
    pub(crate) scopes: Vec<Scope>,
    /// Its own limits and priority.
    pub(crate) limits: KeyLimits,
    /// `keel_requests_by_key_total{key}` for this key.
    pub(crate) requests: metrics::Counter,
}

impl Key {
    fn new(name: &str, scopes: Vec<Scope>, limits: KeyLimits) -> Key {
        let requests = metrics::counter!(keel_telemetry::names::REQUESTS_BY_KEY_TOTAL, "key" => name.to_owned());
        Key { name: Arc::from(name), scopes, limits, requests }
    }
}

/// The store's keys as last read: secret hash → key.
type ByHash = HashMap<[u8; 32], Arc<Key>>;

/// Why a read of the store's keys failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RefreshError {
    /// The store answered with an error.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The store did not answer in time.
    #[error("the store did not answer within {}", keel_types::duration::format(REFRESH_TIMEOUT))]
    TimedOut,
}

/// Every key keel accepts: `[auth]`'s, and the store's as last read.
#[derive(Debug)]
pub(crate) struct ApiKeys {
    /// `[auth]` keys with their secrets, compared in constant time.
    configured: Vec<(String, Arc<Key>)>,
    /// Where the store's keys are read from; `None` for a gateway without a store.
    store: Option<Arc<dyn KeyStore>>,
    /// The store's active keys, swapped whole on each change.
    stored: RwLock<Arc<ByHash>>,
    /// The store holds a key, active or revoked (once true, it stays true).
    store_has_keys: AtomicBool,
    /// The active keys as last read, to rebuild the map only when they change.
    last_read: Mutex<Vec<StoredKey>>,
}

impl ApiKeys {
    /// The `[auth]` keys only: for a gateway without a key store.
    pub(crate) fn configured(keys: &[ApiKey]) -> ApiKeys {
        let configured = keys
            .iter()
            .map(|key| (key.secret.clone(), Arc::new(Key::new(&key.name, key.scopes.clone(), key.limits))))
            .collect();
        ApiKeys {
            configured,
            store: None,
            stored: RwLock::new(Arc::default()),
            store_has_keys: AtomicBool::new(false),
            last_read: Mutex::new(Vec::new()),
        }
    }

    /// The `[auth]` keys and the keys in `store`, read once now.
    pub(crate) async fn with_store(keys: &[ApiKey], store: Arc<dyn KeyStore>) -> Result<ApiKeys, RefreshError> {
        let api_keys = ApiKeys { store: Some(store), ..ApiKeys::configured(keys) };
        api_keys.refresh().await?;
        Ok(api_keys)
    }

    /// Whether a request must present a key: `[auth]` has keys, or the store holds (or held) one.
    pub(crate) fn required(&self) -> bool {
        !self.configured.is_empty() || self.store_has_keys.load(Ordering::Relaxed)
    }

    /// Whether keys may come from the store (so [`ApiKeys::required`] may turn true while keel
    /// runs).
    pub(crate) fn reads_store(&self) -> bool {
        self.store.is_some()
    }

    /// The key whose secret is `presented`: an `[auth]` key (compared in constant time), else a
    /// key in the store (by the secret's SHA-256 hash; the secret itself is never kept).
    pub(crate) fn find(&self, presented: &str) -> Option<Arc<Key>> {
        if let Some((_, key)) =
            self.configured.iter().find(|(secret, _)| constant_time_eq(secret.as_bytes(), presented.as_bytes()))
        {
            return Some(Arc::clone(key));
        }
        let stored = Arc::clone(&self.stored.read());
        if stored.is_empty() {
            return None;
        }
        stored.get(&hash_secret(presented)).cloned()
    }

    /// Reads the store's keys once and puts them in force. On an error the keys read last stay.
    pub(crate) async fn refresh(&self) -> Result<(), RefreshError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let active = within_timeout(store.active_keys()).await?;
        if !active.is_empty() {
            self.store_has_keys.store(true, Ordering::Relaxed);
        } else if !self.store_has_keys.load(Ordering::Relaxed) && !within_timeout(store.list_keys()).await?.is_empty() {
            // Only revoked keys: keys stay required, none is accepted.
            self.store_has_keys.store(true, Ordering::Relaxed);
        }
        let mut last_read = self.last_read.lock();
        if *last_read == active {
            return Ok(());
        }
        let by_hash: ByHash = active.iter().map(|key| (key.hash, Arc::new(resolve(key)))).collect();
        tracing::info!(active = by_hash.len(), "API keys from the store in force");
        for key in active.iter().filter(|key| self.configured.iter().any(|(_, c)| *c.name == *key.name)) {
            tracing::warn!(
                name = %key.name,
                "a key in the store has the name of an [auth] key: they share rate limits, logs and metrics under that name; revoke one and create it again under another name"
            );
        }
        *self.stored.write() = Arc::new(by_hash);
        *last_read = active;
        Ok(())
    }
}

/// `future` (a read of the store), failed after [`REFRESH_TIMEOUT`].
async fn within_timeout<T>(future: impl Future<Output = Result<T, StoreError>>) -> Result<T, RefreshError> {
    match tokio::time::timeout(REFRESH_TIMEOUT, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RefreshError::TimedOut),
    }
}

/// A stored key as requests are admitted with it. Scopes and a priority keel does not know (the
/// store takes any; `keel keys create` only known ones) are left out, with a warning.
fn resolve(key: &StoredKey) -> Key {
    let mut scopes = Vec::with_capacity(key.scopes.len());
    for scope in &key.scopes {
        match Scope::parse(scope) {
            Some(scope) => scopes.push(scope),
            None => tracing::warn!(
                key = %key.name,
                scope = %scope,
                "API key in the store has a scope keel does not know; ignored (scopes are inference, admin and models: \
                 revoke the key and create it again with `keel keys create NAME --scope …`)"
            ),
        }
    }
    let priority = key.priority.as_deref().and_then(|priority| match priority.parse() {
        Ok(priority) => Some(priority),
        Err(_) => {
            tracing::warn!(
                key = %key.name,
                priority,
                "API key in the store has a priority keel does not know; it gets the default (priorities are \
                 interactive, normal and batch)"
            );
            None
        }
    });
    let limits =
        KeyLimits { requests_per_minute: key.requests_per_minute, tokens_per_minute: key.tokens_per_minute, priority };
    Key::new(&key.name, scopes, limits)
}

/// Reads the store's keys every [`REFRESH_INTERVAL`] for as long as keel serves. A failure keeps
/// the keys read last and is logged once per streak, and once more when the store answers again.
pub(crate) async fn refresh_loop(keys: Arc<ApiKeys>) {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match keys.refresh().await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("API keys are read from the store again: new and revoked keys take effect");
            }
            Ok(()) => {}
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(
                    error = %err,
                    "cannot read the API keys in the store: the keys read last stay in force, so keys created or \
                     revoked since wait until the store answers again; check that the store ([store] url) is \
                     reachable"
                );
            }
            Err(_) => {}
        }
    }
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use keel_session::{NewKey, StoreFuture};

    use super::*;

    /// A key store that fails while `failing` is set.
    #[derive(Debug, Default)]
    struct Flaky {
        keys: Mutex<Vec<StoredKey>>,
        failing: AtomicBool,
        reads: AtomicUsize,
    }

    impl Flaky {
        fn read(&self) -> Result<Vec<StoredKey>, StoreError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            if self.failing.load(Ordering::Relaxed) {
                return Err(StoreError::Unavailable { backend: "sqlite", message: "down".into() });
            }
            Ok(self.keys.lock().clone())
        }
    }

    impl KeyStore for Flaky {
        fn create_key(&self, new: NewKey) -> StoreFuture<'_, StoredKey> {
            let key = StoredKey {
                name: new.name,
                hash: new.hash,
                prefix: new.prefix,
                scopes: new.scopes,
                requests_per_minute: new.requests_per_minute,
                tokens_per_minute: new.tokens_per_minute,
                priority: new.priority,
                created_at: 1,
                revoked_at: None,
            };
            self.keys.lock().push(key.clone());
            Box::pin(async move { Ok(key) })
        }

        fn list_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
            let read = self.read();
            Box::pin(async move { read })
        }

        fn revoke_key<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
            let mut keys = self.keys.lock();
            let found = keys.iter_mut().find(|k| k.name == name && k.revoked_at.is_none());
            let revoked = found.map(|k| k.revoked_at = Some(2)).is_some();
            Box::pin(async move { Ok(revoked) })
        }

        fn active_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
            let read = self.read().map(|keys| keys.into_iter().filter(|k| k.revoked_at.is_none()).collect());
            Box::pin(async move { read })
        }
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_keys_read_last() {
        let store = Arc::new(Flaky::default());
        store
            .create_key(
                NewKey::new("ci", "keel_secret_one")
                    .with_scopes(["inference", "admin", "unknown"])
                    .with_requests_per_minute(7)
                    .with_priority("batch"),
            )
            .await
            .unwrap();
        let keys = ApiKeys::with_store(&[], Arc::clone(&store) as Arc<dyn KeyStore>).await.unwrap();
        assert!(keys.required() && keys.reads_store());
        let key = keys.find("keel_secret_one").unwrap();
        assert_eq!(&*key.name, "ci");
        assert_eq!(key.scopes, [Scope::Inference, Scope::Admin]);
        assert_eq!(key.limits.requests_per_minute, Some(7));
        assert_eq!(key.limits.priority, Some(keel_admission::Priority::Batch));
        assert!(keys.find("keel_secret_two").is_none());

        // The store goes down, and meanwhile a key is revoked and another created: the last good
        // set stays in force.
        store.failing.store(true, Ordering::Relaxed);
        store.revoke_key("ci").await.unwrap();
        store.create_key(NewKey::new("new", "keel_secret_two")).await.unwrap();
        assert!(keys.refresh().await.is_err());
        assert!(keys.find("keel_secret_one").is_some());
        assert!(keys.find("keel_secret_two").is_none());
        assert!(keys.required());

        // Back up: the revocation and the new key take effect.
        store.failing.store(false, Ordering::Relaxed);
        keys.refresh().await.unwrap();
        assert!(keys.find("keel_secret_one").is_none());
        assert_eq!(&*keys.find("keel_secret_two").unwrap().name, "new");
    }

    #[tokio::test]
    async fn keys_are_required_once_the_store_held_one() {
        let store = Arc::new(Flaky::default());
        let keys = ApiKeys::with_store(&[], Arc::clone(&store) as Arc<dyn KeyStore>).await.unwrap();
        assert!(!keys.required());
        store.create_key(NewKey::new("a", "keel_secret_a")).await.unwrap();
        store.revoke_key("a").await.unwrap();
        keys.refresh().await.unwrap();
        // Only a revoked key: required, and nothing is accepted.
        assert!(keys.required());
        assert!(keys.find("keel_secret_a").is_none());
        // A fresh keel on the same store sees it the same way, with one read of every key.
        let reads = store.reads.load(Ordering::Relaxed);
        let fresh = ApiKeys::with_store(&[], Arc::clone(&store) as Arc<dyn KeyStore>).await.unwrap();
        assert!(fresh.required());
        assert_eq!(store.reads.load(Ordering::Relaxed), reads + 2);
    }

    #[test]
    fn configured_keys_match_exactly() {
        let keys = ApiKeys::configured(&[ApiKey {
            name: "a".into(),
            secret: "secret-one".into(),
            scopes: vec![Scope::Inference],
            limits: KeyLimits::default(),
        }]);
        assert!(keys.required() && !keys.reads_store());
        assert!(keys.find("secret-one").is_some());
        assert!(keys.find("secret-on").is_none());
        assert!(keys.find("secret-onf").is_none());
        assert!(!ApiKeys::configured(&[]).required());
    }
}
