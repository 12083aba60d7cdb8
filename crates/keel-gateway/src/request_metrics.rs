//! Metric handles for the request path, looked up once per serving thread instead of per request.
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

/// Past this many cached label sets per thread (clients inventing model names), handles are
/// looked up per request instead of cached, so memory stays bounded.
const MAX_CACHED: usize = 4096;

/// The handles one finished request records into.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    /// `keel_requests_total`
    pub(crate) requests: Counter,
    /// `keel_request_duration_seconds` (to response head)
    pub(crate) head: Histogram,
    /// `keel_response_duration_seconds` (whole response)
    pub(crate) whole: Histogram,
}

type ByModel = HashMap<String, Arc<RequestMetrics>>;
/// How many label sets are cached, and the handles by `(route, status)` then model.
type Cache = (usize, HashMap<(&'static str, u16), ByModel>);

thread_local! {
    static REQUESTS: RefCell<Cache> = RefCell::new((0, HashMap::new()));
    static IN_FLIGHT: RefCell<HashMap<&'static str, Gauge>> = RefCell::new(HashMap::new());
}

/// The handles for a request on `route` for `model` answered with `status`.
pub(crate) fn for_request(route: &'static str, model: &str, status: StatusCode) -> Arc<RequestMetrics> {
    REQUESTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let (count, map) = &mut *cache;
        if let Some(found) = map.get(&(route, status.as_u16())).and_then(|by_model| by_model.get(model)) {
            return Arc::clone(found);
        }
        let built = Arc::new(build(route, model, status));
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
}
