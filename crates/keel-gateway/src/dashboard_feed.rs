//! The channels of the dashboard's live feed, shared by every open tab: the latest snapshot of
//! keel's state (serialized once, whatever the number of tabs) and breaker transitions as they
//! happen. The snapshot is built by the dashboard (`ui/`) while a tab is subscribed; with no tab
//! open nothing is built and a transition costs one atomic load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use tokio::sync::{broadcast, watch};

/// A tab's subscription: the latest snapshot and the transitions from now on.
pub(crate) struct Subscription {
    pub(crate) snapshot: watch::Receiver<Arc<str>>,
    pub(crate) events: broadcast::Receiver<Arc<str>>,
}

/// The feed shared by every tab (in the gateway's state).
#[derive(Debug)]
pub(crate) struct Feed {
    snapshot: watch::Sender<Arc<str>>,
    events: broadcast::Sender<Arc<str>>,
    /// A task is rebuilding the snapshot.
    running: AtomicBool,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed {
            snapshot: watch::Sender::new(Arc::from("")),
            events: broadcast::Sender::new(64),
            running: AtomicBool::new(false),
        }
    }
}

impl Feed {
    /// Subscribes a tab; `true` when no task builds snapshots yet (the caller starts one).
    pub(crate) fn subscribe(&self) -> (Subscription, bool) {
        let subscription = Subscription { snapshot: self.snapshot.subscribe(), events: self.events.subscribe() };
        let first = !self.running.swap(true, Ordering::AcqRel);
        (subscription, first)
    }

    /// Hands every tab a new snapshot.
    pub(crate) fn publish(&self, snapshot: String) {
        self.snapshot.send_replace(Arc::from(snapshot));
    }

    /// Whether a tab still listens; when none does, the building task is to stop (and a tab
    /// subscribing from now on starts a new one).
    pub(crate) fn still_watched(&self) -> bool {
        if self.snapshot.receiver_count() > 0 {
            return true;
        }
        self.running.store(false, Ordering::Release);
        // A tab that subscribed in between found `running` still set and started nothing: keep
        // building for it.
        self.snapshot.receiver_count() > 0 && !self.running.swap(true, Ordering::AcqRel)
    }

    /// Tells open tabs about a breaker transition at once (nothing happens without a tab).
    pub(crate) fn breaker_moved(&self, transition: &keel_breaker::Transition, why: Option<&str>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let event = json!({
            "target": &*transition.target,
            "from": transition.from.as_str(),
            "to": transition.to.as_str(),
            "reason": transition.reason.to_string(),
            "why": why,
            "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        let _ = self.events.send(Arc::from(event.to_string()));
    }
}
