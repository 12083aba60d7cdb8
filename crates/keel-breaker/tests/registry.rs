//! The registry as the proxy uses it: many targets, several threads, permits that are dropped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use keel_breaker::{BreakerConfig, HalfOpenMode, ManualClock, Outcome, Reason, Registry, State};
use keel_types::FailureClass;

fn registry(config: BreakerConfig) -> (Registry, ManualClock) {
    let clock = ManualClock::new();
    let registry = Registry::builder(config).clock(clock.clone()).build().unwrap();
    (registry, clock)
}

fn fail(registry: &Registry, target: &str) -> Option<keel_breaker::Transition> {
    registry.try_acquire(target).unwrap().record(Outcome::failure(FailureClass::Busy, Duration::from_millis(3)))
}

fn succeed(registry: &Registry, target: &str) -> Option<keel_breaker::Transition> {
    registry.try_acquire(target).unwrap().record(Outcome::success(Duration::from_millis(3)))
}

#[test]
fn failures_of_one_target_do_not_count_against_another() {
    let (registry, _clock) = registry(BreakerConfig::default());
    // Interleaved failures: four each, never five in a row on one target.
    for _ in 0..4 {
        for target in ["local:a", "local:b", "backup:a"] {
            assert!(fail(&registry, target).is_none());
        }
    }
    for target in ["local:a", "local:b", "backup:a"] {
        assert_eq!(registry.snapshot(target).unwrap().consecutive_failures, 4);
    }
    assert_eq!(fail(&registry, "local:b").unwrap().to, State::Open);
    assert!(registry.try_acquire("local:b").is_err());
    assert!(registry.try_acquire("local:a").is_ok());
    assert!(registry.try_acquire("backup:a").is_ok());
}

#[test]
fn per_target_overrides_apply() {
    let clock = ManualClock::new();
    let registry = Registry::builder(BreakerConfig::default())
        .clock(clock)
        .target("flaky", BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() })
        .build()
        .unwrap();
    assert_eq!(registry.config_for("flaky").failure_threshold, 1);
    assert_eq!(registry.config_for("other").failure_threshold, 5);
    assert!(fail(&registry, "flaky").is_some());
    assert!(fail(&registry, "other").is_none());
}

#[test]
fn invalid_configs_are_refused_with_the_target_named() {
    let err = Registry::new(&BreakerConfig { probes: 0, ..BreakerConfig::default() }).unwrap_err();
    assert!(err.to_string().contains("probes"), "{err}");
    let err = Registry::builder(BreakerConfig::default())
        .target("local", BreakerConfig { failure_rate: 2.0, ..BreakerConfig::default() })
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("\"local\"") && text.contains("failure_rate"), "{text}");
}

#[test]
fn the_lock_free_gate_follows_every_transition() {
    let (registry, clock) = registry(BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() });
    let handle = registry.breaker("t");
    assert_eq!(handle.state(), State::Closed);
    fail(&registry, "t");
    assert_eq!(handle.state(), State::Open);
    let rejected = handle.try_acquire().unwrap_err();
    assert_eq!((rejected.state, rejected.retry_after), (State::Open, Duration::from_secs(30)));
    clock.advance(Duration::from_secs(10));
    assert_eq!(handle.try_acquire().unwrap_err().retry_after, Duration::from_secs(20));
    clock.advance(Duration::from_secs(20));
    let probe = handle.try_acquire().unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    assert!(probe.record(Outcome::success(Duration::ZERO)).is_some());
    assert_eq!(handle.state(), State::Closed);
    handle.force_open();
    assert!(handle.try_acquire().unwrap_err().forced);
    handle.force_close();
    assert_eq!(handle.state(), State::Closed);
    assert!(fail(&registry, "t").is_none(), "forced closed never trips");
    handle.reset();
    assert!(fail(&registry, "t").is_some());
}

#[test]
fn a_dropped_probe_permit_frees_its_slot() {
    let (registry, clock) = registry(BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() });
    fail(&registry, "t");
    clock.advance(Duration::from_secs(30));
    let probe = registry.try_acquire("t").unwrap();
    assert!(probe.is_probe());
    assert!(registry.try_acquire("t").is_err());
    drop(probe); // the client went away
    assert_eq!(registry.snapshot("t").unwrap().probes_in_flight, 0);
    let probe = registry.try_acquire("t").unwrap();
    assert!(probe.record(Outcome::success(Duration::ZERO)).is_some());
}

#[test]
fn a_dropped_closed_permit_counts_nothing() {
    let (registry, _clock) = registry(BreakerConfig::default());
    for _ in 0..100 {
        drop(registry.try_acquire("t").unwrap());
    }
    let snapshot = registry.snapshot("t").unwrap();
    assert_eq!((snapshot.window.calls, snapshot.consecutive_failures), (0, 0));
}

