//! The fused Glow ops on the CPU: affine coupling, the Gaussian log-density, and relu's
//! gradient with the bias gradient beneath it, each one pass over its operands (the
//! formulas are in `ops/fused.rs`, next to their gradients).
//!
//! Images run as rayon tasks once the operands are large. Each image's sum is formed by
//! the task that owns the image, in a fixed order: a row (one channel) in eight `f32`
//! lanes, so that the loop vectorises, and rows added in `f64`. The exponentials and
//! logarithms are `fastmath`'s polynomials for the same reason.

use super::fastmath::{exp, sigmoid, sigmoid_and_log};
use super::{for_each_chunk, PAR_THRESHOLD};
use crate::backend::fused::{PairedDims, Pairing};

/// `½ ln 2π`.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// Runs `f(image, out_chunk)` over `out` in chunks of `per` elements (one per image), in
/// parallel when the op touches at least `PAR_THRESHOLD` elements.
fn per_image<T: Send>(out: &mut [T], per: usize, work: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if per > 0 {
        for_each_chunk(out, per, work >= PAR_THRESHOLD, f);
    }
}

/// Width of the `f32` partial sums of one row.
const LANES: usize = 8;

/// Defines `$name`, which runs the `#[inline(always)]` row kernel `$kernel` compiled for
/// AVX2/FMA where the CPU has them (the same arithmetic, in 8-wide vectors: Rust never
/// fuses a multiply and an add on its own, so both builds give the same bits), and for
/// the baseline target elsewhere.
macro_rules! row_kernel {
    ($(#[$doc:meta])* fn $name:ident = $kernel:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if super::has_avx2() {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) -> $ret {
                    $kernel($($arg),*)
                }
                // SAFETY: the CPU has AVX2 and FMA.
                return unsafe { fast($($arg),*) };
            }
            $kernel($($arg),*)
        }
    };
}

/// `Σ lanes`, in `f64`.
#[inline(always)]
fn lanes_sum(acc: [f32; LANES]) -> f64 {
    acc.iter().map(|&a| f64::from(a)).sum()
}

/// One row of the coupling's forward: `out = (x + shift)·σ(raw + 2)`, returning
/// `Σ ln σ(raw + 2)`.
#[inline(always)]
fn coupling_row_kernel(x: &[f32], shift: &[f32], raw: &[f32], out: &mut [f32]) -> f64 {
    let p = out.len();
    let (x, shift, raw) = (&x[..p], &shift[..p], &raw[..p]);
    let mut acc = [0f32; LANES];
    let full = p / LANES * LANES;
    for (((o, x), sh), r) in out[..full]
        .chunks_exact_mut(LANES)
        .zip(x.chunks_exact(LANES))
        .zip(shift.chunks_exact(LANES))
        .zip(raw.chunks_exact(LANES))
    {
        for j in 0..LANES {
            let (s, log_s) = sigmoid_and_log(r[j] + 2.0);
            o[j] = (x[j] + sh[j]) * s;
            acc[j] += log_s;
        }
    }
    for q in full..p {
        let (s, log_s) = sigmoid_and_log(raw[q] + 2.0);
        out[q] = (x[q] + shift[q]) * s;
        acc[q - full] += log_s;
    }
    lanes_sum(acc)
}

row_kernel!(
    /// [`coupling_row_kernel`], vectorised where the CPU allows.
    fn coupling_row = coupling_row_kernel(x: &[f32], shift: &[f32], raw: &[f32], out: &mut [f32]) -> f64
);

/// One row of the coupling's backward (formulas at [`image_backward`]); `dy` `None` is a
/// zero output gradient.
#[inline(always)]
fn coupling_grad_row_kernel(
    dy: Option<&[f32]>,
    dld: f32,
    x: &[f32],
    shift: &[f32],
    raw: &[f32],
    dshift: &mut [f32],
    dt: &mut [f32],
) {
    let p = dt.len();
    let (x, shift, raw, dshift) = (&x[..p], &shift[..p], &raw[..p], &mut dshift[..p]);
    // One loop per case, with no `Option` inside, so that each vectorises.
    match dy {
        Some(dy) => {
            let dy = &dy[..p];
            for q in 0..p {
                let s = sigmoid(raw[q] + 2.0);
                let gs = dy[q] * s;
                dshift[q] = gs;
                dt[q] = (gs * (x[q] + shift[q]) + dld) * (1.0 - s);
            }
        }
        None => {
            for q in 0..p {
                dshift[q] = 0.0;
                dt[q] = dld * (1.0 - sigmoid(raw[q] + 2.0));
            }
        }
    }
}

