//! The [`JobStore`] suite, run against every backend: `sqlite_jobs::*`, `postgres_jobs::*` and
//! `redis_jobs::*`.
//!
//! Each test gets its own store (see `tests/backends/mod.rs`). Claims and worker steps take the
//! caller's clock (`now`), so leases are tested with made-up times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

#[macro_use]
mod backends;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keel_session::{
    Job, JobCounts, JobStatus, JobStore, MAX_ERROR_LEN, MAX_PAYLOAD_BYTES, NewJob, StoreError, now_millis, open_stores,
};
use serde_json::json;

use crate::backends::Backend;

/// What a case gets: the job store, and its URL to open it again.
struct Ctx {
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
        Ok(Ctx { jobs: stores.jobs, url })
    };
    backends::run(backend, name, open, case).await;
}

backend_suite!(sqlite_jobs, postgres_jobs, redis_jobs:
    enqueue_is_idempotent_by_kind_and_key,
    claims_take_due_jobs_oldest_first,
    claims_filter_by_kind,
    a_lease_keeps_a_job_until_it_ends,
    a_job_whose_leases_end_with_no_attempt_left_fails,
    only_the_holder_completes_retries_or_fails,
    retries_run_again_until_attempts_run_out,
    fail_gives_up_for_good,
    concurrent_claimers_take_each_job_once,
    jobs_are_counted_and_listed,
    finished_jobs_are_pruned,
    bad_input_is_refused,
    another_store_on_the_url_shares_the_jobs,
);

mod cases {
    use super::*;

    /// The claim of `worker` at `now` with a lease of a minute, of any kind.
    async fn claim(ctx: &Ctx, worker: &str, now: i64) -> Option<Job> {
        ctx.jobs.claim(worker, &[], now, 60_000).await.unwrap()
    }

    fn kinds(kinds: &[&str]) -> Vec<String> {
        kinds.iter().map(|kind| (*kind).to_owned()).collect()
    }

    pub(crate) async fn enqueue_is_idempotent_by_kind_and_key(ctx: Ctx) {
        let before = now_millis();
        let first = ctx.jobs.enqueue(NewJob::new("notify", "inc_1:1", json!({ "z": 1, "a": "b" }))).await.unwrap();
        assert!(first.created);
        let job = first.job;
        assert!(job.id.starts_with("job_") && job.id.len() == 36, "{}", job.id);
        assert_eq!((job.kind.as_str(), job.key.as_str()), ("notify", "inc_1:1"));
        assert_eq!(job.payload.to_string(), r#"{"z":1,"a":"b"}"#, "the payload keeps its key order");
        assert_eq!((job.status, job.attempts, job.max_attempts), (JobStatus::Queued, 0, 10));
        assert_eq!((job.worker.as_deref(), job.lease_until, job.last_error.as_deref()), (None, None, None));
        assert!(job.run_at >= before && job.run_at <= now_millis());
        assert!(job.created_at >= before - 1_000 && job.created_at <= now_millis() + 1_000);
        assert_eq!(job.updated_at, job.created_at);
        assert_eq!(ctx.jobs.job(&job.id).await.unwrap(), Some(job.clone()));

        // Same kind and key: the stored job, unchanged.
        let again = ctx
            .jobs
            .enqueue(NewJob::new("notify", "inc_1:1", json!({ "other": true })).at(5).with_max_attempts(1))
            .await
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.job, job);
        // Another kind, or another key: another job.
        let other_kind = ctx.jobs.enqueue(NewJob::new("runbook", "inc_1:1", json!({}))).await.unwrap();
        let other_key = ctx.jobs.enqueue(NewJob::new("notify", "inc_1:2", json!(null))).await.unwrap();
        assert!(other_kind.created && other_key.created);
        let ids: BTreeSet<String> = [&job, &other_kind.job, &other_key.job].iter().map(|j| j.id.clone()).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(other_key.job.payload, json!(null));
        assert_eq!(ctx.jobs.count_jobs().await.unwrap().queued, 3);
        // Also once it ran: the key stays taken.
        let claimed = claim(&ctx, "w", now_millis() + 1_000).await.unwrap();
        assert!(ctx.jobs.complete(&claimed.id, "w", now_millis()).await.unwrap());
        let after = ctx.jobs.enqueue(NewJob::new(claimed.kind.clone(), claimed.key.clone(), json!({}))).await.unwrap();
        assert!(!after.created);
        assert_eq!((after.job.id, after.job.status), (claimed.id, JobStatus::Done));
    }

