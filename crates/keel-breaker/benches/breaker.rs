//! Cost of the breaker on the request path, with the real system clock.
//!
//! - `closed/*`: deciding in CLOSED (lock-free), and acquire + record of a success (takes the
//!   target's lock for the counters);
//! - `open/*`: rejecting in OPEN before the cooldown ends (lock-free: one atomic load plus a clock
//!   reading);
//! - `*/by_name`: the same through `Registry::try_acquire(&str)` (hash lookup under a read lock)
//!   instead of a cached `BreakerHandle`;
//! - `closed/acquire_record/manual_clock`: the same with a clock that is one atomic load, to
//!   separate the breaker's own cost from the OS clock reading;
//! - `*/contended`: the same while a second thread hammers the same target.
//!
//! Run: `cargo bench -p keel-breaker -- --warm-up-time 1 --measurement-time 3`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench setup")]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keel_breaker::{BreakerConfig, BreakerHandle, ManualClock, Outcome, Registry, State};
use keel_types::FailureClass;

const TARGET: &str = "local:llama3.2";

fn registry() -> Registry {
    let config =
        BreakerConfig { failure_threshold: 1, cooldown: Duration::from_secs(3_600), ..BreakerConfig::default() };
    let registry = Registry::new(&config).unwrap();
    // A few other targets so the by-name lookup is not in a one-entry map.
    for i in 0..16 {
        registry.breaker(&format!("upstream{i}:model"));
    }
    registry
}

fn open_registry() -> (Registry, BreakerHandle) {
    let registry = registry();
    let handle = registry.breaker(TARGET);
    let permit = handle.try_acquire().unwrap();
    permit.record(Outcome::failure(FailureClass::Refused, Duration::from_millis(1)));
    assert_eq!(handle.state(), State::Open);
    (registry, handle)
}

fn acquire_record(handle: &BreakerHandle) {
    let permit = handle.try_acquire().unwrap();
    black_box(permit.record(Outcome::success(Duration::from_millis(5))));
}

/// A second thread doing `work` in a loop until the guard is dropped.
struct Contender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Contender {
    fn start(work: impl Fn() + Send + 'static) -> Contender {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                work();
            }
        });
        Contender { stop, thread: Some(thread) }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn closed(c: &mut Criterion) {
    let registry = registry();
    let handle = registry.breaker(TARGET);
    c.bench_function("closed/decision", |b| b.iter(|| black_box(handle.try_acquire().is_ok())));
    c.bench_function("closed/acquire_record", |b| b.iter(|| acquire_record(&handle)));
    c.bench_function("closed/acquire_record/by_name", |b| {
        b.iter(|| {
            let permit = registry.try_acquire(black_box(TARGET)).unwrap();
            black_box(permit.record(Outcome::success(Duration::from_millis(5))));
        })
    });
    {
        // The same with a clock that is one atomic load: what the breaker itself costs.
        let manual = Registry::builder(BreakerConfig::default()).clock(ManualClock::new()).build().unwrap();
        let handle = manual.breaker(TARGET);
        c.bench_function("closed/acquire_record/manual_clock", |b| b.iter(|| acquire_record(&handle)));
    }
    {
        let other = handle.clone();
        let _contender = Contender::start(move || acquire_record(&other));
        c.bench_function("closed/decision/contended", |b| b.iter(|| black_box(handle.try_acquire().is_ok())));
        c.bench_function("closed/acquire_record/contended", |b| b.iter(|| acquire_record(&handle)));
    }
    assert_eq!(handle.state(), State::Closed);
}

fn open(c: &mut Criterion) {
    let (registry, handle) = open_registry();
    c.bench_function("open/reject", |b| b.iter(|| black_box(handle.try_acquire().is_err())));
    c.bench_function("open/reject/by_name", |b| b.iter(|| black_box(registry.try_acquire(black_box(TARGET)).is_err())));
    {
        let other = handle.clone();
        let _contender = Contender::start(move || {
            black_box(other.try_acquire().is_err());
        });
        c.bench_function("open/reject/contended", |b| b.iter(|| black_box(handle.try_acquire().is_err())));
    }
    {
        // The other thread records results on a CLOSED target of the same registry while this
        // one is rejected: rejection must not wait for anybody's lock.
        let busy = registry.breaker("busy:model");
        let _contender = Contender::start(move || acquire_record(&busy));
        c.bench_function("open/reject/neighbour_busy", |b| b.iter(|| black_box(handle.try_acquire().is_err())));
    }
    assert_eq!(handle.state(), State::Open);
}

criterion_group!(benches, closed, open);
criterion_main!(benches);
