//! Channel mixing between couplings: the invertible 1x1 convolution and the fixed
//! permutations of the paper's ablation.
//!
//! A 1x1 convolution applies the same `C × C` matrix `W` at every pixel, so its Jacobian
//! is block-diagonal with `H·W` copies of `W`: `log|det| = H · W · log|det W|`.
//! - Plain: `W` is a parameter; `log|det W|` and `W⁻¹` come from an `f64` LU on the host.
//! - LU-decomposed: `W = P · (L + I) · (U + diag(sign_s · e^log_s))` with `P` and `sign_s`
//!   fixed, `L` strictly lower and `U` strictly upper (stored full and masked, as the
//!   common PyTorch port does, so parameter counts and weights carry over), and
//!   `log|det W| = Σ log_s`.
//! - Fixed permutations (reverse, random shuffle) have `log|det| = 0`.
//!
//! Both 1x1 forms start from a random rotation: the `Q` of a QR decomposition of a
//! Gaussian matrix.

use engine::linalg::{qr_q, Lu};
use engine::{Device, Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::{dims4, ActNorm, Flow, Module};
use crate::param::Param;

/// How the 1x1 convolution's weight is parametrised.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per flow step; boxing would only add a hop
enum Weight {
    /// `W` directly, `[C, C]`.
    Plain(Param),
    /// `W = P (L ⊙ mask_l + I)(U ⊙ mask_u + diag(sign_s e^log_s))`.
    Lu {
        p: Param,
        sign_s: Param,
        lower: Param,
        upper: Param,
        log_s: Param,
        /// Strictly-lower mask, its transpose and the identity (constants, not state).
        l_mask: Tensor,
        u_mask: Tensor,
        eye: Tensor,
    },
}

/// Invertible 1x1 convolution.
#[derive(Debug)]
pub struct InvConv {
    channels: usize,
    weight: Weight,
}

/// Row-major `[n, n]` f32 tensor from f64 values.
fn matrix(values: &[f64], n: usize, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(values.iter().map(|&v| v as f32).collect(), &[n, n], device)
}

impl InvConv {
    /// A random rotation of `channels` channels, plain or LU-decomposed.
    pub fn new(
        prefix: &str,
        channels: usize,
        lu: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let n = channels;
        let mut rng = StdRng::seed_from_u64(seed);
        let gauss: Vec<f64> = (0..n * n).map(|_| rng.sample(StandardNormal)).collect();
        let q = qr_q(&gauss, n)?;
        let weight = if !lu {
            Weight::Plain(Param::new(
                format!("{prefix}.weight"),
                matrix(&q, n, device)?,
            ))
        } else {
            let (p, l, u) = Lu::new(&q, n)?.plu();
            let s: Vec<f64> = (0..n).map(|i| u[i * n + i]).collect();
            let strict_upper: Vec<f64> = (0..n * n)
                .map(|k| if k % n > k / n { u[k] } else { 0.0 })
                .collect();
            let mask: Vec<f64> = (0..n * n)
                .map(|k| if k % n < k / n { 1.0 } else { 0.0 })
                .collect();
            let eye: Vec<f64> = (0..n * n)
                .map(|k| if k % n == k / n { 1.0 } else { 0.0 })
                .collect();
            let l_mask = matrix(&mask, n, device)?;
            Weight::Lu {
                p: Param::buffer(format!("{prefix}.p"), matrix(&p, n, device)?),
                sign_s: Param::buffer(
                    format!("{prefix}.sign_s"),
                    Tensor::from_vec(s.iter().map(|v| v.signum() as f32).collect(), &[n], device)?,
                ),
                lower: Param::new(format!("{prefix}.lower"), matrix(&l, n, device)?),
                upper: Param::new(format!("{prefix}.upper"), matrix(&strict_upper, n, device)?),
                log_s: Param::new(
                    format!("{prefix}.log_s"),
                    Tensor::from_vec(
                        s.iter().map(|v| v.abs().ln() as f32).collect(),
                        &[n],
                        device,
                    )?,
                ),
                u_mask: l_mask.transpose(0, 1)?,
                l_mask,
                eye: matrix(&eye, n, device)?,
            }
        };
        Ok(InvConv { channels, weight })
    }

    /// `W` as a `[C, C]` matrix and `log|det W|` as a scalar.
    pub fn weight_and_logdet(&self) -> Result<(Tensor, Tensor)> {
        match &self.weight {
            Weight::Plain(w) => {
                let w = w.get();
                let logdet = w.log_abs_det()?;
                Ok((w, logdet))
            }
            Weight::Lu {
                p,
                sign_s,
                lower,
                upper,
                log_s,
                l_mask,
                u_mask,
                eye,
            } => {
                let log_s = log_s.get();
                let l = lower.get().mul(l_mask)?.add(eye)?;
                let diag = eye.mul(&sign_s.get().mul(&log_s.exp()?)?)?;
                let u = upper.get().mul(u_mask)?.add(&diag)?;
                let w = p.get().matmul(&l.matmul(&u)?)?;
                Ok((w, log_s.sum_all()?))
            }
        }
    }

    fn conv(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let [_, c, _, _] = dims4(x)?;
        if c != self.channels {
            return Err(Error::shape(
                "InvConv",
                format!("expects {} channels, got {:?}", self.channels, x.shape()),
            ));
        }
        x.conv2d(&w.reshape(&[c, c, 1, 1])?, None)
    }
}

impl Module for InvConv {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        match &self.weight {
            Weight::Plain(w) => f(w),
            Weight::Lu {
                p,
                sign_s,
                lower,
                upper,
                log_s,
                ..
            } => {
                f(p);
                f(sign_s);
                f(lower);
                f(log_s);
                f(upper);
            }
        }
    }
    fn visit_actnorms<'a>(&'a self, _: &mut dyn FnMut(&'a ActNorm)) {}
}

impl Flow for InvConv {
    fn forward(&self, x: &Tensor, logdet: &Tensor) -> Result<(Tensor, Tensor)> {
        let [_, _, h, w] = dims4(x)?;
        let (weight, wlogdet) = self.weight_and_logdet()?;
        let y = self.conv(x, &weight)?;
        Ok((y, logdet.add(&wlogdet.scale((h * w) as f32)?)?))
    }

    fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        let (weight, _) = self.weight_and_logdet()?;
        self.conv(y, &weight.inverse()?)
    }
}

