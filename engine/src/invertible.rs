//! Reversible backward: differentiating through invertible blocks without storing their
//! activations (i-RevNet, MemCNN).
//!
//! Ordinary reverse mode keeps every intermediate tensor a backward closure reads, so a
//! chain of `n` blocks holds `n` blocks' worth of activations until the backward pass
//! reaches them. When each block is invertible, its input can be rebuilt from its output,
//! and only the chain's last output needs to stay alive.
//!
//! **The op.** [`reversible`] runs a sequence of [`Invertible`] blocks `y = f_n(…f_1(x))`
//! as *one* op of the tape, with outputs `y` and `logdet = Σ_i logdet_i`:
//!
//! - Forward: every block runs under [`crate::no_grad`], so no block records anything;
//!   each intermediate is dropped as soon as the next block has read it. The op records
//!   its input `x` and every parameter the blocks read ([`Invertible::params`]) as its
//!   inputs, so the outer tape routes their gradients as for any other op.
//! - Backward, given `dy` and `dlogdet`, for `i = n … 1`: rebuild the block's input
//!   `x_{i-1} = f_i⁻¹(y_i)` (no recording), make it a fresh leaf, rerun `f_i` on it with
//!   recording on ([`crate::autograd::with_recording`]), and back-propagate through that
//!   small local graph with [`Tensor::backward_from`], seeded with `(y_i, dy_i)` and
//!   `(logdet_i, dlogdet)`. That yields the parameters' gradients and `dy_{i-1}`, the
//!   gradient of the rebuilt input, which seeds the next block down. The local graph is
//!   dropped before the next block is rebuilt. The rebuild-and-rerun is
//!   [`Invertible::rebuild`], which a block may override to share work between its
//!   inverse and its forward.
//!
//! Why one op over the whole sequence rather than one op per block: an op's node keeps
//! its inputs alive (the tape needs their ids to route gradients), so a chain of per-block
//! ops would keep every block's input, exactly what this is meant to avoid. The sequence
//! op keeps only `x` (which its producer holds anyway) and `y`.
//!
//! **Two outputs, one backward.** The log-determinant is a second tape entry, made after
//! `y` (so it has the larger id and the tape reaches it first). Its closure only stashes
//! `dlogdet` for `y`'s closure, which then does the single reconstruction pass with both
//! gradients. It also hands `y` a zero gradient, so `y`'s closure runs even when the loss
//! reads only the log-determinant.
//!
//! **Costs.**
//! - Time: one extra forward and one inverse per block in the backward pass (a stored
//!   backward needs neither). An affine or additive coupling's inverse runs the same
//!   network as its forward, so by default that network runs three times per step
//!   instead of once; Glow's coupling overrides [`Invertible::rebuild`] to run it twice,
//!   which makes a step about a third more work than a stored one (forward 1, backward
//!   about 2, plus the rerun 1).
//! - Memory: the peak is one block's local graph plus the parameters' gradients, instead
//!   of every block's activations: it does not grow with the number of blocks.
//! - Accuracy: in `f32`, `f⁻¹(f(x))` is `x` only up to rounding, and the error of each
//!   rebuilt input feeds the next inversion, so the gradients are those at a slightly
//!   moved point. The drift grows with depth and with how ill-conditioned the blocks are
//!   (a coupling whose scales shrink, a 1x1 convolution far from orthogonal);
//!   [`reconstruction_drift`] measures it. Each block's parameters must not change
//!   between its forward and backward, and its forward must be deterministic (no
//!   dropout, no data-dependent initialisation on the rerun).
//!
//! ```
//! use std::sync::Arc;
//! use engine::invertible::{reversible, Invertible};
//! use engine::{Device, Result, Tensor};
//!
//! /// `y = x · e^s`, `logdet = Σ s` per row.
//! struct Scale(Tensor);
//! impl Invertible for Scale {
//!     fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
//!         let y = x.mul(&self.0.exp()?)?;
//!         let logdet = self.0.sum_all()?.expand(&[x.shape()[0]])?;
//!         Ok((y, logdet))
//!     }
//!     fn inverse(&self, y: &Tensor) -> Result<Tensor> {
//!         y.mul(&self.0.neg()?.exp()?)
//!     }
//!     fn params(&self) -> Vec<Tensor> {
//!         vec![self.0.clone()]
//!     }
//! }
//!
//! let dev = Device::Cpu;
//! let s = Tensor::from_slice(&[0.5, -0.25], &[2], &dev)?.with_grad();
//! let x = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[2, 2], &dev)?.with_grad();
//! let blocks: Vec<Arc<dyn Invertible>> = vec![Arc::new(Scale(s.clone())), Arc::new(Scale(s.clone()))];
//! let (y, logdet) = reversible(&blocks, &x)?;
//! let grads = y.sum_all()?.add(&logdet.sum_all()?)?.backward()?;
//! // y = x · e^(2s): d/dx = e^(2s) per column
//! let dx = grads.get(&x).unwrap().to_vec()?;
//! assert!((dx[0] - 1f32.exp()).abs() < 1e-5 && (dx[1] - (-0.5f32).exp()).abs() < 1e-5);
//! # Ok::<(), engine::Error>(())
//! ```
//!
//! Tests: `tests/reversible.rs` (gradients against stored mode, drift, peak memory, on
//! every device).

