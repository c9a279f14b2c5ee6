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
    /// The classifier's mean cross-entropy in bits and its accuracy on the batch (a
    /// fraction in `[0, 1]`), for a class-conditional model.
    pub class: Option<ClassStats>,
    /// Seconds this rank spent in the step's gradient all-reduce, waiting for the other
    /// ranks included (0 outside a data-parallel run).
    pub allreduce_s: f64,
}

/// How a class-conditional model's classifier did on a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassStats {
    /// Mean cross-entropy with the labels, in bits (what `y_weight` multiplies in the
    /// loss).
    pub loss_bits: f32,
    /// The fraction of images whose largest logit is their label's.
    pub accuracy: f32,
}

/// The fraction of rows of `logits` (`[B, classes]` row-major) whose largest entry is at
/// `labels[row]` (the first of equal largest ones counts).
pub fn accuracy(logits: &[f32], labels: &[usize]) -> f32 {
    if labels.is_empty() {
        return 0.0;
    }
    let classes = logits.len() / labels.len();
    let hits = logits
        .chunks_exact(classes.max(1))
        .zip(labels)
        .filter(|(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
            best == label
        })
        .count();
    hits as f32 / labels.len() as f32
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
        let terms = self.model.loss_terms(&x, self.labels(labels))?;
        let params = self.model.trainable_params();
        let mut allreduce_s = 0.0;
        let (grads, loss_value, bpd_value, grad_norm, class) = if self.collective.size() > 1 {
            let (grads, values, norm, seconds) = self.parallel_backward(&params, &terms, labels)?;
            allreduce_s = seconds;
            let class = terms.class_bits.as_ref().map(|_| ClassStats {
                loss_bits: values[2],
                accuracy: values[3],
            });
            (grads, values[0], values[1], norm, class)
        } else {
            // Back-propagate before reading anything, and read the loss, the bits/dim,
            // the squared gradient norm and the class outputs back together: the step's
            // one host wait (on a GPU every read-back stalls the queue). A non-finite
            // loss has been back-propagated for nothing then, but nothing is updated.
            let grads = terms.total.backward()?;
            let sq = self.optimizer.grad_sq_norm(&params, &grads)?;
            let has_sq = sq.is_some();
            let values = no_grad(|| -> Result<Vec<f32>> {
                let mut parts = vec![terms.total.reshape(&[1])?, terms.bpd.reshape(&[1])?];
                parts.extend(sq.map(|s| s.reshape(&[1])).transpose()?);
                parts.extend(class_outputs(&terms)?);
                Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)?.to_vec()
            })?;
            let (grad_norm, rest) = if has_sq {
                (values[2].sqrt(), &values[3..])
            } else {
                (0.0, &values[2..])
            };
            let class = terms.class_bits.as_ref().map(|_| ClassStats {
                loss_bits: rest[0],
                accuracy: accuracy(&rest[1..], labels),
            });
            (grads, values[0], values[1], grad_norm, class)
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
            class,
            allreduce_s,
        }))
    }

    /// [`Trainer::try_step`]'s backward pass in a data-parallel run: back-propagate this
    /// rank's loss, then average the gradients and the step's figures over the ranks in
    /// one all-reduce. Returns the averaged gradients; the averaged loss, bits/dim and,
    /// for a class-conditional model, class loss in bits and accuracy (the shards are
    /// equal, so the mean of their accuracies is the batch's); the gradient norm, which
    /// every rank shares; and the seconds the all-reduce took (the copies to and from
    /// its host buffer included).
    fn parallel_backward(
        &self,
        params: &[&crate::param::Param],
        terms: &crate::model::Loss,
        labels: &[usize],
    ) -> Result<(engine::Gradients, Vec<f32>, f32, f64)> {
        let mut grads = terms.total.backward()?;
        let read = no_grad(|| -> Result<Vec<f32>> {
            let mut parts = vec![terms.total.reshape(&[1])?, terms.bpd.reshape(&[1])?];
            parts.extend(class_outputs(terms)?);
            Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)?.to_vec()
        })?;
        let mut local = read[..2].to_vec();
        if terms.class_bits.is_some() {
            local.push(read[2]);
            local.push(accuracy(&read[3..], labels));
        }
        let started = std::time::Instant::now();
        let averaged =
            parallel::average_gradients(self.collective.as_ref(), params, &mut grads, &local)?;
        let seconds = started.elapsed().as_secs_f64();
        let grad_norm = match self.optimizer.grad_sq_norm(params, &grads)? {
            Some(sq) => sq.item()?.sqrt(),
            None => 0.0,
        };
        Ok((grads, averaged, grad_norm, seconds))
    }
}

