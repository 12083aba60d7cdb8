//! Breakers for many targets, shared by every serving thread.
//!
//! Each target's [`Breaker`] sits behind a `parking_lot::Mutex`, mirrored into an atomic *gate*
//! (state, forced flag and generation in one `AtomicU64`, plus the end of the cooldown). Deciding
//! in CLOSED and rejecting in OPEN read only the gate: no lock, no write to shared memory except
//! the permit's reference count. The lock is taken to record a result, to admit a HALF_OPEN probe
//! and for manual actions.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::Error;
use crate::clock::{Clock, Nanos, SystemClock};
use crate::config::{BreakerConfig, Policy};
use crate::event::{State, Transition};
use crate::machine::{Acquire, Breaker, Outcome, Rejected, Snapshot, Ticket};

const STATE_MASK: u64 = 0b11;
const FORCED: u64 = 0b100;
const GENERATION_SHIFT: u32 = 8;
const CLOSED: u64 = 0;
const OPEN: u64 = 1;

/// Transitions kept for [`Registry::drain_events`] when nobody drains; older ones are dropped
/// (and counted).
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

fn pack(breaker: &Breaker) -> u64 {
    (breaker.generation() << GENERATION_SHIFT) | if breaker.is_forced() { FORCED } else { 0 } | breaker.state().code()
}

/// Keeps the lock-free fields off the cache line the mutex writes on every record.
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

/// The bounded queue of transitions of all targets, in the order they happened per target.
#[derive(Debug)]
struct EventLog {
    queue: Mutex<VecDeque<Transition>>,
    len: AtomicUsize,
    capacity: usize,
    dropped: AtomicU64,
}

impl EventLog {
    fn push(&self, transition: Transition) {
        let mut queue = self.queue.lock();
        if queue.len() >= self.capacity {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(transition);
        self.len.store(queue.len(), Ordering::Release);
    }

    fn drain(&self) -> Vec<Transition> {
        if self.len.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let mut queue = self.queue.lock();
        self.len.store(0, Ordering::Release);
        queue.drain(..).collect()
    }
}

#[derive(Debug)]
struct Shared {
    gate: Padded<(AtomicU64, AtomicU64)>,
    forced_retry_after: Duration,
    breaker: Padded<Mutex<Breaker>>,
    clock: Arc<dyn Clock>,
    events: Arc<EventLog>,
    /// When the registry last handed this breaker out (clock nanos), for least-recently-used
    /// eviction.
    last_used: AtomicU64,
    /// Never evicted (a configured target or an upstream).
    pinned: bool,
    /// The breaker's failures in a row, mirrored after every locked change.
    consecutive: AtomicU32,
    /// Only failures in a row can open it: a success with nothing to reset needs no lock.
    lock_free_success: bool,
}

impl Shared {
    /// After a transition, with the breaker still locked: mirror it into the gate and queue the
    /// event (under the lock, so one target's events are queued in order).
    fn emit(&self, breaker: &Breaker, transition: &Transition) {
        self.gate.0.1.store(breaker.open_until().0, Ordering::Release);
        self.gate.0.0.store(pack(breaker), Ordering::Release);
        self.events.push(transition.clone());
    }

    fn locked<R: Emits>(&self, act: impl FnOnce(&mut Breaker, Nanos) -> R) -> R {
        let now = self.clock.now();
        let mut breaker = self.breaker.0.lock();
        let result = act(&mut breaker, now);
        if let Some(transition) = result.transition() {
            self.emit(&breaker, transition);
        }
        self.consecutive.store(breaker.consecutive_failures(), Ordering::Release);
        result
    }

    /// Whether recording this success would change nothing: CLOSED in the ticket's generation, no
    /// failure in a row to reset, and no window to count it in.
    fn success_changes_nothing(&self, ticket: &Ticket, outcome: &Outcome) -> bool {
        self.lock_free_success
            && outcome.class.is_none()
            && outcome.tokens == 0
            && !ticket.is_probe()
            && self.consecutive.load(Ordering::Acquire) == 0
            && self.gate.0.0.load(Ordering::Acquire) == ticket.generation << GENERATION_SHIFT | CLOSED
    }
}

/// Results of breaker methods that may carry a transition.
trait Emits {
    fn transition(&self) -> Option<&Transition>;
}

impl Emits for Transition {
    fn transition(&self) -> Option<&Transition> {
        Some(self)
    }
}

impl Emits for Option<Transition> {
    fn transition(&self) -> Option<&Transition> {
        self.as_ref()
    }
}

impl Emits for Acquire {
    fn transition(&self) -> Option<&Transition> {
        self.transition.as_ref()
    }
}

/// One target's breaker inside a [`Registry`]. Cheap to clone; the proxy may keep one per
/// configured target to skip the name lookup on every request.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
    target: Arc<str>,
}