use std::sync::{Arc, Mutex};

use crate::autograd::{is_recording, no_grad, with_recording};
use crate::shape;
use crate::{Error, Result, Tensor};

/// An invertible function with a log-determinant, usable by [`reversible`].
pub trait Invertible: Send + Sync {
    /// `y = f(x)` and `log|det ∂f/∂x|` per sample (the same shape for every block of a
    /// sequence, e.g. `[B]`). Must read its parameters from [`Invertible::params`]'s
    /// tensors, and give the same result when run again on the same input.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)>;
    /// `x = f⁻¹(y)`.
    fn inverse(&self, y: &Tensor) -> Result<Tensor>;
    /// Every tensor the forward reads that may need a gradient (trainable parameters),
    /// as the current leaves. Called after the forward, so a block may create them there.
    fn params(&self) -> Vec<Tensor>;

    /// The backward pass's step for this block: rebuilds the input from `y` and reruns
    /// the forward on it with recording on. The default inverts without recording, makes
    /// the input one fresh leaf and calls [`Invertible::forward`]. A block whose inverse
    /// computes part of its forward can override it to compute that part once: a
    /// coupling's network reads the half that passes unchanged, so it can run the
    /// network once, recorded, on that half as a leaf of its own, and invert the other
    /// half with the result (see [`Rebuilt::parts`]).
    fn rebuild(&self, y: &Tensor) -> Result<Rebuilt> {
        let x = no_grad(|| self.inverse(y))?.detach().with_grad();
        let (y, logdet) = with_recording(|| self.forward(&x))?;
        Ok(Rebuilt {
            parts: vec![x],
            axis: 0,
            y,
            logdet,
        })
    }
}

/// What [`Invertible::rebuild`] returns: a local graph from the rebuilt input.
pub struct Rebuilt {
    /// The rebuilt input as fresh leaves that the local graph starts from; the input is
    /// their concatenation along `axis` (one part: the input itself), and so is its
    /// gradient.
    pub parts: Vec<Tensor>,
    /// The axis `parts` are joined along.
    pub axis: usize,
    /// The forward's output, recomputed from `parts` with recording on.
    pub y: Tensor,
    /// The forward's log-determinant, likewise.
    pub logdet: Tensor,
}

/// `parts` joined along `axis`.
fn join(parts: &[Tensor], axis: usize) -> Result<Tensor> {
    match parts {
        [one] => Ok(one.clone()),
        _ => Tensor::concat(&parts.iter().collect::<Vec<_>>(), axis),
    }
}

/// Runs `blocks` in order on `x` and returns `(y, Σ logdet)`, keeping no intermediate
/// activation for the backward pass: see the module doc. With recording off, or when
/// neither `x` nor any parameter requires grad, it is the plain composition.
pub fn reversible(blocks: &[Arc<dyn Invertible>], x: &Tensor) -> Result<(Tensor, Tensor)> {
    if blocks.is_empty() {
        return Err(Error::invalid("reversible", "needs at least one block"));
    }
    let (y, logdet) = no_grad(|| chain(blocks, x))?;
    let ranges: Vec<usize> = blocks.iter().map(|b| b.params().len()).collect();
    let params: Vec<Tensor> = blocks.iter().flat_map(|b| b.params()).collect();
    let tracked = x.requires_grad() || params.iter().any(Tensor::requires_grad);
    if !is_recording() || !tracked {
        return Ok((y, logdet));
    }
    let mut inputs: Vec<&Tensor> = vec![x];
    inputs.extend(params.iter());
    let stash: Arc<Mutex<Option<Tensor>>> = Arc::new(Mutex::new(None));
    let blocks: Vec<Arc<dyn Invertible>> = blocks.to_vec();
    let y_stash = stash.clone();
    let y_out = Tensor::from_op(
        y.storage().clone(),
        y.shape().to_vec(),
        "reversible",
        &inputs,
        move |a| {
            let dlogdet = y_stash.lock().unwrap_or_else(|e| e.into_inner()).take();
            backward(&blocks, &ranges, a.out, a.dy, dlogdet, a.inputs)
        },
    )?;
    let logdet_out = Tensor::from_op(
        logdet.storage().clone(),
        logdet.shape().to_vec(),
        "reversible_logdet",
        &[&y_out],
        move |a| {
            *stash.lock().unwrap_or_else(|e| e.into_inner()) = Some(a.dy.clone());
            Ok(vec![Some(a.inputs[0].zeros_like()?)])
        },
    )?;
    Ok((y_out, logdet_out))
}

