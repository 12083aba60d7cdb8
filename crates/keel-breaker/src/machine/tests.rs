//! The state machine driven by hand: every trip condition and every recovery path.

use std::time::Duration;

use keel_types::FailureClass;

use super::*;
use crate::config::{CooldownStrategy, HalfOpenMode};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

fn at_secs(secs: u64) -> Nanos {
    Nanos(secs * SEC)
}

fn breaker(config: BreakerConfig) -> Breaker {
    Breaker::new("local:llama3.2", &config).unwrap()
}

/// Only consecutive failures enabled, to isolate the other conditions.
fn only_consecutive(threshold: u32) -> BreakerConfig {
    BreakerConfig { failure_threshold: threshold, failure_rate: 0.0, ..BreakerConfig::default() }
}

fn quick() -> Duration {
    Duration::from_millis(20)
}

/// Acquires (must be admitted) and records.
fn call(b: &mut Breaker, now: Nanos, outcome: Outcome) -> Option<Transition> {
    let ticket = b.try_acquire(now).result.unwrap();
    b.record(ticket, outcome, now)
}

fn fail(b: &mut Breaker, now: Nanos) -> Option<Transition> {
    call(b, now, Outcome::failure(FailureClass::Timeout, quick()))
}

fn succeed(b: &mut Breaker, now: Nanos) -> Option<Transition> {
    call(b, now, Outcome::success(quick()))
}

/// Opens a breaker by consecutive failures at `now`.
fn trip(b: &mut Breaker, now: Nanos) -> Transition {
    loop {
        if let Some(t) = fail(b, now) {
            assert_eq!(t.to, State::Open);
            return t;
        }
    }
}

// ---- trip conditions ----

#[test]
fn consecutive_failures_open_at_the_threshold() {
    let mut b = breaker(only_consecutive(3));
    assert!(fail(&mut b, Nanos(1)).is_none());
    assert!(fail(&mut b, Nanos(2)).is_none());
    let t = fail(&mut b, Nanos(3)).unwrap();
    assert_eq!((t.from, t.to), (State::Closed, State::Open));
    assert_eq!(t.reason, Reason::ConsecutiveFailures { count: 3 });
    assert_eq!(t.at, Nanos(3));
    assert_eq!(t.cooldown, Some(Duration::from_secs(30)));
    assert_eq!(&*t.target, "local:llama3.2");
    assert_eq!(b.state(), State::Open);
}

