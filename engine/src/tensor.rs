//! The [`Tensor`]: a dense, row-major `f32` array on a [`Device`], plus how it was made.
//!
//! A tensor is an immutable, reference-counted handle: cloning is cheap and clones share
//! memory. Ops never modify their inputs; they return new tensors (the optimiser update in
//! `ops/optim.rs` is the one in-place exception). When gradients are being recorded, a
//! tensor produced by an op also carries an [`autograd::Node`](crate::autograd::Node): the
//! inputs it was made from and the closure that maps its gradient to theirs.
//!
//! This file holds construction, read-back and metadata; the ops live in `ops/`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn};

use crate::anomaly;
use crate::autograd::{self, BackwardFn, Node};
use crate::backend::{Backend, Distribution};
use crate::device::{DeviceBackend, Storage};
use crate::shape::{self, numel};
use crate::{Device, Error, Result};

/// Source of tensor ids. Ids increase with creation time, so sorting a graph's tensors by
/// id descending is a valid reverse topological order: that sorted list is the tape.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// An `f32` tensor on a device; see the module documentation.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) id: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) device: Device,
    pub(crate) storage: Storage,
    /// Whether gradients flow to or through this tensor.
    pub(crate) requires_grad: bool,
    /// How this tensor was computed, when that was recorded.
    pub(crate) node: Option<Node>,
}

/// Dropping a long graph recursively (tensor → node → input tensor → …) would overflow
/// the stack for deep models, so a node's inputs are released with an explicit stack.
impl Drop for Inner {
    fn drop(&mut self) {
        let Some(node) = self.node.take() else {
            return;
        };
        let mut stack = node.inputs;
        while let Some(t) = stack.pop() {
            if let Some(mut inner) = Arc::into_inner(t.0) {
                if let Some(n) = inner.node.take() {
                    stack.extend(n.inputs);
                }
            }
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("id", &self.0.id)
            .field("shape", &self.0.shape)
            .field("device", &self.0.device.name())
            .field("requires_grad", &self.0.requires_grad)
            .field("op", &self.0.node.as_ref().map(|n| n.op))
            .finish()
    }
}

impl Tensor {
    // ----- construction ------------------------------------------------------------

