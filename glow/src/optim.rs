//! Adam and Adamax over a model's parameters, with warmup, weight decay, gradient
//! clipping (by value, then by global norm) and an exponential moving average of the
//! weights.
//!
//! The update itself is the engine's fused [`engine::Tensor::adam_update`]; this file
//! keeps the per-parameter moment tensors and averages (keyed by parameter name, so they
//! survive a checkpoint) and the schedule.
//!
//! **The moving average** ([`OptimizerConfig::ema_decay`] `= d`): after every update,
//! `avg = d · avg + (1 − d) · param` for each trainable parameter, starting from the
//! parameter's value before the first update. Its weights usually evaluate better than
//! the last step's (Polyak averaging); openai/glow keeps one with `d = β2`
//! ([`polyak_beta2`]). [`Optimizer::averaged_model`] gives a model with them.

use std::collections::BTreeMap;

use engine::backend::{AdamKind, AdamUpdate};
use engine::{Gradients, Result, Tensor};

use crate::model::Glow;
use crate::param::{Param, StateTensor};

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
    /// Rescale gradients whose global L2 norm exceeds this (`None`: no clipping). With
    /// [`OptimizerConfig::max_grad_value`] too, the norm is that of the clipped values
    /// (as PyTorch's `clip_grad_value_` then `clip_grad_norm_`).
    pub max_grad_norm: Option<f32>,
    /// Clip every gradient element into `[-v, v]` before anything else (`None`: no).
    pub max_grad_value: Option<f32>,
    /// Keep an exponential moving average of the weights with this decay in `(0, 1)`
    /// (module docs; `None`: none).
    pub ema_decay: Option<f32>,
}

/// openai/glow's β2 (and Polyak decay): `1 − 1 / (steps_per_epoch · polyak_epochs)`, an
/// average over about `polyak_epochs` epochs. `None` when that is not in `(0, 1)`.
pub fn polyak_beta2(steps_per_epoch: u64, polyak_epochs: f64) -> Option<f32> {
    // Checked in f32: 1 − 1e-9 is below 1 in f64 but rounds to 1 in f32.
    let beta2 = (1.0 - 1.0 / (steps_per_epoch as f64 * polyak_epochs)) as f32;
    (beta2 > 0.0 && beta2 < 1.0).then_some(beta2)
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
            max_grad_value: None,
            ema_decay: None,
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
    /// The moving average of each parameter, by name (empty before the first update).
    /// Kept, saved and used only while [`OptimizerConfig::ema_decay`] is set.
    pub averages: BTreeMap<String, Tensor>,
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
            averages: BTreeMap::new(),
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
        let with = with_grad(params, grads);
        sum_of_squares(with.iter().map(|w| &w.2))
    }

    /// Applies one update to every trainable parameter that has a gradient in `grads`,
    /// given their global norm `grad_norm` (from [`Optimizer::grad_norm`]), which is
    /// reported, and compared with `max_grad_norm` unless `max_grad_value` clips first
    /// (then the clipped gradients' norm is). Then updates the moving average, if any.
    pub fn update(
        &mut self,
        params: &[&Param],
        grads: &Gradients,
        grad_norm: f32,
    ) -> Result<StepInfo> {
        let mut with = with_grad(params, grads);
        let clip = self.clip(&mut with, grad_norm)?;
        if let Some(decay) = self.config.ema_decay {
            if !(decay > 0.0 && decay < 1.0) {
                return Err(engine::Error::invalid(
                    "optimizer",
                    format!("the moving average's decay must be in (0, 1), got {decay}"),
                ));
            }
            // The average starts from the weights before the first update (or before the
            // first one after a resume from a file without averages).
            for (p, value, _) in &with {
                if !self.averages.contains_key(p.name()) {
                    let copy = engine::no_grad(|| value.scale(1.0))?;
                    self.averages.insert(p.name().to_string(), copy);
                }
            }
        }
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
        for (p, value, g) in &with {
            let g = if clip < 1.0 {
                g.scale(clip)?
            } else {
                g.clone()
            };
            if !self.moments.contains_key(p.name()) {
                let zeros = || value.zeros_like();
                self.moments
                    .insert(p.name().to_string(), (zeros()?, zeros()?));
            }
            let (m, v) = &self.moments[p.name()];
            value.adam_update(&g, m, v, &update)?;
        }
        if let Some(decay) = self.config.ema_decay {
            engine::no_grad(|| -> Result<()> {
                for (p, value, _) in &with {
                    let avg = &self.averages[p.name()];
                    let next = avg.scale(decay)?.add(&value.scale(1.0 - decay)?)?;
                    self.averages.insert(p.name().to_string(), next);
                }
                Ok(())
            })?;
        }
        Ok(StepInfo { lr, grad_norm })
    }

    /// Clips the gradients of `with` by value in place, if asked, and returns the factor
    /// that then clips them by norm (1: none), given their norm before either clip.
    fn clip(&self, with: &mut [(&Param, Tensor, Tensor)], grad_norm: f32) -> Result<f32> {
        let mut norm = grad_norm;
        if let Some(v) = self.config.max_grad_value {
            engine::no_grad(|| -> Result<()> {
                for (_, _, g) in with.iter_mut() {
                    *g = clip_value(g, v)?;
                }
                Ok(())
            })?;
            if self.config.max_grad_norm.is_some() {
                let sq = engine::no_grad(|| sum_of_squares(with.iter().map(|w| &w.2)))?;
                norm = sq.map_or(Ok(0.0), |s| s.item().map(f32::sqrt))?;
            }
        }
        Ok(match self.config.max_grad_norm {
            Some(max) if norm > max && norm.is_finite() => max / norm,
            _ => 1.0,
        })
    }

    /// A copy of `model` whose trainable parameters are the moving averages (`None`
    /// while there are none, or [`OptimizerConfig::ema_decay`] is off). The
    /// copy shares nothing with `model`, so training it would not touch the original.
    pub fn averaged_model(&self, model: &Glow) -> Result<Option<Glow>> {
        if self.averages.is_empty() || self.config.ema_decay.is_none() {
            return Ok(None);
        }
        let mut state = model.state()?;
        for t in &mut state.tensors {
            if let Some(avg) = self.averages.get(&t.name) {
                *t = StateTensor::from_tensor(t.name.clone(), avg)?;
            }
        }
        let copy = Glow::new(model.config().clone(), model.device())?;
        copy.load_state(&state)?;
        Ok(Some(copy))
    }
}