#[test]
fn a_success_breaks_the_run_of_failures() {
    let mut b = breaker(only_consecutive(3));
    for round in 0..10 {
        assert!(fail(&mut b, Nanos(round)).is_none());
        assert!(fail(&mut b, Nanos(round)).is_none());
        assert!(succeed(&mut b, Nanos(round)).is_none());
    }
    assert_eq!(b.snapshot(Nanos(10)).consecutive_failures, 0);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn every_upstream_failure_class_counts() {
    for class in [
        FailureClass::Busy,
        FailureClass::Timeout,
        FailureClass::Refused,
        FailureClass::Reset,
        FailureClass::ServerError,
        FailureClass::StreamBroken,
    ] {
        let mut b = breaker(only_consecutive(2));
        assert!(call(&mut b, Nanos(1), Outcome::failure(class, quick())).is_none());
        let t = call(&mut b, Nanos(2), Outcome::failure(class, quick()));
        assert_eq!(t.map(|t| t.to), Some(State::Open), "{class}");
    }
}

#[test]
fn failure_rate_opens_once_the_window_holds_min_calls() {
    let config = BreakerConfig { failure_threshold: 0, failure_rate: 0.5, min_calls: 10, ..BreakerConfig::default() };
    let mut b = breaker(config);
    // Alternate: never two failures in a row matter here; 5 of the first 9 fail, but 9 < min_calls.
    for i in 0..9 {
        let outcome =
            if i % 2 == 0 { Outcome::failure(FailureClass::Busy, quick()) } else { Outcome::success(quick()) };
        assert!(call(&mut b, Nanos(i * MS), outcome).is_none(), "call {i}");
    }
    let t = succeed(&mut b, Nanos(9 * MS)).unwrap();
    assert_eq!(t.reason, Reason::FailureRate { rate: 0.5, window: Duration::from_secs(60) });
}

#[test]
fn failure_rate_below_the_threshold_stays_closed() {
    let config = BreakerConfig { failure_threshold: 0, failure_rate: 0.5, min_calls: 10, ..BreakerConfig::default() };
    let mut b = breaker(config);
    for i in 0..1000 {
        let outcome =
            if i % 3 == 0 { Outcome::failure(FailureClass::Busy, quick()) } else { Outcome::success(quick()) };
        assert!(call(&mut b, Nanos(i * 100 * MS), outcome).is_none(), "call {i}");
    }
}

#[test]
fn old_failures_slide_out_of_the_window() {
    let config = BreakerConfig {
        failure_threshold: 0,
        failure_rate: 0.5,
        min_calls: 4,
        window: Duration::from_secs(10),
        ..BreakerConfig::default()
    };
    let mut b = breaker(config);
    for _ in 0..3 {
        assert!(fail(&mut b, at_secs(0)).is_none());
    }
    let snapshot = b.snapshot(at_secs(5));
    assert_eq!((snapshot.window.calls, snapshot.window.failures), (3, 3));
    assert_eq!(snapshot.window.failure_rate, 1.0);
    // 11 s later those three failures are gone: one more failure is 1 call, below min_calls.
    assert!(fail(&mut b, at_secs(11)).is_none());
    assert_eq!(b.snapshot(at_secs(11)).window.calls, 1);
    for _ in 0..3 {
        assert!(succeed(&mut b, at_secs(12)).is_none());
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn slow_calls_open_when_enabled() {
    let config = BreakerConfig {
        failure_threshold: 0,
        failure_rate: 0.0,
        slow_call_duration: Duration::from_secs(2),
        slow_call_rate: 0.5,
        min_calls: 4,
        ..BreakerConfig::default()
    };
    let mut b = breaker(config);
    let slow = Outcome::success(Duration::from_secs(3));
    assert!(succeed(&mut b, Nanos(1)).is_none());
    assert!(succeed(&mut b, Nanos(2)).is_none());
    assert!(call(&mut b, Nanos(3), slow).is_none());
    // Exactly the duration is not slow.
    assert!(call(&mut b, Nanos(3), Outcome::success(Duration::from_secs(2))).is_none());
    assert!(call(&mut b, Nanos(4), slow).is_none(), "2 of 5 slow");
    let t = call(&mut b, Nanos(5), slow).unwrap();
    assert_eq!(t.reason, Reason::SlowCalls { rate: 0.5 });
}

#[test]
fn slow_calls_are_off_by_default() {
    let mut b = breaker(BreakerConfig::default());
    for i in 0..100 {
        assert!(call(&mut b, Nanos(i), Outcome::success(Duration::from_secs(600))).is_none());
    }
    assert_eq!(b.snapshot(Nanos(100)).window.slow, 100);
}

#[test]
fn low_confidence_opens_on_unusable_answers() {
    let config = BreakerConfig { min_success_ratio: 0.8, min_calls: 5, ..BreakerConfig::default() };
    let mut b = breaker(config);
    let unusable = Outcome::failure(FailureClass::InvalidOutput, quick());
    // Invalid output is not a health failure: 4 in a row do not trip consecutive failures (5)...
    for i in 0..4 {
        assert!(call(&mut b, Nanos(i), unusable).is_none(), "call {i}");
    }
    assert_eq!(b.snapshot(Nanos(4)).consecutive_failures, 0);
    // ...but the fifth call reaches min_calls with 0 % usable answers.
    let t = call(&mut b, Nanos(5), unusable).unwrap();
    assert_eq!(t.reason, Reason::LowConfidence { success_ratio: 0.0 });
}

#[test]
fn invalid_output_alone_never_trips_by_default() {
    let mut b = breaker(BreakerConfig::default());
    for i in 0..100 {
        assert!(call(&mut b, Nanos(i), Outcome::failure(FailureClass::InvalidOutput, quick())).is_none());
    }
    let snapshot = b.snapshot(Nanos(100));
    assert_eq!((snapshot.window.calls, snapshot.window.failures, snapshot.window.successes), (100, 0, 0));
}

#[test]
fn invalid_output_can_be_made_a_failure() {
    let config = BreakerConfig { quality_failures: vec![], ..only_consecutive(2) };
    let mut b = breaker(config);
    let unusable = Outcome::failure(FailureClass::InvalidOutput, quick());
    assert!(call(&mut b, Nanos(1), unusable).is_none());
    assert_eq!(call(&mut b, Nanos(2), unusable).unwrap().reason, Reason::ConsecutiveFailures { count: 2 });
}

#[test]
fn cost_budget_opens_a_runaway_target() {
    let config = BreakerConfig { max_tokens_per_minute: 10_000, ..BreakerConfig::default() };
    let mut b = breaker(config);
    let spend = |tokens| Outcome::success(quick()).with_tokens(tokens);
    for i in 0..10 {
        assert!(call(&mut b, at_secs(i), spend(1_000)).is_none(), "call {i}");
    }
    assert_eq!(b.snapshot(at_secs(10)).tokens_last_minute, 10_000);
    let t = call(&mut b, at_secs(10), spend(1)).unwrap();
    assert_eq!(t.reason, Reason::CostBudget { per_minute: 10_001 });
}

#[test]
fn tokens_older_than_a_minute_do_not_count() {
    let config = BreakerConfig { max_tokens_per_minute: 10_000, ..BreakerConfig::default() };
    let mut b = breaker(config);
    // 9,000 tokens a minute for an hour never trips.
    for minute in 0..60 {
        assert!(call(&mut b, at_secs(minute * 60), Outcome::success(quick()).with_tokens(9_000)).is_none());
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn ignored_classes_count_nothing() {
    let mut b = breaker(only_consecutive(2));
    assert!(fail(&mut b, Nanos(1)).is_none());
    for class in [FailureClass::BadRequest, FailureClass::ModelNotFound] {
        for _ in 0..10 {
            assert!(call(&mut b, Nanos(2), Outcome::failure(class, quick())).is_none());
        }
    }
    let snapshot = b.snapshot(Nanos(2));
    // Neither reset nor extended the run of failures, and not counted as calls.
    assert_eq!(snapshot.consecutive_failures, 1);
    assert_eq!(snapshot.window.calls, 1);
    assert_eq!(fail(&mut b, Nanos(3)).unwrap().reason, Reason::ConsecutiveFailures { count: 2 });
}

#[test]
fn the_ignore_list_is_configurable() {
    let config = BreakerConfig { ignore: vec![FailureClass::ModelNotFound], ..only_consecutive(2) };
    let mut b = breaker(config);
    let bad = Outcome::failure(FailureClass::BadRequest, quick());
    assert!(call(&mut b, Nanos(1), bad).is_none());
    assert!(call(&mut b, Nanos(2), bad).is_some());
}

#[test]
fn disabled_conditions_never_trip() {
    let config = BreakerConfig { failure_threshold: 0, failure_rate: 0.0, ..BreakerConfig::default() };
    let mut b = breaker(config);
    for i in 0..1000 {
        assert!(fail(&mut b, Nanos(i)).is_none());
    }
}

// ---- recovery ----

#[test]
fn open_rejects_until_the_cooldown_ends() {
    let mut b = breaker(only_consecutive(1));
    trip(&mut b, at_secs(100));
    let rejected = b.try_acquire(at_secs(100)).result.unwrap_err();
    assert_eq!(rejected, Rejected { state: State::Open, forced: false, retry_after: Duration::from_secs(30) });
    let rejected = b.try_acquire(Nanos(129 * SEC + 500 * MS)).result.unwrap_err();
    assert_eq!(rejected.retry_after, Duration::from_millis(500));
    let acquire = b.try_acquire(at_secs(130));
    let transition = acquire.transition.unwrap();
    assert_eq!(
        (transition.from, transition.to, transition.reason),
        (State::Open, State::HalfOpen, Reason::CooldownElapsed)
    );
    assert!(acquire.result.unwrap().is_probe());
}

#[test]
fn cooldown_grows_exponentially_up_to_the_cap() {
    let mut b = breaker(only_consecutive(1));
    let mut now = at_secs(0);
    trip(&mut b, now);
    let mut cooldowns = vec![b.snapshot(now).cooldown.as_secs()];
    for _ in 0..6 {
        now = now.saturating_add(b.snapshot(now).cooldown);
        let t = fail(&mut b, now).unwrap();
        assert_eq!(t.reason, Reason::ProbeFailed { class: Some(FailureClass::Timeout) });
        cooldowns.push(t.cooldown.unwrap().as_secs());
        assert_eq!(b.try_acquire(now).result.unwrap_err().retry_after, t.cooldown.unwrap());
    }
    assert_eq!(cooldowns, [30, 60, 120, 240, 300, 300, 300]);
    assert_eq!(b.snapshot(now).reopens, 6);
}

#[test]
fn fixed_cooldown_does_not_grow() {
    let config = BreakerConfig { cooldown_strategy: CooldownStrategy::Fixed, ..only_consecutive(1) };
    let mut b = breaker(config);
    let mut now = at_secs(0);
    trip(&mut b, now);
    for _ in 0..4 {
        now = now.saturating_add(Duration::from_secs(30));
        assert_eq!(fail(&mut b, now).unwrap().cooldown, Some(Duration::from_secs(30)));
    }
}

#[test]
fn cooldown_growth_is_forgotten_after_closing() {
    let mut b = breaker(only_consecutive(1));
    trip(&mut b, at_secs(0));
    assert!(fail(&mut b, at_secs(30)).is_some()); // probe fails: 60 s
    assert!(fail(&mut b, at_secs(90)).is_some()); // probe fails: 120 s
    let closed = succeed(&mut b, at_secs(210)).unwrap();
    assert_eq!(closed.reason, Reason::ProbeSucceeded);
    assert_eq!(b.snapshot(at_secs(210)).reopens, 0);
    assert_eq!(trip(&mut b, at_secs(300)).cooldown, Some(Duration::from_secs(30)));
}

#[test]
fn single_mode_admits_exactly_one_probe() {
    let mut b = breaker(only_consecutive(1));
    trip(&mut b, at_secs(0));
    let probe = b.try_acquire(at_secs(30)).result.unwrap();
    for _ in 0..10 {
        let rejected = b.try_acquire(at_secs(31)).result.unwrap_err();
        assert_eq!(rejected, Rejected { state: State::HalfOpen, forced: false, retry_after: Duration::ZERO });
    }
    assert_eq!(b.snapshot(at_secs(31)).probes_in_flight, 1);
    let t = b.record(probe, Outcome::success(quick()), at_secs(32)).unwrap();
    assert_eq!((t.from, t.to, t.reason), (State::HalfOpen, State::Closed, Reason::ProbeSucceeded));
    assert!(b.try_acquire(at_secs(32)).result.is_ok());
}

#[test]
fn single_mode_with_several_successes_probes_one_after_another() {
    let config = BreakerConfig { successes_to_close: Some(3), ..only_consecutive(1) };
    let mut b = breaker(config);
    trip(&mut b, at_secs(0));
    for round in 0..3 {
        let probe = b.try_acquire(at_secs(30)).result.unwrap();
        assert!(b.try_acquire(at_secs(30)).result.is_err(), "round {round}: one at a time");
        let t = b.record(probe, Outcome::success(quick()), at_secs(30));
        assert_eq!(t.is_some(), round == 2, "round {round}");
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn gradual_mode_ramps_up_the_probes() {
    let config = BreakerConfig { half_open: HalfOpenMode::Gradual, probes: 3, ..only_consecutive(1) };
    let mut b = breaker(config);
    trip(&mut b, at_secs(0));
    let now = at_secs(30);
    // One probe in flight at first.
    let first = b.try_acquire(now).result.unwrap();
    assert!(b.try_acquire(now).result.is_err());
    assert!(b.record(first, Outcome::success(quick()), now).is_none());
    // After one success, two at once.
    let a = b.try_acquire(now).result.unwrap();
    let c = b.try_acquire(now).result.unwrap();
    assert!(b.try_acquire(now).result.is_err());
    assert_eq!(b.snapshot(now).probes_in_flight, 2);
    assert!(b.record(a, Outcome::success(quick()), now).is_none());
    // Two successes: three allowed, one still in flight, so two more.
    let d = b.try_acquire(now).result.unwrap();
    let e = b.try_acquire(now).result.unwrap();
    assert!(b.try_acquire(now).result.is_err());
    // The third success closes it (successes_to_close defaults to `probes`).
    let t = b.record(c, Outcome::success(quick()), now).unwrap();
    assert_eq!(t.reason, Reason::ProbeSucceeded);
    // Probes still in flight belong to the old half-open period and decide nothing.
    assert!(b.record(d, Outcome::failure(FailureClass::Busy, quick()), now).is_none());
    b.cancel(e);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot(now).consecutive_failures, 0);
}

#[test]
fn gradual_mode_never_exceeds_probes_in_flight() {
    let config = BreakerConfig {
        half_open: HalfOpenMode::Gradual,
        probes: 2,
        successes_to_close: Some(10),
        ..only_consecutive(1)
    };
    let mut b = breaker(config);
    trip(&mut b, at_secs(0));
    let now = at_secs(30);
    for _ in 0..9 {
        let mut held = Vec::new();
        while let Ok(ticket) = b.try_acquire(now).result {
            held.push(ticket);
        }
        assert!(held.len() <= 2);
        let ticket = held.pop().unwrap();
        assert!(b.record(ticket, Outcome::success(quick()), now).is_none());
        for ticket in held {
            b.cancel(ticket);
        }
    }
}

#[test]
fn a_failed_probe_reopens() {
    let mut b = breaker(only_consecutive(1));
    trip(&mut b, at_secs(0));
    let probe = b.try_acquire(at_secs(30)).result.unwrap();
    let t = b.record(probe, Outcome::failure(FailureClass::Refused, quick()), at_secs(31)).unwrap();
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Open));
    assert_eq!(t.reason, Reason::ProbeFailed { class: Some(FailureClass::Refused) });
    assert_eq!(t.cooldown, Some(Duration::from_secs(60)));
    assert_eq!(b.try_acquire(at_secs(31)).result.unwrap_err().retry_after, Duration::from_secs(60));
}

#[test]
fn a_failure_among_gradual_probes_reopens_at_once() {
    let config = BreakerConfig { half_open: HalfOpenMode::Gradual, probes: 3, ..only_consecutive(1) };
    let mut b = breaker(config);
    trip(&mut b, at_secs(0));
    let now = at_secs(30);
    let first = b.try_acquire(now).result.unwrap();
    assert!(b.record(first, Outcome::success(quick()), now).is_none());
    let a = b.try_acquire(now).result.unwrap();
    let c = b.try_acquire(now).result.unwrap();
    assert_eq!(b.record(a, Outcome::failure(FailureClass::Busy, quick()), now).unwrap().to, State::Open);
    // The other probe's late success cannot close the re-opened breaker.
    assert!(b.record(c, Outcome::success(quick()), now).is_none());
    assert_eq!(b.state(), State::Open);
}

#[test]
fn counts_and_windows_reset_on_close() {
    let config = BreakerConfig { max_tokens_per_minute: 1_000_000, ..BreakerConfig::default() };
    let mut b = breaker(config);
    for i in 0..4 {
        call(&mut b, Nanos(i), Outcome::failure(FailureClass::Busy, quick()).with_tokens(100));
    }
    let before = b.snapshot(Nanos(4));
    assert_eq!((before.consecutive_failures, before.window.calls, before.tokens_last_minute), (4, 4, 400));
    trip(&mut b, Nanos(5));
    assert!(!b.is_pristine());
    let probe = b.try_acquire(at_secs(31)).result.unwrap();
    b.record(probe, Outcome::success(quick()), at_secs(31)).unwrap();
    let after = b.snapshot(at_secs(31));
    assert_eq!(after.state, State::Closed);
    assert_eq!((after.consecutive_failures, after.window.calls, after.window.failures), (0, 0, 0));
    assert_eq!(after.tokens_last_minute, 0);
    assert_eq!((after.opened_at, after.retry_after, after.reopens), (None, None, 0));
    assert!(b.is_pristine());
    // A fresh run of failures is needed to open it again.
    for i in 0..4 {
        assert!(fail(&mut b, at_secs(32 + i)).is_none());
    }
    assert!(fail(&mut b, at_secs(40)).is_some());
}

#[test]
fn results_of_calls_started_before_a_transition_are_ignored() {
    let mut b = breaker(only_consecutive(2));
    let slow_call = b.try_acquire(Nanos(1)).result.unwrap();
    trip(&mut b, Nanos(2));
    let probe = b.try_acquire(at_secs(40)).result.unwrap();
    // The slow CLOSED-era call finishes during HALF_OPEN: it is no probe.
    assert!(b.record(slow_call, Outcome::success(quick()), at_secs(41)).is_none());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.snapshot(at_secs(41)).probes_in_flight, 1);
    b.record(probe, Outcome::success(quick()), at_secs(42)).unwrap();
    // A CLOSED-era failure after the close does not count in the new period either.
    let mut b = breaker(only_consecutive(1));
    let old = b.try_acquire(Nanos(1)).result.unwrap();
    trip(&mut b, Nanos(2));
    b.reset(Nanos(3));
    assert!(b.record(old, Outcome::failure(FailureClass::Busy, quick()), Nanos(4)).is_none());
    assert_eq!(b.snapshot(Nanos(4)).consecutive_failures, 0);
}

#[test]
fn a_cancelled_probe_frees_its_slot() {
    let mut b = breaker(only_consecutive(1));
    trip(&mut b, at_secs(0));
    let probe = b.try_acquire(at_secs(30)).result.unwrap();
    assert!(b.try_acquire(at_secs(30)).result.is_err());
    b.cancel(probe);
    assert_eq!(b.state(), State::HalfOpen);
    let probe = b.try_acquire(at_secs(30)).result.unwrap();
    assert!(b.record(probe, Outcome::success(quick()), at_secs(31)).is_some());
}

#[test]
fn a_probe_with_an_ignored_result_decides_nothing() {
    let mut b = breaker(only_consecutive(1));
    trip(&mut b, at_secs(0));
    let probe = b.try_acquire(at_secs(30)).result.unwrap();
    assert!(b.record(probe, Outcome::failure(FailureClass::BadRequest, quick()), at_secs(30)).is_none());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.snapshot(at_secs(30)).probes_in_flight, 0);
    assert!(b.try_acquire(at_secs(30)).result.is_ok());
}

#[test]
fn a_slow_probe_fails_only_when_slowness_is_watched() {
    let slow = Outcome::success(Duration::from_secs(60));
    let mut b = breaker(only_consecutive(1));
    trip(&mut b, at_secs(0));
    assert_eq!(call(&mut b, at_secs(30), slow).unwrap().to, State::Closed);

    let config = BreakerConfig { slow_call_rate: 0.5, ..only_consecutive(1) };
    let mut b = breaker(config);
    trip(&mut b, at_secs(0));
    let t = call(&mut b, at_secs(30), slow).unwrap();
    assert_eq!((t.to, t.reason), (State::Open, Reason::ProbeFailed { class: None }));
}

#[test]
fn an_unusable_probe_fails_only_when_confidence_is_watched() {
    let unusable = Outcome::failure(FailureClass::InvalidOutput, quick());
    let mut b = breaker(only_consecutive(1));
    trip(&mut b, at_secs(0));
    assert_eq!(call(&mut b, at_secs(30), unusable).unwrap().to, State::Closed);

    let config = BreakerConfig { min_success_ratio: 0.5, ..only_consecutive(1) };
    let mut b = breaker(config);
    trip(&mut b, at_secs(0));
    assert_eq!(call(&mut b, at_secs(30), unusable).unwrap().reason, Reason::ProbeFailed { class: None });
}

#[test]
fn a_health_probe_moves_open_to_half_open_early() {
    let mut b = breaker(only_consecutive(1));
    assert!(b.probe_succeeded(Nanos(0)).is_none(), "closed: nothing to do");
    trip(&mut b, at_secs(0));
    let t = b.probe_succeeded(at_secs(5)).unwrap();
    assert_eq!((t.from, t.to, t.reason), (State::Open, State::HalfOpen, Reason::HealthProbe));
    assert!(b.probe_succeeded(at_secs(5)).is_none(), "already half-open");
    assert!(b.try_acquire(at_secs(5)).result.unwrap().is_probe());
}

// ---- manual control ----

#[test]
fn forced_open_sticks_until_reset() {
    let mut b = breaker(only_consecutive(1));
    let t = b.force_open(at_secs(0));
    assert_eq!((t.from, t.to, t.reason, t.cooldown), (State::Closed, State::Open, Reason::ForcedOpen, None));
    for secs in [1, 30, 3_600, 86_400] {
        let rejected = b.try_acquire(at_secs(secs)).result.unwrap_err();
        assert!(rejected.forced);
        assert_eq!(rejected.retry_after, Duration::from_secs(30));
    }
    assert!(b.probe_succeeded(at_secs(1)).is_none(), "a health probe does not override an operator");
    let snapshot = b.snapshot(at_secs(5));
    assert!(snapshot.forced);
    assert_eq!(snapshot.retry_after, None);
    let t = b.reset(at_secs(100));
    assert_eq!((t.from, t.to, t.reason), (State::Open, State::Closed, Reason::Reset));
    assert!(!b.is_forced());
    assert!(b.try_acquire(at_secs(100)).result.is_ok());
}

#[test]
fn forced_closed_never_trips_until_reset() {
    let mut b = breaker(only_consecutive(2));
    trip(&mut b, Nanos(0));
    let t = b.force_close(Nanos(1));
    assert_eq!((t.from, t.to, t.reason), (State::Open, State::Closed, Reason::ForcedClosed));
    for i in 0..50 {
        assert!(fail(&mut b, Nanos(2 + i)).is_none());
    }
    let snapshot = b.snapshot(Nanos(60));
    assert!(snapshot.forced);
    assert_eq!(snapshot.consecutive_failures, 50, "still counted, for the status page");
    b.reset(Nanos(61));
    assert_eq!(b.snapshot(Nanos(61)).consecutive_failures, 0);
    assert!(fail(&mut b, Nanos(62)).is_none());
    assert!(fail(&mut b, Nanos(63)).is_some());
}

#[test]
fn forcing_switches_between_forced_states() {
    let mut b = breaker(BreakerConfig::default());
    b.force_open(Nanos(0));
    let t = b.force_close(Nanos(1));
    assert_eq!((t.from, t.to), (State::Open, State::Closed));
    assert!(b.is_forced());
    let t = b.force_open(Nanos(2));
    assert_eq!((t.from, t.to), (State::Closed, State::Open));
    assert!(b.try_acquire(at_secs(1_000)).result.unwrap_err().forced);
}

#[test]
fn reset_clears_half_open_and_growth() {
    let mut b = breaker(only_consecutive(1));
    trip(&mut b, at_secs(0));
    fail(&mut b, at_secs(30)).unwrap();
    let probe_holder = b.try_acquire(at_secs(90)).result.unwrap();
    assert!(probe_holder.is_probe());
    let t = b.reset(at_secs(91));
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Closed));
    let snapshot = b.snapshot(at_secs(91));
    assert_eq!((snapshot.reopens, snapshot.probes_in_flight, snapshot.cooldown), (0, 0, Duration::from_secs(30)));
    // The old probe's failure is stale.
    assert!(b.record(probe_holder, Outcome::failure(FailureClass::Busy, quick()), at_secs(92)).is_none());
    assert_eq!(b.state(), State::Closed);
}

