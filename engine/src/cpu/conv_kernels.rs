//! The two inner loops of the CPU convolutions, in portable Rust, with AVX2/FMA and with
//! AVX-512 (chosen at run time, the widest the CPU has; each lane computes the same bits
//! on all three but the portable one, which rounds the product before adding).
//!
//! `conv.rs` plans the work (which pixels, which weights, which threads); these loops do
//! the arithmetic on one small tile, reading the input image in place (no im2col copy):
//!
//! - [`conv_block`]: `ROWS` output channels × one block of `LANES` pixels of one image,
//!   `out[r][l] = bias[r] + Σ_{c, t} a[c][t][r] · x[c][p0 + l + shift[t]]`, summed over
//!   every input channel `c` and kernel tap `t`. `a` is a weight panel packed `[c][t][r]`,
//!   so each step broadcasts `ROWS` weights and loads one pixel vector: an outer product
//!   in registers (12 accumulators of 8 lanes with AVX2, 6 of 16 with AVX-512). The
//!   forward convolution and its input gradient (a convolution with the flipped,
//!   transposed kernel) both run on it.
//! - [`weight_block`]: the weight gradient as the same outer product turned around:
//!   `WEIGHT_ROWS` (input channel, tap) pairs × `LANES` output channels, summed over pixels,
//!   `out[r][l] += Σ_k x[bases[r] + offs[k]] · dyt[k·ldb + l]`. `x` is the input
//!   zero-padded around each image (so a tap never needs a mask: it reads padding) and
//!   `dyt` the output gradient transposed to pixel-major `[n·p, c_out]`; `offs[k]` is where
//!   pixel `k` sits in the padded image.
//!
//! A tap whose source pixel falls outside the image (zero padding) is masked out: each
//! tap has a lane mask per pixel block, computed once per block by `conv.rs`, and the
//! masked loads (AVX2's, AVX-512's with mask registers) read only the lanes the mask
//! keeps, so they never touch memory outside the image.
//!
//! Why not im2col + a packing GEMM: Glow's zero-initialised output layers have 12 to 48
//! output channels, so the GEMM's `m` is small and packing the long im2col matrix costs as
//! much as the multiply (`docs/measurements.md`; the figures after this file are in
//! `engine/README.md`).

// Kernels index several arrays with one loop variable (lanes, rows, taps); iterator
// chains would hide the arithmetic the comments describe.
#![allow(clippy::needless_range_loop)]

/// Output channels per [`conv_block`] tile.
pub(crate) const ROWS: usize = 6;
/// Pixels per [`conv_block`] tile (two AVX2 vectors, one AVX-512 vector).
pub(crate) const LANES: usize = 16;
/// (Input channel, tap) rows per [`weight_block`] tile: two of [`ROWS`], so that the
/// AVX-512 kernel keeps 12 independent sums in flight (six leave the FMA units idle half
/// the time: an FMA takes four cycles and two start per cycle).
pub(crate) const WEIGHT_ROWS: usize = 2 * ROWS;

/// Lane masks: `-1` (all bits set) where a lane reads, `0` where it reads zero padding.
pub(crate) type Mask = [i32; LANES];

/// Where every tap of a `kh × kw` kernel reads, for every block of [`LANES`] pixels of an
/// `h × w` image (the last block may be partial).
///
/// Built only by [`Taps::new`], which keeps a lane only where its source pixel lies inside
/// the channel: that invariant is what lets the kernels read with unchecked masked loads.
pub(crate) struct Taps {
    /// Pixels per channel, `h · w`.
    pub p: usize,
    /// Per tap, row-major over the kernel: `dy · w + dx`, where it reads relative to the
    /// output pixel.
    pub shifts: Vec<isize>,
    /// `masks[b · taps + t]`: which lanes of block `b` tap `t` reads.
    pub(crate) masks: Vec<Mask>,
    /// The same masks as bits (lane `l` is bit `l`), for AVX-512's mask registers.
    kmasks: Vec<u16>,
    /// Per block: whether all its masks are all lanes.
    full: Vec<bool>,
}

