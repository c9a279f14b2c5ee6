//! A whole training run: the loop around [`Trainer::try_step`] with everything that keeps
//! a long run safe and visible, written into one output folder.
//!
//! [`Run::new`] starts afresh and [`Run::resume`] continues from the folder's checkpoint;
//! [`Run::run`] then trains to [`RunConfig::steps`], reporting progress through a callback
//! ([`Event`]) and writing:
//!
//! | file | what |
//! |---|---|
//! | [`CHECKPOINT_FILE`] | the latest good state, on its own schedule: every [`RunConfig::checkpoint_every`] steps and every [`RunConfig::checkpoint_interval`], at the start, the end, a rollback and an interrupt |
//! | [`BEST_FILE`] | the state of the best evaluation so far (lowest test bits/dim) |
//! | [`METRICS_FILE`] | one JSON line per step, skipped step, evaluation, checkpoint, sample grid, rollback, interrupt and resume |
//! | [`LOSS_CURVE_FILE`] | train and test bits/dim, after each evaluation and at the end |
//! | [`SAMPLES_DIR`]`/step*_t*.png` | sample grids every [`RunConfig::sample_every`] steps |
//!
//! **What is never lost.** Checkpoints are written atomically ([`crate::atomic`]), so a
//! crash at any moment, even inside a write, leaves a loadable checkpoint, and a resumed
//! run repeats exactly the steps after it (all randomness is counter-based, see
//! [`crate::checkpoint::TrainState`]): its losses are the uninterrupted run's, bit for bit.
//! On resume the metrics log is cut back to what the checkpoint knew: up to the line that
//! recorded writing it, or, if the run died between the two, to its step.
//! [`Interrupt`] lets a signal handler (or anything else) stop the run after the current
//! step with a fresh checkpoint.
//!
//! **What is never hidden.** A step whose loss or gradient norm is not finite updates
//! nothing and is logged (`"skipped": true` and why). After [`RunConfig::max_bad_steps`]
//! of them in a row the run rolls back to [`CHECKPOINT_FILE`] and multiplies the learning
//! rate by [`RunConfig::rollback_lr_factor`], and logs that too. Checkpoints are only
//! written after a good step, so the one rolled back to never holds the state that went
//! bad, and a checkpoint never holds a NaN (see [`crate::checkpoint`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Error, Result};
use serde_json::{json, Value};

use crate::atomic::write_atomic;
use crate::checkpoint::{resume, save_checkpoint, TrainState};
use crate::data::Cifar10;
use crate::parallel::{Collective, Solo};
use crate::picture::{save_loss_curve, save_sample_grids, PlotOptions};
use crate::train::{batch_for_step, evaluate, SkippedStep, StepOutcome, StepStats, Trainer};

pub mod folder;
use folder::{Claim, RunFolder};

/// The checkpoint of a run, in [`RunConfig::out`].
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The checkpoint of the best evaluation, in [`RunConfig::out`].
pub const BEST_FILE: &str = "best.safetensors";
/// The metrics log, in [`RunConfig::out`].
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The loss curve, in [`RunConfig::out`].
pub const LOSS_CURVE_FILE: &str = "loss_curve.png";
/// The folder of sample grids, in [`RunConfig::out`].
pub const SAMPLES_DIR: &str = "samples";

