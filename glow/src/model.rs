//! The multi-scale Glow model: levels of squeeze → K flow steps → split, a top prior,
//! optional class conditioning, the bits/dim objective, encoding, decoding and sampling.
//!
//! For level `i = 1..L`: squeeze, then `K` steps of ActNorm → channel mixing → coupling,
//! then (except after the last level) a split whose `z2` is scored by a learned prior and
//! kept as a latent. The remaining `z` is scored by the top prior. Per image,
//!
//! `log p(x) = Σ log p(latents) + Σ log|det J| − D · log n_bins`, and
//! `bits/dim = −log p(x) / (D · ln 2)`,
//!
//! where the last term accounts for the dequantisation of `x` (see [`Glow::preprocess`]).
//! State names follow the common PyTorch port: `flow.layers.{i}` counts squeezes, steps
//! and splits in order, e.g. `flow.layers.1.actnorm.bias` is the first step's ActNorm.
//! Each step and split runs in the [`engine::anomaly::scope`] of its name, so with
//! anomaly detection on, an op that makes a NaN is reported as e.g. `in flow.layers.17`;
//! so do the priors' heads (`learn_top_fn`, `project_ycond`, `project_class`).
//!
//! The whole flow (every squeeze, step and split of every level) is one
//! [`engine::invertible::Chain`] of blocks in both memory modes, so a layer is written
//! once: [`Memory::Stored`] runs the chain as ordinary ops that keep every activation
//! ([`Chain::run_stored`](engine::invertible::Chain::run_stored)); with
//! [`Memory::Reversible`] it runs as one op whose backward pass rebuilds every block's
//! input from its output instead of keeping it. Each split is a
//! [`engine::invertible::Factor`]: its `z2` leaves the chain as a latent, and the chain's
//! backward rebuilds the split's input as `z1 ‖ z2`. What stays alive for the backward
//! pass is the input, the latents (together the size of the input) and one block's local
//! graph at a time, so activation memory grows with neither `K` nor `L`.

use std::sync::Arc;

use engine::backend::fused::Pairing;
use engine::invertible::{Block, Chain, Factor, Invertible, Rebuilt};
use engine::{anomaly, no_grad, Device, Error, Result, Tensor};

use crate::config::{GlowConfig, Memory, Permutation};
use crate::gaussian;
use crate::layers::conv::{LinearZeros, ZeroConv2d};
use crate::layers::coupling::CouplingLayer;
use crate::layers::permute::{FixedPermutation, InvConv};
use crate::layers::split::Split;
use crate::layers::squeeze::{squeeze, unsqueeze};
use crate::layers::{channels, dims4, ActNorm, Flow, Module};
use crate::param::{ModelState, Param, StateTensor};

/// One flow step: ActNorm → channel mixing → coupling.
#[derive(Debug)]
pub struct FlowStep {
    /// `flow.layers.{i}`: the prefix of its state names, and its anomaly scope.
    name: String,
    actnorm: ActNorm,
    mix: Mixing,
    coupling: CouplingLayer,
}

/// The channel mixing of a step.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per flow step; boxing would only add a hop
enum Mixing {
    Conv(InvConv),
    Fixed(FixedPermutation),
}

impl Mixing {
    fn as_flow(&self) -> &dyn Flow {
        match self {
            Mixing::Conv(c) => c,
            Mixing::Fixed(p) => p,
        }
    }
}

impl FlowStep {
    fn new(
        prefix: &str,
        channels: usize,
        cfg: &GlowConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mix = match cfg.permutation {
            Permutation::Invconv => Mixing::Conv(InvConv::new(
                &format!("{prefix}.invconv"),
                channels,
                false,
                seed,
                device,
            )?),
            Permutation::InvconvLu => Mixing::Conv(InvConv::new(
                &format!("{prefix}.invconv"),
                channels,
                true,
                seed,
                device,
            )?),
            Permutation::Shuffle => Mixing::Fixed(FixedPermutation::shuffle(
                &format!("{prefix}.shuffle"),
                channels,
                seed,
                device,
            )?),
            Permutation::Reverse => Mixing::Fixed(FixedPermutation::reverse(
                &format!("{prefix}.reverse"),
                channels,
                device,
            )?),
        };
        Ok(FlowStep {
            name: prefix.to_string(),
            actnorm: ActNorm::new(&format!("{prefix}.actnorm"), channels, device)?,
            mix,
            coupling: CouplingLayer::new(
                &format!("{prefix}.block"),
                cfg.coupling,
                channels,
                cfg.hidden,
                seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1),
                device,
            )?,
        })
    }
}