// ---- snapshot and time ----

#[test]
fn snapshot_shows_what_status_needs() {
    let mut b = breaker(only_consecutive(2));
    fail(&mut b, at_secs(1));
    let t = fail(&mut b, at_secs(2)).unwrap();
    let snapshot = b.snapshot(at_secs(12));
    assert_eq!(snapshot.target, "local:llama3.2");
    assert_eq!(snapshot.state, State::Open);
    assert_eq!(snapshot.opened_at, Some(at_secs(2)));
    assert_eq!(snapshot.retry_after, Some(Duration::from_secs(20)));
    assert_eq!(snapshot.cooldown, Duration::from_secs(30));
    assert_eq!(snapshot.consecutive_failures, 2);
    assert_eq!((snapshot.window.calls, snapshot.window.failures), (2, 2));
    assert_eq!(snapshot.last_transition, Some(LastTransition { to: State::Open, reason: t.reason, at: t.at }));
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["state"], "open");
    assert_eq!(json["retry_after"], "20s");
    assert_eq!(json["cooldown"], "30s");
    assert_eq!(json["window"]["window"], "1m");
    assert_eq!(json["last_transition"]["reason"]["kind"], "consecutive_failures");
    // After the cooldown it still reads open, with nothing left to wait.
    assert_eq!(b.snapshot(at_secs(40)).retry_after, Some(Duration::ZERO));
}