/// The classifier's outputs to read back with a step's figures, flat: its loss in bits
/// (one value), then its logits (`[B · classes]`); none for an unconditional model.
fn class_outputs(terms: &crate::model::Loss) -> Result<Vec<Tensor>> {
    match (&terms.class_bits, &terms.y_logits) {
        (Some(bits), Some(logits)) => Ok(vec![
            bits.reshape(&[1])?,
            logits.reshape(&[logits.numel()])?,
        ]),
        _ => Ok(Vec::new()),
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

impl Evaluation {
    /// The evaluation of these per-image figures: their mean, or an error for none.
    fn of(per_image: Vec<f32>) -> Result<Evaluation> {
        if per_image.is_empty() {
            return Err(Error::invalid("evaluate", "the evaluation set is empty"));
        }
        let sum: f64 = per_image.iter().map(|&v| f64::from(v)).sum();
        Ok(Evaluation {
            mean_bpd: sum / per_image.len() as f64,
            per_image,
        })
    }
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
    Evaluation::of(per_image)
}

/// The seed of dequantisation draw `draw` of [`evaluate_iw`]: draw 0 is `seed` itself, so
/// one draw is [`evaluate`]'s noise; the others are spread by the data module's
/// SplitMix64 mix.
fn draw_seed(seed: u64, draw: usize) -> u64 {
    match draw {
        0 => seed,
        k => crate::data::mix(seed, k as u64 - 1),
    }
}

/// [`evaluate`] with the importance-weighted bound over `draws` dequantisation draws
/// (Hoogeboom et al. 2020, "Learning Discrete Distributions by Dequantization"): per
/// image, `log P(x) ≥ log (1/K) Σ_k p(x + u_k)` with `u_k` uniform in the pixel's bin (the
/// bin's volume is the `−D log n_bins` term of [`Glow::log_prob`]), a bound that tightens
/// as `K` grows (on average; it is the usual bound at `K = 1`). Draw `k` is per-image
/// noise of seed `seed` for `k = 0` (so `draws = 1` is [`evaluate`]'s number exactly) and
/// of a seed derived from it otherwise. `draws` forward passes per batch.
pub fn evaluate_iw(
    model: &Glow,
    batches: impl IntoIterator<Item = (u64, Vec<u8>, Vec<usize>)>,
    seed: u64,
    draws: usize,
    progress: impl FnMut(usize),
) -> Result<Evaluation> {
    if draws <= 1 {
        return evaluate(model, batches, seed, false, progress);
    }
    importance_weighted(model, batches, seed, draws, progress)
}

/// [`evaluate_iw`]'s bound for any number of draws, computed on the host in f64 from each
/// draw's `log p` (one draw gives [`evaluate`]'s figures up to f32 rounding).
fn importance_weighted(
    model: &Glow,
    batches: impl IntoIterator<Item = (u64, Vec<u8>, Vec<usize>)>,
    seed: u64,
    draws: usize,
    mut progress: impl FnMut(usize),
) -> Result<Evaluation> {
    let d = model.config().dims() as f64;
    let mut per_image = Vec::new();
    no_grad(|| -> Result<()> {
        for (first_index, pixels, labels) in batches {
            let y = model.config().y_condition.then_some(labels.as_slice());
            let mut log_p: Vec<Vec<f32>> = Vec::with_capacity(draws);
            for k in 0..draws {
                let dequant = Dequantization::PerImage {
                    seed: draw_seed(seed, k),
                    first_index,
                };
                let x = model.preprocess(&pixels, labels.len(), dequant)?;
                log_p.push(model.log_prob(&x, y)?.to_vec()?);
            }
            for i in 0..labels.len() {
                // log (1/K) Σ exp(l_k), computed about the largest term.
                let top = log_p
                    .iter()
                    .map(|l| f64::from(l[i]))
                    .fold(f64::MIN, f64::max);
                let sum: f64 = log_p.iter().map(|l| (f64::from(l[i]) - top).exp()).sum();
                let bound = top + sum.ln() - (draws as f64).ln();
                per_image.push((-bound / (d * std::f64::consts::LN_2)) as f32);
            }
            progress(per_image.len());
        }
        Ok(())
    })?;
    Evaluation::of(per_image)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimizerConfig;
    use crate::GlowConfig;
    use engine::Device;

    #[test]
    fn accuracy_counts_the_rows_whose_largest_logit_is_the_label() {
        let logits = [
            0.1, 0.9, 0.0, /**/ 2.0, 1.0, 3.0, /**/ 5.0, 5.0, 1.0,
        ];
        // Row 0 says 1 (right), row 1 says 2 (wrong), row 2 ties 0 and 1: the first, 0.
        assert_eq!(accuracy(&logits, &[1, 0, 0]), 2.0 / 3.0);
        assert_eq!(accuracy(&logits, &[1, 2, 1]), 2.0 / 3.0);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn a_class_conditional_step_reports_the_class_loss_and_accuracy() {
        let cfg = GlowConfig {
            image_shape: [3, 8, 8],
            levels: 2,
            depth: 1,
            hidden: 8,
            y_condition: true,
            num_classes: 4,
            y_weight: 0.5,
            ..GlowConfig::default()
        };
        let model = Glow::new(cfg, &Device::Cpu).unwrap();
        let mut trainer = Trainer::new(model, OptimizerConfig::default(), 1);
        let pixels: Vec<u8> = (0..4 * 192).map(|i| (i * 37 % 256) as u8).collect();
        let labels = [0, 1, 2, 3];
        let stats = trainer.step(&pixels, &labels).unwrap();
        let class = stats
            .class
            .expect("class stats for a class-conditional model");
        assert!((0.0..=1.0).contains(&class.accuracy), "{class:?}");
        // The loss is the bits/dim plus y_weight times the class loss in bits.
        let want = stats.bpd + 0.5 * class.loss_bits;
        assert!((stats.loss - want).abs() < 1e-4, "{} vs {want}", stats.loss);
        // A zero-initialised classifier gives every class the same logit: log2(4) bits.
        assert!((class.loss_bits - 2.0).abs() < 1e-4, "{class:?}");
        // An unconditional model has none.
        let plain = GlowConfig {
            y_condition: false,
            ..trainer.model.config().clone()
        };
        let mut t = Trainer::new(
            Glow::new(plain, &Device::Cpu).unwrap(),
            OptimizerConfig::default(),
            1,
        );
        assert_eq!(t.step(&pixels, &labels).unwrap().class, None);
    }

    #[test]
    fn the_importance_weighted_bound_tightens_with_more_draws() {
        let cfg = GlowConfig {
            image_shape: [3, 8, 8],
            levels: 2,
            depth: 2,
            hidden: 16,
            n_bits: 5,
            ..GlowConfig::default()
        };
        let model = Glow::new(cfg, &Device::Cpu).unwrap();
        let n = 64;
        let pixels: Vec<u8> = (0..n * 192).map(|i| ((i * 7919) % 251) as u8).collect();
        let labels = vec![0; n];
        let batches = || vec![(0u64, pixels.clone(), labels.clone())];
        // ActNorm's data-dependent initialisation on the same images.
        let x = model
            .preprocess(&pixels, n, Dequantization::Midpoint)
            .unwrap();
        no_grad(|| model.forward(&x, None)).unwrap();
        let plain = evaluate(&model, batches(), 3, false, |_| {}).unwrap();
        let one = evaluate_iw(&model, batches(), 3, 1, |_| {}).unwrap();
        assert_eq!(one.per_image, plain.per_image, "K = 1 is the usual number");
        // The general path with one draw agrees with it, up to the f32 rounding of the
        // device's bits/dim (the host computes in f64 from f32 log-probabilities).
        let general = importance_weighted(&model, batches(), 3, 1, |_| {}).unwrap();
        for (a, b) in general.per_image.iter().zip(&plain.per_image) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
        }
        let bound = |k| {
            evaluate_iw(&model, batches(), 3, k, |_| {})
                .unwrap()
                .mean_bpd
        };
        let (b2, b8) = (bound(2), bound(8));
        // On average over the images the bound never rises with K; with 64 images the
        // decrease is far larger than the f32 rounding of the per-image values.
        assert!(
            b2 < plain.mean_bpd && b8 < b2,
            "{} {b2} {b8}",
            plain.mean_bpd
        );
    }
}
