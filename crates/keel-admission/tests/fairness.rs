//! Fair share under load, on a paused clock: a tenant with many requests outstanding cannot push
//! up the wait of a tenant with one, whether it sends batch work or work of the same priority.
//!
//! Every request holds its slot for `S`; the model serves 2 at once. The heavy tenant keeps 20
//! requests outstanding until the light one has sent 30 requests one after another. In a plain
//! FIFO the light tenant would wait behind ~18 heavy requests, about 9 × S each time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel_admission::{Admission, Priority, Settings, Ticket};
use tokio::task::JoinSet;
use tokio::time::sleep;

const S: Duration = Duration::from_millis(100);
const HEAVY_OUTSTANDING: usize = 20;
const LIGHT_REQUESTS: usize = 30;

struct Outcome {
    light_waits: Vec<Duration>,
    heavy_completed: usize,
}

async fn run(heavy: Priority, light: Priority) -> Outcome {
    let settings =
        Settings { max_concurrent: 2, max_queue: 64, max_wait: Duration::from_secs(60), ..Settings::default() };
    let admission = Admission::new(settings).unwrap();
    let light_done = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for _ in 0..HEAVY_OUTSTANDING {
        let (admission, light_done) = (admission.clone(), Arc::clone(&light_done));
        workers.spawn(async move {
            let mut completed = 0;
            while !light_done.load(Ordering::Relaxed) {
                let permit = admission.admit("local", "llama3.2", Ticket::new("agent", heavy)).await.unwrap();
                sleep(S).await;
                drop(permit);
                completed += 1;
            }
            completed
        });
    }
    sleep(S / 10).await; // the heavy tenant's queue is full before the light one starts
    let mut light_waits = Vec::new();
    for _ in 0..LIGHT_REQUESTS {
        let permit = admission.admit("local", "llama3.2", Ticket::new("person", light)).await.unwrap();
        light_waits.push(permit.waited());
        sleep(S).await;
        drop(permit);
    }
    light_done.store(true, Ordering::Relaxed);
    let heavy_completed = workers.join_all().await.into_iter().sum();
    assert!(admission.stats().is_empty(), "every slot came back");
    Outcome { light_waits, heavy_completed }
}

fn median(mut waits: Vec<Duration>) -> Duration {
    waits.sort();
    waits[waits.len() / 2]
}

#[tokio::test(start_paused = true)]
async fn batch_load_does_not_delay_an_interactive_tenant() {
    let outcome = run(Priority::Batch, Priority::Interactive).await;
    let median = median(outcome.light_waits);
    assert!(median <= S, "interactive median wait {median:?} > {S:?}");
    // Every batch request was served (none shed), and batch kept the second slot meanwhile.
    assert!(outcome.heavy_completed >= LIGHT_REQUESTS, "batch made little progress: {}", outcome.heavy_completed);
}

#[tokio::test(start_paused = true)]
async fn at_one_priority_the_lighter_tenant_goes_first() {
    let outcome = run(Priority::Normal, Priority::Normal).await;
    let median = median(outcome.light_waits);
    assert!(median <= S, "light tenant's median wait {median:?} > {S:?}");
    assert!(outcome.heavy_completed >= LIGHT_REQUESTS, "heavy made little progress: {}", outcome.heavy_completed);
}
