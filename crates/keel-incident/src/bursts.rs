//! Bursts: failures that mean nothing one at a time (one structured answer that could not be
//! repaired, one request shed, one client rate limited) but are an incident when they keep
//! coming. [`Bursts`] counts each cause's failures over the last minute; at
//! [`BurstRule::threshold`] it opens the incident, while they go on it notes the count once a
//! minute, and after [`BurstRule::quiet`] without one it resolves it. Pure: time is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use keel_session::{Effect, NewIncidentEvent};
use serde_json::{Value, json};

/// The window failures are counted over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// When a burst opens and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstRule {
    /// Failures of one cause within [`WINDOW`] that open its incident.
    pub threshold: u32,
    /// How long without a failure of that cause before its incident resolves.
    pub quiet: Duration,
}

impl Default for BurstRule {
    fn default() -> Self {
        BurstRule { threshold: 10, quiet: Duration::from_secs(300) }
    }
}

/// One failure of a cause that counts toward a burst.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The incident kind (`structured_output`, `shedding`, `rate_limited`).
    pub kind: &'static str,
    /// What the failures have in common (a model, a target, a key): with `kind`, the fingerprint.
    pub key: String,
    /// The incident's title if it opens.
    pub title: String,
    /// The upstream, if one is concerned.
    pub upstream: Option<String>,
    /// The model, if one is concerned.
    pub model: Option<String>,
    /// This failure's evidence (the last one is kept as the sample).
    pub detail: Value,
}

impl Failure {
    /// `kind:key`.
    pub fn fingerprint(&self) -> String {
        format!("{}:{}", self.kind, self.key)
    }
}

/// One cause's recent failures.
#[derive(Debug)]
struct Window {
    times: VecDeque<Instant>,
    last: Failure,
    /// Whether its incident is open (opened by this counter).
    open: bool,
    /// When the count was last written down.
    noted: Instant,
}

/// The failure counters of every cause seen lately.
#[derive(Debug, Default)]
pub struct Bursts {
    rule: BurstRule,
    windows: HashMap<String, Window>,
}

impl Bursts {
    /// Counters under `rule`.
    pub fn new(rule: BurstRule) -> Bursts {
        Bursts { rule, windows: HashMap::new() }
    }

    /// Counts `failure` at `now`; the event to record, if it opens an incident (`burst.started`)
    /// or a minute passed since the count was last noted (`burst.continues`).
    pub fn observe(&mut self, failure: Failure, now: Instant) -> Option<NewIncidentEvent> {
        let fingerprint = failure.fingerprint();
        let window = self.windows.entry(fingerprint.clone()).or_insert_with(|| Window {
            times: VecDeque::new(),
            last: failure.clone(),
            open: false,
            noted: now,
        });
        window.times.push_back(now);
        while window.times.front().is_some_and(|first| now.duration_since(*first) > WINDOW) {
            window.times.pop_front();
        }
        window.last = failure;
        let count = window.times.len();
        if !window.open && count >= usize::try_from(self.rule.threshold).unwrap_or(usize::MAX) {
            window.open = true;
            window.noted = now;
            return Some(event(&fingerprint, &window.last, "burst.started", Effect::Open, count));
        }
        if window.open && now.duration_since(window.noted) >= WINDOW {
            window.noted = now;
            return Some(event(&fingerprint, &window.last, "burst.continues", Effect::Note, count));
        }
        None
    }

    /// Forgets causes quiet for [`BurstRule::quiet`]; the `burst.ended` events of those whose
    /// incident it opened.
    pub fn sweep(&mut self, now: Instant) -> Vec<NewIncidentEvent> {
        let quiet = self.rule.quiet;
        let mut ended = Vec::new();
        self.windows.retain(|fingerprint, window| {
            let last = window.times.back().copied().unwrap_or(now);
            if now.duration_since(last) < quiet {
                return true;
            }
            if window.open {
                ended.push(event(fingerprint, &window.last, "burst.ended", Effect::Resolve, 0));
            }
            false
        });
        ended
    }

    /// How many causes are counted now.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no cause is counted.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

fn event(fingerprint: &str, failure: &Failure, name: &str, effect: Effect, count: usize) -> NewIncidentEvent {
    let detail = if effect == Effect::Resolve {
        json!({ "source": "keel", "note": "no more failures of this cause" })
    } else {
        json!({ "source": "keel", "failures_last_minute": count, "sample": failure.detail })
    };
    NewIncidentEvent {
        fingerprint: fingerprint.to_owned(),
        kind: failure.kind.to_owned(),
        title: failure.title.clone(),
        upstream: failure.upstream.clone(),
        model: failure.model.clone(),
        event: name.to_owned(),
        effect,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(key: &str) -> Failure {
        Failure {
            kind: "structured_output",
            key: key.into(),
            title: format!("structured output keeps failing for {key}"),
            upstream: None,
            model: Some(key.into()),
            detail: json!({"problem": "missing field"}),
        }
    }

    #[test]
    fn a_burst_opens_at_the_threshold_notes_each_minute_and_ends_when_quiet() {
        let rule = BurstRule { threshold: 3, quiet: Duration::from_secs(120) };
        let mut bursts = Bursts::new(rule);
        let start = Instant::now();
        assert_eq!(bursts.observe(failure("m"), start), None);
        assert_eq!(bursts.observe(failure("m"), start + Duration::from_secs(1)), None);
        let opened = bursts.observe(failure("m"), start + Duration::from_secs(2)).unwrap();
        assert_eq!((opened.event.as_str(), opened.effect), ("burst.started", Effect::Open));
        assert_eq!(opened.fingerprint, "structured_output:m");
        assert_eq!(opened.detail["failures_last_minute"], 3);
        assert_eq!(bursts.observe(failure("m"), start + Duration::from_secs(30)), None);
        let noted = bursts.observe(failure("m"), start + Duration::from_secs(63)).unwrap();
        assert_eq!((noted.event.as_str(), noted.effect), ("burst.continues", Effect::Note));
        assert!(bursts.sweep(start + Duration::from_secs(100)).is_empty(), "not quiet long enough");
        let ended = bursts.sweep(start + Duration::from_secs(63 + 121));
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].effect, Effect::Resolve);
        assert!(bursts.is_empty());
    }

    #[test]
    fn failures_spread_thinner_than_the_threshold_never_open_and_are_forgotten() {
        let mut bursts = Bursts::new(BurstRule { threshold: 3, quiet: Duration::from_secs(60) });
        let start = Instant::now();
        for minute in 0..10 {
            assert_eq!(bursts.observe(failure("m"), start + Duration::from_secs(minute * 61)), None);
        }
        assert!(bursts.sweep(start + Duration::from_secs(10 * 61 + 60)).is_empty());
        assert!(bursts.is_empty());
    }

    #[test]
    fn causes_are_counted_apart() {
        let mut bursts = Bursts::new(BurstRule { threshold: 2, quiet: Duration::from_secs(60) });
        let now = Instant::now();
        assert_eq!(bursts.observe(failure("a"), now), None);
        assert_eq!(bursts.observe(failure("b"), now), None);
        assert!(bursts.observe(failure("a"), now).is_some());
        assert_eq!(bursts.len(), 2);
    }
}
