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
//! **Setting parts aside.** A multi-scale flow (Glow, RealNVP) stops transforming half of
//! its channels after each level: the split `x → (y, z)` sends `y` on and keeps `z` as a
//! latent, scored by a prior computed from `y`. A [`Factor`] block is such a step, and a
//! [`Chain`] is a sequence of [`Block`]s, each an [`Invertible`] map or a [`Factor`]; it
//! returns the last `y`, `Σ logdet`, and every factor's `(z, term)`. Each `z` is an
//! output of the op, so the op keeps it anyway and the backward pass rebuilds the
//! factor's input from `(y, z)` like any other block's. All the outputs of a flow
//! together are the size of its input, so a whole multi-scale flow keeps no more than
//! that for its backward pass, however many levels and steps it has. ([`reversible`] is
//! the chain of maps only.)
//!
//! **Several outputs, one backward.** Every output but `y` (the log-determinant, each
//! `z` and `term`) is a tape entry of its own, made after `y` (so it has a larger id and
//! the tape reaches it first). Its closure only stashes its gradient for `y`'s closure,
//! which then does the single reconstruction pass with all of them. It also hands `y` a
//! zero gradient, so `y`'s closure runs even when the loss reads only the other outputs.
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
//! The same blocks also run as ordinary ops that keep every activation,
//! [`Chain::run_stored`], so that a model runs one chain in either memory mode; a block
//! made of layers that add to a running log-determinant passes it through them there
//! ([`Invertible::forward_from`]).
//!
//! Tests: `tests/reversible.rs` (gradients against ordinary ops and stored mode, a
//! factor's outputs, drift) and `tests/reversible_memory.rs` (peak and kept bytes), on
//! every device.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::autograd::{is_recording, no_grad, with_recording};
use crate::shape;
use crate::{Error, Result, Tensor};

/// An invertible function with a log-determinant, usable by [`reversible`] and [`Chain`].
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
        rebuild_by_inverse(self, y)
    }

    /// [`Invertible::forward`] continuing `logdet`, the running log-determinant of the
    /// blocks before it: what [`Chain::run_stored`] calls. The default adds the block's
    /// own; a block made of layers that each add to a running sum overrides it to pass
    /// `logdet` through them, so that the sum is taken in their order.
    fn forward_from(&self, x: &Tensor, logdet: &Tensor) -> Result<(Tensor, Tensor)> {
        let (y, own) = self.forward(x)?;
        Ok((y, logdet.add(&own)?))
    }
}

/// [`Invertible::rebuild`]'s default: inverts `y` without recording, makes the input one
/// fresh leaf and reruns [`Invertible::forward`] on it, recorded. For a block that
/// overrides `rebuild` for some of its cases and keeps this for the others.
pub fn rebuild_by_inverse<B: Invertible + ?Sized>(block: &B, y: &Tensor) -> Result<Rebuilt> {
    let x = no_grad(|| block.inverse(y))?.detach().with_grad();
    let (y, logdet) = with_recording(|| block.forward(&x))?;
    Ok(Rebuilt {
        parts: vec![x],
        axis: 0,
        y,
        logdet,
        z: None,
    })
}

/// A block that sets part of its input aside, as a multi-scale flow's split does:
/// `x → (y, z, term)`. `y` goes on through the chain; `z` leaves it as an output of the
/// op of its own (a latent), so the backward pass has it back without storing anything
/// more; `term` is a per-sample scalar that depends on both (Glow: `log p(z | y)` under
/// a prior computed from `y`). The map `x ↦ (y, z)` must be a bijection, typically a
/// partition of `x`'s channels, with `x` rebuilt as their concatenation.
pub trait Factor: Send + Sync {
    /// `(y, z, term)`, with `term` of the same shape as the chain's log-determinants.
    /// The same rules as [`Invertible::forward`] apply.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)>;
    /// `x` from `y` and `z`.
    fn inverse(&self, y: &Tensor, z: &Tensor) -> Result<Tensor>;
    /// Every tensor the forward reads that may need a gradient, as for
    /// [`Invertible::params`].
    fn params(&self) -> Vec<Tensor>;

