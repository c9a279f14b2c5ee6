//! Glow's layers. Each invertible layer implements [`Flow`]: a forward pass that also
//! returns its log-determinant, and an exact inverse.
//!
//! | file | layer |
//! |---|---|
//! | `actnorm.rs` | ActNorm with data-dependent initialisation |
//! | `conv.rs` | the non-invertible pieces: Conv2d + ActNorm, ZeroConv2d, LinearZeros |
//! | `permute.rs` | invertible 1x1 convolution (plain and LU) and fixed permutations |
//! | `coupling.rs` | affine and additive coupling with their network |
//! | `squeeze.rs` | space-to-depth |
//! | `split.rs` | factoring out half the channels under a learned prior |

pub mod actnorm;
pub mod conv;
pub mod coupling;
pub mod permute;
pub mod split;
pub mod squeeze;

use engine::{Result, Tensor};

use crate::param::Param;
pub use actnorm::ActNorm;

/// Something that owns parameters and ActNorms, visited in a fixed order.
pub trait Module {
    /// Calls `f` on every parameter and buffer.
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&'a Param));
    /// Calls `f` on every ActNorm (whose initialised flag is part of the state).
    fn visit_actnorms<'a>(&'a self, f: &mut dyn FnMut(&'a ActNorm));
}

/// An invertible layer `y = f(x)` on `[B, C, H, W]` tensors.
pub trait Flow: Module {
    /// `y = f(x)` and `logdet + log|det ∂f/∂x|` per image (`logdet` is `[B]`).
    fn forward(&self, x: &Tensor, logdet: &Tensor) -> Result<(Tensor, Tensor)>;
    /// `x = f⁻¹(y)`.
    fn inverse(&self, y: &Tensor) -> Result<Tensor>;
}

/// `x[:, start..start + len]`, the channel slice every layer uses.
pub(crate) fn channels(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    x.slice(1, start, len)
}

/// `(h[:, 0::2], h[:, 1::2])`: the interleaved halves of the channel axis ("cross" split
/// in the ports), via a reshape to `[B, C/2, 2, H, W]`.
pub(crate) fn split_interleaved(h: &Tensor) -> Result<(Tensor, Tensor)> {
    let [b, c, hh, w] = dims4(h)?;
    let v = h.reshape(&[b, c / 2, 2, hh, w])?;
    let even = v.slice(2, 0, 1)?.reshape(&[b, c / 2, hh, w])?;
    let odd = v.slice(2, 1, 1)?.reshape(&[b, c / 2, hh, w])?;
    Ok((even, odd))
}

/// The four extents of an NCHW tensor, or an error naming the shape.
pub(crate) fn dims4(x: &Tensor) -> Result<[usize; 4]> {
    match x.shape() {
        &[b, c, h, w] => Ok([b, c, h, w]),
        s => Err(engine::Error::shape(
            "glow",
            format!("expected an NCHW tensor [B, C, H, W], got {s:?}"),
        )),
    }
}
