//! [`Admission`]: the groups of all upstreams, shared by every serving task, and the
//! [`Permit`] a request holds while it is served.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::group::{Enqueued, Group, Limit};
use crate::stats::Tally;
use crate::{BucketStats, Counters, Error, Settings, Shed, Ticket};

/// What a queued request receives.
#[derive(Debug)]
enum Handoff {
    /// A slot, counted as the request's since this instant.
    Granted(Instant),
    /// Its place was taken in a full queue.
    Shed(Shed),
}

/// One upstream: its group behind a lock, and the counters it reports to.
#[derive(Debug)]
struct Upstream {
    group: Mutex<Group<oneshot::Sender<Handoff>>>,
    tally: Arc<Tally>,
}

impl Upstream {
    fn new(name: Arc<str>, settings: Settings, tally: &Arc<Tally>) -> Arc<Upstream> {
        Arc::new(Upstream { group: Mutex::new(Group::new(name, settings)), tally: Arc::clone(tally) })
    }

    /// Gives back a slot at `now` and hands it on (see [`Group::finish`]).
    fn release(&self, model: &str, tenant: &str, service: Option<Duration>, now: Instant) {
        let mut deliver = |sender: oneshot::Sender<Handoff>| sender.send(Handoff::Granted(now)).is_ok();
        self.group.lock().finish(model, tenant, service, now, &mut deliver);
    }

    /// See [`Admission::set_max_concurrent`].
    fn set_max_concurrent(&self, max_concurrent: usize) {
        let now = Instant::now();
        let mut deliver = |sender: oneshot::Sender<Handoff>| sender.send(Handoff::Granted(now)).is_ok();
        self.group.lock().set_max_concurrent(max_concurrent, now, &mut deliver);
    }
}

#[derive(Debug)]
struct Inner {
    /// The settings of upstreams created on first use.
    settings: Settings,
    /// Upstreams by name: those with their own settings from the start, others created on first
    /// use; all kept, since upstream names come from the config, a bounded set (model names come
    /// from clients; their buckets go when idle).
    upstreams: RwLock<HashMap<Arc<str>, Arc<Upstream>>>,
    tally: Arc<Tally>,
}

impl Inner {
    fn upstream(&self, name: &str) -> Arc<Upstream> {
        if let Some(upstream) = self.upstreams.read().get(name) {
            return Arc::clone(upstream);
        }
        let mut upstreams = self.upstreams.write();
        let upstream = upstreams
            .entry(Arc::from(name))
            .or_insert_with_key(|name| Upstream::new(Arc::clone(name), self.settings, &self.tally));
        Arc::clone(upstream)
    }
}

/// Admission control for all upstreams: bounded concurrency per `upstream:model` (and
/// optionally per upstream), a bounded priority queue with fair share in front of each, and
/// shedding. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

/// How [`Admission::enter`] went.
enum Entry {
    Admitted(Permit),
    Queued(Waiting),
    Shed(Shed),
}

impl Admission {
    /// Admission with these limits for every upstream.
    pub fn new(settings: Settings) -> Result<Admission, Error> {
        Admission::with_upstreams(settings, std::iter::empty::<(Arc<str>, Settings)>())
    }

    /// Admission with limits of their own for some upstreams (a laptop serving one request at a
    /// time beside a GPU server serving eight) and `settings` for the others.
    pub fn with_upstreams<N: Into<Arc<str>>>(
        settings: Settings,
        upstreams: impl IntoIterator<Item = (N, Settings)>,
    ) -> Result<Admission, Error> {
        settings.validate()?;
        let tally = Arc::default();
        let mut known = HashMap::new();
        for (name, own) in upstreams {
            let name: Arc<str> = name.into();
            own.validate().map_err(|source| Error::InvalidUpstreamSettings {
                upstream: name.to_string(),
                source: Box::new(source),
            })?;
            known.insert(Arc::clone(&name), Upstream::new(name, own, &tally));
        }
        let inner = Inner { settings, upstreams: RwLock::new(known), tally };
        Ok(Admission { inner: Arc::new(inner) })
    }

