//! Metric handles for the request path, looked up once per serving thread instead of per request,
//! and the bounded set of model names that get a label of their own.
//!
//! Recording through the `metrics::counter!` macros hashes and allocates the label set on every
//! call; at tens of thousands of requests per second that showed in profiles. Handles are cached
//! per thread (each serving thread is single-threaded) for each `(route, status, model)`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use keel_telemetry::names;
use metrics::{Counter, Gauge, Histogram};

/// Past this many cached label sets per thread, handles are looked up per request instead of
/// cached, so memory stays bounded.
const MAX_CACHED: usize = 4096;

/// Most model names with a label of their own; later names share [`OTHER`].
pub(crate) const MAX_MODEL_LABELS: usize = 256;

/// The label shared by model names that never got an answer (made-up names: every one would
/// otherwise add a few dozen series to `/metrics`) and by names past [`MAX_MODEL_LABELS`].
pub(crate) const OTHER: &str = "other";

/// Model names that have a label: configured routes' names and names a target answered.
static LABELLED: std::sync::LazyLock<parking_lot::RwLock<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Gives configured routes' model names their own labels from the start.
pub(crate) fn label_models<'a>(names: impl IntoIterator<Item = &'a str>) {
    let mut labelled = LABELLED.write();
    for name in names {
        if name != "*" && labelled.len() < MAX_MODEL_LABELS {
            labelled.insert(name.to_owned());
        }
    }
}

/// The requested model as keel records it — in metrics labels, and as the key of what it learns
/// per model — at most 64 characters.
pub(crate) fn shortened_model(requested: &str) -> String {
    requested.chars().take(64).collect()
}

/// The metrics label of a requested model: its name once a target has answered it (`answered`
/// is true for a 2xx answer) while there is room, else [`OTHER`]. Requests that name no model
/// keep the empty label.
pub(crate) fn model_label(model: &str, answered: bool) -> &str {
    if model.is_empty() || LABELLED.read().contains(model) {
        return model;
    }
    if answered {
        let mut labelled = LABELLED.write();
        if labelled.len() < MAX_MODEL_LABELS {
            labelled.insert(model.to_owned());
            return model;
        }
    }
    OTHER
}

/// The handles one finished request records into.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    /// `keel_requests_total`
    pub(crate) requests: Counter,
    /// `keel_request_duration_seconds` (to response head)
    pub(crate) head: Histogram,
    /// `keel_response_duration_seconds` (whole response)
    pub(crate) whole: Histogram,
    /// `keel_time_to_first_chunk_seconds`
    pub(crate) first_chunk: Histogram,
}

type ByModel = HashMap<String, Arc<RequestMetrics>>;
/// How many label sets are cached, and the handles by `(route, status)` then model.
type Cache = (usize, HashMap<(&'static str, u16), ByModel>);

thread_local! {
    static REQUESTS: RefCell<Cache> = RefCell::new((0, HashMap::new()));
    static IN_FLIGHT: RefCell<HashMap<&'static str, Gauge>> = RefCell::new(HashMap::new());
}

/// The handles for a request on `route` for `model` answered with `status`, cached by the name as
/// requested (its label is looked up once per thread, on a miss).
pub(crate) fn for_request(route: &'static str, model: &str, status: StatusCode) -> Arc<RequestMetrics> {
    REQUESTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let (count, map) = &mut *cache;
        if let Some(found) = map.get(&(route, status.as_u16())).and_then(|by_model| by_model.get(model)) {
            return Arc::clone(found);
        }
        let built = Arc::new(build(route, model_label(model, status.is_success()), status));
        if *count < MAX_CACHED {
            *count += 1;
            map.entry((route, status.as_u16())).or_default().insert(model.to_owned(), Arc::clone(&built));
        }
        built
    })
}

fn build(route: &'static str, model: &str, status: StatusCode) -> RequestMetrics {
    let labels = [("route", route.to_owned()), ("model", model.to_owned()), ("status", status.as_str().to_owned())];
    RequestMetrics {
        requests: metrics::counter!(names::REQUESTS_TOTAL, &labels),
        head: metrics::histogram!(names::REQUEST_DURATION_SECONDS, &labels),
        whole: metrics::histogram!(names::RESPONSE_DURATION_SECONDS, &labels),
        first_chunk: metrics::histogram!(names::TIME_TO_FIRST_CHUNK_SECONDS, &labels[..2]),
    }
}

/// The in-flight gauge of a route.
pub(crate) fn in_flight(route: &'static str) -> Gauge {
    IN_FLIGHT.with(|cache| {
        cache
            .borrow_mut()
            .entry(route)
            .or_insert_with(|| metrics::gauge!(names::REQUESTS_IN_FLIGHT, "route" => route))
            .clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_reused() {
        let a = for_request("/api/chat", "m", StatusCode::OK);
        let b = for_request("/api/chat", "m", StatusCode::OK);
        assert!(Arc::ptr_eq(&a, &b));
        let c = for_request("/api/chat", "m", StatusCode::NOT_FOUND);
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn made_up_names_share_one_label_and_answered_ones_get_theirs() {
        assert_eq!(model_label("never-answered-model", false), OTHER);
        assert_eq!(model_label("answered-model", true), "answered-model");
        assert_eq!(model_label("answered-model", false), "answered-model");
        assert_eq!(model_label("", false), "");
        for i in 0..MAX_MODEL_LABELS * 2 {
            let _ = model_label(&format!("flood-{i}"), true);
        }
        assert!(LABELLED.read().len() <= MAX_MODEL_LABELS);
        assert_eq!(model_label("one-too-many", true), OTHER);
    }
}