/// `g` clipped elementwise into `[-v, v]` (a NaN stays a NaN, so a bad step is still seen).
fn clip_value(g: &Tensor, v: f32) -> Result<Tensor> {
    let low = Tensor::full(&[1], -v, g.device())?;
    // max(g, -v) bounds it below; −max(−x, −v) = min(x, v) bounds it above.
    g.maximum(&low)?.neg()?.maximum(&low)?.neg()
}

/// `Σ g²` over every tensor of `grads`, as a one-element tensor (`None` for none).
fn sum_of_squares<'a>(grads: impl Iterator<Item = &'a Tensor>) -> Result<Option<Tensor>> {
    let mut sq: Option<Tensor> = None;
    for g in grads {
        let s = g.square()?.sum_all()?;
        sq = Some(match sq {
            Some(acc) => acc.add(&s)?,
            None => s,
        });
    }
    Ok(sq)
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

#[cfg(test)]
mod tests {
    use super::*;
    use engine::Device;

    /// A parameter `[0, 0]` and the gradients of `Σ p · c`, which are `c`.
    fn param_and_grads(c: [f32; 2]) -> (Param, Gradients) {
        let p = Param::new(
            "w",
            Tensor::from_slice(&[0.0, 0.0], &[2], &Device::Cpu).unwrap(),
        );
        let c = Tensor::from_slice(&c, &[2], &Device::Cpu).unwrap();
        let grads = p
            .get()
            .mul(&c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (p, grads)
    }

    #[test]
    fn clipping_by_value_then_by_the_clipped_norm() {
        let (p, grads) = param_and_grads([3.0, -4.0]);
        let opt = |max_grad_value, max_grad_norm| {
            Optimizer::new(OptimizerConfig {
                max_grad_value,
                max_grad_norm,
                ..OptimizerConfig::default()
            })
        };
        // By norm alone: 5 down to 1.
        let mut with = with_grad(&[&p], &grads);
        assert_eq!(opt(None, Some(1.0)).clip(&mut with, 5.0).unwrap(), 0.2);
        // By value first: [2, -2], whose norm √8 is then brought down to 1.
        let mut with = with_grad(&[&p], &grads);
        let factor = opt(Some(2.0), Some(1.0)).clip(&mut with, 5.0).unwrap();
        assert_eq!(with[0].2.to_vec().unwrap(), vec![2.0, -2.0]);
        assert!((factor - 1.0 / 8f32.sqrt()).abs() < 1e-6, "{factor}");
        // A NaN survives the value clip, so the step is still seen as bad.
        let g = Tensor::from_slice(&[f32::NAN, -9.0, 0.5], &[3], &Device::Cpu).unwrap();
        let c = clip_value(&g, 1.0).unwrap().to_vec().unwrap();
        assert!(c[0].is_nan() && c[1..] == [-1.0, 0.5], "{c:?}");
    }

    #[test]
    fn the_moving_average_follows_its_formula() {
        let (p, grads) = param_and_grads([1.0, -2.0]);
        let mut opt = Optimizer::new(OptimizerConfig {
            ema_decay: Some(0.25),
            ..OptimizerConfig::default()
        });
        let before = p.get().to_vec().unwrap();
        opt.step(&[&p], &grads).unwrap();
        let after = p.get().to_vec().unwrap();
        assert_ne!(before, after);
        let avg = opt.averages["w"].to_vec().unwrap();
        for i in 0..2 {
            let want = 0.25 * before[i] + 0.75 * after[i];
            assert!((avg[i] - want).abs() < 1e-7, "{avg:?} vs {want}");
        }
        // Without a decay there is no average.
        let mut plain = Optimizer::new(OptimizerConfig::default());
        plain.step(&[&p], &grads).unwrap();
        assert!(plain.averages.is_empty());
    }

    #[test]
    fn polyak_beta2_is_one_minus_one_over_the_steps_averaged() {
        assert_eq!(polyak_beta2(168, 1.0), Some(1.0 - 1.0 / 168.0));
        assert_eq!(polyak_beta2(100, 2.0), Some(0.995));
        assert_eq!(polyak_beta2(1, 1.0), None, "β2 = 0 forgets at once");
        assert_eq!(polyak_beta2(0, 1.0), None);
    }
}
