//! Anomaly detection: which op first produced a NaN or an infinity, and in which layer.
//!
//! A NaN loss says that something went wrong, not where: every op computes NaN from
//! NaN, so by the time the loss is read the first bad value has flowed through the rest
//! of the model. With anomaly detection on, every op checks its output as it runs, and
//! the first op that turns finite inputs into a non-finite output returns
//! [`Error::NonFinite`](crate::Error::NonFinite) instead of a tensor. The error names the
//! op, the pass (forward, backward or an optimiser update), the layer it ran in and its
//! input shapes:
//!
//! ```text
//! non-finite output of exp (forward) in flow.layers.4: input [12, 1, 1]; inf at [3, 0, 0]
//! ```
//!
//! How it works, in the order an op meets it:
//! - **The switch.** [`set_enabled`], or the guard [`detect_anomaly`], turns the check on
//!   for the calling thread (like [`no_grad`](crate::no_grad), it is per thread). Off,
//!   it costs each op one read of a thread-local `bool`.
//! - **Forward.** Every op's result passes through `Tensor::from_op`
//!   (`tensor.rs`), which, when the switch is on, copies the output to the host and
//!   looks for a value that is not finite. If there is one and every input is finite,
//!   this op is the one to blame. If an input was already non-finite, the op only passed
//!   it on, so it is not flagged: only the *first* producer is named, not every op
//!   downstream of it. (A NaN that comes from data, such as a damaged parameter, is
//!   therefore never flagged: no op produced it.)
//! - **Backward.** An op recorded with the switch on also remembers the layer scope it
//!   ran in. Its backward closure then runs inside that scope, so the ordinary ops it
//!   calls are checked the same way and reported as e.g. `div (backward of sqrt)`; the
//!   gradients it returns are checked too, which covers backward primitives that are
//!   not ops of their own (the convolution's input and weight gradients).
//! - **Update.** [`Tensor::adam_update`](crate::Tensor::adam_update) checks the
//!   parameter and moments it writes, when everything it read was finite.
//!
//! **Scopes.** [`scope`] names the layer the following ops belong to, until its guard
//! is dropped. Scopes nest like module paths: inside `scope("flow.layers.17")`,
//! `scope("block")` is `flow.layers.17.block`. Glow enters one per layer, named like
//! the layer's parameters (`flow.layers.{i}`, see `glow/src/model.rs`), so the error
//! says which parameters to look at. With the switch off, `scope` does nothing.
//!
//! The check reads every result back to the host, so a step runs several times slower
//! (on the Vulkan device every op also waits for the GPU): a tool for finding a bug,
//! not for every run. The examples turn it on with `--detect-anomaly`.
//!
//! ```
//! use engine::{anomaly, Device, Tensor};
//! let dev = Device::Cpu;
//! let x = Tensor::from_slice(&[4.0, -1.0], &[2], &dev)?;
//!
//! // Off (the default): ln(-1) is NaN, and nothing complains.
//! assert!(x.log()?.to_vec()?[1].is_nan());
//!
//! // On: the op that made the NaN fails, naming itself and its layer.
//! let _on = anomaly::detect_anomaly(true);
//! let _layer = anomaly::scope("model.layer1");
//! let err = x.scale(2.0)?.log().unwrap_err().to_string();
//! assert!(err.starts_with("non-finite output of log (forward) in model.layer1"), "{err}");
//! # Ok::<(), engine::Error>(())
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::autograd::{BackwardArgs, BackwardFn};
use crate::profile::Phase;
use crate::shape;
use crate::{Error, Result, Tensor};

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    /// The open scopes' full names, innermost last.
    static SCOPES: RefCell<Vec<Arc<str>>> = const { RefCell::new(Vec::new()) };
    /// While a backward closure runs: the op whose backward it is.
    static BACKWARD_OF: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Whether ops on this thread check their outputs.
#[inline]
pub fn is_enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// Turns anomaly detection on or off for this thread.
pub fn set_enabled(on: bool) {
    ENABLED.with(|e| e.set(on));
}

/// Turns anomaly detection on (or off) for this thread until the guard is dropped, then
/// restores what it was.
pub fn detect_anomaly(on: bool) -> AnomalyGuard {
    AnomalyGuard {
        previous: ENABLED.with(|e| e.replace(on)),
        _thread: PhantomData,
    }
}

