//! Packing shapes into push constants: the layout arithmetic shared by the ops in
//! `backend.rs`.
//!
//! Kernels see tensors as a rank-6 shape plus strides (a stride of 0 broadcasts).
//! [`coalesce`] first merges axes that are contiguous in every operand, so the rank-6
//! limit applies only to genuinely strided layouts, and fewer axes also means less index
//! arithmetic per element. [`grid`] folds long 1-D launches into the 2-D dispatch grid.

use crate::{Error, Result};

/// Rank of the shape/stride arrays in the kernels' push constants.
pub(super) const MAX_RANK: usize = 6;

/// `n` as a push-constant word; the kernels index with 32-bit integers.
pub(super) fn u32_of(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Device(format!("vulkan: {what} ({n}) exceeds u32")))
}

/// Workgroups for `items` invocations in groups of `per_group`, folded into a 2-D grid
/// when they exceed the 65535 limit of one dimension (kernels use `flat_index`).
pub(super) fn grid(items: usize, per_group: usize) -> Result<[u32; 3]> {
    let groups = items.div_ceil(per_group);
    if groups <= 65535 {
        return Ok([groups as u32, 1, 1]);
    }
    let y = groups.div_ceil(65535);
    if y > 65535 {
        return Err(Error::Device(format!(
            "vulkan: launch of {items} invocations is too large"
        )));
    }
    Ok([65535, y as u32, 1])
}

/// Row-major strides of `shape`.
pub(super) fn contiguous(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Merges neighbouring axes that are contiguous in every stride set and drops extent-1
/// axes, so `[2, 3, 4]` copied contiguously becomes `[24]`.
pub(super) fn coalesce(shape: &[usize], strides: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        let merge = !out_shape.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| *o.last().unwrap() == shape[d] * s[d]);
        if merge {
            *out_shape.last_mut().unwrap() *= shape[d];
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                *o.last_mut().unwrap() = s[d];
            }
        } else {
            out_shape.push(shape[d]);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[d]);
            }
        }
    }
    (out_shape, out_strides)
}

/// `values` left-padded to [`MAX_RANK`] with `fill`, as u32 push constants.
pub(super) fn pad6(values: &[usize], fill: usize, op: &str) -> Result<Vec<u32>> {
    if values.len() > MAX_RANK {
        return Err(Error::Device(format!(
            "vulkan: {op} needs rank <= {MAX_RANK} after merging contiguous axes, got {}",
            values.len()
        )));
    }
    let mut v = vec![fill as u32; MAX_RANK - values.len()];
    for &x in values {
        v.push(u32_of(x, op)?);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_contiguous_axes() {
        let (s, st) = coalesce(&[2, 3, 4], &[contiguous(&[2, 3, 4])]);
        assert_eq!(s, vec![24]);
        assert_eq!(st, vec![vec![1]]);
        // A permuted operand keeps its axes apart.
        let (s, _) = coalesce(&[3, 2], &[vec![1, 3], vec![2, 1]]);
        assert_eq!(s, vec![3, 2]);
    }

    #[test]
    fn grid_folds_large_launches() {
        assert_eq!(grid(256, 256).unwrap(), [1, 1, 1]);
        assert_eq!(grid(65536 * 256, 256).unwrap(), [65535, 2, 1]);
    }
}
