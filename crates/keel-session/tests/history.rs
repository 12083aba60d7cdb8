//! The [`HistoryStore`] suite, run against every backend: `sqlite_history::*`,
//! `postgres_history::*` and `redis_history::*`.
//!
//! Each test gets its own store (see `tests/backends/mod.rs`). Minutes are made up: the store
//! takes them from the caller.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, reason = "test code")]

#[macro_use]
mod backends;

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt as _;
use keel_session::{HistoryStore, MAX_SAMPLE_BYTES, MAX_SAMPLES, Sample, StoreError, open_stores};
use serde_json::{Value, json};

use crate::backends::Backend;

/// What a case gets: the history store, and its URL to open it again.
struct Ctx {
    history: Arc<dyn HistoryStore>,
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
        Ok(Ctx { history: stores.history, url })
    };
    backends::run(backend, name, open, case).await;
}

backend_suite!(sqlite_history, postgres_history, redis_history:
    samples_come_back_oldest_first,
    a_put_replaces_the_sample_of_its_minute,
    concurrent_puts_of_one_minute_keep_one_sample,
    sources_are_apart,
    since_minute_filters,
    at_most_max_samples_the_newest_are_returned,
    prune_deletes_older_samples_of_every_source,
    bad_input_is_refused,
    samples_survive_reopening,
);

mod cases {
    use super::*;

    /// The sample keel would store at `minute`.
    fn counters(minute: i64) -> Value {
        json!({ "requests": minute * 10, "errors": minute % 3, "upstreams": { "a": minute } })
    }

    async fn minutes(ctx: &Ctx, source: &str, since: i64) -> Vec<i64> {
        ctx.history.samples(source, since).await.unwrap().into_iter().map(|s| s.minute).collect()
    }