#[test]
fn events_are_queued_in_order_and_bounded() {
    let clock = ManualClock::new();
    let registry = Registry::builder(BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() })
        .clock(clock.clone())
        .event_capacity(3)
        .build()
        .unwrap();
    assert!(registry.drain_events().is_empty());
    let returned = fail(&registry, "a").unwrap();
    clock.advance(Duration::from_secs(30));
    succeed(&registry, "a");
    let events = registry.drain_events();
    assert_eq!(events[0], returned);
    let kinds: Vec<_> = events.iter().map(|t| (t.from, t.to, t.reason.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (State::Closed, State::Open, "consecutive_failures"),
            (State::Open, State::HalfOpen, "cooldown_elapsed"),
            (State::HalfOpen, State::Closed, "probe_succeeded"),
        ]
    );
    assert!(registry.drain_events().is_empty());
    for target in ["a", "b", "c", "d", "e"] {
        registry.force_open(target);
    }
    let events = registry.drain_events();
    let targets: Vec<&str> = events.iter().map(|t| &*t.target).collect();
    assert_eq!(targets, ["c", "d", "e"]);
    assert_eq!(registry.dropped_events(), 2);
}

#[test]
fn manual_control_by_name() {
    let (registry, clock) = registry(BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() });
    assert!(registry.probe_succeeded("unknown").is_none());
    let t = registry.force_open("never-used");
    assert_eq!((t.from, t.to, t.reason), (State::Closed, State::Open, Reason::ForcedOpen));
    assert!(registry.try_acquire("never-used").unwrap_err().forced);
    assert_eq!(registry.reset("never-used").to, State::Closed);
    fail(&registry, "t");
    clock.advance(Duration::from_secs(1));
    let t = registry.probe_succeeded("t").unwrap();
    assert_eq!((t.to, t.reason), (State::HalfOpen, Reason::HealthProbe));
    assert_eq!(registry.force_close("t").to, State::Closed);
}

#[test]
fn snapshots_list_every_target_sorted() {
    let (registry, _clock) = registry(BreakerConfig::default());
    for target in ["local:b", "backup:a", "local:a"] {
        succeed(&registry, target);
    }
    fail(&registry, "local:a");
    let snapshots = registry.snapshots();
    let names: Vec<&str> = snapshots.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(names, ["backup:a", "local:a", "local:b"]);
    let json = serde_json::to_value(&snapshots[1]).unwrap();
    assert_eq!(json["state"], "closed");
    assert_eq!(json["consecutive_failures"], 1);
    assert_eq!(json["window"]["calls"], 2);
    assert_eq!(json["window"]["failure_rate"], 0.5);
    assert!(json["retry_after"].is_null());
}

#[test]
fn clones_share_breakers() {
    let (registry, _clock) = registry(BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() });
    let clone = registry.clone();
    fail(&registry, "t");
    assert!(clone.try_acquire("t").is_err());
    assert_eq!(clone.drain_events().len(), 1);
}

