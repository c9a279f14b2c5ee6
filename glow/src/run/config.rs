//! What a run does and where it writes: [`RunConfig`], its defaults and its checks.

use std::path::PathBuf;
use std::time::Duration;

use engine::{Error, Result};

use super::{BEST_FILE, CHECKPOINT_FILE, METRICS_FILE};

/// Default of [`RunConfig::checkpoint_every`]: 500 steps, the default evaluation period
/// of `train_cifar10`, so a checkpoint lands where an evaluation does. For a large model
/// on a CPU that can be most of an hour, which [`DEFAULT_CHECKPOINT_MINUTES`] bounds
/// (the step times: `docs/measurements.md`).
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 500;
/// Default of [`RunConfig::checkpoint_interval`], in minutes: a crash loses at most three
/// minutes of work whatever the model's size, for a write that takes a small share of
/// that even for the paper's model (`docs/measurements.md`).
pub const DEFAULT_CHECKPOINT_MINUTES: f64 = 3.0;
/// The images ActNorm's data-dependent initialisation sees in the paper's code
/// (openai/glow's `--n_batch_init`), the training example's default `--init-batch`.
pub const DEFAULT_INIT_BATCH: usize = 256;
/// Default of [`RunConfig::max_bad_steps`]: one or two bad batches are skipped and
/// forgotten; five in a row mean the parameters themselves have gone bad.
pub const DEFAULT_MAX_BAD_STEPS: u32 = 5;
/// Default of [`RunConfig::rollback_lr_factor`]: halving. An Adam step moves each
/// parameter by about the learning rate, so halving it halves how far each step can
/// throw the model; repeated rollbacks compound (1/2, 1/4, 1/8), which tames a stubborn
/// divergence in a few, while a one-off spike costs only half the speed from there on.
pub const DEFAULT_ROLLBACK_LR_FACTOR: f32 = 0.5;
/// Default of [`RunConfig::max_rollbacks`]: three rollbacks to the same checkpoint (the
/// learning rate down to 1/8) before the run gives up.
pub const DEFAULT_MAX_ROLLBACKS: u32 = 3;

/// What a run does and where it writes. [`RunConfig::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// The output folder (created if need be).
    pub out: PathBuf,
    /// Train until this many steps have been taken (counting those before a resume).
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// The transforms applied to each training batch ([`crate::augment`]); none by
    /// default.
    pub augmentation: crate::augment::Augmentation,
    /// Evaluate on the test split every this many steps and at the last step; 0: never.
    pub eval_every: u64,
    /// Images per evaluation batch.
    pub eval_batch: usize,
    /// Write sample grids every this many steps and at the last step; 0: never.
    pub sample_every: u64,
    /// Images per sample grid.
    pub sample_images: usize,
    /// Write [`CHECKPOINT_FILE`] every this many steps; 0: not by step count.
    pub checkpoint_every: u64,
    /// Write [`CHECKPOINT_FILE`] after the first step at least this long after the last
    /// one; `None`: not by time.
    pub checkpoint_interval: Option<Duration>,
    /// Non-finite steps in a row that trigger a rollback (at least 1).
    pub max_bad_steps: u32,
    /// What a rollback multiplies the learning rate by.
    pub rollback_lr_factor: f32,
    /// Rollbacks to the same checkpoint before the run fails.
    pub max_rollbacks: u32,
    /// Initialise the ActNorms (data-dependent, before the first step of a fresh run)
    /// from this many training images, the first of the first epoch's order, shared out
    /// between the ranks of a data-parallel run; `None`: from the first training batch.
    /// At most the training split's size.
    pub init_batch: Option<usize>,
    /// Also write TensorBoard event files into the output folder ([`crate::tensorboard`]):
    /// every number of the metrics log's step and evaluation lines as a scalar, and the
    /// sample grids' overview as an image.
    pub tensorboard: bool,
    /// [`Run::new`](super::Run::new) in a folder that holds a run: move that run aside into a dated
    /// sibling folder ([`Claim::Overwrite`](super::folder::Claim::Overwrite)) rather than refuse.
    pub overwrite: bool,
}

impl RunConfig {
    /// A run of `steps` steps into `out`, with batches of 16, evaluation every 500 steps,
    /// sample grids every 1000 and the `DEFAULT_*` constants of this module.
    pub fn new(out: impl Into<PathBuf>, steps: u64) -> RunConfig {
        RunConfig {
            out: out.into(),
            steps,
            batch: 16,
            augmentation: crate::augment::Augmentation::none(),
            eval_every: 500,
            eval_batch: 64,
            sample_every: 1000,
            sample_images: 16,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: Some(Duration::from_secs_f64(DEFAULT_CHECKPOINT_MINUTES * 60.0)),
            max_bad_steps: DEFAULT_MAX_BAD_STEPS,
            rollback_lr_factor: DEFAULT_ROLLBACK_LR_FACTOR,
            max_rollbacks: DEFAULT_MAX_ROLLBACKS,
            init_batch: None,
            tensorboard: false,
            overwrite: false,
        }
    }

    /// [`CHECKPOINT_FILE`] in the output folder.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.out.join(CHECKPOINT_FILE)
    }

    /// [`BEST_FILE`] in the output folder.
    pub fn best_path(&self) -> PathBuf {
        self.out.join(BEST_FILE)
    }

    /// [`METRICS_FILE`] in the output folder.
    pub fn metrics_path(&self) -> PathBuf {
        self.out.join(METRICS_FILE)
    }

    /// Fails, naming the setting, on values the loop cannot work with.
    pub(super) fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::invalid("training run", what));
        if self.batch == 0 || self.eval_batch == 0 || self.sample_images == 0 {
            return bad(format!(
                "batch ({}), eval_batch ({}) and sample_images ({}) must be at least 1",
                self.batch, self.eval_batch, self.sample_images
            ));
        }
        if self.init_batch == Some(0) {
            return bad("init_batch must be at least 1".into());
        }
        if self.max_bad_steps == 0 {
            return bad("max_bad_steps must be at least 1".into());
        }
        if !(self.rollback_lr_factor > 0.0 && self.rollback_lr_factor <= 1.0) {
            return bad(format!(
                "rollback_lr_factor must be in (0, 1], got {}",
                self.rollback_lr_factor
            ));
        }
        Ok(())
    }
}
