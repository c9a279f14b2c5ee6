//! Stride-1, zero-"same"-padded 2-D convolution in NCHW and its two backward ops.
//!
//! All three are GEMMs per image `n`, with `K = c_in·kh·kw` and `P = h·w`:
//! - forward: `y[n] [c_out, P] = W [c_out, K] · col(x[n]) [K, P]` (+ bias per row);
//! - backward input: `col = Wᵀ [K, c_out] · dy[n] [c_out, P]`, then `dx[n] = col2im(col)`;
//! - backward weight: `dW [c_out, K] = Σₙ dy[n] [c_out, P] · col(x[n])ᵀ [P, K]`.
//!
//! `col(x)` is im2col: row `(c, i, j)` holds channel `c` shifted by kernel tap `(i, j)`,
//! zero outside the image; `col2im` is its adjoint (scatter-add). A 1x1 kernel needs no
//! im2col at all: `x[n]` viewed `[c_in, P]` already is the column matrix. Transposes are
//! GEMM strides, never copies.
//!
//! Images run as rayon tasks, each with its own column buffer (reused across the images
//! of a task, so it stays in cache between im2col and the GEMM that reads it); the
//! weight gradient sums one private `dW` per task.

use rayon::prelude::*;

use super::matmul::{sgemm, Mat};
use crate::backend::Conv2dDims;

/// Rows of the column matrix: `c_in · kh · kw`.
fn col_rows(d: &Conv2dDims) -> usize {
    d.c_in * d.kh * d.kw
}

/// Whether the kernel is 1x1, so `x[n]` is its own column matrix.
fn is_pointwise(d: &Conv2dDims) -> bool {
    d.kh == 1 && d.kw == 1
}

/// `y = conv(x, w) + bias`: `x [n, c_in, h, w]`, `w [c_out, c_in, kh, kw]`,
/// `bias [c_out]`, `y [n, c_out, h, w]`.
pub(super) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, d: Conv2dDims) -> Vec<f32> {
    let (p, k) = (d.h * d.w, col_rows(&d));
    let mut y = vec![0.0f32; d.output_len()];
    let scratch = if is_pointwise(&d) { 0 } else { k * p };
    for_each_image(&mut y, d.c_out * p, scratch, |img, y, col| {
        let x = &x[img * d.c_in * p..][..d.c_in * p];
        // The bias goes in first and the GEMM accumulates onto it (beta = 1).
        let beta = match bias {
            Some(bias) => {
                for (row, &b) in y.chunks_exact_mut(p).zip(bias) {
                    row.fill(b);
                }
                1.0
            }
            None => 0.0,
        };
        let cols = if is_pointwise(&d) {
            x
        } else {
            im2col(x, &d, col);
            col
        };
        let wm = Mat::new(w, d.c_out, k, false);
        sgemm((d.c_out, k, p), wm, Mat::new(cols, k, p, false), beta, y, p);
    });
    y
}

/// `dx [n, c_in, h, w]` from `dy [n, c_out, h, w]` and `w`.
pub(super) fn backward_input(dy: &[f32], w: &[f32], d: Conv2dDims) -> Vec<f32> {
    let (p, k) = (d.h * d.w, col_rows(&d));
    let mut dx = vec![0.0f32; d.input_len()];
    let scratch = if is_pointwise(&d) { 0 } else { k * p };
    for_each_image(&mut dx, d.c_in * p, scratch, |img, dx, col| {
        let dy = Mat::new(&dy[img * d.c_out * p..][..d.c_out * p], d.c_out, p, false);
        // W is stored [c_out, K]; read as its transpose [K, c_out].
        let wt = Mat::new(w, k, d.c_out, true);
        if is_pointwise(&d) {
            sgemm((k, d.c_out, p), wt, dy, 0.0, dx, p);
        } else {
            sgemm((k, d.c_out, p), wt, dy, 0.0, col, p);
            col2im(col, &d, dx);
        }
    });
    dx
}

