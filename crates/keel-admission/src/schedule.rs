//! The scheduling choice, as a pure function: which waiting request gets a freed slot.
//!
//! Among the waiters that may run (their model and their upstream both have a free slot):
//! 1. the highest *effective* priority: the ticket's priority raised one level per
//!    [`Settings::aging`](crate::Settings::aging) waited, up to `Interactive`;
//! 2. then fair share: the tenant with the fewest requests running on that bucket;
//! 3. then the earliest arrival.

use std::cmp::Reverse;
use std::time::Duration;

use crate::Priority;

/// What the scheduler knows of one waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The ticket's priority.
    pub(crate) priority: Priority,
    /// How long it has waited so far.
    pub(crate) waited: Duration,
    /// Its arrival number: smaller arrived earlier.
    pub(crate) arrival: u64,
    /// Requests its tenant has running on its bucket.
    pub(crate) tenant_running: usize,
}

/// A candidate's place in line; the greatest is served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    level: u8,
    fewer_running: Reverse<usize>,
    earlier: Reverse<u64>,
}

impl Candidate {
    /// Its place in line with aging applied.
    pub(crate) fn rank(&self, aging: Duration) -> Rank {
        Rank {
            level: effective_level(self.priority, self.waited, aging),
            fewer_running: Reverse(self.tenant_running),
            earlier: Reverse(self.arrival),
        }
    }
}

/// The priority level after aging: one level more per `aging` waited, at most `Interactive`'s.
pub(crate) fn effective_level(priority: Priority, waited: Duration, aging: Duration) -> u8 {
    let top = Priority::Interactive.level();
    let lifts = waited.as_nanos().checked_div(aging.as_nanos()).unwrap_or(0);
    let lifts = u8::try_from(lifts).unwrap_or(top);
    priority.level().saturating_add(lifts).min(top)
}

/// The key of the candidate to serve first, `None` when there is none.
pub(crate) fn choose<K>(candidates: impl IntoIterator<Item = (K, Candidate)>, aging: Duration) -> Option<K> {
    candidates.into_iter().max_by_key(|(_, candidate)| candidate.rank(aging)).map(|(key, _)| key)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const AGING: Duration = Duration::from_secs(5);

    fn candidate(priority: Priority, waited_ms: u64, arrival: u64, tenant_running: usize) -> Candidate {
        Candidate { priority, waited: Duration::from_millis(waited_ms), arrival, tenant_running }
    }

    fn pick(candidates: &[Candidate]) -> Option<u64> {
        choose(candidates.iter().map(|c| (c.arrival, *c)), AGING)
    }

    #[test]
    fn nobody_waiting_chooses_nobody() {
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn higher_priority_first_even_from_a_busier_tenant() {
        let batch = candidate(Priority::Batch, 4_000, 1, 0);
        let interactive = candidate(Priority::Interactive, 0, 2, 20);
        assert_eq!(pick(&[batch, interactive]), Some(2));
    }

    #[test]
    fn aging_lifts_one_level_per_period() {
        assert_eq!(effective_level(Priority::Batch, Duration::from_millis(4_999), AGING), 0);
        assert_eq!(effective_level(Priority::Batch, AGING, AGING), 1);
        assert_eq!(effective_level(Priority::Batch, AGING * 2, AGING), 2);
        assert_eq!(effective_level(Priority::Batch, Duration::MAX, AGING), 2, "never above interactive");
        // A batch request that waited two periods competes with interactive ones on fair share.
        let old_batch = candidate(Priority::Batch, 10_000, 1, 0);
        let interactive = candidate(Priority::Interactive, 0, 2, 1);
        assert_eq!(pick(&[old_batch, interactive]), Some(1));
    }

    #[test]
    fn same_priority_goes_to_the_tenant_with_fewer_running() {
        let heavy = candidate(Priority::Normal, 900, 1, 2);
        let light = candidate(Priority::Normal, 0, 2, 0);
        assert_eq!(pick(&[heavy, light]), Some(2));
    }

    #[test]
    fn ties_go_to_the_earliest_arrival() {
        let first = candidate(Priority::Normal, 10, 7, 1);
        let second = candidate(Priority::Normal, 20, 9, 1);
        assert_eq!(pick(&[second, first]), Some(7));
    }

    fn any_candidate() -> impl Strategy<Value = Candidate> {
        (proptest::sample::select(Priority::ALL.to_vec()), 0u64..20_000, 0usize..4)
            .prop_map(|(priority, waited_ms, tenant_running)| candidate(priority, waited_ms, 0, tenant_running))
    }

    /// Distinct arrival numbers, as in a real queue.
    fn queue() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec(any_candidate(), 1..12).prop_map(|mut candidates| {
            for (arrival, candidate) in candidates.iter_mut().enumerate() {
                candidate.arrival = arrival as u64;
            }
            candidates
        })
    }

    proptest! {
        #[test]
        fn the_chosen_one_is_outranked_by_nobody(candidates in queue()) {
            let chosen = pick(&candidates).unwrap();
            let chosen = candidates.iter().find(|c| c.arrival == chosen).unwrap();
            let level = |c: &Candidate| effective_level(c.priority, c.waited, AGING);
            for other in &candidates {
                prop_assert!(level(other) <= level(chosen));
                if level(other) == level(chosen) {
                    prop_assert!(other.tenant_running >= chosen.tenant_running);
                    if other.tenant_running == chosen.tenant_running {
                        prop_assert!(other.arrival >= chosen.arrival);
                    }
                }
            }
        }

        #[test]
        fn the_order_of_the_queue_does_not_matter(candidates in queue(), seed in any::<u64>()) {
            let mut shuffled = candidates.clone();
            shuffled.sort_by_key(|c| c.arrival.wrapping_mul(seed | 1).rotate_left(17));
            prop_assert_eq!(pick(&candidates), pick(&shuffled));
        }
    }
}