impl Taps {
    /// The taps of a stride-1, zero-"same"-padded `kh × kw` kernel (odd extents) on `h × w`.
    pub fn new(h: usize, w: usize, kh: usize, kw: usize) -> Taps {
        let p = h * w;
        let blocks = p.div_ceil(LANES);
        let mut shifts = Vec::new();
        let mut offsets = Vec::new();
        for i in 0..kh {
            for j in 0..kw {
                let (dy, dx) = (
                    i as isize - (kh / 2) as isize,
                    j as isize - (kw / 2) as isize,
                );
                shifts.push(dy * w as isize + dx);
                offsets.push((dy, dx));
            }
        }
        let mut masks = vec![[0; LANES]; blocks * offsets.len()];
        for b in 0..blocks {
            for (t, &(dy, dx)) in offsets.iter().enumerate() {
                for l in 0..LANES {
                    let q = b * LANES + l;
                    if q >= p {
                        continue;
                    }
                    let (y, x) = ((q / w) as isize + dy, (q % w) as isize + dx);
                    if y >= 0 && y < h as isize && x >= 0 && x < w as isize {
                        masks[b * offsets.len() + t][l] = -1;
                    }
                }
            }
        }
        let full = (0..blocks)
            .map(|b| {
                masks[b * offsets.len()..][..offsets.len()]
                    .iter()
                    .all(|m| m.iter().all(|&v| v != 0))
            })
            .collect();
        let kmasks = masks
            .iter()
            .map(|m| {
                (0..LANES)
                    .filter(|&l| m[l] != 0)
                    .fold(0u16, |k, l| k | 1 << l)
            })
            .collect();
        Taps {
            p,
            shifts,
            masks,
            kmasks,
            full,
        }
    }

    /// Number of taps (`kh · kw`).
    pub fn taps(&self) -> usize {
        self.shifts.len()
    }

    /// Number of pixel blocks.
    pub fn blocks(&self) -> usize {
        self.p.div_ceil(LANES)
    }

    /// Pixels in block `b` (`LANES` except perhaps the last).
    pub fn lanes(&self, b: usize) -> usize {
        LANES.min(self.p - b * LANES)
    }

    /// Whether every tap reads every lane of block `b` (no padding, no partial block).
    pub fn block_is_full(&self, b: usize) -> bool {
        self.full[b]
    }

    /// The masks of block `b`, one per tap.
    fn block_masks(&self, b: usize) -> &[Mask] {
        &self.masks[b * self.taps()..][..self.taps()]
    }

    /// The masks of block `b` as bits, one per tap.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn block_kmasks(&self, b: usize) -> &[u16] {
        &self.kmasks[b * self.taps()..][..self.taps()]
    }

    /// Whether lane `l` of block `b` reads for tap `t`, and the index it reads in channel
    /// `c` of an image.
    #[inline(always)]
    fn source(&self, b: usize, c: usize, t: usize, l: usize) -> Option<usize> {
        (self.masks[b * self.taps() + t][l] != 0)
            .then(|| (c * self.p + b * LANES + l).wrapping_add_signed(self.shifts[t]))
    }
}

/// The bounds the block kernels' unsafe code relies on, checked once for [`conv_block`]
/// and [`conv_block_pair`] (`what` names the caller in the panic): `rows` output channels
/// (at most [`ROWS`]), a weight panel of `channels · taps · ROWS`, the image's `channels ·
/// p` values from `x[x0]`, and `out_lanes` lanes of the last output row.
#[allow(clippy::too_many_arguments)]
fn check_block_bounds(
    what: &str,
    a: &[f32],
    x: &[f32],
    x0: usize,
    channels: usize,
    taps: &Taps,
    out: &[f32],
    ldo: usize,
    rows: usize,
    out_lanes: usize,
) {
    assert!(
        rows <= ROWS && rows > 0,
        "{what}: {rows} rows, not 1 to {ROWS}"
    );
    assert!(
        a.len() >= channels * taps.taps() * ROWS,
        "{what}: weight panel too short"
    );
    assert!(x.len() >= x0 + channels * taps.p, "{what}: image too short");
    assert!(
        out.len() >= (rows - 1) * ldo + out_lanes,
        "{what}: output too short"
    );
}

