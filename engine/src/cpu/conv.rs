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
//! Their speed as a share of the SGEMM ceiling (`cargo bench --bench ops`): the engine
//! README's table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::conv_kernels::{
    conv_block, conv_block_pair, transpose, weight_block, PixelOffsets, Taps, LANES, ROWS,
    WEIGHT_ROWS,
};
use super::{for_each_chunk, PAR_THRESHOLD};
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

/// `y = conv(x, w) + bias`, and then `max(y, 0)` when `relu`: `x [n, c_in, h, w]`,
/// `w [c_out, c_in, kh, kw]`, `bias [c_out]`, `y [n, c_out, h, w]`. The relu is applied
/// to each image's output right after it is computed, while it is still in cache, not
/// as a second pass over `y`.
pub(super) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    d: Conv2dDims,
    relu: bool,
) -> Vec<f32> {
    if as_gemm(d) {
        return gemm::forward(x, w, bias, d, relu);
    }
    let taps = taps(d.h, d.w, d.kh, d.kw);
    let nt = taps.taps();
    let k = d.c_in * nt;
    let panels = pack(d.c_out, k, |o, row| row.copy_from_slice(&w[o * k..][..k]));
    direct(x, d.n, d.c_in, &panels, d.c_out, bias, &taps, relu)
}

/// `dx [n, c_in, h, w]` from `dy [n, c_out, h, w]` and `w`: the forward convolution of
/// `dy` with `w` transposed and flipped (see the module doc).
pub(super) fn backward_input(dy: &[f32], w: &[f32], d: Conv2dDims) -> Vec<f32> {
    if as_gemm(d) {
        return gemm::backward_input(dy, w, d);
    }
    let taps = taps(d.h, d.w, d.kh, d.kw);
    let nt = taps.taps();
    // Row c of the transposed, flipped kernel: `[c_out][taps]`, each tap run reversed.
    let panels = pack(d.c_in, d.c_out * nt, |c, row| {
        for (o, taps) in row.chunks_exact_mut(nt).enumerate() {
            let src = &w[(o * d.c_in + c) * nt..][..nt];
            for (v, &s) in taps.iter_mut().zip(src.iter().rev()) {
                *v = s;
            }
        }
    });
    direct(dy, d.n, d.c_out, &panels, d.c_in, None, &taps, false)
}

