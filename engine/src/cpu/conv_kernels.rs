//! The two inner loops of the CPU convolutions, in portable Rust and with AVX2/FMA.
//!
//! `conv.rs` plans the work (which pixels, which weights, which threads); these loops do
//! the arithmetic on one small tile, reading the input image in place (no im2col copy):
//!
//! - [`conv_block`]: `ROWS` output channels × one block of `LANES` pixels of one image,
//!   `out[r][l] = bias[r] + Σ_{c, t} a[c][t][r] · x[c][p0 + l + shift[t]]`, summed over
//!   every input channel `c` and kernel tap `t`. `a` is a weight panel packed `[c][t][r]`,
//!   so each step broadcasts `ROWS` weights and loads one pixel vector: an outer product
//!   in registers (12 accumulators of 8 lanes with AVX2). The forward convolution and
//!   its input gradient (a convolution with the flipped, transposed kernel) both run on it.
//! - [`weight_tile`]: the weight gradient for `WROWS` output channels × up to `WCOLS`
//!   (input channel, tap) pairs of one image: `acc[r][j] += Σ_q dy[r][q] · x[c_j][q +
//!   shift_j]` over the image's pixels `q`, 8 pixels per vector, with one horizontal sum
//!   at the end.
//!
//! A tap whose source pixel falls outside the image (zero padding) is masked out: each
//! tap has a lane mask per pixel block, computed once per block by `conv.rs`, and AVX2's
//! masked load reads only the lanes the mask keeps, so it never touches memory outside
//! the image.
//!
//! Why not im2col + a packing GEMM: Glow's zero-initialised output layers have 12 to 48
//! output channels, so the GEMM's `m` is small and packing the long im2col matrix costs as
//! much as the multiply (18-25% of the SGEMM ceiling in `benches/ops` before this file;
//! see the module doc of `conv.rs` for the figures after it).

// Kernels index several arrays with one loop variable (lanes, rows, taps); iterator
// chains would hide the arithmetic the comments describe.
#![allow(clippy::needless_range_loop)]