/// Several threads race for probes: never more in flight than configured, and the breaker
/// still ends up closed once probes succeed.
#[test]
fn concurrent_callers_never_exceed_the_probe_slots() {
    for (mode, slots) in [(HalfOpenMode::Single, 1), (HalfOpenMode::Gradual, 3)] {
        let config = BreakerConfig {
            failure_threshold: 1,
            half_open: mode,
            probes: 3,
            successes_to_close: Some(50),
            ..BreakerConfig::default()
        };
        let (registry, clock) = registry(config);
        fail(&registry, "t");
        clock.advance(Duration::from_secs(30));
        let in_flight = Arc::new(AtomicU32::new(0));
        let max_seen = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (registry, in_flight, max_seen, stop) =
                    (registry.clone(), Arc::clone(&in_flight), Arc::clone(&max_seen), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let handle = registry.breaker("t");
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(permit) = handle.try_acquire() else {
                            std::thread::yield_now();
                            continue;
                        };
                        if !permit.is_probe() {
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        permit.record(Outcome::success(Duration::ZERO));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(max_seen.load(Ordering::SeqCst) <= slots, "{mode:?}: {}", max_seen.load(Ordering::SeqCst));
        assert_eq!(registry.breaker("t").state(), State::Closed, "{mode:?}");
        let events = registry.drain_events();
        assert_eq!(events.last().unwrap().reason, Reason::ProbeSucceeded);
    }
}

/// Many threads recording failures and successes on shared and separate targets: the registry
/// stays consistent (every event chain per target is connected) and nothing deadlocks.
#[test]
fn concurrent_traffic_keeps_event_chains_connected() {
    let (registry, clock) = registry(BreakerConfig { failure_threshold: 3, ..BreakerConfig::default() });
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let (registry, clock) = (registry.clone(), clock.clone());
            std::thread::spawn(move || {
                for i in 0..5_000u32 {
                    let target = if i % 2 == 0 {
                        "shared"
                    } else if thread % 2 == 0 {
                        "even"
                    } else {
                        "odd"
                    };
                    if i % 97 == 0 {
                        clock.advance(Duration::from_secs(7));
                    }
                    if let Ok(permit) = registry.try_acquire(target) {
                        let class = (i.wrapping_mul(2_654_435_761) % 5 < 2).then_some(FailureClass::Timeout);
                        permit.record(Outcome { class, latency: Duration::ZERO, tokens: 0 });
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let events = registry.drain_events();
    assert!(!events.is_empty());
    for target in ["shared", "even", "odd"] {
        let mut state = State::Closed;
        for event in events.iter().filter(|t| &*t.target == target) {
            assert_eq!(event.from, state, "{target}: {event}");
            state = event.to;
        }
        assert_eq!(registry.breaker(target).state(), state, "{target}");
    }
}

#[test]
fn registry_types_cross_threads_and_tasks() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Registry>();
    send_sync::<keel_breaker::BreakerHandle>();
    send_sync::<keel_breaker::Permit>();
    send_sync::<keel_breaker::Transition>();
    send_sync::<keel_breaker::Snapshot>();
    send_sync::<keel_breaker::Rejected>();
}

#[test]
fn the_registry_clock_converts_to_wall_time() {
    let registry = Registry::new(&BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() }).unwrap();
    let before = std::time::SystemTime::now();
    let opened = fail(&registry, "t").unwrap();
    let wall = registry.clock().wall_time(opened.at).unwrap();
    assert!(wall >= before - Duration::from_secs(1));
    let snapshot = registry.snapshot("t").unwrap();
    assert_eq!(snapshot.opened_at, Some(opened.at));
}

#[test]
fn made_up_names_cannot_grow_the_registry_and_pinned_or_open_breakers_stay() {
    let config = BreakerConfig { max_breakers: 8, failure_threshold: 1, ..BreakerConfig::default() };
    let (registry, clock) = registry(config);
    registry.pinned("local");
    registry.pinned("local:llama3.2");
    // A real model that failed: its open breaker outlives a flood of names nobody asks for twice.
    assert_eq!(fail(&registry, "local:broken").unwrap().to, State::Open);
    for i in 0..10_000 {
        clock.advance(Duration::from_millis(1));
        drop(registry.try_acquire(&format!("local:made-up-{i}")).unwrap());
    }
    assert!(registry.len() <= 8 + 2, "{} breakers", registry.len());
    assert!(registry.get("local").is_some());
    assert!(registry.get("local:llama3.2").is_some());
    assert_eq!(registry.get("local:broken").unwrap().state(), State::Open);
    // The most recent names are still there; the oldest went first.
    assert!(registry.get("local:made-up-9999").is_some());
    assert!(registry.get("local:made-up-0").is_none());
}

#[test]
fn a_breaker_that_counts_only_failures_in_a_row_still_resets_them_on_success() {
    let config = BreakerConfig { failure_rate: 0.0, failure_threshold: 3, ..BreakerConfig::default() };
    assert!(config.counts_only_consecutive());
    let (registry, _clock) = registry(config);
    for _ in 0..10 {
        assert!(fail(&registry, "server").is_none());
        assert!(fail(&registry, "server").is_none());
        // Successes with nothing to reset skip the lock; this one resets the two failures.
        assert!(succeed(&registry, "server").is_none());
        assert!(succeed(&registry, "server").is_none());
        assert_eq!(registry.snapshot("server").unwrap().consecutive_failures, 0);
    }
    fail(&registry, "server");
    fail(&registry, "server");
    assert_eq!(fail(&registry, "server").unwrap().to, State::Open);
}

#[test]
fn breakers_of_models_nobody_asks_for_any_more_expire() {
    let config = BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() };
    let (registry, clock) = registry(config);
    registry.pinned("local");
    drop(registry.try_acquire("local:old").unwrap());
    assert_eq!(fail(&registry, "local:broken").unwrap().to, State::Open);
    clock.advance(Duration::from_secs(3600));
    drop(registry.try_acquire("local:recent").unwrap());
    // Looking at a breaker (status pages, reasons) is not a use.
    assert!(registry.snapshot("local:old").is_some());
    assert!(registry.probe_succeeded("local:old").is_none());
    assert_eq!(registry.evict_idle(Duration::from_secs(1800)), 1);
    assert!(registry.get("local:old").is_none(), "idle and closed: expired");
    assert!(registry.get("local:recent").is_some());
    assert!(registry.get("local:broken").is_some(), "an open breaker remembers a failing model");
    assert!(registry.get("local").is_some(), "pinned");
}
