//! The fused Glow ops on the CPU: affine coupling and the Gaussian log-density, each one
//! pass over its operands (the formulas are in `ops/fused.rs`, next to their gradients).
//!
//! Images run as rayon tasks once the operands are large; each image's sum is formed in
//! `f64`, in a fixed order, by the task that owns the image.

use rayon::prelude::*;

use super::elementwise::{sigmoid, softplus};
use super::PAR_THRESHOLD;
use crate::backend::{PairedDims, Pairing};

/// `½ ln 2π`.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// Runs `f(image, out_chunk)` over `out` in chunks of `per` elements (one per image), in
/// parallel when the op touches at least `PAR_THRESHOLD` elements.
fn per_image<T: Send>(out: &mut [T], per: usize, work: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if per == 0 {
        return;
    }
    if work < PAR_THRESHOLD {
        out.chunks_mut(per).enumerate().for_each(|(b, o)| f(b, o));
    } else {
        out.par_chunks_mut(per)
            .enumerate()
            .for_each(|(b, o)| f(b, o));
    }
}

/// `(yb, logdet)` of the affine coupling (see `Backend::affine_coupling`).
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
            let out = &mut yb[i * p..][..p];
            for q in 0..p {
                let t = raw[q] + 2.0;
                out[q] = (x[q] + shift[q]) * sigmoid(t);
                sum += f64::from(-softplus(-t));
            }
        }
        **ld = sum as f32;
    });
    (yb, logdet)
}

/// `(dxb, dh)` of the affine coupling (see `Backend::affine_coupling_backward`).
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
        for q in 0..p {
            let s = sigmoid(raw[q] + 2.0);
            let g = dyb.map_or(0.0, |dy| dy[(b * c + i) * p + q]);
            dh[ks * p + q] = g * s;
            dh[kt * p + q] = g * (x[q] + shift[q]) * s * (1.0 - s) + dld * (1.0 - s);
            if let Some(dx) = dx.as_mut() {
                dx[i * p + q] = g * s;
            }
        }
    }
}

/// `lp [n]` of the Gaussian log-density (see `Backend::gaussian_log_prob`).
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
            for q in 0..p {
                let u = f64::from(z[q] - mean[q]) * (-f64::from(logs[q])).exp();
                sum -= HALF_LN_2PI + f64::from(logs[q]) + 0.5 * u * u;
            }
        }
        lp[0] = sum as f32;
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
            for q in 0..p {
                let inv = (-logs[q]).exp();
                let u = (zz[q] - mean[q]) * inv;
                let dm = g * u * inv;
                dz[i * p + q] = -dm;
                dh[km * p + q] = dm;
                dh[kl * p + q] = g * (u * u - 1.0);
            }
        }
    });
    (dz, dh)
}