row_kernel!(
    /// [`coupling_grad_row_kernel`], vectorised where the CPU allows.
    fn coupling_grad_row = coupling_grad_row_kernel(dy: Option<&[f32]>, dld: f32, x: &[f32], shift: &[f32], raw: &[f32], dshift: &mut [f32], dt: &mut [f32]) -> ()
);

/// One row of the Gaussian log-density: `Σ logs + ½·((z − mean)·e^(−logs))²`.
#[inline(always)]
fn gaussian_row_kernel(z: &[f32], mean: &[f32], logs: &[f32]) -> f64 {
    let p = z.len();
    let (mean, logs) = (&mean[..p], &logs[..p]);
    let mut acc = [0f32; LANES];
    let full = p / LANES * LANES;
    for ((z, m), l) in z[..full]
        .chunks_exact(LANES)
        .zip(mean.chunks_exact(LANES))
        .zip(logs.chunks_exact(LANES))
    {
        for j in 0..LANES {
            let u = (z[j] - m[j]) * exp(-l[j]);
            acc[j] += l[j] + 0.5 * u * u;
        }
    }
    for q in full..p {
        let u = (z[q] - mean[q]) * exp(-logs[q]);
        acc[q - full] += logs[q] + 0.5 * u * u;
    }
    lanes_sum(acc)
}

row_kernel!(
    /// [`gaussian_row_kernel`], vectorised where the CPU allows.
    fn gaussian_row = gaussian_row_kernel(z: &[f32], mean: &[f32], logs: &[f32]) -> f64
);

/// One row of the Gaussian log-density's backward (formulas at
/// [`gaussian_log_prob_backward`]).
#[inline(always)]
fn gaussian_grad_row_kernel(
    g: f32,
    z: &[f32],
    mean: &[f32],
    logs: &[f32],
    dz: &mut [f32],
    dmean: &mut [f32],
    dlogs: &mut [f32],
) {
    let p = dz.len();
    let (z, mean, logs, dmean, dlogs) = (
        &z[..p],
        &mean[..p],
        &logs[..p],
        &mut dmean[..p],
        &mut dlogs[..p],
    );
    for q in 0..p {
        let inv = exp(-logs[q]);
        let u = (z[q] - mean[q]) * inv;
        let dm = g * u * inv;
        dz[q] = -dm;
        dmean[q] = dm;
        dlogs[q] = g * (u * u - 1.0);
    }
}

row_kernel!(
    /// [`gaussian_grad_row_kernel`], vectorised where the CPU allows.
    fn gaussian_grad_row = gaussian_grad_row_kernel(g: f32, z: &[f32], mean: &[f32], logs: &[f32], dz: &mut [f32], dmean: &mut [f32], dlogs: &mut [f32]) -> ()
);

/// `(yb, logdet)` of the affine coupling (see `Fused::affine_coupling`).
pub(super) fn affine_coupling(xb: &[f32], h: &[f32], d: PairedDims) -> (Vec<f32>, Vec<f32>) {
    let (c, p) = (d.c, d.p);
    let mut yb = super::pool::take(d.n * c * p);
    let mut logdet = vec![0.0; d.n];
    let mut both: Vec<(&mut [f32], &mut f32)> = yb
        .chunks_mut((c * p).max(1))
        .zip(logdet.iter_mut())
        .collect();
    per_image(&mut both, 1, d.n * c * p, |b, pair| {
        let (yb, ld) = &mut pair[0];
        let mut sum = 0f64;
        for i in 0..c {
            let (ks, kt) = Pairing::Interleaved.channels(i, c);
            let x = &xb[(b * c + i) * p..][..p];
            let shift = &h[(b * 2 * c + ks) * p..][..p];
            let raw = &h[(b * 2 * c + kt) * p..][..p];
            sum += coupling_row(x, shift, raw, &mut yb[i * p..][..p]);
        }
        **ld = sum as f32;
    });
    (yb, logdet)
}

