//! Token estimates calibrated per model: the prompt tokens a model reports for a session's
//! context, against what keel estimated for it, give a ratio that scales the budget for that
//! model's next requests (a model whose tokenizer splits finer fills its context sooner).

use std::collections::HashMap;

use parking_lot::Mutex;

/// Most models remembered (the least recently added is forgotten first).
const MAX_MODELS: usize = 256;
/// Weight of a new observation in the moving average.
const WEIGHT: f64 = 0.3;
/// Bounds of the ratio: a wild count (a cached prompt, a server that counts nothing) is clamped.
const BOUNDS: (f64, f64) = (0.25, 4.0);

/// Real prompt tokens per estimated token, per model.
#[derive(Debug, Default)]
pub(crate) struct Calibration {
    ratios: Mutex<(HashMap<String, f64>, Vec<String>)>,
}

impl Calibration {
    /// The ratio for `model` (1.0 until it reported a count).
    pub(crate) fn ratio(&self, model: &str) -> f64 {
        self.ratios.lock().0.get(model).copied().unwrap_or(1.0)
    }

    /// The budget in keel's estimated tokens that matches `budget` real tokens of `model`.
    pub(crate) fn budget(&self, model: &str, budget: u64) -> u64 {
        if budget == 0 {
            return 0;
        }
        ((budget as f64 / self.ratio(model)).round() as u64).max(1)
    }

    /// Records that a context estimated at `estimated` tokens was `actual` tokens for `model`.
    pub(crate) fn observe(&self, model: &str, estimated: u64, actual: u64) {
        if estimated == 0 || actual == 0 {
            return;
        }
        let sample = (actual as f64 / estimated as f64).clamp(BOUNDS.0, BOUNDS.1);
        let mut guard = self.ratios.lock();
        let (ratios, order) = &mut *guard;
        match ratios.get_mut(model) {
            Some(ratio) => *ratio = (*ratio * (1.0 - WEIGHT) + sample * WEIGHT).clamp(BOUNDS.0, BOUNDS.1),
            None => {
                if order.len() >= MAX_MODELS {
                    let oldest = order.remove(0);
                    ratios.remove(&oldest);
                }
                order.push(model.to_owned());
                ratios.insert(model.to_owned(), sample);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_move_toward_what_the_model_reports() {
        let calibration = Calibration::default();
        assert_eq!(calibration.budget("m", 1000), 1000);
        calibration.observe("m", 100, 200);
        assert!((calibration.ratio("m") - 2.0).abs() < 1e-9);
        assert_eq!(calibration.budget("m", 1000), 500);
        calibration.observe("m", 100, 100);
        assert!((calibration.ratio("m") - 1.7).abs() < 1e-9);
        calibration.observe("m", 1, 1000);
        assert!(calibration.ratio("m") <= 4.0);
        assert_eq!(calibration.budget("m", 0), 0);
        assert_eq!(calibration.ratio("other"), 1.0);
    }

    #[test]
    fn memory_is_bounded() {
        let calibration = Calibration::default();
        for i in 0..(MAX_MODELS + 10) {
            calibration.observe(&format!("m{i}"), 10, 20);
        }
        assert_eq!(calibration.ratios.lock().0.len(), MAX_MODELS);
        assert_eq!(calibration.ratio("m0"), 1.0, "the oldest was forgotten");
    }
}
