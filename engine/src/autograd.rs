//! Reverse-mode autodiff: the tape, `backward()` and `no_grad`.
//!
//! Every op that runs while recording is on, on inputs that require grad, leaves a
//! [`Node`] on its output: the op's name, its inputs, and a closure written right beside
//! the op's forward (in `ops/`) that turns the output's gradient `dy` into the inputs'
//! gradients (the vector-Jacobian product). Nothing else is recorded.
//!
//! [`Tensor::backward`] collects the nodes reachable from a scalar loss and sorts them by
//! tensor id, newest first. Ids grow with creation time and an op's output is always
//! newer than its inputs, so that list is the tape read backwards: when a node is
//! reached, every gradient flowing into it has been accumulated. The walk runs with
//! recording off, so backward closures use ordinary tensor ops and build no graph.
//!
//! ```
//! use engine::{Device, Tensor};
//! let dev = Device::Cpu;
//! let x = Tensor::from_slice(&[1.0, 2.0, 3.0], &[3], &dev)?.with_grad();
//! let loss = x.mul(&x)?.sum_all()?; // Σ x², so d loss / dx = 2x
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&x).unwrap().to_vec()?, vec![2.0, 4.0, 6.0]);
//! # Ok::<(), engine::Error>(())
//! ```

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use crate::shape;
use crate::{Error, Result, Tensor};

/// What a backward closure receives.
pub struct BackwardArgs<'a> {
    /// The gradient of the loss with respect to the op's output.
    pub dy: &'a Tensor,
    /// The op's output (its values; not part of the graph).
    pub out: &'a Tensor,
    /// The op's inputs, in the order the op recorded them.
    pub inputs: &'a [Tensor],
    /// `needs[i]`: whether input `i` wants a gradient. Closures may skip the others and
    /// return `None` for them, which saves work such as a convolution's data gradient.
    pub needs: &'a [bool],
}

/// A backward closure: one optional gradient per input, each of the input's shape.
pub(crate) type BackwardFn =
    Box<dyn Fn(&BackwardArgs) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// How a tensor was computed: one entry of the tape.
pub struct Node {
    /// The op's name, used in error messages.
    pub(crate) op: &'static str,
    /// The tensors it read.
    pub(crate) inputs: Vec<Tensor>,
    /// Its vector-Jacobian product.
    pub(crate) backward: BackwardFn,
}

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record their backward.
pub fn is_recording() -> bool {
    RECORDING.with(|r| r.get())
}

/// Turns recording off on this thread while alive, restoring the previous state on drop.
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Stops recording until the guard is dropped.
    #[allow(clippy::new_without_default)]
    pub fn new() -> NoGradGuard {
        NoGradGuard {
            previous: RECORDING.with(|r| r.replace(false)),
        }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        RECORDING.with(|r| r.set(self.previous));
    }
}

/// Runs `f` with recording off: for evaluation and sampling, where no gradient is needed
/// and no graph should be kept alive.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NoGradGuard::new();
    f()
}

/// Runs `f` with recording on, whatever the caller's state: for a backward closure that
/// builds and differentiates a local graph (see [`crate::invertible`]).
pub fn with_recording<T>(f: impl FnOnce() -> T) -> T {
    let previous = RECORDING.with(|r| r.replace(true));
    let _restore = NoGradGuard { previous };
    f()
}

/// The gradients of one backward pass, keyed by the leaf tensors that required grad.
#[derive(Default, Debug)]
pub struct Gradients {
    grads: HashMap<usize, Tensor>,
}

impl Gradients {
    /// The gradient of the loss with respect to `t`, if `t` was a leaf that the loss
    /// depends on.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.grads.get(&t.id())
    }

    /// Takes the gradient of `t` out of the set.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.grads.remove(&t.id())
    }

    /// Sets the gradient of `t` (e.g. to one averaged over the processes of a
    /// data-parallel run), replacing any it had. Fails when the shapes differ.
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) -> Result<()> {
        if grad.shape() != t.shape() {
            return Err(Error::Autodiff(format!(
                "Gradients::insert: a gradient of shape {} for a tensor of shape {}",
                shape::fmt(grad.shape()),
                shape::fmt(t.shape())
            )));
        }
        self.grads.insert(t.id(), grad);
        Ok(())
    }

    /// Number of leaves with a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether no leaf received a gradient.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