#[test]
fn readings_from_the_past_are_tolerated() {
    let mut b = breaker(only_consecutive(3));
    fail(&mut b, at_secs(100));
    fail(&mut b, at_secs(99));
    let t = fail(&mut b, at_secs(50)).unwrap();
    assert_eq!(t.to, State::Open);
    // Opened "at 50 s": the cooldown counts from the reading it was given.
    assert!(b.try_acquire(at_secs(79)).result.is_err());
    assert!(b.try_acquire(at_secs(80)).result.is_ok());
}

#[test]
fn rejections_explain_themselves() {
    let open = Rejected { state: State::Open, forced: false, retry_after: Duration::from_millis(12_400) };
    assert_eq!(open.to_string(), "circuit breaker open after repeated upstream failures; retry after 12s");
    let forced = Rejected { state: State::Open, forced: true, retry_after: Duration::from_secs(30) };
    assert!(forced.to_string().contains("forced open"));
    let half = Rejected { state: State::HalfOpen, forced: false, retry_after: Duration::ZERO };
    assert!(half.to_string().contains("half-open"));
}

#[test]
fn a_remote_open_opens_for_the_given_cooldown_then_probes() {
    let mut b = breaker(only_consecutive(5));
    let t = b.open_remote(Duration::from_secs(7), at_secs(0)).unwrap();
    assert_eq!((t.from, t.to, t.reason), (State::Closed, State::Open, Reason::Remote));
    assert_eq!(t.cooldown, Some(Duration::from_secs(7)));
    assert_eq!(b.try_acquire(at_secs(1)).result.unwrap_err().retry_after, Duration::from_secs(6));
    // Already open: nothing changes.
    assert!(b.open_remote(Duration::from_secs(60), at_secs(2)).is_none());
    // After the cooldown a probe is admitted and closes it as usual.
    assert!(succeed(&mut b, at_secs(8)).is_some_and(|t| t.to == State::Closed));
    // A forced breaker ignores other instances.
    b.force_close(at_secs(9));
    assert!(b.open_remote(Duration::from_secs(7), at_secs(9)).is_none());
}