/// Blocks `b` and `b + 1` of one output image, as two [`conv_block`] calls would compute
/// them (block `b + 1` at `out[LANES..]`). With AVX-512 one kernel does both, so that 12
/// sums are in flight where one block keeps 6 (an FMA takes four cycles and two start
/// per cycle): each lane still does the same fused multiply-adds in the same order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_block_pair(
    a: &[f32],
    x: &[f32],
    x0: usize,
    channels: usize,
    taps: &Taps,
    b: usize,
    bias: &[f32; ROWS],
    out: &mut [f32],
    ldo: usize,
    rows: usize,
) {
    assert!(b + 1 < taps.blocks(), "conv block pair: no block after {b}");
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        let out_needed = LANES + taps.lanes(b + 1);
        check_block_bounds(
            "conv block pair",
            a,
            x,
            x0,
            channels,
            taps,
            out,
            ldo,
            rows,
            out_needed,
        );
        // SAFETY: AVX-512F is present; the asserts above bound the weight and output
        // accesses; `Taps` keeps a lane only where it reads inside its channel of the
        // image, and the kernel reads whole vectors only where they lie inside `x`.
        unsafe {
            if taps.block_is_full(b) && taps.block_is_full(b + 1) {
                avx512::conv_blocks::<false, 2>(a, x, x0, channels, taps, b, bias, out, ldo, rows)
            } else {
                avx512::conv_blocks::<true, 2>(a, x, x0, channels, taps, b, bias, out, ldo, rows)
            }
        };
        return;
    }
    for (i, blk) in [b, b + 1].into_iter().enumerate() {
        conv_block(
            a,
            x,
            x0,
            channels,
            taps,
            blk,
            bias,
            &mut out[i * LANES..],
            ldo,
            rows,
        );
    }
}

/// Block `b` of one output image for `rows` output channels: `out[r·ldo + l] = bias[r] +
/// Σ_{c < channels, t} a[(c·taps + t)·ROWS + r] · x[x0 + c·p + b·LANES + l + shifts[t]]`,
/// masked taps reading zero, for `r < rows` and the block's lanes. The input image
/// (`channels · p` values) starts at `x[x0]`; `a` is a weight panel packed `[c][t][ROWS]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_block(
    a: &[f32],
    x: &[f32],
    x0: usize,
    channels: usize,
    taps: &Taps,
    b: usize,
    bias: &[f32; ROWS],
    out: &mut [f32],
    ldo: usize,
    rows: usize,
) {
    assert!(b < taps.blocks());
    let lanes = taps.lanes(b);
    check_block_bounds(
        "conv block",
        a,
        x,
        x0,
        channels,
        taps,
        out,
        ldo,
        rows,
        lanes,
    );
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: AVX-512F is present; the asserts above bound the weight and output
        // accesses; `Taps` keeps a lane only where it reads inside its channel of the image,
        // and the kernel reads whole vectors only where they lie inside `x`.
        unsafe {
            if taps.block_is_full(b) {
                avx512::conv_blocks::<false, 1>(a, x, x0, channels, taps, b, bias, out, ldo, rows)
            } else {
                avx512::conv_blocks::<true, 1>(a, x, x0, channels, taps, b, bias, out, ldo, rows)
            }
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: AVX2 and FMA are present; the asserts above bound the weight and output
        // accesses; `Taps` keeps a lane only where it reads inside its channel of the image,
        // and the kernel reads whole vectors only where they lie inside `x`.
        unsafe {
            if taps.block_is_full(b) {
                avx2::conv_block::<false>(a, x, x0, channels, taps, b, bias, out, ldo, rows)
            } else {
                avx2::conv_block::<true>(a, x, x0, channels, taps, b, bias, out, ldo, rows)
            }
        };
        return;
    }
    portable::conv_block(a, x, x0, channels, taps, b, bias, out, ldo, rows);
}

/// Where each pixel of a sum sits in an input, with the largest of them kept so that a
/// kernel can bound all its reads with one comparison.
pub(crate) struct PixelOffsets {
    offs: Vec<usize>,
    max: usize,
}

impl PixelOffsets {
    /// The offsets `offs`.
    pub fn new(offs: Vec<usize>) -> PixelOffsets {
        let max = offs.iter().copied().max().unwrap_or(0);
        PixelOffsets { offs, max }
    }

    /// Number of pixels.
    pub fn len(&self) -> usize {
        self.offs.len()
    }
}

/// `dst[q·ldd + o] = src[o·lds + q]` for `o < rows`, `q < cols`: a block transpose, 8 x 8
/// at a time with AVX2 (the weight gradient's `dyt`).
pub(crate) fn transpose(
    src: &[f32],
    lds: usize,
    dst: &mut [f32],
    ldd: usize,
    rows: usize,
    cols: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * lds + cols && dst.len() >= (cols - 1) * ldd + rows);
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        for o in (0..r8).step_by(8) {
            for q in (0..c8).step_by(8) {
                // SAFETY: AVX2 is present; rows o..o+8 and columns q..q+8 are inside both
                // slices by the assert above.
                unsafe {
                    avx2::transpose8(
                        src.as_ptr().add(o * lds + q),
                        lds,
                        dst.as_mut_ptr().add(q * ldd + o),
                        ldd,
                    )
                };
            }
        }
        // The edges (rows past r8 or columns past c8), element by element.
        for o in 0..rows {
            let qs = if o < r8 { c8..cols } else { 0..cols };
            for q in qs {
                dst[q * ldd + o] = src[o * lds + q];
            }
        }
        return;
    }
    for o in 0..rows {
        for q in 0..cols {
            dst[q * ldd + o] = src[o * lds + q];
        }
    }
}

