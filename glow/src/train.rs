//! One training step and evaluation over a dataset, independent of where batches come
//! from and of how progress is shown.
//!
//! A step: preprocess the batch's bytes with fresh dequantisation noise (seeded by
//! `(seed, step)`, so a resumed run draws the same noise), compute the loss, back-propagate,
//! and apply the optimiser. A loss or gradient that is not finite skips the update
//! ([`StepOutcome::Skipped`]), so the parameters stay at their last good values and the
//! caller can go on, roll back or stop ([`crate::run`] does all three). The first batch
//! also initialises every ActNorm from data.
//!
//! In a data-parallel run ([`Trainer::collective`] of more than one rank), every rank is
//! given the same global batch and works on its own shard of it; the gradients and the
//! loss are averaged over the ranks before the update ([`crate::parallel`]).

use std::sync::Arc;

use engine::{no_grad, Error, Result, Tensor};

use crate::parallel::{self, Collective, Solo};

use crate::model::Glow;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::preprocess::Dequantization;

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The 1-based step number just taken.
    pub step: u64,
    /// The optimised loss (bits/dim, plus the weighted classification loss if any).
    pub loss: f32,
    /// Mean bits/dim of the batch.
    pub bpd: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Seconds this rank spent in the step's gradient all-reduce, waiting for the other
    /// ranks included (0 outside a data-parallel run).
    pub allreduce_s: f64,
}

/// A model with its optimiser and step counter.
pub struct Trainer {
    /// The model being trained.
    pub model: Glow,
    /// Its optimiser (moments and step count).
    pub optimizer: Optimizer,
    /// Seed of the dequantisation noise.
    pub seed: u64,
    /// Steps taken.
    pub step: u64,
    /// The ranks this trainer shares its steps with ([`Solo`] for one process).
    pub collective: Arc<dyn Collective>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.model)
            .field("optimizer", &self.optimizer)
            .field("seed", &self.seed)
            .field("step", &self.step)
            .field(
                "collective",
                &format_args!(
                    "rank {} of {}",
                    self.collective.rank(),
                    self.collective.size()
                ),
            )
            .finish()
    }
}

impl Trainer {
    /// A trainer at step 0.
    pub fn new(model: Glow, optimizer: OptimizerConfig, seed: u64) -> Trainer {
        Trainer {
            model,
            optimizer: Optimizer::new(optimizer),
            seed,
            step: 0,
            collective: Arc::new(Solo),
        }
    }

    /// This trainer as one rank of a data-parallel run over `collective`.
    pub fn with_collective(mut self, collective: Arc<dyn Collective>) -> Trainer {
        self.collective = collective;
        self
    }

