//! Convolutions with bfloat16 products ([`crate::precision`]): each one a matrix product
//! `C = A · B` whose operands are rounded to bf16 while they are packed, multiplied with
//! AVX-512 BF16's `vdpbf16ps` (two products a lane, summed into an `f32` lane) and
//! accumulated in `f32`.
//!
//! **Packing.** `vdpbf16ps` takes pairs: a 32-bit lane of each operand holds two bf16
//! values, consecutive along the sum (`k`), and the lane's result is
//! `acc + a₀·b₀ + a₁·b₁`. So `A [m, k]` is packed row by row as `⌈k/2⌉` pairs, and `B [k, n]`
//! in panels of [`NR`] = 32 columns, each panel `⌈k/2⌉` rows of 32 pairs (an odd `k` pads
//! a zero). The operands are read through closures, so a convolution packs its image
//! straight from the tensor with the taps' shifts and the zero border (an implicit im2col:
//! the panel is the only copy).
//!
//! **The kernel** ([`tile`]): [`MR`] = 6 rows by 32 columns of `C` in 12 `zmm`
//! accumulators; each pair of `k` broadcasts one pair of `A` per row and loads two vectors
//! of `B`. Every element of `C` is the same sum in the same order (pairs in `k` order)
//! whatever the thread count, so results are reproducible.
//!
//! **Speed: a first version.** The packing reads every tap's shifted copy of the image
//! (an im2col, one copy, the panel) and the kernel runs at one panel of `B` at a time
//! with no blocking of `k`; only passes whose product has 64 rows or more run here, the
//! gradient passes on images of 64 pixels or more ([`pays`]). It wins on the wide 1x1
//! products and loses where the packing dominates (docs/measurements.md has the figures
//! against the f32 kernels), so it is opt-in (`precision::set_matmul_precision`,
//! `--matmul-precision bf16`). Next: a direct convolution on channel pairs for the
//! narrow 3x3 passes, and a packing of the weight gradient's panels by transposes.
//!
//! **Accuracy.** Rounding each operand to bf16 (8 significant bits, unit roundoff
//! `u = 2⁻⁸`) makes each product `a·b·(1 + δ)` with `|δ| ≤ 2u + u² = 2⁻⁷ + 2⁻¹⁶`; the
//! `f32` sum adds at most `k · 2⁻²³` relative (the instruction flushes subnormal inputs
//! to zero, far below these). So `|C − A·B| ≤ (2⁻⁷ + 2⁻¹⁶ + k · 2⁻²³) · Σ |a|·|b|`, the
//! bound the tests check.

use super::for_each_chunk;
use crate::backend::Conv2dDims;

/// Rows of `C` per kernel call.
pub(crate) const MR: usize = 6;
/// Columns of `C` per kernel call (two vectors of 16 lanes).
pub(crate) const NR: usize = 32;

/// `x` rounded to the nearest bf16 (ties to even), as its 16 bits; a NaN stays a NaN.
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// The bf16 value of 16 bits, as an `f32`.
#[cfg(test)]
fn from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// One 32-bit lane of a pair: `lo` (the even `k`) in the low half.
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(to_bf16(lo)) | (u32::from(to_bf16(hi)) << 16)
}

/// `A [m, k]` packed for [`gemm`]: `rows` (m rounded up to [`MR`]) of `kp = ⌈k/2⌉` pairs.
pub(crate) struct PackedA {
    m: usize,
    k: usize,
    kp: usize,
    data: Vec<u32>,
}

/// Packs `A [m, k]`, each row written by `fill(i, row)` into a zeroed `k`-long slice.
pub(crate) fn pack_a(m: usize, k: usize, fill: impl Fn(usize, &mut [f32])) -> PackedA {
    let kp = k.div_ceil(2);
    let rows = m.next_multiple_of(MR);
    let mut data = vec![0u32; rows * kp];
    let mut row = vec![0.0f32; 2 * kp];
    for i in 0..m {
        row.iter_mut().for_each(|v| *v = 0.0);
        fill(i, &mut row[..k]);
        for (p, v) in data[i * kp..(i + 1) * kp].iter_mut().enumerate() {
            *v = pair(row[2 * p], row[2 * p + 1]);
        }
    }
    PackedA { m, k, kp, data }
}

