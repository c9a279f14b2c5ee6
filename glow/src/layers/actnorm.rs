//! ActNorm: a per-channel affine map initialised from the data.
//!
//! `y = (x + b) · e^logs` with `b`, `logs` of shape `[1, C, 1, 1]`; its Jacobian is
//! diagonal, so `log|det| = H · W · Σ logs` per image. On its first forward pass the
//! layer sets `b = -mean(x)` and `logs = log(1 / (std(x + b) + 1e-6))` per channel, so
//! that its first output has zero mean and unit variance; after that, `b` and `logs` are
//! ordinary parameters. The initialised flag is part of the model's state, so a reloaded
//! model never re-initialises.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::parallel::average_for_init;
use engine::{no_grad, Device, Error, Result, Tensor};

use super::{dims4, Flow, Module};
use crate::param::Param;

/// Per-channel affine normalisation with data-dependent initialisation.
#[derive(Debug)]
pub struct ActNorm {
    prefix: String,
    channels: usize,
    /// `[1, C, 1, 1]`
    pub bias: Param,
    /// `[1, C, 1, 1]`
    pub logs: Param,
    initialized: AtomicBool,
}

impl ActNorm {
    /// An uninitialised ActNorm over `channels`, with state names under `prefix`.
    pub fn new(prefix: &str, channels: usize, device: &Device) -> Result<ActNorm> {
        let zeros = Tensor::zeros(&[1, channels, 1, 1], device)?;
        Ok(ActNorm {
            prefix: prefix.to_string(),
            channels,
            bias: Param::new(format!("{prefix}.bias"), zeros.clone()),
            logs: Param::new(format!("{prefix}.logs"), zeros),
            initialized: AtomicBool::new(false),
        })
    }

    /// The state name of the initialised flag.
    pub fn flag_name(&self) -> String {
        format!("{}.initialized", self.prefix)
    }

    /// Whether the data-dependent initialisation has happened.
    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }

    /// Sets the flag, e.g. when loading a state.
    pub fn set_initialized(&self, value: bool) {
        self.initialized.store(value, Ordering::Release);
    }

    /// Initialises from `x` (the layer's input) if not yet done.
    pub(crate) fn ensure_initialized(&self, x: &Tensor) -> Result<()> {
        if self.is_initialized() {
            return Ok(());
        }
        no_grad(|| -> Result<()> {
            // In a data-parallel run, each statistic is averaged over the ranks' equal
            // shards: those of the whole global batch (crate::parallel::init_scope).
            let bias = average_for_init(x.mean(&[0, 2, 3], true)?)?.neg()?;
            let var = average_for_init(x.add(&bias)?.square()?.mean(&[0, 2, 3], true)?)?;
            let logs = var.sqrt()?.add_scalar(1e-6)?.recip()?.log()?;
            self.bias.set(&bias)?;
            self.logs.set(&logs)
        })?;
        self.set_initialized(true);
        Ok(())
    }

    fn check(&self, x: &Tensor) -> Result<usize> {
        let [_, c, h, w] = dims4(x)?;
        if c != self.channels {
            return Err(Error::shape(
                "ActNorm",
                format!(
                    "{} expects {} channels, got {:?}",
                    self.prefix,
                    self.channels,
                    x.shape()
                ),
            ));
        }
        Ok(h * w)
    }

    /// The map as `x · scale + shift` per channel: `(e^logs, b · e^logs)`, each `[C]`.
    /// Lets a preceding convolution absorb the layer (see `Conv2dNorm`).
    pub(crate) fn scale_and_shift(&self) -> Result<(Tensor, Tensor)> {
        let scale = self.logs.get().exp()?;
        let shift = self.bias.get().mul(&scale)?;
        Ok((
            scale.reshape(&[self.channels])?,
            shift.reshape(&[self.channels])?,
        ))
    }

    /// `(x + b) · e^logs` without a log-determinant (as used inside coupling networks).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        self.ensure_initialized(x)?;
        x.add(&self.bias.get())?.mul(&self.logs.get().exp()?)
    }
}

impl Module for ActNorm {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        f(&self.bias);
        f(&self.logs);
    }
    fn visit_actnorms<'a>(&'a self, f: &mut dyn FnMut(&'a ActNorm)) {
        f(self);
    }
}

impl Flow for ActNorm {
    fn forward(&self, x: &Tensor, logdet: &Tensor) -> Result<(Tensor, Tensor)> {
        let pixels = self.check(x)?;
        let y = self.apply(x)?;
        let dlogdet = self.logs.get().sum_all()?.scale(pixels as f32)?;
        Ok((y, logdet.add(&dlogdet)?))
    }

    fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        self.check(y)?;
        y.mul(&self.logs.get().neg()?.exp()?)?.sub(&self.bias.get())
    }
}
