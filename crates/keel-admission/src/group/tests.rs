//! The group driven by hand and by random event sequences: limits, liveness, no leaks.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const MS: Duration = Duration::from_millis(1);

fn settings() -> Settings {
    Settings {
        max_concurrent: 2,
        max_queue: 3,
        max_wait: Duration::from_secs(30),
        upstream_max_concurrent: Some(3),
        aging: Duration::from_secs(5),
    }
}

fn ticket(tenant: &str, priority: Priority) -> Ticket {
    Ticket::new(tenant, priority)
}

/// Finishes one request of `model`/`tenant` and returns the payloads handed a slot.
fn finish(group: &mut Group<u32>, model: &str, tenant: &str, now: Instant) -> Vec<u32> {
    let mut granted = Vec::new();
    group.finish(model, tenant, Some(100 * MS), now, &mut |payload| {
        granted.push(payload);
        true
    });
    granted
}

#[test]
fn a_free_slot_admits_at_once_and_an_idle_bucket_is_forgotten() {
    let mut group = Group::<u32>::new("local".into(), settings());
    let now = Instant::now();
    let tenant: Arc<str> = "a".into();
    assert_eq!(group.try_admit("llama", &tenant).as_deref(), Some("llama"));
    assert_eq!((group.running, group.buckets.len()), (1, 1));
    assert!(finish(&mut group, "llama", "a", now).is_empty());
    assert_eq!((group.running, group.buckets.len()), (0, 0));
}

#[test]
fn a_freed_slot_of_one_model_goes_to_another_model_held_back_by_the_upstream_cap() {
    let mut group = Group::<u32>::new("local".into(), settings());
    let now = Instant::now();
    let tenant: Arc<str> = "a".into();
    assert!(group.try_admit("a", &tenant).is_some());
    assert!(group.try_admit("a", &tenant).is_some());
    assert!(group.try_admit("b", &tenant).is_some());
    assert!(group.try_admit("b", &tenant).is_none(), "upstream cap 3 reached");
    group.enqueue("b", ticket("a", Priority::Normal), now, 7).unwrap();
    assert_eq!(finish(&mut group, "a", "a", now), [7]);
    assert_eq!(group.buckets["b"].running, 2);
}

#[test]
fn the_scheduler_prefers_priority_then_the_lighter_tenant() {
    let mut group = Group::<u32>::new("local".into(), Settings { max_queue: 8, ..settings() });
    let now = Instant::now();
    let heavy: Arc<str> = "heavy".into();
    assert!(group.try_admit("m", &heavy).is_some());
    assert!(group.try_admit("m", &heavy).is_some());
    group.enqueue("m", ticket("heavy", Priority::Batch), now, 1).unwrap();
    group.enqueue("m", ticket("heavy", Priority::Normal), now, 2).unwrap();
    group.enqueue("m", ticket("light", Priority::Normal), now + MS, 3).unwrap();
    group.enqueue("m", ticket("vip", Priority::Interactive), now + 2 * MS, 4).unwrap();
    let later = now + 10 * MS;
    assert_eq!(finish(&mut group, "m", "heavy", later), [4], "interactive first");
    // `light` has nothing running, `heavy` one: light's later arrival goes first.
    assert_eq!(finish(&mut group, "m", "vip", later), [3]);
    assert_eq!(finish(&mut group, "m", "heavy", later), [2]);
    assert_eq!(finish(&mut group, "m", "light", later), [1]);
}

#[test]
fn a_full_queue_sheds_the_newcomer_unless_it_outranks_someone() {
    let mut group = Group::<u32>::new("local".into(), Settings { upstream_max_concurrent: None, ..settings() });
    let now = Instant::now();
    let batch: Arc<str> = "batch".into();
    assert!(group.try_admit("m", &batch).is_some());
    assert!(group.try_admit("m", &batch).is_some());
    for payload in 0..3 {
        group.enqueue("m", ticket("batch", Priority::Batch), now, payload).unwrap();
    }
    let full = group.enqueue("m", ticket("batch", Priority::Batch), now, 3).unwrap_err();
    assert!(matches!(full, Shed::QueueFull { queued: 3, .. }), "{full:?}");
    let urgent = group.enqueue("m", ticket("person", Priority::Interactive), now + MS, 4).unwrap();
    let (payload, shed) = urgent.displaced.unwrap();
    assert_eq!(payload, 2, "the newest of the lowest rank goes");
    assert_eq!(shed.reason(), crate::ShedReason::Displaced);
    assert_eq!(group.buckets["m"].queue.len(), 3);
}

