//! The state of one upstream: its model buckets, their queues and the upstream's running count.
//!
//! [`Group`] is pure and single-threaded: no clock of its own (every method takes `now`), no
//! channel. What wakes a waiter is its payload `P`, which the group only stores and hands to the
//! `deliver` closure of [`Group::finish`]; `Admission` puts a `oneshot::Sender` there and keeps
//! the group behind a mutex.
//!
//! **Invariant:** after every method returns, no queued request could run: each queued
//! request's bucket is full, or its upstream is. A slot that frees is handed over before the
//! method returns, so a new arrival that finds room jumps nobody.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::schedule::{self, Candidate, Rank};
use crate::{BucketStats, Priority, Settings, Shed, Ticket};

/// Weight of the newest service time in a bucket's average (exponentially weighted).
const SERVICE_SMOOTHING: f64 = 0.2;

/// Service times remembered for models with no bucket (idle), per upstream; beyond this an
/// arbitrary one is forgotten.
const REMEMBERED_SERVICE_TIMES: usize = 1024;

/// The shortest `Retry-After` suggested.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Which time limit ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// [`Settings::max_wait`].
    MaxWait,
    /// The ticket's deadline.
    Deadline,
}

/// One queued request.
#[derive(Debug)]
struct Waiter<P> {
    /// Its arrival number in the group, also its id.
    id: u64,
    tenant: Arc<str>,
    priority: Priority,
    since: Instant,
    payload: P,
}

/// A request that was queued and now holds a slot (counted as running).
#[derive(Debug)]
struct Granted<P> {
    model: Arc<str>,
    tenant: Arc<str>,
    payload: P,
}

/// A request just put in the queue.
#[derive(Debug)]
pub(crate) struct Enqueued<P> {
    /// Its id, for [`Group::leave`].
    pub(crate) id: u64,
    /// The bucket's model name (shared, no copy).
    pub(crate) model: Arc<str>,
    /// The queue was full and this request took the place of another: that one's payload and
    /// why it is shed.
    pub(crate) displaced: Option<(P, Shed)>,
}

/// One `upstream:model`: its running requests and its queue.
#[derive(Debug)]
struct Bucket<P> {
    model: Arc<str>,
    running: usize,
    /// Running requests per tenant; tenants with none are removed.
    tenants: HashMap<Arc<str>, usize>,
    /// In arrival order.
    queue: VecDeque<Waiter<P>>,
    /// Exponentially weighted average of how long a slot is held.
    service: Option<Duration>,
}

impl<P> Bucket<P> {
    fn new(model: Arc<str>, service: Option<Duration>) -> Bucket<P> {
        Bucket { model, running: 0, tenants: HashMap::new(), queue: VecDeque::new(), service }
    }

    fn running_of(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).copied().unwrap_or(0)
    }

    fn candidate(&self, waiter: &Waiter<P>, now: Instant) -> Candidate {
        Candidate {
            priority: waiter.priority,
            waited: now.saturating_duration_since(waiter.since),
            arrival: waiter.id,
            tenant_running: self.running_of(&waiter.tenant),
        }
    }

    fn ranks<'a>(&'a self, now: Instant, aging: Duration) -> impl Iterator<Item = (usize, Rank)> + 'a {
        self.queue.iter().enumerate().map(move |(index, waiter)| (index, self.candidate(waiter, now).rank(aging)))
    }

    fn occupy(&mut self, tenant: &Arc<str>) {
        self.running += 1;
        *self.tenants.entry(Arc::clone(tenant)).or_insert(0) += 1;
    }

    fn vacate(&mut self, tenant: &str) {
        self.running = self.running.saturating_sub(1);
        if let Some(count) = self.tenants.get_mut(tenant) {
            *count -= 1;
            if *count == 0 {
                self.tenants.remove(tenant);
            }
        }
    }

    fn record_service(&mut self, sample: Duration) {
        self.service = Some(match self.service {
            None => sample,
            Some(average) => average.mul_f64(1.0 - SERVICE_SMOOTHING) + sample.mul_f64(SERVICE_SMOOTHING),
        });
    }

    /// The expected wait of a request with `ahead` requests served before it.
    fn expected_wait(&self, ahead: usize, max_concurrent: usize) -> Option<Duration> {
        let slots = u32::try_from(max_concurrent).unwrap_or(u32::MAX);
        let position = u32::try_from(ahead + 1).unwrap_or(u32::MAX);
        self.service.map(|service| service.saturating_mul(position) / slots)
    }

    fn is_idle(&self) -> bool {
        self.running == 0 && self.queue.is_empty()
    }
}

