//! The [`KeyStore`] suite, run against every backend: `sqlite_keys::*`, `postgres_keys::*` and
//! `redis_keys::*`.
//!
//! Each test gets its own store (see `tests/backends/mod.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

#[macro_use]
mod backends;

use std::future::Future;
use std::sync::Arc;

use keel_session::{
    DEFAULT_SCOPE, KeyStore, NewKey, NewSession, PREFIX_LEN, Store, StoreError, StoredKey, generate_secret,
    hash_secret, now_millis, open_key_store, open_with_keys,
};

use crate::backends::Backend;

/// What a case gets: the key store, the session store of the same backend object, and the URL.
struct Ctx {
    keys: Arc<dyn KeyStore>,
    sessions: Arc<dyn Store>,
    url: String,
}

/// Runs `case` on a fresh store of `backend` (see [`backends::run`]).
async fn run<F, Fut>(backend: Backend, name: &str, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let open = |url: String| async move {
        let (sessions, keys) = open_with_keys(&url).await?;
        assert_eq!(sessions.backend(), format!("{backend:?}").to_lowercase());
        Ok(Ctx { keys, sessions, url })
    };
    backends::run(backend, name, open, case).await;
}

backend_suite!(sqlite_keys, postgres_keys, redis_keys:
    created_keys_are_listed_with_their_prefix_and_no_secret,
    a_taken_name_is_refused,
    revoked_keys_leave_the_active_list_and_stay_listed,
    revoking_an_unknown_key_is_false,
    a_revoked_name_can_be_given_again,
    limits_and_priority_round_trip,
    bad_input_is_refused,
    secrets_are_verified_by_their_hash,
    another_store_on_the_url_sees_the_keys,
    concurrent_creates_of_one_name_have_one_winner,
    keys_and_sessions_share_the_store,
);

mod cases {
    use super::*;

    fn names(keys: &[StoredKey]) -> Vec<&str> {
        keys.iter().map(|key| key.name.as_str()).collect()
    }

    pub(crate) async fn created_keys_are_listed_with_their_prefix_and_no_secret(ctx: Ctx) {
        let secret = generate_secret();
        let before = now_millis();
        let created = ctx.keys.create_key(NewKey::new("ci-bot", &secret)).await.unwrap();
        assert_eq!(created.name, "ci-bot");
        assert_eq!(created.prefix, secret[..PREFIX_LEN]);
        assert_eq!(created.hash, hash_secret(&secret));
        assert_eq!(created.scopes, [DEFAULT_SCOPE]);
        assert!(created.created_at >= before - 1_000 && created.created_at <= now_millis() + 1_000);
        assert_eq!(created.revoked_at, None);

        let listed = ctx.keys.list_keys().await.unwrap();
        assert_eq!(listed, std::slice::from_ref(&created));
        assert_eq!(ctx.keys.active_keys().await.unwrap(), [created]);
        // Nothing of what is stored holds the secret (beyond its first characters).
        let shown = format!("{listed:?}");
        assert!(!shown.contains(&secret[PREFIX_LEN..PREFIX_LEN + 16]), "{shown}");
    }

    pub(crate) async fn a_taken_name_is_refused(ctx: Ctx) {
        ctx.keys.create_key(NewKey::new("a", &generate_secret())).await.unwrap();
        let error = ctx.keys.create_key(NewKey::new("a", &generate_secret())).await.unwrap_err();
        assert_eq!(error, StoreError::KeyExists { name: "a".into() });
        assert_eq!(error.kind(), "key_exists");
        assert_eq!(names(&ctx.keys.list_keys().await.unwrap()), ["a"]);
        // Names are exact: another spelling is another key.
        ctx.keys.create_key(NewKey::new("A", &generate_secret())).await.unwrap();
        assert_eq!(names(&ctx.keys.active_keys().await.unwrap()), ["A", "a"]);
    }