    /// The limits of upstreams without settings of their own.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The limits `upstream` runs with: its own, or [`Admission::settings`].
    pub fn upstream_settings(&self, upstream: &str) -> Settings {
        match self.inner.upstreams.read().get(upstream) {
            Some(known) => known.group.lock().settings(),
            None => self.inner.settings,
        }
    }

    /// Serves `max_concurrent` (at least 1) requests per model of `upstream` from now on, as
    /// the server said it can (llama-server's slots). A raise gives the new slots to queued
    /// requests at once; a cut lets the running ones finish and admits fewer after them.
    pub fn set_max_concurrent(&self, upstream: &str, max_concurrent: usize) {
        self.inner.upstream(upstream).set_max_concurrent(max_concurrent);
    }

    /// Waits for a slot of `model` on `upstream`, or says why not.
    ///
    /// With a slot free it returns at once, without waiting or queueing. Otherwise the request
    /// queues, and leaves with a [`Permit`] when the scheduler picks it, or with a [`Shed`] when
    /// the queue is full, its deadline cannot be met, or its time runs out (`max_wait`, less
    /// [`Ticket::waited_before`], or the deadline). Dropping the future leaves the queue; a slot handed over at that moment goes
    /// to the next request.
    pub async fn admit(&self, upstream: &str, model: &str, ticket: Ticket) -> Result<Permit, Shed> {
        let result = match self.enter(upstream, model, ticket) {
            Entry::Admitted(permit) => Ok(permit),
            Entry::Queued(waiting) => waiting.wait().await,
            Entry::Shed(shed) => Err(shed),
        };
        self.inner.tally.count(&result);
        result
    }

    /// Takes a free slot, or queues, or sheds; never waits.
    fn enter(&self, upstream: &str, model: &str, ticket: Ticket) -> Entry {
        let upstream = self.inner.upstream(upstream);
        let now = Instant::now();
        let mut group = upstream.group.lock();
        if let Some(model) = group.try_admit(model, &ticket.tenant) {
            drop(group);
            return Entry::Admitted(Permit { upstream, model, tenant: ticket.tenant, started: now, waited: None });
        }
        let (limit, until) = self.time_limit(&ticket, now);
        let before = ticket.waited_before;
        if limit == Limit::MaxWait && until <= now {
            // It waited its whole `max_wait` at the targets before this one.
            return Entry::Shed(group.expired(model, limit, before));
        }
        let tenant = Arc::clone(&ticket.tenant);
        let (sender, receiver) = oneshot::channel();
        let Enqueued { id, model, displaced } = match group.enqueue(model, ticket, now, sender) {
            Ok(enqueued) => enqueued,
            Err(shed) => return Entry::Shed(shed),
        };
        drop(group);
        if let Some((sender, shed)) = displaced {
            // Its receiver is gone only if its client went away too: nothing to tell then.
            let _ = sender.send(Handoff::Shed(shed));
        }
        Entry::Queued(Waiting {
            upstream,
            model,
            tenant,
            id,
            since: now,
            before,
            limit,
            until,
            receiver,
            settled: false,
        })
    }

    /// When a request queued at `now` gives up, and why: `max_wait` (less what it waited in
    /// other queues), or the deadline if sooner.
    fn time_limit(&self, ticket: &Ticket, now: Instant) -> (Limit, Instant) {
        let max_wait = now + self.inner.settings.max_wait.saturating_sub(ticket.waited_before);
        match ticket.deadline {
            Some(deadline) if deadline <= max_wait => (Limit::Deadline, deadline),
            _ => (Limit::MaxWait, max_wait),
        }
    }