/// The state of one upstream: all its model buckets and the running count across them.
#[derive(Debug)]
pub(crate) struct Group<P> {
    upstream: Arc<str>,
    settings: Settings,
    running: usize,
    buckets: HashMap<Arc<str>, Bucket<P>>,
    /// The service times of models whose buckets were forgotten, so the next burst starts with
    /// an estimate.
    service_times: HashMap<Arc<str>, Duration>,
    arrivals: u64,
}

impl<P> Group<P> {
    /// An upstream with nothing running.
    pub(crate) fn new(upstream: Arc<str>, settings: Settings) -> Group<P> {
        Group { upstream, settings, running: 0, buckets: HashMap::new(), service_times: HashMap::new(), arrivals: 0 }
    }

    /// Takes a slot of `model` for `tenant` if one is free (the fast path: nothing is queued
    /// then, by the invariant). Returns the bucket's model name.
    pub(crate) fn try_admit(&mut self, model: &str, tenant: &Arc<str>) -> Option<Arc<str>> {
        if self.running >= self.settings.upstream_cap() {
            return None;
        }
        let max_concurrent = self.settings.max_concurrent;
        // One lookup on the way most requests take; `bucket` creates one otherwise.
        let bucket = match self.buckets.get_mut(model) {
            Some(bucket) => bucket,
            None => self.bucket(model),
        };
        if bucket.running >= max_concurrent {
            return None;
        }
        bucket.occupy(tenant);
        let model = Arc::clone(&bucket.model);
        self.running += 1;
        Some(model)
    }

    /// Queues a request that [`Group::try_admit`] refused, or sheds it: at once if its deadline
    /// is sooner than the expected wait, or if the queue is full and it outranks nobody in it.
    pub(crate) fn enqueue(
        &mut self,
        model: &str,
        ticket: Ticket,
        now: Instant,
        payload: P,
    ) -> Result<Enqueued<P>, Shed> {
        let arrival = self.arrivals;
        let settings = self.settings;
        let bucket = self.bucket(model);
        let newcomer = Candidate {
            priority: ticket.priority,
            waited: Duration::ZERO,
            arrival,
            tenant_running: bucket.running_of(&ticket.tenant),
        }
        .rank(settings.aging);
        let room = match self.deadline_check(model, ticket.deadline, newcomer, now) {
            Some(shed) => Err(shed),
            None => self.make_room(model, newcomer, now),
        };
        let displaced = room.inspect_err(|_| self.forget_if_idle(model))?;
        self.arrivals += 1;
        let bucket = self.bucket(model);
        let waiter = Waiter { id: arrival, tenant: ticket.tenant, priority: ticket.priority, since: now, payload };
        bucket.queue.push_back(waiter);
        Ok(Enqueued { id: arrival, model: Arc::clone(&bucket.model), displaced })
    }

    /// The shed of a request whose expected wait exceeds the time left to its deadline. No
    /// estimate yet (nothing served): no shed, the request leaves the queue at its deadline.
    fn deadline_check(&self, model: &str, deadline: Option<Instant>, newcomer: Rank, now: Instant) -> Option<Shed> {
        let bucket = self.buckets.get(model)?;
        let ahead = bucket.ranks(now, self.settings.aging).filter(|(_, rank)| *rank > newcomer).count();
        let expected_wait = bucket.expected_wait(ahead, self.settings.max_concurrent)?;
        let time_left = deadline?.saturating_duration_since(now);
        (expected_wait > time_left).then(|| Shed::DeadlineUnmeetable {
            target: self.target(model),
            expected_wait,
            time_left,
            retry_after: expected_wait.max(MIN_RETRY_AFTER),
        })
    }