/// Output channels per [`conv_block`] tile.
pub(crate) const ROWS: usize = 6;
/// Pixels per [`conv_block`] tile (two AVX2 vectors).
pub(crate) const LANES: usize = 16;
/// Output channels per [`weight_tile`].
pub(crate) const WROWS: usize = 3;
/// (Input channel, tap) pairs per [`weight_tile`].
pub(crate) const WCOLS: usize = 3;

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
        Taps {
            p,
            shifts,
            masks,
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

    /// Whether every block is full (a 1x1 kernel on a multiple of `LANES` pixels).
    pub fn all_full(&self) -> bool {
        self.full.iter().all(|&f| f)
    }

    /// The masks of block `b`, one per tap.
    fn block_masks(&self, b: usize) -> &[Mask] {
        &self.masks[b * self.taps()..][..self.taps()]
    }

    /// Whether lane `l` of block `b` reads for tap `t`, and the index it reads in channel
    /// `c` of an image.
    #[inline(always)]
    fn source(&self, b: usize, c: usize, t: usize, l: usize) -> Option<usize> {
        (self.masks[b * self.taps() + t][l] != 0)
            .then(|| (c * self.p + b * LANES + l).wrapping_add_signed(self.shifts[t]))
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
    let lanes = taps.lanes(b);
    assert!(rows <= ROWS && rows > 0 && b < taps.blocks());
    assert!(
        a.len() >= channels * taps.taps() * ROWS,
        "conv block: weight panel too short"
    );
    assert!(
        x.len() >= x0 + channels * taps.p,
        "conv block: image too short"
    );
    assert!(
        out.len() >= (rows - 1) * ldo + lanes,
        "conv block: output too short"
    );
    #[cfg(target_arch = "x86_64")]
    if avx2() {
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

/// The operands of the weight gradient, shared by all its tiles.
pub(crate) struct WeightGrad<'a> {
    /// The input `[n, c_in, p]`.
    pub x: &'a [f32],
    /// The output gradient `[n, c_out, p]`.
    pub dy: &'a [f32],
    /// Images.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// The kernel's taps.
    pub taps: &'a Taps,
}

/// One tile of the weight gradient over some images: `acc[r][j] = Σ_{img, q} dy[img][o0 +
/// r][q] · x[img][c_j][q + shifts[t_j]]` (masked taps reading zero) over the pixels of
/// `images`, for `r < rows` and `(c_j, t_j) = cols[j]`, summed in a fixed order.
pub(crate) fn weight_tile(
    g: &WeightGrad,
    images: std::ops::Range<usize>,
    o0: usize,
    rows: usize,
    cols: &[(usize, usize)],
) -> [[f32; WCOLS]; WROWS] {
    let p = g.taps.p;
    assert!(rows <= WROWS && rows > 0 && !cols.is_empty() && cols.len() <= WCOLS);
    assert!(o0 + rows <= g.c_out && g.dy.len() >= g.n * g.c_out * p);
    assert!(g.x.len() >= g.n * g.c_in * p);
    assert!(cols.iter().all(|&(c, t)| c < g.c_in && t < g.taps.taps()));
    assert!(images.end <= g.n);
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2 and FMA are present; `dy` rows `o0..o0 + rows` and channels `c_j` of
        // `x` of the images lie inside the slices (asserts above), `dy` is read only at
        // lanes inside the image, and `x` whole-vector only inside the slice and otherwise
        // only where `Taps` keeps a lane.
        return unsafe { avx2::weight_tile(g, images, o0, rows, cols) };
    }
    portable::weight_tile(g, images, o0, rows, cols)
}

/// The plain-Rust kernels: the path on CPUs without AVX2 (or with
/// `ENGINE_CPU_PORTABLE=1`), and the reference the AVX2 kernels are tested against.
mod portable {
    use super::{Taps, WeightGrad, LANES, ROWS, WCOLS, WROWS};

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

    /// [`super::weight_tile`], lane by lane.
    pub(super) fn weight_tile(
        g: &WeightGrad,
        images: std::ops::Range<usize>,
        o0: usize,
        rows: usize,
        cols: &[(usize, usize)],
    ) -> [[f32; WCOLS]; WROWS] {
        let p = g.taps.p;
        let mut acc = [[0f32; WCOLS]; WROWS];
        for img in images {
            let x = &g.x[img * g.c_in * p..];
            let dy = &g.dy[(img * g.c_out + o0) * p..];
            for b in 0..g.taps.blocks() {
                for l in 0..g.taps.lanes(b) {
                    let q = b * LANES + l;
                    for (j, &(c, t)) in cols.iter().enumerate() {
                        if let Some(i) = g.taps.source(b, c, t, l) {
                            let v = x[i];
                            for r in 0..rows {
                                acc[r][j] += dy[r * p + q] * v;
                            }
                        }
                    }
                }
            }
        }
        acc
    }
}

/// Whether this CPU runs the AVX2/FMA kernels (checked once).
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::env::var_os("ENGINE_CPU_PORTABLE").is_none()
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Taps, WeightGrad, LANES, ROWS, WCOLS, WROWS};

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

    /// How [`vectors`] reads `x`: whole vectors (no padding in reach), whole vectors with
    /// the padding lanes cleared by an AND (every read inside the slice), or masked loads
    /// (a read may cross an end of the slice; much slower on AMD Zen 3).
    const PLAIN: u8 = 0;
    const AND: u8 = 1;
    const MASKED: u8 = 2;

    /// Adds `dy[r][q] · x[j][q]` over the 8-pixel vectors `v0..v1` of one image into the
    /// 3 × 3 accumulators, with 3 vectors of dy and one of x at a time.
    /// `mk[j]` points at column j's mask for block 0; block b's is `b·nt·16` further.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn vectors<const MODE: u8>(
        acc: &mut [[__m256; WCOLS]; WROWS],
        d: &[*const f32; WROWS],
        x: &[*const f32; WCOLS],
        mk: &[*const i32; WCOLS],
        nt: usize,
        v0: usize,
        v1: usize,
        dy_mask: Option<__m256i>,
    ) {
        for v in v0..v1 {
            let q = v * 8;
            let moff = (v / 2) * nt * LANES + (v % 2) * 8;
            let a: [__m256; WROWS] = match dy_mask {
                None => std::array::from_fn(|r| _mm256_loadu_ps(d[r].add(q))),
                Some(m) => std::array::from_fn(|r| _mm256_maskload_ps(d[r].add(q), m)),
            };
            for j in 0..WCOLS {
                let src = x[j].wrapping_add(q);
                let b = match MODE {
                    PLAIN => _mm256_loadu_ps(src),
                    AND => _mm256_and_ps(
                        _mm256_loadu_ps(src),
                        _mm256_loadu_ps(mk[j].add(moff) as *const f32),
                    ),
                    _ => _mm256_maskload_ps(
                        src,
                        _mm256_loadu_si256(mk[j].add(moff) as *const __m256i),
                    ),
                };
                for r in 0..WROWS {
                    acc[r][j] = _mm256_fmadd_ps(a[r], b, acc[r][j]);
                }
            }
        }
    }

    /// [`super::weight_tile`]: 3 rows × 3 columns in 9 accumulators, 8 pixels per
    /// vector, one horizontal sum per accumulator at the end. Missing rows and columns
    /// repeat the last real one (in-bounds reads) and are dropped.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_tile(
        g: &WeightGrad,
        images: std::ops::Range<usize>,
        o0: usize,
        rows: usize,
        cols: &[(usize, usize)],
    ) -> [[f32; WCOLS]; WROWS] {
        let taps = g.taps;
        let (p, nt) = (taps.p, taps.taps());
        let col = |j: usize| cols[j.min(cols.len() - 1)];
        // Per column: where it reads in an image (channel and tap shift) and its masks;
        // per row: its offset in an image's dy.
        let cx: [isize; WCOLS] =
            std::array::from_fn(|j| (col(j).0 * p) as isize + taps.shifts[col(j).1]);
        let mask_base = taps.masks.as_ptr() as *const i32;
        let mk: [*const i32; WCOLS] = std::array::from_fn(|j| mask_base.add(col(j).1 * LANES));
        let dr: [usize; WROWS] = std::array::from_fn(|r| r.min(rows - 1) * p);
        let (whole, vectors_total) = (p / 8, p.div_ceil(8));
        let xlen = g.x.len() as isize;
        let (xp, dp) = (g.x.as_ptr(), g.dy.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); WCOLS]; WROWS];
        for img in images {
            let xo = (img * g.c_in * p) as isize;
            let dyo = (img * g.c_out + o0) * p;
            let d: [*const f32; WROWS] = std::array::from_fn(|r| dp.add(dyo + dr[r]));
            let x: [*const f32; WCOLS] = std::array::from_fn(|j| xp.wrapping_offset(xo + cx[j]));
            let inside = (0..WCOLS)
                .all(|j| xo + cx[j] >= 0 && xo + cx[j] + (vectors_total * 8) as isize <= xlen);
            match (inside, taps.all_full()) {
                (true, true) => vectors::<PLAIN>(&mut acc, &d, &x, &mk, nt, 0, whole, None),
                (true, false) => vectors::<AND>(&mut acc, &d, &x, &mk, nt, 0, whole, None),
                (false, _) => vectors::<MASKED>(&mut acc, &d, &x, &mk, nt, 0, whole, None),
            }
            if whole < vectors_total {
                // The last, partial vector: dy under a lane mask too.
                let lane_ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let left = _mm256_set1_epi32((p - whole * 8) as i32);
                let m = _mm256_cmpgt_epi32(left, lane_ids);
                vectors::<MASKED>(&mut acc, &d, &x, &mk, nt, whole, vectors_total, Some(m));
            }
        }
        let mut out = [[0f32; WCOLS]; WROWS];
        for r in 0..WROWS {
            for j in 0..WCOLS {
                out[r][j] = hsum(acc[r][j]);
            }
        }
        out
    }

    /// The sum of the 8 lanes, in a fixed order.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
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
        if !avx2() {
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
            let c_out = 4;
            let dy = data(n * c_out * taps.p, 3);
            let g = WeightGrad {
                x: &x,
                dy: &dy,
                n,
                c_in: channels,
                c_out,
                taps: &taps,
            };
            let cols: Vec<(usize, usize)> = (0..channels * taps.taps())
                .map(|j| (j / taps.taps(), j % taps.taps()))
                .collect();
            for chunk in cols.chunks(WCOLS) {
                for (o0, rows) in [(0, WROWS), (3, 1)] {
                    // SAFETY: the checks of `weight_tile` hold for these operands.
                    let fast = unsafe { avx2::weight_tile(&g, 0..n, o0, rows, chunk) };
                    let slow = portable::weight_tile(&g, 0..n, o0, rows, chunk);
                    for r in 0..rows {
                        for j in 0..chunk.len() {
                            let (f, s) = (fast[r][j], slow[r][j]);
                            assert!((f - s).abs() <= 1e-4 * (1.0 + s.abs()), "{f} vs {s}");
                        }
                    }
                }
            }
        }
    }
}
