//! What a run tells its caller: an [`Event`] as each thing happens, and a [`RunSummary`]
//! when [`super::Run::run`] returns.

use std::path::PathBuf;

use crate::train::{SkippedStep, StepStats};

/// Why [`CHECKPOINT_FILE`](super::CHECKPOINT_FILE) (or [`BEST_FILE`](super::BEST_FILE)) was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointReason {
    /// The start of a fresh run (step 0), so a rollback always has a target.
    Start,
    /// [`RunConfig::checkpoint_every`](super::RunConfig::checkpoint_every) steps since step 0.
    Steps,
    /// [`RunConfig::checkpoint_interval`](super::RunConfig::checkpoint_interval) since the last checkpoint.
    Time,
    /// The rolled-back state with its lowered learning rate.
    Rollback,
    /// A stop was requested ([`Interrupt`](super::Interrupt)).
    Interrupted,
    /// The last step.
    End,
    /// A new best evaluation ([`BEST_FILE`](super::BEST_FILE)).
    Best,
}

impl CheckpointReason {
    /// The word the metrics log uses.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointReason::Start => "start",
            CheckpointReason::Steps => "steps",
            CheckpointReason::Time => "time",
            CheckpointReason::Rollback => "rollback",
            CheckpointReason::Interrupted => "interrupted",
            CheckpointReason::End => "end",
            CheckpointReason::Best => "best",
        }
    }
}

/// What a run reports as it goes; [`Run::run`](super::Run::run)'s callback gets each one.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The loop starts at `step` of `total` (`resumed` when [`Run::resume`](super::Run::resume) made the run).
    Started {
        /// Steps already taken.
        step: u64,
        /// [`RunConfig::steps`](super::RunConfig::steps).
        total: u64,
        /// Whether the run continues a checkpoint.
        resumed: bool,
    },
    /// A step updated the model.
    Step {
        /// What it measured.
        stats: StepStats,
        /// Training images per second since the first step of this call of
        /// [`Run::run`](super::Run::run) began (after the ActNorms' initialisation and the
        /// first checkpoint).
        images_per_sec: f64,
    },
    /// A step was skipped: its loss or gradient was not finite.
    Skipped {
        /// Which step and why.
        skipped: SkippedStep,
        /// Bad steps in a row, this one included.
        in_a_row: u32,
    },
    /// [`RunConfig::max_bad_steps`](super::RunConfig::max_bad_steps) bad steps in a row: the run went back to its checkpoint.
    RolledBack {
        /// The step the last bad one had reached.
        from_step: u64,
        /// The checkpoint's step, where training goes on from.
        to_step: u64,
        /// The learning rate from now on.
        lr: f32,
    },
    /// An evaluation on the test split.
    Evaluated {
        /// At this step.
        step: u64,
        /// Mean train bits/dim of the good steps since the previous evaluation.
        train_bpd: Option<f64>,
        /// Mean test bits/dim of the trained weights.
        test_bpd: f64,
        /// Mean test bits/dim of their moving average, when the run keeps one
        /// ([`crate::optim::OptimizerConfig::ema_decay`]); the best is then judged by it.
        test_bpd_ema: Option<f64>,
        /// Whether it is the best so far (and [`BEST_FILE`](super::BEST_FILE) was written).
        best: bool,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// The step it holds.
        step: u64,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: CheckpointReason,
    },
    /// Sample grids were written.
    Samples {
        /// At this step.
        step: u64,
        /// The files.
        paths: Vec<PathBuf>,
    },
    /// A stop was requested; the run ends here (after writing a checkpoint if the last
    /// step was good: then `checkpoint_step == step`).
    Interrupted {
        /// Steps taken.
        step: u64,
        /// The signal it was requested with (0: none given).
        signal: i32,
        /// The step [`CHECKPOINT_FILE`](super::CHECKPOINT_FILE) holds, where a resume starts.
        checkpoint_step: u64,
    },
}

/// How a call of [`Run::run`](super::Run::run) ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Steps taken.
    pub step: u64,
    /// The step [`CHECKPOINT_FILE`](super::CHECKPOINT_FILE) holds.
    pub checkpoint_step: u64,
    /// Mean bits/dim of the last 50 good steps (`None` before any).
    pub train_bpd: Option<f64>,
    /// The last evaluation's test bits/dim of the trained weights.
    pub test_bpd: Option<f64>,
    /// The last evaluation's test bits/dim of the moving average of the weights, when
    /// the run keeps one.
    pub test_bpd_ema: Option<f64>,
    /// The best evaluation's test bits/dim, of the moving average when the run keeps one
    /// (what [`BEST_FILE`](super::BEST_FILE) holds).
    pub best_test_bpd: Option<f64>,
    /// Training images per second during this call.
    pub images_per_sec: f64,
    /// Skipped steps in the whole run (counted from the log on resume).
    pub skipped_steps: u64,
    /// Rollbacks in the whole run.
    pub rollbacks: u64,
    /// `Some(signal)` when the run stopped on an [`Interrupt`](super::Interrupt) before its last step.
    pub interrupted: Option<i32>,
    /// The ranks of a data-parallel run (1 otherwise); at the end of [`Run::run`](super::Run::run) every
    /// rank was checked to hold the same weights ([`crate::parallel::check_replicas`]).
    pub ranks: usize,
}