impl BreakerHandle {
    /// The target's name.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Asks to send one call to the target. Lock-free in CLOSED and in OPEN before the cooldown
    /// ends; HALF_OPEN admits probes under the lock.
    pub fn try_acquire(&self) -> Result<Permit, Rejected> {
        let shared = &self.shared;
        let gate = shared.gate.0.0.load(Ordering::Acquire);
        match gate & STATE_MASK {
            CLOSED => {
                let ticket = Ticket { generation: gate >> GENERATION_SHIFT, probe: false };
                return Ok(Permit { shared: Arc::clone(shared), ticket: Some(ticket) });
            }
            OPEN if gate & FORCED != 0 => {
                return Err(Rejected { state: State::Open, forced: true, retry_after: shared.forced_retry_after });
            }
            OPEN => {
                let now = shared.clock.now();
                let until = shared.gate.0.1.load(Ordering::Acquire);
                if now.0 < until {
                    return Err(Rejected {
                        state: State::Open,
                        forced: false,
                        retry_after: Duration::from_nanos(until - now.0),
                    });
                }
            }
            _ => {}
        }
        let acquire = shared.locked(|breaker, now| breaker.try_acquire(now));
        acquire.result.map(|ticket| Permit { shared: Arc::clone(shared), ticket: Some(ticket) })
    }

    /// The current state, read lock-free from the gate. An elapsed cooldown shows as `Open` until
    /// the next call.
    pub fn state(&self) -> State {
        State::from_code(self.shared.gate.0.0.load(Ordering::Acquire) & STATE_MASK)
    }

    /// The breaker's state for `/keel/status`.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.shared.clock.now();
        self.shared.breaker.0.lock().snapshot(now)
    }

    /// Opens the breaker until reset (or forced closed). See [`Breaker::force_open`].
    pub fn force_open(&self) -> Transition {
        self.manual(Breaker::force_open)
    }

    /// Closes the breaker and keeps it closed until reset (or forced open). See
    /// [`Breaker::force_close`].
    pub fn force_close(&self) -> Transition {
        self.manual(Breaker::force_close)
    }

    /// Back to a fresh CLOSED breaker. See [`Breaker::reset`].
    pub fn reset(&self) -> Transition {
        self.manual(Breaker::reset)
    }

    fn manual(&self, act: fn(&mut Breaker, Nanos) -> Transition) -> Transition {
        self.shared.locked(act)
    }

    /// Another keel instance opened this target: CLOSED or HALF_OPEN (not forced) opens for
    /// `cooldown`. See [`Breaker::open_remote`].
    pub fn open_remote(&self, cooldown: std::time::Duration) -> Option<Transition> {
        self.shared.locked(|breaker, now| breaker.open_remote(cooldown, now))
    }

    /// An external health check saw the target answer: OPEN (not forced) moves to HALF_OPEN now.
    pub fn probe_succeeded(&self) -> Option<Transition> {
        self.shared.locked(|breaker, now| breaker.probe_succeeded(now))
    }
}

/// Permission to send one call, from [`BreakerHandle::try_acquire`] or [`Registry::try_acquire`].
///
/// Give the result back with [`record`](Permit::record). A permit dropped without recording (the
/// client went away, the call was abandoned) counts as nothing: if it was a HALF_OPEN probe, its
/// slot is released on drop so the next call can probe. There is no probe timeout: a probe that
/// hangs holds its slot until the proxy's own request timeout ends the call.
#[derive(Debug)]
#[must_use = "record the call's outcome with Permit::record; dropping the permit counts as nothing"]
pub struct Permit {
    shared: Arc<Shared>,
    ticket: Option<Ticket>,
}

impl Permit {
    /// Records the call's outcome; returns the transition it caused (also queued for
    /// [`Registry::drain_events`]).
    pub fn record(mut self, outcome: Outcome) -> Option<Transition> {
        let ticket = self.ticket.take()?;
        if self.shared.success_changes_nothing(&ticket, &outcome) {
            return None;
        }
        self.shared.locked(|breaker, now| breaker.record(ticket, outcome, now))
    }

