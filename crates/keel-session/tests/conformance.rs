//! One conformance suite, run against every backend: `sqlite_conformance::*`,
//! `postgres_conformance::*` and `redis_conformance::*`.
//!
//! Each test gets its own store (see `tests/backends/mod.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

#[macro_use]
mod backends;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keel_session::{
    HANDOFF_ROLE, MessageCompletion, NewMessage, NewParticipant, NewSession, Page, Participant, ParticipantKind,
    Session, SessionFilter, SessionPatch, SessionStatus, Store, StoreError, open,
};
use serde_json::json;

use crate::backends::Backend;

/// What a case gets: the store, and its URL to open it again.
struct Ctx {
    store: Arc<dyn Store>,
    url: String,
}

/// Runs `case` on a fresh store of `backend` (see [`backends::run`]).
async fn run<F, Fut>(backend: Backend, name: &str, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let open = |url: String| async move {
        let store = open(&url).await?;
        assert_eq!(store.backend(), format!("{backend:?}").to_lowercase());
        Ok(Ctx { store, url })
    };
    backends::run(backend, name, open, case).await;
}

backend_suite!(sqlite_conformance, postgres_conformance, redis_conformance:
    health_answers,
    create_and_get_round_trip,
    create_with_a_taken_id_fails,
    missing_sessions_are_reported,
    ensure_session_creates_once,
    append_assigns_seqs_and_bumps_counters,
    idempotent_append_returns_the_stored_message,
    messages_page_by_seq,
    update_session_checks_the_version,
    list_sessions_filters_and_pages,
    delete_session_removes_messages,
    partial_message_is_completed,
    partial_saves_keep_the_message_incomplete,
    invalid_input_is_rejected,
    reopen_keeps_everything,
    concurrent_appends_are_gapless_and_exact,
    concurrent_idempotent_retries_store_one_message,
    concurrent_updates_have_one_winner,
    concurrent_sessions_stay_apart,
    two_stores_on_one_url_share_sessions,
    participants_are_added_listed_and_removed,
    readding_a_participant_updates_it_in_place,
    missing_sessions_have_no_participants,
    concurrent_participant_adds_all_persist,
    concurrent_adds_and_removes_keep_each_other,
    handoff_appends_a_message_and_adds_the_target,
    handoff_from_a_non_participant_fails,
    concurrent_handoffs_and_appends_are_gapless,
    delete_session_removes_participants,
);

mod cases {
    use super::*;

    fn now_millis() -> i64 {
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
    }

    async fn session(store: &dyn Store, id: &str) -> Session {
        store.get_session(id).await.unwrap().unwrap_or_else(|| panic!("session {id} missing"))
    }

    /// Every message of a session, checked to be seq 1..=n in order.
    async fn all_messages(store: &dyn Store, id: &str) -> Vec<keel_session::Message> {
        let messages = store.messages(id, 0, usize::MAX).await.unwrap();
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
        let expected: Vec<u64> = (1..=messages.len() as u64).collect();
        assert_eq!(seqs, expected, "seqs of {id} must be 1..=n without gaps");
        messages
    }

    fn names(participants: &[Participant]) -> Vec<&str> {
        participants.iter().map(|p| p.name.as_str()).collect()
    }

