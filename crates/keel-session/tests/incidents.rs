//! The [`IncidentStore`] suite, run against every backend: `sqlite_incidents::*`,
//! `postgres_incidents::*` and `redis_incidents::*`.
//!
//! Each test gets its own store (see `tests/backends/mod.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

#[macro_use]
mod backends;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keel_session::{
    Effect, INCIDENT_CHANGED_JOB, Incident, IncidentStatus, IncidentStore, Job, JobStore, MAX_DETAIL_BYTES,
    MAX_RUNBOOK_BYTES, MAX_TITLE_LEN, NewIncidentEvent, Recorded, Runbook, StoreError, now_millis, open_stores,
};
use serde_json::{Value, json};

use crate::backends::Backend;

/// What a case gets: the incident store, the job store of the same backend object, and the URL.
struct Ctx {
    incidents: Arc<dyn IncidentStore>,
    jobs: Arc<dyn JobStore>,
    url: String,
}

/// Runs `case` on a fresh store of `backend` (see [`backends::run`]).
async fn run<F, Fut>(backend: Backend, name: &str, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let open = |url: String| async move {
        let stores = open_stores(&url).await?;
        assert_eq!(stores.sessions.backend(), format!("{backend:?}").to_lowercase());
        Ok(Ctx { incidents: stores.incidents, jobs: stores.jobs, url })
    };
    backends::run(backend, name, open, case).await;
}

backend_suite!(sqlite_incidents, postgres_incidents, redis_incidents:
    events_of_one_fingerprint_join_one_incident,
    statuses_and_timestamps_follow_the_effects,
    each_status_change_enqueues_one_change_job,
    resolve_or_note_with_nothing_open_opens_nothing,
    after_resolve_an_open_event_opens_a_new_incident,
    concurrent_events_of_a_new_fingerprint_make_one_incident,
    concurrent_opens_and_resolves_keep_one_unresolved_incident,
    incidents_are_listed_newest_first,
    incidents_are_resolved_by_hand,
    runbooks_are_kept_and_replaced,
    bad_input_is_refused,
    unknown_incidents_have_nothing,
    another_store_on_the_url_sees_the_incidents,
);

mod cases {
    use super::*;

    fn event(fingerprint: &str, name: &str, effect: Effect) -> NewIncidentEvent {
        NewIncidentEvent {
            fingerprint: fingerprint.to_owned(),
            kind: "upstream_down".to_owned(),
            title: format!("{fingerprint} is down"),
            upstream: Some("vllm-a".to_owned()),
            model: None,
            event: name.to_owned(),
            effect,
            detail: json!({ "cause": name }),
        }
    }

    async fn record(ctx: &Ctx, fingerprint: &str, name: &str, effect: Effect) -> Recorded {
        ctx.incidents.record_event(event(fingerprint, name, effect)).await.unwrap()
    }

    fn incident(recorded: &Recorded) -> &Incident {
        recorded.incident.as_ref().expect("the event joined or opened an incident")
    }

    /// The `incident.changed` jobs of the store, oldest first.
    async fn change_jobs(ctx: &Ctx) -> Vec<Job> {
        let mut jobs: Vec<Job> = ctx
            .jobs
            .list_jobs(None, 1_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|job| job.kind == INCIDENT_CHANGED_JOB)
            .collect();
        jobs.sort_by_key(|job| (job.created_at, job.key.clone()));
        jobs
    }

    fn near_now(at: i64) -> bool {
        (now_millis() - 60_000..=now_millis() + 1_000).contains(&at)
    }