    /// Whether this call is a HALF_OPEN probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.as_ref().is_some_and(Ticket::is_probe)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take()
            && ticket.is_probe()
        {
            self.shared.breaker.0.lock().cancel(ticket);
        }
    }
}

/// Drops the least recently used unpinned breaker, a CLOSED one when there is one (an open
/// breaker remembers a failing target; a closed one only that it was asked for).
fn evict_least_recently_used(breakers: &mut HashMap<Arc<str>, BreakerHandle>) {
    let victim = breakers
        .iter()
        .filter(|(_, h)| !h.shared.pinned)
        .min_by_key(|(_, h)| {
            let open = h.shared.gate.0.0.load(Ordering::Acquire) & STATE_MASK != CLOSED;
            (open, h.shared.last_used.load(Ordering::Relaxed))
        })
        .map(|(name, _)| Arc::clone(name));
    if let Some(name) = victim {
        breakers.remove(&name);
    }
}

/// Breakers keyed by target name, created on first use from the default config or the target's
/// override. Thread-safe and cheap to clone (clones share everything).
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    default: Arc<Policy>,
    overrides: HashMap<String, Arc<Policy>>,
    clock: Arc<dyn Clock>,
    breakers: RwLock<HashMap<Arc<str>, BreakerHandle>>,
    events: Arc<EventLog>,
}

/// Builds a [`Registry`] with a clock, per-target overrides and an event capacity.
#[derive(Debug)]
pub struct RegistryBuilder {
    default: BreakerConfig,
    overrides: Vec<(String, BreakerConfig)>,
    clock: Option<Arc<dyn Clock>>,
    event_capacity: usize,
}

impl RegistryBuilder {
    /// Uses `clock` instead of a [`SystemClock`] (tests pass a [`ManualClock`](crate::ManualClock)).
    pub fn clock(mut self, clock: impl Clock + 'static) -> RegistryBuilder {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Uses this config instead of the default one for `target`.
    pub fn target(mut self, target: impl Into<String>, config: BreakerConfig) -> RegistryBuilder {
        self.overrides.push((target.into(), config));
        self
    }

    /// Keeps at most this many undrained transitions (default [`DEFAULT_EVENT_CAPACITY`]).
    pub fn event_capacity(mut self, capacity: usize) -> RegistryBuilder {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Validates every config and builds the registry.
    pub fn build(self) -> Result<Registry, Error> {
        let default = Arc::new(Policy::new(&self.default)?);
        let mut overrides = HashMap::new();
        for (target, config) in self.overrides {
            let policy = Policy::new(&config)
                .map_err(|err| Error::InvalidTargetConfig { target: target.clone(), source: Box::new(err) })?;
            overrides.insert(target, Arc::new(policy));
        }
        Ok(Registry {
            inner: Arc::new(Inner {
                default,
                overrides,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock::new())),
                breakers: RwLock::new(HashMap::new()),
                events: Arc::new(EventLog {
                    queue: Mutex::new(VecDeque::new()),
                    len: AtomicUsize::new(0),
                    capacity: self.event_capacity,
                    dropped: AtomicU64::new(0),
                }),
            }),
        })
    }
}

impl Registry {
    /// A registry on the system clock with one config for every target.
    pub fn new(config: &BreakerConfig) -> Result<Registry, Error> {
        Registry::builder(config.clone()).build()
    }

    /// Starts a [`RegistryBuilder`] with `config` as the default for every target.
    pub fn builder(config: BreakerConfig) -> RegistryBuilder {
        RegistryBuilder { default: config, overrides: Vec::new(), clock: None, event_capacity: DEFAULT_EVENT_CAPACITY }
    }

    /// The clock every breaker of this registry reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The config `target` follows (its override, or the default).
    pub fn config_for(&self, target: &str) -> &BreakerConfig {
        &self.policy_for(target).config
    }

    fn policy_for(&self, target: &str) -> &Arc<Policy> {
        self.inner.overrides.get(target).unwrap_or(&self.inner.default)
    }

    /// The breaker of `target`, created CLOSED on first use. Breakers created here may be evicted
    /// when more than `max_breakers` exist (the least recently used closed one goes first).
    pub fn breaker(&self, target: &str) -> BreakerHandle {
        if let Some(handle) = self.inner.breakers.read().get(target) {
            handle.shared.last_used.store(self.inner.clock.now().0, Ordering::Relaxed);
            return handle.clone();
        }
        self.insert(target, false)
    }