    /// Awaits every task, in order.
    async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    }

    pub(crate) async fn health_answers(ctx: Ctx) {
        ctx.store.health().await.unwrap();
    }

    pub(crate) async fn create_and_get_round_trip(ctx: Ctx) {
        let store = &*ctx.store;
        let before = now_millis();
        let metadata = json!({"agent": "support-bot", "tags": ["a", "b"], "nested": {"k": 1.5, "ü": null}});
        let created = store
            .create_session(
                NewSession::new("s-1").with_owner("team-a").with_model("llama3.2").with_metadata(metadata.clone()),
            )
            .await
            .unwrap();
        assert_eq!(created.id, "s-1");
        assert_eq!(created.owner.as_deref(), Some("team-a"));
        assert_eq!(created.model.as_deref(), Some("llama3.2"));
        assert_eq!(created.status, SessionStatus::Active);
        assert_eq!((created.version, created.token_count, created.message_count), (1, 0, 0));
        assert_eq!(created.metadata, metadata);
        assert_eq!(created.created_at, created.updated_at);
        assert!(created.created_at >= before && created.created_at <= now_millis() + 1);
        assert_eq!(session(store, "s-1").await, created);

        let plain = store.create_session(NewSession::generated()).await.unwrap();
        let read = session(store, &plain.id).await;
        assert_eq!(read, plain);
        assert_eq!(read.owner, None);
        assert_eq!(read.metadata, json!({}));
    }

    pub(crate) async fn create_with_a_taken_id_fails(ctx: Ctx) {
        let store = &*ctx.store;
        let first = store.create_session(NewSession::new("taken").with_owner("first")).await.unwrap();
        let error = store.create_session(NewSession::new("taken").with_owner("second")).await.unwrap_err();
        assert_eq!(error, StoreError::SessionExists { id: "taken".into() });
        assert_eq!(session(store, "taken").await, first);
    }

    pub(crate) async fn missing_sessions_are_reported(ctx: Ctx) {
        let store = &*ctx.store;
        let missing = || StoreError::SessionNotFound { id: "nope".into() };
        assert_eq!(store.get_session("nope").await.unwrap(), None);
        assert_eq!(store.append("nope", NewMessage::user("hi")).await.unwrap_err(), missing());
        assert_eq!(store.messages("nope", 0, 10).await.unwrap_err(), missing());
        assert_eq!(store.update_session("nope", 1, SessionPatch::default()).await.unwrap_err(), missing());
        assert_eq!(store.complete_message("nope", 1, MessageCompletion::default()).await.unwrap_err(), missing());
        assert_eq!(store.save_partial("nope", 1, MessageCompletion::default()).await.unwrap_err(), missing());
        assert_eq!(store.message_by_key("nope", "k").await.unwrap(), None);
        assert!(!store.delete_session("nope").await.unwrap());
        assert_eq!(store.get_session("nope").await.unwrap(), None, "nothing was created on the way");
    }

    pub(crate) async fn ensure_session_creates_once(ctx: Ctx) {
        let store = &ctx.store;
        let first = store.ensure_session(NewSession::new("e").with_model("llama3.2")).await.unwrap();
        assert_eq!(first.model.as_deref(), Some("llama3.2"));
        let second = store.ensure_session(NewSession::new("e").with_model("other")).await.unwrap();
        assert_eq!(second, first, "an existing session is returned unchanged");

        // Racing ensures of a new id all see the one session that was created.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(store);
                tokio::spawn(async move {
                    store.ensure_session(NewSession::new("race").with_owner(format!("o{i}"))).await.unwrap()
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        let stored = session(&**store, "race").await;
        for result in results {
            assert_eq!(result, stored);
        }
    }

    pub(crate) async fn append_assigns_seqs_and_bumps_counters(ctx: Ctx) {
        let store = &*ctx.store;
        let created = store.create_session(NewSession::new("chat")).await.unwrap();
        let tool_calls = json!([{"function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]);
        let inputs = vec![
            NewMessage::new("system", "You are terse.").with_tokens(4),
            NewMessage::user("Wetter in Zürich? 🌧").with_tokens(7),
            NewMessage::assistant("").with_tool_calls(tool_calls.clone()).with_tokens(12),
            NewMessage::new("tool", "{\"temp\": 11}").with_tokens(5),
            NewMessage::assistant("11 °C, rain.\nTake an umbrella.").with_tokens(9),
        ];
        let mut appended = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let message = store.append("chat", input.clone()).await.unwrap();
            assert_eq!(message.seq, i as u64 + 1);
            assert_eq!(message.session_id, "chat");
            assert!(message.complete);
            appended.push(message);
        }
        let stored = all_messages(store, "chat").await;
        assert_eq!(stored, appended);
        for (message, input) in stored.iter().zip(&inputs) {
            assert_eq!((&message.role, &message.content), (&input.role, &input.content));
            assert_eq!(message.tool_calls, input.tool_calls);
            assert_eq!(message.token_count, input.token_count);
        }
        assert_eq!(stored[2].tool_calls, Some(tool_calls));
        let after = session(store, "chat").await;
        assert_eq!(after.version, created.version + 5);
        assert_eq!(after.message_count, 5);
        assert_eq!(after.token_count, 4 + 7 + 12 + 5 + 9);
        assert!(after.updated_at >= created.updated_at);
        assert_eq!(after.created_at, created.created_at);
    }

    pub(crate) async fn idempotent_append_returns_the_stored_message(ctx: Ctx) {
        let store = &*ctx.store;
        store.create_session(NewSession::new("idem")).await.unwrap();
        store.create_session(NewSession::new("other")).await.unwrap();
        let first =
            store.append("idem", NewMessage::user("first").with_tokens(3).with_idempotency_key("req-1")).await.unwrap();
        let before = session(store, "idem").await;
        let retry = store
            .append("idem", NewMessage::user("changed on retry").with_tokens(99).with_idempotency_key("req-1"))
            .await
            .unwrap();
        assert_eq!(retry, first, "the stored message wins");
        assert_eq!(session(store, "idem").await, before, "a replay changes nothing");
        assert_eq!(store.message_by_key("idem", "req-1").await.unwrap(), Some(first.clone()));
        assert_eq!(store.message_by_key("idem", "req-2").await.unwrap(), None);

        let second = store.append("idem", NewMessage::user("second").with_idempotency_key("req-2")).await.unwrap();
        assert_eq!(second.seq, 2);
        // Keys are per session.
        let elsewhere = store.append("other", NewMessage::user("x").with_idempotency_key("req-1")).await.unwrap();
        assert_eq!((elsewhere.seq, elsewhere.content.as_str()), (1, "x"));
        assert_eq!(all_messages(store, "idem").await.len(), 2);
    }

    pub(crate) async fn messages_page_by_seq(ctx: Ctx) {
        let store = &*ctx.store;
        store.create_session(NewSession::new("p")).await.unwrap();
        assert_eq!(store.messages("p", 0, 10).await.unwrap(), vec![]);
        for i in 1..=10 {
            store.append("p", NewMessage::user(format!("m{i}"))).await.unwrap();
        }
        let seqs = |messages: Vec<keel_session::Message>| messages.iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.messages("p", 0, 3).await.unwrap()), [1, 2, 3]);
        assert_eq!(seqs(store.messages("p", 3, 3).await.unwrap()), [4, 5, 6]);
        assert_eq!(seqs(store.messages("p", 9, 5).await.unwrap()), [10]);
        assert_eq!(seqs(store.messages("p", 10, 5).await.unwrap()), Vec::<u64>::new());
        assert_eq!(seqs(store.messages("p", 0, 0).await.unwrap()), Vec::<u64>::new());
        assert_eq!(seqs(store.messages("p", u64::MAX, 5).await.unwrap()), Vec::<u64>::new());
        let all = store.messages("p", 0, usize::MAX).await.unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[6].content, "m7");
    }

    pub(crate) async fn update_session_checks_the_version(ctx: Ctx) {
        let store = &*ctx.store;
        let created = store.create_session(NewSession::new("u").with_owner("alice").with_model("m1")).await.unwrap();
        let patch = SessionPatch {
            owner: Some(None),
            model: Some(Some("m2".into())),
            status: Some(SessionStatus::Idle),
            metadata: Some(json!({"note": "moved"})),
        };
        let updated = store.update_session("u", created.version, patch).await.unwrap();
        assert_eq!(updated.version, created.version + 1);
        assert_eq!(updated.owner, None);
        assert_eq!(updated.model.as_deref(), Some("m2"));
        assert_eq!(updated.status, SessionStatus::Idle);
        assert_eq!(updated.metadata, json!({"note": "moved"}));
        assert_eq!(session(store, "u").await, updated);

        let stale = store.update_session("u", created.version, SessionPatch::status(SessionStatus::Ended)).await;
        assert_eq!(stale.unwrap_err(), StoreError::Conflict { current_version: updated.version });

        // An append moves the version too.
        store.append("u", NewMessage::user("hi")).await.unwrap();
        let stale = store.update_session("u", updated.version, SessionPatch::status(SessionStatus::Ended)).await;
        assert_eq!(stale.unwrap_err(), StoreError::Conflict { current_version: updated.version + 1 });

        let ended =
            store.update_session("u", updated.version + 1, SessionPatch::status(SessionStatus::Ended)).await.unwrap();
        assert_eq!(ended.status, SessionStatus::Ended);
        assert_eq!(ended.model.as_deref(), Some("m2"), "fields not in the patch stay");
        assert_eq!((ended.message_count, ended.token_count), (1, 0));
        assert_eq!(session(store, "u").await, ended);
    }

    pub(crate) async fn list_sessions_filters_and_pages(ctx: Ctx) {
        let store = &*ctx.store;
        let specs = [
            ("a1", "alice", "llama3.2", SessionStatus::Active),
            ("a2", "alice", "qwen2.5", SessionStatus::Idle),
            ("a3", "alice", "llama3.2", SessionStatus::Ended),
            ("b1", "bob", "llama3.2", SessionStatus::Active),
            ("b2", "bob", "qwen2.5", SessionStatus::TimedOut),
            ("b3", "bob", "llama3.2", SessionStatus::Active),
            ("c1", "carol", "llama3.2", SessionStatus::Active),
        ];
        for (id, owner, model, status) in specs {
            store
                .create_session(NewSession::new(id).with_owner(owner).with_model(model).with_status(status))
                .await
                .unwrap();
        }
        // A later append makes b1 the most recently updated.
        tokio::time::sleep(Duration::from_millis(5)).await;
        store.append("b1", NewMessage::user("hi")).await.unwrap();

        let ids = |page: keel_session::SessionPage| page.sessions.into_iter().map(|s| s.id).collect::<Vec<_>>();
        let list =
            |filter: SessionFilter| async move { ids(store.list_sessions(filter, Page::first(100)).await.unwrap()) };

        let all = list(SessionFilter::default()).await;
        assert_eq!(all.len(), 7);
        assert_eq!(all[0], "b1");
        // The order is updated_at descending, then id descending.
        let mut expected: Vec<Session> = Vec::new();
        for id in &all {
            expected.push(session(store, id).await);
        }
        let mut sorted = expected.clone();
        sorted.sort_by(|x, y| (y.updated_at, &y.id).cmp(&(x.updated_at, &x.id)));
        assert_eq!(sorted, expected);

        let by_owner = list(SessionFilter { owner: Some("alice".into()), ..SessionFilter::default() }).await;
        assert_eq!(by_owner.into_iter().collect::<BTreeSet<_>>(), BTreeSet::from(["a1", "a2", "a3"].map(String::from)));
        let active = list(SessionFilter { status: Some(SessionStatus::Active), ..SessionFilter::default() }).await;
        assert_eq!(
            active.into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from(["a1", "b1", "b3", "c1"].map(String::from))
        );
        let filter = SessionFilter {
            owner: Some("bob".into()),
            model: Some("llama3.2".into()),
            status: Some(SessionStatus::Active),
            ..SessionFilter::default()
        };
        assert_eq!(
            list(filter).await.into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from(["b1", "b3"].map(String::from))
        );
        let b1 = session(store, "b1").await;
        let recent = list(SessionFilter { updated_since: Some(b1.updated_at), ..SessionFilter::default() }).await;
        assert_eq!(recent, ["b1"]);
        assert_eq!(list(SessionFilter { owner: Some("nobody".into()), ..SessionFilter::default() }).await.len(), 0);

        // Pages of 3 walk the same order without repeats or holes.
        let mut walked = Vec::new();
        let mut page = Page::first(3);
        loop {
            let result = store.list_sessions(SessionFilter::default(), page.clone()).await.unwrap();
            assert!(result.sessions.len() <= 3);
            walked.extend(result.sessions.into_iter().map(|s| s.id));
            match result.next_cursor {
                Some(cursor) => page = Page::after(cursor, 3),
                None => break,
            }
        }
        assert_eq!(walked, all);
        // A filtered walk too.
        let mut walked = Vec::new();
        let mut page = Page::first(1);
        let filter = SessionFilter { model: Some("llama3.2".into()), ..SessionFilter::default() };
        loop {
            let result = store.list_sessions(filter.clone(), page.clone()).await.unwrap();
            walked.extend(result.sessions.into_iter().map(|s| s.id));
            match result.next_cursor {
                Some(cursor) => page = Page::after(cursor, 1),
                None => break,
            }
        }
        assert_eq!(walked, list(filter).await);
        assert_eq!(walked.len(), 5);

        // Sessions last updated before a time, walked from there: exactly the older ones.
        let mut older = Vec::new();
        let mut page = Page::updated_before(b1.updated_at, 2);
        loop {
            let result = store.list_sessions(SessionFilter::default(), page.clone()).await.unwrap();
            older.extend(result.sessions.into_iter().map(|s| s.id));
            match result.next_cursor {
                Some(cursor) => page = Page::after(cursor, 2),
                None => break,
            }
        }
        let expected_older: Vec<String> =
            expected.iter().filter(|s| s.updated_at < b1.updated_at).map(|s| s.id.clone()).collect();
        assert_eq!(older, expected_older);
        let none_older =
            store.list_sessions(SessionFilter::default(), Page::updated_before(i64::MIN, 10)).await.unwrap();
        assert!(none_older.sessions.is_empty());

        assert!(matches!(
            store.list_sessions(SessionFilter::default(), Page::first(0)).await,
            Err(StoreError::InvalidInput(_))
        ));
        assert!(matches!(
            store.list_sessions(SessionFilter::default(), Page::after("garbage", 3)).await,
            Err(StoreError::InvalidInput(_))
        ));
    }

    pub(crate) async fn delete_session_removes_messages(ctx: Ctx) {
        let store = &*ctx.store;
        store.create_session(NewSession::new("d")).await.unwrap();
        store.create_session(NewSession::new("keep")).await.unwrap();
        for i in 0..3 {
            store.append("d", NewMessage::user(format!("m{i}")).with_idempotency_key(format!("k{i}"))).await.unwrap();
        }
        store.append("keep", NewMessage::user("stays")).await.unwrap();
        assert!(store.delete_session("d").await.unwrap());
        assert_eq!(store.get_session("d").await.unwrap(), None);
        assert_eq!(store.messages("d", 0, 10).await.unwrap_err(), StoreError::SessionNotFound { id: "d".into() });
        assert_eq!(store.message_by_key("d", "k0").await.unwrap(), None);
        assert!(!store.delete_session("d").await.unwrap());
        let listed = store.list_sessions(SessionFilter::default(), Page::first(10)).await.unwrap();
        assert_eq!(listed.sessions.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["keep"]);

        // The id can be used again, from scratch.
        let again = store.create_session(NewSession::new("d")).await.unwrap();
        assert_eq!((again.version, again.message_count), (1, 0));
        let message = store.append("d", NewMessage::user("new").with_idempotency_key("k0")).await.unwrap();
        assert_eq!((message.seq, message.content.as_str()), (1, "new"));
        assert_eq!(all_messages(store, "keep").await.len(), 1);
    }

    pub(crate) async fn partial_message_is_completed(ctx: Ctx) {
        let store = &*ctx.store;
        let calls =
            serde_json::json!([{"id": "call_1", "type": "function", "function": {"name": "story", "arguments": "{}"}}]);
        store.create_session(NewSession::new("stream")).await.unwrap();
        store.append("stream", NewMessage::user("tell me a story").with_tokens(4)).await.unwrap();
        let partial =
            store.append("stream", NewMessage::assistant("Once upon").with_tokens(2).partial()).await.unwrap();
        assert!(!partial.complete);
        assert_eq!(session(store, "stream").await.token_count, 6);
        assert!(!all_messages(store, "stream").await[1].complete);

        let before = session(store, "stream").await;
        let done = store
            .complete_message(
                "stream",
                partial.seq,
                MessageCompletion {
                    content: Some("Once upon a time, the end.".into()),
                    token_count: Some(8),
                    tool_calls: Some(calls.clone()),
                },
            )
            .await
            .unwrap();
        assert!(done.complete);
        assert_eq!((done.seq, done.content.as_str(), done.token_count), (2, "Once upon a time, the end.", 8));
        // A streamed answer's tool calls are stored with it.
        assert_eq!(done.tool_calls.as_ref(), Some(&calls));
        assert_eq!(all_messages(store, "stream").await[1], done);
        let after = session(store, "stream").await;
        assert_eq!(after.token_count, 12);
        assert_eq!(after.version, before.version + 1);
        assert_eq!(after.message_count, 2);

        // Completing again changes nothing.
        let again = store.complete_message("stream", 2, MessageCompletion::default()).await.unwrap();
        assert_eq!(again, done);
        assert_eq!(session(store, "stream").await, after);
        // Only the flag.
        let partial = store.append("stream", NewMessage::assistant("cut").with_tokens(1).partial()).await.unwrap();
        let flagged = store.complete_message("stream", partial.seq, MessageCompletion::default()).await.unwrap();
        assert_eq!((flagged.content.as_str(), flagged.token_count, flagged.complete), ("cut", 1, true));
        assert_eq!(session(store, "stream").await.token_count, 13);

        assert_eq!(
            store.complete_message("stream", 9, MessageCompletion::default()).await.unwrap_err(),
            StoreError::MessageNotFound { id: "stream".into(), seq: 9 }
        );
    }

    pub(crate) async fn partial_saves_keep_the_message_incomplete(ctx: Ctx) {
        let store = &*ctx.store;
        let saved = |content: &str, tokens: u64| MessageCompletion {
            content: Some(content.into()),
            token_count: Some(tokens),
            tool_calls: None,
        };
        store.create_session(NewSession::new("stream")).await.unwrap();
        store.append("stream", NewMessage::user("tell me a story").with_tokens(4)).await.unwrap();
        let partial = store.append("stream", NewMessage::assistant("").with_tokens(0).partial()).await.unwrap();
        let before = session(store, "stream").await;
        assert_eq!(before.token_count, 4);

        // Two partial saves: the session total moves by each difference, nothing else does.
        let first = store.save_partial("stream", partial.seq, saved("Once", 1)).await.unwrap();
        assert_eq!((first.seq, first.content.as_str(), first.token_count, first.complete), (2, "Once", 1, false));
        assert_eq!(all_messages(store, "stream").await[1], first);
        let after_first = session(store, "stream").await;
        assert_eq!(after_first.token_count, 5);
        assert_eq!((after_first.version, after_first.message_count), (before.version, before.message_count));

        let second = store.save_partial("stream", partial.seq, saved("Once upon a", 3)).await.unwrap();
        assert_eq!((second.content.as_str(), second.token_count, second.complete), ("Once upon a", 3, false));
        assert_eq!(all_messages(store, "stream").await[1], second);
        let after_second = session(store, "stream").await;
        assert_eq!(after_second.token_count, 7);
        assert_eq!((after_second.version, after_second.message_count), (before.version, before.message_count));
        assert!(after_second.updated_at >= before.updated_at);

        // Only the content: the tokens stay.
        let third = store
            .save_partial(
                "stream",
                partial.seq,
                MessageCompletion { content: Some("Once upon a t".into()), ..MessageCompletion::default() },
            )
            .await
            .unwrap();
        assert_eq!((third.content.as_str(), third.token_count, third.complete), ("Once upon a t", 3, false));
        assert_eq!(session(store, "stream").await.token_count, 7);

        // Then completing it leaves the final content, complete.
        let done = store.complete_message("stream", partial.seq, saved("Once upon a time, the end.", 8)).await.unwrap();
        assert_eq!((done.content.as_str(), done.token_count, done.complete), ("Once upon a time, the end.", 8, true));
        assert_eq!(all_messages(store, "stream").await[1], done);
        let completed = session(store, "stream").await;
        assert_eq!(completed.token_count, 12);
        assert_eq!((completed.version, completed.message_count), (before.version + 1, 2));

        // A complete message cannot be saved as partial; nothing changes.
        let error = store.save_partial("stream", partial.seq, saved("overwritten", 99)).await.unwrap_err();
        assert!(matches!(error, StoreError::InvalidInput(_)), "{error}");
        let error = store.save_partial("stream", 1, MessageCompletion::default()).await.unwrap_err();
        assert!(matches!(error, StoreError::InvalidInput(_)), "{error}");
        assert_eq!(all_messages(store, "stream").await[1], done);
        assert_eq!(session(store, "stream").await, completed);

        assert_eq!(
            store.save_partial("stream", 9, saved("x", 1)).await.unwrap_err(),
            StoreError::MessageNotFound { id: "stream".into(), seq: 9 }
        );
        assert_eq!(session(store, "stream").await, completed);
    }

    pub(crate) async fn invalid_input_is_rejected(ctx: Ctx) {
        let store = &*ctx.store;
        fn invalid<T>(result: Result<T, StoreError>) -> bool {
            matches!(result, Err(StoreError::InvalidInput(_)))
        }
        assert!(invalid(store.create_session(NewSession::new("")).await));
        assert!(invalid(store.create_session(NewSession::new("a\u{0}b")).await));
        assert!(invalid(store.create_session(NewSession::new("x".repeat(256))).await));
        assert!(invalid(store.get_session("").await));
        store.create_session(NewSession::new("x".repeat(255))).await.unwrap();
        store.create_session(NewSession::new("ok")).await.unwrap();
        assert!(invalid(store.append("ok", NewMessage::user("m").with_idempotency_key("")).await));
        assert!(invalid(store.append("ok", NewMessage::user("m").with_tokens(u64::MAX)).await));
        assert!(invalid(store.message_by_key("ok", "").await));
        assert_eq!(session(store, "ok").await.version, 1, "nothing was appended");
    }

    pub(crate) async fn reopen_keeps_everything(ctx: Ctx) {
        let Ctx { store, url } = ctx;
        store.create_session(NewSession::new("r").with_owner("o").with_metadata(json!({"x": [1, 2]}))).await.unwrap();
        for i in 0..20 {
            store
                .append("r", NewMessage::user(format!("m{i}")).with_tokens(i).with_idempotency_key(format!("k{i}")))
                .await
                .unwrap();
        }
        store.add_participant("r", NewParticipant::human("alice").with_role("owner")).await.unwrap();
        store.handoff("r", "alice", NewParticipant::agent("bot"), None).await.unwrap();
        let before_session = session(&*store, "r").await;
        let before_messages = all_messages(&*store, "r").await;
        let before_participants = store.participants("r").await.unwrap();
        assert_eq!(names(&before_participants), ["alice", "bot"]);
        drop(store);
        let store = open(&url).await.unwrap();
        assert_eq!(session(&*store, "r").await, before_session);
        assert_eq!(all_messages(&*store, "r").await, before_messages);
        assert_eq!(store.participants("r").await.unwrap(), before_participants);
        let retry = store.append("r", NewMessage::user("again").with_idempotency_key("k7")).await.unwrap();
        assert_eq!(retry, before_messages[7]);
        assert_eq!(store.append("r", NewMessage::user("next")).await.unwrap().seq, 22);
    }

    pub(crate) async fn concurrent_appends_are_gapless_and_exact(ctx: Ctx) {
        const WRITERS: u64 = 8;
        const EACH: u64 = 25;
        let store = ctx.store;
        let created = store.create_session(NewSession::new("hot")).await.unwrap();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..EACH {
                        let message = NewMessage::user(format!("w{writer}-{i}")).with_tokens(writer + 1);
                        seqs.push(store.append("hot", message).await.unwrap().seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut acknowledged = BTreeSet::new();
        for (writer, task) in tasks.into_iter().enumerate() {
            let seqs = task.await.unwrap();
            assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "writer {writer} saw seqs go back: {seqs:?}");
            for seq in seqs {
                assert!(acknowledged.insert(seq), "seq {seq} acknowledged twice");
            }
        }
        let total = WRITERS * EACH;
        assert_eq!(acknowledged, (1..=total).collect());
        let messages = all_messages(&*store, "hot").await;
        assert_eq!(messages.len() as u64, total);
        // No loss, no duplicate, and each writer's messages in its own order.
        let mut next_of_writer: HashMap<String, u64> = HashMap::new();
        for message in &messages {
            let (writer, i) = message.content.split_once('-').unwrap();
            let expected = next_of_writer.entry(writer.to_owned()).or_insert(0);
            assert_eq!(i.parse::<u64>().unwrap(), *expected, "order of {writer}");
            *expected += 1;
        }
        assert!(next_of_writer.values().all(|count| *count == EACH));
        let after = session(&*store, "hot").await;
        assert_eq!(after.message_count, total);
        assert_eq!(after.version, created.version + total);
        assert_eq!(after.token_count, EACH * (1..=WRITERS).sum::<u64>());
    }

    pub(crate) async fn concurrent_idempotent_retries_store_one_message(ctx: Ctx) {
        let store = ctx.store;
        store.create_session(NewSession::new("retry")).await.unwrap();
        // 4 requests, each retried 8 times at once.
        let tasks: Vec<_> = (0..32u64)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let request = i % 4;
                    let message = NewMessage::user(format!("request {request}"))
                        .with_tokens(10)
                        .with_idempotency_key(format!("req-{request}"));
                    (request, store.append("retry", message).await.unwrap())
                })
            })
            .collect();
        let mut by_request: HashMap<u64, keel_session::Message> = HashMap::new();
        for task in tasks {
            let (request, message) = task.await.unwrap();
            let first = by_request.entry(request).or_insert_with(|| message.clone());
            assert_eq!(*first, message, "every retry of request {request} gets the same message");
        }
        let messages = all_messages(&*store, "retry").await;
        assert_eq!(messages.len(), 4);
        let after = session(&*store, "retry").await;
        assert_eq!((after.message_count, after.token_count, after.version), (4, 40, 5));
        for (request, message) in by_request {
            assert_eq!(messages[message.seq as usize - 1], message);
            assert_eq!(message.idempotency_key, Some(format!("req-{request}")));
        }
    }

    pub(crate) async fn concurrent_updates_have_one_winner(ctx: Ctx) {
        let store = ctx.store;
        let created = store.create_session(NewSession::new("cas")).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let patch = SessionPatch { owner: Some(Some(format!("owner-{i}"))), ..SessionPatch::default() };
                    store.update_session("cas", created.version, patch).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(session) => winners.push(session),
                Err(StoreError::Conflict { current_version }) => assert_eq!(current_version, created.version + 1),
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), 1);
        assert_eq!(session(&*store, "cas").await, winners[0]);
    }

    pub(crate) async fn concurrent_sessions_stay_apart(ctx: Ctx) {
        let store = ctx.store;
        for s in 0..4 {
            store.create_session(NewSession::new(format!("s{s}"))).await.unwrap();
        }
        let tasks: Vec<_> = (0..16u64)
            .map(|task| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0..10 {
                        let id = format!("s{}", (task + i) % 4);
                        store.append(&id, NewMessage::user(format!("t{task}-{i}")).with_tokens(1)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        for s in 0..4 {
            let id = format!("s{s}");
            let messages = all_messages(&*store, &id).await;
            assert_eq!(messages.len(), 40);
            assert!(messages.iter().all(|m| m.session_id == id));
            let after = session(&*store, &id).await;
            assert_eq!((after.message_count, after.token_count, after.version), (40, 40, 41));
        }
    }

    pub(crate) async fn two_stores_on_one_url_share_sessions(ctx: Ctx) {
        // Two stores on one URL, as two keel processes would have.
        let first = ctx.store;
        let second = open(&ctx.url).await.unwrap();
        first.create_session(NewSession::new("shared")).await.unwrap();
        assert!(second.get_session("shared").await.unwrap().is_some());
        let tasks: Vec<_> = [Arc::clone(&first), Arc::clone(&second)]
            .into_iter()
            .enumerate()
            .flat_map(|(n, store)| {
                (0..4).map(move |writer| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        for i in 0..10 {
                            let key = format!("{writer}-{i}");
                            let message = NewMessage::user(format!("store{n}-{key}")).with_idempotency_key(key);
                            store.append("shared", message).await.unwrap();
                        }
                    })
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // Both stores' writers used the same 40 keys: 40 messages, whichever store won each key.
        let messages = all_messages(&*second, "shared").await;
        assert_eq!(messages.len(), 40);
        assert_eq!(all_messages(&*first, "shared").await, messages);
        let keys: BTreeSet<_> = messages.iter().map(|m| m.idempotency_key.clone().unwrap()).collect();
        assert_eq!(keys.len(), 40);
        assert_eq!(session(&*first, "shared").await.version, 41);
    }

    pub(crate) async fn participants_are_added_listed_and_removed(ctx: Ctx) {
        let store = &*ctx.store;
        let created = store.create_session(NewSession::new("team")).await.unwrap();
        assert_eq!(store.participants("team").await.unwrap(), vec![]);
        let before = now_millis();
        let planner =
            store.add_participant("team", NewParticipant::agent("planner").with_role("assistant")).await.unwrap();
        let alice = store.add_participant("team", NewParticipant::human("alice").with_role("owner")).await.unwrap();
        let coder = store.add_participant("team", NewParticipant::agent("coder")).await.unwrap();
        assert_eq!(
            (planner.session_id.as_str(), planner.name.as_str(), planner.kind, planner.role.as_str()),
            ("team", "planner", ParticipantKind::Agent, "assistant")
        );
        assert_eq!((alice.kind, alice.role.as_str()), (ParticipantKind::Human, "owner"));
        assert_eq!(coder.role, NewParticipant::DEFAULT_ROLE);
        assert!(planner.added_at >= before && coder.added_at <= now_millis() + 1);
        assert!(planner.added_at <= alice.added_at && alice.added_at <= coder.added_at);
        let listed = store.participants("team").await.unwrap();
        assert_eq!(listed, vec![planner.clone(), alice.clone(), coder.clone()], "in the order added");

        assert!(store.remove_participant("team", "alice").await.unwrap());
        assert!(!store.remove_participant("team", "alice").await.unwrap(), "already gone");
        assert!(!store.remove_participant("team", "nobody").await.unwrap());
        assert_eq!(store.participants("team").await.unwrap(), vec![planner.clone(), coder.clone()]);
        // Removed and added again: a new participant, last in order.
        let back = store.add_participant("team", NewParticipant::human("alice").with_role("reviewer")).await.unwrap();
        assert_eq!(names(&store.participants("team").await.unwrap()), ["planner", "coder", "alice"]);
        assert_eq!(back.role, "reviewer");
        // Participants are not messages: the session's counters did not move.
        let after = session(store, "team").await;
        assert_eq!((after.version, after.message_count, after.updated_at), (created.version, 0, created.updated_at));

        // Names and roles are checked like ids; nothing is stored on the way.
        let invalid = |result: Result<Participant, StoreError>| matches!(result, Err(StoreError::InvalidInput(_)));
        assert!(invalid(store.add_participant("team", NewParticipant::agent("")).await));
        assert!(invalid(store.add_participant("team", NewParticipant::agent("a\nb")).await));
        assert!(invalid(store.add_participant("team", NewParticipant::agent("x".repeat(256))).await));
        assert!(invalid(store.add_participant("team", NewParticipant::agent("ok").with_role("")).await));
        assert!(matches!(store.remove_participant("team", "").await, Err(StoreError::InvalidInput(_))));
        assert!(matches!(store.participants("").await, Err(StoreError::InvalidInput(_))));
        let long = store.add_participant("team", NewParticipant::human("ü".repeat(127))).await.unwrap();
        assert_eq!(store.participants("team").await.unwrap().last(), Some(&long));
        assert_eq!(store.participants("team").await.unwrap().len(), 4);
    }

    pub(crate) async fn readding_a_participant_updates_it_in_place(ctx: Ctx) {
        let store = &*ctx.store;
        store.create_session(NewSession::new("re")).await.unwrap();
        let first = store.add_participant("re", NewParticipant::human("alice").with_role("reviewer")).await.unwrap();
        store.add_participant("re", NewParticipant::agent("bot")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let updated = store.add_participant("re", NewParticipant::agent("alice").with_role("owner")).await.unwrap();
        assert_eq!((updated.kind, updated.role.as_str()), (ParticipantKind::Agent, "owner"));
        assert_eq!(updated.added_at, first.added_at, "re-adding keeps added_at");
        let listed = store.participants("re").await.unwrap();
        assert_eq!(names(&listed), ["alice", "bot"], "no duplicate, same place");
        assert_eq!(listed[0], updated);
        // The same add again changes nothing.
        assert_eq!(
            store.add_participant("re", NewParticipant::agent("alice").with_role("owner")).await.unwrap(),
            updated
        );
        assert_eq!(store.participants("re").await.unwrap(), listed);
    }

    pub(crate) async fn missing_sessions_have_no_participants(ctx: Ctx) {
        let store = &*ctx.store;
        let missing = || StoreError::SessionNotFound { id: "nope".into() };
        assert_eq!(store.add_participant("nope", NewParticipant::agent("a")).await.unwrap_err(), missing());
        assert_eq!(store.remove_participant("nope", "a").await.unwrap_err(), missing());
        assert_eq!(store.participants("nope").await.unwrap_err(), missing());
        assert_eq!(store.handoff("nope", "a", NewParticipant::agent("b"), None).await.unwrap_err(), missing());
        assert_eq!(store.get_session("nope").await.unwrap(), None, "nothing was created on the way");
        // Participants belong to their session only.
        store.create_session(NewSession::new("one")).await.unwrap();
        store.create_session(NewSession::new("two")).await.unwrap();
        store.add_participant("one", NewParticipant::agent("a")).await.unwrap();
        assert_eq!(store.participants("two").await.unwrap(), vec![]);
        assert!(!store.remove_participant("two", "a").await.unwrap());
        assert_eq!(names(&store.participants("one").await.unwrap()), ["a"]);
    }

    pub(crate) async fn concurrent_participant_adds_all_persist(ctx: Ctx) {
        // The issue's bug: a read-modify-write of the list kept 1 of 10 parallel adds.
        let store = ctx.store;
        let second = open(&ctx.url).await.unwrap();
        for (session_id, count) in [("ten", 10usize), ("fifty", 50)] {
            store.create_session(NewSession::new(session_id)).await.unwrap();
            // Every add at once, half of them through a second store on the same URL (a second
            // keel process).
            let tasks: Vec<_> = (0..count)
                .map(|i| {
                    let store = if i % 2 == 0 { Arc::clone(&store) } else { Arc::clone(&second) };
                    tokio::spawn(async move {
                        let kind = if i % 3 == 0 {
                            NewParticipant::human(format!("p{i}"))
                        } else {
                            NewParticipant::agent(format!("p{i}"))
                        };
                        store.add_participant(session_id, kind.with_role(format!("role-{i}"))).await.unwrap()
                    })
                })
                .collect();
            let added = join_all(tasks).await;
            let listed = store.participants(session_id).await.unwrap();
            assert_eq!(listed.len(), count, "{session_id}: every parallel add persists");
            let listed_names: BTreeSet<&str> = names(&listed).into_iter().collect();
            let expected: BTreeSet<String> = (0..count).map(|i| format!("p{i}")).collect();
            assert_eq!(listed_names, expected.iter().map(String::as_str).collect());
            for participant in added {
                assert!(listed.contains(&participant), "{participant:?} is listed as added");
            }
            assert_eq!(second.participants(session_id).await.unwrap(), listed);
        }

        // 20 racing adds of one name: one participant, with one of the roles.
        store.create_session(NewSession::new("same")).await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = if i % 2 == 0 { Arc::clone(&store) } else { Arc::clone(&second) };
                tokio::spawn(async move {
                    store
                        .add_participant("same", NewParticipant::agent("bot").with_role(format!("r{i}")))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let added = join_all(tasks).await;
        let listed = store.participants("same").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(added.iter().all(|p| p.added_at == listed[0].added_at), "one first add");
        assert!(added.iter().any(|p| *p == listed[0]), "the last add wins");
    }

    pub(crate) async fn concurrent_adds_and_removes_keep_each_other(ctx: Ctx) {
        const EACH: usize = 25;
        let store = ctx.store;
        store.create_session(NewSession::new("churn")).await.unwrap();
        for i in 0..EACH {
            store.add_participant("churn", NewParticipant::agent(format!("old{i}"))).await.unwrap();
        }
        // Adds of new names interleaved with removes of the old ones, all at once.
        let tasks: Vec<_> = (0..EACH)
            .flat_map(|i| {
                let adder = Arc::clone(&store);
                let remover = Arc::clone(&store);
                [
                    tokio::spawn(async move {
                        adder.add_participant("churn", NewParticipant::human(format!("new{i}"))).await.unwrap();
                        true
                    }),
                    tokio::spawn(async move { remover.remove_participant("churn", &format!("old{i}")).await.unwrap() }),
                ]
            })
            .collect();
        assert!(join_all(tasks).await.into_iter().all(|ok| ok), "every remove found its participant");
        let listed = store.participants("churn").await.unwrap();
        let listed: BTreeSet<&str> = names(&listed).into_iter().collect();
        let expected: BTreeSet<String> = (0..EACH).map(|i| format!("new{i}")).collect();
        assert_eq!(listed, expected.iter().map(String::as_str).collect(), "no add lost, no removed name back");
    }

    pub(crate) async fn handoff_appends_a_message_and_adds_the_target(ctx: Ctx) {
        let store = &*ctx.store;
        store.create_session(NewSession::new("desk")).await.unwrap();
        store.append("desk", NewMessage::user("my invoice is wrong").with_tokens(5)).await.unwrap();
        let triage = store.add_participant("desk", NewParticipant::agent("triage").with_role("router")).await.unwrap();
        let alice = store.add_participant("desk", NewParticipant::human("alice").with_role("customer")).await.unwrap();
        let before = session(store, "desk").await;

        let handoff = store
            .handoff(
                "desk",
                "triage",
                NewParticipant::agent("billing").with_role("assistant"),
                Some("invoice question".into()),
            )
            .await
            .unwrap();
        assert_eq!((handoff.session_id.as_str(), handoff.seq), ("desk", 2));
        assert_eq!(handoff.role, HANDOFF_ROLE);
        assert_eq!(handoff.role, "handoff");
        assert_eq!(handoff.content, "from triage to billing: invoice question");
        assert_eq!((handoff.token_count, handoff.complete, handoff.idempotency_key.clone()), (0, true, None));
        assert_eq!(all_messages(store, "desk").await.last(), Some(&handoff));
        let after = session(store, "desk").await;
        assert_eq!(after.version, before.version + 1);
        assert_eq!(after.message_count, 2);
        assert_eq!(after.token_count, before.token_count);
        assert!(after.updated_at >= before.updated_at);
        let listed = store.participants("desk").await.unwrap();
        assert_eq!(names(&listed), ["triage", "alice", "billing"], "the target is added; `from` stays");
        assert_eq!((listed[2].kind, listed[2].role.as_str()), (ParticipantKind::Agent, "assistant"));

        // To a participant already there: kept as it is; no note: no colon.
        let back = store.handoff("desk", "billing", NewParticipant::agent("triage"), None).await.unwrap();
        assert_eq!((back.seq, back.content.as_str()), (3, "from billing to triage"));
        let to_human =
            store.handoff("desk", "triage", NewParticipant::human("alice"), Some(String::new())).await.unwrap();
        assert_eq!((to_human.seq, to_human.content.as_str()), (4, "from triage to alice"));
        let listed = store.participants("desk").await.unwrap();
        assert_eq!(listed[0], triage, "an existing target keeps its role");
        assert_eq!(listed[1], alice);
        assert_eq!(listed.len(), 3);
        // Appends go on after handoffs, on the same seqs.
        assert_eq!(store.append("desk", NewMessage::assistant("fixed").with_tokens(2)).await.unwrap().seq, 5);
        let last = session(store, "desk").await;
        assert_eq!((last.version, last.message_count, last.token_count), (before.version + 4, 5, 7));
        assert_eq!(all_messages(store, "desk").await.iter().filter(|m| m.role == "handoff").count(), 3);
    }

    pub(crate) async fn handoff_from_a_non_participant_fails(ctx: Ctx) {
        let store = &*ctx.store;
        store.create_session(NewSession::new("h")).await.unwrap();
        store.add_participant("h", NewParticipant::agent("a")).await.unwrap();
        store.append("h", NewMessage::user("hi")).await.unwrap();
        let before = session(store, "h").await;
        let error = store.handoff("h", "stranger", NewParticipant::agent("b"), Some("x".into())).await.unwrap_err();
        assert_eq!(error, StoreError::ParticipantNotFound { id: "h".into(), name: "stranger".into() });
        assert_eq!(error.kind(), "participant_not_found");
        assert!(!error.is_transient());
        // A removed participant cannot hand off either.
        store.add_participant("h", NewParticipant::agent("gone")).await.unwrap();
        store.remove_participant("h", "gone").await.unwrap();
        assert!(matches!(
            store.handoff("h", "gone", NewParticipant::agent("b"), None).await,
            Err(StoreError::ParticipantNotFound { .. })
        ));
        // To itself, or with invalid names: invalid input.
        for (from, to) in [
            ("a", NewParticipant::agent("a")),
            ("", NewParticipant::agent("b")),
            ("a", NewParticipant::agent("")),
            ("a", NewParticipant::agent("b").with_role("")),
        ] {
            assert!(matches!(store.handoff("h", from, to, None).await, Err(StoreError::InvalidInput(_))));
        }
        // Nothing changed on the way.
        assert_eq!(session(store, "h").await, before);
        assert_eq!(all_messages(store, "h").await.len(), 1);
        assert_eq!(names(&store.participants("h").await.unwrap()), ["a"]);
    }

    pub(crate) async fn concurrent_handoffs_and_appends_are_gapless(ctx: Ctx) {
        const TASKS: u64 = 4;
        const EACH: u64 = 10;
        let store = ctx.store;
        let created = store.create_session(NewSession::new("relay")).await.unwrap();
        store.add_participant("relay", NewParticipant::agent("hub")).await.unwrap();
        // Appends and handoffs (hub → a fresh agent each time) race on one session.
        let tasks: Vec<_> = (0..TASKS * 2)
            .map(|task| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..EACH {
                        let message = if task % 2 == 0 {
                            store.append("relay", NewMessage::user(format!("t{task}-{i}")).with_tokens(1)).await
                        } else {
                            let to = NewParticipant::agent(format!("agent-{task}-{i}"));
                            store.handoff("relay", "hub", to, Some(format!("step {i}"))).await
                        };
                        seqs.push(message.unwrap().seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut acknowledged = BTreeSet::new();
        for seqs in join_all(tasks).await {
            assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]));
            for seq in seqs {
                assert!(acknowledged.insert(seq), "seq {seq} acknowledged twice");
            }
        }
        let total = TASKS * 2 * EACH;
        assert_eq!(acknowledged, (1..=total).collect());
        let messages = all_messages(&*store, "relay").await;
        assert_eq!(messages.iter().filter(|m| m.role == "handoff").count() as u64, TASKS * EACH);
        let after = session(&*store, "relay").await;
        assert_eq!(
            (after.message_count, after.version, after.token_count),
            (total, created.version + total, TASKS * EACH)
        );
        assert_eq!(store.participants("relay").await.unwrap().len() as u64, 1 + TASKS * EACH);
    }

    pub(crate) async fn delete_session_removes_participants(ctx: Ctx) {
        let store = &*ctx.store;
        store.create_session(NewSession::new("gone")).await.unwrap();
        store.create_session(NewSession::new("stays")).await.unwrap();
        store.add_participant("gone", NewParticipant::human("alice")).await.unwrap();
        store.handoff("gone", "alice", NewParticipant::agent("bot"), None).await.unwrap();
        store.add_participant("stays", NewParticipant::human("alice")).await.unwrap();
        assert!(store.delete_session("gone").await.unwrap());
        assert_eq!(store.participants("gone").await.unwrap_err(), StoreError::SessionNotFound { id: "gone".into() });
        assert_eq!(
            store.add_participant("gone", NewParticipant::agent("late")).await.unwrap_err(),
            StoreError::SessionNotFound { id: "gone".into() }
        );
        // The id used again starts without participants.
        store.create_session(NewSession::new("gone")).await.unwrap();
        assert_eq!(store.participants("gone").await.unwrap(), vec![]);
        assert!(matches!(
            store.handoff("gone", "alice", NewParticipant::agent("bot"), None).await,
            Err(StoreError::ParticipantNotFound { .. })
        ));
        let fresh = store.add_participant("gone", NewParticipant::agent("bot")).await.unwrap();
        assert_eq!(store.participants("gone").await.unwrap(), vec![fresh]);
        assert_eq!(names(&store.participants("stays").await.unwrap()), ["alice"]);
    }
}