impl Tensor {
    /// Back-propagates from this scalar loss and returns the gradient of every leaf
    /// tensor that requires grad and that the loss depends on. Gradients add up over
    /// every path, so a tensor used twice gets the sum of both contributions.
    pub fn backward(&self) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(Error::Autodiff(format!(
                "backward() needs a scalar loss, got shape {}; reduce it first (e.g. sum_all)",
                shape::fmt(self.shape())
            )));
        }
        let seed = Tensor::ones(self.shape(), self.device())?;
        Tensor::backward_from(&[(self.clone(), seed)])
    }

    /// Back-propagates from several outputs at once, each seeded with its own gradient
    /// (`(output, d loss / d output)`, same shapes): the vector-Jacobian product of the
    /// whole graph. [`Tensor::backward`] is the case of one scalar seeded with 1.
    pub fn backward_from(seeds: &[(Tensor, Tensor)]) -> Result<Gradients> {
        for (out, dy) in seeds {
            if out.shape() != dy.shape() {
                return Err(Error::Autodiff(format!(
                    "backward_from: a seed of shape {} for an output of shape {}",
                    shape::fmt(dy.shape()),
                    shape::fmt(out.shape())
                )));
            }
        }
        if !seeds.iter().any(|(out, _)| out.requires_grad()) {
            return Err(Error::Autodiff(
                "backward(): the loss does not depend on any tensor that requires grad \
                 (mark parameters with with_grad(), and do not compute the loss under no_grad)"
                    .into(),
            ));
        }
        let roots: Vec<Tensor> = seeds.iter().map(|(out, _)| out.clone()).collect();
        let tape = Tensor::tape(&roots);
        let _guard = NoGradGuard::new();
        let _phase = crate::profile::BackwardPhase::enter();
        let mut pending: HashMap<usize, Tensor> = HashMap::new();
        for (out, dy) in seeds.iter().filter(|(out, _)| out.requires_grad()) {
            let total = match pending.remove(&out.id()) {
                Some(acc) => acc.add(dy)?,
                None => dy.clone(),
            };
            pending.insert(out.id(), total);
        }
        let mut leaves = Gradients::default();
        for t in &tape {
            let Some(dy) = pending.remove(&t.id()) else {
                continue;
            };
            let Some(node) = &t.0.node else {
                leaves.grads.insert(t.id(), dy);
                continue;
            };
            let needs: Vec<bool> = node.inputs.iter().map(|i| i.requires_grad()).collect();
            let out = t.detach();
            let args = BackwardArgs {
                dy: &dy,
                out: &out,
                inputs: &node.inputs,
                needs: &needs,
            };
            let dxs = (node.backward)(&args)?;
            if dxs.len() != node.inputs.len() {
                return Err(Error::Autodiff(format!(
                    "engine bug: backward of {} returned {} gradients for {} inputs",
                    node.op,
                    dxs.len(),
                    node.inputs.len()
                )));
            }
            for ((input, dx), need) in node.inputs.iter().zip(dxs).zip(needs) {
                let Some(dx) = dx.filter(|_| need) else {
                    continue;
                };
                if dx.shape() != input.shape() {
                    return Err(Error::Autodiff(format!(
                        "engine bug: backward of {} gave a gradient of shape {} for an input of shape {}",
                        node.op,
                        shape::fmt(dx.shape()),
                        shape::fmt(input.shape())
                    )));
                }
                let total = match pending.remove(&input.id()) {
                    Some(acc) => acc.add(&dx)?,
                    None => dx,
                };
                pending.insert(input.id(), total);
            }
        }
        Ok(leaves)
    }

    /// Every tensor the roots depend on through tensors that require grad, newest first.
    fn tape(roots: &[Tensor]) -> Vec<Tensor> {
        let mut seen = HashSet::new();
        let mut stack = Vec::new();
        let mut tape = Vec::new();
        for r in roots.iter().filter(|r| r.requires_grad()) {
            if seen.insert(r.id()) {
                stack.push(r.clone());
            }
        }
        while let Some(t) = stack.pop() {
            if let Some(node) = &t.0.node {
                for input in &node.inputs {
                    if input.requires_grad() && seen.insert(input.id()) {
                        stack.push(input.clone());
                    }
                }
            }
            tape.push(t);
        }
        tape.sort_unstable_by_key(|t| std::cmp::Reverse(t.id()));
        tape
    }
}