    /// When the queue is full: removes its lowest-ranked request if the newcomer outranks it
    /// (returning that one's payload and shed), else sheds the newcomer.
    fn make_room(&mut self, model: &str, newcomer: Rank, now: Instant) -> Result<Option<(P, Shed)>, Shed> {
        let (aging, max_queue) = (self.settings.aging, self.settings.max_queue);
        let Some(bucket) = self.buckets.get(model) else { return Ok(None) };
        if bucket.queue.len() < max_queue {
            return Ok(None);
        }
        let lowest = bucket.ranks(now, aging).min_by_key(|(_, rank)| *rank).filter(|(_, rank)| *rank < newcomer);
        let retry_after = self.retry_after(model);
        let Some((index, _)) = lowest else {
            let queued = bucket.queue.len();
            return Err(Shed::QueueFull { target: self.target(model), queued, retry_after });
        };
        let target = self.target(model);
        let victim = self.buckets.get_mut(model).and_then(|bucket| bucket.queue.remove(index));
        Ok(victim.map(|victim| {
            let waited = now.saturating_duration_since(victim.since);
            (victim.payload, Shed::Displaced { target, waited, retry_after })
        }))
    }

    /// Removes a queued request (its client went away, or its time ran out). False if it is not
    /// queued: it was handed a slot or displaced already.
    pub(crate) fn leave(&mut self, model: &str, id: u64) -> bool {
        let Some(bucket) = self.buckets.get_mut(model) else { return false };
        let Some(index) = bucket.queue.iter().position(|waiter| waiter.id == id) else { return false };
        bucket.queue.remove(index);
        self.forget_if_idle(model);
        true
    }

    /// The shed of a request that waited `waited` and reached `limit`.
    pub(crate) fn expired(&self, model: &str, limit: Limit, waited: Duration) -> Shed {
        let (target, retry_after) = (self.target(model), self.retry_after(model));
        match limit {
            Limit::MaxWait => Shed::WaitTooLong { target, waited, retry_after },
            Limit::Deadline => Shed::DeadlinePassed { target, waited, retry_after },
        }
    }

    /// Gives back a slot of `model` held by `tenant` for `service` (`None`: the slot was never
    /// used, its time says nothing about the model), then hands free slots to queued requests:
    /// `deliver` gets each one's payload and returns false if its request is gone, which frees
    /// that slot again.
    pub(crate) fn finish(
        &mut self,
        model: &str,
        tenant: &str,
        service: Option<Duration>,
        now: Instant,
        deliver: &mut impl FnMut(P) -> bool,
    ) {
        self.vacate(model, tenant, service);
        while let Some(granted) = self.grant_next(now) {
            if !deliver(granted.payload) {
                self.vacate(&granted.model, &granted.tenant, None);
            }
        }
    }

    /// Serves `max_concurrent` requests per model from now on; a raise hands the new slots to
    /// queued requests at once (as [`Group::finish`] does), a cut lets running requests finish.
    pub(crate) fn set_max_concurrent(
        &mut self,
        max_concurrent: usize,
        now: Instant,
        deliver: &mut impl FnMut(P) -> bool,
    ) {
        self.settings.max_concurrent = max_concurrent.max(1);
        while let Some(granted) = self.grant_next(now) {
            if !deliver(granted.payload) {
                self.vacate(&granted.model, &granted.tenant, None);
            }
        }
    }

    /// The settings this upstream runs with.
    pub(crate) fn settings(&self) -> Settings {
        self.settings
    }