    pub(crate) async fn claims_take_due_jobs_oldest_first(ctx: Ctx) {
        let t = now_millis();
        let later = ctx.jobs.enqueue(NewJob::new("k", "later", json!({})).at(t + 10_000)).await.unwrap().job;
        let second = ctx.jobs.enqueue(NewJob::new("k", "second", json!({})).at(t - 100)).await.unwrap().job;
        let first = ctx.jobs.enqueue(NewJob::new("k", "first", json!({})).at(t - 200)).await.unwrap().job;
        let third = ctx.jobs.enqueue(NewJob::new("k", "third", json!({})).at(t)).await.unwrap().job;

        let claimed = claim(&ctx, "w1", t).await.expect("a due job");
        assert_eq!(claimed.id, first.id);
        assert_eq!((claimed.status, claimed.attempts, claimed.worker.as_deref()), (JobStatus::Running, 1, Some("w1")));
        assert_eq!((claimed.lease_until, claimed.updated_at, claimed.run_at), (Some(t + 60_000), t, t - 200));
        assert_eq!(ctx.jobs.job(&first.id).await.unwrap(), Some(claimed));
        assert_eq!(claim(&ctx, "w1", t).await.unwrap().id, second.id);
        assert_eq!(claim(&ctx, "w2", t).await.unwrap().id, third.id, "run_at = now is due");
        assert_eq!(claim(&ctx, "w1", t).await, None, "the last one is not due yet");
        assert_eq!(claim(&ctx, "w1", t + 9_999).await, None);
        assert_eq!(claim(&ctx, "w1", t + 10_000).await.unwrap().id, later.id);
        assert_eq!(claim(&ctx, "w1", t + 10_000).await, None);
        assert_eq!(ctx.jobs.count_jobs().await.unwrap(), JobCounts { running: 4, ..JobCounts::default() });
    }

    pub(crate) async fn claims_filter_by_kind(ctx: Ctx) {
        let t = now_millis();
        let mail = ctx.jobs.enqueue(NewJob::new("mail", "1", json!({})).at(t - 30)).await.unwrap().job;
        let hook = ctx.jobs.enqueue(NewJob::new("hook", "1", json!({})).at(t - 20)).await.unwrap().job;
        let page = ctx.jobs.enqueue(NewJob::new("page", "1", json!({})).at(t - 10)).await.unwrap().job;
        let only = |list: &[&str]| {
            let jobs = Arc::clone(&ctx.jobs);
            let list = kinds(list);
            async move { jobs.claim("w", &list, t, 1_000).await.unwrap().map(|job| job.id) }
        };
        assert_eq!(only(&["nothing"]).await, None);
        assert_eq!(only(&["hook", "page"]).await, Some(hook.id));
        assert_eq!(only(&["hook"]).await, None);
        assert_eq!(only(&["page", "mail"]).await, Some(mail.id));
        assert_eq!(only(&[]).await, Some(page.id), "no kinds: any kind");
        assert_eq!(only(&[]).await, None);
    }

