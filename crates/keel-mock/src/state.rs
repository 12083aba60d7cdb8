//! Shared server state: the compiled scenario, the seeded RNG, recorded requests, counters.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::body::Counters;
use crate::names;
use crate::scenario::{ApiSurface, FaultKind, GarbleKind, ModelSpec, Scenario};

/// One request the mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method (`POST`).
    pub method: String,
    /// Path including the query string (`/api/chat?x=1`).
    pub path: String,
    /// Headers in arrival order, names lower-case; non-UTF-8 values are converted lossily.
    pub headers: Vec<(String, String)>,
    /// The request body (empty for blob uploads, which are not buffered).
    pub body: Bytes,
}

impl RecordedRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A reply text with its precomputed stream chunks.
pub(crate) struct Reply {
    pub(crate) text: String,
    pub(crate) chunks: Vec<Range<usize>>,
}

/// A model with everything derived from its spec computed once.
pub(crate) struct CModel {
    pub(crate) spec: ModelSpec,
    pub(crate) full_name: String,
    pub(crate) digest: String,
    replies: Vec<Reply>,
    next: AtomicUsize,
    next_json: AtomicUsize,
}

impl CModel {
    pub(crate) fn new(spec: ModelSpec) -> CModel {
        let full_name = names::full_name(&spec.name).into_owned();
        let digest = names::digest_hex(&full_name);
        let texts: Vec<String> = if spec.replies.is_empty() { vec![spec.reply.clone()] } else { spec.replies.clone() };
        let replies = texts.into_iter().map(|text| Reply { chunks: names::chunk_ranges(&text), text }).collect();
        CModel { spec, full_name, digest, replies, next: AtomicUsize::new(0), next_json: AtomicUsize::new(0) }
    }

    /// The next reply (cycling through `replies`).
    pub(crate) fn next_reply(&self) -> &Reply {
        let i = if self.replies.len() > 1 { self.next.fetch_add(1, Ordering::Relaxed) % self.replies.len() } else { 0 };
        &self.replies[i.min(self.replies.len().saturating_sub(1))]
    }

    /// The configured JSON reply for the next JSON request (cycling through `json_replies`), if any.
    pub(crate) fn next_json_reply(&self) -> Option<&str> {
        let replies = &self.spec.json_replies;
        if replies.is_empty() {
            return self.spec.json_reply.as_deref();
        }
        let i = self.next_json.fetch_add(1, Ordering::Relaxed) % replies.len();
        replies.get(i).map(String::as_str)
    }
}

/// The scenario in the form handlers use.
pub(crate) struct Compiled {
    pub(crate) seed: u64,
    pub(crate) version: String,
    pub(crate) record_requests: bool,
    pub(crate) max_recorded: usize,
    pub(crate) api: ApiSurface,
    pub(crate) api_key: Option<String>,
    pub(crate) slots: u32,
    pub(crate) models: Vec<Arc<CModel>>,
}

impl Compiled {
    pub(crate) fn new(s: Scenario) -> Compiled {
        Compiled {
            seed: s.seed,
            version: s.version,
            record_requests: s.record_requests,
            max_recorded: s.max_recorded,
            api: s.api,
            api_key: s.api_key,
            slots: s.slots,
            models: s.models.into_iter().map(|m| Arc::new(CModel::new(m))).collect(),
        }
    }

    pub(crate) fn find(&self, name: &str) -> Option<&Arc<CModel>> {
        self.models.iter().find(|m| names::name_matches(&m.full_name, name))
    }

    pub(crate) fn to_scenario(&self) -> Scenario {
        Scenario {
            seed: self.seed,
            version: self.version.clone(),
            record_requests: self.record_requests,
            max_recorded: self.max_recorded,
            api: self.api,
            api_key: self.api_key.clone(),
            slots: self.slots,
            models: self.models.iter().map(|m| m.spec.clone()).collect(),
        }
    }

    /// A copy with the model list edited (models not touched keep their reply counters).
    fn with_models(&self, models: Vec<Arc<CModel>>) -> Compiled {
        Compiled {
            seed: self.seed,
            version: self.version.clone(),
            record_requests: self.record_requests,
            max_recorded: self.max_recorded,
            api: self.api,
            api_key: self.api_key.clone(),
            slots: self.slots,
            models,
        }
    }
}

/// What a request gets, decided by the fault rolls.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Normal,
    Busy,
    NotFound,
    ServerError(String),
    Status(u16, String),
    Hang,
    Reset,
    Cut(usize),
    ErrorLine(usize, String),
    Garble(GarbleKind, f64),
    SlowFirstByte(Duration),
}