    /// Wraps a storage as an untracked tensor. `storage` must hold `numel(shape)` values.
    pub(crate) fn from_storage(storage: Storage, shape: Vec<usize>, device: Device) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            device,
            storage,
            requires_grad: false,
            node: None,
        }))
    }

    /// The result of an op: `storage` of `shape` on the inputs' device, made from `inputs`.
    ///
    /// If recording is on and any input requires grad, the result remembers `inputs` and
    /// `backward`, which receives the output's gradient and returns one gradient per
    /// input (see [`autograd::BackwardArgs`]). Otherwise nothing is kept, so ops under
    /// [`crate::no_grad`] cost no more than the kernel itself.
    ///
    /// Fails only with anomaly detection on ([`crate::anomaly`]), when the result holds
    /// a NaN or an infinity that finite inputs produced.
    pub(crate) fn from_op(
        storage: Storage,
        shape: Vec<usize>,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&autograd::BackwardArgs) -> Result<Vec<Option<Tensor>>>
            + Send
            + Sync
            + 'static,
    ) -> Result<Tensor> {
        let device = inputs[0].device().clone();
        Tensor::record(storage, shape, device, op, inputs, backward)
    }

    /// [`Tensor::from_op`] for an op whose result lives on `device` (only `to_device`
    /// differs from its inputs).
    pub(crate) fn record(
        storage: Storage,
        shape: Vec<usize>,
        device: Device,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&autograd::BackwardArgs) -> Result<Vec<Option<Tensor>>>
            + Send
            + Sync
            + 'static,
    ) -> Result<Tensor> {
        // One thread-local read per op while anomaly detection is off.
        let watch = anomaly::is_enabled();
        let track = autograd::is_recording() && inputs.iter().any(|t| t.requires_grad());
        let node = track.then(|| Node {
            op,
            inputs: inputs.iter().map(|t| (*t).clone()).collect(),
            backward: if watch {
                anomaly::watch_backward(op, backward)
            } else {
                Box::new(backward) as BackwardFn
            },
        });
        let out = Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            device,
            storage,
            requires_grad: track,
            node,
        }));
        if watch {
            anomaly::check_output(op, &out, inputs)?;
        }
        Ok(out)
    }

    /// A tensor of `shape` holding `data` (row-major), on `device`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_slice(&data, shape, device)
    }

    /// A tensor of `shape` holding a copy of `data` (row-major), on `device`.
    pub fn from_slice(data: &[f32], shape: &[usize], device: &Device) -> Result<Tensor> {
        shape::check_rank("from_slice", shape)?;
        if data.len() != numel(shape) {
            return Err(Error::shape(
                "from_slice",
                format!(
                    "{} values cannot fill shape {} ({} elements)",
                    data.len(),
                    shape::fmt(shape),
                    numel(shape)
                ),
            ));
        }
        let storage = dispatch!("from_host", 0, device, b => b.wrap_res(b.from_host(data)))?;
        Ok(Tensor::from_storage(
            storage,
            shape.to_vec(),
            device.clone(),
        ))
    }

    /// A tensor holding a copy of an ndarray array (any layout), on `device`.
    pub fn from_ndarray<S, D>(array: &ArrayBase<S, D>, device: &Device) -> Result<Tensor>
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        let data: Vec<f32> = array.iter().copied().collect();
        Tensor::from_vec(data, array.shape(), device)
    }

    /// A scalar (shape `[]`).
    pub fn scalar(value: f32, device: &Device) -> Result<Tensor> {
        Tensor::full(&[], value, device)
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: &[usize], value: f32, device: &Device) -> Result<Tensor> {
        shape::check_rank("full", shape)?;
        let storage = dispatch!("full", 0, device, b => b.wrap_res(b.full(numel(shape), value)))?;
        Ok(Tensor::from_storage(
            storage,
            shape.to_vec(),
            device.clone(),
        ))
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, device)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, device)
    }

    /// Zeros with this tensor's shape and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.device())
    }

    /// Uniform draws on `[low, high)`. The same seed gives the same values on every
    /// device (see [`crate::random`]).
    pub fn rand_uniform(
        shape: &[usize],
        low: f32,
        high: f32,
        seed: u64,
        device: &Device,
    ) -> Result<Tensor> {
        if !low.is_finite() || !high.is_finite() || low >= high {
            return Err(Error::invalid(
                "rand_uniform",
                format!("needs finite low < high, got [{low}, {high})"),
            ));
        }
        Tensor::random(shape, Distribution::Uniform { low, high }, seed, device)
    }

    /// Gaussian draws with mean `mean` and standard deviation `std`. The same seed gives
    /// the same values on every device (see [`crate::random`]).
    pub fn randn(
        shape: &[usize],
        mean: f32,
        std: f32,
        seed: u64,
        device: &Device,
    ) -> Result<Tensor> {
        if !mean.is_finite() || !std.is_finite() || std < 0.0 {
            return Err(Error::invalid(
                "randn",
                format!("needs a finite mean and std >= 0, got mean {mean}, std {std}"),
            ));
        }
        Tensor::random(shape, Distribution::Normal { mean, std }, seed, device)
    }

    fn random(shape: &[usize], dist: Distribution, seed: u64, device: &Device) -> Result<Tensor> {
        shape::check_rank("random", shape)?;
        if numel(shape) > u32::MAX as usize / 2 {
            return Err(Error::invalid(
                "random",
                format!(
                    "shape {} is too large for one random fill",
                    shape::fmt(shape)
                ),
            ));
        }
        let storage =
            dispatch!("random", 0, device, b => b.wrap_res(b.random(numel(shape), dist, seed)))?;
        Ok(Tensor::from_storage(
            storage,
            shape.to_vec(),
            device.clone(),
        ))
    }

    // ----- read-back ---------------------------------------------------------------

    /// Copies the values to the host, row-major.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        dispatch!("to_host", 0, self.device(), b => b.to_host(b.buf(&self.0.storage)))
    }

    /// Copies the values into an ndarray array of the same shape.
    pub fn to_ndarray(&self) -> Result<ArrayD<f32>> {
        let data = self.to_vec()?;
        ArrayD::from_shape_vec(IxDyn(self.shape()), data)
            .map_err(|e| Error::shape("to_ndarray", e.to_string()))
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                format!("needs one element, got shape {}", shape::fmt(self.shape())),
            ));
        }
        Ok(self.to_vec()?[0])
    }

    /// A copy on `device` (differentiable: the gradient is moved back).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let data = self.to_vec()?;
        let storage = dispatch!("to_device", 0, device, b => b.wrap_res(b.from_host(&data)))?;
        let source = self.device().clone();
        Tensor::record(
            storage,
            self.shape().to_vec(),
            device.clone(),
            "to_device",
            &[self],
            move |a| Ok(vec![Some(a.dy.to_device(&source)?)]),
        )
    }

    // ----- metadata ----------------------------------------------------------------

    /// The extents, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    /// The device holding the values.
    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// A process-unique id; later tensors have larger ids.
    pub fn id(&self) -> usize {
        self.0.id
    }

    /// Whether gradients are recorded for this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// The name of the op that made this tensor, if that was recorded.
    pub fn op_name(&self) -> Option<&'static str> {
        self.0.node.as_ref().map(|n| n.op)
    }

    /// The same values as a new leaf that requires grad: a trainable parameter.
    /// [`Tensor::backward`] reports its gradient in [`crate::Gradients`].
    pub fn with_grad(&self) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape: self.0.shape.clone(),
            device: self.0.device.clone(),
            storage: self.0.storage.clone(),
            requires_grad: true,
            node: None,
        }))
    }

    /// The same values cut off from the graph: gradients do not flow through the result.
    pub fn detach(&self) -> Tensor {
        Tensor::from_storage(
            self.0.storage.clone(),
            self.0.shape.clone(),
            self.0.device.clone(),
        )
    }

    /// The storage, for ops.
    pub(crate) fn storage(&self) -> &Storage {
        &self.0.storage
    }

    /// Checks that `other` lives on this tensor's device.
    pub(crate) fn same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: self.device().name(),
                rhs: other.device().name(),
            });
        }
        Ok(())
    }
}
