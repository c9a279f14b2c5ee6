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
//! | [`BEST_FILE`] | the state of the best evaluation so far (lowest test bits/dim; of the moving average of the weights when the run keeps one) |
//! | [`METRICS_FILE`] | one JSON line per step, skipped step, evaluation, checkpoint, sample grid, rollback, interrupt and resume |
//! | [`LOSS_CURVE_FILE`] | train and test bits/dim, after each evaluation and at the end |
//! | [`SAMPLES_DIR`]`/step*_t*.png` | sample grids every [`RunConfig::sample_every`] steps |
//! | `events.out.tfevents.*` | with [`RunConfig::tensorboard`], the log's numbers and the sample grids for TensorBoard ([`crate::tensorboard`]) |
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
//!
//! **Where each part lives.** This file holds [`Run`]: its making, the loop, what it does
//! after a step, and rollback. The rest has a file of its own:
//!
//! | file | what |
//! |---|---|
//! | `config.rs` | [`RunConfig`], its defaults and checks |
//! | `folder.rs` | the output folder, locked by one run at a time ([`folder::RunFolder`]) |
//! | `interrupt.rs` | [`Interrupt`]: a stop requested by a signal or anyone else |
//! | `event.rs` | [`Event`], [`CheckpointReason`] and [`RunSummary`]: what the caller hears |
//! | `log.rs` | the metrics log, and cutting it back to the checkpoint on resume |
//! | `history.rs` | curves, the best evaluation and the counters, replayed from the log |
//! | `schedule.rs` | what is due after a step (evaluation, samples, checkpoint): a pure function |
//! | `ranks.rs` | every agreement between the ranks of a data-parallel run |

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use engine::{Error, Result};
use serde_json::json;

use crate::checkpoint::{resume, save_checkpoint, TrainState};
use crate::data::ImageSplits;
use crate::parallel::{Collective, Solo};
use crate::picture::save_sample_grids;
use crate::train::{batch_for_step, evaluate, StepOutcome, Trainer};

mod config;
mod event;
pub mod folder;
mod history;
mod interrupt;
mod log;
mod ranks;
mod schedule;

pub use config::{
    RunConfig, DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_MINUTES, DEFAULT_INIT_BATCH,
    DEFAULT_MAX_BAD_STEPS, DEFAULT_MAX_ROLLBACKS, DEFAULT_ROLLBACK_LR_FACTOR,
};
pub use event::{CheckpointReason, Event, RunSummary};
pub use interrupt::{Interrupt, SIGINT, SIGTERM};

use folder::{Claim, RunFolder};
use history::History;
use log::MetricsLog;
use ranks::Ranks;
use schedule::Schedule;

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

/// `folder`, checked to be the claim of `config.out` that rank `rank` needs: rank 0
/// writes and so must hold the folder; the others must not.
fn claimed(
    folder: Option<RunFolder>,
    config: &RunConfig,
    rank: usize,
) -> Result<Option<RunFolder>> {
    match (&folder, rank) {
        (Some(f), 0) if f.path() == config.out => Ok(folder),
        (Some(f), 0) => Err(Error::invalid(
            "training run",
            format!(
                "the claimed folder {} is not the run's out {}",
                f.path().display(),
                config.out.display()
            ),
        )),
        (None, 0) => Err(Error::invalid(
            "training run",
            "rank 0 writes the run and needs its claimed folder",
        )),
        (Some(_), _) => Err(Error::invalid(
            "training run",
            format!("rank {rank} does not write the run and must not hold its folder"),
        )),
        (None, _) => Ok(None),
    }
}

