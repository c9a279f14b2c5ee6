//! Split: factor out half the channels under a prior conditioned on the other half.
//!
//! `z1, z2` = first and second half of the channels. `h = ZeroConv3x3(z1)` has as many
//! channels as `z`; `mean = h[:, 0::2]`, `logs = h[:, 1::2]`, and `log p(z2 | z1)` joins
//! the objective. Only `z1` flows on to the next level; `z2` is kept as a latent, since
//! decoding needs it back.

use engine::backend::fused::Pairing;
use engine::{Device, Result, Tensor};

use super::conv::ZeroConv2d;
use super::{channels, dims4, split_interleaved, ActNorm, Module};
use crate::param::Param;

/// The split at the end of every level but the last.
#[derive(Debug)]
pub struct Split {
    /// The learned conditional prior.
    pub prior: ZeroConv2d,
}

impl Split {
    /// A split of `channels` (even) channels; state names `{prefix}.conv.*`.
    pub fn new(prefix: &str, channels: usize, device: &Device) -> Result<Self> {
        Ok(Split {
            prior: ZeroConv2d::new(&format!("{prefix}.conv"), channels / 2, channels, device)?,
        })
    }

    /// `(mean, logs)` of `z2` given `z1`.
    pub fn prior(&self, z1: &Tensor) -> Result<(Tensor, Tensor)> {
        split_interleaved(&self.prior.forward(z1)?)
    }

    /// `z → (z1, z2, log p(z2 | z1))`, the last per image `[B]`.
    pub fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let [_, c, _, _] = dims4(z)?;
        let (z1, z2) = (channels(z, 0, c / 2)?, channels(z, c / 2, c / 2)?);
        let logp = self.log_prob(&z1, &z2)?;
        Ok((z1, z2, logp))
    }

    /// `log p(z2 | z1)` per image `[B]`.
    pub fn log_prob(&self, z1: &Tensor, z2: &Tensor) -> Result<Tensor> {
        let h = self.prior.forward(z1)?;
        Tensor::gaussian_log_prob(z2, &h, Pairing::Interleaved)
    }
}

impl Module for Split {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        self.prior.visit_params(f);
    }
    fn visit_actnorms<'a>(&'a self, _: &mut dyn FnMut(&'a ActNorm)) {}
}