/// The weight-gradient block (see the module doc): for `r < rows` and `l < lanes`,
/// `out[r·ldo + l] (+)= Σ_{k ∈ ks} x[bases[r] + offs[k]] · dyt[(k − ks.start)·ldb + l]`,
/// adding to `out` when `accumulate`, else overwriting it. Reads `LANES` values of every
/// `dyt` row used, so `dyt` must extend `LANES` past the last row's start.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_block(
    x: &[f32],
    bases: &[usize; WEIGHT_ROWS],
    offsets: &PixelOffsets,
    ks: std::ops::Range<usize>,
    dyt: &[f32],
    ldb: usize,
    out: &mut [f32],
    ldo: usize,
    rows: usize,
    lanes: usize,
    accumulate: bool,
) {
    assert!(rows <= WEIGHT_ROWS && rows > 0 && lanes <= LANES && lanes > 0);
    let offs = &offsets.offs[ks];
    if !offs.is_empty() {
        let top = bases.iter().max().unwrap() + offsets.max;
        assert!(top < x.len(), "weight block: reads past the padded input");
    }
    assert!(
        dyt.len() >= offs.len().saturating_sub(1) * ldb + LANES,
        "weight block: reads past the transposed gradient"
    );
    assert!(
        out.len() >= (rows - 1) * ldo + lanes,
        "weight block: output too short"
    );
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: AVX-512F is present, and the asserts above bound every read of `x` and
        // `dyt` and every write of `out`.
        unsafe {
            avx512::weight_block(x, bases, offs, dyt, ldb, out, ldo, rows, lanes, accumulate)
        };
        return;
    }
    // The AVX2 and portable kernels take the rows as two tiles of ROWS, one after the other.
    for half in 0..rows.div_ceil(ROWS) {
        let bases: &[usize; ROWS] = bases[half * ROWS..][..ROWS].try_into().expect("ROWS");
        let out = &mut out[half * ROWS * ldo..];
        let rows = ROWS.min(rows - half * ROWS);
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2() {
            // SAFETY: AVX2 and FMA are present, and the asserts above bound every read of
            // `x` and `dyt` and every write of `out`.
            unsafe {
                avx2::weight_block(x, bases, offs, dyt, ldb, out, ldo, rows, lanes, accumulate)
            };
            continue;
        }
        portable::weight_block(x, bases, offs, dyt, ldb, out, ldo, rows, lanes, accumulate)
    }
}

/// The plain-Rust kernels: the path on CPUs without AVX2 (or with
/// `ENGINE_CPU_PORTABLE=1`), and the reference the AVX2 kernels are tested against.
mod portable {
    use super::{Taps, LANES, ROWS};

