//! What a training run tells its caller (node, CLI, tests) while it runs (docs/cretok.md, "Report
//! the starting point" and "Held-out check").

use std::path::Path;

use super::encoder::EncoderId;

/// A starting share above this is a warning: almost nothing can be learned.
pub const SATURATED_SHARE: f64 = 0.9;

/// Step 0: per encoder, the share of training pair-orders whose cosine is already >= θ.
#[derive(Debug, Clone, PartialEq)]
pub struct StartReport {
    pub theta: f64,
    pub shares: Vec<(EncoderId, f64)>,
}

impl StartReport {
    /// Encoders whose share exceeds [`SATURATED_SHARE`].
    pub fn saturated(&self) -> Vec<EncoderId> {
        self.shares
            .iter()
            .filter(|(_, s)| *s > SATURATED_SHARE)
            .map(|(id, _)| *id)
            .collect()
    }

    /// One line per encoder, with a loud warning where nothing will be learned.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .shares
            .iter()
            .map(|(id, s)| {
                format!(
                    "step 0: {}: {:.1}% of training pairs already have cos >= theta {}",
                    id.key(),
                    100.0 * s,
                    self.theta
                )
            })
            .collect();
        for id in self.saturated() {
            lines.push(format!(
                "WARNING: {}: over {:.0}% of pairs start above theta: the loss is clipped for \
                 them and almost nothing will be learned; lower theta or change the target",
                id.key(),
                100.0 * SATURATED_SHARE
            ));
        }
        lines
    }
}

/// One optimisation step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Steps done (1-based after the step).
    pub step: u64,
    pub steps: u64,
    /// Mean loss of the sampled pairs, averaged over encoders.
    pub loss: f64,
    /// The rate this step used.
    pub lr: f64,
    /// Steps per second since the run (or resume) started.
    pub steps_per_s: f64,
}

/// Full-set losses (no sampling): training pairs and held-out pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    pub step: u64,
    pub train_loss: f64,
    /// `None` without test pairs.
    pub test_loss: Option<f64>,
    /// The share of training pair-orders at or above θ (they no longer pull), mean over encoders.
    pub share_above: f64,
}

impl EvalReport {
    pub fn line(&self) -> String {
        let held_out = self
            .test_loss
            .map(|t| format!(", held-out loss {t:.5}"))
            .unwrap_or_default();
        format!(
            "step {}: train loss {:.5}{held_out}, {:.1}% of pairs at or above theta",
            self.step,
            self.train_loss,
            100.0 * self.share_above
        )
    }
}

/// Whether to go on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Receives a run's reports; every method has a no-op default.
pub trait Reporter {
    fn start(&mut self, _report: &StartReport) {}
    /// Called after each step; [`Control::Stop`] ends the run after a checkpoint.
    fn step(&mut self, _report: &StepReport) -> Control {
        Control::Continue
    }
    fn eval(&mut self, _report: &EvalReport) {}
    fn checkpoint(&mut self, _path: &Path, _step: u64) {}
}

/// A [`Reporter`] that ignores everything.
pub struct Silent;

impl Reporter for Silent {}