/// A training run in progress: the trainer and what the run has seen so far.
#[derive(Debug)]
pub struct Run {
    /// The model, optimiser and step counter being trained.
    pub trainer: Trainer,
    /// What the run does.
    pub config: RunConfig,
    /// Whether [`Run::resume`] made it.
    resumed: bool,
    /// Curves, best evaluation and counters.
    history: History,
    /// The metrics log (written by rank 0 alone).
    log: MetricsLog,
    /// The TensorBoard event file, with [`RunConfig::tensorboard`] (rank 0 alone).
    events: Option<crate::tensorboard::EventWriter>,
    /// The ranks of a data-parallel run (one, otherwise).
    ranks: Ranks,
    /// The output folder, locked for the run's life (rank 0 only).
    folder: Option<RunFolder>,
    /// Training batches per epoch of the data [`Run::run`] trains on (0 before).
    per_epoch: u64,
    /// [`crate::data::Dataset::fingerprint`] of the training split: the checkpoint's
    /// on resume (checked against the data [`Run::run`] is given), then the data's.
    data_crc32: Option<u32>,
    /// The step [`CHECKPOINT_FILE`] holds, once there is one.
    checkpoint_step: Option<u64>,
    /// The optimiser settings it holds, when the run was resumed from it (they may
    /// have been changed since, e.g. a new learning rate given on resume).
    checkpoint_optimizer: Option<crate::optim::OptimizerConfig>,
    /// When it was written (or the run made).
    checkpoint_time: Instant,
    /// Bad steps in a row.
    bad_in_a_row: u32,
    /// The step of the last rollback's checkpoint and how many rollbacks went there.
    rollback_target: Option<(u64, u32)>,
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
        let folder = if trainer.collective.rank() == 0 {
            let claim = if config.overwrite {
                Claim::Overwrite
            } else {
                Claim::Fresh
            };
            Some(RunFolder::claim(&config.out, claim)?)
        } else {
            None
        };
        Run::new_in(folder, config, trainer)
    }

    /// [`Run::new`] in a folder its caller has claimed already (rank 0; `None` on the
    /// other ranks): a program that claims first can refuse a busy folder before it
    /// builds anything, in its own words ([`folder::FolderError`]).
    pub fn new_in(folder: Option<RunFolder>, config: RunConfig, trainer: Trainer) -> Result<Run> {
        config.check()?;
        let path = config.metrics_path();
        let Some(folder) = claimed(folder, &config, trainer.collective.rank())? else {
            return Ok(Run::with(
                config,
                trainer,
                MetricsLog::silent(path),
                None,
                false,
            ));
        };
        folder::remove_stale_temporaries(&config)?;
        let log = MetricsLog::create(path)?;
        let aside = folder.moved_aside().map(|p| p.display().to_string());
        let events = config
            .tensorboard
            .then(|| crate::tensorboard::EventWriter::create(&config.out, None))
            .transpose()?;
        let mut run = Run::with(config, trainer, log, Some(folder), false);
        run.events = events;
        if let Some(aside) = aside {
            run.log(json!({"step": run.trainer.step, "moved_aside": aside}))?;
        }
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
        let folder = if collective.rank() == 0 {
            Some(RunFolder::claim(&config.out, Claim::Resume)?)
        } else {
            None
        };
        Run::resume_in(folder, config, device, collective)
    }

    /// [`Run::resume_with`] in a folder its caller has claimed already (rank 0; `None`
    /// on the other ranks), as [`Run::new_in`].
    pub fn resume_in(
        folder: Option<RunFolder>,
        config: RunConfig,
        device: &engine::Device,
        collective: Arc<dyn Collective>,
    ) -> Result<Run> {
        config.check()?;
        let folder = claimed(folder, &config, collective.rank())?;
        if folder.is_some() {
            folder::remove_stale_temporaries(&config)?;
        }
        let (model, optimizer, state) = resume(config.checkpoint_path(), device)?;
        let checkpoint_optimizer = optimizer.config;
        let trainer = Trainer {
            model,
            optimizer,
            seed: state.seed,
            step: state.step,
            collective,
        };
        let writer = folder.is_some();
        let (log, kept) = MetricsLog::resume(config.metrics_path(), state.step, writer)?;
        let events = (writer && config.tensorboard)
            .then(|| crate::tensorboard::EventWriter::create(&config.out, Some(state.step)))
            .transpose()?;
        let mut run = Run::with(config, trainer, log, folder, true);
        run.events = events;
        run.data_crc32 = state.data_crc32;
        run.checkpoint_step = Some(state.step);
        run.checkpoint_optimizer = Some(checkpoint_optimizer);
        for v in &kept {
            run.history.replay(v);
        }
        run.log(json!({"step": state.step, "resumed": CHECKPOINT_FILE}))?;
        Ok(run)
    }

    fn with(
        config: RunConfig,
        trainer: Trainer,
        log: MetricsLog,
        folder: Option<RunFolder>,
        resumed: bool,
    ) -> Run {
        Run {
            ranks: Ranks::new(trainer.collective.clone()),
            trainer,
            config,
            resumed,
            history: History::default(),
            log,
            events: None,
            folder,
            per_epoch: 0,
            data_crc32: None,
            checkpoint_step: None,
            checkpoint_optimizer: None,
            checkpoint_time: Instant::now(),
            bad_in_a_row: 0,
            rollback_target: None,
        }
    }

    /// Appends one line to the metrics log (rank 0 only), and its numbers to the
    /// TensorBoard file if there is one.
    fn log(&mut self, line: serde_json::Value) -> Result<()> {
        if let (Some(events), Some(step)) = (&mut self.events, line["step"].as_u64()) {
            let scalars = log::tensorboard_scalars(&line);
            for &(tag, value) in &scalars {
                events.scalar(step, tag, value)?;
            }
            if !scalars.is_empty() {
                events.flush()?;
            }
        }
        self.log.append(line)
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
        data: &dyn ImageSplits,
        interrupt: &Interrupt,
        on_event: impl FnMut(&Event),
    ) -> Result<RunSummary> {
        let result = self.run_steps(data, interrupt, on_event);
        if let Err(e) = &result {
            self.ranks.abort_on_error(e);
        }
        result
    }

    /// Fails unless `data` holds images of the model's shape, can feed this run's
    /// batches and is the data its checkpoint was trained on; then takes its batches per
    /// epoch and fingerprint.
    fn take_data(&mut self, data: &dyn ImageSplits) -> Result<()> {
        let want = self.trainer.model.config().image_shape;
        for (split, set) in [("training", data.train()), ("test", data.test())] {
            if set.shape != want {
                return Err(Error::invalid(
                    "training run",
                    format!(
                        "the model takes {want:?} images and the {split} split holds {:?} ones",
                        set.shape
                    ),
                ));
            }
        }
        if self.config.sample_every > 0 && ![1, 3].contains(&want[0]) {
            return Err(Error::invalid(
                "training run",
                format!(
                    "sample grids need images of 1 or 3 channels, the model's have {} \
                     (set sample_every to 0)",
                    want[0]
                ),
            ));
        }
        let batch = self.config.batch;
        let n = data.train().len();
        if n < batch {
            return Err(Error::invalid(
                "training run",
                format!("a batch of {batch} needs at least that many training images (have {n})"),
            ));
        }
        if let Some(init) = self.config.init_batch.filter(|&init| init > n) {
            return Err(Error::invalid(
                "training run",
                format!(
                    "an init_batch of {init} needs at least that many training images (have {n})"
                ),
            ));
        }
        let crc = data.train().fingerprint();
        if let Some(had) = self.data_crc32.filter(|&had| had != crc) {
            return Err(Error::invalid(
                "training run",
                format!(
                    "the checkpoint was trained on other images (training split CRC-32 \
                     {had:08x}, this data's is {crc:08x}); resume with the same data"
                ),
            ));
        }
        self.per_epoch = (n / batch) as u64;
        self.data_crc32 = Some(crc);
        Ok(())
    }

    /// [`Run::run`]'s loop.
    fn run_steps(
        &mut self,
        data: &dyn ImageSplits,
        interrupt: &Interrupt,
        mut on_event: impl FnMut(&Event),
    ) -> Result<RunSummary> {
        self.config.check()?;
        self.take_data(data)?;
        let batch = self.config.batch;
        let mut images = 0usize;
        on_event(&Event::Started {
            step: self.trainer.step,
            total: self.config.steps,
            resumed: self.resumed,
        });
        if let Some(n) = self.config.init_batch {
            if !self.trainer.model.is_initialized() {
                // Before the first checkpoint, which then holds the initialised ActNorms.
                let (pixels, labels) = batch_for_step(data.train(), n, self.trainer.seed, 0)?;
                self.trainer.initialize(&pixels, &labels)?;
            }
        }
        if self.checkpoint_step.is_none() {
            self.save(CheckpointReason::Start, &mut on_event)?;
        }
        // Throughput counts the steps (and what they bring: evaluations, samples,
        // checkpoints), not the initialisation and first checkpoint before them.
        let started = Instant::now();
        let rate = |images: usize| images as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let mut interrupted = None;
        // Agreed by every rank once before the first step and once after each step.
        let mut stop = self.ranks.agree_stop(interrupt.requested())?;
        while self.trainer.step < self.config.steps {
            if self.ranks.size() == 1 {
                // One process needs no agreement: a request made during the last
                // step's evaluation or checkpoint stops the run before the next step.
                stop = stop.or(interrupt.requested());
            }
            if let Some(signal) = stop {
                self.stop(signal, &mut on_event)?;
                interrupted = Some(signal);
                break;
            }
            let step = self.trainer.step;
            let (mut pixels, labels) =
                batch_for_step(data.train(), batch, self.trainer.seed, step)?;
            self.config.augmentation.apply(
                &mut pixels,
                data.image_shape(),
                self.trainer.seed,
                step,
            )?;
            let mut rolled_back = false;
            match self.trainer.try_step(&pixels, &labels)? {
                StepOutcome::Updated(stats) => {
                    images += labels.len();
                    self.bad_in_a_row = 0;
                    self.history.record_step(stats.step, f64::from(stats.bpd));
                    let images_per_sec = rate(images);
                    let mut line = json!({
                        "step": stats.step, "loss": stats.loss, "bpd": stats.bpd,
                        "lr": stats.lr, "grad_norm": stats.grad_norm,
                        "images_per_sec": images_per_sec,
                    });
                    if let Some(class) = stats.class {
                        line["class_loss_bits"] = json!(class.loss_bits);
                        line["class_accuracy"] = json!(class.accuracy);
                    }
                    if self.ranks.size() > 1 {
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
                    self.history.skipped_steps += 1;
                    self.log(json!({
                        "step": skipped.step, "skipped": true,
                        "reason": skipped.why.to_string(), "in_a_row": self.bad_in_a_row,
                    }))?;
                    on_event(&Event::Skipped {
                        skipped,
                        in_a_row: self.bad_in_a_row,
                    });
                    if self.bad_in_a_row >= self.config.max_bad_steps {
                        self.roll_back(&mut on_event)?;
                        rolled_back = true;
                    }
                }
            }
            stop = self.ranks.agree_stop(interrupt.requested())?;
            if !rolled_back {
                self.after_step(data, stop.is_some(), &mut on_event)?;
            }
        }
        if self.ranks.writer() {
            self.history
                .save_loss_curve(&self.config.out.join(LOSS_CURVE_FILE))?;
        }
        self.ranks.check_replicas(&self.trainer.model)?;
        Ok(RunSummary {
            step: self.trainer.step,
            checkpoint_step: self.checkpoint_step.unwrap_or(0),
            train_bpd: self.history.recent_train_bpd(),
            test_bpd: self.history.last_test().map(|t| t.0),
            test_bpd_ema: self.history.last_test().and_then(|t| t.1),
            best_test_bpd: self.history.best_test_bpd,
            images_per_sec: rate(images),
            skipped_steps: self.history.skipped_steps,
            rollbacks: self.history.rollbacks,
            interrupted,
            ranks: self.ranks.size(),
        })
    }

    /// Evaluation, sample grids and checkpoint, when due after the step just taken
    /// ([`Schedule::after_step`]); while a stop is pending (`stopping`, agreed by every
    /// rank) none of them but at the last step.
    fn after_step(
        &mut self,
        data: &dyn ImageSplits,
        stopping: bool,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<()> {
        let step = self.trainer.step;
        let schedule = Schedule::of(&self.config);
        let bad = self.bad_in_a_row > 0;
        let due = schedule.after_step(step, self.checkpoint_time.elapsed(), stopping, bad);
        if due.check_replicas && self.ranks.size() > 1 {
            // Ranks that drifted apart are caught at the next checkpoint step, not only
            // at the end of the run (every rank takes this branch at the same steps).
            self.ranks.check_replicas(&self.trainer.model)?;
        }
        // Everything the run does at a step comes before that step's checkpoint, so a
        // resume from it neither repeats nor loses any of it.
        // The moving average's model, when the run keeps one, built once for both.
        let averaged = if (due.evaluate || due.samples) && self.ranks.writer() {
            self.trainer.optimizer.averaged_model(&self.trainer.model)?
        } else {
            None
        };
        if due.evaluate && self.ranks.writer() {
            self.evaluate(data, averaged.as_ref(), on_event)?;
        }
        if due.samples && self.ranks.writer() {
            let dir = self.config.out.join(SAMPLES_DIR);
            let prefix = format!("step{step:06}");
            let n = self.config.sample_images;
            // The moving average's samples when the run keeps one: the weights it exports.
            let model = averaged.as_ref().unwrap_or(&self.trainer.model);
            let paths = save_sample_grids(model, &dir, &prefix, n, 0)?;
            if let (Some(events), Some(overview)) = (&mut self.events, paths.last()) {
                let png = std::fs::read(overview)
                    .map_err(|e| Error::io(overview, format!("cannot read it back: {e}")))?;
                // A PNG's width and height are big-endian at bytes 16..24 (its IHDR).
                let size = |at: usize| {
                    png.get(at..at + 4)
                        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                };
                events.image(step, "samples", &png, size(16), size(20))?;
                events.flush()?;
            }
            self.log(json!({"step": step, "samples": format!("{SAMPLES_DIR}/{prefix}_*.png")}))?;
            on_event(&Event::Samples { step, paths });
        }
        // The clock again: an evaluation may have taken long enough to make the
        // checkpoint's interval due.
        let checkpoint = schedule
            .after_step(step, self.checkpoint_time.elapsed(), stopping, bad)
            .checkpoint;
        if let Some(reason) = checkpoint {
            self.save(reason, on_event)?;
        }
        Ok(())
    }

    /// Evaluates on the test split, the weights and, when the run keeps one, their moving
    /// average (`averaged`, which then judges the best); a new best is written to [`BEST_FILE`].
    fn evaluate(
        &mut self,
        data: &dyn ImageSplits,
        averaged: Option<&crate::Glow>,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<()> {
        let step = self.trainer.step;
        let eval_batch = self.config.eval_batch;
        let test_bpd_of = |model: &crate::Glow| -> Result<f64> {
            let batches = data.test().sequential_batches(eval_batch);
            Ok(evaluate(model, batches, 0, false, |_| {})?.mean_bpd)
        };
        let test_bpd = test_bpd_of(&self.trainer.model)?;
        let test_bpd_ema = averaged.map(test_bpd_of).transpose()?;
        let previous = self.history.last_evaluation().map_or(0, |e| e.0);
        let train_bpd = self.history.train_bpd_after(previous);
        let best = self.history.record_evaluation(step, test_bpd, test_bpd_ema);
        if best {
            let path = self.config.best_path();
            save_checkpoint(
                &path,
                &self.trainer.model,
                &self.trainer.optimizer,
                &self.train_state(),
            )?;
        }
        let mut line =
            json!({"step": step, "train_bpd": train_bpd, "test_bpd": test_bpd, "best": best});
        if let Some(ema) = test_bpd_ema {
            line["test_bpd_ema"] = json!(ema);
        }
        self.log(line)?;
        on_event(&Event::Evaluated {
            step,
            train_bpd,
            test_bpd,
            test_bpd_ema,
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
        self.history
            .save_loss_curve(&self.config.out.join(LOSS_CURVE_FILE))
    }

    /// Where training stands, for a checkpoint (after [`Run::run`] took its data).
    fn train_state(&self) -> TrainState {
        let step = self.trainer.step;
        TrainState {
            seed: self.trainer.seed,
            step,
            epoch: step / self.per_epoch,
            position_in_epoch: (step % self.per_epoch) * self.config.batch as u64,
            data_crc32: self.data_crc32,
        }
    }

    /// Writes [`CHECKPOINT_FILE`], then the log line that records it (the mark
    /// [`Run::resume`] cuts the log at).
    fn save(&mut self, reason: CheckpointReason, on_event: &mut impl FnMut(&Event)) -> Result<()> {
        let path = self.config.checkpoint_path();
        let state = self.train_state();
        if self.ranks.writer() {
            save_checkpoint(&path, &self.trainer.model, &self.trainer.optimizer, &state)?;
        }
        self.checkpoint_step = Some(state.step);
        self.checkpoint_optimizer = Some(self.trainer.optimizer.config);
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
    /// one stays) or the checkpoint already holds this state (its step and optimiser
    /// settings), the log line and the event.
    fn stop(&mut self, signal: i32, on_event: &mut impl FnMut(&Event)) -> Result<()> {
        let step = self.trainer.step;
        self.log(json!({"step": step, "interrupted": signal}))?;
        let held = self.checkpoint_step == Some(step)
            && self.checkpoint_optimizer == Some(self.trainer.optimizer.config);
        if self.bad_in_a_row == 0 && !held {
            self.save(CheckpointReason::Interrupted, on_event)?;
        }
        // No rank exits before rank 0 has written the checkpoint: `mpirun` ends the
        // whole job when the first rank exits with a signal's status.
        self.ranks.barrier()?;
        on_event(&Event::Interrupted {
            step,
            signal,
            checkpoint_step: self.checkpoint_step.unwrap_or(0),
        });
        Ok(())
    }

    /// Goes back to [`CHECKPOINT_FILE`] with a lower learning rate, and checkpoints that.
    fn roll_back(&mut self, on_event: &mut impl FnMut(&Event)) -> Result<()> {
        let from_step = self.trainer.step;
        let path = self.config.checkpoint_path();
        let device = self.trainer.model.device().clone();
        let (model, mut optimizer, state) = resume(&path, &device)?;
        // Every rank has read the checkpoint before rank 0 replaces it below.
        self.ranks.barrier()?;
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
        // The settings in force (a resume may have changed them since the checkpoint was
        // written) with the lowered learning rate; the moments and averages are the
        // checkpoint's.
        optimizer.config = crate::optim::OptimizerConfig {
            lr,
            ..self.trainer.optimizer.config
        };
        if optimizer.config.ema_decay.is_none() {
            optimizer.averages.clear();
        }
        self.trainer = Trainer {
            model,
            optimizer,
            seed: state.seed,
            step: state.step,
            collective: self.trainer.collective.clone(),
        };
        self.bad_in_a_row = 0;
        self.history.rollbacks += 1;
        self.history.forget_after(state.step);
        if let Some(events) = &mut self.events {
            // The steps after the checkpoint run again: TensorBoard forgets the first go.
            events.restart(state.step)?;
        }
        self.log(json!({
            "step": state.step, "rollback": true, "from_step": from_step, "lr": lr,
            "reason": format!("{} non-finite steps in a row", self.config.max_bad_steps),
        }))?;
        on_event(&Event::RolledBack {
            from_step,
            to_step: state.step,
            lr,
        });
        self.save(CheckpointReason::Rollback, on_event)
    }
}
