//! Adam and Adamax over a model's parameters, with warmup, weight decay and gradient-norm
//! clipping.
//!
//! The update itself is the engine's fused [`engine::Tensor::adam_update`]; this file
//! keeps the per-parameter moment tensors (keyed by parameter name, so they survive a
//! checkpoint) and the schedule.

use std::collections::BTreeMap;

use engine::backend::{AdamKind, AdamUpdate};
use engine::{Gradients, Result, Tensor};

use crate::param::Param;

/// Optimiser settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerConfig {
    /// Adam or Adamax (the paper's choice).
    pub kind: AdamKind,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warmup over this many steps from 0 to `lr` (0: none).
    pub warmup: u32,
    /// β1, β2.
    pub betas: (f32, f32),
    /// Denominator guard.
    pub eps: f32,
    /// L2 penalty added to gradients.
    pub weight_decay: f32,
    /// Rescale gradients whose global L2 norm exceeds this (`None`: no clipping).
    pub max_grad_norm: Option<f32>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: AdamKind::Adamax,
            lr: 1e-3,
            warmup: 0,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: None,
        }
    }
}

/// Moment tensors and the step counter.
#[derive(Debug)]
pub struct Optimizer {
    /// Settings.
    pub config: OptimizerConfig,
    /// Steps taken so far.
    pub step: u32,
    /// `(m, v)` per parameter name.
    pub moments: BTreeMap<String, (Tensor, Tensor)>,
}

/// What one optimiser step saw.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    /// The learning rate used.
    pub lr: f32,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
}

impl Optimizer {
    /// A fresh optimiser.
    pub fn new(config: OptimizerConfig) -> Optimizer {
        Optimizer {
            config,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// The learning rate at 1-based step `t`: linear warmup, then constant.
    pub fn lr_at(&self, t: u32) -> f32 {
        let w = self.config.warmup;
        if w == 0 || t >= w {
            self.config.lr
        } else {
            self.config.lr * t as f32 / w as f32
        }
    }

    /// Applies one update to every trainable parameter that has a gradient in `grads`:
    /// [`Optimizer::grad_norm`], then [`Optimizer::update`] with it.
    pub fn step(&mut self, params: &[&Param], grads: &Gradients) -> Result<StepInfo> {
        let grad_norm = self.grad_norm(params, grads)?;
        self.update(params, grads, grad_norm)
    }

    /// The global L2 norm of the gradients of the trainable `params` (0 when none has
    /// one): what clipping compares with `max_grad_norm`, and what a caller checks to
    /// skip a step whose gradient is not finite before anything is changed.
    pub fn grad_norm(&self, params: &[&Param], grads: &Gradients) -> Result<f32> {
        Ok(match self.grad_sq_norm(params, grads)? {
            Some(s) => s.item()?.sqrt(),
            None => 0.0,
        })
    }

    /// The squared global gradient norm as a one-element tensor on the device (`None`
    /// without gradients), left there so that the caller can read it back together
    /// with the loss: one host wait per step instead of two.
    pub fn grad_sq_norm(&self, params: &[&Param], grads: &Gradients) -> Result<Option<Tensor>> {
        let mut sq: Option<Tensor> = None;
        for (_, _, g) in with_grad(params, grads) {
            let s = g.square()?.sum_all()?;
            sq = Some(match sq {
                Some(acc) => acc.add(&s)?,
                None => s,
            });
        }
        Ok(sq)
    }

    /// Applies one update to every trainable parameter that has a gradient in `grads`,
    /// given their global norm `grad_norm` (from [`Optimizer::grad_norm`]) for clipping.
    pub fn update(
        &mut self,
        params: &[&Param],
        grads: &Gradients,
        grad_norm: f32,
    ) -> Result<StepInfo> {
        let clip = match self.config.max_grad_norm {
            Some(max) if grad_norm > max && grad_norm.is_finite() => max / grad_norm,
            _ => 1.0,
        };
        self.step += 1;
        let lr = self.lr_at(self.step);
        let update = AdamUpdate {
            kind: self.config.kind,
            lr,
            beta1: self.config.betas.0,
            beta2: self.config.betas.1,
            eps: self.config.eps,
            weight_decay: self.config.weight_decay,
            step: self.step,
        };
        for (p, value, g) in with_grad(params, grads) {
            let g = if clip < 1.0 { g.scale(clip)? } else { g };
            if !self.moments.contains_key(p.name()) {
                let zeros = || value.zeros_like();
                self.moments
                    .insert(p.name().to_string(), (zeros()?, zeros()?));
            }
            let (m, v) = &self.moments[p.name()];
            value.adam_update(&g, m, v, &update)?;
        }
        Ok(StepInfo { lr, grad_norm })
    }
}

/// The trainable parameters among `params` that have a gradient in `grads`, with their
/// value and gradient.
fn with_grad<'a>(params: &[&'a Param], grads: &Gradients) -> Vec<(&'a Param, Tensor, Tensor)> {
    params
        .iter()
        .filter(|p| p.trainable())
        .filter_map(|p| {
            let value = p.get();
            grads.get(&value).map(|g| (*p, value.clone(), g.clone()))
        })
        .collect()
}