/// `(dxb, dh)` of the affine coupling (see `Fused::affine_coupling_backward`).
pub(super) fn affine_coupling_backward(
    dyb: Option<&[f32]>,
    dlogdet: Option<&[f32]>,
    xb: &[f32],
    h: &[f32],
    d: PairedDims,
) -> (Option<Vec<f32>>, Vec<f32>) {
    let (c, p) = (d.c, d.p);
    let mut dh = super::pool::take(d.n * 2 * c * p);
    let mut dxb = dyb.map(|_| super::pool::take(d.n * c * p));
    let per_dh = 2 * c * p;
    match dxb.as_mut() {
        Some(dxb) => {
            let mut both: Vec<(&mut [f32], &mut [f32])> = dh
                .chunks_mut(per_dh.max(1))
                .zip(dxb.chunks_mut((c * p).max(1)))
                .collect();
            per_image(&mut both, 1, d.n * c * p, |b, pair| {
                let (dh, dx) = &mut pair[0];
                image_backward(b, dyb, dlogdet, xb, h, d, dh, Some(dx));
            });
        }
        None => per_image(&mut dh, per_dh, d.n * c * p, |b, dh| {
            image_backward(b, dyb, dlogdet, xb, h, d, dh, None)
        }),
    }
    (dxb, dh)
}

/// One image of [`affine_coupling_backward`]: with `s = σ(t)`, `dxb = dyb·s`,
/// `dshift = dyb·s`, `dt = dyb·(xb + shift)·s·(1 − s) + dlogdet·(1 − s)`.
#[allow(clippy::too_many_arguments)]
fn image_backward(
    b: usize,
    dyb: Option<&[f32]>,
    dlogdet: Option<&[f32]>,
    xb: &[f32],
    h: &[f32],
    d: PairedDims,
    dh: &mut [f32],
    mut dx: Option<&mut &mut [f32]>,
) {
    let (c, p) = (d.c, d.p);
    let dld = dlogdet.map_or(0.0, |g| g[b]);
    for i in 0..c {
        let (ks, kt) = Pairing::Interleaved.channels(i, c);
        let x = &xb[(b * c + i) * p..][..p];
        let shift = &h[(b * 2 * c + ks) * p..][..p];
        let raw = &h[(b * 2 * c + kt) * p..][..p];
        let (dshift, dt) = two_rows(dh, p, ks, kt);
        let dy = dyb.map(|dy| &dy[(b * c + i) * p..][..p]);
        coupling_grad_row(dy, dld, x, shift, raw, dshift, dt);
        if let (Some(dx), Some(_)) = (dx.as_mut(), dy) {
            dx[i * p..][..p].copy_from_slice(dshift);
        }
    }
}

/// Rows `a` and `b` (distinct) of `len` elements of `m`, both mutable.
fn two_rows(m: &mut [f32], len: usize, a: usize, b: usize) -> (&mut [f32], &mut [f32]) {
    assert_ne!(a, b, "two_rows: the same row twice");
    if a < b {
        let (lo, hi) = m.split_at_mut(b * len);
        (&mut lo[a * len..][..len], &mut hi[..len])
    } else {
        let (lo, hi) = m.split_at_mut(a * len);
        (&mut hi[..len], &mut lo[b * len..][..len])
    }
}

/// `lp [n]` of the Gaussian log-density (see `Fused::gaussian_log_prob`).
pub(super) fn gaussian_log_prob(z: &[f32], h: &[f32], d: PairedDims, pairing: Pairing) -> Vec<f32> {
    let (c, p) = (d.c, d.p);
    let mut lp = vec![0.0; d.n];
    per_image(&mut lp, 1, d.n * c * p, |b, lp| {
        let mut sum = 0f64;
        for i in 0..c {
            let (km, kl) = pairing.channels(i, c);
            let z = &z[(b * c + i) * p..][..p];
            let mean = &h[(b * 2 * c + km) * p..][..p];
            let logs = &h[(b * 2 * c + kl) * p..][..p];
            sum -= gaussian_row(z, mean, logs);
        }
        lp[0] = (sum - HALF_LN_2PI * (c * p) as f64) as f32;
    });
    lp
}