/// Restores the previous state of [`detect_anomaly`] when dropped.
#[must_use = "anomaly detection is restored when the guard is dropped"]
pub struct AnomalyGuard {
    previous: bool,
    /// The state is per thread, so the guard stays on its thread.
    _thread: PhantomData<*const ()>,
}

impl Drop for AnomalyGuard {
    fn drop(&mut self) {
        set_enabled(self.previous);
    }
}

/// Names the layer that the ops run next on this thread belong to, until the guard is
/// dropped; nested inside another scope, `name` is appended to it after a `.`. Does
/// nothing while anomaly detection is off (so `name` is not even formatted).
pub fn scope(name: impl fmt::Display) -> Scope {
    if !is_enabled() {
        return Scope {
            entered: false,
            _thread: PhantomData,
        };
    }
    SCOPES.with(|s| {
        let mut s = s.borrow_mut();
        let full = match s.last() {
            Some(outer) => format!("{outer}.{name}"),
            None => name.to_string(),
        };
        s.push(full.into());
    });
    Scope {
        entered: true,
        _thread: PhantomData,
    }
}

/// Leaves the scope entered by [`scope`] when dropped (scopes close innermost first, as
/// `let` bindings do).
#[must_use = "the scope ends when the guard is dropped"]
pub struct Scope {
    entered: bool,
    _thread: PhantomData<*const ()>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.entered {
            SCOPES.with(|s| s.borrow_mut().pop());
        }
    }
}

/// The full name of the innermost open scope on this thread, if any.
pub fn current_scope() -> Option<String> {
    innermost().map(|s| s.to_string())
}

fn innermost() -> Option<Arc<str>> {
    SCOPES.with(|s| s.borrow().last().cloned())
}

/// Which pass an op ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Called by model code (anything outside a backward pass or an update).
    Forward,
    /// Called during [`Tensor::backward`].
    Backward,
    /// The optimiser's in-place update.
    Update,
}

/// Which result of the op was not finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    /// The op's output.
    Output,
    /// The gradient a backward closure returned for input `i` of its op.
    Gradient(usize),
    /// A tensor an in-place op wrote (`"param"`, `"m"` or `"v"` of the optimiser).
    Written(&'static str),
}

/// What [`Error::NonFinite`](crate::Error::NonFinite) reports: the first op that made a
/// NaN or an infinity from finite inputs. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite {
    /// The op, e.g. `"mul"`.
    pub op: &'static str,
    /// Forward, backward or update.
    pub pass: Pass,
    /// In the backward pass, the op whose backward closure ran `op`, when `op` is one of
    /// the ordinary ops that closure called.
    pub backward_of: Option<&'static str>,
    /// The full name of the scope (layer) it ran in, if any.
    pub scope: Option<String>,
    /// The shapes of its inputs.
    pub inputs: Vec<Vec<usize>>,
    /// Which of its results was not finite.
    pub culprit: Culprit,
    /// The first non-finite value (NaN or ±∞) ...
    pub value: f32,
    /// ... and where it is in that result.
    pub index: Vec<usize>,
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.culprit {
            Culprit::Output => write!(f, "non-finite output of {}", self.op)?,
            Culprit::Gradient(i) => write!(f, "non-finite gradient of input {i} from {}", self.op)?,
            Culprit::Written(what) => write!(f, "non-finite {what} written by {}", self.op)?,
        }
        let pass = match self.pass {
            Pass::Forward => "forward",
            Pass::Backward => "backward",
            Pass::Update => "update",
        };
        match self.backward_of {
            Some(of) => write!(f, " ({pass} of {of})")?,
            None => write!(f, " ({pass})")?,
        }
        if let Some(scope) = &self.scope {
            write!(f, " in {scope}")?;
        }
        let shapes: Vec<String> = self.inputs.iter().map(|s| shape::fmt(s)).collect();
        match shapes.as_slice() {
            [] => write!(f, ": no inputs")?,
            [one] => write!(f, ": input {one}")?,
            [rest @ .., last] => write!(f, ": inputs {} and {last}", rest.join(", "))?,
        }
        write!(f, "; {} at {}", self.value, shape::fmt(&self.index))
    }
}

/// The first non-finite value of `t` and its flat index, if any.
fn first_non_finite(t: &Tensor) -> Result<Option<(f32, usize)>> {
    Ok(t.to_vec()?
        .into_iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map(|(i, v)| (v, i)))
}

