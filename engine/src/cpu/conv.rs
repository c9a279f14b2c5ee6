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

use super::conv_kernels::{conv_block, weight_tile, Taps, WeightGrad, LANES, ROWS, WCOLS, WROWS};
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
pub(super) fn backward_weight(x: &[f32], dy: &[f32], d: Conv2dDims) -> Vec<f32> {
    let taps = taps(d.h, d.w, d.kh, d.kw);
    let (nt, p) = (taps.taps(), taps.p);
    // Column j of dw's rows is (input channel, tap) = (j / nt, j % nt).
    let cols = d.c_in * nt;
    if d.c_out * cols == 0 || d.n == 0 || p == 0 {
        return vec![0.0; d.c_out * cols];
    }
    // Every element is written by the scatter at the end.
    let mut dw = super::pool::take(d.c_out * cols);
    let col_blocks = cols.div_ceil(WCOLS);
    let row_blocks = d.c_out.div_ceil(WROWS);
    let g = WeightGrad {
        x,
        dy,
        n: d.n,
        c_in: d.c_in,
        c_out: d.c_out,
        taps: &taps,
    };
    // The sum over pixels runs in chunks of whole images, about KC pixels each, so that a
    // tile's rows of dy stay in L1 while every column block of a task passes over them.
    // Tasks own disjoint ranges of column blocks and add chunk after chunk in order, so
    // the result does not depend on the number of threads.
    const KC: usize = 1024;
    const RB_GROUP: usize = 2;
    let chunk = KC.div_ceil(p).clamp(1, d.n);
    let task = |jbs: std::ops::Range<usize>| {
        let mut part = vec![[[0f32; WCOLS]; WROWS]; row_blocks * jbs.len()];
        let cols_of = |jb: usize| -> Vec<(usize, usize)> {
            (jb * WCOLS..((jb + 1) * WCOLS).min(cols))
                .map(|j| (j / nt, j % nt))
                .collect()
        };
        let all_cols: Vec<_> = jbs.clone().map(cols_of).collect();
        for img0 in (0..d.n).step_by(chunk) {
            let images = img0..(img0 + chunk).min(d.n);
            // RB_GROUP row blocks of dy (12 rows of one chunk, ~12 KB) stay in L1 while
            // each column block's few rows of x are read from L2 once for all of them.
            for rb0 in (0..row_blocks).step_by(RB_GROUP) {
                for (k, js) in all_cols.iter().enumerate() {
                    for rb in rb0..(rb0 + RB_GROUP).min(row_blocks) {
                        let rows = WROWS.min(d.c_out - rb * WROWS);
                        let t = weight_tile(&g, images.clone(), rb * WROWS, rows, js);
                        let acc = &mut part[rb * jbs.len() + k];
                        for r in 0..WROWS {
                            for j in 0..WCOLS {
                                acc[r][j] += t[r][j];
                            }
                        }
                    }
                }
            }
        }
        (jbs, part)
    };
    let tasks = if d.macs() < PAR_MACS {
        1
    } else {
        (rayon::current_num_threads() * 4).min(col_blocks)
    };
    let per = col_blocks.div_ceil(tasks);
    let ranges: Vec<_> = (0..col_blocks)
        .step_by(per)
        .map(|s| s..(s + per).min(col_blocks))
        .collect();
    let parts: Vec<_> = if tasks == 1 {
        ranges.into_iter().map(task).collect()
    } else {
        ranges.into_par_iter().map(task).collect()
    };
    for (jbs, part) in parts {
        for rb in 0..row_blocks {
            for (k, jb) in jbs.clone().enumerate() {
                let acc = &part[rb * jbs.len() + k];
                for (r, row) in acc.iter().enumerate() {
                    let o = rb * WROWS + r;
                    for (jj, &v) in row.iter().enumerate() {
                        let j = jb * WCOLS + jj;
                        if o < d.c_out && j < cols {
                            dw[o * cols + j] = v;
                        }
                    }
                }
            }
        }
    }
    dw
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