    /// Every bucket with requests running or queued, sorted by upstream and model.
    pub fn stats(&self) -> Vec<BucketStats> {
        let upstreams: Vec<Arc<Upstream>> = self.inner.upstreams.read().values().cloned().collect();
        let now = Instant::now();
        let mut stats = Vec::new();
        for upstream in upstreams {
            upstream.group.lock().stats_into(now, &mut stats);
        }
        stats.sort_by(|a, b| (&a.upstream, &a.model).cmp(&(&b.upstream, &b.model)));
        stats
    }

    /// Cumulative counts (admitted, cancelled, shed by reason); a few atomic loads.
    pub fn counters(&self) -> Counters {
        self.inner.tally.snapshot()
    }
}

/// A queued request, owned by the `admit` future. Dropped before it settles (the client went
/// away), it leaves the queue, or passes on the slot it was handed meanwhile.
struct Waiting {
    upstream: Arc<Upstream>,
    model: Arc<str>,
    tenant: Arc<str>,
    id: u64,
    since: Instant,
    /// How long it waited in other queues before this one.
    before: Duration,
    limit: Limit,
    until: Instant,
    receiver: oneshot::Receiver<Handoff>,
    /// It left with a permit or a shed: nothing for `Drop` to do.
    settled: bool,
}

impl Waiting {
    async fn wait(mut self) -> Result<Permit, Shed> {
        let handoff = match tokio::time::timeout_at(self.until, &mut self.receiver).await {
            Ok(Ok(handoff)) => handoff,
            // Out of time (or, never in practice, the sender dropped unsent).
            Ok(Err(_)) | Err(_) => self.give_up(),
        };
        self.settled = true;
        match handoff {
            Handoff::Granted(started) => Ok(self.permit(started)),
            Handoff::Shed(shed) => Err(shed),
        }
    }

    /// Leaves the queue at the time limit; if a slot or a shed was handed over just before, that
    /// stands instead.
    fn give_up(&mut self) -> Handoff {
        let waited = self.since.elapsed() + self.before;
        let mut group = self.upstream.group.lock();
        let shed = group.expired(&self.model, self.limit, waited);
        let was_queued = group.leave(&self.model, self.id);
        drop(group);
        if was_queued {
            return Handoff::Shed(shed);
        }
        // Not queued: handed over under the lock, so the handoff is in the channel.
        self.receiver.try_recv().unwrap_or(Handoff::Shed(shed))
    }

    fn permit(&self, started: Instant) -> Permit {
        Permit {
            upstream: Arc::clone(&self.upstream),
            model: Arc::clone(&self.model),
            tenant: Arc::clone(&self.tenant),
            started,
            waited: Some(started.saturating_duration_since(self.since)),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.upstream.tally.count_cancelled();
        if self.upstream.group.lock().leave(&self.model, self.id) {
            return;
        }
        if let Ok(Handoff::Granted(_)) = self.receiver.try_recv() {
            self.upstream.release(&self.model, &self.tenant, None, Instant::now());
        }
    }
}

/// A slot of one `upstream:model`, held while the request is served. Dropping it frees the slot
/// and hands it straight to the queued request the scheduler picks.
#[derive(Debug)]
#[must_use = "dropping the permit frees the slot at once"]
pub struct Permit {
    upstream: Arc<Upstream>,
    model: Arc<str>,
    tenant: Arc<str>,
    started: Instant,
    /// `None`: admitted without queueing.
    waited: Option<Duration>,
}

impl Permit {
    /// How long the request waited in the queue; zero if it was admitted at once.
    pub fn waited(&self) -> Duration {
        self.waited.unwrap_or_default()
    }

    /// Whether the request waited in the queue (perhaps for no measurable time).
    pub fn was_queued(&self) -> bool {
        self.waited.is_some()
    }

    /// The model whose slot this is.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The tenant holding it.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        let service = now.saturating_duration_since(self.started);
        self.upstream.release(&self.model, &self.tenant, Some(service), now);
    }
}
