//! Random sequences of arrivals, finishes, cancellations and time passing, against the real
//! `Admission` on a paused clock, checked through what it reports:
//!
//! - running never exceeds `max_concurrent` per model nor the upstream cap; queued never
//!   exceeds `max_queue`;
//! - nobody waits beside a free slot: a bucket with a queue is full, or its upstream is;
//! - every slot is held by a client that knows it (no leak), every queued request is one whose
//!   client still waits;
//! - in the end every request was admitted, shed or cancelled, and with all permits dropped
//!   nothing runs and no bucket is left.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use keel_admission::{Admission, BucketStats, Priority, Settings, Ticket};
use proptest::prelude::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const WAITING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const SHED: u8 = 3;
/// Set by the harness once an aborted task is gone.
const CANCELLED: u8 = 4;

#[derive(Debug, Clone)]
enum Event {
    Arrive {
        upstream: u8,
        model: u8,
        tenant: u8,
        priority: Priority,
        deadline_ms: Option<u64>,
    },
    Finish {
        pick: usize,
    },
    Cancel {
        pick: usize,
    },
    /// A finish and a cancellation with no chance to run in between: the slot may be handed
    /// to the request being cancelled.
    FinishThenCancel {
        finish: usize,
        cancel: usize,
    },
    Advance {
        ms: u64,
    },
}