    /// The breaker of `target`, created CLOSED on first use and never evicted: for configured
    /// targets and upstreams.
    pub fn pinned(&self, target: &str) -> BreakerHandle {
        match self.inner.breakers.read().get(target) {
            Some(handle) if handle.shared.pinned => return handle.clone(),
            _ => {}
        }
        self.inner.breakers.write().remove(target);
        self.insert(target, true)
    }

    /// Drops the unpinned CLOSED breakers not handed out for `idle_for`: state kept for a model
    /// nobody asks for any more expires. Returns how many were dropped.
    pub fn evict_idle(&self, idle_for: Duration) -> usize {
        let cutoff = self.inner.clock.now().0.saturating_sub(u64::try_from(idle_for.as_nanos()).unwrap_or(u64::MAX));
        let mut breakers = self.inner.breakers.write();
        let before = breakers.len();
        breakers.retain(|_, h| {
            let closed = h.shared.gate.0.0.load(Ordering::Acquire) & STATE_MASK == CLOSED;
            h.shared.pinned || !closed || h.shared.last_used.load(Ordering::Relaxed) > cutoff
        });
        before - breakers.len()
    }

    /// How many breakers exist.
    pub fn len(&self) -> usize {
        self.inner.breakers.read().len()
    }

    /// Whether no breaker exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, target: &str, pinned: bool) -> BreakerHandle {
        let mut breakers = self.inner.breakers.write();
        if let Some(handle) = breakers.get(target) {
            return handle.clone();
        }
        if !pinned {
            let evictable = breakers.values().filter(|h| !h.shared.pinned).count();
            if evictable >= self.inner.default.config.max_breakers {
                evict_least_recently_used(&mut breakers);
            }
        }
        let name: Arc<str> = Arc::from(target);
        let policy = Arc::clone(self.policy_for(target));
        let breaker = Breaker::with_policy(Arc::clone(&name), Arc::clone(&policy));
        let gate = pack(&breaker);
        let handle = BreakerHandle {
            shared: Arc::new(Shared {
                gate: Padded((AtomicU64::new(gate), AtomicU64::new(breaker.open_until().0))),
                forced_retry_after: breaker.forced_retry_after(),
                breaker: Padded(Mutex::new(breaker)),
                clock: Arc::clone(&self.inner.clock),
                events: Arc::clone(&self.inner.events),
                last_used: AtomicU64::new(self.inner.clock.now().0),
                pinned,
                consecutive: AtomicU32::new(0),
                lock_free_success: policy.config.counts_only_consecutive(),
            }),
            target: Arc::clone(&name),
        };
        breakers.insert(name, handle.clone());
        handle
    }

    /// The breaker of `target` if it has been used.
    pub fn get(&self, target: &str) -> Option<BreakerHandle> {
        self.inner.breakers.read().get(target).cloned()
    }

    /// Asks to send one call to `target`. See [`BreakerHandle::try_acquire`].
    pub fn try_acquire(&self, target: &str) -> Result<Permit, Rejected> {
        self.breaker(target).try_acquire()
    }

    /// Forces `target` open until reset. See [`Breaker::force_open`].
    pub fn force_open(&self, target: &str) -> Transition {
        self.breaker(target).force_open()
    }

    /// Forces `target` closed until reset. See [`Breaker::force_close`].
    pub fn force_close(&self, target: &str) -> Transition {
        self.breaker(target).force_close()
    }

    /// Resets `target` to a fresh CLOSED breaker. See [`Breaker::reset`].
    pub fn reset(&self, target: &str) -> Transition {
        self.breaker(target).reset()
    }

    /// A health check saw `target` answer: OPEN moves to HALF_OPEN early. `None` if the target
    /// was not OPEN (or is forced).
    pub fn probe_succeeded(&self, target: &str) -> Option<Transition> {
        self.get(target)?.probe_succeeded()
    }

    /// The state of `target`, if it has been used.
    pub fn snapshot(&self, target: &str) -> Option<Snapshot> {
        self.get(target).map(|handle| handle.snapshot())
    }

    /// The state of every target used so far, sorted by name.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        let mut handles: Vec<BreakerHandle> = self.inner.breakers.read().values().cloned().collect();
        handles.sort_by(|a, b| a.target.cmp(&b.target));
        handles.iter().map(BreakerHandle::snapshot).collect()
    }

    /// Takes every transition since the last drain, oldest first (in order per target). Cheap
    /// when there are none.
    pub fn drain_events(&self) -> Vec<Transition> {
        self.inner.events.drain()
    }

    /// Transitions dropped because nobody drained them and the queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.inner.events.dropped.load(Ordering::Relaxed)
    }
}