impl Module for FlowStep {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        self.actnorm.visit_params(f);
        match &self.mix {
            Mixing::Conv(c) => c.visit_params(f),
            Mixing::Fixed(p) => p.visit_params(f),
        }
        self.coupling.visit_params(f);
    }
    fn visit_actnorms<'a>(&'a self, f: &mut dyn FnMut(&'a ActNorm)) {
        f(&self.actnorm);
        self.coupling.visit_actnorms(f);
    }
}

impl Flow for FlowStep {
    fn forward(&self, x: &Tensor, logdet: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x, logdet) = self.actnorm.forward(x, logdet)?;
        let (x, logdet) = self.mix.as_flow().forward(&x, &logdet)?;
        self.coupling.forward(&x, &logdet)
    }

    fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        let y = self.coupling.inverse(y)?;
        let y = self.mix.as_flow().inverse(&y)?;
        self.actnorm.inverse(&y)
    }
}

/// The trainable parameters `visit` reaches, as their current leaves.
fn trainable(visit: impl FnOnce(&mut dyn FnMut(&Param))) -> Vec<Tensor> {
    let mut out = Vec::new();
    visit(&mut |p: &Param| {
        if p.trainable() {
            out.push(p.get())
        }
    });
    out
}

/// Which layers of the flow one [`FlowBlock`] runs.
enum Part {
    /// A level's squeeze (no log-determinant, no parameters).
    Squeeze,
    /// A step's ActNorm and channel mixing.
    Mix(Arc<FlowStep>),
    /// A step's coupling, whose rebuild runs the coupling network once
    /// ([`CouplingLayer::rebuild`]).
    Coupling(Arc<FlowStep>),
}

/// Layers of the flow as one block of the model's [`Chain`], in both memory modes: the
/// one adapter between [`Flow`] and [`Invertible`]. Stored mode passes the running
/// log-determinant through the layers ([`Invertible::forward_from`]), so it is summed in
/// their order; reversible mode runs the block on its own, from zero.
struct FlowBlock(Part);

/// The squeeze as a [`Flow`]: log-determinant 0.
struct SqueezeFlow;

impl Module for SqueezeFlow {
    fn visit_params<'a>(&'a self, _: &mut dyn FnMut(&'a Param)) {}
    fn visit_actnorms<'a>(&'a self, _: &mut dyn FnMut(&'a ActNorm)) {}
}

impl Flow for SqueezeFlow {
    fn forward(&self, x: &Tensor, logdet: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((squeeze(x)?, logdet.clone()))
    }
    fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        unsqueeze(y)
    }
}

impl FlowBlock {
    /// The layers, first first.
    fn layers(&self) -> Vec<&dyn Flow> {
        match &self.0 {
            Part::Squeeze => vec![&SqueezeFlow],
            Part::Mix(step) => vec![&step.actnorm, step.mix.as_flow()],
            Part::Coupling(step) => vec![&step.coupling],
        }
    }

