//! Affine and additive coupling: transform half the channels conditioned on the other.
//!
//! With `xa, xb` the first and second halves of the channels and `h = NN(xa)`:
//! - affine: `shift = h[:, 0::2]`, `scale = sigmoid(h[:, 1::2] + 2)`,
//!   `yb = (xb + shift) · scale`, `log|det| = Σ log scale`;
//! - additive: `yb = xb + h`, `log|det| = 0`.
//!
//! `ya = xa`, so the inverse recomputes `h = NN(ya)` and undoes the map on `yb`. `log scale`
//! is computed as `-softplus(-(raw + 2))`, which stays finite where `sigmoid` underflows.
//! The network is conv3x3 → ActNorm → ReLU → conv1x1 → ActNorm → ReLU → ZeroConv3x3, so
//! `h = 0` at initialisation: an additive coupling starts as the identity, an affine one
//! as the fixed scaling `yb = sigmoid(2) · xb ≈ 0.881 · xb`.

use engine::autograd::with_recording;
use engine::{no_grad, Device, Error, Result, Tensor};

use super::conv::{Conv2dNorm, ZeroConv2d};
use super::{channels, dims4, split_interleaved, ActNorm, Flow, Module};
use crate::config::Coupling;
use crate::param::Param;

/// The coupling network `NN`.
#[derive(Debug)]
pub struct CouplingNet {
    conv1: Conv2dNorm,
    conv2: Conv2dNorm,
    out: ZeroConv2d,
}

impl CouplingNet {
    /// `c_in → hidden → hidden → c_out`, state names `{prefix}.0`, `.2`, `.4` (the
    /// indices of the reference `nn.Sequential`, whose ReLUs sit at 1 and 3).
    pub fn new(
        prefix: &str,
        c_in: usize,
        hidden: usize,
        c_out: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Ok(CouplingNet {
            conv1: Conv2dNorm::new(&format!("{prefix}.0"), c_in, hidden, 3, seed, device)?,
            conv2: Conv2dNorm::new(
                &format!("{prefix}.2"),
                hidden,
                hidden,
                1,
                seed.wrapping_add(1),
                device,
            )?,
            out: ZeroConv2d::new(&format!("{prefix}.4"), hidden, c_out, device)?,
        })
    }

    /// `NN(x)`. Its convolutions may round their products to bf16 when the process asks
    /// for it (`engine::precision`): the coupling only uses `NN`'s output as the shift and
    /// scale of an affine map, whose inverse and log-determinant are exact for whatever
    /// values it returns, so the flow stays invertible and its likelihood exact. (The
    /// inverse recomputes `NN` on the reconstructed half; where f32 rounding left that a
    /// hair off the forward pass's, bf16 can round it to another value, so a round trip
    /// is looser than in f32: docs/measurements.md.)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        engine::precision::reduced(|| {
            let h = self.conv1.forward_relu(x)?;
            let h = self.conv2.forward_relu(&h)?;
            self.out.forward(&h)
        })
    }
}

impl Module for CouplingNet {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        self.conv1.visit_params(f);
        self.conv2.visit_params(f);
        self.out.visit_params(f);
    }
    fn visit_actnorms<'a>(&'a self, f: &mut dyn FnMut(&'a ActNorm)) {
        self.conv1.visit_actnorms(f);
        self.conv2.visit_actnorms(f);
    }
}

/// A coupling layer over `channels` (even) channels.
#[derive(Debug)]
pub struct CouplingLayer {
    kind: Coupling,
    channels: usize,
    net: CouplingNet,
}

impl CouplingLayer {
    /// A coupling of `kind` whose network has `hidden` channels; names under `prefix`.
    pub fn new(
        prefix: &str,
        kind: Coupling,
        channels: usize,
        hidden: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if !channels.is_multiple_of(2) {
            return Err(Error::invalid(
                "CouplingLayer",
                format!("needs an even number of channels, got {channels}"),
            ));
        }
        let c_out = match kind {
            Coupling::Affine => channels,
            Coupling::Additive => channels / 2,
        };
        Ok(CouplingLayer {
            kind,
            channels,
            net: CouplingNet::new(prefix, channels / 2, hidden, c_out, seed, device)?,
        })
    }