    pub(crate) async fn revoked_keys_leave_the_active_list_and_stay_listed(ctx: Ctx) {
        let a = ctx.keys.create_key(NewKey::new("a", &generate_secret())).await.unwrap();
        let b = ctx.keys.create_key(NewKey::new("b", &generate_secret())).await.unwrap();
        let before = now_millis();
        assert!(ctx.keys.revoke_key("a").await.unwrap());
        assert_eq!(ctx.keys.active_keys().await.unwrap(), std::slice::from_ref(&b));
        let listed = ctx.keys.list_keys().await.unwrap();
        assert_eq!(names(&listed), ["a", "b"]);
        let revoked_at = listed[0].revoked_at.expect("a is listed as revoked");
        assert!(revoked_at >= before - 1_000 && revoked_at <= now_millis() + 1_000);
        assert!(listed[0].is_revoked());
        assert_eq!(StoredKey { revoked_at: None, ..listed[0].clone() }, a);
        assert_eq!(listed[1], b);
        // A second revoke finds nothing active.
        assert!(!ctx.keys.revoke_key("a").await.unwrap());
        assert_eq!(ctx.keys.list_keys().await.unwrap()[0].revoked_at, Some(revoked_at));
    }

    pub(crate) async fn revoking_an_unknown_key_is_false(ctx: Ctx) {
        assert!(!ctx.keys.revoke_key("nobody").await.unwrap());
        ctx.keys.create_key(NewKey::new("somebody", &generate_secret())).await.unwrap();
        assert!(!ctx.keys.revoke_key("nobody").await.unwrap());
        assert_eq!(ctx.keys.active_keys().await.unwrap().len(), 1);
        assert!(ctx.keys.list_keys().await.unwrap().iter().all(|key| !key.is_revoked()));
    }

    pub(crate) async fn a_revoked_name_can_be_given_again(ctx: Ctx) {
        let (old_secret, new_secret) = (generate_secret(), generate_secret());
        ctx.keys.create_key(NewKey::new("agent", &old_secret)).await.unwrap();
        assert!(ctx.keys.revoke_key("agent").await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let new = ctx.keys.create_key(NewKey::new("agent", &new_secret).with_scopes(["admin"])).await.unwrap();
        assert_eq!(ctx.keys.active_keys().await.unwrap(), std::slice::from_ref(&new));
        let listed = ctx.keys.list_keys().await.unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed[0].is_revoked() && listed[0].verify(&old_secret) && !listed[0].verify(&new_secret));
        assert_eq!(listed[1], new);
        // The new one is taken again until revoked.
        let error = ctx.keys.create_key(NewKey::new("agent", &generate_secret())).await.unwrap_err();
        assert!(matches!(error, StoreError::KeyExists { .. }), "{error}");
        assert!(ctx.keys.revoke_key("agent").await.unwrap());
        assert!(ctx.keys.active_keys().await.unwrap().is_empty());
        assert_eq!(ctx.keys.list_keys().await.unwrap().iter().filter(|key| key.is_revoked()).count(), 2);
    }

    pub(crate) async fn limits_and_priority_round_trip(ctx: Ctx) {
        let full = NewKey::new("full", &generate_secret())
            .with_scopes(["inference", "models", "admin", "models"])
            .with_requests_per_minute(60)
            .with_tokens_per_minute(i64::MAX as u64)
            .with_priority("batch");
        let plain = NewKey::new("plain", &generate_secret());
        let full = ctx.keys.create_key(full).await.unwrap();
        let plain = ctx.keys.create_key(plain).await.unwrap();
        assert_eq!(full.scopes, ["inference", "models", "admin"], "repeats are dropped, order kept");
        assert_eq!((full.requests_per_minute, full.tokens_per_minute), (Some(60), Some(i64::MAX as u64)));
        assert_eq!(full.priority.as_deref(), Some("batch"));
        assert_eq!((plain.requests_per_minute, plain.tokens_per_minute, plain.priority.as_deref()), (None, None, None));
        let active = ctx.keys.active_keys().await.unwrap();
        assert_eq!(active, [full.clone(), plain.clone()]);
        let mut listed = ctx.keys.list_keys().await.unwrap();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(listed, [full, plain]);
    }

    pub(crate) async fn bad_input_is_refused(ctx: Ctx) {
        fn invalid<T: std::fmt::Debug>(result: Result<T, StoreError>) {
            assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");
        }
        let secret = generate_secret();
        for name in [String::new(), "a\nb".into(), "tab\there".into(), "x".repeat(256)] {
            invalid(ctx.keys.create_key(NewKey::new(name.clone(), &secret)).await);
            invalid(ctx.keys.revoke_key(&name).await);
        }
        invalid(ctx.keys.create_key(NewKey::new("k", &secret).with_scopes(Vec::<String>::new())).await);
        invalid(ctx.keys.create_key(NewKey::new("k", &secret).with_scopes(["two words"])).await);
        invalid(ctx.keys.create_key(NewKey::new("k", &secret).with_requests_per_minute(0)).await);
        invalid(ctx.keys.create_key(NewKey::new("k", &secret).with_tokens_per_minute(u64::MAX)).await);
        invalid(ctx.keys.create_key(NewKey::new("k", &secret).with_priority("")).await);
        invalid(ctx.keys.create_key(NewKey { prefix: secret.clone(), ..NewKey::new("k", &secret) }).await);
        assert!(ctx.keys.list_keys().await.unwrap().is_empty());
        // The longest name and names with spaces and punctuation are fine (participant rules).
        ctx.keys.create_key(NewKey::new("x".repeat(255), &secret)).await.unwrap();
        ctx.keys.create_key(NewKey::new("team a/ci:bot é", &generate_secret())).await.unwrap();
        assert_eq!(ctx.keys.active_keys().await.unwrap().len(), 2);
    }