    /// The anomaly scope it runs in: its step's name.
    fn scope(&self) -> Option<anomaly::Scope> {
        match &self.0 {
            Part::Squeeze => None,
            Part::Mix(step) | Part::Coupling(step) => Some(anomaly::scope(&step.name)),
        }
    }
}

impl Invertible for FlowBlock {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let [b, _, _, _] = dims4(x)?;
        self.forward_from(x, &Tensor::zeros(&[b], x.device())?)
    }
    fn forward_from(&self, x: &Tensor, logdet: &Tensor) -> Result<(Tensor, Tensor)> {
        let _layer = self.scope();
        let (mut y, mut logdet) = (x.clone(), logdet.clone());
        for layer in self.layers() {
            (y, logdet) = layer.forward(&y, &logdet)?;
        }
        Ok((y, logdet))
    }
    fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        let _layer = self.scope();
        let mut x = y.clone();
        for layer in self.layers().into_iter().rev() {
            x = layer.inverse(&x)?;
        }
        Ok(x)
    }
    fn params(&self) -> Vec<Tensor> {
        trainable(|f| {
            for layer in self.layers() {
                layer.visit_params(f);
            }
        })
    }
    fn rebuild(&self, y: &Tensor) -> Result<Rebuilt> {
        let Part::Coupling(step) = &self.0 else {
            return engine::invertible::rebuild_by_inverse(self, y);
        };
        let _layer = self.scope();
        let (parts, y, logdet) = step.coupling.rebuild(y)?;
        Ok(Rebuilt {
            parts: parts.to_vec(),
            axis: 1,
            y,
            logdet,
            z: None,
        })
    }
}

/// The split as a [`Factor`]: `z → (z1, z2, log p(z2 | z1))`, rebuilt from `z1` and
/// `z2` as leaves of their own (no copy of `z` is made).
struct SplitBlock {
    split: Arc<Split>,
    name: String,
}

impl Factor for SplitBlock {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let _layer = anomaly::scope(&self.name);
        self.split.forward(x)
    }
    fn inverse(&self, y: &Tensor, z: &Tensor) -> Result<Tensor> {
        Tensor::concat(&[y, z], 1)
    }
    fn params(&self) -> Vec<Tensor> {
        trainable(|f| self.split.visit_params(f))
    }
    fn rebuild(&self, y: &Tensor, z: &Tensor) -> Result<Rebuilt> {
        let _layer = anomaly::scope(&self.name);
        let (z1, z2) = (y.detach().with_grad(), z.detach().with_grad());
        let logp = engine::autograd::with_recording(|| self.split.log_prob(&z1, &z2))?;
        Ok(Rebuilt {
            parts: vec![z1.clone(), z2.clone()],
            axis: 1,
            y: z1,
            logdet: logp,
            z: Some(z2),
        })
    }
}

/// One level: squeeze, `K` steps, and a split unless it is the last level.
#[derive(Debug)]
struct Level {
    steps: Vec<Arc<FlowStep>>,
    split: Option<Arc<Split>>,
    /// The split's `flow.layers.{i}` (empty without one).
    split_name: String,
}

impl Level {
    /// The squeeze, the steps and the split as blocks of a [`Chain`].
    fn blocks(&self) -> Vec<Block> {
        let mut blocks = vec![Block::Map(Arc::new(FlowBlock(Part::Squeeze)))];
        for step in &self.steps {
            blocks.push(Block::Map(Arc::new(FlowBlock(Part::Mix(step.clone())))));
            blocks.push(Block::Map(Arc::new(FlowBlock(Part::Coupling(
                step.clone(),
            )))));
        }
        if let Some(split) = &self.split {
            blocks.push(Block::Factor(Arc::new(SplitBlock {
                split: split.clone(),
                name: self.split_name.clone(),
            })));
        }
        blocks
    }
}

/// What a forward pass produces.
#[derive(Debug, Clone)]
pub struct FlowOutput {
    /// Every latent: each split's `z2` in level order, then the top `z`.
    pub latents: Vec<Tensor>,
    /// `Σ log|det J|` of the whole flow per image, `[B]`.
    pub logdet: Tensor,
    /// `Σ log p(latents)` under the split and top priors per image, `[B]`.
    pub log_p_latents: Tensor,
    /// Classifier logits `[B, classes]` when the model is class-conditional.
    pub y_logits: Option<Tensor>,
}

/// [`Glow::loss_terms`]: the training loss and its parts, scalars unless said.
#[derive(Debug, Clone)]
pub struct Loss {
    /// What training minimises: `bpd + y_weight · class_bits`.
    pub total: Tensor,
    /// Mean bits/dim of the batch.
    pub bpd: Tensor,
    /// The classifier's mean cross-entropy with the labels, in bits (class-conditional
    /// models only).
    pub class_bits: Option<Tensor>,
    /// The classifier's logits `[B, classes]` (class-conditional models only).
    pub y_logits: Option<Tensor>,
}