#[test]
fn a_deadline_shorter_than_the_expected_wait_is_shed_only_with_an_estimate() {
    let mut group = Group::<u32>::new("local".into(), Settings { max_queue: 8, ..settings() });
    let now = Instant::now();
    let tenant: Arc<str> = "a".into();
    for _ in 0..2 {
        assert!(group.try_admit("m", &tenant).is_some());
    }
    let soon = ticket("b", Priority::Normal).with_deadline(now + MS);
    let queued = group.enqueue("m", soon.clone(), now, 1).unwrap();
    assert!(group.leave("m", queued.id), "no estimate yet: queued, not shed");
    // One request finishes after 100 ms: the estimate for the next in line is 100 ms × 1 / 2.
    group.finish("m", "a", Some(100 * MS), now, &mut |_| true);
    assert!(group.try_admit("m", &tenant).is_some());
    let shed = group.enqueue("m", soon, now, 2).unwrap_err();
    let Shed::DeadlineUnmeetable { expected_wait, time_left, retry_after, .. } = shed else { panic!("{shed:?}") };
    assert_eq!((expected_wait, time_left, retry_after), (50 * MS, MS, Duration::from_secs(1)));
    let roomy = ticket("b", Priority::Normal).with_deadline(now + 60 * MS);
    assert!(group.enqueue("m", roomy, now, 3).is_ok());
}

#[test]
fn a_slot_for_a_request_that_is_gone_goes_to_the_next() {
    let mut group = Group::<u32>::new("local".into(), settings());
    let now = Instant::now();
    let tenant: Arc<str> = "a".into();
    assert!(group.try_admit("m", &tenant).is_some());
    assert!(group.try_admit("m", &tenant).is_some());
    group.enqueue("m", ticket("a", Priority::Normal), now, 1).unwrap();
    group.enqueue("m", ticket("a", Priority::Normal), now, 2).unwrap();
    let mut offered = Vec::new();
    group.finish("m", "a", None, now, &mut |payload| {
        offered.push(payload);
        payload != 1
    });
    assert_eq!(offered, [1, 2]);
    assert_eq!((group.running, group.buckets["m"].queue.len()), (2, 0));
}

// --- random event sequences ------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Event {
    Arrive {
        model: u8,
        tenant: u8,
        priority: Priority,
        deadline_ms: Option<u64>,
    },
    Finish {
        pick: usize,
    },
    /// The client went away; or its time ran out (same to the group).
    Leave {
        pick: usize,
    },
    /// The client went away without leaving the queue: the next handover to it fails (the
    /// race of a drop with a handover, which `Admission` resolves the same way).
    Vanish {
        pick: usize,
    },
    Advance {
        ms: u64,
    },
}

fn event() -> impl Strategy<Value = Event> {
    let priority = proptest::sample::select(Priority::ALL.to_vec());
    prop_oneof![
        5 => (0u8..3, 0u8..3, priority, proptest::option::of(0u64..400)).prop_map(
            |(model, tenant, priority, deadline_ms)| Event::Arrive { model, tenant, priority, deadline_ms }
        ),
        3 => any::<usize>().prop_map(|pick| Event::Finish { pick }),
        1 => any::<usize>().prop_map(|pick| Event::Leave { pick }),
        1 => any::<usize>().prop_map(|pick| Event::Vanish { pick }),
        2 => (0u64..3_000).prop_map(|ms| Event::Advance { ms }),
    ]
}

