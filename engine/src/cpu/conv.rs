//! Stride-1, zero-"same"-padded 2-D convolution in NCHW and its two backward ops, as
//! direct convolutions that read the image in place (no im2col buffer).
//!
//! With `taps = kh·kw` and tap `t` reading at `shift_t = dy·w + dx` from the output pixel:
//! - forward: `y[n][o][q] = bias[o] + Σ_{c,t} w[o][c][t] · x[n][c][q + shift_t]`;
//! - backward input: `dx[n][c][q] = Σ_{o,t} w[o][c][t] · dy[n][o][q − shift_t]`, which is
//!   the forward convolution of `dy` with the kernel transposed (`[c][o]`) and flipped
//!   (tap `taps−1−t`, whose shift is `−shift_t`), so it runs on the same code;
//! - backward weight: `dw[o][c][t] = Σ_{n,q} dy[n][o][q] · x[n][c][q + shift_t]`.
//!
//! The arithmetic is in `conv_kernels.rs`; this file packs weights, splits the work and
//! runs it on rayon's pool. Every output element is computed by one task, in a fixed
//! order, so the results are bit-for-bit reproducible whatever the thread count.
//!
//! Measured with `cargo bench --bench ops` on the project's 2-core AVX2 machines, as a
//! share of the SGEMM ceiling: see the engine README's table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::conv_kernels::{conv_block, transpose, weight_block, PixelOffsets, Taps, LANES, ROWS};
use crate::backend::Conv2dDims;

/// Below this many multiply-adds a convolution runs on the calling thread.
const PAR_MACS: usize = 1 << 18;

/// The [`Taps`] of an `h × w` image and `kh × kw` kernel, built once per shape (building
/// the lane masks costs more than a small convolution).
fn taps(h: usize, w: usize, kh: usize, kw: usize) -> Arc<Taps> {
    static CACHE: Mutex<Option<HashMap<[usize; 4], Arc<Taps>>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .get_or_insert_with(HashMap::new)
        .entry([h, w, kh, kw])
        .or_insert_with(|| Arc::new(Taps::new(h, w, kh, kw)))
        .clone()
}

/// `y = conv(x, w) + bias`: `x [n, c_in, h, w]`, `w [c_out, c_in, kh, kw]`,
/// `bias [c_out]`, `y [n, c_out, h, w]`.
pub(super) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, d: Conv2dDims) -> Vec<f32> {
    let taps = taps(d.h, d.w, d.kh, d.kw);
    let nt = taps.taps();
    let panels = pack(d.c_out, d.c_in, nt, |o, c, t| w[(o * d.c_in + c) * nt + t]);
    direct(x, d.n, d.c_in, &panels, d.c_out, bias, &taps)
}

/// `dx [n, c_in, h, w]` from `dy [n, c_out, h, w]` and `w`: the forward convolution of
/// `dy` with `w` transposed and flipped (see the module doc).
pub(super) fn backward_input(dy: &[f32], w: &[f32], d: Conv2dDims) -> Vec<f32> {
    let taps = taps(d.h, d.w, d.kh, d.kw);
    let nt = taps.taps();
    let panels = pack(d.c_in, d.c_out, nt, |c, o, t| {
        w[(o * d.c_in + c) * nt + (nt - 1 - t)]
    });
    direct(dy, d.n, d.c_out, &panels, d.c_in, None, &taps)
}

