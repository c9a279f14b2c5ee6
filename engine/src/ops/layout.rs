//! Ops that move values without arithmetic: reshape, permute, slice, concat and gather.
//!
//! Their derivatives move the gradient back the same way: reshape and permute invert
//! themselves, slice and concat are each other's adjoints (a slice's gradient is the
//! output gradient padded with zeros by a concat), and gathering by a permutation is
//! undone by gathering with the inverse permutation.

use crate::backend::Backend;
use crate::device::DeviceBackend;
use crate::shape::{self, numel};
use crate::{Error, Result, Tensor};

impl Tensor {
    /// The same values viewed with another shape of the same element count. Free: the
    /// storage is shared, since tensors are contiguous.
    pub fn reshape(&self, new_shape: &[usize]) -> Result<Tensor> {
        shape::check_rank("reshape", new_shape)?;
        if numel(new_shape) != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot view {} ({} elements) as {} ({} elements)",
                    shape::fmt(self.shape()),
                    self.numel(),
                    shape::fmt(new_shape),
                    numel(new_shape)
                ),
            ));
        }
        if new_shape == self.shape() {
            return Ok(self.clone());
        }
        Tensor::from_op(
            self.storage().clone(),
            new_shape.to_vec(),
            "reshape",
            &[self],
            |a| Ok(vec![Some(a.dy.reshape(a.inputs[0].shape())?)]),
        )
    }

    /// Reorders the axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        shape::check_permutation("permute", perm, self.rank())?;
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let storage = dispatch!("permute", 0, self.device(), b => b.wrap_res(
            b.permute(b.buf(self.storage()), self.shape(), perm)))?;
        let inverse = shape::invert_permutation(perm);
        Tensor::from_op(storage, out_shape, "permute", &[self], move |a| {
            Ok(vec![Some(a.dy.permute(&inverse)?)])
        })
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        shape::check_axis("transpose", a, self.shape())?;
        shape::check_axis("transpose", b, self.shape())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The range `start..start + len` of `axis`.
    pub fn slice(&self, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        shape::check_axis("slice", axis, self.shape())?;
        let extent = self.shape()[axis];
        if start.checked_add(len).is_none_or(|end| end > extent) {
            return Err(Error::invalid(
                "slice",
                format!(
                    "range {start}..{} is out of bounds for axis {axis} of shape {}",
                    start.saturating_add(len),
                    shape::fmt(self.shape())
                ),
            ));
        }
        let mut out_shape = self.shape().to_vec();
        out_shape[axis] = len;
        let storage = dispatch!("slice", 0, self.device(), b => b.wrap_res(
            b.slice(b.buf(self.storage()), self.shape(), axis, start, len)))?;
        Tensor::from_op(storage, out_shape, "slice", &[self], move |a| {
            // Pad dy with zeros back to the input's extent along `axis`.
            let full = a.inputs[0].shape();
            let zeros = |n: usize| {
                let mut s = full.to_vec();
                s[axis] = n;
                Tensor::zeros(&s, a.dy.device())
            };
            let before = zeros(start)?;
            let after = zeros(full[axis] - start - len)?;
            let parts: Vec<&Tensor> = [&before, a.dy, &after]
                .into_iter()
                .filter(|t| t.shape()[axis] > 0)
                .collect();
            Ok(vec![Some(Tensor::concat(&parts, axis)?)])
        })
    }

    /// Joins `parts` along `axis`; all other extents must agree.
    pub fn concat(parts: &[&Tensor], axis: usize) -> Result<Tensor> {
        let first = parts
            .first()
            .ok_or_else(|| Error::invalid("concat", "needs at least one tensor"))?;
        shape::check_axis("concat", axis, first.shape())?;
        for p in parts {
            first.same_device("concat", p)?;
            let compatible = p.rank() == first.rank()
                && (0..first.rank()).all(|i| i == axis || p.shape()[i] == first.shape()[i]);
            if !compatible {
                let shapes: Vec<String> = parts.iter().map(|t| shape::fmt(t.shape())).collect();
                return Err(Error::shape(
                    "concat",
                    format!("shapes {} differ outside axis {axis}", shapes.join(", ")),
                ));
            }
        }
        let lens: Vec<usize> = parts.iter().map(|p| p.shape()[axis]).collect();
        let mut out_shape = first.shape().to_vec();
        out_shape[axis] = lens.iter().sum();
        let storage = dispatch!("concat", 0, first.device(), b => {
            let bufs: Vec<(&_, &[usize])> =
                parts.iter().map(|p| (b.buf(p.storage()), p.shape())).collect();
            b.wrap_res(b.concat(&bufs, axis))
        })?;
        Tensor::from_op(storage, out_shape, "concat", parts, move |a| {
            let mut offset = 0;
            lens.iter()
                .zip(a.needs)
                .map(|(&len, &need)| {
                    let g = need.then(|| a.dy.slice(axis, offset, len)).transpose();
                    offset += len;
                    g
                })
                .collect()
        })
    }

    /// Picks entries of `axis` by index: output index `j` along `axis` is input index
    /// `indices[j]`. Gradients flow only when `indices` is a permutation of the axis (the
    /// fixed channel permutations of a flow), which is checked when recording.
    pub fn gather(&self, axis: usize, indices: &[usize]) -> Result<Tensor> {
        shape::check_axis("gather", axis, self.shape())?;
        let extent = self.shape()[axis];
        if let Some(&bad) = indices.iter().find(|&&i| i >= extent) {
            return Err(Error::invalid(
                "gather",
                format!(
                    "index {bad} is out of bounds for axis {axis} of shape {}",
                    shape::fmt(self.shape())
                ),
            ));
        }
        let inverse = if crate::autograd::is_recording() && self.requires_grad() {
            shape::check_permutation("gather", indices, extent).map_err(|_| {
                Error::invalid(
                    "gather",
                    format!(
                        "gradients need the indices to be a permutation of 0..{extent}; got {} indices",
                        indices.len()
                    ),
                )
            })?;
            shape::invert_permutation(indices)
        } else {
            Vec::new()
        };
        let mut out_shape = self.shape().to_vec();
        out_shape[axis] = indices.len();
        let storage = dispatch!("gather", 0, self.device(), b => b.wrap_res(
            b.gather(b.buf(self.storage()), self.shape(), axis, indices)))?;
        Tensor::from_op(storage, out_shape, "gather", &[self], move |a| {
            Ok(vec![Some(a.dy.gather(axis, &inverse)?)])
        })
    }
}
