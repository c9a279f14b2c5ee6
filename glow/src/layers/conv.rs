//! The non-invertible building blocks: the coupling network's convolutions and the
//! zero-initialised output layers of the priors.
//!
//! - [`Conv2dNorm`]: convolution without bias (weights `~ N(0, 0.05²)`) then ActNorm.
//! - [`ZeroConv2d`]: `(conv(x) + bias) · e^(3·logs)`, all zero at init, so every coupling
//!   network starts by outputting zeros (see `coupling.rs` for what that makes of each
//!   coupling) and every prior as a standard normal.
//! - [`LinearZeros`]: the same with a dense layer, for class conditioning.

use engine::{no_grad, Device, Result, Tensor};

use super::{ActNorm, Module};
use crate::param::Param;

/// The factor on ZeroConv's and LinearZeros' log-scale (as in the reference code).
const LOGSCALE_FACTOR: f32 = 3.0;

/// Convolution (no bias, stride 1, same padding) followed by ActNorm.
#[derive(Debug)]
pub struct Conv2dNorm {
    /// `[c_out, c_in, k, k]`
    pub weight: Param,
    /// Replaces the bias.
    pub actnorm: ActNorm,
}

impl Conv2dNorm {
    /// A `k × k` convolution from `c_in` to `c_out` channels with weights `N(0, 0.05²)`.
    pub fn new(
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let w = Tensor::randn(&[c_out, c_in, k, k], 0.0, 0.05, seed, device)?;
        Ok(Conv2dNorm {
            weight: Param::new(format!("{prefix}.conv.weight"), w),
            actnorm: ActNorm::new(&format!("{prefix}.actnorm"), c_out, device)?,
        })
    }

    /// `actnorm(conv(x))`, computed as one convolution: ActNorm scales and shifts each
    /// output channel, so `(conv(x, w) + b) · e^s = conv(x, w · e^s) + b · e^s`, and the
    /// scaling moves from the activations onto the (much smaller) weights. That removed
    /// two activation-sized passes forward and four backward per layer, which the
    /// `train_step` profile had among its largest elementwise rows (`mul`, `add`, `sum`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (w, shift) = self.folded(x)?;
        x.conv2d(&w, Some(&shift))
    }

    /// `relu(actnorm(conv(x)))`, as one [`Tensor::conv2d_relu`] on the folded weights.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        let (w, shift) = self.folded(x)?;
        x.conv2d_relu(&w, Some(&shift))
    }

    /// The weight and bias with ActNorm folded in (see [`Conv2dNorm::forward`]),
    /// initialising ActNorm from `x` on the first call.
    fn folded(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let w = self.weight.get();
        if !self.actnorm.is_initialized() {
            // Data-dependent initialisation needs the unnormalised output once.
            let y = no_grad(|| x.conv2d(&w, None))?;
            self.actnorm.ensure_initialized(&y)?;
        }
        let (scale, shift) = self.actnorm.scale_and_shift()?;
        let c_out = w.shape()[0];
        Ok((w.mul(&scale.reshape(&[c_out, 1, 1, 1])?)?, shift))
    }
}

impl Module for Conv2dNorm {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        f(&self.weight);
        self.actnorm.visit_params(f);
    }
    fn visit_actnorms<'a>(&'a self, f: &mut dyn FnMut(&'a ActNorm)) {
        f(&self.actnorm);
    }
}

/// A 3x3 convolution initialised to output zeros: `(conv(x) + bias) · e^(3·logs)`.
#[derive(Debug)]
pub struct ZeroConv2d {
    /// `[c_out, c_in, 3, 3]`
    pub weight: Param,
    /// `[c_out]`
    pub bias: Param,
    /// `[c_out, 1, 1]`
    pub logs: Param,
}

impl ZeroConv2d {
    /// A zero 3x3 convolution from `c_in` to `c_out` channels.
    pub fn new(prefix: &str, c_in: usize, c_out: usize, device: &Device) -> Result<Self> {
        Ok(ZeroConv2d {
            weight: Param::new(
                format!("{prefix}.conv.weight"),
                Tensor::zeros(&[c_out, c_in, 3, 3], device)?,
            ),
            bias: Param::new(
                format!("{prefix}.conv.bias"),
                Tensor::zeros(&[c_out], device)?,
            ),
            logs: Param::new(
                format!("{prefix}.logs"),
                Tensor::zeros(&[c_out, 1, 1], device)?,
            ),
        })
    }

    /// `(conv(x) + bias) · e^(3·logs)`, computed as `conv(x, w · g) + bias · g` with
    /// `g = e^(3·logs)` per output channel: the scale moves onto the weights, as in
    /// [`Conv2dNorm::forward`], instead of an extra pass over the output.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.get();
        let c_out = w.shape()[0];
        let g = self.logs.get().scale(LOGSCALE_FACTOR)?.exp()?;
        let w = w.mul(&g.reshape(&[c_out, 1, 1, 1])?)?;
        let bias = self.bias.get().mul(&g.reshape(&[c_out])?)?;
        x.conv2d(&w, Some(&bias))
    }
}

impl Module for ZeroConv2d {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        f(&self.weight);
        f(&self.bias);
        f(&self.logs);
    }
    fn visit_actnorms<'a>(&'a self, _: &mut dyn FnMut(&'a ActNorm)) {}
}

/// A dense layer initialised to output zeros: `(x Wᵀ + bias) · e^(3·logs)`.
#[derive(Debug)]
pub struct LinearZeros {
    /// `[out, in]` (PyTorch's `nn.Linear` layout)
    pub weight: Param,
    /// `[out]`
    pub bias: Param,
    /// `[out]`
    pub logs: Param,
}

impl LinearZeros {
    /// A zero dense layer from `n_in` to `n_out` features.
    pub fn new(prefix: &str, n_in: usize, n_out: usize, device: &Device) -> Result<Self> {
        Ok(LinearZeros {
            weight: Param::new(
                format!("{prefix}.linear.weight"),
                Tensor::zeros(&[n_out, n_in], device)?,
            ),
            bias: Param::new(
                format!("{prefix}.linear.bias"),
                Tensor::zeros(&[n_out], device)?,
            ),
            logs: Param::new(format!("{prefix}.logs"), Tensor::zeros(&[n_out], device)?),
        })
    }

    /// `x [B, in] → [B, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x
            .matmul(&self.weight.get().transpose(0, 1)?)?
            .add(&self.bias.get())?;
        y.mul(&self.logs.get().scale(LOGSCALE_FACTOR)?.exp()?)
    }
}

impl Module for LinearZeros {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        f(&self.weight);
        f(&self.bias);
        f(&self.logs);
    }
    fn visit_actnorms<'a>(&'a self, _: &mut dyn FnMut(&'a ActNorm)) {}
}