    pub(crate) async fn a_lease_keeps_a_job_until_it_ends(ctx: Ctx) {
        let t = now_millis();
        let job = ctx.jobs.enqueue(NewJob::new("k", "1", json!({})).at(t)).await.unwrap().job;
        let held = ctx.jobs.claim("w1", &[], t, 1_000).await.unwrap().unwrap();
        assert_eq!((held.id.as_str(), held.lease_until, held.attempts), (job.id.as_str(), Some(t + 1_000), 1));
        assert_eq!(ctx.jobs.claim("w2", &[], t + 500, 1_000).await.unwrap(), None);
        assert_eq!(ctx.jobs.claim("w2", &[], t + 1_000, 1_000).await.unwrap(), None, "the lease lasts to its end");
        // Lease over (keel was killed): another worker takes it, and the attempt counts.
        let taken = ctx.jobs.claim("w2", &[], t + 1_001, 1_000).await.unwrap().expect("the lease ended");
        assert_eq!((taken.id.as_str(), taken.worker.as_deref()), (job.id.as_str(), Some("w2")));
        assert_eq!((taken.attempts, taken.lease_until, taken.status), (2, Some(t + 2_001), JobStatus::Running));
        // The first worker comes back too late.
        assert!(!ctx.jobs.complete(&job.id, "w1", t + 1_100).await.unwrap());
        assert!(!ctx.jobs.retry(&job.id, "w1", "late", t + 5_000, t + 1_100).await.unwrap());
        assert!(!ctx.jobs.fail(&job.id, "w1", "late", t + 1_100).await.unwrap());
        assert_eq!(ctx.jobs.job(&job.id).await.unwrap().unwrap(), taken);
        assert!(ctx.jobs.complete(&job.id, "w2", t + 1_200).await.unwrap());
        let done = ctx.jobs.job(&job.id).await.unwrap().unwrap();
        assert_eq!((done.status, done.worker.as_deref(), done.lease_until), (JobStatus::Done, Some("w2"), None));
        assert_eq!((done.updated_at, done.attempts), (t + 1_200, 2));
        // Done is done: no claim, no second completion.
        assert_eq!(ctx.jobs.claim("w3", &[], t + 100_000, 1_000).await.unwrap(), None);
        assert!(!ctx.jobs.complete(&job.id, "w2", t + 1_300).await.unwrap());
    }

    pub(crate) async fn a_job_whose_leases_end_with_no_attempt_left_fails(ctx: Ctx) {
        // A handler that crashes keel (or hangs past its lease) every time: the lease ends twice.
        let t = now_millis();
        let job = ctx.jobs.enqueue(NewJob::new("k", "crash", json!({})).at(t).with_max_attempts(2)).await.unwrap().job;
        let behind = ctx.jobs.enqueue(NewJob::new("k", "behind", json!({})).at(t + 10)).await.unwrap().job;
        let first = ctx.jobs.claim("w1", &[], t, 1_000).await.unwrap().unwrap();
        assert_eq!((first.id.as_str(), first.attempts), (job.id.as_str(), 1));
        let second = ctx.jobs.claim("w2", &[], t + 1_001, 1_000).await.unwrap().unwrap();
        assert_eq!((second.id.as_str(), second.attempts), (job.id.as_str(), 2), "the lease ended: claimed again");
        // Its last lease ends: a claim of other kinds leaves it alone.
        let later = t + 2_002;
        assert_eq!(ctx.jobs.claim("w3", &kinds(&["other"]), later, 1_000).await.unwrap(), None);
        assert_eq!(ctx.jobs.job(&job.id).await.unwrap().unwrap(), second);
        // A claim of its kind gives up on it and takes the job behind it instead.
        let claimed = ctx.jobs.claim("w3", &kinds(&["k"]), later, 1_000).await.unwrap().expect("the job behind");
        assert_eq!(
            (claimed.id.as_str(), claimed.attempts, claimed.worker.as_deref()),
            (behind.id.as_str(), 1, Some("w3"))
        );
        let failed = ctx.jobs.job(&job.id).await.unwrap().unwrap();
        assert_eq!((failed.status, failed.attempts, failed.max_attempts), (JobStatus::Failed, 2, 2));
        assert_eq!(
            failed.last_error.as_deref(),
            Some("gave up: its lease ended 2 times without the job finishing (keel stopped or the handler hung)")
        );
        assert_eq!((failed.updated_at, failed.lease_until, failed.run_at), (later, None, t));
        assert_eq!(failed.worker.as_deref(), Some("w2"), "the last worker is kept");
        assert_eq!(ctx.jobs.count_jobs().await.unwrap(), JobCounts { running: 1, failed: 1, ..JobCounts::default() });
        let listed = ctx.jobs.list_jobs(Some(JobStatus::Failed), 10).await.unwrap();
        assert_eq!(listed, std::slice::from_ref(&failed));
        // It is not claimed a third time, however late; the holder of its last lease is too late.
        assert_eq!(ctx.jobs.claim("w4", &[], later + 500, 1_000).await.unwrap(), None);
        let again = ctx.jobs.claim("w4", &[], t + 100_000, 1_000).await.unwrap().expect("the other lease ended");
        assert_eq!((again.id.as_str(), again.attempts), (behind.id.as_str(), 2), "it had attempts left");
        assert_eq!(ctx.jobs.claim("w4", &[], t + 100_000, 1_000).await.unwrap(), None);
        assert!(!ctx.jobs.complete(&job.id, "w2", t + 100_000).await.unwrap());
        assert!(!ctx.jobs.retry(&job.id, "w2", "late", t + 100_000, t + 100_000).await.unwrap());
        assert_eq!(ctx.jobs.job(&job.id).await.unwrap().unwrap(), failed);
        // A failed job like any other: pruned once old.
        assert_eq!(ctx.jobs.prune_jobs(later).await.unwrap(), 0);
        assert_eq!(ctx.jobs.prune_jobs(later + 1).await.unwrap(), 1);
        assert_eq!(ctx.jobs.job(&job.id).await.unwrap(), None);
        assert_eq!(ctx.jobs.count_jobs().await.unwrap(), JobCounts { running: 1, ..JobCounts::default() });
    }