/// The plain composition: `(f_n(…f_1(x)), Σ logdet_i)`.
fn chain(blocks: &[Arc<dyn Invertible>], x: &Tensor) -> Result<(Tensor, Tensor)> {
    let mut y = x.clone();
    let mut total: Option<Tensor> = None;
    for block in blocks {
        let (next, logdet) = block.forward(&y)?;
        y = next;
        total = Some(match total {
            None => logdet,
            Some(t) if t.shape() == logdet.shape() => t.add(&logdet)?,
            Some(t) => {
                return Err(Error::shape(
                    "reversible",
                    format!(
                        "blocks give log-determinants of shapes {} and {}",
                        shape::fmt(t.shape()),
                        shape::fmt(logdet.shape())
                    ),
                ))
            }
        });
    }
    Ok((y, total.expect("at least one block")))
}

/// The sequence's backward: rebuild, rerun and differentiate each block, last first.
/// `inputs` are the op's inputs, `[x, params of block 1, params of block 2, …]`, and
/// `counts[i]` how many parameters block `i` has.
fn backward(
    blocks: &[Arc<dyn Invertible>],
    counts: &[usize],
    y: &Tensor,
    dy: &Tensor,
    dlogdet: Option<Tensor>,
    inputs: &[Tensor],
) -> Result<Vec<Option<Tensor>>> {
    let mut dparams: Vec<Option<Tensor>> = vec![None; inputs.len() - 1];
    let mut end = inputs.len() - 1;
    let mut y = y.clone();
    let mut dy = dy.clone();
    for (block, &count) in blocks.iter().zip(counts).rev() {
        let start = end - count;
        let recorded = &inputs[1 + start..1 + end];
        let Rebuilt {
            parts,
            axis,
            y: y_again,
            logdet,
        } = block.rebuild(&y)?;
        let now = block.params();
        if now.len() != count || now.iter().zip(recorded).any(|(a, b)| a.id() != b.id()) {
            return Err(Error::Autodiff(
                "reversible: a block's parameters changed between its forward and backward \
                 (update parameters only after backward)"
                    .into(),
            ));
        }
        let mut seeds = vec![(y_again, dy)];
        if let Some(dld) = &dlogdet {
            seeds.push((logdet, dld.clone()));
        }
        let mut grads = Tensor::backward_from(&seeds)?;
        for (slot, p) in dparams[start..end].iter_mut().zip(recorded) {
            // remove(): a tensor listed twice gets its gradient once.
            *slot = match (slot.take(), grads.remove(p)) {
                (Some(acc), Some(g)) => Some(acc.add(&g)?),
                (acc, g) => acc.or(g),
            };
        }
        let dparts = parts
            .iter()
            .map(|p| grads.remove(p).map_or_else(|| p.zeros_like(), Ok))
            .collect::<Result<Vec<_>>>()?;
        dy = join(&dparts, axis)?;
        y = no_grad(|| join(&parts, axis))?.detach();
        end = start;
    }
    let mut out = Vec::with_capacity(inputs.len());
    out.push(Some(dy));
    out.extend(dparams);
    Ok(out)
}

/// How far rebuilt inputs drift from the stored ones: runs `blocks` on `x` keeping every
/// block's input, then rebuilds them from the last output by the inverses, as the
/// backward of [`reversible`] does (each from the previous rebuild). Returns, for each
/// block (first block first), the largest `|rebuilt − stored|` of its input divided by
/// the largest `|stored|` (a relative error; 0 for an all-zero input).
pub fn reconstruction_drift(blocks: &[Arc<dyn Invertible>], x: &Tensor) -> Result<Vec<f32>> {
    no_grad(|| {
        let mut stored = vec![x.clone()];
        for block in blocks {
            let (y, _) = block.forward(stored.last().expect("non-empty"))?;
            stored.push(y);
        }
        let mut y = stored.pop().expect("non-empty");
        let mut drift = vec![0.0; blocks.len()];
        for (i, block) in blocks.iter().enumerate().rev() {
            let rebuilt = block.inverse(&y)?;
            let (a, b) = (rebuilt.to_vec()?, stored[i].to_vec()?);
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(&b)
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            drift[i] = if scale > 0.0 { err / scale } else { err };
            y = rebuilt;
        }
        Ok(drift)
    })
}