    /// As [`Invertible::rebuild`], from the output `y` and the set-aside `z`. The default
    /// rebuilds `x` as one leaf and reruns [`Factor::forward`]; a partition can instead
    /// make `y` and `z` the leaves themselves (`parts = [y, z]`) and skip the copies.
    fn rebuild(&self, y: &Tensor, z: &Tensor) -> Result<Rebuilt> {
        let x = no_grad(|| self.inverse(y, z))?.detach().with_grad();
        let (y, z, term) = with_recording(|| self.forward(&x))?;
        Ok(Rebuilt {
            parts: vec![x],
            axis: 0,
            y,
            logdet: term,
            z: Some(z),
        })
    }
}

/// What [`Invertible::rebuild`] and [`Factor::rebuild`] return: a local graph from the
/// rebuilt input.
pub struct Rebuilt {
    /// The rebuilt input as fresh leaves that the local graph starts from; the input is
    /// their concatenation along `axis` (one part: the input itself), and so is its
    /// gradient.
    pub parts: Vec<Tensor>,
    /// The axis `parts` are joined along.
    pub axis: usize,
    /// The forward's output, recomputed from `parts` with recording on.
    pub y: Tensor,
    /// The forward's log-determinant (a [`Factor`]'s `term`), likewise.
    pub logdet: Tensor,
    /// A [`Factor`]'s set-aside `z`, likewise; `None` for an [`Invertible`].
    pub z: Option<Tensor>,
}

/// One element of a [`Chain`].
#[derive(Clone)]
pub enum Block {
    /// A bijection `x → y` with a log-determinant.
    Map(Arc<dyn Invertible>),
    /// A bijection `x → (y, z)` whose `z` leaves the chain, with a scalar term.
    Factor(Arc<dyn Factor>),
}

impl Block {
    fn params(&self) -> Vec<Tensor> {
        match self {
            Block::Map(b) => b.params(),
            Block::Factor(f) => f.params(),
        }
    }
}

/// What a [`Chain`] produces.
pub struct Reversed {
    /// The last block's output.
    pub y: Tensor,
    /// `Σ logdet` over the [`Block::Map`]s.
    pub logdet: Tensor,
    /// Each [`Block::Factor`]'s `(z, term)`, in chain order.
    pub factored: Vec<(Tensor, Tensor)>,
}

/// A sequence of [`Block`]s run as one op of the tape that keeps no intermediate
/// activation for the backward pass: see the module doc. Each of its outputs (`y`, the
/// log-determinant, every `z` and `term`) may feed the loss.
#[derive(Clone)]
pub struct Chain {
    blocks: Vec<Block>,
}

/// `parts` joined along `axis`.
fn join(parts: &[Tensor], axis: usize) -> Result<Tensor> {
    match parts {
        [one] => Ok(one.clone()),
        _ => Tensor::concat(&parts.iter().collect::<Vec<_>>(), axis),
    }
}

/// The slots where the outputs other than `y` leave their gradients for `y`'s backward.
type Slots = Arc<Mutex<Vec<Option<Tensor>>>>;

fn lock(slots: &Slots) -> MutexGuard<'_, Vec<Option<Tensor>>> {
    slots.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `blocks` in order on `x` and returns `(y, Σ logdet)`, keeping no intermediate
/// activation for the backward pass: a [`Chain`] of [`Block::Map`]s only. With recording
/// off, or when neither `x` nor any parameter requires grad, it is the plain composition.
pub fn reversible(blocks: &[Arc<dyn Invertible>], x: &Tensor) -> Result<(Tensor, Tensor)> {
    let out = Chain::maps(blocks).run(x)?;
    Ok((out.y, out.logdet))
}

/// How far rebuilt inputs drift from the stored ones ([`Chain::drift`] of a chain of
/// [`Block::Map`]s).
pub fn reconstruction_drift(blocks: &[Arc<dyn Invertible>], x: &Tensor) -> Result<Vec<f32>> {
    Chain::maps(blocks).drift(x)
}

impl Chain {
    /// A chain of `blocks`, first block first.
    pub fn new(blocks: Vec<Block>) -> Chain {
        Chain { blocks }
    }