    pub(crate) async fn only_the_holder_completes_retries_or_fails(ctx: Ctx) {
        let t = now_millis();
        let job = ctx.jobs.enqueue(NewJob::new("k", "1", json!({})).at(t)).await.unwrap().job;
        // Queued, not held by anyone.
        assert!(!ctx.jobs.complete(&job.id, "w", t).await.unwrap());
        assert!(!ctx.jobs.retry(&job.id, "w", "e", t, t).await.unwrap());
        assert!(!ctx.jobs.fail(&job.id, "w", "e", t).await.unwrap());
        assert_eq!(ctx.jobs.job(&job.id).await.unwrap().unwrap(), job);
        claim(&ctx, "holder", t).await.unwrap();
        assert!(!ctx.jobs.complete(&job.id, "other", t).await.unwrap());
        assert!(!ctx.jobs.retry(&job.id, "other", "e", t, t).await.unwrap());
        assert!(!ctx.jobs.fail(&job.id, "other", "e", t).await.unwrap());
        assert_eq!(ctx.jobs.job(&job.id).await.unwrap().unwrap().status, JobStatus::Running);
        // Unknown ids.
        assert!(!ctx.jobs.complete("job_unknown", "holder", t).await.unwrap());
        assert!(!ctx.jobs.retry("job_unknown", "holder", "e", t, t).await.unwrap());
        assert!(!ctx.jobs.fail("job_unknown", "holder", "e", t).await.unwrap());
        assert_eq!(ctx.jobs.job("job_unknown").await.unwrap(), None);
        assert!(ctx.jobs.complete(&job.id, "holder", t + 1).await.unwrap());
    }