/// `C = beta · C + A · B` with `A` packed, `B [k, n]` written panel by panel by
/// `fill(j0, panel)`: columns `j0..j0 + NR` of every row into a zeroed `[k, NR]` row-major
/// panel (columns past `n` left at zero), and `C [m, n]` row-major with row stride `ldc`.
/// Needs [`crate::precision::bf16_supported`].
pub(crate) fn gemm(
    a: &PackedA,
    n: usize,
    fill: impl Fn(usize, &mut [f32]),
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(
        crate::precision::bf16_supported(),
        "bf16 gemm on a CPU without avx512bf16"
    );
    let (m, k, kp) = (a.m, a.k, a.kp);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * ldc + n <= c.len(),
        "bf16 gemm: output out of bounds"
    );
    let mut panel = vec![0u32; kp * NR];
    let mut values = vec![0.0f32; 2 * kp * NR];
    for j0 in (0..n).step_by(NR) {
        let cols = NR.min(n - j0);
        values.iter_mut().for_each(|v| *v = 0.0);
        fill(j0, &mut values[..k * NR]);
        for (p, out) in panel.chunks_exact_mut(NR).enumerate() {
            let rows = &values[2 * p * NR..(2 * p + 2) * NR];
            let (even, odd) = rows.split_at(NR);
            // SAFETY: bf16 support is asserted above; each slice holds NR values.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                pack_pairs(
                    even.try_into().unwrap(),
                    odd.try_into().unwrap(),
                    out.try_into().unwrap(),
                );
            }
        }
        for i0 in (0..m).step_by(MR) {
            let rows = MR.min(m - i0);
            let a_block = &a.data[i0 * kp..(i0 + MR) * kp];
            let c_block = &mut c[i0 * ldc + j0..];
            // SAFETY: bf16 support is asserted above; `a_block` holds MR rows of kp pairs
            // (PackedA pads its rows to MR), `panel` kp rows of NR, and `tile` writes only
            // the `rows × cols` entries of C from `c_block`'s start with stride `ldc`,
            // which the bounds assert keeps inside `c`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                tile(kp, a_block, &panel, c_block, ldc, rows, cols, beta);
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (a_block, c_block, rows, beta);
        }
    }
}

/// One row of packed pairs: lane `j` holds `even[j]` (low half) and `odd[j]` (high half),
/// each rounded to bf16 by `vcvtneps2bf16` (to nearest even, as [`to_bf16`]; it reads
/// subnormal inputs as zero).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_pairs(even: &[f32; NR], odd: &[f32; NR], out: &mut [u32; NR]) {
    use std::arch::x86_64::*;
    for h in 0..NR / 16 {
        let e: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(
            even.as_ptr().add(16 * h),
        )));
        let o: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(
            odd.as_ptr().add(16 * h),
        )));
        let lanes = _mm512_or_si512(
            _mm512_cvtepu16_epi32(e),
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(o), 16),
        );
        _mm512_storeu_epi32(out.as_mut_ptr().add(16 * h) as *mut i32, lanes);
    }
}

/// One `MR × NR` block of `C` (its first `rows × cols` entries written).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    kp: usize,
    a: &[u32],
    b: &[u32],
    c: &mut [f32],
    ldc: usize,
    rows: usize,
    cols: usize,
    beta: f32,
) {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= MR * kp && b.len() >= NR * kp);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for p in 0..kp {
        // SAFETY (all loads): p < kp, and the slices hold MR·kp and NR·kp values.
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_epi32(bp.add(p * NR) as *const i32));
        let b1: __m512bh =
            std::mem::transmute(_mm512_loadu_epi32(bp.add(p * NR + 16) as *const i32));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r * kp + p) as i32));
            acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
            acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
        }
    }
    let beta_v = _mm512_set1_ps(beta);
    for (r, acc) in acc.iter().enumerate().take(rows) {
        for (h, &v) in acc.iter().enumerate() {
            let n = cols.saturating_sub(16 * h).min(16);
            if n == 0 {
                continue;
            }
            let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
            let dst = c.as_mut_ptr().add(r * ldc + 16 * h);
            let out = if beta == 0.0 {
                v
            } else {
                _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, dst), beta_v, v)
            };
            _mm512_mask_storeu_ps(dst, mask, out);
        }
    }
}

/// The three passes of a convolution, for [`pays`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// `y` from `x`: a product of `c_out` rows.
    Forward,
    /// `dx` from `dy`: a product of `c_in` rows.
    Input,
    /// `dw` from `x` and `dy`: a product of `c_out` rows.
    Weight,
}