    pub(crate) async fn secrets_are_verified_by_their_hash(ctx: Ctx) {
        let secrets: Vec<String> = (0..3).map(|_| generate_secret()).collect();
        for (i, secret) in secrets.iter().enumerate() {
            ctx.keys.create_key(NewKey::new(format!("k{i}"), secret)).await.unwrap();
        }
        let active = ctx.keys.active_keys().await.unwrap();
        for (i, secret) in secrets.iter().enumerate() {
            // What a gateway does: hash the presented secret, find the key with that hash.
            let hash = hash_secret(secret);
            let found: Vec<&StoredKey> = active.iter().filter(|key| key.hash == hash).collect();
            assert_eq!(names(&found.into_iter().cloned().collect::<Vec<_>>()), [format!("k{i}")]);
            assert!(active[i].verify(secret));
            assert!(!active[(i + 1) % 3].verify(secret));
        }
        assert!(!active.iter().any(|key| key.verify("keel_wrong")));
        assert!(!active.iter().any(|key| key.verify(&secrets[0][..secrets[0].len() - 1])));
    }

    pub(crate) async fn another_store_on_the_url_sees_the_keys(ctx: Ctx) {
        // Another keel instance (or `keel keys`) on the same URL: its changes are seen at once.
        let other = open_key_store(&ctx.url).await.unwrap();
        let key = other.create_key(NewKey::new("shared", &generate_secret())).await.unwrap();
        assert_eq!(ctx.keys.active_keys().await.unwrap(), [key]);
        assert!(ctx.keys.revoke_key("shared").await.unwrap());
        assert!(other.active_keys().await.unwrap().is_empty());
        // Keys are listed by creation time, then name: "kept" must be made a millisecond later
        // than "shared" for the order below (made in the same millisecond, "kept" sorts first).
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(matches!(
            other.create_key(NewKey::new("kept", &generate_secret())).await,
            Ok(StoredKey { revoked_at: None, .. })
        ));
        drop(other);
        // Reopened: everything is still there.
        let reopened = open_key_store(&ctx.url).await.unwrap();
        assert_eq!(names(&reopened.list_keys().await.unwrap()), ["shared", "kept"]);
        assert_eq!(names(&reopened.active_keys().await.unwrap()), ["kept"]);
    }

    pub(crate) async fn concurrent_creates_of_one_name_have_one_winner(ctx: Ctx) {
        let other = open_key_store(&ctx.url).await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let keys = if i % 2 == 0 { Arc::clone(&ctx.keys) } else { Arc::clone(&other) };
                tokio::spawn(async move { keys.create_key(NewKey::new("race", &generate_secret())).await })
            })
            .collect();
        let mut created = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::KeyExists { name }) => assert_eq!(name, "race"),
                Err(error) => panic!("unexpected {error}"),
            }
        }
        assert_eq!(created, 1);
        assert_eq!(ctx.keys.list_keys().await.unwrap().len(), 1);
    }

    pub(crate) async fn keys_and_sessions_share_the_store(ctx: Ctx) {
        ctx.sessions.create_session(NewSession::new("s-1").with_owner("ci-bot")).await.unwrap();
        ctx.keys.create_key(NewKey::new("ci-bot", &generate_secret())).await.unwrap();
        ctx.sessions.health().await.unwrap();
        assert_eq!(ctx.sessions.get_session("s-1").await.unwrap().unwrap().owner.as_deref(), Some("ci-bot"));
        // Dropping the session half keeps the key half working (one backend object).
        drop(ctx.sessions);
        assert_eq!(names(&ctx.keys.active_keys().await.unwrap()), ["ci-bot"]);
    }
}