    pub(crate) async fn retries_run_again_until_attempts_run_out(ctx: Ctx) {
        let t = now_millis();
        let job = ctx.jobs.enqueue(NewJob::new("k", "1", json!({})).at(t).with_max_attempts(3)).await.unwrap().job;
        for attempt in 1..=2_u32 {
            let now = t + i64::from(attempt) * 1_000;
            let claimed = claim(&ctx, "w", now).await.unwrap();
            assert_eq!((claimed.id.as_str(), claimed.attempts), (job.id.as_str(), attempt));
            assert!(ctx.jobs.retry(&job.id, "w", &format!("failure {attempt}"), now + 500, now + 10).await.unwrap());
            let queued = ctx.jobs.job(&job.id).await.unwrap().unwrap();
            assert_eq!((queued.status, queued.run_at, queued.lease_until), (JobStatus::Queued, now + 500, None));
            assert_eq!((queued.last_error, queued.updated_at), (Some(format!("failure {attempt}")), now + 10));
            assert_eq!(queued.attempts, attempt);
            assert_eq!(claim(&ctx, "w", now + 499).await, None, "not before its run_at");
        }
        // The third and last attempt fails for good.
        let claimed = claim(&ctx, "w", t + 3_000).await.unwrap();
        assert_eq!(claimed.attempts, 3);
        let long = "é".repeat(MAX_ERROR_LEN);
        assert!(ctx.jobs.retry(&job.id, "w", &long, t + 4_000, t + 3_010).await.unwrap());
        let failed = ctx.jobs.job(&job.id).await.unwrap().unwrap();
        assert_eq!((failed.status, failed.attempts, failed.lease_until), (JobStatus::Failed, 3, None));
        let error = failed.last_error.unwrap();
        assert!(error.len() <= MAX_ERROR_LEN && error.len() >= MAX_ERROR_LEN - 1, "cut to {}", error.len());
        assert!(long.starts_with(&error));
        assert_eq!(claim(&ctx, "w", t + 100_000).await, None);
        assert!(!ctx.jobs.retry(&job.id, "w", "again", t + 5_000, t + 5_000).await.unwrap());

        // One attempt only: the first retry fails it.
        let once = ctx.jobs.enqueue(NewJob::new("k", "2", json!({})).at(t).with_max_attempts(1)).await.unwrap().job;
        claim(&ctx, "w", t + 10).await.unwrap();
        assert!(ctx.jobs.retry(&once.id, "w", "no", t + 20, t + 10).await.unwrap());
        assert_eq!(ctx.jobs.job(&once.id).await.unwrap().unwrap().status, JobStatus::Failed);
    }

    pub(crate) async fn fail_gives_up_for_good(ctx: Ctx) {
        let t = now_millis();
        let job = ctx.jobs.enqueue(NewJob::new("k", "1", json!({})).at(t)).await.unwrap().job;
        claim(&ctx, "w", t).await.unwrap();
        assert!(ctx.jobs.fail(&job.id, "w", "the handler refused it", t + 5).await.unwrap());
        let failed = ctx.jobs.job(&job.id).await.unwrap().unwrap();
        assert_eq!((failed.status, failed.attempts, failed.updated_at), (JobStatus::Failed, 1, t + 5));
        assert_eq!(
            (failed.last_error.as_deref(), failed.worker.as_deref()),
            (Some("the handler refused it"), Some("w"))
        );
        assert_eq!(claim(&ctx, "w", t + 100_000).await, None);
        assert!(!ctx.jobs.fail(&job.id, "w", "again", t + 6).await.unwrap());
        assert!(!ctx.jobs.complete(&job.id, "w", t + 6).await.unwrap());
    }

    pub(crate) async fn concurrent_claimers_take_each_job_once(ctx: Ctx) {
        let t = now_millis();
        for i in 0..30 {
            ctx.jobs.enqueue(NewJob::new("k", format!("job-{i}"), json!({ "i": i })).at(t - 1_000 + i)).await.unwrap();
        }
        let other = open_stores(&ctx.url).await.unwrap().jobs;
        let workers: Vec<_> = (0..10)
            .map(|w| {
                let jobs = if w % 2 == 0 { Arc::clone(&ctx.jobs) } else { Arc::clone(&other) };
                tokio::spawn(async move {
                    let worker = format!("worker-{w}");
                    let mut taken = Vec::new();
                    while let Some(job) = jobs.claim(&worker, &[], t, 60_000).await.unwrap() {
                        assert_eq!(job.worker.as_deref(), Some(worker.as_str()));
                        assert!(jobs.complete(&job.id, &worker, t).await.unwrap());
                        taken.push(job.key);
                    }
                    taken
                })
            })
            .collect();
        let mut taken = Vec::new();
        for worker in workers {
            taken.extend(worker.await.unwrap());
        }
        assert_eq!(taken.len(), 30, "{taken:?}");
        let unique: BTreeSet<&String> = taken.iter().collect();
        assert_eq!(unique.len(), 30, "a job was claimed twice: {taken:?}");
        assert_eq!(ctx.jobs.count_jobs().await.unwrap(), JobCounts { done: 30, ..JobCounts::default() });
        assert!(ctx.jobs.list_jobs(None, 100).await.unwrap().iter().all(|job| job.attempts == 1));
    }