/// Whether pass `pass` of a convolution of `d` runs here in bf16 mode: where its product
/// has 64 rows or more and, for the two gradient passes, the image 64 pixels or more.
///
/// Rows: the packing touches every tap's copy of every input value once a product, a
/// share `1 / rows` of the products' work, so a product with the image's few channels as
/// its rows (Glow's 3x3 convolutions out of the networks, and the input gradient into
/// them) would be bound by the packing. Pixels: at 4x4 a gradient pass's product is too
/// short for its packing to pay (the weight gradient's sum runs over 4 images of 16
/// pixels, the input gradient's panels are half empty), and the f32 kernels, AVX-512
/// since, ran them 1.3-2.3× faster: docs/measurements.md.
pub(super) fn pays(d: Conv2dDims, pass: Pass) -> bool {
    let rows = match pass {
        Pass::Forward | Pass::Weight => d.c_out,
        Pass::Input => d.c_in,
    };
    rows >= 64 && (pass == Pass::Forward || d.h * d.w >= 64)
}

/// For every output pixel `q` of an `h × w` image and tap `t` of a `kh × kw` kernel, the
/// pixel the tap reads ("same" padding, `kh/2`, `kw/2`), or -1 in the zero border:
/// `[p][taps]`, built once per convolution so the packing needs no division.
fn tap_sources(h: usize, w: usize, kh: usize, kw: usize) -> Vec<i32> {
    let taps = kh * kw;
    let mut src = vec![-1i32; h * w * taps];
    for y in 0..h {
        for x in 0..w {
            for t in 0..taps {
                let (sy, sx) = (
                    y as isize + (t / kw) as isize - (kh / 2) as isize,
                    x as isize + (t % kw) as isize - (kw / 2) as isize,
                );
                if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                    src[(y * w + x) * taps + t] = (sy as usize * w + sx as usize) as i32;
                }
            }
        }
    }
    src
}

/// `y = conv(x, w) + bias`, then `max(y, 0)` when `relu`, as `conv::forward` defines it,
/// with bf16 products: per image, `Y [c_out, p] = W [c_out, c_in·taps] · X̂ [c_in·taps, p]`
/// with `X̂` the image's taps, read in place while packing.
pub(super) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    d: Conv2dDims,
    relu: bool,
) -> Vec<f32> {
    let k = d.c_in * d.kh * d.kw;
    let a = pack_a(d.c_out, k, |o, row| {
        row.copy_from_slice(&w[o * k..(o + 1) * k])
    });
    convolve(x, &a, bias, d, relu)
}

/// `dx` from `dy` and `w`: the forward convolution of `dy` with the kernel transposed
/// (`[c_in, c_out]`) and flipped, as `conv::backward_input` computes it, the kernel read
/// that way while it is packed.
pub(super) fn backward_input(dy: &[f32], w: &[f32], d: Conv2dDims) -> Vec<f32> {
    let taps = d.kh * d.kw;
    let a = pack_a(d.c_in, d.c_out * taps, |c, row| {
        for (o, part) in row.chunks_exact_mut(taps).enumerate() {
            for (t, v) in part.iter_mut().enumerate() {
                *v = w[(o * d.c_in + c) * taps + (taps - 1 - t)];
            }
        }
    });
    let dims = Conv2dDims {
        c_in: d.c_out,
        c_out: d.c_in,
        ..d
    };
    convolve(dy, &a, None, dims, false)
}

/// The convolution of `x` with the packed kernel `a` (`[c_out, c_in·taps]`), plus `bias`,
/// then `max(·, 0)` when `relu`, one product per image.
fn convolve(x: &[f32], a: &PackedA, bias: Option<&[f32]>, d: Conv2dDims, relu: bool) -> Vec<f32> {
    let (taps, p) = (d.kh * d.kw, d.h * d.w);
    let src = tap_sources(d.h, d.w, d.kh, d.kw);
    let mut y = super::pool::take(d.n * d.c_out * p);
    for_each_chunk(&mut y, d.c_out * p, d.n > 1, |img, y| {
        let image = &x[img * d.c_in * p..(img + 1) * d.c_in * p];
        let beta = super::conv::start_with_bias(y, bias, p);
        let fill = |j0: usize, panel: &mut [f32]| {
            let cols = NR.min(p - j0);
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                let (c, t) = (kk / taps, kk % taps);
                let plane = &image[c * p..(c + 1) * p];
                if taps == 1 {
                    row[..cols].copy_from_slice(&plane[j0..j0 + cols]);
                    continue;
                }
                for (jj, v) in row.iter_mut().enumerate().take(cols) {
                    let s = src[(j0 + jj) * taps + t];
                    if s >= 0 {
                        *v = plane[s as usize];
                    }
                }
            }
        };
        gemm(a, p, fill, beta, y, p);
        if relu {
            super::conv::relu_in_place(y);
        }
    });
    y
}

/// Images per product in [`backward_weight`]: each adds `DY · X̂ᵀ` over this many images
/// into its task's sum.
const IMAGES_PER_PRODUCT: usize = 4;