    pub(crate) async fn events_of_one_fingerprint_join_one_incident(ctx: Ctx) {
        let first = record(&ctx, "up:a", "breaker.opened", Effect::Open).await;
        let opened = incident(&first).clone();
        assert!(opened.id.starts_with("inc_") && opened.id.len() == 36, "{}", opened.id);
        assert_eq!(first.previous, None);
        assert!(first.changed());
        assert_eq!(
            (opened.fingerprint.as_str(), opened.kind.as_str(), opened.title.as_str()),
            ("up:a", "upstream_down", "up:a is down")
        );
        assert_eq!((opened.upstream.as_deref(), opened.model.as_deref()), (Some("vllm-a"), None));
        assert_eq!((opened.status, opened.event_count), (IncidentStatus::Open, 1));
        assert!(near_now(opened.opened_at));
        assert_eq!((opened.updated_at, opened.mitigated_at, opened.resolved_at), (opened.opened_at, None, None));
        let stored = first.event.clone().unwrap();
        assert_eq!((stored.incident_id.as_str(), stored.seq, stored.at), (opened.id.as_str(), 1, opened.opened_at));
        assert_eq!((stored.event.as_str(), stored.effect), ("breaker.opened", Effect::Open));
        assert_eq!(stored.detail, json!({ "cause": "breaker.opened" }));

        // Later events join it, whatever their title; another fingerprint is another incident.
        let mut second = event("up:a", "probe.failed", Effect::Note);
        second.title = "another title".to_owned();
        second.detail = json!({ "z": 1, "a": [1, 2, { "nested": true }], "m": null });
        let second = ctx.incidents.record_event(second).await.unwrap();
        assert_eq!(incident(&second).id, opened.id);
        assert_eq!((second.previous, second.changed()), (Some(IncidentStatus::Open), false));
        let other = record(&ctx, "up:b", "breaker.opened", Effect::Open).await;
        assert_ne!(incident(&other).id, opened.id);
        let third = record(&ctx, "up:a", "breaker.opened", Effect::Open).await;
        assert_eq!((incident(&third).id.as_str(), third.event.as_ref().unwrap().seq), (opened.id.as_str(), 3));
        assert!(!third.changed(), "open again while open changes nothing");

        let now = ctx.incidents.incident(&opened.id).await.unwrap().unwrap();
        assert_eq!(&now, incident(&third));
        assert_eq!((now.title.as_str(), now.event_count, now.status), ("up:a is down", 3, IncidentStatus::Open));
        let timeline = ctx.incidents.incident_events(&opened.id).await.unwrap();
        let seqs: Vec<u64> = timeline.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let names: Vec<&str> = timeline.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["breaker.opened", "probe.failed", "breaker.opened"]);
        assert_eq!(timeline[0], stored);
        assert_eq!(&timeline[1], second.event.as_ref().unwrap());
        // The detail keeps its keys in their order.
        assert_eq!(timeline[1].detail.to_string(), r#"{"z":1,"a":[1,2,{"nested":true}],"m":null}"#);
        assert_eq!(ctx.incidents.incident_events(&incident(&other).id).await.unwrap().len(), 1);
    }