/// Default of [`RunConfig::checkpoint_every`]: 500 steps, the default evaluation period
/// of `train_cifar10`, so a checkpoint lands where an evaluation does. On a 2-core CPU
/// that is about two minutes of the default model (0.22 s a step) and 45 minutes of the
/// paper's (5.4 s a step); [`DEFAULT_CHECKPOINT_MINUTES`] bounds the latter.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 500;
/// Default of [`RunConfig::checkpoint_interval`], in minutes: a crash loses at most three
/// minutes of work whatever the model's size. Measured on the 2-core machine, writing and
/// syncing a checkpoint takes 0.15 s for `train_cifar10`'s default model (20 MB with the
/// optimiser's moments) and 3 s for the paper's (530 MB): under 2% of three minutes.
pub const DEFAULT_CHECKPOINT_MINUTES: f64 = 3.0;
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
    /// Random horizontal flips of training images.
    pub flip: bool,
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
    /// [`Run::new`] in a folder that holds a run: move that run aside into a dated
    /// sibling folder ([`folder::Claim::Overwrite`]) rather than refuse.
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
            flip: false,
            eval_every: 500,
            eval_batch: 64,
            sample_every: 1000,
            sample_images: 16,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: Some(Duration::from_secs_f64(DEFAULT_CHECKPOINT_MINUTES * 60.0)),
            max_bad_steps: DEFAULT_MAX_BAD_STEPS,
            rollback_lr_factor: DEFAULT_ROLLBACK_LR_FACTOR,
            max_rollbacks: DEFAULT_MAX_ROLLBACKS,
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
    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::invalid("training run", what));
        if self.batch == 0 || self.eval_batch == 0 || self.sample_images == 0 {
            return bad(format!(
                "batch ({}), eval_batch ({}) and sample_images ({}) must be at least 1",
                self.batch, self.eval_batch, self.sample_images
            ));
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

/// A request to stop a run after its current step, shared between the loop and whoever
/// asks (a signal handler, another thread, a test). Clones share the request.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    /// Set once a stop is requested.
    requested: Arc<AtomicBool>,
    /// The signal number of the request (0: none given).
    signal: Arc<AtomicUsize>,
}

/// SIGINT (Ctrl-C) on POSIX systems.
pub const SIGINT: i32 = 2;
/// SIGTERM (a polite kill) on POSIX systems.
pub const SIGTERM: i32 = 15;

impl Interrupt {
    /// No stop requested yet.
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// An interrupt requested by SIGINT (Ctrl-C) or SIGTERM: the first one asks the run
    /// to stop after its current step; a second one exits the process at once with
    /// status 128 + the signal's number (130, 143), as a shell reports a process killed
    /// by it. Installs process-wide signal handlers, so call it once, just before the run.
    pub fn on_signals() -> Result<Interrupt> {
        use signal_hook::consts::signal;
        use signal_hook::flag;
        let me = Interrupt::new();
        let fail = |e: std::io::Error| Error::invalid("signal handlers", e.to_string());
        for (sig, status) in [(signal::SIGINT, 130), (signal::SIGTERM, 143)] {
            // Registered first, so it sees the flag as it was before this signal: clear
            // on the first, set on the second.
            flag::register_conditional_shutdown(sig, status, Arc::clone(&me.requested))
                .map_err(fail)?;
            flag::register(sig, Arc::clone(&me.requested)).map_err(fail)?;
            flag::register_usize(sig, Arc::clone(&me.signal), sig as usize).map_err(fail)?;
        }
        Ok(me)
    }

    /// Asks the run to stop after its current step, as if by `signal` (e.g. [`SIGINT`]).
    pub fn request(&self, signal: i32) {
        self.signal.store(signal.max(0) as usize, Ordering::SeqCst);
        self.requested.store(true, Ordering::SeqCst);
    }

    /// The signal a stop was requested with, once one was (0 when none was given).
    pub fn requested(&self) -> Option<i32> {
        self.requested
            .load(Ordering::SeqCst)
            .then(|| self.signal.load(Ordering::SeqCst) as i32)
    }
}

/// Why [`CHECKPOINT_FILE`] (or [`BEST_FILE`]) was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointReason {
    /// The start of a fresh run (step 0), so a rollback always has a target.
    Start,
    /// [`RunConfig::checkpoint_every`] steps since step 0.
    Steps,
    /// [`RunConfig::checkpoint_interval`] since the last checkpoint.
    Time,
    /// The rolled-back state with its lowered learning rate.
    Rollback,
    /// A stop was requested ([`Interrupt`]).
    Interrupted,
    /// The last step.
    End,
    /// A new best evaluation ([`BEST_FILE`]).
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

/// What a run reports as it goes; [`Run::run`]'s callback gets each one.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The loop starts at `step` of `total` (`resumed` when [`Run::resume`] made the run).
    Started {
        /// Steps already taken.
        step: u64,
        /// [`RunConfig::steps`].
        total: u64,
        /// Whether the run continues a checkpoint.
        resumed: bool,
    },
    /// A step updated the model.
    Step {
        /// What it measured.
        stats: StepStats,
        /// Training images per second since [`Run::run`] was called.
        images_per_sec: f64,
    },
    /// A step was skipped: its loss or gradient was not finite.
    Skipped {
        /// Which step and why.
        skipped: SkippedStep,
        /// Bad steps in a row, this one included.
        in_a_row: u32,
    },
    /// [`RunConfig::max_bad_steps`] bad steps in a row: the run went back to its checkpoint.
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
        /// Mean test bits/dim.
        test_bpd: f64,
        /// Whether it is the best so far (and [`BEST_FILE`] was written).
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
        /// The step [`CHECKPOINT_FILE`] holds, where a resume starts.
        checkpoint_step: u64,
    },
}