    /// Frees one slot; forgets the bucket if that leaves it idle.
    fn vacate(&mut self, model: &str, tenant: &str, service: Option<Duration>) {
        let Some(bucket) = self.buckets.get_mut(model) else { return };
        bucket.vacate(tenant);
        if let Some(service) = service {
            bucket.record_service(service);
        }
        self.running = self.running.saturating_sub(1);
        self.forget_if_idle(model);
    }

    /// Takes the request to serve next out of the queue and counts it as running, if the
    /// upstream has a free slot and some queued request's model does too.
    fn grant_next(&mut self, now: Instant) -> Option<Granted<P>> {
        if self.running >= self.settings.upstream_cap() {
            return None;
        }
        let max_concurrent = self.settings.max_concurrent;
        let eligible = self.buckets.values().filter(|bucket| bucket.running < max_concurrent);
        let candidates = eligible.flat_map(|bucket| {
            let waiters = bucket.queue.iter().enumerate();
            waiters.map(move |(index, waiter)| ((&bucket.model, index), bucket.candidate(waiter, now)))
        });
        let (model, index) = schedule::choose(candidates, self.settings.aging)?;
        let model = Arc::clone(model);
        let bucket = self.buckets.get_mut(&model)?;
        let waiter = bucket.queue.remove(index)?;
        bucket.occupy(&waiter.tenant);
        self.running += 1;
        Some(Granted { model, tenant: waiter.tenant, payload: waiter.payload })
    }

    /// The suggested `Retry-After` for `model`: the time for its queue to drain at the recent
    /// service time, at least 1 s (also without an estimate yet).
    fn retry_after(&self, model: &str) -> Duration {
        let bucket = self.buckets.get(model);
        let drain = bucket.and_then(|bucket| bucket.expected_wait(bucket.queue.len(), self.settings.max_concurrent));
        drain.unwrap_or_default().max(MIN_RETRY_AFTER)
    }

    /// The bucket of `model`, created on first use.
    fn bucket(&mut self, model: &str) -> &mut Bucket<P> {
        // The name already held by the bucket or the service-time memory when there is one: a
        // reference count, not an allocation.
        let (key, service) = match self.buckets.get_key_value(model) {
            Some((key, _)) => (Arc::clone(key), None),
            None => self
                .service_times
                .remove_entry(model)
                .map_or_else(|| (Arc::from(model), None), |(key, service)| (key, Some(service))),
        };
        self.buckets.entry(key).or_insert_with_key(|key| Bucket::new(Arc::clone(key), service))
    }

    /// Removes the bucket of `model` if nothing runs or waits there, remembering its service time.
    fn forget_if_idle(&mut self, model: &str) {
        if !self.buckets.get(model).is_some_and(Bucket::is_idle) {
            return;
        }
        let Some(Bucket { model, service: Some(service), .. }) = self.buckets.remove(model) else { return };
        if self.service_times.len() >= REMEMBERED_SERVICE_TIMES
            && let Some(arbitrary) = self.service_times.keys().next().cloned()
        {
            self.service_times.remove(&arbitrary);
        }
        self.service_times.insert(model, service);
    }

    fn target(&self, model: &str) -> String {
        format!("{}:{model}", self.upstream)
    }

    /// Appends one [`BucketStats`] per bucket.
    pub(crate) fn stats_into(&self, now: Instant, stats: &mut Vec<BucketStats>) {
        stats.extend(self.buckets.values().map(|bucket| BucketStats {
            upstream: Arc::clone(&self.upstream),
            model: Arc::clone(&bucket.model),
            running: bucket.running,
            queued: bucket.queue.len(),
            max_concurrent: self.settings.max_concurrent,
            max_queue: self.settings.max_queue,
            oldest_wait: bucket.queue.iter().map(|w| now.saturating_duration_since(w.since)).max().unwrap_or_default(),
            service_time: bucket.service,
            upstream_running: self.running,
            upstream_max_concurrent: self.settings.upstream_max_concurrent,
        }));
    }
}

#[cfg(test)]
mod tests;