/// `dw [c_out, c_in, kh, kw]` from `x` and `dy`, summed over the batch.
///
/// As the outer product of [`weight_block`]: rows are (input channel, tap) pairs, lanes
/// output channels, and the sum runs over every pixel of every image. It is a GEMM
/// (`[c_in·kh·kw, pixels] · [pixels, c_out]`) blocked as one: the input is copied once into
/// a zero-padded layout (`kh/2` rows and `kw/2` columns around each image, so a tap reads
/// zeros instead of needing a mask) and serves as the left operand in place; the gradient
/// is transposed once into lane-block-major panels `[c_out/16][pixels][16]`, so a block's
/// run over a chunk of pixels reads contiguously and stays in L1 while the task's row
/// panels pass over it. Tasks are (lane block, group of row panels), each writing its own
/// contiguous part of a lane-block-major result, which is turned around at the end.
///
/// Why this blocking: with the pixel sum chunked by 1024 for every lane block at once,
/// the gradient chunk (`1024 · c_out · 4` bytes: 2 MB at hidden 512) left the caches for
/// every row panel; `benches/ops` had the weight gradient of the 1x1 512→512 at 34
/// GFLOP/s and of the 3x3 6→512 at 11.
pub(super) fn backward_weight(x: &[f32], dy: &[f32], d: Conv2dDims) -> Vec<f32> {
    if as_gemm(d) && d.c_in.min(d.c_out) >= gemm::WEIGHT_MIN_CHANNELS {
        return gemm::backward_weight(x, dy, d);
    }
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
    let k_total = offs.len();
    let lane_blocks = d.c_out.div_ceil(LANES);
    let dyt = lane_panels(dy, d);
    let panels = cols.div_ceil(WEIGHT_ROWS);
    // When all the lane panels fit in L2 (256 KB: the output layers with 12-48 channels,
    // and every layer at 4x4), a task is one row panel over all pixels, as long
    // sequential runs. Otherwise the pixels go in chunks of KC = 256 (a lane panel's
    // chunk is 16 KB, in L1) and a task is a group of row panels that each pass over the
    // chunk: at most 21 (their rows over a chunk, 21·12·KC·4 bytes, stay in L2), and enough
    // tasks in all to keep every thread busy.
    let fits_l2 = lane_blocks * k_total * LANES * 4 <= 256 << 10;
    let (kc, group) = if fits_l2 {
        (k_total, 1)
    } else {
        let want_tasks = 4 * rayon::current_num_threads();
        let groups = panels
            .div_ceil(21)
            .max(want_tasks.div_ceil(lane_blocks))
            .min(panels);
        (256, panels.div_ceil(groups))
    };
    let groups = panels.div_ceil(group);
    let rows_pad = groups * group * WEIGHT_ROWS;
    // [lane block][rows_pad][LANES]; each task's part is written by its first chunk.
    let mut dwl = super::pool::take(lane_blocks * rows_pad * LANES);
    let task = |i: usize, out: &mut [f32]| {
        let (lb, g) = (i / groups, i % groups);
        let lanes = LANES.min(d.c_out - lb * LANES);
        let panel_b = &dyt[lb * k_total * LANES..][..k_total * LANES];
        for k0 in (0..k_total).step_by(kc) {
            for local in 0..group {
                let j0 = (g * group + local) * WEIGHT_ROWS;
                if j0 >= cols {
                    break;
                }
                let rows = WEIGHT_ROWS.min(cols - j0);
                let bases: [usize; WEIGHT_ROWS] =
                    std::array::from_fn(|r| base(j0 + r.min(rows - 1)));
                weight_block(
                    &xpad,
                    &bases,
                    &offs,
                    k0..(k0 + kc).min(k_total),
                    &panel_b[k0 * LANES..],
                    LANES,
                    &mut out[local * WEIGHT_ROWS * LANES..],
                    LANES,
                    rows,
                    lanes,
                    k0 > 0,
                );
            }
        }
    };
    for_each_chunk(
        &mut dwl,
        group * WEIGHT_ROWS * LANES,
        d.macs() >= PAR_MACS,
        task,
    );
    // [lane block][cols][LANES] → [c_out, cols]
    let mut dw = super::pool::take(d.c_out * cols);
    for lb in 0..lane_blocks {
        let lanes = LANES.min(d.c_out - lb * LANES);
        transpose(
            &dwl[lb * rows_pad * LANES..],
            LANES,
            &mut dw[lb * LANES * cols..],
            cols,
            cols,
            lanes,
        );
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
    let parallel = out.len() >= PAR_THRESHOLD;
    for_each_chunk(&mut out, hp * wp, parallel, fill);
    std::borrow::Cow::Owned(out)
}

/// `dy [n, c_out, p]` as lane-block panels `[c_out/16][n·p][16]`: panel `lb` holds output
/// channels `16·lb..16·lb + 16` of every pixel, zero past `c_out`, so that
/// [`weight_block`] reads each pixel's 16 lanes as whole vectors.
fn lane_panels(dy: &[f32], d: Conv2dDims) -> Vec<f32> {
    let (p, c) = (d.h * d.w, d.c_out);
    let k_total = d.n * p;
    let lane_blocks = c.div_ceil(LANES);
    let mut out = super::pool::take(lane_blocks * k_total * LANES);
    // One task per (lane block, image): `[p][LANES]` of the output.
    let fill = |i: usize, dst: &mut [f32]| {
        let (lb, img) = (i / d.n, i % d.n);
        let lanes = LANES.min(c - lb * LANES);
        if lanes < LANES {
            dst.fill(0.0);
        }
        transpose(&dy[(img * c + lb * LANES) * p..], p, dst, LANES, lanes, p);
    };
    let parallel = out.len() >= PAR_THRESHOLD;
    for_each_chunk(&mut out, p * LANES, parallel, fill);
    out
}

/// Weights as `m.div_ceil(ROWS)` panels, each `[k][ROWS]` with `panel[j·ROWS + r] =
/// row(panel·ROWS + r)[j]`, zero past row `m`: `row(i, buf)` writes row `i` of the
/// `[m, k]` weight matrix (`k` = channels · taps, tap fastest) into `buf`.
///
/// A row at a time, written contiguously and then spread into its panel with stride
/// `ROWS`: a first version that computed each element's source index in the panel's order
/// took 3.7% of config S's batch-parallel step (`perf record` on `BENCH_SHARDS=2`).
fn pack(m: usize, k: usize, row: impl Fn(usize, &mut [f32])) -> Vec<f32> {
    let per = k * ROWS;
    let mut out = vec![0.0; m.div_ceil(ROWS) * per];
    let mut buf = vec![0.0; k];
    for (panel, chunk) in out.chunks_exact_mut(per.max(1)).enumerate() {
        for r in 0..ROWS.min(m - panel * ROWS) {
            row(panel * ROWS + r, &mut buf);
            for (dst, &v) in chunk.chunks_exact_mut(ROWS).zip(&buf) {
                dst[r] = v;
            }
        }
    }
    out
}

/// The direct convolution of `n` images `x [n, channels, p]` with packed `panels` (see
/// [`pack`]) into `[n, m, p]`, plus `bias [m]`, then `max(·, 0)` when `relu`.
#[allow(clippy::too_many_arguments)]
fn direct(
    x: &[f32],
    n: usize,
    channels: usize,
    panels: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    taps: &Taps,
    relu: bool,
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
            let b = bias.map_or(0.0, |b| b[i / p % m]);
            *v = if relu { super::elementwise::relu(b) } else { b };
        }
        return y;
    }
    let bias_of = |o0: usize, rows: usize| {
        let mut b = [0.0; ROWS];
        if let Some(bias) = bias {
            b[..rows].copy_from_slice(&bias[o0..o0 + rows]);
        }
        b
    };
    let image = |img: usize, y: &mut [f32]| {
        let x0 = img * channels * p;
        for (panel, a) in panels.chunks_exact(per_panel.max(1)).enumerate() {
            let o0 = panel * ROWS;
            let rows = ROWS.min(m - o0);
            let b = bias_of(o0, rows);
            let out = &mut y[o0 * p..];
            // Two blocks a call where there are two (see `conv_block_pair`).
            let mut blk = 0;
            while blk < taps.blocks() {
                let o = &mut out[blk * LANES..];
                if blk + 1 < taps.blocks() {
                    conv_block_pair(a, x, x0, channels, taps, blk, &b, o, p, rows);
                    blk += 2;
                } else {
                    conv_block(a, x, x0, channels, taps, blk, &b, o, p, rows);
                    blk += 1;
                }
            }
        }
        if relu {
            relu_in_place(y);
        }
    };
    let macs = n * m * p * channels * taps.taps();
    for_each_chunk(&mut y, m * p, macs >= PAR_MACS && n > 1, image);
    y
}

