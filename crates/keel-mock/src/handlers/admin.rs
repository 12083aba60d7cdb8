//! The admin API under `/mock/`: recorded requests, counters, and scenario swaps.
//! These requests are neither counted nor recorded.

use http::request::Parts;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;

use super::{Dialect, Resp, error, json};
use crate::Scenario;
use crate::state::State;

#[derive(Serialize)]
struct Recorded<'a> {
    method: &'a str,
    path: &'a str,
    headers: &'a [(String, String)],
    body: String,
}

#[derive(Serialize)]
struct Ok {
    status: &'static str,
}

pub(crate) async fn handle(state: &State, parts: &Parts, body: Incoming) -> Resp {
    let path = parts.uri.path();
    match (&parts.method, path) {
        (&Method::GET, "/mock/requests") => {
            let requests = state.requests();
            let list: Vec<Recorded<'_>> = requests
                .iter()
                .map(|r| Recorded {
                    method: &r.method,
                    path: &r.path,
                    headers: &r.headers,
                    body: String::from_utf8_lossy(&r.body).into_owned(),
                })
                .collect();
            json(StatusCode::OK, &list)
        }
        (&Method::DELETE, "/mock/requests") => {
            state.clear_requests();
            json(StatusCode::OK, &Ok { status: "ok" })
        }
        (&Method::GET, "/mock/stats") => json(StatusCode::OK, &state.counters.snapshot()),
        (&Method::GET, "/mock/scenario") => json(StatusCode::OK, &state.snapshot().to_scenario()),
        (&Method::POST | &Method::PUT, "/mock/scenario") => {
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    return error(Dialect::Api, StatusCode::BAD_REQUEST, &format!("failed to read request body: {e}"));
                }
            };
            let text = String::from_utf8_lossy(&bytes);
            let is_json = text.trim_start().starts_with('{')
                || parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("json"));
            let parsed = if is_json { Scenario::from_json_str(&text) } else { Scenario::from_toml_str(&text) };
            match parsed {
                Ok(s) => {
                    state.set_scenario(s);
                    json(StatusCode::OK, &Ok { status: "ok" })
                }
                Err(e) => error(Dialect::Api, StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (_, "/mock/requests" | "/mock/stats" | "/mock/scenario") => {
            error(Dialect::Api, StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed")
        }
        _ => error(
            Dialect::Api,
            StatusCode::NOT_FOUND,
            "unknown admin endpoint; try GET /mock/requests, GET /mock/stats, GET|POST /mock/scenario",
        ),
    }
}
