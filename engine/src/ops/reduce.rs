//! Reductions over axes, and the two shape moves their derivatives need.
//!
//! `sum` over some axes has the gradient "repeat `dy` along those axes" ([`Tensor::expand`]);
//! `expand` has the gradient "sum `dy` back over them" ([`Tensor::sum_to`]). The two are
//! each other's adjoints, which is all reverse-mode needs for broadcasting.

use crate::backend::{Backend, ReduceOp};
use crate::device::DeviceBackend;
use crate::shape;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// The shape after reducing `axes` with `keepdim` (1s kept or axes dropped).
    fn reduced_shape(&self, axes: &[usize], keepdim: bool) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.rank());
        for (i, &e) in self.shape().iter().enumerate() {
            match (axes.contains(&i), keepdim) {
                (false, _) => out.push(e),
                (true, true) => out.push(1),
                (true, false) => {}
            }
        }
        out
    }

    fn reduce_storage(&self, op: ReduceOp, axes: &[usize]) -> Result<crate::device::Storage> {
        let name = match op {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
        };
        dispatch!(name, 0, self.device(), b => b.wrap_res(
            b.reduce(op, b.buf(self.storage()), self.shape(), axes)))
    }

    /// Sum over `axes`; with `keepdim` the reduced axes stay as extent 1.
    /// `dx = expand(dy)` to the input's shape.
    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        let axes = shape::normalize_axes("sum", axes, self.shape())?;
        let storage = self.reduce_storage(ReduceOp::Sum, &axes)?;
        let keep_shape = self.reduced_shape(&axes, true);
        Tensor::from_op(
            storage,
            self.reduced_shape(&axes, keepdim),
            "sum",
            &[self],
            move |a| {
                let dy = a.dy.reshape(&keep_shape)?;
                Ok(vec![Some(dy.expand(a.inputs[0].shape())?)])
            },
        )
    }

    /// Mean over `axes`: `sum / count`.
    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        let axes = shape::normalize_axes("mean", axes, self.shape())?;
        let count: usize = axes.iter().map(|&a| self.shape()[a]).product();
        if count == 0 {
            return Err(Error::shape(
                "mean",
                format!(
                    "mean over an empty axis of shape {}",
                    shape::fmt(self.shape())
                ),
            ));
        }
        self.sum(&axes, keepdim)?.scale(1.0 / count as f32)
    }

    /// Sum of every element, as a scalar `[]`.
    pub fn sum_all(&self) -> Result<Tensor> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.sum(&axes, false)
    }

    /// Mean of every element, as a scalar `[]`.
    pub fn mean_all(&self) -> Result<Tensor> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.mean(&axes, false)
    }

    /// Largest element over `axes`, NaN where the reduced elements hold a NaN. Not
    /// differentiated (the result is detached); used to stabilise log-sum-exp, whose
    /// gradient does not depend on the shift.
    pub fn max(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        let axes = shape::normalize_axes("max", axes, self.shape())?;
        if axes.iter().any(|&a| self.shape()[a] == 0) {
            return Err(Error::shape(
                "max",
                format!(
                    "max over an empty axis of shape {}",
                    shape::fmt(self.shape())
                ),
            ));
        }
        let storage = self.reduce_storage(ReduceOp::Max, &axes)?;
        Ok(Tensor::from_storage(
            storage,
            self.reduced_shape(&axes, keepdim),
            self.device().clone(),
        ))
    }

    /// Repeats this tensor along broadcast axes to `shape` (NumPy broadcasting rules).
    /// `dx = sum_to(dy)` back to this tensor's shape.
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        let target = shape::broadcast("expand", self.shape(), shape)?;
        if target != shape {
            return Err(Error::shape(
                "expand",
                format!(
                    "cannot expand {} to {}",
                    shape::fmt(self.shape()),
                    shape::fmt(shape)
                ),
            ));
        }
        if self.shape() == shape {
            return Ok(self.clone());
        }
        // Broadcasting against zeros of the target shape is the expand; `add` records
        // the sum-back as its backward.
        self.add(&Tensor::zeros(shape, self.device())?)
    }

    /// Sums this tensor down to `shape`, the inverse of broadcasting `shape` up to this
    /// tensor's shape: leading axes are summed away, axes where `shape` has 1 are summed
    /// with keepdim.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let rank = self.rank();
        if shape.len() > rank || shape::broadcast("sum_to", shape, self.shape())? != self.shape() {
            return Err(Error::shape(
                "sum_to",
                format!(
                    "{} is not a broadcast of {}",
                    shape::fmt(self.shape()),
                    shape::fmt(shape)
                ),
            ));
        }
        let padded = shape::pad_to_rank(shape, rank);
        let axes: Vec<usize> = (0..rank)
            .filter(|&i| padded[i] == 1 && self.shape()[i] != 1)
            .collect();
        let summed = if axes.is_empty() {
            self.clone()
        } else {
            self.sum(&axes, true)?
        };
        summed.reshape(shape)
    }
}