/// A fixed channel permutation (reverse or random shuffle); log-det 0.
#[derive(Debug)]
pub struct FixedPermutation {
    /// Output channel `j` is input channel `indices[j]`, stored as floats in the state.
    indices: Param,
}

impl FixedPermutation {
    /// Channel reversal.
    pub fn reverse(prefix: &str, channels: usize, device: &Device) -> Result<Self> {
        Self::from_indices(prefix, (0..channels).rev().collect(), device)
    }

    /// A random shuffle drawn from `seed`.
    pub fn shuffle(prefix: &str, channels: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut idx: Vec<usize> = (0..channels).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(seed));
        Self::from_indices(prefix, idx, device)
    }

    fn from_indices(prefix: &str, idx: Vec<usize>, device: &Device) -> Result<Self> {
        let n = idx.len();
        let values: Vec<f32> = idx.into_iter().map(|i| i as f32).collect();
        Ok(FixedPermutation {
            indices: Param::buffer(
                format!("{prefix}.indices"),
                Tensor::from_vec(values, &[n], device)?,
            ),
        })
    }

    /// The permutation as indices (read from the state, so a loaded one is used).
    fn indices(&self) -> Result<Vec<usize>> {
        Ok(self
            .indices
            .get()
            .to_vec()?
            .into_iter()
            .map(|v| v as usize)
            .collect())
    }
}

impl Module for FixedPermutation {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param)) {
        f(&self.indices);
    }
    fn visit_actnorms<'a>(&'a self, _: &mut dyn FnMut(&'a ActNorm)) {}
}

impl Flow for FixedPermutation {
    fn forward(&self, x: &Tensor, logdet: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((x.gather(1, &self.indices()?)?, logdet.clone()))
    }

    fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        let inverse = engine::shape::invert_permutation(&self.indices()?);
        y.gather(1, &inverse)
    }
}