/// Tasks (each with its own copy of `dw`) in [`backward_weight`]: a fixed number, so the
/// order of the sum, and its rounding, is the same on any machine.
const TASKS: usize = 4;

/// `dw [c_out, c_in, kh, kw] = Σ_{n,q} dy[n][o][q] · x[n][c][q + shift_t]`: the batch in
/// [`TASKS`] contiguous ranges of images, each summing `dW [c_out, c_in·taps] +=
/// DY [c_out, images·p] · X̂ᵀ` over groups of [`IMAGES_PER_PRODUCT`] in order, the tasks'
/// sums then added in order.
pub(super) fn backward_weight(x: &[f32], dy: &[f32], d: Conv2dDims) -> Vec<f32> {
    let (taps, p) = (d.kh * d.kw, d.h * d.w);
    let cols = d.c_in * taps;
    if d.n == 0 || p == 0 {
        return vec![0.0; d.c_out * cols];
    }
    let src = tap_sources(d.h, d.w, d.kh, d.kw);
    let tasks = TASKS.min(d.n);
    let per_task = d.n.div_ceil(tasks);
    let mut partial = vec![0.0f32; tasks * d.c_out * cols];
    for_each_chunk(&mut partial, d.c_out * cols, tasks > 1, |task, dw| {
        let end = ((task + 1) * per_task).min(d.n);
        for first in (task * per_task..end).step_by(IMAGES_PER_PRODUCT) {
            let images = IMAGES_PER_PRODUCT.min(end - first);
            let a = pack_a(d.c_out, images * p, |o, row| {
                for (i, part) in row.chunks_exact_mut(p).enumerate() {
                    let at = ((first + i) * d.c_out + o) * p;
                    part.copy_from_slice(&dy[at..at + p]);
                }
            });
            // Column j = (c, t) of the panel is channel c of these images read through
            // tap t: filled a column at a time, so each read runs along an image's row.
            let fill = |j0: usize, panel: &mut [f32]| {
                for jj in 0..NR.min(cols - j0) {
                    let (c, t) = ((j0 + jj) / taps, (j0 + jj) % taps);
                    for i in 0..images {
                        let plane = &x[((first + i) * d.c_in + c) * p..][..p];
                        for q in 0..p {
                            let s = src[q * taps + t];
                            if s >= 0 {
                                panel[(i * p + q) * NR + jj] = plane[s as usize];
                            }
                        }
                    }
                }
            };
            gemm(&a, cols, fill, 1.0, dw, cols);
        }
    });
    let mut dw = partial[..d.c_out * cols].to_vec();
    for part in partial.chunks_exact(d.c_out * cols).skip(1) {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(from_bf16(to_bf16(1.0)), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even, 1.
        assert_eq!(from_bf16(to_bf16(1.0 + 2f32.powi(-8))), 1.0);
        assert_eq!(
            from_bf16(to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(
            from_bf16(to_bf16(f32::MAX)),
            f32::INFINITY,
            "rounds past the largest bf16"
        );
    }

    #[test]
    fn the_product_is_within_the_bf16_bound_of_the_exact_one() {
        if !crate::precision::bf16_supported() {
            eprintln!("note: this CPU has no avx512bf16; the bf16 product is not run here");
            return;
        }
        // Edges in every direction: m not a multiple of MR, n of NR, k odd.
        for (m, k, n) in [(1, 1, 1), (7, 5, 33), (13, 64, 70), (6, 301, 32)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0)
                .collect();
            let mut c = vec![0.5f32; m * n];
            let packed = pack_a(m, k, |i, row| row.copy_from_slice(&a[i * k..(i + 1) * k]));
            let fill = |j0: usize, panel: &mut [f32]| {
                let cols = NR.min(n - j0);
                for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                    row[..cols].copy_from_slice(&b[kk * n + j0..kk * n + j0 + cols]);
                }
            };
            gemm(&packed, n, fill, 2.0, &mut c, n);
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]))
                        .sum::<f64>()
                        + 1.0;
                    let scale: f64 = (0..k)
                        .map(|kk| f64::from((a[i * k + kk] * b[kk * n + j]).abs()))
                        .sum();
                    let bound =
                        (2f64.powi(-7) + 2f64.powi(-16) + k as f64 * 2f64.powi(-23)) * scale + 1e-6;
                    let err = (f64::from(c[i * n + j]) - exact).abs();
                    assert!(
                        err <= bound,
                        "({m}, {k}, {n}) at ({i}, {j}): error {err} > {bound}"
                    );
                }
            }
        }
    }
}