/// Whether every value of every tensor in `ts` is finite.
pub(crate) fn all_finite(ts: &[&Tensor]) -> Result<bool> {
    for t in ts {
        if first_non_finite(t)?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The multi-index of flat index `i` in `shape`.
fn unflatten(shape: &[usize], mut i: usize) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (d, &e) in shape.iter().enumerate().rev() {
        index[d] = i % e.max(1);
        i /= e.max(1);
    }
    index
}

/// The error for `culprit` of `op`, whose first non-finite value is `value` at flat
/// index `at` of a result of `shape`.
fn error(
    op: &'static str,
    pass: Pass,
    inputs: &[&Tensor],
    culprit: Culprit,
    (value, at): (f32, usize),
    shape: &[usize],
) -> Error {
    Error::NonFinite(Box::new(NonFinite {
        op,
        pass,
        backward_of: BACKWARD_OF.with(Cell::get),
        scope: current_scope(),
        inputs: inputs.iter().map(|t| t.shape().to_vec()).collect(),
        culprit,
        value,
        index: unflatten(shape, at),
    }))
}

/// The pass the thread is in, outside an update.
fn pass() -> Pass {
    match crate::profile::phase() {
        Phase::Forward => Pass::Forward,
        Phase::Backward => Pass::Backward,
    }
}

/// Fails if `out`, the result of `op` on `inputs`, holds a non-finite value while every
/// input is finite. Called by `Tensor::record` when detection is on.
pub(crate) fn check_output(op: &'static str, out: &Tensor, inputs: &[&Tensor]) -> Result<()> {
    let Some(bad) = first_non_finite(out)? else {
        return Ok(());
    };
    if !all_finite(inputs)? {
        return Ok(());
    }
    Err(error(op, pass(), inputs, Culprit::Output, bad, out.shape()))
}

/// Fails if an in-place op `op` left a non-finite value in one of `written` (named),
/// having read only finite values (the caller checks that before the op runs).
pub(crate) fn check_written(
    op: &'static str,
    inputs: &[&Tensor],
    written: &[(&'static str, &Tensor)],
) -> Result<()> {
    for &(name, t) in written {
        if let Some(bad) = first_non_finite(t)? {
            return Err(error(
                op,
                Pass::Update,
                inputs,
                Culprit::Written(name),
                bad,
                t.shape(),
            ));
        }
    }
    Ok(())
}

/// `backward`, the backward closure of `op`, made to run in the scope that is open now
/// (the forward's) and to check the gradients it returns. Called by `Tensor::record`
/// when detection is on.
pub(crate) fn watch_backward<F>(op: &'static str, backward: F) -> BackwardFn
where
    F: Fn(&BackwardArgs) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    let scope = innermost();
    Box::new(move |a: &BackwardArgs| {
        if !is_enabled() {
            return backward(a);
        }
        let _inside = InsideBackward::enter(op, scope.clone());
        let grads = backward(a)?;
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g.as_ref().filter(|_| a.needs.get(i) == Some(&true)) else {
                continue;
            };
            let Some(bad) = first_non_finite(g)? else {
                continue;
            };
            let mut read: Vec<&Tensor> = a.inputs.iter().collect();
            read.extend([a.dy, a.out]);
            if all_finite(&read)? {
                // Reported as the op's own result, not as one of the ops it ran.
                BACKWARD_OF.with(|b| b.set(None));
                let inputs: Vec<&Tensor> = a.inputs.iter().collect();
                return Err(error(
                    op,
                    Pass::Backward,
                    &inputs,
                    Culprit::Gradient(i),
                    bad,
                    g.shape(),
                ));
            }
        }
        Ok(grads)
    })
}

/// While alive: the thread runs the backward closure of one op, in the scope that op's
/// forward ran in (the scopes open at `backward()` time are set aside).
struct InsideBackward {
    scopes: Vec<Arc<str>>,
    backward_of: Option<&'static str>,
}

impl InsideBackward {
    fn enter(op: &'static str, scope: Option<Arc<str>>) -> InsideBackward {
        InsideBackward {
            scopes: SCOPES.with(|s| s.replace(scope.into_iter().collect())),
            backward_of: BACKWARD_OF.with(|b| b.replace(Some(op))),
        }
    }
}

impl Drop for InsideBackward {
    fn drop(&mut self) {
        SCOPES.with(|s| *s.borrow_mut() = std::mem::take(&mut self.scopes));
        BACKWARD_OF.with(|b| b.set(self.backward_of));
    }
}
