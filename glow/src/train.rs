//! One training step and evaluation over a dataset, independent of where batches come
//! from and of how progress is shown.
//!
//! A step: preprocess the batch's bytes with fresh dequantisation noise (seeded by
//! `(seed, step)`, so a resumed run draws the same noise), compute the loss, back-propagate,
//! and apply the optimiser. A loss that is not finite stops the step before the update, so
//! the parameters stay at their last good values and the caller can roll back or stop.
//! The first batch also initialises every ActNorm from data.

use engine::{no_grad, Error, Result, Tensor};

use crate::model::{Dequantization, Glow};
use crate::optim::{Optimizer, OptimizerConfig};

/// What one step measured.
#[derive(Debug, Clone, Copy)]
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
}

/// A model with its optimiser and step counter.
#[derive(Debug)]
pub struct Trainer {
    /// The model being trained.
    pub model: Glow,
    /// Its optimiser (moments and step count).
    pub optimizer: Optimizer,
    /// Seed of the dequantisation noise.
    pub seed: u64,
    /// Steps taken.
    pub step: u64,
}

impl Trainer {
    /// A trainer at step 0.
    pub fn new(model: Glow, optimizer: OptimizerConfig, seed: u64) -> Trainer {
        Trainer {
            model,
            optimizer: Optimizer::new(optimizer),
            seed,
            step: 0,
        }
    }

    /// The labels the model needs, if it is class-conditional.
    fn labels<'a>(&self, labels: &'a [usize]) -> Option<&'a [usize]> {
        self.model.config().y_condition.then_some(labels)
    }

    /// Initialises every ActNorm from one batch (a no-op once initialised).
    pub fn initialize(&self, pixels: &[u8], labels: &[usize]) -> Result<()> {
        if self.model.is_initialized() {
            return Ok(());
        }
        let x = self
            .model
            .preprocess(pixels, labels.len(), Dequantization::Uniform(self.seed))?;
        no_grad(|| self.model.forward(&x, self.labels(labels)))?;
        Ok(())
    }

    /// One optimisation step on a batch of `labels.len()` images (NCHW bytes).
    pub fn step(&mut self, pixels: &[u8], labels: &[usize]) -> Result<StepStats> {
        self.initialize(pixels, labels)?;
        let noise = engine::random::hash(self.seed, self.step as u32) as u64 | (self.step << 32);
        let x = self
            .model
            .preprocess(pixels, labels.len(), Dequantization::Uniform(noise))?;
        let (loss, bpd) = self.model.loss(&x, self.labels(labels))?;
        let (loss_value, bpd_value) = (loss.item()?, bpd.item()?);
        if !loss_value.is_finite() {
            return Err(Error::invalid(
                "train step",
                format!(
                    "the loss is {loss_value} at step {}; parameters were not updated",
                    self.step + 1
                ),
            ));
        }
        let grads = loss.backward()?;
        let info = self
            .optimizer
            .step(&self.model.trainable_params(), &grads)?;
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            loss: loss_value,
            bpd: bpd_value,
            lr: info.lr,
            grad_norm: info.grad_norm,
        })
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