fn event() -> impl Strategy<Value = Event> {
    let priority = proptest::sample::select(Priority::ALL.to_vec());
    prop_oneof![
        6 => (0u8..2, 0u8..3, 0u8..3, priority, proptest::option::of(0u64..3_000)).prop_map(
            |(upstream, model, tenant, priority, deadline_ms)| Event::Arrive { upstream, model, tenant, priority, deadline_ms }
        ),
        3 => any::<usize>().prop_map(|pick| Event::Finish { pick }),
        1 => any::<usize>().prop_map(|pick| Event::Cancel { pick }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(finish, cancel)| Event::FinishThenCancel { finish, cancel }),
        2 => (0u64..2_000).prop_map(|ms| Event::Advance { ms }),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (1usize..4, 0usize..4, proptest::option::of(1usize..6), 500u64..3_000, 1u64..3).prop_map(
        |(max_concurrent, max_queue, cap, max_wait_ms, aging_s)| Settings {
            max_concurrent,
            max_queue,
            max_wait: Duration::from_millis(max_wait_ms),
            upstream_max_concurrent: cap,
            aging: Duration::from_secs(aging_s),
        },
    )
}

struct Request {
    state: Arc<AtomicU8>,
    release: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Request {
    fn state(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }
}

struct World {
    admission: Admission,
    settings: Settings,
    requests: Vec<Request>,
}

impl World {
    fn pick(&self, pick: usize, state: u8) -> Option<usize> {
        let matching: Vec<usize> = (0..self.requests.len()).filter(|&i| self.requests[i].state() == state).collect();
        (!matching.is_empty()).then(|| matching[pick % matching.len()])
    }

    fn arrive(&mut self, upstream: u8, model: u8, ticket: Ticket) {
        let (release, released) = oneshot::channel::<()>();
        let state = Arc::new(AtomicU8::new(WAITING));
        let (admission, task_state) = (self.admission.clone(), Arc::clone(&state));
        let task = tokio::spawn(async move {
            match admission.admit(&format!("u{upstream}"), &format!("m{model}"), ticket).await {
                Ok(permit) => {
                    task_state.store(RUNNING, Ordering::SeqCst);
                    let _ = released.await;
                    drop(permit);
                    task_state.store(DONE, Ordering::SeqCst);
                }
                Err(_) => task_state.store(SHED, Ordering::SeqCst),
            }
        });
        self.requests.push(Request { state, release: Some(release), task });
    }

    fn finish(&mut self, pick: usize) {
        if let Some(i) = self.pick(pick, RUNNING) {
            self.release(i);
        }
    }

    /// Tells a running request to drop its permit (once).
    fn release(&mut self, i: usize) {
        if let Some(release) = self.requests[i].release.take() {
            let _ = release.send(());
        }
    }

    fn cancel(&mut self, pick: usize) {
        if let Some(i) = self.pick(pick, WAITING) {
            self.requests[i].task.abort();
            self.requests[i].state.store(CANCELLED, Ordering::SeqCst);
        }
    }

    async fn apply(&mut self, event: Event) {
        match event {
            Event::Arrive { upstream, model, tenant, priority, deadline_ms } => {
                let deadline = deadline_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
                let ticket =
                    Ticket { tenant: format!("t{tenant}").into(), priority, deadline, waited_before: Duration::ZERO };
                self.arrive(upstream, model, ticket);
            }
            Event::Finish { pick } => self.finish(pick),
            Event::Cancel { pick } => self.cancel(pick),
            Event::FinishThenCancel { finish, cancel } => {
                self.finish(finish);
                self.cancel(cancel);
            }
            Event::Advance { ms } => tokio::time::advance(Duration::from_millis(ms)).await,
        }
        settle().await;
    }

    fn count(&self, state: u8) -> usize {
        self.requests.iter().filter(|r| r.state() == state).count()
    }

    fn check(&self) {
        let stats = self.admission.stats();
        let cap = self.settings.upstream_max_concurrent.unwrap_or(usize::MAX);
        let mut per_upstream: HashMap<&str, usize> = HashMap::new();
        for bucket in &stats {
            assert!(bucket.running + bucket.queued > 0, "an idle bucket is listed: {bucket:?}");
            assert!(bucket.running <= self.settings.max_concurrent, "{bucket:?}");
            assert!(bucket.queued <= self.settings.max_queue, "{bucket:?}");
            *per_upstream.entry(&bucket.upstream).or_default() += bucket.running;
            let full = bucket.running == self.settings.max_concurrent || bucket.upstream_running >= cap;
            assert!(bucket.queued == 0 || full, "a waiter is stuck beside a free slot: {bucket:?}");
        }
        for (upstream, running) in &per_upstream {
            assert!(*running <= cap, "{upstream}: {running} running, cap {cap}");
            let reported = stats.iter().find(|b| &*b.upstream == *upstream).unwrap().upstream_running;
            assert_eq!(reported, *running, "{upstream}: upstream count disagrees with its buckets");
        }
        let total = |field: fn(&BucketStats) -> usize| stats.iter().map(field).sum::<usize>();
        assert_eq!(self.count(RUNNING), total(|b| b.running), "a slot without its client, or the reverse");
        assert_eq!(self.count(WAITING), total(|b| b.queued), "a queued request without its client, or the reverse");
    }

    /// Finishes everything running until nothing runs or waits.
    async fn drain(&mut self) {
        for _ in 0..10_000 {
            if self.count(RUNNING) == 0 && self.count(WAITING) == 0 {
                return;
            }
            for i in 0..self.requests.len() {
                if self.requests[i].state() == RUNNING {
                    self.release(i);
                }
            }
            tokio::time::advance(Duration::from_millis(10)).await;
            settle().await;
            self.check();
        }
        panic!("requests still waiting with nothing running");
    }
}

/// Lets every spawned task run until it waits again.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn limits_hold_nobody_is_stuck_and_no_slot_leaks(
        settings in settings(),
        events in proptest::collection::vec(event(), 1..80),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let admission = Admission::new(settings).unwrap();
            let mut world = World { admission, settings, requests: Vec::new() };
            for event in events {
                world.apply(event).await;
                world.check();
            }
            world.drain().await;
            assert!(world.admission.stats().is_empty(), "left behind: {:?}", world.admission.stats());
            let counters = world.admission.counters();
            let settled = counters.admitted + counters.shed_total() + counters.cancelled;
            assert_eq!(settled, world.requests.len() as u64, "{counters:?}");
            assert_eq!(counters.admitted as usize, world.count(DONE));
            assert_eq!(counters.shed_total() as usize, world.count(SHED));
        });
    }
}
