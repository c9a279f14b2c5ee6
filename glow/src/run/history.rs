//! What a run has seen so far: the train and test curves, the best evaluation, and the
//! counts of skipped steps and rollbacks. Built up step by step, and rebuilt on resume
//! by replaying the metrics log's kept lines ([`History::replay`]).

use std::path::Path;

use engine::Result;
use serde_json::Value;

use crate::picture::{save_loss_curve, PlotOptions};

/// `(step, value)` points of a plotted series.
type Curve = Vec<(f64, f64)>;

/// A run's curves and counters.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// `(step, bpd)` of every good step, for the loss curve.
    train_curve: Curve,
    /// The lowest test bits/dim so far (of the moving average, when kept).
    pub(crate) best_test_bpd: Option<f64>,
    /// `(step, raw, ema)` of every evaluation: the test bits/dim of the trained weights
    /// and, when kept, of their moving average.
    evaluations: Vec<(u64, f64, Option<f64>)>,
    /// Skipped steps, whole run.
    pub(crate) skipped_steps: u64,
    /// Rollbacks, whole run.
    pub(crate) rollbacks: u64,
}

impl History {
    /// Takes one kept line of an earlier run's log into the curves and counters.
    pub(crate) fn replay(&mut self, v: &Value) {
        let Some(step) = v["step"].as_u64() else {
            return;
        };
        if v["rollback"].as_bool() == Some(true) {
            self.rollbacks += 1;
            self.forget_after(step);
        } else if v["skipped"].as_bool() == Some(true) {
            self.skipped_steps += 1;
        } else if let Some(raw) = v["test_bpd"].as_f64() {
            self.record_evaluation(step, raw, v["test_bpd_ema"].as_f64());
        } else if let Some(b) = v["bpd"].as_f64() {
            self.record_step(step, b);
        }
    }

    /// A good step's bits/dim.
    pub(crate) fn record_step(&mut self, step: u64, bpd: f64) {
        self.train_curve.push((step as f64, bpd));
    }

    /// An evaluation's test bits/dim, of the weights (`raw`) and of their moving average
    /// (`ema`, when kept, which then judges it); whether it is the best so far (a
    /// non-finite one never is).
    pub(crate) fn record_evaluation(&mut self, step: u64, raw: f64, ema: Option<f64>) -> bool {
        self.evaluations.push((step, raw, ema));
        let test_bpd = ema.unwrap_or(raw);
        let best = test_bpd.is_finite() && self.best_test_bpd.is_none_or(|b| test_bpd < b);
        if best {
            self.best_test_bpd = Some(test_bpd);
        }
        best
    }

    /// Drops the curve points after `step` (those steps run again after a rollback).
    pub(crate) fn forget_after(&mut self, step: u64) {
        self.train_curve.retain(|p| p.0 <= step as f64);
        self.evaluations.retain(|e| e.0 <= step);
    }

    /// The last evaluation's test bits/dim of the trained weights and, when kept, of
    /// their moving average.
    pub(crate) fn last_test(&self) -> Option<(f64, Option<f64>)> {
        self.evaluations.last().map(|e| (e.1, e.2))
    }

    /// The step and test bits/dim of the last evaluation (of the moving average, when
    /// kept).
    pub(crate) fn last_evaluation(&self) -> Option<(u64, f64)> {
        self.evaluations.last().map(|e| (e.0, e.2.unwrap_or(e.1)))
    }

    /// Mean bits/dim of the good steps after `after`.
    pub(crate) fn train_bpd_after(&self, after: u64) -> Option<f64> {
        let pts: Vec<f64> = self
            .train_curve
            .iter()
            .filter(|p| p.0 > after as f64)
            .map(|p| p.1)
            .collect();
        (!pts.is_empty()).then(|| pts.iter().sum::<f64>() / pts.len() as f64)
    }

    /// Mean bits/dim of the last 50 good steps.
    pub(crate) fn recent_train_bpd(&self) -> Option<f64> {
        let last: Vec<f64> = self
            .train_curve
            .iter()
            .rev()
            .take(50)
            .map(|p| p.1)
            .collect();
        (!last.is_empty()).then(|| last.iter().sum::<f64>() / last.len() as f64)
    }

    /// Plots both curves into `path` (nothing while both are empty).
    pub(crate) fn save_loss_curve(&self, path: &Path) -> Result<()> {
        if self.train_curve.is_empty() && self.evaluations.is_empty() {
            return Ok(());
        }
        // Each evaluation as judged: of the moving average, when kept.
        let test_curve: Curve = self
            .evaluations
            .iter()
            .map(|&(step, raw, ema)| (step as f64, ema.unwrap_or(raw)))
            .collect();
        save_loss_curve(
            path,
            &[
                ("train bits/dim", &self.train_curve),
                ("test bits/dim", &test_curve),
            ],
            &PlotOptions::default(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replay_rebuilds_curves_best_and_counters() {
        let mut h = History::default();
        for line in [
            json!({"step": 1, "loss": 6.0, "bpd": 6.0}),
            json!({"step": 2, "loss": 5.0, "bpd": 5.0}),
            json!({"step": 2, "test_bpd": 5.5, "best": true}),
            json!({"step": 3, "skipped": true}),
            json!({"step": 3, "bpd": 4.0}),
            json!({"step": 4, "test_bpd": 4.7, "test_bpd_ema": 4.5, "best": true}),
            // A rollback to the checkpoint of step 2: steps 3 and 4 run again.
            json!({"step": 2, "rollback": true, "from_step": 4}),
        ] {
            h.replay(&line);
        }
        assert_eq!((h.skipped_steps, h.rollbacks), (1, 1));
        assert_eq!(h.last_evaluation(), Some((2, 5.5)));
        // The best is a fact about files written (best.safetensors), not forgotten.
        assert_eq!(h.best_test_bpd, Some(4.5));
        assert_eq!(h.train_bpd_after(0), Some(5.5));
        assert_eq!(h.recent_train_bpd(), Some(5.5));
        assert_eq!(h.last_test(), Some((5.5, None)));
        assert!(!h.record_evaluation(5, f64::NAN, None), "NaN is never best");
    }
}