    pub(crate) async fn samples_come_back_oldest_first(ctx: Ctx) {
        assert_eq!(ctx.history.samples("gw-1", 0).await.unwrap(), vec![]);
        for minute in [29_000_003, 29_000_001, 29_000_002, 29_000_010] {
            ctx.history.put_sample("gw-1", minute, counters(minute)).await.unwrap();
        }
        let samples = ctx.history.samples("gw-1", 0).await.unwrap();
        let expected: Vec<Sample> = [29_000_001, 29_000_002, 29_000_003, 29_000_010]
            .into_iter()
            .map(|minute| Sample { minute, sample: counters(minute) })
            .collect();
        assert_eq!(samples, expected);
        // The sample keeps its key order, as put.
        ctx.history.put_sample("gw-1", 5, json!({ "z": 1, "a": [true, null], "é": "ü" })).await.unwrap();
        let first = &ctx.history.samples("gw-1", 0).await.unwrap()[0];
        assert_eq!((first.minute, first.sample.to_string()), (5, r#"{"z":1,"a":[true,null],"é":"ü"}"#.to_owned()));
        // Samples serialize as {"minute","sample"}, for the dashboard.
        assert_eq!(serde_json::to_value(first).unwrap()["minute"], json!(5));
    }

    pub(crate) async fn a_put_replaces_the_sample_of_its_minute(ctx: Ctx) {
        ctx.history.put_sample("gw", 100, json!({ "n": 1 })).await.unwrap();
        ctx.history.put_sample("gw", 101, json!({ "n": 2 })).await.unwrap();
        ctx.history.put_sample("gw", 100, json!({ "n": 3, "again": true })).await.unwrap();
        ctx.history.put_sample("gw", 100, json!({ "n": 4 })).await.unwrap();
        assert_eq!(
            ctx.history.samples("gw", 0).await.unwrap(),
            [Sample { minute: 100, sample: json!({ "n": 4 }) }, Sample { minute: 101, sample: json!({ "n": 2 }) }]
        );
        // The same sample again is still one.
        ctx.history.put_sample("gw", 101, json!({ "n": 2 })).await.unwrap();
        assert_eq!(minutes(&ctx, "gw", 0).await, [100, 101]);
        assert_eq!(ctx.history.prune_samples(i64::MAX).await.unwrap(), 2);
    }

    pub(crate) async fn concurrent_puts_of_one_minute_keep_one_sample(ctx: Ctx) {
        let puts = (0..32).map(|n| {
            let history = Arc::clone(&ctx.history);
            tokio::spawn(async move { history.put_sample("gw", 7, json!({ "writer": n })).await.unwrap() })
        });
        for put in puts.collect::<Vec<_>>() {
            put.await.unwrap();
        }
        let samples = ctx.history.samples("gw", 0).await.unwrap();
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert_eq!(samples[0].minute, 7);
        assert!((0..32).any(|n| samples[0].sample == json!({ "writer": n })), "{samples:?}");
    }

    pub(crate) async fn sources_are_apart(ctx: Ctx) {
        // `sources`, and names with the separators a backend might use, are sources like any.
        let sources = ["gw-1", "gw-2", "sources", "gw 1", "gw:1", "gw-1:x", "ключ"];
        for (n, source) in (1_i64..).zip(sources) {
            for minute in 0..n {
                ctx.history.put_sample(source, minute, json!({ "source": source })).await.unwrap();
            }
        }
        for (n, source) in (1_i64..).zip(sources) {
            let samples = ctx.history.samples(source, 0).await.unwrap();
            assert_eq!(samples.iter().map(|s| s.minute).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>(), "{source}");
            assert!(samples.iter().all(|s| s.sample == json!({ "source": source })), "{source}: {samples:?}");
        }
        assert_eq!(ctx.history.samples("gw-3", 0).await.unwrap(), vec![]);
        assert_eq!(ctx.history.samples("gw", 0).await.unwrap(), vec![]);
        let total: i64 = (1..=7).sum();
        assert_eq!(ctx.history.prune_samples(i64::MAX).await.unwrap(), u64::try_from(total).unwrap());
        for source in sources {
            assert_eq!(ctx.history.samples(source, i64::MIN).await.unwrap(), vec![], "{source}");
        }
    }

    pub(crate) async fn since_minute_filters(ctx: Ctx) {
        for minute in [10, 20, 30, 40] {
            ctx.history.put_sample("gw", minute, counters(minute)).await.unwrap();
        }
        assert_eq!(minutes(&ctx, "gw", i64::MIN).await, [10, 20, 30, 40]);
        assert_eq!(minutes(&ctx, "gw", -5).await, [10, 20, 30, 40]);
        assert_eq!(minutes(&ctx, "gw", 10).await, [10, 20, 30, 40]);
        assert_eq!(minutes(&ctx, "gw", 11).await, [20, 30, 40]);
        assert_eq!(minutes(&ctx, "gw", 30).await, [30, 40], "since_minute itself is included");
        assert_eq!(minutes(&ctx, "gw", 40).await, [40]);
        assert_eq!(minutes(&ctx, "gw", 41).await, Vec::<i64>::new());
        assert_eq!(minutes(&ctx, "gw", i64::MAX).await, Vec::<i64>::new());
    }

    pub(crate) async fn at_most_max_samples_the_newest_are_returned(ctx: Ctx) {
        // A week and a bit of minutes, put many at a time (a minute each would take a week).
        let start: i64 = 29_000_000;
        let over = 25_i64;
        let count = i64::try_from(MAX_SAMPLES).unwrap() + over;
        let history = &ctx.history;
        futures_util::stream::iter(start..start + count)
            .map(|minute| async move { history.put_sample("gw", minute, json!({ "m": minute })).await.unwrap() })
            .buffer_unordered(64)
            .collect::<Vec<()>>()
            .await;
        // Another source's samples do not count.
        history.put_sample("other", start + count, json!({})).await.unwrap();

        let samples = history.samples("gw", 0).await.unwrap();
        assert_eq!(samples.len(), MAX_SAMPLES);
        let first = start + over;
        assert_eq!(samples[0], Sample { minute: first, sample: json!({ "m": first }) }, "the newest are kept");
        assert_eq!(samples.last().unwrap().minute, start + count - 1);
        assert!(samples.windows(2).all(|pair| pair[1].minute == pair[0].minute + 1), "oldest first, none missing");
        // Fewer than the cap from since_minute: all of them.
        assert_eq!(
            minutes(&ctx, "gw", start + count - 3).await,
            [start + count - 3, start + count - 2, start + count - 1]
        );
        assert_eq!(history.samples("gw", start + over - 1).await.unwrap().len(), MAX_SAMPLES);
        assert_eq!(history.samples("gw", start + over + 1).await.unwrap().len(), MAX_SAMPLES - 1);
        assert_eq!(history.prune_samples(start + over).await.unwrap(), u64::try_from(over).unwrap());
        assert_eq!(history.samples("gw", 0).await.unwrap()[0].minute, start + over);
    }

    pub(crate) async fn prune_deletes_older_samples_of_every_source(ctx: Ctx) {
        assert_eq!(ctx.history.prune_samples(100).await.unwrap(), 0, "nothing stored");
        for minute in 1..=5 {
            ctx.history.put_sample("a", minute, counters(minute)).await.unwrap();
            ctx.history.put_sample("b", minute + 1, counters(minute + 1)).await.unwrap();
        }
        ctx.history.put_sample("c", 2, counters(2)).await.unwrap();
        // Older than 4: a 1, 2, 3; b 2, 3; c 2.
        assert_eq!(ctx.history.prune_samples(4).await.unwrap(), 6);
        assert_eq!(minutes(&ctx, "a", 0).await, [4, 5]);
        assert_eq!(minutes(&ctx, "b", 0).await, [4, 5, 6]);
        assert_eq!(minutes(&ctx, "c", 0).await, Vec::<i64>::new());
        assert_eq!(ctx.history.prune_samples(4).await.unwrap(), 0, "again: nothing left to prune");
        assert_eq!(ctx.history.prune_samples(i64::MIN).await.unwrap(), 0);
        // A source pruned empty takes samples again, and they are pruned like the others.
        ctx.history.put_sample("c", 9, counters(9)).await.unwrap();
        assert_eq!(ctx.history.samples("c", 0).await.unwrap(), [Sample { minute: 9, sample: counters(9) }]);
        assert_eq!(ctx.history.prune_samples(6).await.unwrap(), 4);
        assert_eq!(minutes(&ctx, "a", 0).await, Vec::<i64>::new());
        assert_eq!(minutes(&ctx, "b", 0).await, [6]);
        assert_eq!(ctx.history.prune_samples(10).await.unwrap(), 2);
        assert_eq!(minutes(&ctx, "c", 0).await, Vec::<i64>::new());
    }

    pub(crate) async fn bad_input_is_refused(ctx: Ctx) {
        fn invalid<T: std::fmt::Debug>(result: Result<T, StoreError>) {
            assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");
        }
        for bad in [String::new(), "a\nb".to_owned(), "gw\u{7}".to_owned(), "x".repeat(256)] {
            invalid(ctx.history.put_sample(&bad, 1, json!({})).await);
            invalid(ctx.history.samples(&bad, 0).await);
        }
        for sample in [json!([1, 2]), json!("text"), json!(3), json!(null), json!(true)] {
            invalid(ctx.history.put_sample("gw", 1, sample).await);
        }
        let fits = |len: usize| json!({ "blob": "x".repeat(len - r#"{"blob":""}"#.len()) });
        invalid(ctx.history.put_sample("gw", 1, fits(MAX_SAMPLE_BYTES + 1)).await);
        invalid(ctx.history.put_sample("gw", -1, json!({})).await);
        invalid(ctx.history.put_sample("gw", i64::MAX, json!({})).await);
        assert_eq!(ctx.history.samples("gw", i64::MIN).await.unwrap(), vec![], "nothing refused was stored");
        // The largest sample and the longest source fit.
        let source = "s".repeat(255);
        ctx.history.put_sample(&source, 1, fits(MAX_SAMPLE_BYTES)).await.unwrap();
        assert_eq!(ctx.history.samples(&source, 0).await.unwrap()[0].sample, fits(MAX_SAMPLE_BYTES));
    }

    pub(crate) async fn samples_survive_reopening(ctx: Ctx) {
        ctx.history.put_sample("gw", 1, counters(1)).await.unwrap();
        let other = open_stores(&ctx.url).await.unwrap().history;
        other.put_sample("gw", 2, counters(2)).await.unwrap();
        assert_eq!(minutes(&ctx, "gw", 0).await, [1, 2]);
        drop(other);
        drop(ctx.history);
        let reopened = open_stores(&ctx.url).await.unwrap().history;
        assert_eq!(
            reopened.samples("gw", 0).await.unwrap(),
            [Sample { minute: 1, sample: counters(1) }, Sample { minute: 2, sample: counters(2) }]
        );
    }
}