    pub(crate) async fn statuses_and_timestamps_follow_the_effects(ctx: Ctx) {
        let opened = record(&ctx, "fp", "breaker.opened", Effect::Open).await;
        let id = incident(&opened).id.clone();
        let opened_at = incident(&opened).opened_at;
        tokio::time::sleep(Duration::from_millis(5)).await;

        let mitigated = record(&ctx, "fp", "fallback.serving", Effect::Mitigate).await;
        let state = incident(&mitigated);
        assert_eq!(
            (state.status, mitigated.previous, mitigated.changed()),
            (IncidentStatus::Mitigated, Some(IncidentStatus::Open), true)
        );
        let mitigated_at = state.mitigated_at.expect("mitigated_at is set");
        assert!(mitigated_at > opened_at, "{mitigated_at} > {opened_at}");
        assert_eq!((state.opened_at, state.updated_at, state.resolved_at), (opened_at, mitigated_at, None));
        tokio::time::sleep(Duration::from_millis(5)).await;

        // Mitigated again: no change, mitigated_at stays.
        let again = record(&ctx, "fp", "fallback.serving", Effect::Mitigate).await;
        assert!(!again.changed());
        assert_eq!(incident(&again).mitigated_at, Some(mitigated_at));
        assert!(incident(&again).updated_at > mitigated_at);

        let reopened = record(&ctx, "fp", "fallback.failed", Effect::Open).await;
        let state = incident(&reopened);
        assert_eq!((state.status, reopened.previous), (IncidentStatus::Open, Some(IncidentStatus::Mitigated)));
        assert_eq!(state.mitigated_at, Some(mitigated_at), "the last time it was mitigated");
        tokio::time::sleep(Duration::from_millis(5)).await;

        let resolved = record(&ctx, "fp", "health.up", Effect::Resolve).await;
        let state = incident(&resolved).clone();
        assert_eq!(
            (state.id.as_str(), state.status, resolved.previous),
            (id.as_str(), IncidentStatus::Resolved, Some(IncidentStatus::Open))
        );
        let resolved_at = state.resolved_at.expect("resolved_at is set");
        assert!(resolved_at > mitigated_at);
        assert_eq!((state.updated_at, state.event_count, state.opened_at), (resolved_at, 5, opened_at));
        assert_eq!(ctx.incidents.incident(&id).await.unwrap().unwrap(), state);
        let effects: Vec<Effect> =
            ctx.incidents.incident_events(&id).await.unwrap().into_iter().map(|e| e.effect).collect();
        assert_eq!(effects, [Effect::Open, Effect::Mitigate, Effect::Mitigate, Effect::Open, Effect::Resolve]);

        // An incident opened by a Mitigate starts mitigated.
        let mitigated = record(&ctx, "fp-2", "fallback.serving", Effect::Mitigate).await;
        let state = incident(&mitigated);
        assert_eq!((state.status, mitigated.previous), (IncidentStatus::Mitigated, None));
        assert_eq!(state.mitigated_at, Some(state.opened_at));
    }

    pub(crate) async fn each_status_change_enqueues_one_change_job(ctx: Ctx) {
        let steps = [
            ("breaker.opened", Effect::Open),
            ("probe.failed", Effect::Note),
            ("fallback.serving", Effect::Mitigate),
            ("fallback.serving", Effect::Mitigate),
            ("fallback.failed", Effect::Open),
            ("health.up", Effect::Resolve),
        ];
        let mut recorded = Vec::new();
        for (name, effect) in steps {
            recorded.push(record(&ctx, "fp", name, effect).await);
        }
        let id = incident(&recorded[0]).id.clone();
        let jobs = change_jobs(&ctx).await;
        let keys: Vec<&str> = jobs.iter().map(|job| job.key.as_str()).collect();
        let expected: Vec<String> = [1, 3, 5, 6].iter().map(|seq| format!("{id}:{seq}")).collect();
        assert_eq!(keys, expected, "{jobs:#?}");
        let moves =
            [(None, "open"), (Some("open"), "mitigated"), (Some("mitigated"), "open"), (Some("open"), "resolved")];
        for ((job, seq), (from, to)) in jobs.iter().zip([1usize, 3, 5, 6]).zip(moves) {
            let at = recorded[seq - 1].event.as_ref().unwrap().at;
            assert_eq!(job.payload, json!({ "incident_id": id, "from": from, "to": to, "at": at }), "{job:?}");
            let order: Vec<&str> = job.payload.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(order, ["incident_id", "from", "to", "at"]);
            assert_eq!((job.run_at, job.max_attempts, job.attempts), (at, 10, 0));
            assert_eq!((job.worker.as_deref(), job.last_error.as_deref()), (None, None));
            assert_eq!(job.status, keel_session::JobStatus::Queued);
            assert_eq!(ctx.jobs.job(&job.id).await.unwrap().as_ref(), Some(job));
        }
        // A note on an open incident enqueues nothing.
        let note = record(&ctx, "fp-2", "breaker.opened", Effect::Open).await;
        let before = change_jobs(&ctx).await.len();
        record(&ctx, "fp-2", "probe.failed", Effect::Note).await;
        assert_eq!(change_jobs(&ctx).await.len(), before);
        assert_eq!(ctx.jobs.count_jobs().await.unwrap().queued, 5);
        // The change jobs are jobs like any other: a worker claims them.
        let claimed = ctx.jobs.claim("w", &[INCIDENT_CHANGED_JOB.to_owned()], now_millis() + 1_000, 30_000).await;
        let claimed = claimed.unwrap().expect("a change job is due");
        assert_eq!(claimed.key, format!("{id}:1"));
        assert!(incident(&note).id != id);
    }

