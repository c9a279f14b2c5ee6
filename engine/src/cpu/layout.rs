//! Layout copies: permute, slice, concat and gather.
//!
//! Slice, concat and gather view the array as `[outer, axis, inner]` (`outer` the product
//! of the extents before `axis`, `inner` of those after it), so each is a loop over
//! `outer` of contiguous `copy_from_slice`s. Permute is a strided copy: after collapsing
//! axes that stay adjacent, the innermost output axis is copied contiguously when it is
//! also the input's innermost axis and read with a stride otherwise.

use super::strided::{collapse, Dim, Odometer};
use super::{contiguous_strides, par_fill};

/// `y = x.permute(perm)`: output axis `i` is input axis `perm[i]`.
pub(super) fn permute(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    if x.is_empty() {
        return out;
    }
    let strides = contiguous_strides(shape);
    let dims: Vec<Dim<1>> = perm.iter().map(|&a| (shape[a], [strides[a]])).collect();
    let mut dims = collapse(&dims);
    let Some((len, [stride])) = dims.pop() else {
        out.copy_from_slice(x);
        return out;
    };
    par_fill(&mut out, len, |s, out| {
        let mut odo = Odometer::new(&dims, s / len);
        for row in out.chunks_exact_mut(len) {
            let [off] = odo.offsets;
            if stride == 1 {
                row.copy_from_slice(&x[off..off + len]);
            } else {
                let src = x[off..].iter().step_by(stride);
                for (o, &v) in row.iter_mut().zip(src) {
                    *o = v;
                }
            }
            odo.advance();
        }
    });
    out
}

/// `(outer, inner)`: the products of the extents before and after `axis`.
fn outer_inner(shape: &[usize], axis: usize) -> (usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis + 1..].iter().product(),
    )
}

/// The range `start..start + len` of `axis`.
pub(super) fn slice(x: &[f32], shape: &[usize], axis: usize, start: usize, len: usize) -> Vec<f32> {
    let (outer, inner) = outer_inner(shape, axis);
    let (row_in, row_out) = (shape[axis] * inner, len * inner);
    let mut out = vec![0.0f32; outer * row_out];
    if out.is_empty() {
        return out;
    }
    par_fill(&mut out, row_out, |s, out| {
        for (o, dst) in out.chunks_exact_mut(row_out).enumerate() {
            let src = (s / row_out + o) * row_in + start * inner;
            dst.copy_from_slice(&x[src..src + row_out]);
        }
    });
    out
}

/// Joins `parts` (data and shape) along `axis`.
pub(super) fn concat(parts: &[(&[f32], &[usize])], axis: usize) -> Vec<f32> {
    let Some(&(_, shape0)) = parts.first() else {
        return Vec::new();
    };
    let (outer, inner) = outer_inner(shape0, axis);
    let rows: Vec<usize> = parts.iter().map(|(_, s)| s[axis] * inner).collect();
    let row_out: usize = rows.iter().sum();
    let mut out = vec![0.0f32; outer * row_out];
    if out.is_empty() {
        return out;
    }
    par_fill(&mut out, row_out, |s, out| {
        for (o, dst) in out.chunks_exact_mut(row_out).enumerate() {
            let o = s / row_out + o;
            let mut at = 0;
            for ((data, _), &r) in parts.iter().zip(&rows) {
                dst[at..at + r].copy_from_slice(&data[o * r..(o + 1) * r]);
                at += r;
            }
        }
    });
    out
}

/// `y` takes index `indices[j]` of `axis` as its index `j`.
pub(super) fn gather(x: &[f32], shape: &[usize], axis: usize, indices: &[usize]) -> Vec<f32> {
    let (outer, inner) = outer_inner(shape, axis);
    let row_in = shape[axis] * inner;
    let row_out = indices.len() * inner;
    let mut out = vec![0.0f32; outer * row_out];
    if out.is_empty() {
        return out;
    }
    par_fill(&mut out, row_out, |s, out| {
        for (o, dst) in out.chunks_exact_mut(row_out).enumerate() {
            let base = (s / row_out + o) * row_in;
            for (d, &i) in dst.chunks_exact_mut(inner).zip(indices) {
                d.copy_from_slice(&x[base + i * inner..][..inner]);
            }
        }
    });
    out
}