    /// [`super::conv_block`], lane by lane.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_block(
        a: &[f32],
        x: &[f32],
        x0: usize,
        channels: usize,
        taps: &Taps,
        b: usize,
        bias: &[f32; ROWS],
        out: &mut [f32],
        ldo: usize,
        rows: usize,
    ) {
        let n_taps = taps.taps();
        let mut acc = [[0f32; LANES]; ROWS];
        for c in 0..channels {
            for t in 0..n_taps {
                let w = &a[(c * n_taps + t) * ROWS..][..ROWS];
                for l in 0..taps.lanes(b) {
                    if let Some(i) = taps.source(b, c, t, l) {
                        let v = x[x0 + i];
                        for r in 0..ROWS {
                            acc[r][l] += w[r] * v;
                        }
                    }
                }
            }
        }
        for r in 0..rows {
            for l in 0..taps.lanes(b) {
                out[r * ldo + l] = bias[r] + acc[r][l];
            }
        }
    }

    /// [`super::weight_block`], lane by lane.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn weight_block(
        x: &[f32],
        bases: &[usize; ROWS],
        offs: &[usize],
        dyt: &[f32],
        ldb: usize,
        out: &mut [f32],
        ldo: usize,
        rows: usize,
        lanes: usize,
        accumulate: bool,
    ) {
        let mut acc = [[0f32; LANES]; ROWS];
        for (k, &off) in offs.iter().enumerate() {
            for r in 0..ROWS {
                let a = x[bases[r] + off];
                for l in 0..LANES {
                    acc[r][l] += a * dyt[k * ldb + l];
                }
            }
        }
        for r in 0..rows {
            for l in 0..lanes {
                let o = &mut out[r * ldo + l];
                *o = if accumulate {
                    *o + acc[r][l]
                } else {
                    acc[r][l]
                };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Taps, LANES, ROWS};

    /// Mask lanes of `m` from `from` as a vector mask.
    #[inline(always)]
    unsafe fn mask8(m: &[i32; LANES], from: usize) -> __m256i {
        _mm256_loadu_si256(m.as_ptr().add(from) as *const __m256i)
    }

    /// [`super::conv_block`]: 6 rows × 16 lanes in 12 accumulators.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_block<const MASKED: bool>(
        a: &[f32],
        x: &[f32],
        x0: usize,
        channels: usize,
        taps: &Taps,
        b: usize,
        bias: &[f32; ROWS],
        out: &mut [f32],
        ldo: usize,
        rows: usize,
    ) {
        let lanes = taps.lanes(b);
        let n_taps = taps.taps();
        let masks = taps.block_masks(b);
        let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
        let mut ap = a.as_ptr();
        let xp = x.as_ptr();
        // A masked vector inside `x` is read whole and its padding lanes cleared (an AND);
        // only one that would cross an end of `x` uses the masked load, which is several
        // times slower on some CPUs (AMD Zen 3).
        let len = x.len() as isize;
        for c in 0..channels {
            let base = (x0 + c * taps.p + b * LANES) as isize;
            for t in 0..n_taps {
                let i = base + taps.shifts[t];
                let src = xp.wrapping_offset(i);
                let (b0, b1) = if !MASKED {
                    (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)))
                } else if i >= 0 && i + LANES as isize <= len {
                    let m = &masks[t];
                    (
                        _mm256_and_ps(_mm256_loadu_ps(src), _mm256_castsi256_ps(mask8(m, 0))),
                        _mm256_and_ps(
                            _mm256_loadu_ps(src.add(8)),
                            _mm256_castsi256_ps(mask8(m, 8)),
                        ),
                    )
                } else {
                    let m = &masks[t];
                    (
                        _mm256_maskload_ps(src, mask8(m, 0)),
                        _mm256_maskload_ps(src.wrapping_add(8), mask8(m, 8)),
                    )
                };
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let w = _mm256_broadcast_ss(&*ap.add(r));
                    acc_r[0] = _mm256_fmadd_ps(w, b0, acc_r[0]);
                    acc_r[1] = _mm256_fmadd_ps(w, b1, acc_r[1]);
                }
                ap = ap.add(ROWS);
            }
        }
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            let bv = _mm256_set1_ps(bias[r]);
            let o = out.as_mut_ptr().add(r * ldo);
            let v0 = _mm256_add_ps(acc_r[0], bv);
            let v1 = _mm256_add_ps(acc_r[1], bv);
            if lanes == LANES {
                _mm256_storeu_ps(o, v0);
                _mm256_storeu_ps(o.add(8), v1);
            } else {
                let mut tmp = [0f32; LANES];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v0);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v1);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, lanes);
            }
        }
    }

    /// The transpose of the 8 x 8 block at `src` (row stride `lds`) into `dst` (row
    /// stride `ldd`): unpack pairs, then 64-bit pairs, then swap 128-bit halves.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose8(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * lds)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (i, v) in out.iter().enumerate() {
            _mm256_storeu_ps(dst.add(i * ldd), *v);
        }
    }

    /// [`super::weight_block`]: 6 rows × 16 lanes in 12 accumulators; per pixel, 6
    /// broadcasts from the padded input and two vectors of the transposed gradient.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn weight_block(
        x: &[f32],
        bases: &[usize; ROWS],
        offs: &[usize],
        dyt: &[f32],
        ldb: usize,
        out: &mut [f32],
        ldo: usize,
        rows: usize,
        lanes: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
        // Wrapping: with no pixels to sum (nothing read) the bases are not checked.
        let xs: [*const f32; ROWS] = std::array::from_fn(|r| x.as_ptr().wrapping_add(bases[r]));
        let mut bp = dyt.as_ptr();
        for &off in offs {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let w = _mm256_broadcast_ss(&*xs[r].add(off));
                acc_r[0] = _mm256_fmadd_ps(w, b0, acc_r[0]);
                acc_r[1] = _mm256_fmadd_ps(w, b1, acc_r[1]);
            }
            bp = bp.add(ldb);
        }
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            let mut tmp = [0f32; LANES];
            _mm256_storeu_ps(tmp.as_mut_ptr(), acc_r[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), acc_r[1]);
            let o = &mut out[r * ldo..][..lanes];
            for (o, t) in o.iter_mut().zip(tmp) {
                *o = if accumulate { *o + t } else { t };
            }
        }
    }
}