    /// A chain of invertible maps only.
    pub fn maps(blocks: &[Arc<dyn Invertible>]) -> Chain {
        Chain::new(blocks.iter().cloned().map(Block::Map).collect())
    }

    /// The blocks, first first.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Runs the chain on `x`. With recording off, or when neither `x` nor any parameter
    /// requires grad, it is the plain composition; otherwise its outputs are one op
    /// whose backward rebuilds each block's input from its output.
    pub fn run(&self, x: &Tensor) -> Result<Reversed> {
        if !self.blocks.iter().any(|b| matches!(b, Block::Map(_))) {
            return Err(Error::invalid(
                "reversible",
                "needs at least one invertible map (the log-determinant comes from them)",
            ));
        }
        let plain = no_grad(|| self.compose(x))?;
        let counts: Vec<usize> = self.blocks.iter().map(|b| b.params().len()).collect();
        let params: Vec<Tensor> = self.blocks.iter().flat_map(Block::params).collect();
        let tracked = x.requires_grad() || params.iter().any(Tensor::requires_grad);
        if !is_recording() || !tracked {
            return Ok(plain);
        }
        let mut inputs: Vec<&Tensor> = vec![x];
        inputs.extend(params.iter());
        // Slot 0: the log-determinant's gradient; 1 + 2j and 2 + 2j: factor j's z and term.
        let slots: Slots = Arc::new(Mutex::new(vec![None; 1 + 2 * plain.factored.len()]));
        let zs: Vec<Tensor> = plain.factored.iter().map(|(z, _)| z.clone()).collect();
        let chain = self.clone();
        let y_slots = slots.clone();
        let y = Tensor::from_op(
            plain.y.storage().clone(),
            plain.y.shape().to_vec(),
            "reversible",
            &inputs,
            move |a| {
                let taken: Vec<Option<Tensor>> =
                    lock(&y_slots).iter_mut().map(Option::take).collect();
                chain.backward(&counts, a.out, a.dy, taken, &zs, a.inputs)
            },
        )?;
        // The other outputs come after `y` (larger ids, so the tape reaches them first).
        // Each only leaves its gradient in its slot for `y`'s backward, which then does
        // the single reconstruction pass with all of them, and hands `y` a zero gradient
        // so that `y`'s backward runs even when the loss reads only the other outputs.
        let satellite = |t: &Tensor, slot: usize, op: &'static str| {
            let slots = slots.clone();
            Tensor::from_op(
                t.storage().clone(),
                t.shape().to_vec(),
                op,
                &[&y],
                move |a| {
                    lock(&slots)[slot] = Some(a.dy.clone());
                    Ok(vec![Some(a.inputs[0].zeros_like()?)])
                },
            )
        };
        let logdet = satellite(&plain.logdet, 0, "reversible_logdet")?;
        let factored = plain
            .factored
            .iter()
            .enumerate()
            .map(|(j, (z, term))| {
                Ok((
                    satellite(z, 1 + 2 * j, "reversible_factored")?,
                    satellite(term, 2 + 2 * j, "reversible_term")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Reversed {
            y,
            logdet,
            factored,
        })
    }

    /// The chain as ordinary ops of the tape, every activation kept for the backward
    /// pass (stored mode): each map continues the running log-determinant, which starts
    /// at `logdet` ([`Invertible::forward_from`]), and each factor's `(z, term)` is
    /// collected in order. The same blocks as [`Chain::run`], the same values up to
    /// rounding (`run` sums each block's log-determinant from zero).
    pub fn run_stored(&self, x: &Tensor, logdet: Tensor) -> Result<Reversed> {
        let (mut y, mut logdet) = (x.clone(), logdet);
        let mut factored = Vec::new();
        for block in &self.blocks {
            match block {
                Block::Map(b) => (y, logdet) = b.forward_from(&y, &logdet)?,
                Block::Factor(f) => {
                    let (next, z, term) = f.forward(&y)?;
                    y = next;
                    factored.push((z, term));
                }
            }
        }
        Ok(Reversed {
            y,
            logdet,
            factored,
        })
    }

    /// The plain composition.
    fn compose(&self, x: &Tensor) -> Result<Reversed> {
        let mut y = x.clone();
        let mut total: Option<Tensor> = None;
        let mut factored = Vec::new();
        for block in &self.blocks {
            match block {
                Block::Map(b) => {
                    let (next, logdet) = b.forward(&y)?;
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
                Block::Factor(f) => {
                    let (next, z, term) = f.forward(&y)?;
                    y = next;
                    factored.push((z, term));
                }
            }
        }
        Ok(Reversed {
            y,
            logdet: total.expect("run() checked for a map"),
            factored,
        })
    }

    /// The chain's backward: rebuild, rerun and differentiate each block, last first.
    /// `inputs` are the op's inputs, `[x, params of block 1, params of block 2, …]`,
    /// `counts[i]` how many parameters block `i` has, `slots` the other outputs'
    /// gradients (see [`Chain::run`]) and `zs` the factors' set-aside parts.
    fn backward(
        &self,
        counts: &[usize],
        y: &Tensor,
        dy: &Tensor,
        mut slots: Vec<Option<Tensor>>,
        zs: &[Tensor],
        inputs: &[Tensor],
    ) -> Result<Vec<Option<Tensor>>> {
        let dlogdet = slots[0].take();
        let mut dparams: Vec<Option<Tensor>> = vec![None; inputs.len() - 1];
        let mut end = inputs.len() - 1;
        let mut y = y.clone();
        let mut dy = dy.clone();
        let mut factor = zs.len();
        for (block, &count) in self.blocks.iter().zip(counts).rev() {
            let start = end - count;
            let recorded = &inputs[1 + start..1 + end];
            let (rebuilt, dz, dscalar) = match block {
                Block::Map(b) => (b.rebuild(&y)?, None, dlogdet.clone()),
                Block::Factor(f) => {
                    factor -= 1;
                    let rebuilt = f.rebuild(&y, &zs[factor])?;
                    (
                        rebuilt,
                        slots[1 + 2 * factor].take(),
                        slots[2 + 2 * factor].take(),
                    )
                }
            };
            let now = block.params();
            if now.len() != count || now.iter().zip(recorded).any(|(a, b)| a.id() != b.id()) {
                return Err(Error::Autodiff(
                    "reversible: a block's parameters changed between its forward and backward \
                     (update parameters only after backward)"
                        .into(),
                ));
            }
            let Rebuilt {
                parts,
                axis,
                y: y_again,
                logdet: scalar,
                z,
            } = rebuilt;
            let mut seeds = vec![(y_again, dy)];
            match (z, dz) {
                (Some(z), Some(dz)) => seeds.push((z, dz)),
                (None, Some(_)) => {
                    return Err(Error::Autodiff(
                        "reversible: a factor's rebuild gave no z to take its gradient".into(),
                    ))
                }
                _ => {}
            }
            if let Some(d) = dscalar {
                seeds.push((scalar, d));
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

    /// How far rebuilt inputs drift from the stored ones: runs the chain on `x` keeping
    /// every block's input, then rebuilds them from the last output by the inverses, as
    /// the backward pass does (each from the previous rebuild, with the factors' `z` as
    /// the op keeps them). Returns, for each block (first block first), the largest
    /// `|rebuilt − stored|` of its input divided by the largest `|stored|` (a relative
    /// error; 0 for an all-zero input).
    pub fn drift(&self, x: &Tensor) -> Result<Vec<f32>> {
        no_grad(|| {
            let mut stored = vec![x.clone()];
            let mut zs = Vec::new();
            for block in &self.blocks {
                let last = stored.last().expect("non-empty");
                let next = match block {
                    Block::Map(b) => b.forward(last)?.0,
                    Block::Factor(f) => {
                        let (y, z, _) = f.forward(last)?;
                        zs.push(z);
                        y
                    }
                };
                stored.push(next);
            }
            let mut y = stored.pop().expect("non-empty");
            let mut drift = vec![0.0; self.blocks.len()];
            for (i, block) in self.blocks.iter().enumerate().rev() {
                let rebuilt = match block {
                    Block::Map(b) => b.inverse(&y)?,
                    Block::Factor(f) => f.inverse(&y, &zs.pop().expect("one z per factor"))?,
                };
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
}