pub(crate) const DEFAULT_SERVER_ERROR: &str = "llama runner process has terminated: exit status 2";

pub(crate) struct State {
    pub(crate) counters: Arc<Counters>,
    scenario: RwLock<Arc<Compiled>>,
    rng: Mutex<StdRng>,
    records: Mutex<VecDeque<RecordedRequest>>,
    blobs: Mutex<HashSet<String>>,
    pub(crate) shutdown: watch::Sender<bool>,
}

impl State {
    pub(crate) fn new(s: Scenario) -> State {
        let rng = StdRng::seed_from_u64(s.seed);
        State {
            counters: Arc::new(Counters::default()),
            scenario: RwLock::new(Arc::new(Compiled::new(s))),
            rng: Mutex::new(rng),
            records: Mutex::new(VecDeque::new()),
            blobs: Mutex::new(HashSet::new()),
            shutdown: watch::Sender::new(false),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<Compiled> {
        Arc::clone(&self.scenario.read())
    }

    /// Replaces the scenario and reseeds the RNG.
    pub(crate) fn set_scenario(&self, s: Scenario) {
        let seed = s.seed;
        let compiled = Arc::new(Compiled::new(s));
        // Hold the RNG lock while swapping so no request sees the new scenario with the old RNG.
        let mut rng = self.rng.lock();
        *rng = StdRng::seed_from_u64(seed);
        *self.scenario.write() = compiled;
    }

    /// Edits the model list (pull, create, copy, delete).
    pub(crate) fn edit_models<R>(&self, f: impl FnOnce(&mut Vec<Arc<CModel>>) -> R) -> R {
        let mut guard = self.scenario.write();
        let mut models = guard.models.clone();
        let r = f(&mut models);
        *guard = Arc::new(guard.with_models(models));
        r
    }

    pub(crate) fn record(&self, compiled: &Compiled, req: RecordedRequest) {
        if !compiled.record_requests || compiled.max_recorded == 0 {
            return;
        }
        let mut records = self.records.lock();
        while records.len() >= compiled.max_recorded {
            records.pop_front();
        }
        records.push_back(req);
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.records.lock().iter().cloned().collect()
    }

    pub(crate) fn clear_requests(&self) {
        self.records.lock().clear();
    }

    pub(crate) fn add_blob(&self, digest: &str) -> bool {
        self.blobs.lock().insert(digest.to_owned())
    }

    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blobs.lock().contains(digest)
    }

    /// Rolls the model's faults for one request in arrival order.
    pub(crate) fn pick_action(&self, model: &CModel, endpoint: &str, json: bool) -> Action {
        let faults = &model.spec.faults;
        if faults.is_empty() {
            return Action::Normal;
        }
        let mut rng = self.rng.lock();
        for f in faults {
            if !f.endpoints.is_empty() && !f.endpoints.iter().any(|e| e == endpoint) {
                continue;
            }
            if f.kind == FaultKind::Garble && !json {
                continue;
            }
            let roll: f64 = rng.random();
            if roll >= f.rate {
                continue;
            }
            return match f.kind {
                FaultKind::Busy => Action::Busy,
                FaultKind::NotFound => Action::NotFound,
                FaultKind::ServerError => {
                    Action::ServerError(f.message.clone().unwrap_or_else(|| DEFAULT_SERVER_ERROR.to_owned()))
                }
                FaultKind::Status => Action::Status(
                    f.status,
                    f.body.clone().unwrap_or_else(|| format!("{{\"error\":\"injected status {}\"}}", f.status)),
                ),
                FaultKind::Hang => Action::Hang,
                FaultKind::Reset => Action::Reset,
                FaultKind::Cut => Action::Cut(f.after_chunks),
                FaultKind::ErrorLine => Action::ErrorLine(
                    f.after_chunks,
                    f.message.clone().unwrap_or_else(|| DEFAULT_SERVER_ERROR.to_owned()),
                ),
                FaultKind::Garble => {
                    let kinds: &[GarbleKind] = if f.garble.is_empty() { &GarbleKind::ALL } else { &f.garble };
                    let kind = kinds[rng.random_range(0..kinds.len())];
                    let frac: f64 = rng.random();
                    Action::Garble(kind, frac)
                }
                FaultKind::SlowFirstByte => Action::SlowFirstByte(f.delay),
            };
        }
        Action::Normal
    }
}