/// `dw [c_out, c_in, kh, kw]` from `x` and `dy`, summed over the batch.
///
/// As the outer product of [`weight_block`]: rows are (input channel, tap) pairs, lanes
/// output channels, and the sum runs over every pixel of every image. The input is copied
/// once into a zero-padded layout (`kh/2` rows and `kw/2` columns around each image, so a
/// tap reads zeros instead of needing a mask) and the gradient transposed once to
/// pixel-major; the result is computed transposed, `[c_in·kh·kw, c_out]`, and turned
/// around at the end.
pub(super) fn backward_weight(x: &[f32], dy: &[f32], d: Conv2dDims) -> Vec<f32> {
    let (p, nt) = (d.h * d.w, d.kh * d.kw);
    let cols = d.c_in * nt;
    if d.c_out * cols == 0 || d.n == 0 || p == 0 {
        return vec![0.0; d.c_out * cols];
    }
    let (py, px) = (d.kh / 2, d.kw / 2);
    let (hp, wp) = (d.h + 2 * py, d.w + 2 * px);
    let plane = hp * wp;
    let xpad = padded(x, d);
    // Tap (i, j) of output pixel (y, x) reads padded pixel (y + i, x + j) of its plane:
    // the sum's pixel k = (image, y, x) sits at offs[k], and the (channel, tap) pair of
    // row j adds base(j). Both stay inside the padded planes, with no margin needed.
    let offs = PixelOffsets::new(
        (0..d.n)
            .flat_map(|img| {
                (0..d.h)
                    .flat_map(move |y| (0..d.w).map(move |xx| img * d.c_in * plane + y * wp + xx))
            })
            .collect(),
    );
    let base = |j: usize| -> usize {
        let (c, t) = (j / nt, j % nt);
        c * plane + (t / d.kw) * wp + t % d.kw
    };
    let dyt = transposed(dy, d);
    // [cols, c_out], every element written by the first chunk of its block.
    let mut dwt = super::pool::take(cols * d.c_out);
    let lane_blocks = d.c_out.div_ceil(LANES);
    // Chunks of the pixel sum small enough that a chunk of dyt stays in L2 while every
    // lane block and row panel of a task passes over it; chunks add in order, so the
    // result does not depend on how panels are spread over threads.
    const KC: usize = 1024;
    let k_total = offs.len();
    let panel = |j0: usize, out: &mut [f32]| {
        let rows = ROWS.min(cols - j0);
        let bases: [usize; ROWS] = std::array::from_fn(|r| base(j0 + r.min(rows - 1)));
        for k0 in (0..k_total).step_by(KC) {
            for lb in 0..lane_blocks {
                let lanes = LANES.min(d.c_out - lb * LANES);
                weight_block(
                    &xpad,
                    &bases,
                    &offs,
                    k0..(k0 + KC).min(k_total),
                    &dyt[k0 * d.c_out + lb * LANES..],
                    d.c_out,
                    &mut out[lb * LANES..],
                    d.c_out,
                    rows,
                    lanes,
                    k0 > 0,
                );
            }
        }
    };
    let per_panel = ROWS * d.c_out;
    if d.macs() < PAR_MACS {
        for (i, out) in dwt.chunks_mut(per_panel).enumerate() {
            panel(i * ROWS, out);
        }
    } else {
        dwt.par_chunks_mut(per_panel)
            .enumerate()
            .for_each(|(i, out)| panel(i * ROWS, out));
    }
    // [cols, c_out] → [c_out, cols]
    let mut dw = super::pool::take(d.c_out * cols);
    for (j, row) in dwt.chunks_exact(d.c_out).enumerate() {
        for (o, &v) in row.iter().enumerate() {
            dw[o * cols + j] = v;
        }
    }
    dw
}

/// `x [n, c_in, h, w]` with `kh/2` zero rows and `kw/2` zero columns around every
/// channel of every image (`x` itself when the kernel is 1x1).
fn padded(x: &[f32], d: Conv2dDims) -> std::borrow::Cow<'_, [f32]> {
    let (py, px) = (d.kh / 2, d.kw / 2);
    if py == 0 && px == 0 {
        return std::borrow::Cow::Borrowed(x);
    }
    let (hp, wp) = (d.h + 2 * py, d.w + 2 * px);
    let mut out = super::pool::take(d.n * d.c_in * hp * wp);
    let fill = |plane: usize, dst: &mut [f32]| {
        dst.fill(0.0);
        let src = &x[plane * d.h * d.w..][..d.h * d.w];
        for (y, row) in src.chunks_exact(d.w).enumerate() {
            dst[(y + py) * wp + px..][..d.w].copy_from_slice(row);
        }
    };
    if out.len() < super::PAR_THRESHOLD {
        out.chunks_mut(hp * wp)
            .enumerate()
            .for_each(|(i, o)| fill(i, o));
    } else {
        out.par_chunks_mut(hp * wp)
            .enumerate()
            .for_each(|(i, o)| fill(i, o));
    }
    std::borrow::Cow::Owned(out)
}

