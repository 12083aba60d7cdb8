//! Admission as the proxy uses it, on a paused clock: waits, aging, deadlines, cancellation,
//! upstream caps, stats and counters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use keel_admission::{Admission, Error, Permit, Priority, Settings, Shed, ShedReason, Ticket};
use tokio::time::{Instant, sleep};

const SEC: Duration = Duration::from_secs(1);

fn admission(settings: Settings) -> Admission {
    Admission::new(settings).unwrap()
}

fn one_at_a_time() -> Admission {
    admission(Settings { max_concurrent: 1, ..Settings::default() })
}

fn ticket(tenant: &str, priority: Priority) -> Ticket {
    Ticket::new(tenant, priority)
}

/// Polls once: what the future does before its first await point.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

async fn take(admission: &Admission, model: &str, tenant: &str) -> Permit {
    admission.admit("local", model, ticket(tenant, Priority::Normal)).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_free_slot_is_taken_without_waiting() {
    let admission = one_at_a_time();
    let mut admit = pin!(admission.admit("local", "llama3.2", ticket("a", Priority::Normal)));
    let Poll::Ready(Ok(permit)) = poll_once(admit.as_mut()) else { panic!("not admitted on the first poll") };
    assert_eq!((permit.waited(), permit.was_queued(), permit.model()), (Duration::ZERO, false, "llama3.2"));
    let stats = admission.stats();
    assert_eq!((stats.len(), stats[0].running, stats[0].queued), (1, 1, 0));
    drop(permit);
    assert!(admission.stats().is_empty(), "an idle bucket is forgotten");
    assert_eq!(admission.counters().admitted, 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_at_most_max_wait() {
    let admission = admission(Settings { max_concurrent: 1, max_wait: 3 * SEC, ..Settings::default() });
    let _held = take(&admission, "m", "a").await;
    let start = Instant::now();
    let shed = admission.admit("local", "m", ticket("b", Priority::Normal)).await.unwrap_err();
    let Shed::WaitTooLong { ref target, waited, retry_after } = shed else { panic!("{shed:?}") };
    assert_eq!((target.as_str(), waited, start.elapsed()), ("local:m", 3 * SEC, 3 * SEC));
    assert_eq!(retry_after, SEC, "no service time known yet: the minimum");
    assert_eq!(admission.stats()[0].queued, 0, "it left the queue");
    assert_eq!(admission.counters().shed(ShedReason::WaitTooLong), 1);
}

#[tokio::test(start_paused = true)]
async fn max_wait_counts_the_waits_at_earlier_targets() {
    let admission = admission(Settings { max_concurrent: 1, max_wait: 3 * SEC, ..Settings::default() });
    let _held = take(&admission, "m", "a").await;
    // Waited 2 s elsewhere: 1 s left here, and the shed says 3 s in all.
    let start = Instant::now();
    let shed = admission.admit("local", "m", ticket("b", Priority::Normal).with_waited_before(2 * SEC)).await;
    let Err(Shed::WaitTooLong { waited, .. }) = shed else { panic!("{shed:?}") };
    assert_eq!((waited, start.elapsed()), (3 * SEC, SEC));
    // Waited all of max_wait elsewhere: shed at once, never queued.
    let shed = admission.admit("local", "m", ticket("c", Priority::Normal).with_waited_before(3 * SEC)).await;
    let Err(Shed::WaitTooLong { waited, .. }) = shed else { panic!("{shed:?}") };
    assert_eq!((waited, start.elapsed()), (3 * SEC, SEC));
    // A free slot is still taken, however long it waited before.
    let other = admission.admit("local", "n", ticket("c", Priority::Normal).with_waited_before(9 * SEC)).await;
    assert!(other.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_servers_own_parallelism_replaces_max_concurrent() {
    let admission = one_at_a_time();
    let first = take(&admission, "m", "a").await;
    let waiting = tokio::spawn({
        let admission = admission.clone();
        async move { admission.admit("local", "m", ticket("b", Priority::Normal)).await }
    });
    sleep(SEC).await;
    assert_eq!(admission.stats()[0].queued, 1);
    // The server has 2 slots: the queued request gets the new one at once.
    admission.set_max_concurrent("local", 2);
    let second = waiting.await.unwrap().unwrap();
    assert_eq!(second.waited(), SEC);
    assert_eq!(admission.upstream_settings("local").max_concurrent, 2);
    assert_eq!(admission.upstream_settings("other").max_concurrent, 1, "other upstreams keep theirs");
    // Down to 1 again: both running ones finish, the next waits for one to end.
    admission.set_max_concurrent("local", 1);
    let mut third = pin!(admission.admit("local", "m", ticket("c", Priority::Normal)));
    assert!(poll_once(third.as_mut()).is_pending());
    drop(first);
    assert!(poll_once(third.as_mut()).is_pending(), "one running, one slot");
    drop(second);
    tokio::task::yield_now().await;
    assert!(matches!(poll_once(third.as_mut()), Poll::Ready(Ok(_))));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_the_slot_when_it_frees() {
    let admission = one_at_a_time();
    let held = take(&admission, "m", "a").await;
    let release = async {
        sleep(2 * SEC).await;
        drop(held);
    };
    let (permit, ()) = tokio::join!(take(&admission, "m", "b"), release);
    assert_eq!((permit.waited(), permit.was_queued()), (2 * SEC, true));
    let counters = admission.counters();
    assert_eq!((counters.admitted, counters.admitted_after_queueing), (2, 1));
}

/// Queues `tickets` behind a held slot, in order, one second apart; then frees the slot and
/// returns the tenants in the order they were served.
async fn served_order(tickets: Vec<(Duration, Ticket)>) -> Vec<String> {
    let admission = one_at_a_time();
    let held = take(&admission, "m", "holder").await;
    let start = Instant::now();
    let queued = tickets.into_iter().map(|(at, ticket)| {
        let admission = admission.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start + at).await;
            let tenant = ticket.tenant.to_string();
            let permit = admission.admit("local", "m", ticket).await.unwrap();
            sleep(SEC).await;
            drop(permit);
            (Instant::now(), tenant)
        })
    });
    let queued: Vec<_> = queued.collect();
    sleep(12 * SEC).await;
    drop(held);
    let mut done = Vec::new();
    for task in queued {
        done.push(task.await.unwrap());
    }
    done.sort();
    done.into_iter().map(|(_, tenant)| tenant).collect()
}

#[tokio::test(start_paused = true)]
async fn interactive_goes_before_batch_until_batch_has_aged() {
    // The batch request waited 11 s (two aging periods): it counts as interactive and arrived first.
    let aged = served_order(vec![
        (Duration::ZERO, ticket("bulk", Priority::Batch)),
        (SEC, ticket("person", Priority::Interactive)),
    ]);
    assert_eq!(aged.await, ["bulk", "person"]);
    // Only 4 s of waiting (not yet one period): interactive first.
    let fresh = served_order(vec![
        (8 * SEC, ticket("bulk", Priority::Batch)),
        (9 * SEC, ticket("person", Priority::Interactive)),
    ]);
    assert_eq!(fresh.await, ["person", "bulk"]);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_expected_wait_is_shed_at_once() {
    let admission = one_at_a_time();
    // Teach the bucket its service time: 4 s.
    let permit = take(&admission, "m", "a").await;
    sleep(4 * SEC).await;
    drop(permit);
    let _held = take(&admission, "m", "a").await;
    let start = Instant::now();
    let hurried = ticket("b", Priority::Normal).with_deadline(start + 2 * SEC);
    let shed = admission.admit("local", "m", hurried).await.unwrap_err();
    let Shed::DeadlineUnmeetable { expected_wait, time_left, retry_after, .. } = shed else { panic!("{shed:?}") };
    assert_eq!((expected_wait, time_left, retry_after), (4 * SEC, 2 * SEC, 4 * SEC));
    assert_eq!(start.elapsed(), Duration::ZERO, "shed without waiting");
    assert_eq!(admission.stats()[0].service_time, Some(4 * SEC));
}

#[tokio::test(start_paused = true)]
async fn without_an_estimate_a_request_waits_until_its_deadline() {
    let admission = one_at_a_time();
    let _held = take(&admission, "m", "a").await;
    let start = Instant::now();
    let hurried = ticket("b", Priority::Normal).with_deadline(start + 2 * SEC);
    let shed = admission.admit("local", "m", hurried).await.unwrap_err();
    assert!(matches!(shed, Shed::DeadlinePassed { waited, .. } if waited == 2 * SEC), "{shed:?}");
    assert_eq!(admission.counters().shed(ShedReason::DeadlinePassed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_leaves_the_queue() {
    let admission = one_at_a_time();
    let held = take(&admission, "m", "a").await;
    let mut gone = Box::pin(admission.admit("local", "m", ticket("b", Priority::Normal)));
    assert!(poll_once(gone.as_mut()).is_pending());
    assert_eq!(admission.stats()[0].queued, 1);
    drop(gone);
    assert_eq!(admission.stats()[0].queued, 0);
    drop(held);
    assert!(admission.stats().is_empty(), "no slot was handed to the departed request");
    assert_eq!(admission.counters().cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn a_slot_handed_to_a_departing_client_passes_to_the_next() {
    let admission = one_at_a_time();
    let held = take(&admission, "m", "a").await;
    let mut first = Box::pin(admission.admit("local", "m", ticket("b", Priority::Normal)));
    let mut second = Box::pin(admission.admit("local", "m", ticket("c", Priority::Normal)));
    assert!(poll_once(first.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    drop(held); // hands the slot to `first`, which is never polled again
    drop(first);
    let Poll::Ready(Ok(permit)) = poll_once(second.as_mut()) else { panic!("the slot did not pass on") };
    assert_eq!(permit.tenant(), "c");
    drop(permit);
    assert!(admission.stats().is_empty(), "no slot leaked");
}

#[tokio::test(start_paused = true)]
async fn the_upstream_cap_holds_across_models_and_a_freed_slot_crosses_models() {
    let settings = Settings { max_concurrent: 2, upstream_max_concurrent: Some(3), ..Settings::default() };
    let admission = admission(settings);
    let a1 = take(&admission, "a", "t").await;
    let _a2 = take(&admission, "a", "t").await;
    let _b1 = take(&admission, "b", "t").await;
    let mut b2 = Box::pin(admission.admit("local", "b", ticket("t", Priority::Normal)));
    assert!(poll_once(b2.as_mut()).is_pending(), "model b has room, the upstream has not");
    let other = take_other_upstream(&admission).await;
    assert_eq!(other.model(), "a", "another upstream is not capped by this one");
    drop(a1);
    let Poll::Ready(Ok(permit)) = poll_once(b2.as_mut()) else { panic!("b did not get a's slot") };
    assert_eq!(permit.model(), "b");
    let stats = admission.stats();
    let b = stats.iter().find(|s| &*s.upstream == "local" && &*s.model == "b").unwrap();
    assert_eq!((b.running, b.upstream_running, b.upstream_max_concurrent), (2, 3, Some(3)));
}

async fn take_other_upstream(admission: &Admission) -> Permit {
    admission.admit("backup", "a", ticket("t", Priority::Normal)).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_sheds_or_makes_room_for_the_more_urgent() {
    let admission = admission(Settings { max_concurrent: 1, max_queue: 1, ..Settings::default() });
    let _held = take(&admission, "m", "a").await;
    let mut bulk = Box::pin(admission.admit("local", "m", ticket("bulk", Priority::Batch)));
    assert!(poll_once(bulk.as_mut()).is_pending());
    let full = admission.admit("local", "m", ticket("bulk", Priority::Batch)).await.unwrap_err();
    assert!(matches!(full, Shed::QueueFull { queued: 1, .. }), "{full:?}");
    assert!(full.retry_after() >= SEC);
    let mut person = Box::pin(admission.admit("local", "m", ticket("person", Priority::Interactive)));
    assert!(poll_once(person.as_mut()).is_pending());
    let Poll::Ready(Err(displaced)) = poll_once(bulk.as_mut()) else { panic!("batch kept its place") };
    assert_eq!(displaced.reason(), ShedReason::Displaced);
    let counters = admission.counters();
    assert_eq!(
        (counters.shed(ShedReason::QueueFull), counters.shed(ShedReason::Displaced), counters.shed_total()),
        (1, 1, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn stats_show_the_oldest_wait() {
    let admission = one_at_a_time();
    let _held = take(&admission, "m", "a").await;
    let mut waiting = Box::pin(admission.admit("local", "m", ticket("b", Priority::Normal)));
    assert!(poll_once(waiting.as_mut()).is_pending());
    sleep(3 * SEC).await;
    let stats = admission.stats();
    assert_eq!(stats.len(), 1);
    let bucket = &stats[0];
    assert_eq!((&*bucket.upstream, &*bucket.model, bucket.running, bucket.queued), ("local", "m", 1, 1));
    assert_eq!((bucket.max_concurrent, bucket.max_queue, bucket.oldest_wait), (1, 64, 3 * SEC));
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_model_names_leaves_nothing_behind() {
    let admission = one_at_a_time();
    for n in 0..10_000 {
        drop(take(&admission, &format!("model-{n}"), "a").await);
    }
    assert!(admission.stats().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_upstream_may_have_limits_of_its_own() {
    let laptop = Settings { max_concurrent: 1, max_queue: 0, ..Settings::default() };
    let admission = Admission::with_upstreams(Settings::default(), [("laptop", laptop)]).unwrap();
    let _one = admission.admit("laptop", "m", ticket("a", Priority::Normal)).await.unwrap();
    let shed = admission.admit("laptop", "m", ticket("a", Priority::Normal)).await.unwrap_err();
    assert!(matches!(shed, Shed::QueueFull { .. }), "{shed:?}");
    let _gpu = [take(&admission, "m", "a").await, take(&admission, "m", "a").await];
    let limits: Vec<(String, usize)> =
        admission.stats().iter().map(|s| (s.upstream.to_string(), s.max_concurrent)).collect();
    assert_eq!(limits, [("laptop".to_owned(), 1), ("local".to_owned(), 4)]);
    let broken = Settings { max_concurrent: 0, ..Settings::default() };
    let error = Admission::with_upstreams(Settings::default(), [("laptop", broken)]).unwrap_err();
    assert!(matches!(&error, Error::InvalidUpstreamSettings { upstream, .. } if upstream == "laptop"));
    assert!(
        error.to_string().starts_with("admission settings of upstream \"laptop\": [admission] max_concurrent is 0")
    );
}

#[test]
fn the_admit_future_can_move_between_threads() {
    fn assert_send<T: Send>(_: &T) {}
    let admission = one_at_a_time();
    let admit = admission.admit("local", "m", ticket("a", Priority::Normal));
    assert_send(&admit);
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Admission>();
    assert_send_sync::<Permit>();
}