    fn halves(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let [_, c, _, _] = dims4(x)?;
        if c != self.channels {
            return Err(Error::shape(
                "CouplingLayer",
                format!("expects {} channels, got {:?}", self.channels, x.shape()),
            ));
        }
        let half = c / 2;
        Ok((channels(x, 0, half)?, channels(x, half, half)?))
    }

    /// `(shift, raw scale + 2)` of the affine coupling for conditioning half `xa`.
    /// Reversible backward's rebuild of this layer's input from `y` (see
    /// `engine::invertible::Invertible::rebuild`), running the network once instead of
    /// once in the inverse and again in the forward: `xa = ya` becomes a leaf, `h =
    /// NN(xa)` is recorded, `xb` is inverted with `h` and becomes a leaf, and the map on
    /// `xb` is recorded. Returns `([xa, xb], y, logdet)` with `logdet` per image `[B]`.
    pub(crate) fn rebuild(&self, y: &Tensor) -> Result<([Tensor; 2], Tensor, Tensor)> {
        let (ya, yb) = self.halves(y)?;
        let [batch, _, _, _] = dims4(y)?;
        let xa = ya.detach().with_grad();
        let h = with_recording(|| self.net.forward(&xa))?;
        let xb = no_grad(|| match self.kind {
            Coupling::Additive => yb.sub(&h),
            Coupling::Affine => {
                let (shift, raw) = split_interleaved(&h)?;
                yb.div(&raw.add_scalar(2.0)?.sigmoid()?)?.sub(&shift)
            }
        })?
        .detach()
        .with_grad();
        let (y, logdet) = with_recording(|| -> Result<(Tensor, Tensor)> {
            let (yb, logdet) = match self.kind {
                Coupling::Additive => (xb.add(&h)?, Tensor::zeros(&[batch], y.device())?),
                Coupling::Affine => Tensor::affine_coupling(&xb, &h)?,
            };
            Ok((Tensor::concat(&[&xa, &yb], 1)?, logdet))
        })?;
        Ok(([xa, xb], y, logdet))
    }

    fn shift_and_logit(&self, xa: &Tensor) -> Result<(Tensor, Tensor)> {
        let (shift, raw) = split_interleaved(&self.net.forward(xa)?)?;
        Ok((shift, raw.add_scalar(2.0)?))
    }
}

impl Module for CouplingLayer {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        self.net.visit_params(f);
    }
    fn visit_actnorms<'a>(&'a self, f: &mut dyn FnMut(&'a ActNorm)) {
        self.net.visit_actnorms(f);
    }
}

impl Flow for CouplingLayer {
    fn forward(&self, x: &Tensor, logdet: &Tensor) -> Result<(Tensor, Tensor)> {
        let (xa, xb) = self.halves(x)?;
        match self.kind {
            Coupling::Additive => {
                let yb = xb.add(&self.net.forward(&xa)?)?;
                Ok((Tensor::concat(&[&xa, &yb], 1)?, logdet.clone()))
            }
            Coupling::Affine => {
                // The engine's fused op computes exactly the formulas of this file's
                // module doc (and `shift_and_logit` for the inverse pass).
                let (yb, dlogdet) = Tensor::affine_coupling(&xb, &self.net.forward(&xa)?)?;
                Ok((Tensor::concat(&[&xa, &yb], 1)?, logdet.add(&dlogdet)?))
            }
        }
    }

    fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        let (ya, yb) = self.halves(y)?;
        let xb = match self.kind {
            Coupling::Additive => yb.sub(&self.net.forward(&ya)?)?,
            Coupling::Affine => {
                let (shift, logit) = self.shift_and_logit(&ya)?;
                yb.div(&logit.sigmoid()?)?.sub(&shift)?
            }
        };
        Tensor::concat(&[&ya, &xb], 1)
    }
}
