//! Reference versions of the engine's fused primitives: Glow's affine coupling and
//! Gaussian log-density with their gradients (formulas derived in `ops/fused.rs`), and
//! the Adam/Adamax step (formulas in [`AdamUpdate`]). Each is the formula, element by
//! element, in `f64`.
//!
//! The fast versions: `cpu/fused.rs`, `cpu/adam.rs`, and `shaders/affine_coupling*.comp`,
//! `shaders/gaussian_log_prob*.comp`, `shaders/adam_update.comp`.

use ndarray::{Array3, ArrayD, Ix3, IxDyn};

use crate::backend::fused::{PairedDims, Pairing};
use crate::backend::{AdamKind, AdamUpdate};

/// `[n, c, p]`: `xb`, `yb`, `z`.
pub(super) fn unpaired(d: PairedDims) -> [usize; 3] {
    [d.n, d.c, d.p]
}

/// `[n, 2c, p]`: the paired operand `h`.
pub(super) fn paired(d: PairedDims) -> [usize; 3] {
    [d.n, 2 * d.c, d.p]
}

fn sigmoid(x: f64) -> f64 {
    super::elementwise::unary(crate::backend::UnaryOp::Sigmoid, x)
}

/// A rank-3 view's extents `(n, c, p)`.
fn dims3(x: &ArrayD<f64>) -> (usize, usize, usize) {
    let s = x.shape();
    (s[0], s[1], s[2])
}

fn rank3(x: &ArrayD<f64>) -> ndarray::ArrayView3<'_, f64> {
    x.view()
        .into_dimensionality::<Ix3>()
        .expect("a rank-3 operand")
}

/// `yb = (xb + shift) · σ(t)` and `logdet[b] = Σ_{i, q} ln σ(t)`, with `shift = h[2i]`
/// and `t = h[2i + 1] + 2` (interleaved pairing).
pub(super) fn affine_coupling(xb: &ArrayD<f64>, h: &ArrayD<f64>) -> (ArrayD<f64>, ArrayD<f64>) {
    let (n, c, p) = dims3(xb);
    let (xb, h) = (rank3(xb), rank3(h));
    let mut yb = Array3::zeros((n, c, p));
    let mut logdet = ArrayD::zeros(IxDyn(&[n]));
    for b in 0..n {
        for i in 0..c {
            let (ks, kt) = Pairing::Interleaved.channels(i, c);
            for q in 0..p {
                let s = sigmoid(h[[b, kt, q]] + 2.0);
                yb[[b, i, q]] = (xb[[b, i, q]] + h[[b, ks, q]]) * s;
                logdet[[b]] += s.ln();
            }
        }
    }
    (yb.into_dyn(), logdet)
}

/// The coupling's gradients, with `s = σ(t)`: `dxb = dyb · s`, `dshift = dyb · s`,
/// `dt = dyb · (xb + shift) · s · (1 − s) + dlogdet · (1 − s)`; an absent `dyb` or
/// `dlogdet` counts as zero, and `dxb` exists only with `dyb`.
pub(super) fn affine_coupling_backward(
    dyb: Option<&ArrayD<f64>>,
    dlogdet: Option<&ArrayD<f64>>,
    xb: &ArrayD<f64>,
    h: &ArrayD<f64>,
) -> (Option<ArrayD<f64>>, ArrayD<f64>) {
    let (n, c, p) = dims3(xb);
    let (xb, h) = (rank3(xb), rank3(h));
    let dyb = dyb.map(rank3);
    let mut dh = Array3::zeros((n, 2 * c, p));
    let mut dxb = Array3::zeros((n, c, p));
    for b in 0..n {
        let dld = dlogdet.map_or(0.0, |g| g[[b]]);
        for i in 0..c {
            let (ks, kt) = Pairing::Interleaved.channels(i, c);
            for q in 0..p {
                let s = sigmoid(h[[b, kt, q]] + 2.0);
                let dy = dyb.as_ref().map_or(0.0, |d| d[[b, i, q]]);
                let x_plus_shift = xb[[b, i, q]] + h[[b, ks, q]];
                dxb[[b, i, q]] = dy * s;
                dh[[b, ks, q]] = dy * s;
                dh[[b, kt, q]] = dy * x_plus_shift * s * (1.0 - s) + dld * (1.0 - s);
            }
        }
    }
    (dyb.map(|_| dxb.into_dyn()), dh.into_dyn())
}

