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

use super::matmul::{gemm_is_threaded, sgemm, Mat};
use super::small_gemm;
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
    // Every row is either filled with the bias or written by a beta = 0 GEMM.
    let mut y = super::pool::take(d.output_len());
    let scratch = if is_pointwise(&d) { 0 } else { k * p };
    // Few output channels: the unpacked small-m kernel (see small_gemm.rs for why
    // packing loses there), one image per task.
    let small = (d.c_out <= small_gemm::MAX_M && small_gemm::available(p))
        .then(|| small_gemm::transpose_padded(w, d.c_out, k));
    let parallel = small.is_some() || !gemm_is_threaded(d.c_out, k, p);
    for_each_image(&mut y, d.c_out * p, scratch, parallel, |img, y, col| {
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
        match &small {
            Some(w_t) => small_gemm::gemm(w_t, d.c_out, k, cols, p, y, beta != 0.0),
            None => {
                let wm = Mat::new(w, d.c_out, k, false);
                sgemm((d.c_out, k, p), wm, Mat::new(cols, k, p, false), beta, y, p);
            }
        }
    });
    y
}

/// `dx [n, c_in, h, w]` from `dy [n, c_out, h, w]` and `w`.
pub(super) fn backward_input(dy: &[f32], w: &[f32], d: Conv2dDims) -> Vec<f32> {
    let (p, k) = (d.h * d.w, col_rows(&d));
    let mut dx = super::pool::take_zeroed(d.input_len());
    let scratch = if is_pointwise(&d) { 0 } else { k * p };
    let parallel = !gemm_is_threaded(k, d.c_out, p);
    for_each_image(&mut dx, d.c_in * p, scratch, parallel, |img, dx, col| {
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
    // A GEMM that matrixmultiply threads itself gets a single task. Tasks own fixed,
    // contiguous ranges of images and their partial sums are added in task order, so the
    // result is bit-for-bit reproducible (a resumed training run must match an
    // uninterrupted one), unlike a work-stealing fold whose split points vary.
    let tasks = if gemm_is_threaded(d.c_out, p, k) {
        1
    } else {
        rayon::current_num_threads().min(d.n).max(1)
    };
    let per = d.n.div_ceil(tasks);
    let partials: Vec<Vec<f32>> = (0..d.n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut dw = super::pool::take_zeroed(wlen);
            let mut col = super::pool::take(scratch);
            for img in t * per..((t + 1) * per).min(d.n) {
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
            }
            dw
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0.0; wlen]);
    for part in parts {
        for (a, b) in total.iter_mut().zip(part) {
            *a += b;
        }
    }
    total
}

/// Calls `f(image, out_chunk, scratch)` for each image's `per`-element block of `out`,
/// images in parallel when `parallel`; `scratch` is a `scratch_len` buffer private to
/// the task.
fn for_each_image<F>(out: &mut [f32], per: usize, scratch_len: usize, parallel: bool, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    if per == 0 {
        return;
    }
    if !parallel {
        let mut col = super::pool::take(scratch_len);
        for (img, out) in out.chunks_mut(per).enumerate() {
            f(img, out, &mut col);
        }
        return;
    }
    out.par_chunks_mut(per).enumerate().for_each_init(
        || super::pool::take(scratch_len),
        |col, (img, out)| f(img, out, col),
    );
}

/// Where tap `(dy, dx)` of one channel reads, for output pixels `q = y·w + x`.
///
/// The source of `q` is `q + shift` with `shift = dy·w + dx`, so a whole channel row of
/// `col` is one contiguous shifted copy: valid rows are `y0..y1`, valid columns `lo..hi`,
/// and `q0..q1` is the contiguous range of `q` whose source lies inside the channel.
/// Columns outside `lo..hi` in rows `y0..y1` wrap to a neighbouring image row and must
/// be zeroed (im2col) or ignored (col2im) separately.
struct Tap {
    shift: isize,
    y0: usize,
    y1: usize,
    lo: usize,
    hi: usize,
    q0: usize,
    q1: usize,
}

impl Tap {
    fn new(d: &Conv2dDims, i: usize, j: usize) -> Self {
        let (h, w) = (d.h as isize, d.w as isize);
        let dy = i as isize - (d.kh / 2) as isize;
        let dx = j as isize - (d.kw / 2) as isize;
        let y0 = (-dy).clamp(0, h);
        let y1 = (h - dy).clamp(y0, h);
        let lo = (-dx).clamp(0, w);
        let hi = (w - dx).clamp(lo, w);
        let shift = dy * w + dx;
        // Clamped to the channel: for an image smaller than the kernel the first valid
        // source can lie past its end, and the tap then reads nothing.
        let q0 = (y0 * w).max(-shift).min(h * w);
        let q1 = (y1 * w).min(h * w - shift).max(q0);
        let u = |v: isize| v as usize;
        Tap {
            shift,
            y0: u(y0),
            y1: u(y1),
            lo: u(lo),
            hi: u(hi),
            q0: u(q0),
            q1: u(q1),
        }
    }

    /// Source range of the contiguous part, in the channel.
    fn src(&self) -> std::ops::Range<usize> {
        if self.q0 == self.q1 {
            return 0..0;
        }
        (self.q0 as isize + self.shift) as usize..(self.q1 as isize + self.shift) as usize
    }

    /// Zeroes the wrapped columns `..lo` and `hi..` of every valid row of `row`.
    fn zero_wrapped(&self, row: &mut [f32], w: usize) {
        if self.lo == 0 && self.hi == w {
            return;
        }
        for r in row[self.y0 * w..self.y1 * w].chunks_exact_mut(w) {
            r[..self.lo].fill(0.0);
            r[self.hi..].fill(0.0);
        }
    }
}

/// Every tap of the kernel, row-major over `(dy, dx)`: the order of `col`'s rows.
fn taps(d: &Conv2dDims) -> Vec<Tap> {
    (0..d.kh)
        .flat_map(|i| (0..d.kw).map(move |j| (i, j)))
        .map(|(i, j)| Tap::new(d, i, j))
        .collect()
}

/// Fills `col [c_in·kh·kw, h·w]` from one image `x [c_in, h, w]` (see the module doc):
/// per row one shifted `copy_from_slice`, then zeros where the tap falls off the image.
fn im2col(x: &[f32], d: &Conv2dDims, col: &mut [f32]) {
    let p = d.h * d.w;
    let taps = taps(d);
    let mut rows = col.chunks_exact_mut(p);
    for xc in x.chunks_exact(p) {
        for t in &taps {
            let row = rows.next().expect("col has c_in·kh·kw rows");
            row[..t.q0].fill(0.0);
            row[t.q1..].fill(0.0);
            row[t.q0..t.q1].copy_from_slice(&xc[t.src()]);
            t.zero_wrapped(row, d.w);
        }
    }
}

/// The adjoint of [`im2col`]: adds each valid entry of `col` back to the pixel it was
/// read from, into `dx [c_in, h, w]`. Zeroes the wrapped entries of `col` first (it is
/// scratch) so the add is one contiguous shifted loop per row.
fn col2im(col: &mut [f32], d: &Conv2dDims, dx: &mut [f32]) {
    let p = d.h * d.w;
    let taps = taps(d);
    let mut rows = col.chunks_exact_mut(p);
    for dxc in dx.chunks_exact_mut(p) {
        for t in &taps {
            let row = rows.next().expect("col has c_in·kh·kw rows");
            t.zero_wrapped(row, d.w);
            for (d, &s) in dxc[t.src()].iter_mut().zip(&row[t.q0..t.q1]) {
                *d += s;
            }
        }
    }
}