    pub(crate) async fn jobs_are_counted_and_listed(ctx: Ctx) {
        assert_eq!(ctx.jobs.count_jobs().await.unwrap(), JobCounts::default());
        assert!(ctx.jobs.list_jobs(None, 10).await.unwrap().is_empty());
        let t = now_millis();
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(ctx.jobs.enqueue(NewJob::new("k", format!("{i}"), json!({})).at(t + i)).await.unwrap().job.id);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        // 0 done, 1 failed, 2 running, 3 and 4 queued.
        let now = t + 1;
        assert_eq!(claim(&ctx, "w", now).await.unwrap().id, ids[0]);
        assert!(ctx.jobs.complete(&ids[0], "w", now).await.unwrap());
        assert_eq!(claim(&ctx, "w", now).await.unwrap().id, ids[1]);
        assert!(ctx.jobs.fail(&ids[1], "w", "bad", now).await.unwrap());
        assert_eq!(ctx.jobs.claim("w", &[], t + 2, 60_000).await.unwrap().unwrap().id, ids[2]);
        assert_eq!(ctx.jobs.count_jobs().await.unwrap(), JobCounts { queued: 2, running: 1, done: 1, failed: 1 });

        let listed = |status, limit| {
            let jobs = Arc::clone(&ctx.jobs);
            async move { jobs.list_jobs(status, limit).await.unwrap().into_iter().map(|job| job.id).collect::<Vec<_>>() }
        };
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(listed(None, 10).await, newest_first);
        assert_eq!(listed(None, 2).await, newest_first[..2]);
        assert!(listed(None, 0).await.is_empty());
        assert_eq!(listed(Some(JobStatus::Queued), 10).await, [ids[4].clone(), ids[3].clone()]);
        assert_eq!(listed(Some(JobStatus::Queued), 1).await, [ids[4].clone()]);
        assert_eq!(listed(Some(JobStatus::Running), 10).await, [ids[2].clone()]);
        assert_eq!(listed(Some(JobStatus::Done), 10).await, [ids[0].clone()]);
        assert_eq!(listed(Some(JobStatus::Failed), 10).await, [ids[1].clone()]);
        let full = ctx.jobs.list_jobs(Some(JobStatus::Failed), 10).await.unwrap();
        assert_eq!(full, [ctx.jobs.job(&ids[1]).await.unwrap().unwrap()]);
    }

