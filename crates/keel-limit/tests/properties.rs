//! Random sequences of checks and settles against the core: the promises the gateway relies on.
//!
//! - never more admitted than the capacity plus what the elapsed time refills: over every window
//!   ending at an admitted check, `charged − refunded ≤ per_minute + elapsed · per_minute / 60 s`
//!   (charged = admitted costs and positive settles, refunded = requested refunds);
//! - `remaining` never exceeds the limit (nor `limit − cost` right after a charge), refunds
//!   included;
//! - `retry_after` is exact: the same cost is admitted at `now + retry_after` and not 1 µs
//!   earlier; the rounded [`Decision`] is admitted at `now + retry_after` and not 1 ms earlier;
//! - a cost is too large exactly when it exceeds the limit, and limited or too-large checks
//!   change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use keel_limit::gcra::{Gcra, MINUTE_MICROS, Verdict};
use keel_limit::{Decision, LocalLimiter, Quota};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Check { cost: u64 },
    Settle { delta: i64 },
}

#[derive(Debug, Clone)]
struct Step {
    wait: u64,
    op: Op,
}

fn per_minute() -> impl Strategy<Value = u64> {
    prop_oneof![1..=120u64, 1..=10_000u64, Just(7u64), Just(60), Just(1_000_000), Just(7_000_000)]
}

fn wait(limit: u64) -> impl Strategy<Value = u64> {
    let interval = MINUTE_MICROS.div_ceil(limit);
    prop_oneof![
        3 => Just(0u64),
        3 => 0..=interval * 2,
        1 => 0..=MINUTE_MICROS * 2,
    ]
}

fn step(limit: u64) -> impl Strategy<Value = Step> {
    let op = prop_oneof![
        4 => (1..=limit + 2).prop_map(|cost| Op::Check { cost }),
        1 => (-(limit as i64) * 2..=limit as i64 * 2).prop_map(|delta| Op::Settle { delta }),
    ];
    (wait(limit), op).prop_map(|(wait, op)| Step { wait, op })
}

fn scenario() -> impl Strategy<Value = (u64, Vec<Step>)> {
    per_minute().prop_flat_map(|limit| (Just(limit), proptest::collection::vec(step(limit), 1..120)))
}

/// One op as run: its time, units charged (+) or refund requested (−), and whether it was an
/// admitted check.
struct Done {
    at: u64,
    units: i128,
    admitted: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_admits_more_than_capacity_plus_refill((limit, steps) in scenario()) {
        let gcra = Gcra::new(limit);
        let (mut now, mut tat) = (1_000_000u64, 0u64);
        let mut done = Vec::new();
        for step in &steps {
            now += step.wait;
            match step.op {
                Op::Check { cost } => {
                    let verdict = gcra.check(tat, now, cost);
                    tat = verdict.new_tat().unwrap_or(tat);
                    let admitted = verdict.new_tat().is_some();
                    done.push(Done { at: now, units: if admitted { i128::from(cost) } else { 0 }, admitted });
                }
                Op::Settle { delta } => {
                    tat = gcra.settle(tat, now, delta);
                    done.push(Done { at: now, units: i128::from(delta), admitted: false });
                }
            }
        }
        for end in (0..done.len()).filter(|&j| done[j].admitted) {
            let mut net = 0i128;
            for start in (0..=end).rev() {
                net += done[start].units;
                let elapsed = i128::from(done[end].at - done[start].at);
                // net ≤ limit + elapsed / (60 s / limit), multiplied out to stay on integers.
                let bound = i128::from(limit) * (i128::from(MINUTE_MICROS) + elapsed);
                prop_assert!(net * i128::from(MINUTE_MICROS) <= bound, "window {start}..={end}: {net} units");
            }
        }
    }

    #[test]
    fn remaining_never_exceeds_the_limit((limit, steps) in scenario()) {
        let gcra = Gcra::new(limit);
        let (mut now, mut tat) = (1_000_000u64, 0u64);
        for step in &steps {
            now += step.wait;
            match step.op {
                Op::Check { cost } => {
                    if let Verdict::Allowed { tat: next, remaining, .. } = gcra.check(tat, now, cost) {
                        prop_assert!(remaining <= limit - cost);
                        tat = next;
                    }
                }
                Op::Settle { delta } => {
                    tat = gcra.settle(tat, now, delta);
                    prop_assert!(tat >= now, "a settle never leaves the TAT in the past");
                }
            }
            prop_assert!(gcra.remaining(tat, now) <= limit);
        }
    }

    #[test]
    fn retry_after_is_exact((limit, steps) in scenario(), cost_seed in any::<u64>()) {
        let gcra = Gcra::new(limit);
        let (mut now, mut tat) = (1_000_000u64, 0u64);
        for step in &steps {
            now += step.wait;
            match step.op {
                Op::Check { cost } => tat = gcra.check(tat, now, cost).new_tat().unwrap_or(tat),
                Op::Settle { delta } => tat = gcra.settle(tat, now, delta),
            }
            let cost = 1 + cost_seed % limit;
            let verdict = gcra.check(tat, now, cost);
            if let Verdict::Limited { retry_after, reset } = verdict {
                prop_assert_eq!(reset, tat - now);
                prop_assert!(gcra.check(tat, now + retry_after, cost).new_tat().is_some());
                prop_assert!(gcra.check(tat, now + retry_after - 1, cost).new_tat().is_none());
                let Decision::Limited { retry_after: rounded, .. } = Decision::from_verdict(&gcra, verdict) else {
                    panic!("a limited verdict is a limited decision");
                };
                let rounded = u64::try_from(rounded.as_micros()).unwrap();
                prop_assert!(gcra.check(tat, now + rounded, cost).new_tat().is_some());
                prop_assert!(gcra.check(tat, now + rounded - 1_000, cost).new_tat().is_none());
            }
        }
    }

    #[test]
    fn too_large_exactly_above_the_limit(
        limit in per_minute(), cost in 1..=20_000_000u64, tat in 0..=200_000_000u64, now in 0..=100_000_000u64,
    ) {
        prop_assert_eq!(Gcra::new(limit).check(tat, now, cost) == Verdict::TooLarge, cost > limit);
    }

    /// The local store (which forgets full buckets) decides exactly as the core on one TAT.
    #[test]
    fn local_limiter_matches_the_core((limit, steps) in scenario()) {
        let gcra = Gcra::new(limit);
        let quota = Quota::per_minute(limit);
        let local = LocalLimiter::new();
        let (mut now, mut tat) = (0u64, 0u64);
        for step in &steps {
            now += step.wait;
            match step.op {
                Op::Check { cost } => {
                    let verdict = gcra.check(tat, now, cost);
                    tat = verdict.new_tat().unwrap_or(tat);
                    prop_assert_eq!(local.check("k", quota, cost, now), Decision::from_verdict(&gcra, verdict));
                }
                Op::Settle { delta } => {
                    tat = gcra.settle(tat, now, delta);
                    local.settle("k", quota, delta, now);
                }
            }
            local.sweep(now);
            prop_assert_eq!(local.len(), usize::from(tat > now), "swept down to the keys not full");
        }
    }
}