/// `max(v, 0)` on every element: the engine's relu (NaN stays NaN), applied by
/// `conv2d_relu` to an image's output while it is still in cache.
pub(super) fn relu_in_place(y: &mut [f32]) {
    for v in y {
        *v = super::elementwise::relu(*v);
    }
}

/// Fills each `p`-long row of one image's output `y` with its channel's bias, for a
/// product `C = A·B + beta·C` to add to, and returns that `beta`: 1 with a bias, 0 (C
/// ignored) without.
pub(super) fn start_with_bias(y: &mut [f32], bias: Option<&[f32]>, p: usize) -> f32 {
    match bias {
        Some(b) => {
            for (row, &v) in y.chunks_exact_mut(p).zip(b) {
                row.fill(v);
            }
            1.0
        }
        None => 0.0,
    }
}

/// Channels (in and out) from which a 1x1 convolution runs as GEMMs (see [`gemm`]).
const GEMM_MIN_CHANNELS: usize = 128;

/// Whether this convolution's forward and input gradient run on [`gemm`].
fn as_gemm(d: Conv2dDims) -> bool {
    d.kh == 1 && d.kw == 1 && d.c_in.min(d.c_out) >= GEMM_MIN_CHANNELS && d.h * d.w >= 64
}

/// Wide 1x1 convolutions on larger images as matrix products on matrixmultiply, which
/// packs both operands into cache-sized panels: per image, `y = W · x` and
/// `dx = Wᵀ · dy`, and from 256 channels `dW = Σ_images dy · xᵀ`. The direct kernels above
/// read their operands in place, which costs them once an image's tensor outgrows L2
/// (128 KB at 128 channels and 16x16). `benches/ops`, A/B in one run (GFLOP/s, medians):
/// - 16x16, 128 channels: forward 58 → 93, input gradient 56 → 105;
/// - 16x16, 512 channels: forward 70 → 114, input gradient 72 → 117, weight gradient
///   (one full-width product per image, summed over fixed groups of images) 74-85 →
///   116-120;
/// - 8x8, 512 channels: forward 73-80 → 72-100, input gradient 60-66 → 103, weight
///   gradient the same.
///
/// At 4x4 the direct kernels are as fast, and at 128 channels the blocked weight-gradient
/// kernel matched a GEMM at 16x16 and beat it at 4x4 (106 against 69), so those stay
/// direct. Each task is fixed by the shape (an image, or a group of images): results do
/// not depend on the thread count.
mod gemm {
    use super::super::for_each_chunk;
    use super::super::matmul::{sgemm, Mat};
    use super::PAR_MACS;
    use crate::backend::Conv2dDims;

