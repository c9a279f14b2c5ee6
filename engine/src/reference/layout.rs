//! Reference layout ops: each one is a single ndarray call, because ndarray already
//! has the view it describes (`store` in `mod.rs` then writes it out row-major).
//!
//! The fast versions: `cpu/layout.rs` and `shaders/strided_copy.comp`, `shaders/gather.comp`.

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use crate::{Error, Result};

/// Output axis `i` is input axis `perm[i]`.
pub(super) fn permute(x: ArrayD<f64>, perm: &[usize]) -> ArrayD<f64> {
    x.permuted_axes(IxDyn(perm))
}

/// The range `start..start + len` of `axis`.
pub(super) fn slice(x: &ArrayD<f64>, axis: usize, start: usize, len: usize) -> ArrayD<f64> {
    x.slice_axis(Axis(axis), Slice::from(start..start + len))
        .to_owned()
}

/// `parts` joined along `axis`.
pub(super) fn concat(parts: &[ArrayD<f64>], axis: usize) -> Result<ArrayD<f64>> {
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(Axis(axis), &views)
        .map_err(|e| Error::Device(format!("reference concat: {e}")))
}

/// Index `indices[j]` of `axis` becomes index `j`.
pub(super) fn gather(x: &ArrayD<f64>, axis: usize, indices: &[usize]) -> ArrayD<f64> {
    x.select(Axis(axis), indices)
}