/// How a call of [`Run::run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Steps taken.
    pub step: u64,
    /// The step [`CHECKPOINT_FILE`] holds.
    pub checkpoint_step: u64,
    /// Mean bits/dim of the last 50 good steps (`None` before any).
    pub train_bpd: Option<f64>,
    /// The last evaluation's test bits/dim.
    pub test_bpd: Option<f64>,
    /// The best evaluation's test bits/dim (what [`BEST_FILE`] holds).
    pub best_test_bpd: Option<f64>,
    /// Training images per second during this call.
    pub images_per_sec: f64,
    /// Skipped steps in the whole run (counted from the log on resume).
    pub skipped_steps: u64,
    /// Rollbacks in the whole run.
    pub rollbacks: u64,
    /// `Some(signal)` when the run stopped on an [`Interrupt`] before its last step.
    pub interrupted: Option<i32>,
    /// The ranks of a data-parallel run (1 otherwise); at the end of [`Run::run`] every
    /// rank was checked to hold the same weights ([`crate::parallel::check_replicas`]).
    pub ranks: usize,
}

/// `(step, value)` points of a plotted series.
type Curve = Vec<(f64, f64)>;

/// A training run in progress: the trainer and what the run has seen so far.
#[derive(Debug)]
pub struct Run {
    /// The model, optimiser and step counter being trained.
    pub trainer: Trainer,
    /// What the run does.
    pub config: RunConfig,
    /// Whether [`Run::resume`] made it.
    resumed: bool,
    /// `(step, bpd)` of every good step, for the loss curve.
    train_curve: Curve,
    /// `(step, test bpd)` of every evaluation.
    test_curve: Curve,
    /// The lowest test bits/dim so far.
    best_test_bpd: Option<f64>,
    /// The step [`CHECKPOINT_FILE`] holds, once there is one.
    checkpoint_step: Option<u64>,
    /// When it was written (or the run made).
    checkpoint_time: Instant,
    /// Bad steps in a row.
    bad_in_a_row: u32,
    /// The step of the last rollback's checkpoint and how many rollbacks went there.
    rollback_target: Option<(u64, u32)>,
    /// Skipped steps, whole run.
    skipped_steps: u64,
    /// Rollbacks, whole run.
    rollbacks: u64,
    /// The metrics log, open for appending (rank 0 of a data-parallel run only).
    metrics: Option<File>,
    /// The output folder, locked for the run's life (rank 0 only).
    folder: Option<RunFolder>,
    /// [`crate::data::Dataset::fingerprint`] of the training split: the checkpoint's
    /// on resume (checked against the data [`Run::run`] is given), then the data's.
    data_crc32: Option<u32>,
}

/// Wraps an I/O error on `path`.
fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::io(path, format!("{what}: {e}"))
}

impl Run {
    /// A fresh run of `trainer` (normally at step 0) into `config.out`: creates the
    /// folder, locks it for the run's life and starts an empty metrics log. A folder
    /// that another run holds is refused, and so is one that holds a run, unless
    /// [`RunConfig::overwrite`] moves that run aside ([`folder`]). The first checkpoint
    /// is written when [`Run::run`] starts.
    ///
    /// In a data-parallel run (the trainer's [`Trainer::collective`]), every rank makes
    /// its `Run` and calls [`Run::run`] with the same data; rank 0 alone locks the
    /// folder, writes files and evaluates, and every rank stops at the same step when
    /// any of them is asked to.
    pub fn new(config: RunConfig, trainer: Trainer) -> Result<Run> {
        config.check()?;
        if trainer.collective.rank() != 0 {
            return Ok(Run::with(config, trainer, None, false));
        }
        let claim = if config.overwrite {
            Claim::Overwrite
        } else {
            Claim::Fresh
        };
        let folder = RunFolder::claim(&config.out, claim)?;
        prepare_folder(&config)?;
        let path = config.metrics_path();
        let metrics = File::create(&path).map_err(|e| io_err(&path, "cannot create", e))?;
        let mut run = Run::with(config, trainer, Some(metrics), false);
        if let Some(aside) = folder.moved_aside() {
            let line =
                json!({"step": run.trainer.step, "moved_aside": aside.display().to_string()});
            run.log(line)?;
        }
        run.folder = Some(folder);
        Ok(run)
    }

