//! Cost of admission on the request path (the fast path: a slot is free, nobody waits).
//!
//! - `fast_path/warm_bucket`: admit + drop while another request keeps the bucket alive;
//! - `fast_path/cold_bucket`: admit + drop of a bucket that is idle before and after, so it is
//!   created and forgotten each time (sequential traffic to one model);
//! - `handover`: a queued request handed the slot of a dropped permit (enqueue, drop, wake).
//!
//! Run: `cargo bench -p keel-admission -- --warm-up-time 1 --measurement-time 3`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "bench setup")]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use keel_admission::{Admission, Permit, Priority, Settings, Ticket};

/// Polls `admit` once: the fast path completes without waiting.
fn admit_now(admission: &Admission, ticket: Ticket) -> Permit {
    let admit = pin!(admission.admit("local", "llama3.2", ticket));
    match admit.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(permit)) => permit,
        other => panic!("not admitted at once: {other:?}"),
    }
}

fn fast_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _entered = runtime.enter();
    let admission = Admission::new(Settings::default()).unwrap();
    let ticket = Ticket::new("agent", Priority::Normal);
    let mut group = c.benchmark_group("fast_path");
    group.bench_function("cold_bucket", |b| b.iter(|| drop(black_box(admit_now(&admission, ticket.clone())))));
    let _keep_alive = admit_now(&admission, ticket.clone());
    group.bench_function("warm_bucket", |b| b.iter(|| drop(black_box(admit_now(&admission, ticket.clone())))));
    group.finish();
}

fn handover(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _entered = runtime.enter();
    let admission = Admission::new(Settings { max_concurrent: 1, ..Settings::default() }).unwrap();
    let ticket = Ticket::new("agent", Priority::Normal);
    let mut held = Some(admit_now(&admission, ticket.clone()));
    c.bench_function("handover", |b| {
        b.iter(|| {
            let mut waiting = pin!(admission.admit("local", "llama3.2", ticket.clone()));
            let mut context = Context::from_waker(Waker::noop());
            assert!(waiting.as_mut().poll(&mut context).is_pending());
            drop(held.take());
            let Poll::Ready(Ok(permit)) = waiting.poll(&mut context) else { panic!("no handover") };
            held = Some(permit);
        });
    });
}

criterion_group!(benches, fast_path, handover);
criterion_main!(benches);
