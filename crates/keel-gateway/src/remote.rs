//! Data stays on the premises unless a route allows otherwise. A remote upstream (outside
//! loopback and private networks, or marked `remote = true`) is asked only by routes with
//! `allow_remote = true`, and only after their local targets; each upstream with
//! `tokens_per_day` is refused for the rest of the (UTC) day once it has spent them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use keel_types::TargetId;
use parking_lot::Mutex;

use crate::answer_tail::{AnswerWatch, Tail, watched};
use crate::config::RouteConfig;

/// A route's targets in the order they are asked: local ones as configured, then remote ones
/// when the route allows them; with the reasons for the remote ones withheld.
pub(crate) fn order_targets(
    route: &RouteConfig,
    mut targets: Vec<TargetId>,
    is_remote: impl Fn(&str) -> bool,
) -> (Vec<TargetId>, Vec<String>) {
    let (local, remote): (Vec<TargetId>, Vec<TargetId>) = targets.drain(..).partition(|t| !is_remote(&t.upstream));
    if route.allow_remote {
        return (local.into_iter().chain(remote).collect(), Vec::new());
    }
    let withheld = remote
        .iter()
        .map(|target| {
            format!(
                "{target}: a remote upstream (requests to it leave this network), and route {:?} does not set \
                 allow_remote = true",
                route.model
            )
        })
        .collect();
    (local, withheld)
}

/// The tokens one upstream may spend per UTC day, and what it spent today.
#[derive(Debug)]
pub(crate) struct DayBudget {
    upstream: String,
    limit: u64,
    /// (days since the epoch, tokens spent that day).
    spent: Mutex<(u64, u64)>,
}

impl DayBudget {
    /// A budget of `limit` tokens a day for `upstream`.
    pub(crate) fn new(upstream: &str, limit: u64) -> DayBudget {
        DayBudget { upstream: upstream.to_owned(), limit, spent: Mutex::new((0, 0)) }
    }

    /// `Some((why, when to ask again))` when today's budget is spent. The retry time is short:
    /// the route's other targets may be back before the budget is.
    pub(crate) fn refusal(&self) -> Option<(String, Duration)> {
        let (day, left) = today();
        let left = left.min(RETRY_AFTER_SPENT);
        let spent = self.spent_on(day);
        (spent >= self.limit).then(|| {
            let why = format!(
                "{}: its daily token budget (tokens_per_day = {}) is spent ({spent} tokens today); it is asked again \
                 after midnight UTC, or raise tokens_per_day",
                self.upstream, self.limit
            );
            (why, left)
        })
    }

    /// Adds `tokens` to today's spending.
    pub(crate) fn charge(&self, tokens: u64) {
        let (day, _) = today();
        let mut spent = self.spent.lock();
        if spent.0 != day {
            *spent = (day, 0);
        }
        spent.1 = spent.1.saturating_add(tokens);
        metrics::counter!(keel_telemetry::names::UPSTREAM_BUDGET_TOKENS_TOTAL, "upstream" => self.upstream.clone())
            .increment(tokens);
    }

    fn spent_on(&self, day: u64) -> u64 {
        let spent = self.spent.lock();
        if spent.0 == day { spent.1 } else { 0 }
    }

    /// Tokens spent today.
    pub(crate) fn spent_today(&self) -> u64 {
        self.spent_on(today().0)
    }

    /// The daily limit.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

/// How soon a client is told to retry when a budget is spent.
const RETRY_AFTER_SPENT: Duration = Duration::from_secs(60);

/// Today's number (days since the epoch, UTC) and the time left until tomorrow.
fn today() -> (u64, Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    (now / 86_400, Duration::from_secs(86_400 - now % 86_400))
}

/// An answer body that charges its upstream's budget when it ends: the tokens the answer reports,
/// else `estimate` (a body that reports none, or one cut short, still cost something).
pub(crate) fn charged(budget: Arc<DayBudget>, estimate: u64, body: Body) -> Body {
    watched(body, Charge { budget, estimate, tail: Tail::default(), charged: false })
}

struct Charge {
    budget: Arc<DayBudget>,
    estimate: u64,
    tail: Tail,
    charged: bool,
}

impl Charge {
    /// Charges the answer once: as its end is read (before the client has it, so its next
    /// request sees the spending), or when it is dropped unfinished.
    fn now(&mut self) {
        if !std::mem::replace(&mut self.charged, true) {
            let used = self.tail.usage().map_or(self.estimate, |usage| usage.total());
            self.budget.charge(used);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.now();
    }
}

impl AnswerWatch for Charge {
    fn tail(&mut self) -> &mut Tail {
        &mut self.tail
    }
    fn ended(&mut self) {
        self.now();
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn route(allow_remote: bool) -> RouteConfig {
        RouteConfig {
            model: "llama3.2".into(),
            targets: Vec::new(),
            prefer_loaded: false,
            schema: None,
            canned: None,
            requests_per_minute: 0,
            tokens_per_minute: 0,
            allow_remote,
        }
    }

    fn targets(names: &[&str]) -> Vec<TargetId> {
        names.iter().map(|n| TargetId::parse(n).unwrap()).collect()
    }

    #[test]
    fn remote_targets_go_last_or_not_at_all() {
        let is_remote = |name: &str| name == "cloud";
        let (order, withheld) = order_targets(&route(true), targets(&["cloud:haiku", "local", "spare"]), is_remote);
        assert_eq!(order, targets(&["local", "spare", "cloud:haiku"]));
        assert!(withheld.is_empty());
        let (order, withheld) = order_targets(&route(false), targets(&["local", "cloud:haiku"]), is_remote);
        assert_eq!(order, targets(&["local"]));
        assert_eq!(withheld.len(), 1);
        assert!(withheld[0].contains("cloud:haiku") && withheld[0].contains("allow_remote = true"), "{withheld:?}");
    }

    #[tokio::test]
    async fn a_budget_is_charged_from_the_answer_and_refuses_when_spent() {
        let budget = Arc::new(DayBudget::new("cloud", 100));
        assert!(budget.refusal().is_none());
        let answer = Body::from(r#"{"usage":{"prompt_tokens":30,"completion_tokens":20}}"#);
        charged(Arc::clone(&budget), 7, answer).collect().await.unwrap();
        assert_eq!(budget.spent_today(), 50);
        // Charged as the end is read, before the body is dropped.
        let mut body = charged(Arc::clone(&budget), 0, Body::from(r#"{"eval_count":1}"#));
        body.frame().await.unwrap().unwrap();
        assert_eq!(budget.spent_today(), 51);
        drop(body);
        assert_eq!(budget.spent_today(), 51);
        // An answer that reports nothing costs the estimate.
        charged(Arc::clone(&budget), 60, Body::from("{}")).collect().await.unwrap();
        assert_eq!(budget.spent_today(), 111);
        let (why, until) = budget.refusal().unwrap();
        assert!(why.contains("tokens_per_day = 100"), "{why}");
        assert!(until <= RETRY_AFTER_SPENT);
    }
}