/// The AVX-512 kernels: the AVX2 ones with one 16-lane register where those use two
/// 8-lane halves, and the lane masks in mask registers. Each lane does the same fused
/// multiply-adds in the same order as in the AVX2 kernels, so the results are the same
/// bits; the gain is the width. On CPUs that run 512-bit FMAs at full rate (AMD Zen 5,
/// Intel server cores), an AVX2 kernel can reach at most half the SGEMM ceiling, which
/// matrixmultiply reaches with its AVX-512 kernel: `benches/ops` had the direct 3x3
/// convolutions of config S at 36-55% of it (`docs/measurements.md`).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Taps, LANES, ROWS, WEIGHT_ROWS};

    /// [`super::conv_block`] (`NB` = 1: 6 accumulators) and [`super::conv_block_pair`]
    /// (`NB` = 2, blocks `b` and `b + 1`: 12): 6 rows × `NB` blocks of 16 lanes, block
    /// `b + i` written at `out[i · LANES..]`. Only the last block may be partial.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_blocks<const MASKED: bool, const NB: usize>(
        a: &[f32],
        x: &[f32],
        x0: usize,
        channels: usize,
        taps: &Taps,
        b: usize,
        bias: &[f32; ROWS],
        out: &mut [f32],
        ldo: usize,
        rows: usize,
    ) {
        let n_taps = taps.taps();
        let kmasks: [&[u16]; NB] = std::array::from_fn(|i| taps.block_kmasks(b + i));
        let mut acc = [[_mm512_setzero_ps(); NB]; ROWS];
        let mut ap = a.as_ptr();
        let xp = x.as_ptr();
        for c in 0..channels {
            let base = (x0 + c * taps.p + b * LANES) as isize;
            for t in 0..n_taps {
                let src = xp.wrapping_offset(base + taps.shifts[t]);
                // A masked-off lane is neither read nor faulted on, and reads +0.0, as the
                // AVX2 kernel's cleared lanes do.
                // A loop, not `array::from_fn`: a closure does not inherit the function's
                // target features, so its intrinsics would be a call per load.
                let mut v = [_mm512_setzero_ps(); NB];
                for (i, vi) in v.iter_mut().enumerate() {
                    *vi = if MASKED {
                        _mm512_maskz_loadu_ps(kmasks[i][t], src.wrapping_add(i * LANES))
                    } else {
                        _mm512_loadu_ps(src.add(i * LANES))
                    };
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*ap.add(r));
                    for (acc_ri, &vi) in acc_r.iter_mut().zip(&v) {
                        *acc_ri = _mm512_fmadd_ps(w, vi, *acc_ri);
                    }
                }
                ap = ap.add(ROWS);
            }
        }
        let keep: [__mmask16; NB] = std::array::from_fn(|i| {
            let lanes = taps.lanes(b + i);
            if lanes == LANES {
                !0
            } else {
                (1u16 << lanes) - 1
            }
        });
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            let bv = _mm512_set1_ps(bias[r]);
            let o = out.as_mut_ptr().add(r * ldo);
            for (i, &acc_ri) in acc_r.iter().enumerate() {
                _mm512_mask_storeu_ps(o.add(i * LANES), keep[i], _mm512_add_ps(acc_ri, bv));
            }
        }
    }

    /// [`super::weight_block`]: 12 rows × 16 lanes in 12 accumulators; per pixel, 12
    /// broadcasts from the padded input and one vector of the transposed gradient.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn weight_block(
        x: &[f32],
        bases: &[usize; WEIGHT_ROWS],
        offs: &[usize],
        dyt: &[f32],
        ldb: usize,
        out: &mut [f32],
        ldo: usize,
        rows: usize,
        lanes: usize,
        accumulate: bool,
    ) {
        let mut acc = [_mm512_setzero_ps(); WEIGHT_ROWS];
        // Wrapping: with no pixels to sum (nothing read) the bases are not checked.
        let xs: [*const f32; WEIGHT_ROWS] =
            std::array::from_fn(|r| x.as_ptr().wrapping_add(bases[r]));
        let mut bp = dyt.as_ptr();
        for &off in offs {
            let bv = _mm512_loadu_ps(bp);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                *acc_r = _mm512_fmadd_ps(_mm512_set1_ps(*xs[r].add(off)), bv, *acc_r);
            }
            bp = bp.add(ldb);
        }
        let keep: __mmask16 = if lanes == LANES {
            !0
        } else {
            (1u16 << lanes) - 1
        };
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            let o = out.as_mut_ptr().add(r * ldo);
            let v = if accumulate {
                _mm512_add_ps(_mm512_maskz_loadu_ps(keep, o), *acc_r)
            } else {
                *acc_r
            };
            _mm512_mask_storeu_ps(o, keep, v);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Both kernels, AVX2 and portable, on the same tiles: every block of images whose
    /// taps run off every edge, partial blocks included; the two sum in different orders,
    /// hence the tolerance.
    #[test]
    fn avx2_kernels_match_the_portable_ones() {
        if !super::super::has_avx2() {
            eprintln!("no AVX2/FMA here: only the portable kernels run");
            return;
        }
        for &(h, w, k, channels) in &[(4, 4, 3, 5), (5, 7, 3, 3), (16, 16, 1, 4), (3, 9, 5, 2)] {
            let taps = Taps::new(h, w, k, k);
            let n = 3;
            let x = data(n * channels * taps.p, 1);
            let a = data(channels * taps.taps() * ROWS, 2);
            let bias: [f32; ROWS] = std::array::from_fn(|r| r as f32);
            for img in 0..n {
                for b in 0..taps.blocks() {
                    for rows in [1, ROWS] {
                        let x0 = img * channels * taps.p;
                        let mut fast = vec![0.0; ROWS * taps.p];
                        let mut slow = vec![0.0; ROWS * taps.p];
                        // SAFETY: the checks of `conv_block` hold for these operands.
                        unsafe {
                            avx2::conv_block::<true>(
                                &a,
                                &x,
                                x0,
                                channels,
                                &taps,
                                b,
                                &bias,
                                &mut fast[b * LANES..],
                                taps.p,
                                rows,
                            )
                        };
                        portable::conv_block(
                            &a,
                            &x,
                            x0,
                            channels,
                            &taps,
                            b,
                            &bias,
                            &mut slow[b * LANES..],
                            taps.p,
                            rows,
                        );
                        for (f, s) in fast.iter().zip(&slow) {
                            assert!((f - s).abs() <= 1e-4 * (1.0 + s.abs()), "{f} vs {s}");
                        }
                    }
                }
            }
        }
        // The transpose, with edges on both axes.
        let (rows, cols) = (19, 13);
        let src = data(rows * 21, 7);
        let mut dst = vec![0.0; cols * 25];
        transpose(&src, 21, &mut dst, 25, rows, cols);
        for o in 0..rows {
            for q in 0..cols {
                assert_eq!(dst[q * 25 + o], src[o * 21 + q]);
            }
        }
        // The weight block on arbitrary offsets, partial rows and lanes, both modes.
        let x = data(400, 4);
        let dyt = data(37 * 20 + LANES, 5);
        let offs: Vec<usize> = (0..37).map(|k| (k * 7) % 300).collect();
        let bases: [usize; ROWS] = std::array::from_fn(|r| r * 13);
        for (rows, lanes, accumulate) in [(ROWS, LANES, false), (4, 11, true), (1, 1, false)] {
            let mut fast = data(ROWS * 20, 6);
            let mut slow = fast.clone();
            // SAFETY: the checks of `weight_block` hold for these operands.
            unsafe {
                avx2::weight_block(
                    &x, &bases, &offs, &dyt, 20, &mut fast, 20, rows, lanes, accumulate,
                )
            };
            portable::weight_block(
                &x, &bases, &offs, &dyt, 20, &mut slow, 20, rows, lanes, accumulate,
            );
            for (f, s) in fast.iter().zip(&slow) {
                assert!((f - s).abs() <= 1e-4 * (1.0 + s.abs()), "{f} vs {s}");
            }
        }
    }

    /// The AVX-512 kernels do each lane's fused multiply-adds in the AVX2 kernels' order,
    /// so they must give the same bits: every block and pair of blocks of images whose
    /// taps run off every edge, partial blocks, partial rows and lanes, both accumulate
    /// modes.
    #[test]
    fn avx512_kernels_give_the_avx2_kernels_bits() {
        if !super::super::has_avx512() {
            eprintln!("no AVX-512F here (or ENGINE_CPU_NO_AVX512 set): nothing to compare");
            return;
        }
        for &(h, w, k, channels) in &[(4, 4, 3, 5), (5, 7, 3, 3), (16, 16, 1, 4), (3, 9, 5, 2)] {
            let taps = Taps::new(h, w, k, k);
            let n = 3;
            let x = data(n * channels * taps.p, 1);
            let a = data(channels * taps.taps() * ROWS, 2);
            let bias: [f32; ROWS] = std::array::from_fn(|r| r as f32 * 0.37);
            for img in 0..n {
                for b in 0..taps.blocks() {
                    for rows in [1, 4, ROWS] {
                        let x0 = img * channels * taps.p;
                        // Sentinels past the block's lanes and rows must survive.
                        let mut wide = vec![f32::NAN; ROWS * taps.p + LANES];
                        let mut narrow = wide.clone();
                        let full = taps.block_is_full(b);
                        // SAFETY: the checks of `conv_block` hold for these operands.
                        unsafe {
                            let out = &mut wide[b * LANES..];
                            if full {
                                avx512::conv_blocks::<false, 1>(
                                    &a, &x, x0, channels, &taps, b, &bias, out, taps.p, rows,
                                )
                            } else {
                                avx512::conv_blocks::<true, 1>(
                                    &a, &x, x0, channels, &taps, b, &bias, out, taps.p, rows,
                                )
                            }
                            avx2::conv_block::<true>(
                                &a,
                                &x,
                                x0,
                                channels,
                                &taps,
                                b,
                                &bias,
                                &mut narrow[b * LANES..],
                                taps.p,
                                rows,
                            )
                        };
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&wide), bits(&narrow), "{h}x{w} k{k} block {b}");
                        if b + 1 < taps.blocks() {
                            // The pair kernel against two AVX2 blocks.
                            let mut pair = vec![f32::NAN; ROWS * taps.p + LANES];
                            let out = &mut pair[b * LANES..];
                            conv_block_pair(
                                &a, &x, x0, channels, &taps, b, &bias, out, taps.p, rows,
                            );
                            // SAFETY: the checks of `conv_block` hold for these operands.
                            unsafe {
                                avx2::conv_block::<true>(
                                    &a,
                                    &x,
                                    x0,
                                    channels,
                                    &taps,
                                    b + 1,
                                    &bias,
                                    &mut narrow[(b + 1) * LANES..],
                                    taps.p,
                                    rows,
                                )
                            };
                            assert_eq!(bits(&pair), bits(&narrow), "{h}x{w} k{k} pair {b}");
                        }
                    }
                }
            }
        }
        let x = data(400, 4);
        let dyt = data(37 * 20 + LANES, 5);
        let offs: Vec<usize> = (0..37).map(|k| (k * 7) % 300).collect();
        let bases: [usize; WEIGHT_ROWS] = std::array::from_fn(|r| r * 13);
        for (rows, lanes, accumulate) in [
            (WEIGHT_ROWS, LANES, false),
            (WEIGHT_ROWS, LANES, true),
            (9, 11, true),
            (4, 16, false),
            (1, 1, false),
        ] {
            let mut wide = data(WEIGHT_ROWS * 20, 6);
            let mut narrow = wide.clone();
            // SAFETY: the checks of `weight_block` hold for these operands.
            unsafe {
                avx512::weight_block(
                    &x, &bases, &offs, &dyt, 20, &mut wide, 20, rows, lanes, accumulate,
                );
                for half in 0..rows.div_ceil(ROWS) {
                    let b: &[usize; ROWS] = bases[half * ROWS..][..ROWS].try_into().unwrap();
                    let r = ROWS.min(rows - half * ROWS);
                    avx2::weight_block(
                        &x,
                        b,
                        &offs,
                        &dyt,
                        20,
                        &mut narrow[half * ROWS * 20..],
                        20,
                        r,
                        lanes,
                        accumulate,
                    );
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide), bits(&narrow), "{rows} rows, {lanes} lanes");
        }
    }
}