fn any_settings() -> impl Strategy<Value = Settings> {
    (1usize..4, 0usize..5, proptest::option::of(1usize..6), 1u64..4).prop_map(
        |(max_concurrent, max_queue, cap, aging)| Settings {
            max_concurrent,
            max_queue,
            max_wait: Duration::from_secs(30),
            upstream_max_concurrent: cap,
            aging: Duration::from_secs(aging),
        },
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Queued { model: Arc<str>, id: u64 },
    Running { model: Arc<str>, tenant: Arc<str>, since: Instant },
    Done,
    Shed,
    Left,
    Vanished,
}

/// The group plus what each request's client knows about itself.
struct World {
    group: Group<u32>,
    now: Instant,
    fates: Vec<Fate>,
    tenants: Vec<Arc<str>>,
}

impl World {
    fn new(settings: Settings) -> World {
        World {
            group: Group::new("local".into(), settings),
            now: Instant::now(),
            fates: Vec::new(),
            tenants: Vec::new(),
        }
    }

    fn pick(&self, pick: usize, want: impl Fn(&Fate) -> bool) -> Option<usize> {
        let matching: Vec<usize> = (0..self.fates.len()).filter(|&i| want(&self.fates[i])).collect();
        (!matching.is_empty()).then(|| matching[pick % matching.len()])
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Arrive { model, tenant, priority, deadline_ms } => {
                let ticket = Ticket {
                    tenant: format!("t{tenant}").into(),
                    priority,
                    deadline: deadline_ms.map(|ms| self.now + Duration::from_millis(ms)),
                    waited_before: Duration::ZERO,
                };
                self.arrive(&format!("m{model}"), ticket);
            }
            Event::Finish { pick } => {
                if let Some(i) = self.pick(pick, |f| matches!(f, Fate::Running { .. })) {
                    self.finish(i);
                }
            }
            Event::Leave { pick } => {
                if let Some(i) = self.pick(pick, |f| matches!(f, Fate::Queued { .. })) {
                    let Fate::Queued { model, id } = &self.fates[i] else { unreachable!() };
                    assert!(self.group.leave(model, *id), "a queued request can leave");
                    self.fates[i] = Fate::Left;
                }
            }
            Event::Vanish { pick } => {
                if let Some(i) = self.pick(pick, |f| matches!(f, Fate::Queued { .. })) {
                    self.fates[i] = Fate::Vanished;
                }
            }
            Event::Advance { ms } => self.now += Duration::from_millis(ms),
        }
    }

    fn arrive(&mut self, model: &str, ticket: Ticket) {
        let payload = u32::try_from(self.fates.len()).unwrap();
        let tenant = Arc::clone(&ticket.tenant);
        self.tenants.push(Arc::clone(&tenant));
        if let Some(model) = self.group.try_admit(model, &tenant) {
            self.fates.push(Fate::Running { model, tenant, since: self.now });
            return;
        }
        match self.group.enqueue(model, ticket, self.now, payload) {
            Ok(Enqueued { id, model, displaced }) => {
                self.fates.push(Fate::Queued { model, id });
                if let Some((victim, _)) = displaced {
                    let victim = victim as usize;
                    assert!(matches!(self.fates[victim], Fate::Queued { .. } | Fate::Vanished));
                    self.fates[victim] = Fate::Shed;
                }
            }
            Err(_) => self.fates.push(Fate::Shed),
        }
    }

    fn finish(&mut self, i: usize) {
        let Fate::Running { model, tenant, since } = std::mem::replace(&mut self.fates[i], Fate::Done) else {
            unreachable!()
        };
        let (now, fates) = (self.now, &mut self.fates);
        let tenants = &self.tenants;
        self.group.finish(&model, &tenant, Some(now - since), now, &mut |payload| {
            let payload = payload as usize;
            match &fates[payload] {
                Fate::Vanished => false,
                Fate::Queued { model, .. } => {
                    let model = Arc::clone(model);
                    fates[payload] = Fate::Running { model, tenant: Arc::clone(&tenants[payload]), since: now };
                    true
                }
                other => panic!("handed a slot while {other:?}"),
            }
        });
    }

    /// The invariants that hold between any two events.
    fn check(&self) {
        let settings = self.group.settings;
        let mut running = 0;
        for bucket in self.group.buckets.values() {
            assert!(!bucket.is_idle(), "an idle bucket is forgotten");
            assert!(bucket.running <= settings.max_concurrent);
            assert!(bucket.queue.len() <= settings.max_queue);
            assert_eq!(bucket.tenants.values().sum::<usize>(), bucket.running);
            assert!(bucket.tenants.values().all(|&n| n > 0));
            running += bucket.running;
        }
        assert_eq!(self.group.running, running);
        assert!(running <= settings.upstream_cap());
        let upstream_full = running >= settings.upstream_cap();
        for bucket in self.group.buckets.values().filter(|b| !b.queue.is_empty()) {
            assert!(upstream_full || bucket.running == settings.max_concurrent, "a waiter is stuck beside a free slot");
        }
        let client_running = self.fates.iter().filter(|f| matches!(f, Fate::Running { .. })).count();
        assert_eq!(client_running, running, "every slot is held by a client that knows it");
        let queued: HashSet<u64> = self.group.buckets.values().flat_map(|b| b.queue.iter().map(|w| w.id)).collect();
        let client_queued: HashSet<u64> =
            self.fates.iter().filter_map(|f| if let Fate::Queued { id, .. } = f { Some(*id) } else { None }).collect();
        assert!(client_queued.is_subset(&queued), "a client waits on a request the group forgot");
    }

    /// Finishes everything running until nothing is left.
    fn drain(&mut self) {
        while let Some(i) = self.fates.iter().position(|f| matches!(f, Fate::Running { .. })) {
            self.now += 10 * MS;
            self.finish(i);
            self.check();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn limits_hold_nobody_is_stuck_and_no_slot_leaks(
        settings in any_settings(),
        events in proptest::collection::vec(event(), 1..120),
    ) {
        let mut world = World::new(settings);
        for event in events {
            world.apply(event);
            world.check();
        }
        world.drain();
        let stuck: Vec<&Fate> = world.fates.iter().filter(|f| matches!(f, Fate::Queued { .. })).collect();
        prop_assert!(stuck.is_empty(), "still queued with nothing running: {stuck:?}");
        prop_assert_eq!(world.group.running, 0);
        prop_assert!(world.group.buckets.is_empty(), "buckets left: {:?}", world.group.buckets.keys().collect::<Vec<_>>());
        let counts = world.fates.iter().fold(HashMap::new(), |mut counts, fate| {
            *counts.entry(std::mem::discriminant(fate)).or_insert(0) += 1;
            counts
        });
        prop_assert_eq!(counts.values().sum::<usize>(), world.fates.len());
    }
}