/// `dy [n, c_out, p]` as `[n·p, c_out]`, followed by `LANES` more values (the last lane
/// block reads a whole vector past the last row; those lanes are discarded).
fn transposed(dy: &[f32], d: Conv2dDims) -> Vec<f32> {
    let (p, c) = (d.h * d.w, d.c_out);
    let mut out = super::pool::take(d.n * p * c + LANES);
    out[d.n * p * c..].fill(0.0);
    let image = |img: usize, dst: &mut [f32]| {
        transpose(&dy[img * c * p..][..c * p], p, dst, c, c, p);
    };
    let body = &mut out[..d.n * p * c];
    if body.len() < super::PAR_THRESHOLD {
        body.chunks_mut(p * c)
            .enumerate()
            .for_each(|(i, o)| image(i, o));
    } else {
        body.par_chunks_mut(p * c)
            .enumerate()
            .for_each(|(i, o)| image(i, o));
    }
    out
}

/// Weights as `m.div_ceil(ROWS)` panels, each `[channels][taps][ROWS]` with
/// `panel[(c·taps + t)·ROWS + r] = at(panel·ROWS + r, c, t)`, zero past row `m`.
fn pack(
    m: usize,
    channels: usize,
    taps: usize,
    at: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let per = channels * taps * ROWS;
    let mut out = vec![0.0; m.div_ceil(ROWS) * per];
    for (panel, chunk) in out.chunks_exact_mut(per.max(1)).enumerate() {
        for c in 0..channels {
            for t in 0..taps {
                for r in 0..ROWS {
                    let o = panel * ROWS + r;
                    if o < m {
                        chunk[(c * taps + t) * ROWS + r] = at(o, c, t);
                    }
                }
            }
        }
    }
    out
}

/// The direct convolution of `n` images `x [n, channels, p]` with packed `panels` (see
/// [`pack`]) into `[n, m, p]`, plus `bias [m]`.
fn direct(
    x: &[f32],
    n: usize,
    channels: usize,
    panels: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    taps: &Taps,
) -> Vec<f32> {
    let p = taps.p;
    // Every element is written by exactly one block store below.
    let mut y = super::pool::take(n * m * p);
    if y.is_empty() {
        return y;
    }
    let per_panel = channels * taps.taps() * ROWS;
    if per_panel == 0 {
        // No input channels: the sum is empty and only the bias remains.
        for (i, v) in y.iter_mut().enumerate() {
            *v = bias.map_or(0.0, |b| b[i / p % m]);
        }
        return y;
    }
    let image = |img: usize, y: &mut [f32]| {
        let x0 = img * channels * p;
        for (panel, a) in panels.chunks_exact(per_panel.max(1)).enumerate() {
            let o0 = panel * ROWS;
            let rows = ROWS.min(m - o0);
            let mut b = [0.0; ROWS];
            if let Some(bias) = bias {
                b[..rows].copy_from_slice(&bias[o0..o0 + rows]);
            }
            let out = &mut y[o0 * p..];
            for blk in 0..taps.blocks() {
                conv_block(
                    a,
                    x,
                    x0,
                    channels,
                    taps,
                    blk,
                    &b,
                    &mut out[blk * LANES..],
                    p,
                    rows,
                );
            }
        }
    };
    let macs = n * m * p * channels * taps.taps();
    if macs < PAR_MACS || n == 1 {
        for (img, y) in y.chunks_mut(m * p).enumerate() {
            image(img, y);
        }
    } else {
        y.par_chunks_mut(m * p)
            .enumerate()
            .for_each(|(img, y)| image(img, y));
    }
    y
}
