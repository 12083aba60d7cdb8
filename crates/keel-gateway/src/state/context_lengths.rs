//! Context lengths the upstreams reported (`/api/show`), per model: asked once per model by the
//! session stage to size a managed session's context.

use std::collections::HashMap;

use parking_lot::Mutex;

/// Most models whose context length is remembered.
const MAX_MODELS: usize = 256;

/// Context lengths the upstreams reported, per model (`None`: asked, nothing usable).
#[derive(Debug, Default)]
pub(crate) struct ContextLengths(Mutex<HashMap<String, Option<u64>>>);

impl ContextLengths {
    pub(crate) fn get(&self, model: &str) -> Option<Option<u64>> {
        self.0.lock().get(model).copied()
    }

    pub(crate) fn put(&self, model: &str, length: Option<u64>) {
        let mut lengths = self.0.lock();
        if lengths.len() >= MAX_MODELS {
            lengths.clear();
        }
        lengths.insert(model.to_owned(), length);
    }
}