    /// Where [`RunConfig::overwrite`] moved the run the folder held, if it did.
    pub fn moved_aside(&self) -> Option<&Path> {
        self.folder.as_ref().and_then(RunFolder::moved_aside)
    }

    /// Continues the run in `config.out` from its [`CHECKPOINT_FILE`], on `device`. The
    /// model, optimiser (learning rate included: a rollback's lowered one survives) and
    /// step come from the checkpoint; everything else from `config`. The metrics log is
    /// cut back to what the checkpoint knew (the lines the interrupted run wrote after it
    /// describe steps that run again), and the curves, best evaluation and counters are
    /// read back from it.
    pub fn resume(config: RunConfig, device: &engine::Device) -> Result<Run> {
        Run::resume_with(config, device, Arc::new(Solo))
    }

    /// [`Run::resume`] as one rank of a data-parallel run over `collective`, with any
    /// number of ranks that divides the batch: every rank loads the same checkpoint, and
    /// rank 0 alone rewrites the metrics log.
    pub fn resume_with(
        config: RunConfig,
        device: &engine::Device,
        collective: Arc<dyn Collective>,
    ) -> Result<Run> {
        config.check()?;
        let writer = collective.rank() == 0;
        let folder = if writer {
            let folder = RunFolder::claim(&config.out, Claim::Resume)?;
            prepare_folder(&config)?;
            Some(folder)
        } else {
            None
        };
        let (model, optimizer, state) = resume(config.checkpoint_path(), device)?;
        let trainer = Trainer {
            model,
            optimizer,
            seed: state.seed,
            step: state.step,
            collective,
        };
        let path = config.metrics_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(&path, "cannot read", e)),
        };
        let kept = log_up_to_checkpoint(&text, state.step);
        let metrics = if writer {
            let mut out = String::new();
            for (line, _) in &kept {
                out.push_str(line);
                out.push('\n');
            }
            write_atomic(&path, |tmp| {
                std::fs::write(tmp, &out).map_err(|e| io_err(&path, "writing", e))
            })?;
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| io_err(&path, "cannot open", e))?;
            Some(file)
        } else {
            None
        };
        let mut run = Run::with(config, trainer, metrics, true);
        run.folder = folder;
        run.data_crc32 = state.data_crc32;
        run.checkpoint_step = Some(state.step);
        for (_, v) in &kept {
            run.replay(v);
        }
        run.log(json!({"step": state.step, "resumed": CHECKPOINT_FILE}))?;
        Ok(run)
    }

    fn with(config: RunConfig, trainer: Trainer, metrics: Option<File>, resumed: bool) -> Run {
        Run {
            trainer,
            config,
            resumed,
            train_curve: Vec::new(),
            test_curve: Vec::new(),
            best_test_bpd: None,
            checkpoint_step: None,
            checkpoint_time: Instant::now(),
            bad_in_a_row: 0,
            rollback_target: None,
            skipped_steps: 0,
            rollbacks: 0,
            metrics,
            folder: None,
            data_crc32: None,
        }
    }

    /// Takes one kept line of an earlier run's log into the curves and counters.
    fn replay(&mut self, v: &Value) {
        let Some(step) = v["step"].as_u64() else {
            return;
        };
        if v["rollback"].as_bool() == Some(true) {
            self.rollbacks += 1;
            self.forget_after(step);
        } else if v["skipped"].as_bool() == Some(true) {
            self.skipped_steps += 1;
        } else if let Some(b) = v["test_bpd"].as_f64() {
            self.test_curve.push((step as f64, b));
            if self.best_test_bpd.is_none_or(|best| b < best) {
                self.best_test_bpd = Some(b);
            }
        } else if let Some(b) = v["bpd"].as_f64() {
            self.train_curve.push((step as f64, b));
        }
    }

    /// Drops the curve points after `step` (those steps run again after a rollback).
    fn forget_after(&mut self, step: u64) {
        let step = step as f64;
        self.train_curve.retain(|p| p.0 <= step);
        self.test_curve.retain(|p| p.0 <= step);
    }

    /// Appends one line to the metrics log, in one write (rank 0 only).
    fn log(&mut self, line: Value) -> Result<()> {
        let Some(metrics) = &mut self.metrics else {
            return Ok(());
        };
        let text = format!("{line}\n");
        metrics
            .write_all(text.as_bytes())
            .map_err(|e| io_err(&self.config.metrics_path(), "writing", e))
    }

    /// Whether this process writes the run's files: rank 0 (the only one outside a
    /// data-parallel run).
    fn writer(&self) -> bool {
        self.trainer.collective.rank() == 0
    }

    /// A stop request, agreed by every rank: one all-reduce of one flag per step in a
    /// data-parallel run, so that all of them stop after the same step.
    fn stop_requested(&self, interrupt: &Interrupt) -> Result<Option<i32>> {
        let local = interrupt.requested();
        let comm = self.trainer.collective.as_ref();
        if comm.size() == 1 {
            return Ok(local);
        }
        let mut flag = [if local.is_some() { 1.0 } else { 0.0 }];
        comm.sum_in_place(&mut flag)?;
        Ok((flag[0] > 0.0).then(|| local.unwrap_or(SIGTERM)))
    }

    /// Trains until [`RunConfig::steps`] or a stop request, calling `on_event` with each
    /// [`Event`]. Returns how it ended; a stop is not an error (see
    /// [`RunSummary::interrupted`]). May be called again, e.g. with more steps.
    ///
    /// In a data-parallel run, an error on one rank ends the whole job
    /// ([`Collective::abort`], after printing it): the other ranks would otherwise wait
    /// for this one in their next all-reduce for ever.
    pub fn run(
        &mut self,
        data: &Cifar10,
        interrupt: &Interrupt,
        on_event: impl FnMut(&Event),
    ) -> Result<RunSummary> {
        let result = self.run_steps(data, interrupt, on_event);
        if let Err(e) = &result {
            let comm = &self.trainer.collective;
            if comm.size() > 1 {
                eprintln!("error on rank {} of {}: {e}", comm.rank(), comm.size());
                comm.abort(1);
            }
        }
        result
    }

    /// [`Run::run`]'s loop.
    fn run_steps(
        &mut self,
        data: &Cifar10,
        interrupt: &Interrupt,
        mut on_event: impl FnMut(&Event),
    ) -> Result<RunSummary> {
        self.config.check()?;
        let batch = self.config.batch;
        let n = data.train.len();
        if n < batch {
            return Err(Error::invalid(
                "training run",
                format!("a batch of {batch} needs at least that many training images (have {n})"),
            ));
        }
        let per_epoch = (n / batch) as u64;
        let crc = data.train.fingerprint();
        match self.data_crc32 {
            Some(had) if had != crc => {
                return Err(Error::invalid(
                    "training run",
                    format!(
                        "the checkpoint was trained on other images (training split CRC-32 \
                         {had:08x}, this data's is {crc:08x}); resume with the same data"
                    ),
                ))
            }
            _ => self.data_crc32 = Some(crc),
        }
        let started = Instant::now();
        let mut images = 0usize;
        on_event(&Event::Started {
            step: self.trainer.step,
            total: self.config.steps,
            resumed: self.resumed,
        });
        if self.checkpoint_step.is_none() {
            self.save(CheckpointReason::Start, per_epoch, &mut on_event)?;
        }
        let rate = |images: usize| images as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let mut interrupted = None;
        // Agreed by every rank once before the first step and once after each step.
        let mut stop = self.stop_requested(interrupt)?;
        while self.trainer.step < self.config.steps {
            if self.trainer.collective.size() == 1 {
                // One process needs no agreement: a request made during the last
                // step's evaluation or checkpoint stops the run before the next step.
                stop = stop.or(interrupt.requested());
            }
            if let Some(signal) = stop {
                self.stop(signal, per_epoch, &mut on_event)?;
                interrupted = Some(signal);
                break;
            }
            let step = self.trainer.step;
            let (mut pixels, labels) = batch_for_step(&data.train, batch, self.trainer.seed, step)?;
            if self.config.flip {
                crate::data::random_hflip(&mut pixels, [3, 32, 32], self.trainer.seed, step)?;
            }
            let mut rolled_back = false;
            match self.trainer.try_step(&pixels, &labels)? {
                StepOutcome::Updated(stats) => {
                    images += labels.len();
                    self.bad_in_a_row = 0;
                    self.train_curve
                        .push((stats.step as f64, f64::from(stats.bpd)));
                    let images_per_sec = rate(images);
                    let mut line = json!({
                        "step": stats.step, "loss": stats.loss, "bpd": stats.bpd,
                        "lr": stats.lr, "grad_norm": stats.grad_norm,
                        "images_per_sec": images_per_sec,
                    });
                    if self.trainer.collective.size() > 1 {
                        line["allreduce_s"] = json!(stats.allreduce_s);
                    }
                    self.log(line)?;
                    on_event(&Event::Step {
                        stats,
                        images_per_sec,
                    });
                }
                StepOutcome::Skipped(skipped) => {
                    self.bad_in_a_row += 1;
                    self.skipped_steps += 1;
                    self.log(json!({
                        "step": skipped.step, "skipped": true,
                        "reason": skipped.why.to_string(), "in_a_row": self.bad_in_a_row,
                    }))?;
                    on_event(&Event::Skipped {
                        skipped,
                        in_a_row: self.bad_in_a_row,
                    });
                    if self.bad_in_a_row >= self.config.max_bad_steps {
                        self.roll_back(per_epoch, &mut on_event)?;
                        rolled_back = true;
                    }
                }
            }
            stop = self.stop_requested(interrupt)?;
            if !rolled_back {
                self.after_step(data, stop.is_some(), per_epoch, &mut on_event)?;
            }
        }
        if self.writer() {
            self.save_loss_curve(&self.config.out.join(LOSS_CURVE_FILE))?;
        }
        crate::parallel::check_replicas(self.trainer.collective.as_ref(), &self.trainer.model)?;
        Ok(RunSummary {
            step: self.trainer.step,
            checkpoint_step: self.checkpoint_step.unwrap_or(0),
            train_bpd: self.recent_train_bpd(),
            test_bpd: self.test_curve.last().map(|p| p.1),
            best_test_bpd: self.best_test_bpd,
            images_per_sec: rate(images),
            skipped_steps: self.skipped_steps,
            rollbacks: self.rollbacks,
            interrupted,
            ranks: self.trainer.collective.size(),
        })
    }

    /// Evaluation, sample grids and checkpoint, when due after the step just taken.
    /// While a stop is pending (`stopping`, agreed by every rank), none of them: the stop
    /// writes the checkpoint; except after the last step, which ends the run as usual.
    fn after_step(
        &mut self,
        data: &Cifar10,
        stopping: bool,
        per_epoch: u64,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<()> {
        let step = self.trainer.step;
        let at_end = step == self.config.steps;
        let due = |every: u64| every > 0 && (step.is_multiple_of(every) || at_end);
        if stopping && !at_end {
            return Ok(());
        }
        if self.trainer.collective.size() > 1 && due(self.config.checkpoint_every) {
            // Ranks that drifted apart are caught at the next checkpoint step, not only
            // at the end of the run (every rank takes this branch at the same steps).
            crate::parallel::check_replicas(self.trainer.collective.as_ref(), &self.trainer.model)?;
        }
        // Everything the run does at a step comes before that step's checkpoint, so a
        // resume from it neither repeats nor loses any of it.
        if due(self.config.eval_every) && self.writer() {
            self.evaluate(data, per_epoch, on_event)?;
        }
        if due(self.config.sample_every) && self.writer() {
            let dir = self.config.out.join(SAMPLES_DIR);
            let prefix = format!("step{step:06}");
            let n = self.config.sample_images;
            let paths = save_sample_grids(&self.trainer.model, &dir, &prefix, n, 0)?;
            self.log(json!({"step": step, "samples": format!("{SAMPLES_DIR}/{prefix}_*.png")}))?;
            on_event(&Event::Samples { step, paths });
        }
        if self.bad_in_a_row > 0 {
            // Never checkpoint a state that just failed: it may be the one going bad.
            return Ok(());
        }
        let reason = if at_end {
            Some(CheckpointReason::End)
        } else if self.config.checkpoint_every > 0
            && step.is_multiple_of(self.config.checkpoint_every)
        {
            Some(CheckpointReason::Steps)
        } else if self
            .config
            .checkpoint_interval
            .is_some_and(|t| self.checkpoint_time.elapsed() >= t)
        {
            Some(CheckpointReason::Time)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.save(reason, per_epoch, on_event)?;
        }
        Ok(())
    }

    /// Mean train bits/dim of the good steps after `after`.
    fn train_bpd_after(&self, after: u64) -> Option<f64> {
        let pts: Vec<f64> = self
            .train_curve
            .iter()
            .filter(|p| p.0 > after as f64)
            .map(|p| p.1)
            .collect();
        (!pts.is_empty()).then(|| pts.iter().sum::<f64>() / pts.len() as f64)
    }

    /// Mean train bits/dim of the last 50 good steps.
    fn recent_train_bpd(&self) -> Option<f64> {
        let last: Vec<f64> = self
            .train_curve
            .iter()
            .rev()
            .take(50)
            .map(|p| p.1)
            .collect();
        (!last.is_empty()).then(|| last.iter().sum::<f64>() / last.len() as f64)
    }

    /// Evaluates on the test split; a new best is written to [`BEST_FILE`].
    fn evaluate(
        &mut self,
        data: &Cifar10,
        per_epoch: u64,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<()> {
        let step = self.trainer.step;
        let batches = data.test.sequential_batches(self.config.eval_batch);
        let test_bpd = evaluate(&self.trainer.model, batches, 0, false, |_| {})?.mean_bpd;
        let previous = self.test_curve.last().map_or(0, |p| p.0 as u64);
        let train_bpd = self.train_bpd_after(previous);
        self.test_curve.push((step as f64, test_bpd));
        let best = test_bpd.is_finite() && self.best_test_bpd.is_none_or(|b| test_bpd < b);
        if best {
            self.best_test_bpd = Some(test_bpd);
            let path = self.config.best_path();
            save_checkpoint(
                &path,
                &self.trainer.model,
                &self.trainer.optimizer,
                &self.train_state(per_epoch),
            )?;
        }
        self.log(
            json!({"step": step, "train_bpd": train_bpd, "test_bpd": test_bpd, "best": best}),
        )?;
        on_event(&Event::Evaluated {
            step,
            train_bpd,
            test_bpd,
            best,
        });
        if best {
            self.log(json!({"step": step, "checkpoint": BEST_FILE, "reason": "best"}))?;
            on_event(&Event::Checkpoint {
                step,
                path: self.config.best_path(),
                reason: CheckpointReason::Best,
            });
        }
        let path = self.config.out.join(LOSS_CURVE_FILE);
        self.save_loss_curve(&path)
    }

    fn save_loss_curve(&self, path: &Path) -> Result<()> {
        if self.train_curve.is_empty() && self.test_curve.is_empty() {
            return Ok(());
        }
        save_loss_curve(
            path,
            &[
                ("train bits/dim", &self.train_curve),
                ("test bits/dim", &self.test_curve),
            ],
            &PlotOptions::default(),
        )?;
        Ok(())
    }

    fn train_state(&self, per_epoch: u64) -> TrainState {
        let step = self.trainer.step;
        TrainState {
            seed: self.trainer.seed,
            step,
            epoch: step / per_epoch,
            position_in_epoch: (step % per_epoch) * self.config.batch as u64,
            data_crc32: self.data_crc32,
        }
    }

    /// Writes [`CHECKPOINT_FILE`], then the log line that records it (the mark
    /// [`Run::resume`] cuts the log at).
    fn save(
        &mut self,
        reason: CheckpointReason,
        per_epoch: u64,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<()> {
        let path = self.config.checkpoint_path();
        let state = self.train_state(per_epoch);
        if self.writer() {
            save_checkpoint(&path, &self.trainer.model, &self.trainer.optimizer, &state)?;
        }
        self.checkpoint_step = Some(state.step);
        self.checkpoint_time = Instant::now();
        self.log(
            json!({"step": state.step, "checkpoint": CHECKPOINT_FILE, "reason": reason.name()}),
        )?;
        on_event(&Event::Checkpoint {
            step: state.step,
            path,
            reason,
        });
        Ok(())
    }

    /// Stops on a request: a checkpoint unless the last step was bad (then the last good
    /// one stays), the log line and the event.
    fn stop(
        &mut self,
        signal: i32,
        per_epoch: u64,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<()> {
        let step = self.trainer.step;
        self.log(json!({"step": step, "interrupted": signal}))?;
        if self.bad_in_a_row == 0 && self.checkpoint_step != Some(step) {
            self.save(CheckpointReason::Interrupted, per_epoch, on_event)?;
        }
        if self.trainer.collective.size() > 1 {
            // No rank exits before rank 0 has written the checkpoint: `mpirun` ends the
            // whole job when the first rank exits with a signal's status.
            self.trainer.collective.sum_in_place(&mut [0.0])?;
        }
        on_event(&Event::Interrupted {
            step,
            signal,
            checkpoint_step: self.checkpoint_step.unwrap_or(0),
        });
        Ok(())
    }

    /// Goes back to [`CHECKPOINT_FILE`] with a lower learning rate, and checkpoints that.
    fn roll_back(&mut self, per_epoch: u64, on_event: &mut impl FnMut(&Event)) -> Result<()> {
        let from_step = self.trainer.step;
        let path = self.config.checkpoint_path();
        let device = self.trainer.model.device().clone();
        let (model, mut optimizer, state) = resume(&path, &device)?;
        if self.trainer.collective.size() > 1 {
            // Every rank has read the checkpoint before rank 0 replaces it below.
            self.trainer.collective.sum_in_place(&mut [0.0])?;
        }
        let count = match self.rollback_target {
            Some((s, k)) if s == state.step => k + 1,
            _ => 1,
        };
        let lr = self.trainer.optimizer.config.lr * self.config.rollback_lr_factor;
        if count > self.config.max_rollbacks {
            return Err(Error::invalid(
                "training run",
                format!(
                    "gave up: {} rollbacks to the checkpoint at step {} ({}) and each time \
                     {} non-finite steps in a row, the last at step {from_step}",
                    self.config.max_rollbacks,
                    state.step,
                    path.display(),
                    self.config.max_bad_steps
                ),
            ));
        }
        self.rollback_target = Some((state.step, count));
        optimizer.config.lr = lr;
        self.trainer = Trainer {
            model,
            optimizer,
            seed: state.seed,
            step: state.step,
            collective: self.trainer.collective.clone(),
        };
        self.bad_in_a_row = 0;
        self.rollbacks += 1;
        self.forget_after(state.step);
        self.log(json!({
            "step": state.step, "rollback": true, "from_step": from_step, "lr": lr,
            "reason": format!("{} non-finite steps in a row", self.config.max_bad_steps),
        }))?;
        on_event(&Event::RolledBack {
            from_step,
            to_step: state.step,
            lr,
        });
        self.save(CheckpointReason::Rollback, per_epoch, on_event)
    }
}

/// Creates the output folder and removes the temporary files of checkpoint writes a
/// crash interrupted (harmless, but they would pile up over many crashes).
fn prepare_folder(config: &RunConfig) -> Result<()> {
    let out = &config.out;
    std::fs::create_dir_all(out).map_err(|e| io_err(out, "cannot create the folder", e))?;
    let written = [
        config.checkpoint_path(),
        config.best_path(),
        config.metrics_path(),
        out.join(LOSS_CURVE_FILE),
    ];
    for file in written {
        crate::atomic::remove_stale_temporaries(&file)?;
    }
    Ok(())
}

/// The lines of a metrics log (text and parsed) that a resume from a checkpoint at
/// `step` keeps: up to the last line recording [`CHECKPOINT_FILE`] written at `step`, or,
/// when there is none (the run died between writing the file and its line, or the log
/// predates these lines), every line up to `step`. Unreadable lines (one cut short by a
/// crash) are dropped.
fn log_up_to_checkpoint(text: &str, step: u64) -> Vec<(&str, Value)> {
    let lines: Vec<(&str, Value)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok().map(|v| (l, v)))
        .filter(|(_, v)| v["step"].as_u64().is_some())
        .collect();
    let mark = lines.iter().rposition(|(_, v)| {
        v["checkpoint"].as_str() == Some(CHECKPOINT_FILE) && v["step"].as_u64() == Some(step)
    });
    match mark {
        Some(i) => lines.into_iter().take(i + 1).collect(),
        None => lines
            .into_iter()
            .filter(|(_, v)| v["step"].as_u64().is_some_and(|s| s <= step))
            .collect(),
    }
}
