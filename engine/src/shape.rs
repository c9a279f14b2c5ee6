//! Shape arithmetic shared by the ops: element counts, strides, broadcasting and axes.
//!
//! Shapes are plain `&[usize]` extents, outermost first (NCHW for images). Everything
//! here is pure host arithmetic that returns an error naming the op on bad input.

use crate::{Error, Result};

/// The largest rank a tensor may have. Four is enough for images; six lets squeeze view
/// `[B, C, H, W]` as `[B, C, H/2, 2, W/2, 2]` before permuting. GPU kernels size their
/// push constants by this.
pub const MAX_RANK: usize = 6;

/// Number of elements of `shape` (1 for a scalar `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a contiguous tensor of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Formats a shape as `[2, 3, 4]` for error messages.
pub fn fmt(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Checks that `shape` has no more than [`MAX_RANK`] axes.
pub fn check_rank(op: &'static str, shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_RANK {
        return Err(Error::shape(
            op,
            format!(
                "shape {} has rank {}, more than the supported {MAX_RANK}",
                fmt(shape),
                shape.len()
            ),
        ));
    }
    Ok(())
}

/// `shape` padded with leading 1s to `rank` axes.
pub fn pad_to_rank(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut out = vec![1; rank - shape.len()];
    out.extend_from_slice(shape);
    out
}

/// The NumPy broadcast of two shapes: align trailing axes; each pair of extents must be
/// equal or contain a 1.
pub fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let (pa, pb) = (pad_to_rank(a, rank), pad_to_rank(b, rank));
    pa.iter()
        .zip(&pb)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Ok(x),
            (1, _) => Ok(y),
            (_, 1) => Ok(x),
            _ => Err(Error::shape(
                op,
                format!("shapes {} and {} do not broadcast", fmt(a), fmt(b)),
            )),
        })
        .collect()
}

/// Checks one axis against a rank.
pub fn check_axis(op: &'static str, axis: usize, shape: &[usize]) -> Result<()> {
    if axis >= shape.len() {
        return Err(Error::invalid(
            op,
            format!("axis {axis} is out of range for shape {}", fmt(shape)),
        ));
    }
    Ok(())
}

/// Sorts and checks a set of axes: each in range, none repeated.
pub fn normalize_axes(op: &'static str, axes: &[usize], shape: &[usize]) -> Result<Vec<usize>> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        if w[0] == w[1] {
            return Err(Error::invalid(
                op,
                format!("axis {} is repeated in {axes:?}", w[0]),
            ));
        }
    }
    for &a in &sorted {
        check_axis(op, a, shape)?;
    }
    Ok(sorted)
}

/// Checks that `perm` is a permutation of `0..rank`.
pub fn check_permutation(op: &'static str, perm: &[usize], rank: usize) -> Result<()> {
    let mut seen = vec![false; rank];
    if perm.len() != rank {
        return Err(Error::invalid(
            op,
            format!(
                "permutation {perm:?} has {} entries for rank {rank}",
                perm.len()
            ),
        ));
    }
    for &p in perm {
        if p >= rank || std::mem::replace(&mut seen[p], true) {
            return Err(Error::invalid(
                op,
                format!("{perm:?} is not a permutation of 0..{rank}"),
            ));
        }
    }
    Ok(())
}

/// The inverse of a permutation: `inv[perm[i]] = i`.
pub fn invert_permutation(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast("t", &[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast("t", &[], &[5]).unwrap(), vec![5]);
        assert!(broadcast("t", &[2, 3], &[4, 3]).is_err());
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn permutations_are_checked() {
        assert!(check_permutation("t", &[1, 0, 2], 3).is_ok());
        assert!(check_permutation("t", &[1, 1, 2], 3).is_err());
        assert!(check_permutation("t", &[0, 1], 3).is_err());
        assert_eq!(invert_permutation(&[2, 0, 1]), vec![1, 2, 0]);
    }
}