    /// This rank's shard of a global batch and its model input, dequantised with the
    /// noise of `seed` for the whole batch: `(input, labels of the shard)`.
    fn shard_input<'a>(
        &self,
        pixels: &[u8],
        labels: &'a [usize],
        seed: u64,
    ) -> Result<(Tensor, &'a [usize])> {
        let total = labels.len();
        let per_image = self.model.check_pixels(pixels, total)?;
        let (first, count) =
            parallel::shard(total, self.collective.rank(), self.collective.size())?;
        // One process takes the whole batch: the same noise as `Uniform(seed)`.
        let dequant = Dequantization::UniformRows { seed, first, total };
        let x = self.model.preprocess(
            &pixels[first * per_image..(first + count) * per_image],
            count,
            dequant,
        )?;
        Ok((x, &labels[first..first + count]))
    }

    /// The labels the model needs, if it is class-conditional.
    fn labels<'a>(&self, labels: &'a [usize]) -> Option<&'a [usize]> {
        self.model.config().y_condition.then_some(labels)
    }

    /// Initialises every ActNorm from one (global) batch (a no-op once initialised).
    pub fn initialize(&self, pixels: &[u8], labels: &[usize]) -> Result<()> {
        if self.model.is_initialized() {
            return Ok(());
        }
        let (x, labels) = self.shard_input(pixels, labels, self.seed)?;
        let _global = parallel::init_scope(self.collective.clone());
        no_grad(|| self.model.forward(&x, self.labels(labels)))?;
        Ok(())
    }

    /// One optimisation step on a batch of `labels.len()` images (NCHW bytes), which
    /// fails if the loss or the gradient is not finite ([`Trainer::try_step`] reports
    /// that as an outcome instead). Either way the parameters were not updated.
    pub fn step(&mut self, pixels: &[u8], labels: &[usize]) -> Result<StepStats> {
        match self.try_step(pixels, labels)? {
            StepOutcome::Updated(stats) => Ok(stats),
            StepOutcome::Skipped(skipped) => Err(Error::invalid(
                "train step",
                format!(
                    "{} at step {}; parameters were not updated",
                    skipped.why, skipped.step
                ),
            )),
        }
    }

    /// One optimisation step on a batch of `labels.len()` images (NCHW bytes), or, when
    /// the loss or the gradient norm is not finite, none: the batch is used up (the step
    /// counter advances, so the next call takes the next batch) but the parameters and
    /// the optimiser are left as they were. In a data-parallel run every rank passes the
    /// same global batch and computes on its shard.
    pub fn try_step(&mut self, pixels: &[u8], labels: &[usize]) -> Result<StepOutcome> {
        self.initialize(pixels, labels)?;
        let noise = engine::random::hash(self.seed, self.step as u32) as u64 | (self.step << 32);
        let (x, labels) = self.shard_input(pixels, labels, noise)?;
        let (loss, bpd) = self.model.loss(&x, self.labels(labels))?;
        let params = self.model.trainable_params();
        let mut allreduce_s = 0.0;
        let (grads, loss_value, bpd_value, grad_norm) = if self.collective.size() > 1 {
            let (grads, loss, bpd, norm, seconds) = self.parallel_backward(&params, &loss, &bpd)?;
            allreduce_s = seconds;
            (grads, loss, bpd, norm)
        } else {
            // Back-propagate before reading anything, and read the loss, the bits/dim and
            // the squared gradient norm back together: the step's one host wait (on a GPU
            // every read-back stalls the queue). A non-finite loss has been
            // back-propagated for nothing then, but nothing is updated.
            let grads = loss.backward()?;
            let sq = self.optimizer.grad_sq_norm(&params, &grads)?;
            let values = no_grad(|| -> Result<Vec<f32>> {
                let mut parts = vec![loss.reshape(&[1])?, bpd.reshape(&[1])?];
                parts.extend(sq.map(|s| s.reshape(&[1])).transpose()?);
                Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)?.to_vec()
            })?;
            let grad_norm = values.get(2).map_or(0.0, |s| s.sqrt());
            (grads, values[0], values[1], grad_norm)
        };
        self.step += 1;
        let step = self.step;
        let skip = |why| Ok(StepOutcome::Skipped(SkippedStep { step, why }));
        if !loss_value.is_finite() {
            return skip(SkipReason::Loss(loss_value));
        }
        if !grad_norm.is_finite() {
            return skip(SkipReason::GradNorm(grad_norm));
        }
        let info = self.optimizer.update(&params, &grads, grad_norm)?;
        Ok(StepOutcome::Updated(StepStats {
            step,
            loss: loss_value,
            bpd: bpd_value,
            lr: info.lr,
            grad_norm: info.grad_norm,
            allreduce_s,
        }))
    }

    /// [`Trainer::try_step`]'s backward pass in a data-parallel run: back-propagate this
    /// rank's loss, then average the gradients, the loss and the bits/dim over the ranks
    /// in one all-reduce. Returns the averaged gradients, loss, bits/dim and gradient
    /// norm, which every rank shares, and the seconds the all-reduce took (the copies
    /// to and from its host buffer included).
    fn parallel_backward(
        &self,
        params: &[&crate::param::Param],
        loss: &Tensor,
        bpd: &Tensor,
    ) -> Result<(engine::Gradients, f32, f32, f32, f64)> {
        let mut grads = loss.backward()?;
        let local =
            no_grad(|| Tensor::concat(&[&loss.reshape(&[1])?, &bpd.reshape(&[1])?], 0)?.to_vec())?;
        let started = std::time::Instant::now();
        let averaged =
            parallel::average_gradients(self.collective.as_ref(), params, &mut grads, &local)?;
        let seconds = started.elapsed().as_secs_f64();
        let grad_norm = match self.optimizer.grad_sq_norm(params, &grads)? {
            Some(sq) => sq.item()?.sqrt(),
            None => 0.0,
        };
        Ok((grads, averaged[0], averaged[1], grad_norm, seconds))
    }
}