    pub(crate) async fn resolve_or_note_with_nothing_open_opens_nothing(ctx: Ctx) {
        let nothing = Recorded { incident: None, event: None, previous: None };
        for effect in [Effect::Resolve, Effect::Note] {
            let recorded = record(&ctx, "quiet", "health.up", effect).await;
            assert_eq!(recorded, nothing);
            assert!(!recorded.changed());
        }
        assert!(ctx.incidents.list_incidents(None, 10).await.unwrap().is_empty());
        assert!(ctx.jobs.list_jobs(None, 10).await.unwrap().is_empty());
        // Nor after its incident is resolved.
        record(&ctx, "quiet", "breaker.opened", Effect::Open).await;
        record(&ctx, "quiet", "health.up", Effect::Resolve).await;
        assert_eq!(record(&ctx, "quiet", "health.up", Effect::Resolve).await, nothing);
        assert_eq!(record(&ctx, "quiet", "probe.ok", Effect::Note).await, nothing);
        let listed = ctx.incidents.list_incidents(None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].event_count, 2);
        assert_eq!(change_jobs(&ctx).await.len(), 2);
    }

    pub(crate) async fn after_resolve_an_open_event_opens_a_new_incident(ctx: Ctx) {
        let first = incident(&record(&ctx, "fp", "breaker.opened", Effect::Open).await).clone();
        record(&ctx, "fp", "health.up", Effect::Resolve).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
        let again = record(&ctx, "fp", "breaker.opened", Effect::Open).await;
        let second = incident(&again).clone();
        assert_ne!(second.id, first.id);
        assert_eq!((again.previous, second.status, second.event_count), (None, IncidentStatus::Open, 1));
        assert_eq!(again.event.as_ref().unwrap().seq, 1);
        assert_eq!(
            ctx.incidents.incident(&first.id).await.unwrap().unwrap().status,
            IncidentStatus::Resolved,
            "the old incident stays resolved"
        );
        // Events join the new one.
        let note = record(&ctx, "fp", "probe.failed", Effect::Note).await;
        assert_eq!((incident(&note).id.as_str(), incident(&note).event_count), (second.id.as_str(), 2));
        let ids: Vec<String> =
            ctx.incidents.list_incidents(None, 10).await.unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, [second.id.clone(), first.id.clone()]);
        let jobs = change_jobs(&ctx).await;
        let keys: BTreeSet<String> = jobs.into_iter().map(|job| job.key).collect();
        let expected: BTreeSet<String> =
            [format!("{}:1", first.id), format!("{}:2", first.id), format!("{}:1", second.id)].into();
        assert_eq!(keys, expected);
    }

    pub(crate) async fn concurrent_events_of_a_new_fingerprint_make_one_incident(ctx: Ctx) {
        let other = open_stores(&ctx.url).await.unwrap().incidents;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let incidents = if i % 2 == 0 { Arc::clone(&ctx.incidents) } else { Arc::clone(&other) };
                tokio::spawn(async move {
                    let mut event = event("storm", "breaker.opened", Effect::Open);
                    event.detail = json!({ "task": i });
                    incidents.record_event(event).await
                })
            })
            .collect();
        let mut recorded = Vec::new();
        for task in tasks {
            recorded.push(task.await.unwrap().unwrap());
        }
        let ids: BTreeSet<String> = recorded.iter().map(|r| incident(r).id.clone()).collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        let id = ids.into_iter().next().unwrap();
        assert_eq!(recorded.iter().filter(|r| r.previous.is_none()).count(), 1, "one event opened it");
        assert_eq!(recorded.iter().filter(|r| r.changed()).count(), 1);
        let mut seqs: Vec<u64> = recorded.iter().map(|r| r.event.as_ref().unwrap().seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());

        let stored = ctx.incidents.incident(&id).await.unwrap().unwrap();
        assert_eq!((stored.event_count, stored.status), (20, IncidentStatus::Open));
        let timeline = ctx.incidents.incident_events(&id).await.unwrap();
        assert_eq!(timeline.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
        let tasks: BTreeSet<i64> = timeline.iter().map(|e| e.detail["task"].as_i64().unwrap()).collect();
        assert_eq!(tasks, (0..20).collect());
        assert_eq!(ctx.incidents.list_incidents(None, 10).await.unwrap().len(), 1);
        let jobs = change_jobs(&ctx).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].key, format!("{id}:1"));
    }

    pub(crate) async fn concurrent_opens_and_resolves_keep_one_unresolved_incident(ctx: Ctx) {
        let other = open_stores(&ctx.url).await.unwrap().incidents;
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let incidents = if i % 2 == 0 { Arc::clone(&ctx.incidents) } else { Arc::clone(&other) };
                let effect = [Effect::Open, Effect::Open, Effect::Resolve, Effect::Note, Effect::Mitigate][i % 5];
                tokio::spawn(async move { incidents.record_event(event("flap", "x", effect)).await })
            })
            .collect();
        let mut recorded = Vec::new();
        for task in tasks {
            recorded.push(task.await.unwrap().unwrap());
        }
        let joined: Vec<&Recorded> = recorded.iter().filter(|r| r.incident.is_some()).collect();
        let incidents = ctx.incidents.list_incidents(None, 100).await.unwrap();
        let unresolved = incidents.iter().filter(|i| i.status != IncidentStatus::Resolved).count();
        assert!(unresolved <= 1, "{incidents:#?}");
        let events: u64 = incidents.iter().map(|i| i.event_count).sum();
        assert_eq!(events, joined.len() as u64);
        for stored in &incidents {
            let timeline = ctx.incidents.incident_events(&stored.id).await.unwrap();
            let seqs: Vec<u64> = timeline.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=stored.event_count).collect::<Vec<_>>());
            assert!(matches!(timeline[0].effect, Effect::Open | Effect::Mitigate), "{timeline:?}");
            let resolves = timeline.iter().filter(|e| e.effect == Effect::Resolve).count();
            assert!(resolves <= 1, "nothing joins a resolved incident: {timeline:?}");
            if stored.status == IncidentStatus::Resolved {
                assert_eq!(timeline.last().unwrap().effect, Effect::Resolve);
            }
        }
        let changes = joined.iter().filter(|r| r.changed()).count();
        assert_eq!(change_jobs(&ctx).await.len(), changes);
    }

    pub(crate) async fn incidents_are_listed_newest_first(ctx: Ctx) {
        let mut ids = Vec::new();
        for (fingerprint, effect) in
            [("a", Effect::Open), ("b", Effect::Mitigate), ("c", Effect::Open), ("d", Effect::Open)]
        {
            ids.push(incident(&record(&ctx, fingerprint, "x", effect).await).id.clone());
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        record(&ctx, "c", "y", Effect::Resolve).await;
        // An event on an older incident does not move it up: the order is by opening.
        record(&ctx, "a", "z", Effect::Note).await;
        let listed = |status, limit| {
            let incidents = Arc::clone(&ctx.incidents);
            async move {
                incidents.list_incidents(status, limit).await.unwrap().into_iter().map(|i| i.id).collect::<Vec<_>>()
            }
        };
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(listed(None, 10).await, newest_first);
        assert_eq!(listed(None, 2).await, newest_first[..2]);
        assert_eq!(listed(Some(IncidentStatus::Open), 10).await, [ids[3].clone(), ids[0].clone()]);
        assert_eq!(listed(Some(IncidentStatus::Open), 1).await, [ids[3].clone()]);
        assert_eq!(listed(Some(IncidentStatus::Mitigated), 10).await, [ids[1].clone()]);
        assert_eq!(listed(Some(IncidentStatus::Resolved), 10).await, [ids[2].clone()]);
        assert!(listed(None, 0).await.is_empty());
        let full = ctx.incidents.list_incidents(None, 10).await.unwrap();
        assert_eq!(full[3], ctx.incidents.incident(&ids[0]).await.unwrap().unwrap());
        assert_eq!(full[3].event_count, 2);
    }

    pub(crate) async fn incidents_are_resolved_by_hand(ctx: Ctx) {
        let opened = incident(&record(&ctx, "fp", "breaker.opened", Effect::Open).await).clone();
        let resolved = ctx
            .incidents
            .resolve_incident(&opened.id, "alice", Some("restarted vllm-a".to_owned()))
            .await
            .unwrap()
            .expect("the incident exists");
        assert_eq!(
            (resolved.id.as_str(), resolved.status, resolved.event_count),
            (opened.id.as_str(), IncidentStatus::Resolved, 2)
        );
        let resolved_at = resolved.resolved_at.expect("resolved_at");
        assert!(near_now(resolved_at));
        assert_eq!(ctx.incidents.incident(&opened.id).await.unwrap().unwrap(), resolved);
        let last = ctx.incidents.incident_events(&opened.id).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.seq, last.event.as_str(), last.effect, last.at),
            (2, "incident.resolved", Effect::Resolve, resolved_at)
        );
        assert_eq!(last.detail, json!({ "by": "alice", "fixed_by": "restarted vllm-a" }));
        let jobs = change_jobs(&ctx).await;
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].key, format!("{}:2", opened.id));
        assert_eq!(jobs[1].payload["from"], "open");
        assert_eq!(jobs[1].payload["to"], "resolved");

        let playbook = ctx.incidents.playbook("fp").await.unwrap();
        assert_eq!(playbook.len(), 1);
        assert_eq!(
            (playbook[0].fix.as_str(), playbook[0].incident_id.as_str()),
            ("restarted vllm-a", opened.id.as_str())
        );
        assert_eq!((playbook[0].fingerprint.as_str(), playbook[0].at), ("fp", resolved_at));

        // Resolved already: returned unchanged, but the playbook gains the fix.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let again = ctx.incidents.resolve_incident(&opened.id, "bob", Some("cleared the cache".to_owned())).await;
        assert_eq!(again.unwrap().unwrap(), resolved);
        assert_eq!(ctx.incidents.incident_events(&opened.id).await.unwrap().len(), 2);
        assert_eq!(change_jobs(&ctx).await.len(), 2);
        let fixes: Vec<String> = ctx.incidents.playbook("fp").await.unwrap().into_iter().map(|e| e.fix).collect();
        assert_eq!(fixes, ["cleared the cache", "restarted vllm-a"], "newest first");
        assert!(ctx.incidents.resolve_incident(&opened.id, "carol", None).await.unwrap().is_some());
        assert_eq!(ctx.incidents.playbook("fp").await.unwrap().len(), 2);

        // Without a fix: resolved, nothing in the playbook.
        let other = incident(&record(&ctx, "fp-2", "breaker.opened", Effect::Mitigate).await).clone();
        let resolved = ctx.incidents.resolve_incident(&other.id, "carol", None).await.unwrap().unwrap();
        assert_eq!(resolved.status, IncidentStatus::Resolved);
        let last = ctx.incidents.incident_events(&other.id).await.unwrap().pop().unwrap();
        assert_eq!(last.detail, json!({ "by": "carol", "fixed_by": null }));
        assert!(ctx.incidents.playbook("fp-2").await.unwrap().is_empty());
        let last_job = change_jobs(&ctx).await.pop().unwrap();
        assert_eq!(last_job.payload["from"], "mitigated");

        // The fingerprint opens a new incident afterwards; its playbook is the fingerprint's.
        let next = incident(&record(&ctx, "fp", "breaker.opened", Effect::Open).await).clone();
        assert_ne!(next.id, opened.id);
        assert_eq!(ctx.incidents.playbook("fp").await.unwrap().len(), 2);

        assert_eq!(ctx.incidents.resolve_incident("inc_unknown", "alice", None).await.unwrap(), None);
        assert!(ctx.incidents.playbook("nobody").await.unwrap().is_empty());
        // The playbook keeps the newest 20.
        for i in 0..22 {
            ctx.incidents.resolve_incident(&next.id, "alice", Some(format!("fix {i}"))).await.unwrap().unwrap();
        }
        let playbook = ctx.incidents.playbook("fp").await.unwrap();
        assert_eq!(playbook.len(), 20);
        assert_eq!(playbook[0].fix, "fix 21");
    }

    pub(crate) async fn runbooks_are_kept_and_replaced(ctx: Ctx) {
        let id = incident(&record(&ctx, "fp", "breaker.opened", Effect::Open).await).id.clone();
        assert_eq!(ctx.incidents.runbook(&id).await.unwrap(), None);
        let first = Runbook {
            incident_id: id.clone(),
            markdown: "# vllm-a is down\n\n1. Check the GPU.\n".to_owned(),
            source: "template".to_owned(),
            generated_at: 1_000,
        };
        ctx.incidents.put_runbook(first.clone()).await.unwrap();
        assert_eq!(ctx.incidents.runbook(&id).await.unwrap(), Some(first.clone()));
        let second = Runbook {
            markdown: "# better\n".to_owned(),
            source: "model:triage".to_owned(),
            generated_at: 2_000,
            ..first
        };
        ctx.incidents.put_runbook(second.clone()).await.unwrap();
        assert_eq!(ctx.incidents.runbook(&id).await.unwrap(), Some(second.clone()));

        let unknown = Runbook { incident_id: "inc_unknown".to_owned(), ..second.clone() };
        let error = ctx.incidents.put_runbook(unknown).await.unwrap_err();
        assert!(matches!(error, StoreError::InvalidInput(_)), "{error}");
        assert_eq!(ctx.incidents.runbook("inc_unknown").await.unwrap(), None);
        let huge = Runbook { markdown: "x".repeat(MAX_RUNBOOK_BYTES + 1), ..second.clone() };
        assert!(matches!(ctx.incidents.put_runbook(huge).await, Err(StoreError::InvalidInput(_))));
        let largest = Runbook { markdown: "y".repeat(MAX_RUNBOOK_BYTES), ..second.clone() };
        ctx.incidents.put_runbook(largest.clone()).await.unwrap();
        assert_eq!(ctx.incidents.runbook(&id).await.unwrap(), Some(largest));
    }

    pub(crate) async fn bad_input_is_refused(ctx: Ctx) {
        fn invalid<T: std::fmt::Debug>(result: Result<T, StoreError>) {
            assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");
        }
        let good = || event("fp", "breaker.opened", Effect::Open);
        let mut bad = Vec::new();
        for value in [String::new(), "a\nb".to_owned(), "x".repeat(256)] {
            bad.push(NewIncidentEvent { fingerprint: value.clone(), ..good() });
            bad.push(NewIncidentEvent { kind: value.clone(), ..good() });
            bad.push(NewIncidentEvent { event: value.clone(), ..good() });
            bad.push(NewIncidentEvent { upstream: Some(value.clone()), ..good() });
            bad.push(NewIncidentEvent { model: Some(value), ..good() });
        }
        bad.push(NewIncidentEvent { title: String::new(), ..good() });
        bad.push(NewIncidentEvent { title: "x".repeat(MAX_TITLE_LEN + 1), ..good() });
        bad.push(NewIncidentEvent { title: "two\nlines".to_owned(), ..good() });
        for detail in [json!([1, 2]), json!("text"), Value::Null, json!(3)] {
            bad.push(NewIncidentEvent { detail, ..good() });
        }
        bad.push(NewIncidentEvent { detail: json!({ "blob": "x".repeat(MAX_DETAIL_BYTES) }), ..good() });
        for event in bad {
            invalid(ctx.incidents.record_event(event).await);
        }
        assert!(ctx.incidents.list_incidents(None, 10).await.unwrap().is_empty());
        assert!(ctx.jobs.list_jobs(None, 10).await.unwrap().is_empty());
        // At the limits: accepted.
        let title = "t".repeat(MAX_TITLE_LEN);
        let blob = "x".repeat(MAX_DETAIL_BYTES - 20);
        let recorded = ctx
            .incidents
            .record_event(NewIncidentEvent { title: title.clone(), detail: json!({ "blob": blob }), ..good() })
            .await
            .unwrap();
        assert_eq!(incident(&recorded).title, title);
        let id = incident(&recorded).id.clone();
        assert_eq!(ctx.incidents.incident_events(&id).await.unwrap()[0].detail["blob"], blob.as_str());

        invalid(ctx.incidents.resolve_incident(&id, "alice", Some(String::new())).await);
        invalid(ctx.incidents.resolve_incident(&id, "alice", Some("   ".to_owned())).await);
        invalid(ctx.incidents.resolve_incident(&id, "alice", Some("x".repeat(MAX_TITLE_LEN + 1))).await);
        invalid(ctx.incidents.resolve_incident(&id, "", None).await);
        assert_eq!(ctx.incidents.incident(&id).await.unwrap().unwrap().status, IncidentStatus::Open);
        let runbook = Runbook { incident_id: id, markdown: "m".to_owned(), source: String::new(), generated_at: 0 };
        invalid(ctx.incidents.put_runbook(runbook).await);
    }

    pub(crate) async fn unknown_incidents_have_nothing(ctx: Ctx) {
        assert_eq!(ctx.incidents.incident("inc_unknown").await.unwrap(), None);
        assert!(ctx.incidents.incident_events("inc_unknown").await.unwrap().is_empty());
        assert_eq!(ctx.incidents.runbook("inc_unknown").await.unwrap(), None);
        record(&ctx, "fp", "breaker.opened", Effect::Open).await;
        assert_eq!(ctx.incidents.incident("inc_unknown").await.unwrap(), None);
        assert!(ctx.incidents.incident_events("inc_unknown").await.unwrap().is_empty());
    }

    pub(crate) async fn another_store_on_the_url_sees_the_incidents(ctx: Ctx) {
        let opened = incident(&record(&ctx, "fp", "breaker.opened", Effect::Open).await).clone();
        let other = open_stores(&ctx.url).await.unwrap();
        let joined = other.incidents.record_event(event("fp", "probe.failed", Effect::Note)).await.unwrap();
        assert_eq!((incident(&joined).id.as_str(), incident(&joined).event_count), (opened.id.as_str(), 2));
        let resolved = other.incidents.resolve_incident(&opened.id, "alice", Some("fixed".to_owned())).await;
        assert_eq!(resolved.unwrap().unwrap().status, IncidentStatus::Resolved);
        drop(other);
        let reopened = open_stores(&ctx.url).await.unwrap();
        let stored = reopened.incidents.incident(&opened.id).await.unwrap().unwrap();
        assert_eq!((stored.status, stored.event_count), (IncidentStatus::Resolved, 3));
        assert_eq!(reopened.incidents.playbook("fp").await.unwrap().len(), 1);
        assert_eq!(reopened.jobs.count_jobs().await.unwrap().queued, 2);
        assert_eq!(ctx.incidents.incident_events(&opened.id).await.unwrap().len(), 3);
    }
}