/// The Glow model. See the module documentation.
#[derive(Debug)]
pub struct Glow {
    config: GlowConfig,
    device: Device,
    levels: Vec<Level>,
    /// `[C, H, W]` of the top latent.
    top_shape: [usize; 3],
    learn_top: Option<ZeroConv2d>,
    project_ycond: Option<LinearZeros>,
    project_class: Option<LinearZeros>,
}

impl Glow {
    /// Builds and randomly initialises a model on `device` (ActNorms initialise on the
    /// first batch they see).
    pub fn new(config: GlowConfig, device: &Device) -> Result<Glow> {
        config.validate()?;
        let [mut c, mut h, mut w] = config.image_shape;
        let mut levels = Vec::with_capacity(config.levels);
        let mut index = 0; // flow.layers.{index}, counting squeezes, steps and splits
        for level in 0..config.levels {
            (c, h, w) = (c * 4, h / 2, w / 2);
            index += 1; // the squeeze
            let mut steps = Vec::with_capacity(config.depth);
            for k in 0..config.depth {
                let seed = config.seed
                    ^ ((level * 1_000_003 + k) as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
                steps.push(Arc::new(FlowStep::new(
                    &format!("flow.layers.{index}"),
                    c,
                    &config,
                    seed,
                    device,
                )?));
                index += 1;
            }
            let mut split_name = String::new();
            let split = if level + 1 < config.levels {
                split_name = format!("flow.layers.{index}");
                let s = Arc::new(Split::new(&split_name, c, device)?);
                index += 1;
                c /= 2;
                Some(s)
            } else {
                None
            };
            levels.push(Level {
                steps,
                split,
                split_name,
            });
        }
        let learn_top = config
            .learn_top
            .then(|| ZeroConv2d::new("learn_top_fn", 2 * c, 2 * c, device))
            .transpose()?;
        let (project_ycond, project_class) = if config.y_condition {
            (
                Some(LinearZeros::new(
                    "project_ycond",
                    config.num_classes,
                    2 * c,
                    device,
                )?),
                Some(LinearZeros::new(
                    "project_class",
                    c,
                    config.num_classes,
                    device,
                )?),
            )
        } else {
            (None, None)
        };
        Ok(Glow {
            config,
            device: device.clone(),
            levels,
            top_shape: [c, h, w],
            learn_top,
            project_ycond,
            project_class,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GlowConfig {
        &self.config
    }

    /// Switches between stored and reversible backward ([`GlowConfig::memory`]); the
    /// model's function and state are unchanged.
    pub fn set_memory(&mut self, memory: Memory) {
        self.config.memory = memory;
    }

    /// The device holding the parameters.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `[C, H, W]` of the top latent.
    pub fn top_shape(&self) -> [usize; 3] {
        self.top_shape
    }

    fn check_input(&self, x: &Tensor) -> Result<usize> {
        let [b, c, h, w] = dims4(x)?;
        if [c, h, w] != self.config.image_shape {
            return Err(Error::shape(
                "Glow",
                format!(
                    "the model takes images {:?}, got {:?}",
                    self.config.image_shape,
                    x.shape()
                ),
            ));
        }
        Ok(b)
    }

    fn check_labels(&self, labels: Option<&[usize]>, batch: usize) -> Result<Option<Tensor>> {
        match (self.config.y_condition, labels) {
            (false, _) => Ok(None),
            (true, None) => Err(Error::invalid(
                "Glow",
                "a class-conditional model needs labels",
            )),
            (true, Some(l)) if l.len() != batch => Err(Error::invalid(
                "Glow",
                format!("{} labels for a batch of {batch}", l.len()),
            )),
            (true, Some(l)) => Ok(Some(Tensor::one_hot(
                l,
                self.config.num_classes,
                &self.device,
            )?)),
        }
    }

    /// `(mean, logs)` of the top prior for a batch, `[B, C, H, W]` each.
    fn top_prior(&self, batch: usize, y: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let c = self.top_shape[0];
        let hp = self.top_prior_params(batch, y)?;
        Ok((channels(&hp, 0, c)?, channels(&hp, c, c)?))
    }

    /// The top prior's mean and log-scale as the halves of one `[B, 2C, H, W]` tensor.
    fn top_prior_params(&self, batch: usize, y: Option<&Tensor>) -> Result<Tensor> {
        let [c, h, w] = self.top_shape;
        let zeros = Tensor::zeros(&[batch, 2 * c, h, w], &self.device)?;
        let mut hp = match &self.learn_top {
            Some(conv) => {
                let _head = anomaly::scope("learn_top_fn");
                conv.forward(&zeros)?
            }
            None => zeros,
        };
        if let (Some(proj), Some(y)) = (&self.project_ycond, y) {
            let _head = anomaly::scope("project_ycond");
            hp = hp.add(&proj.forward(y)?.reshape(&[batch, 2 * c, 1, 1])?)?;
        }
        Ok(hp)
    }

    /// Runs the flow on preprocessed `x` `[B, C, H, W]`; `labels` are required when the
    /// model is class-conditional.
    pub fn forward(&self, x: &Tensor, labels: Option<&[usize]>) -> Result<FlowOutput> {
        let batch = self.check_input(x)?;
        let y = self.check_labels(labels, batch)?;
        let mut log_p = Tensor::zeros(&[batch], &self.device)?;
        let mut latents = Vec::with_capacity(self.levels.len());
        // One path for both memory modes: the same blocks, stored as ordinary ops or
        // run as one reversible op.
        let chain = self.chain();
        let out = match self.config.memory {
            Memory::Stored => chain.run_stored(x, Tensor::zeros(&[batch], &self.device)?)?,
            Memory::Reversible => chain.run(x)?,
        };
        for (z2, logp) in out.factored {
            log_p = log_p.add(&logp)?;
            latents.push(z2);
        }
        let (z, logdet) = (out.y, out.logdet);
        let hp = self.top_prior_params(batch, y.as_ref())?;
        log_p = log_p.add(&Tensor::gaussian_log_prob(&z, &hp, Pairing::Halves)?)?;
        let y_logits = match &self.project_class {
            Some(head) => {
                let _head = anomaly::scope("project_class");
                Some(head.forward(&z.mean(&[2, 3], false)?)?)
            }
            None => None,
        };
        latents.push(z);
        Ok(FlowOutput {
            latents,
            logdet,
            log_p_latents: log_p,
            y_logits,
        })
    }

    /// `log p(x)` per image `[B]`, in nats, including the `−D · log n_bins` term.
    pub fn log_prob(&self, x: &Tensor, labels: Option<&[usize]>) -> Result<Tensor> {
        let out = self.forward(x, labels)?;
        self.log_prob_from(&out)
    }

    fn log_prob_from(&self, out: &FlowOutput) -> Result<Tensor> {
        let d = self.config.dims() as f32;
        out.logdet
            .add(&out.log_p_latents)?
            .add_scalar(-d * self.config.n_bins().ln())
    }

    /// Bits per dimension per image `[B]`: `−log p(x) / (D · ln 2)`.
    pub fn bits_per_dim(&self, x: &Tensor, labels: Option<&[usize]>) -> Result<Tensor> {
        let out = self.forward(x, labels)?;
        self.bpd_from(&out)
    }

    fn bpd_from(&self, out: &FlowOutput) -> Result<Tensor> {
        let d = self.config.dims() as f32;
        self.log_prob_from(out)?
            .scale(-1.0 / (d * std::f32::consts::LN_2))
    }

    /// The training loss, a scalar: mean bits/dim, plus `y_weight ·` the classifier's
    /// cross-entropy in bits when the model is class-conditional. Also returns the mean
    /// bits/dim alone. [`Glow::loss_terms`] gives the classifier's part too.
    pub fn loss(&self, x: &Tensor, labels: Option<&[usize]>) -> Result<(Tensor, Tensor)> {
        let terms = self.loss_terms(x, labels)?;
        Ok((terms.total, terms.bpd))
    }

    /// The training loss and its parts (see [`Loss`]).
    pub fn loss_terms(&self, x: &Tensor, labels: Option<&[usize]>) -> Result<Loss> {
        let out = self.forward(x, labels)?;
        let bpd = self.bpd_from(&out)?.mean_all()?;
        match (out.y_logits, labels) {
            (Some(logits), Some(l)) => {
                let onehot = Tensor::one_hot(l, self.config.num_classes, &self.device)?;
                let ce = logits
                    .log_softmax(1)?
                    .mul(&onehot)?
                    .sum(&[1], false)?
                    .mean_all()?
                    .neg()?;
                let ln2 = std::f32::consts::LN_2;
                let total = bpd.add(&ce.scale(self.config.y_weight / ln2)?)?;
                let class_bits = ce.scale(1.0 / ln2)?;
                Ok(Loss {
                    total,
                    bpd,
                    class_bits: Some(class_bits),
                    y_logits: Some(logits),
                })
            }
            _ => Ok(Loss {
                total: bpd.clone(),
                bpd,
                class_bits: None,
                y_logits: None,
            }),
        }
    }

    /// Every latent of `x`: each split's `z2` in level order, then the top `z`.
    pub fn encode(&self, x: &Tensor, labels: Option<&[usize]>) -> Result<Vec<Tensor>> {
        Ok(self.forward(x, labels)?.latents)
    }

    /// The shapes of the latents for a batch of `batch`, in [`Glow::encode`]'s order.
    pub fn latent_shapes(&self, batch: usize) -> Vec<Vec<usize>> {
        let [mut c, mut h, mut w] = self.config.image_shape;
        let mut shapes = Vec::new();
        for level in &self.levels {
            (c, h, w) = (c * 4, h / 2, w / 2);
            if level.split.is_some() {
                c /= 2;
                shapes.push(vec![batch, c, h, w]);
            }
        }
        shapes.push(vec![batch, c, h, w]);
        shapes
    }

    /// Inverts the flow from every latent (as [`Glow::encode`] returns them).
    pub fn decode(&self, latents: &[Tensor]) -> Result<Tensor> {
        let batch = latents
            .last()
            .map(|z| z.shape().first().copied().unwrap_or(0))
            .unwrap_or(0);
        let expected = self.latent_shapes(batch);
        let got: Vec<Vec<usize>> = latents.iter().map(|t| t.shape().to_vec()).collect();
        if got != expected {
            return Err(Error::shape(
                "decode",
                format!("expected latents of shapes {expected:?}, got {got:?}"),
            ));
        }
        let mut splits = latents[..latents.len() - 1].iter().rev();
        self.inverse_from(latents[latents.len() - 1].clone(), |_, _| {
            splits
                .next()
                .cloned()
                .ok_or_else(|| Error::invalid("decode", "missing a split latent"))
        })
    }

    /// Draws `n` images at `temperature` (0 gives each prior's mean): every latent is
    /// `mean + temperature · e^logs · ε`. Returns values in the flow's input range.
    pub fn sample(
        &self,
        n: usize,
        temperature: f32,
        labels: Option<&[usize]>,
        seed: u64,
    ) -> Result<Tensor> {
        no_grad(|| {
            let y = self.check_labels(labels, n)?;
            let (mean, logs) = self.top_prior(n, y.as_ref())?;
            let top = gaussian::sample(&mean, &logs, temperature, seed)?;
            self.inverse_from(top, |level, z1| {
                let split = self.levels[level]
                    .split
                    .as_ref()
                    .expect("called only for levels with a split");
                let (mean, logs) = split.prior(z1)?;
                gaussian::sample(
                    &mean,
                    &logs,
                    temperature,
                    seed.wrapping_add(level as u64 + 1),
                )
            })
        })
    }

    /// The whole flow as one [`Chain`] of blocks: every level's squeeze, steps and split,
    /// what [`Glow::forward`] runs in both memory modes.
    fn chain(&self) -> Chain {
        Chain::new(self.levels.iter().flat_map(Level::blocks).collect())
    }

    /// How far [`Memory::Reversible`]'s backward pass would move the blocks' inputs on
    /// `x`: the largest relative error of a rebuilt input over the whole flow, every
    /// input rebuilt from the top latent and the split latents as the backward pass does
    /// ([`Chain::drift`]).
    pub fn reconstruction_drift(&self, x: &Tensor) -> Result<f32> {
        self.check_input(x)?;
        let drift = self.chain().drift(x)?;
        Ok(drift.into_iter().fold(0.0f32, f32::max))
    }

    /// Runs the levels backwards from the top `z`; `split_latent(level, z1)` supplies the
    /// `z2` of each split.
    fn inverse_from(
        &self,
        top: Tensor,
        mut split_latent: impl FnMut(usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut z = top;
        for (i, level) in self.levels.iter().enumerate().rev() {
            if level.split.is_some() {
                let _layer = anomaly::scope(&level.split_name);
                let z2 = split_latent(i, &z)?;
                z = Tensor::concat(&[&z, &z2], 1)?;
            }
            for step in level.steps.iter().rev() {
                let _layer = anomaly::scope(&step.name);
                z = step.inverse(&z)?;
            }
            z = unsqueeze(&z)?;
        }
        Ok(z)
    }

    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        for level in &self.levels {
            for step in &level.steps {
                step.visit_params(f);
            }
            if let Some(s) = &level.split {
                s.visit_params(f);
            }
        }
        for head in [&self.learn_top].into_iter().flatten() {
            head.visit_params(f);
        }
        for head in [&self.project_ycond, &self.project_class]
            .into_iter()
            .flatten()
        {
            head.visit_params(f);
        }
    }

    fn visit_actnorms<'a>(&'a self, f: &mut dyn FnMut(&'a ActNorm)) {
        for level in &self.levels {
            for step in &level.steps {
                step.visit_actnorms(f);
            }
        }
    }

    /// Every parameter and buffer, in a fixed order.
    pub fn params(&self) -> Vec<&Param> {
        let mut out = Vec::new();
        self.visit_params(&mut |p| out.push(p));
        out
    }

    /// The trainable parameters.
    pub fn trainable_params(&self) -> Vec<&Param> {
        self.params()
            .into_iter()
            .filter(|p| p.trainable())
            .collect()
    }

    /// Number of trainable values.
    pub fn num_parameters(&self) -> usize {
        self.trainable_params()
            .iter()
            .map(|p| p.shape().iter().product::<usize>())
            .sum()
    }

    /// Whether every ActNorm has been initialised from data.
    pub fn is_initialized(&self) -> bool {
        let mut all = true;
        self.visit_actnorms(&mut |a| all &= a.is_initialized());
        all
    }

    /// A host copy of everything that defines the model's function: parameters, buffers
    /// and each ActNorm's initialised flag (1 or 0, shape `[]`).
    pub fn state(&self) -> Result<ModelState> {
        let mut tensors = Vec::new();
        for p in self.params() {
            tensors.push(StateTensor::from_tensor(p.name(), &p.get())?);
        }
        let mut flags = Vec::new();
        self.visit_actnorms(&mut |a| flags.push((a.flag_name(), a.is_initialized())));
        for (name, set) in flags {
            tensors.push(StateTensor {
                name,
                shape: vec![],
                data: vec![if set { 1.0 } else { 0.0 }],
            });
        }
        Ok(ModelState { tensors })
    }

    /// Loads a state written by [`Glow::state`] for the same configuration.
    pub fn load_state(&self, state: &ModelState) -> Result<()> {
        for p in self.params() {
            p.set(&state.get(p.name())?.to_tensor(&self.device)?)?;
        }
        let mut result = Ok(());
        self.visit_actnorms(&mut |a| {
            if result.is_err() {
                return;
            }
            match state.get(&a.flag_name()) {
                Ok(t) => a.set_initialized(t.data.first().copied().unwrap_or(0.0) != 0.0),
                Err(e) => result = Err(e),
            }
        });
        result
    }
}

impl Module for Glow {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        Glow::visit_params(self, f)
    }
    fn visit_actnorms<'a>(&'a self, f: &mut dyn FnMut(&'a ActNorm)) {
        Glow::visit_actnorms(self, f)
    }
}