/// `(dz, dh)` of the Gaussian log-density: with `u = (z − mean)·e^(−logs)`,
/// `dz = −dlp·u·e^(−logs)`, `dmean = dlp·u·e^(−logs)`, `dlogs = dlp·(u² − 1)`.
pub(super) fn gaussian_log_prob_backward(
    dlp: &[f32],
    z: &[f32],
    h: &[f32],
    d: PairedDims,
    pairing: Pairing,
) -> (Vec<f32>, Vec<f32>) {
    let (c, p) = (d.c, d.p);
    let mut dz = super::pool::take(d.n * c * p);
    let mut dh = super::pool::take(d.n * 2 * c * p);
    let mut both: Vec<(&mut [f32], &mut [f32])> = dz
        .chunks_mut((c * p).max(1))
        .zip(dh.chunks_mut((2 * c * p).max(1)))
        .collect();
    per_image(&mut both, 1, d.n * c * p, |b, pair| {
        let (dz, dh) = &mut pair[0];
        let g = dlp[b];
        for i in 0..c {
            let (km, kl) = pairing.channels(i, c);
            let zz = &z[(b * c + i) * p..][..p];
            let mean = &h[(b * 2 * c + km) * p..][..p];
            let logs = &h[(b * 2 * c + kl) * p..][..p];
            let dz = &mut dz[i * p..][..p];
            let (dmean, dlogs) = two_rows(dh, p, km, kl);
            gaussian_grad_row(g, zz, mean, logs, dz, dmean, dlogs);
        }
    });
    (dz, dh)
}

/// `dz = dy · [y > 0]` and its sum over images and pixels, `[c]`, for `[n, c, h, w]`
/// operands: each run of `dz` is summed as it is written, in the order and precision of
/// `reduce`'s sum over the same axes, so `db` has the bits of `dz.sum(&[0, 2, 3])`.
pub(super) fn relu_grad_bias(dy: &[f32], y: &[f32], shape: [usize; 4]) -> (Vec<f32>, Vec<f32>) {
    let mut dz = super::pool::take(dy.len());
    let db = super::reduce::sum_filled(&mut dz, &shape, &[0, 2, 3], |at, run| {
        let (dy, y) = (&dy[at..at + run.len()], &y[at..at + run.len()]);
        for ((o, &g), &v) in run.iter_mut().zip(dy).zip(y) {
            // The expression of the `ReluGrad` binary op, so the bits are its bits.
            *o = g * if v > 0.0 { 1.0 } else { 0.0 };
        }
    });
    (dz, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .map(|v| v * scale)
            .collect()
    }

    /// The dispatching row functions (AVX2 where the CPU has it) give the same bits as the
    /// kernels compiled for the baseline target, on rows with and without a tail.
    #[test]
    fn vector_rows_match_the_baseline_build_bit_for_bit() {
        for p in [1, 7, 8, 29, 256] {
            let (x, sh, raw) = (data(p, 1, 3.0), data(p, 2, 3.0), data(p, 3, 12.0));
            let (mut a, mut b) = (vec![0.0; p], vec![0.0; p]);
            let (sa, sb) = (
                coupling_row(&x, &sh, &raw, &mut a),
                coupling_row_kernel(&x, &sh, &raw, &mut b),
            );
            assert_eq!((sa.to_bits(), &a), (sb.to_bits(), &b));
            let dy = data(p, 4, 1.0);
            let mut o = [vec![0.0; p], vec![0.0; p], vec![0.0; p], vec![0.0; p]];
            let [o0, o1, o2, o3] = &mut o;
            coupling_grad_row(Some(&dy), 0.3, &x, &sh, &raw, o0, o1);
            coupling_grad_row_kernel(Some(&dy), 0.3, &x, &sh, &raw, o2, o3);
            assert_eq!((&o[0], &o[1]), (&o[2], &o[3]));
            assert_eq!(
                gaussian_row(&x, &sh, &raw).to_bits(),
                gaussian_row_kernel(&x, &sh, &raw).to_bits()
            );
            let mut g = [vec![0.0; p], vec![0.0; p], vec![0.0; p]];
            let mut k = g.clone();
            let [g0, g1, g2] = &mut g;
            gaussian_grad_row(0.7, &x, &sh, &raw, g0, g1, g2);
            let [k0, k1, k2] = &mut k;
            gaussian_grad_row_kernel(0.7, &x, &sh, &raw, k0, k1, k2);
            assert_eq!(g, k);
        }
    }
}