/// `dw [c_out, c_in, kh, kw]` from `x` and `dy`, summed over the batch.
pub(super) fn backward_weight(x: &[f32], dy: &[f32], d: Conv2dDims) -> Vec<f32> {
    let (p, k) = (d.h * d.w, col_rows(&d));
    let scratch = if is_pointwise(&d) { 0 } else { k * p };
    let wlen = d.weight_len();
    if p == 0 || wlen == 0 {
        return vec![0.0; wlen];
    }
    // At most one task per thread: each task's private dW costs one extra sum at the end.
    let min_len = d.n.div_ceil(rayon::current_num_threads()).max(1);
    (0..d.n)
        .into_par_iter()
        .with_min_len(min_len)
        .fold(
            || (vec![0.0f32; wlen], vec![0.0f32; scratch]),
            |(mut dw, mut col), img| {
                let x = &x[img * d.c_in * p..][..d.c_in * p];
                let dy = Mat::new(&dy[img * d.c_out * p..][..d.c_out * p], d.c_out, p, false);
                let cols = if is_pointwise(&d) {
                    x
                } else {
                    im2col(x, &d, &mut col);
                    &col
                };
                // col is stored [K, P]; read as its transpose [P, K]. Accumulate (beta 1).
                sgemm(
                    (d.c_out, p, k),
                    dy,
                    Mat::new(cols, p, k, true),
                    1.0,
                    &mut dw,
                    k,
                );
                (dw, col)
            },
        )
        .map(|(dw, _)| dw)
        .reduce(
            || vec![0.0f32; wlen],
            |mut a, b| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
                a
            },
        )
}

/// Calls `f(image, out_chunk, scratch)` for each image's `per`-element block of `out`,
/// images in parallel; `scratch` is a `scratch_len` buffer private to the task.
fn for_each_image<F>(out: &mut [f32], per: usize, scratch_len: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    if per == 0 {
        return;
    }
    out.par_chunks_mut(per).enumerate().for_each_init(
        || vec![0.0f32; scratch_len],
        |col, (img, out)| f(img, out, col),
    );
}

/// The range of output columns `x` whose source column `x + dx` lies inside `0..w`.
fn valid_cols(w: usize, dx: isize) -> (usize, usize) {
    let lo = (-dx).clamp(0, w as isize) as usize;
    let hi = (w as isize - dx).clamp(lo as isize, w as isize) as usize;
    (lo, hi)
}

/// Fills `col [c_in·kh·kw, h·w]` from one image `x [c_in, h, w]` (see the module doc).
fn im2col(x: &[f32], d: &Conv2dDims, col: &mut [f32]) {
    let (h, w, p) = (d.h, d.w, d.h * d.w);
    let (ph, pw) = ((d.kh / 2) as isize, (d.kw / 2) as isize);
    let mut rows = col.chunks_exact_mut(p);
    for xc in x.chunks_exact(p) {
        for i in 0..d.kh as isize {
            for j in 0..d.kw as isize {
                let row = rows.next().expect("col has c_in·kh·kw rows");
                let (dy, dx) = (i - ph, j - pw);
                let (lo, hi) = valid_cols(w, dx);
                for (y, dst) in row.chunks_exact_mut(w).enumerate() {
                    let sy = y as isize + dy;
                    if sy < 0 || sy >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &xc[sy as usize * w..][..w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    let s0 = (lo as isize + dx) as usize;
                    dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each entry of `col` back to the pixel it was read
/// from, into `dx [c_in, h, w]`.
fn col2im(col: &[f32], d: &Conv2dDims, dx: &mut [f32]) {
    let (h, w, p) = (d.h, d.w, d.h * d.w);
    let (ph, pw) = ((d.kh / 2) as isize, (d.kw / 2) as isize);
    let mut rows = col.chunks_exact(p);
    for dxc in dx.chunks_exact_mut(p) {
        for i in 0..d.kh as isize {
            for j in 0..d.kw as isize {
                let row = rows.next().expect("col has c_in·kh·kw rows");
                let (dy, dxo) = (i - ph, j - pw);
                let (lo, hi) = valid_cols(w, dxo);
                for (y, src) in row.chunks_exact(w).enumerate() {
                    let sy = y as isize + dy;
                    if sy < 0 || sy >= h as isize {
                        continue;
                    }
                    let s0 = (lo as isize + dxo) as usize;
                    let dst = &mut dxc[sy as usize * w + s0..][..hi - lo];
                    for (d, &s) in dst.iter_mut().zip(&src[lo..hi]) {
                        *d += s;
                    }
                }
            }
        }
    }
}