    /// `y[n] = W · x[n] + bias`, `W [c_out, c_in]`, and `max(y, 0)` when `relu` (applied to
    /// each image right after its product, while it is in cache).
    pub(super) fn forward(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        d: Conv2dDims,
        relu: bool,
    ) -> Vec<f32> {
        let p = d.h * d.w;
        let mut y = super::super::pool::take(d.n * d.c_out * p);
        for_each_chunk(&mut y, d.c_out * p, d.macs() >= PAR_MACS, |img, y| {
            let beta = super::start_with_bias(y, bias, p);
            let a = Mat::new(w, d.c_out, d.c_in, false);
            let b = Mat::new(&x[img * d.c_in * p..], d.c_in, p, false);
            sgemm((d.c_out, d.c_in, p), a, b, beta, y, p);
            if relu {
                super::relu_in_place(y);
            }
        });
        y
    }

    /// `dx[n] = Wᵀ · dy[n]`.
    pub(super) fn backward_input(dy: &[f32], w: &[f32], d: Conv2dDims) -> Vec<f32> {
        let p = d.h * d.w;
        let mut dx = super::super::pool::take(d.n * d.c_in * p);
        for_each_chunk(&mut dx, d.c_in * p, d.macs() >= PAR_MACS, |img, dx| {
            let a = Mat::new(w, d.c_in, d.c_out, true);
            let b = Mat::new(&dy[img * d.c_out * p..], d.c_out, p, false);
            sgemm((d.c_in, d.c_out, p), a, b, 0.0, dx, p);
        });
        dx
    }

    /// Channels (in and out) from which the weight gradient runs here too (see the
    /// module doc).
    pub(super) const WEIGHT_MIN_CHANNELS: usize = 256;

    /// Images per task in [`backward_weight`]: a fixed split (not one per thread), so
    /// that the sum's order, and so its rounding, is the same on any machine.
    const IMAGES_PER_TASK: usize = 4;

    /// `dW = Σ_n dy[n] · x[n]ᵀ`: each task sums a fixed range of images into a private
    /// `dW` with one full-width product per image; the partial sums are added in order.
    pub(super) fn backward_weight(x: &[f32], dy: &[f32], d: Conv2dDims) -> Vec<f32> {
        let p = d.h * d.w;
        let len = d.c_out * d.c_in;
        let tasks = d.n.div_ceil(IMAGES_PER_TASK);
        let mut partials = super::super::pool::take(tasks * len);
        for_each_chunk(&mut partials, len, d.macs() >= PAR_MACS, |t, dw| {
            let images = t * IMAGES_PER_TASK..((t + 1) * IMAGES_PER_TASK).min(d.n);
            for img in images.clone() {
                let a = Mat::new(&dy[img * d.c_out * p..], d.c_out, p, false);
                let b = Mat::new(&x[img * d.c_in * p..], p, d.c_in, true);
                let beta = if img == images.start { 0.0 } else { 1.0 };
                sgemm((d.c_out, p, d.c_in), a, b, beta, dw, d.c_in);
            }
        });
        let mut dw = super::super::pool::take(len);
        dw.fill(0.0);
        for part in partials.chunks_exact(len.max(1)) {
            for (a, &b) in dw.iter_mut().zip(part) {
                *a += b;
            }
        }
        dw
    }
}
