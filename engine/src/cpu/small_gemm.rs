//! `C [m, n] (+)= A [m, k] · B [k, n]` for a small `m`, without packing, on AVX-512.
//!
//! Glow's zero-initialised output convolutions have 12 to 48 output channels: their
//! forward pass is a GEMM with `m = c_out` and a long `k = c_in · 9`. A packing GEMM
//! (matrixmultiply) copies `B`, the im2col matrix, into panels and then uses each copied
//! element only `m` times, so at `m = 12` it is bound by the copy: the 128→12 3x3
//! convolution ran at 20 GFLOP/s against ~100 for the square shapes. This kernel reads
//! `B` in place, 16 columns (one 512-bit vector) at a time, and multiplies each loaded
//! vector into 8 output rows held in registers: 57.7 GFLOP/s on one core for
//! `[12, 1152] · [1152, 256]`, measured on the project's machines.
//!
//! Auto-vectorisation of the same loop in plain Rust produced scalar code, hence the
//! intrinsics. Callers fall back to the packing GEMM when [`available`] is false.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

/// Largest `m` this kernel is used for; beyond it the packing GEMM is as fast.
pub(crate) const MAX_M: usize = 48;

/// Output rows per register tile.
const ROWS: usize = 8;
/// Output columns per register tile (one 512-bit vector).
const LANES: usize = 16;

/// Whether the kernel can run for `n` columns on this CPU.
pub(crate) fn available(n: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        n.is_multiple_of(LANES) && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = n;
        false
    }
}

/// `A [m, k]` row-major as `[k, m_pad]`, zero-padded to a multiple of 8 rows: the layout
/// [`gemm`] reads (one broadcast per output row and `k`).
pub(crate) fn transpose_padded(a: &[f32], m: usize, k: usize) -> Vec<f32> {
    let m_pad = m.div_ceil(ROWS) * ROWS;
    let mut t = vec![0.0; k * m_pad];
    for i in 0..m {
        for (kk, &v) in a[i * k..(i + 1) * k].iter().enumerate() {
            t[kk * m_pad + i] = v;
        }
    }
    t
}

/// `c = a · b`, or `c += a · b` with `accumulate`. `a_t` comes from [`transpose_padded`];
/// `b` is `[k, n]` and `c` `[m, n]`, row-major. Requires [`available`]`(n)`.
pub(crate) fn gemm(
    a_t: &[f32],
    m: usize,
    k: usize,
    b: &[f32],
    n: usize,
    c: &mut [f32],
    accumulate: bool,
) {
    let m_pad = m.div_ceil(ROWS) * ROWS;
    assert!(
        available(n) && a_t.len() >= k * m_pad && b.len() >= k * n && c.len() >= m * n,
        "small_gemm: operands do not match m={m}, k={k}, n={n}"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available` checked AVX-512F; the lengths asserted above bound every access
    // (see `gemm_avx512`).
    unsafe {
        gemm_avx512(a_t, m, m_pad, k, b, n, c, accumulate)
    }
}

/// The kernel. Reads `b[kk·n + j .. + 16]` with `j + 16 ≤ n`, `a_t[kk·m_pad + r0 + r]` with
/// `r0 + r < m_pad`, for `kk < k`; writes `c[(r0 + r)·n + j .. + 16]` with `r0 + r < m`. All
/// in bounds given the caller's length checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_avx512(
    a_t: &[f32],
    m: usize,
    m_pad: usize,
    k: usize,
    b: &[f32],
    n: usize,
    c: &mut [f32],
    accumulate: bool,
) {
    for r0 in (0..m).step_by(ROWS) {
        let rows = ROWS.min(m - r0);
        for j in (0..n).step_by(LANES) {
            let mut acc = [_mm512_setzero_ps(); ROWS];
            let mut bp = b.as_ptr().add(j);
            let mut ap = a_t.as_ptr().add(r0);
            for _ in 0..k {
                let bv = _mm512_loadu_ps(bp);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    *acc_r = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(r)), bv, *acc_r);
                }
                bp = bp.add(n);
                ap = ap.add(m_pad);
            }
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let out = c.as_mut_ptr().add((r0 + r) * n + j);
                if accumulate {
                    let mut sum = [0.0f32; LANES];
                    _mm512_storeu_ps(sum.as_mut_ptr(), *acc_r);
                    for (l, s) in sum.iter().enumerate() {
                        *out.add(l) += s;
                    }
                } else {
                    _mm512_storeu_ps(out, *acc_r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product() {
        if !available(16) {
            eprintln!("no AVX-512 on this CPU: the kernel is not used here");
            return;
        }
        for &(m, k, n) in &[
            (12, 1152, 256),
            (5, 7, 32),
            (24, 30, 64),
            (48, 9, 16),
            (1, 1, 16),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0)
                .collect();
            let a_t = transpose_padded(&a, m, k);
            for accumulate in [false, true] {
                let mut c = vec![1.0f32; m * n];
                gemm(&a_t, m, k, &b, n, &mut c, accumulate);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k)
                            .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]))
                            .sum();
                        let want = dot + if accumulate { 1.0 } else { 0.0 };
                        let got = f64::from(c[i * n + j]);
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "({m},{k},{n}) [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