    pub(crate) async fn finished_jobs_are_pruned(ctx: Ctx) {
        let t = now_millis();
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(ctx.jobs.enqueue(NewJob::new("k", format!("{i}"), json!({})).at(t + i)).await.unwrap().job.id);
        }
        // Done at t+100 and t+200, failed at t+100 and t+200; one running, one queued.
        for (i, id) in ids.iter().enumerate().take(5) {
            assert_eq!(&claim(&ctx, "w", t + 10).await.unwrap().id, id);
            let at = t + 100 * (1 + i64::from(i % 2 == 1));
            match i {
                0 | 1 => assert!(ctx.jobs.complete(id, "w", at).await.unwrap()),
                2 | 3 => assert!(ctx.jobs.fail(id, "w", "e", at).await.unwrap()),
                _ => {}
            }
        }
        assert_eq!(ctx.jobs.prune_jobs(t + 100).await.unwrap(), 0, "updated before, not at");
        assert_eq!(ctx.jobs.prune_jobs(t + 101).await.unwrap(), 2);
        assert_eq!(ctx.jobs.job(&ids[0]).await.unwrap(), None);
        assert_eq!(ctx.jobs.job(&ids[2]).await.unwrap(), None);
        assert!(ctx.jobs.job(&ids[1]).await.unwrap().is_some());
        assert_eq!(ctx.jobs.count_jobs().await.unwrap(), JobCounts { queued: 1, running: 1, done: 1, failed: 1 });
        // Running and queued jobs stay, however old.
        assert_eq!(ctx.jobs.prune_jobs(i64::MAX).await.unwrap(), 2);
        assert_eq!(ctx.jobs.count_jobs().await.unwrap(), JobCounts { queued: 1, running: 1, done: 0, failed: 0 });
        assert_eq!(ctx.jobs.prune_jobs(i64::MAX).await.unwrap(), 0);
        // A pruned key may be enqueued again: it is a new job.
        let again = ctx.jobs.enqueue(NewJob::new("k", "0", json!({}))).await.unwrap();
        assert!(again.created);
        assert_ne!(again.job.id, ids[0]);
    }

    pub(crate) async fn bad_input_is_refused(ctx: Ctx) {
        fn invalid<T: std::fmt::Debug>(result: Result<T, StoreError>) {
            assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");
        }
        for bad in [String::new(), "a\nb".to_owned(), "x".repeat(256)] {
            invalid(ctx.jobs.enqueue(NewJob::new(bad.clone(), "k", json!({}))).await);
            invalid(ctx.jobs.enqueue(NewJob::new("k", bad.clone(), json!({}))).await);
            invalid(ctx.jobs.claim(&bad, &[], 0, 1_000).await);
            invalid(ctx.jobs.claim("w", std::slice::from_ref(&bad), 0, 1_000).await);
        }
        invalid(ctx.jobs.enqueue(NewJob::new("k", "k", json!({})).with_max_attempts(0)).await);
        invalid(ctx.jobs.enqueue(NewJob::new("k", "k", json!({ "blob": "x".repeat(MAX_PAYLOAD_BYTES) }))).await);
        assert_eq!(ctx.jobs.count_jobs().await.unwrap(), JobCounts::default());
        // At the limit: accepted.
        let blob = "x".repeat(MAX_PAYLOAD_BYTES - 20);
        let job = ctx.jobs.enqueue(NewJob::new("k", "k", json!({ "blob": blob }))).await.unwrap().job;
        assert_eq!(ctx.jobs.job(&job.id).await.unwrap().unwrap().payload["blob"], blob.as_str());
        invalid(ctx.jobs.complete(&job.id, "", 0).await);
        invalid(ctx.jobs.retry(&job.id, "", "e", 0, 0).await);
        invalid(ctx.jobs.fail(&job.id, "", "e", 0).await);
    }

    pub(crate) async fn another_store_on_the_url_shares_the_jobs(ctx: Ctx) {
        let t = now_millis();
        let job = ctx.jobs.enqueue(NewJob::new("k", "shared", json!({ "n": 1 })).at(t)).await.unwrap().job;
        let other = open_stores(&ctx.url).await.unwrap().jobs;
        assert!(!other.enqueue(NewJob::new("k", "shared", json!({}))).await.unwrap().created);
        let held = other.claim("there", &[], t, 1_000).await.unwrap().unwrap();
        assert_eq!(held.id, job.id);
        assert_eq!(claim(&ctx, "here", t + 10).await, None);
        drop(other);
        let reopened = open_stores(&ctx.url).await.unwrap().jobs;
        assert!(reopened.complete(&job.id, "there", t + 20).await.unwrap());
        assert_eq!(ctx.jobs.job(&job.id).await.unwrap().unwrap().status, JobStatus::Done);
    }
}
