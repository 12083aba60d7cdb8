//! Random operation sequences against a registry: the invariants the proxy relies on.
//!
//! - never more HALF_OPEN probes in flight than configured;
//! - nothing stale after a close: entering CLOSED leaves no consecutive failures, no window
//!   counts and no token counts;
//! - the state always agrees with the last transition, and transitions chain (`from` of each is
//!   `to` of the one before);
//! - CLOSED always admits, OPEN always rejects (with a `retry_after` within the cooldown).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::time::Duration;

use keel_breaker::{
    BreakerConfig, CooldownStrategy, HalfOpenMode, ManualClock, Outcome, Permit, Reason, Registry, State, Transition,
};
use keel_types::FailureClass;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Record { index: usize, class: Option<FailureClass>, slow: bool, tokens: u64 },
    Drop { index: usize },
    Advance { millis: u64 },
    ForceOpen,
    ForceClose,
    Reset,
    HealthProbe,
}

fn class() -> impl Strategy<Value = Option<FailureClass>> {
    prop_oneof![
        3 => Just(None),
        2 => proptest::sample::select(FailureClass::ALL.to_vec()).prop_map(Some),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => Just(Op::Acquire),
        8 => (any::<usize>(), class(), proptest::bool::weighted(0.2), prop_oneof![Just(0u64), 0..5_000u64])
            .prop_map(|(index, class, slow, tokens)| Op::Record { index, class, slow, tokens }),
        2 => any::<usize>().prop_map(|index| Op::Drop { index }),
        4 => prop_oneof![0..2_000u64, 0..400_000u64].prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::ForceClose),
        1 => Just(Op::Reset),
        1 => Just(Op::HealthProbe),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (
        0..6u32,
        prop_oneof![Just(0.0), 0.2..1.0f64],
        1..8u32,
        prop_oneof![Just(0.0), 0.2..1.0f64],
        prop_oneof![Just(0.0), 0.2..1.0f64],
        prop_oneof![Just(0u64), 1_000..20_000u64],
        prop_oneof![Just(CooldownStrategy::Fixed), Just(CooldownStrategy::Exponential)],
        prop_oneof![Just(HalfOpenMode::Single), Just(HalfOpenMode::Gradual)],
        1..5u32,
        prop_oneof![Just(None), (1..6u32).prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(
            |(
                failure_threshold,
                failure_rate,
                min_calls,
                slow_call_rate,
                min_success_ratio,
                max_tokens_per_minute,
                cooldown_strategy,
                half_open,
                probes,
                successes_to_close,
                strict,
            )| BreakerConfig {
                failure_threshold,
                failure_rate,
                window: Duration::from_secs(20),
                min_calls,
                slow_call_duration: Duration::from_secs(1),
                slow_call_rate,
                min_success_ratio,
                max_tokens_per_minute,
                cooldown: Duration::from_secs(5),
                cooldown_strategy,
                cooldown_max: Duration::from_secs(60),
                half_open,
                probes,
                successes_to_close,
                ignore: if strict { vec![] } else { vec![FailureClass::BadRequest, FailureClass::ModelNotFound] },
                quality_failures: if strict { vec![] } else { vec![FailureClass::InvalidOutput] },
                shared: None,
                shared_prefix: "keel".into(),
                ..BreakerConfig::default()
            },
        )
}

struct Held {
    permit: Permit,
    /// The HALF_OPEN period (count of entries into HALF_OPEN) the probe was admitted in.
    episode: Option<u64>,
    /// Transitions seen before it was admitted.
    period: u64,
}

fn check(config: BreakerConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let registry = Registry::builder(config.clone()).clock(clock.clone()).build().unwrap();
    let handle = registry.breaker("t");
    let slots = match config.half_open {
        HalfOpenMode::Single => 1,
        HalfOpenMode::Gradual => config.probes,
    } as usize;
    let mut held: Vec<Held> = Vec::new();
    let mut state = State::Closed;
    let mut last: Option<Transition> = None;
    let mut episode = 0u64;
    let mut period = 0u64;
    // Results recorded in the current period by permits admitted in it.
    let mut recorded_in_period = 0u64;

    for op in ops {
        let mut returned = None;
        let mut acquired = None;
        match op {
            Op::Acquire => match handle.try_acquire() {
                Ok(permit) => {
                    let forced_open = last.as_ref().is_some_and(|t| t.reason == Reason::ForcedOpen);
                    prop_assert!(!forced_open, "a forced-open breaker admitted a call");
                    acquired = Some(permit);
                }
                Err(rejected) => {
                    prop_assert!(state != State::Closed, "closed rejected a call: {rejected:?}");
                    if rejected.state == State::Open && !rejected.forced {
                        prop_assert!(rejected.retry_after <= config.cooldown_max);
                        prop_assert!(rejected.retry_after > Duration::ZERO);
                    }
                }
            },
            Op::Record { index, class, slow, tokens } if !held.is_empty() => {
                let Held { permit, period: admitted_in, .. } = held.swap_remove(index % held.len());
                if admitted_in == period {
                    recorded_in_period += 1;
                }
                let latency = if slow { Duration::from_secs(2) } else { Duration::from_millis(10) };
                returned = permit.record(Outcome { class, latency, tokens });
            }
            Op::Drop { index } if !held.is_empty() => {
                drop(held.swap_remove(index % held.len()));
            }
            Op::Record { .. } | Op::Drop { .. } => {}
            Op::Advance { millis } => clock.advance(Duration::from_millis(millis)),
            Op::ForceOpen => returned = Some(handle.force_open()),
            Op::ForceClose => returned = Some(handle.force_close()),
            Op::Reset => returned = Some(handle.reset()),
            Op::HealthProbe => returned = handle.probe_succeeded(),
        }

        let events = registry.drain_events();
        prop_assert!(events.len() <= 1, "one operation, one transition at most: {events:?}");
        if let Some(returned) = &returned {
            prop_assert_eq!(Some(returned), events.first());
        }
        for event in events {
            prop_assert_eq!(event.from, state, "transitions chain: {}", event);
            state = event.to;
            if event.to == State::HalfOpen {
                episode += 1;
            }
            period += 1;
            recorded_in_period = 0;
            last = Some(event);
        }
        if let Some(permit) = acquired {
            let probe = permit.is_probe();
            prop_assert_eq!(probe, state == State::HalfOpen, "probes exactly in HALF_OPEN");
            held.push(Held { permit, episode: probe.then_some(episode), period });
        }

        let snapshot = handle.snapshot();
        // The state agrees with the last transition, in the breaker and in the lock-free gate.
        prop_assert_eq!(snapshot.state, state);
        prop_assert_eq!(handle.state(), state);
        if let Some(last) = &last {
            prop_assert_eq!(
                snapshot.last_transition.map(|t| (t.to, t.reason, t.at)),
                Some((last.to, last.reason, last.at))
            );
            match last.reason {
                Reason::ForcedOpen => prop_assert!(snapshot.forced && state == State::Open),
                Reason::ForcedClosed => prop_assert!(snapshot.forced && state == State::Closed),
                _ => prop_assert!(!snapshot.forced),
            }
        }
        if returned.as_ref().is_some_and(|t| t.to == State::Closed) {
            prop_assert_eq!(snapshot.consecutive_failures, 0);
            prop_assert_eq!(snapshot.window.calls, 0);
            prop_assert_eq!(snapshot.window.failures, 0);
            prop_assert_eq!(snapshot.tokens_last_minute, 0);
            prop_assert_eq!(snapshot.reopens, 0);
        }

        // Counts of a CLOSED period come only from calls admitted in it: a call admitted before a
        // close (or before a reset) never leaks into the new period.
        if state == State::Closed {
            prop_assert!(u64::from(snapshot.window.calls) <= recorded_in_period);
            prop_assert!(u64::from(snapshot.consecutive_failures) <= recorded_in_period);
        }

        // Never more probes in flight than configured.
        if state == State::HalfOpen {
            prop_assert!(snapshot.probes_in_flight as usize <= slots);
            let current = held.iter().filter(|h| h.episode == Some(episode)).count();
            prop_assert!(current <= slots, "{current} probes held, {slots} allowed");
            prop_assert_eq!(current, snapshot.probes_in_flight as usize);
        } else {
            prop_assert_eq!(snapshot.probes_in_flight, 0);
        }
        if state == State::Open && !snapshot.forced {
            prop_assert!(snapshot.cooldown <= config.cooldown_max);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_any_sequence(config in config(), ops in proptest::collection::vec(op(), 1..300)) {
        check(config, ops)?;
    }
}

/// The same invariants on a sequence known to visit every state, so a refactor that breaks
/// half-open admission fails here even if the random search is unlucky.
#[test]
fn invariants_hold_for_a_scripted_outage() {
    let config = BreakerConfig { failure_threshold: 2, half_open: HalfOpenMode::Gradual, ..BreakerConfig::default() };
    let fail = |index| Op::Record { index, class: Some(FailureClass::Busy), slow: false, tokens: 0 };
    let ok = |index| Op::Record { index, class: None, slow: false, tokens: 10 };
    let mut ops = vec![Op::Acquire, Op::Acquire, fail(0), fail(0), Op::Acquire, Op::Advance { millis: 30_000 }];
    for _ in 0..3 {
        ops.extend([Op::Acquire, Op::Acquire, Op::Acquire, Op::Acquire, ok(0), Op::Drop { index: 0 }]);
    }
    ops.extend([Op::Acquire, fail(0), Op::HealthProbe, Op::Acquire, Op::ForceOpen, Op::Reset, Op::ForceClose]);
    check(config, ops).unwrap();
}