/// `lp[b] = Σ_{i, q} −½(ln 2π + 2·logs + (z − mean)² · e^(−2·logs))`, with
/// `(mean, logs)` the channels of `h` paired with channel `i` of `z`.
pub(super) fn gaussian_log_prob(z: &ArrayD<f64>, h: &ArrayD<f64>, pairing: Pairing) -> ArrayD<f64> {
    let (n, c, p) = dims3(z);
    let (z, h) = (rank3(z), rank3(h));
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    let mut lp = ArrayD::zeros(IxDyn(&[n]));
    for b in 0..n {
        for i in 0..c {
            let (km, kl) = pairing.channels(i, c);
            for q in 0..p {
                let (mean, logs) = (h[[b, km, q]], h[[b, kl, q]]);
                let u = (z[[b, i, q]] - mean) * (-logs).exp();
                lp[[b]] += -0.5 * (ln_2pi + 2.0 * logs + u * u);
            }
        }
    }
    lp
}

/// The log-density's gradients, with `u = (z − mean) · e^(−logs)`:
/// `dz = −dlp · u · e^(−logs)`, `dmean = dlp · u · e^(−logs)`, `dlogs = dlp · (u² − 1)`.
pub(super) fn gaussian_log_prob_backward(
    dlp: &ArrayD<f64>,
    z: &ArrayD<f64>,
    h: &ArrayD<f64>,
    pairing: Pairing,
) -> (ArrayD<f64>, ArrayD<f64>) {
    let (n, c, p) = dims3(z);
    let (z, h) = (rank3(z), rank3(h));
    let mut dz = Array3::zeros((n, c, p));
    let mut dh = Array3::zeros((n, 2 * c, p));
    for b in 0..n {
        let g = dlp[[b]];
        for i in 0..c {
            let (km, kl) = pairing.channels(i, c);
            for q in 0..p {
                let (mean, logs) = (h[[b, km, q]], h[[b, kl, q]]);
                let inv_scale = (-logs).exp();
                let u = (z[[b, i, q]] - mean) * inv_scale;
                dz[[b, i, q]] = -g * u * inv_scale;
                dh[[b, km, q]] = g * u * inv_scale;
                dh[[b, kl, q]] = g * (u * u - 1.0);
            }
        }
    }
    (dz.into_dyn(), dh.into_dyn())
}

/// One element of the optimiser step: the new `(param, m, v)` from the old ones and
/// the gradient, as [`AdamUpdate`] writes them.
pub(super) fn adam(s: &AdamUpdate, p: f64, grad: f64, m: f64, v: f64) -> (f64, f64, f64) {
    let (b1, b2) = (f64::from(s.beta1), f64::from(s.beta2));
    let (lr, eps) = (f64::from(s.lr), f64::from(s.eps));
    let t = s.step as i32;
    let g = grad + f64::from(s.weight_decay) * p;
    let m = b1 * m + (1.0 - b1) * g;
    match s.kind {
        AdamKind::Adam => {
            let v = b2 * v + (1.0 - b2) * g * g;
            let m_hat = m / (1.0 - b1.powi(t));
            let v_hat = v / (1.0 - b2.powi(t));
            (p - lr * m_hat / (v_hat.sqrt() + eps), m, v)
        }
        AdamKind::Adamax => {
            // torch.maximum: a NaN gradient makes v NaN (f64::max would drop it).
            let v = super::elementwise::nan_max(b2 * v, g.abs() + eps);
            (p - lr / (1.0 - b1.powi(t)) * m / v, m, v)
        }
    }
}