/// What [`Trainer::try_step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepOutcome {
    /// The parameters were updated.
    Updated(StepStats),
    /// Something was not finite; nothing was updated.
    Skipped(SkippedStep),
}

/// A step that used up its batch without updating anything.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkippedStep {
    /// The 1-based step number of the batch.
    pub step: u64,
    /// What was not finite.
    pub why: SkipReason,
}

/// Why a step was skipped: what was not finite (not to be confused with
/// `engine::anomaly::NonFinite`, the op that made a NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SkipReason {
    /// The loss (its gradient is not used).
    Loss(f32),
    /// The global gradient norm (some gradient holds a NaN or an infinity, or the sum of
    /// their squares overflows).
    GradNorm(f32),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Loss(v) => write!(f, "the loss is {v}"),
            SkipReason::GradNorm(v) => write!(f, "the gradient norm is {v}"),
        }
    }
}

/// Bits/dim of every image of a dataset.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean over all images.
    pub mean_bpd: f64,
    /// One value per image, in dataset order.
    pub per_image: Vec<f32>,
}

/// Evaluates `model` over `batches` of `(first_index, pixels, labels)` with reproducible
/// dequantisation: per-image noise from `seed` ([`Dequantization::PerImage`]), or the bin
/// midpoints when `midpoint` is set.
pub fn evaluate(
    model: &Glow,
    batches: impl IntoIterator<Item = (u64, Vec<u8>, Vec<usize>)>,
    seed: u64,
    midpoint: bool,
    mut progress: impl FnMut(usize),
) -> Result<Evaluation> {
    let mut per_image = Vec::new();
    no_grad(|| -> Result<()> {
        for (first_index, pixels, labels) in batches {
            let dequant = if midpoint {
                Dequantization::Midpoint
            } else {
                Dequantization::PerImage { seed, first_index }
            };
            let x = model.preprocess(&pixels, labels.len(), dequant)?;
            let y = model.config().y_condition.then_some(labels.as_slice());
            let bpd: Tensor = model.bits_per_dim(&x, y)?;
            per_image.extend(bpd.to_vec()?);
            progress(per_image.len());
        }
        Ok(())
    })?;
    if per_image.is_empty() {
        return Err(Error::invalid("evaluate", "the evaluation set is empty"));
    }
    let mean_bpd = per_image.iter().map(|&v| f64::from(v)).sum::<f64>() / per_image.len() as f64;
    Ok(Evaluation {
        mean_bpd,
        per_image,
    })
}

/// The images and labels of training step `step` (0-based): each epoch is `n / batch` full
/// batches taken in the order [`crate::data::epoch_order`]`(seed, epoch, n)`, the last
/// partial batch skipped. A pure function of its arguments, so a resumed run sees the
/// same batches as an uninterrupted one.
pub fn batch_for_step(
    dataset: &crate::data::Dataset,
    batch: usize,
    seed: u64,
    step: u64,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let n = dataset.len();
    if batch == 0 || n < batch {
        return Err(Error::invalid(
            "batch_for_step",
            format!("a batch of {batch} needs at least {batch} training images, the split has {n}"),
        ));
    }
    let per_epoch = (n / batch) as u64;
    let (epoch, k) = (step / per_epoch, (step % per_epoch) as usize);
    let order = crate::data::epoch_order(seed, epoch, n);
    Ok(dataset.batch(&order[k * batch..(k + 1) * batch]))
}
