//! Fused ops for Glow's two hottest elementwise chains, each one backend primitive per
//! pass instead of a dozen small ops (and their allocations, and their backward ops),
//! and for the relu and bias gradient of the coupling networks' convolutions.
//!
//! Why these two: in the per-op profile of a training step (`cargo bench --bench
//! train_step`, `BENCH_PROFILE=1`) the largest rows after the convolutions were `mul`,
//! `sum`, `softplus`, `sigmoid` and `heaviside` (then called `step`), most of them from the affine coupling's tail
//! and the priors' log-density, in hundreds of small op calls per step (the figures:
//! `docs/measurements.md`).
//!
//! **Affine coupling.** For `xb [n, c, H, W]` and the coupling network's output
//! `h [n, 2c, H, W]`, with `shift = h[:, 0::2]`, `t = h[:, 1::2] + 2` and `s = σ(t)`:
//!
//! - `yb = (xb + shift) · s`, `logdet[b] = Σ log s` (over channels and pixels);
//! - `dxb = dyb · s`, `dshift = dyb · s`,
//!   `dt = dyb · (xb + shift) · s · (1 − s) + dlogdet · (1 − s)`
//!   (since `d log σ(t) / dt = 1 − σ(t)`).
//!
//! **Gaussian log-density.** For `z [n, c, H, W]` and `(mean, logs)` paired from
//! `h [n, 2c, H, W]` (see [`Pairing`]), with `u = (z − mean) · e^(−logs)`:
//!
//! - `lp[b] = Σ −½(ln 2π + 2·logs + u²)`;
//! - `dz = −dlp · u · e^(−logs)`, `dmean = dlp · u · e^(−logs)`, `dlogs = dlp · (u² − 1)`.
//!
//! **Relu and bias gradient.** For the output gradient `dy` of `relu(conv(x, w) + b)`
//! and its output `y`, both `[n, c, H, W]`: `dz = dy · [y > 0]` (what the two gradient
//! convolutions take) and `db = Σ dz` over images and pixels. The CPU writes each run of
//! `dz` and adds it up while it is in cache, where the unfused pair read `dz` again
//! (the profile rows that justified it, `relu_grad` and the bias `sum`s, are in
//! `docs/measurements.md`). It serves only the convolution's backward pass, so it has
//! no gradient of its own.
//!
//! Kernels: `cpu/fused.rs`, `shaders/affine_coupling*.comp` and
//! `shaders/gaussian_log_prob*.comp` (the relu and bias gradient runs the `relu_grad`
//! and `sum` kernels on the reference and Vulkan devices). Tests: the gradient checks in
//! `engine/tests/gradcheck.rs` and the comparison with the unfused composition in
//! `tests/fused.rs`, both on every device.

use crate::backend::fused::{Fused, PairedDims, Pairing};
use crate::device::DeviceBackend;
use crate::shape;
use crate::{Error, Result, Tensor};

/// Checks `a [n, c, H, W]` against `h [n, 2c, H, W]` and returns their dims.
fn paired_dims(op: &'static str, a: &Tensor, h: &Tensor) -> Result<PairedDims> {
    a.same_device(op, h)?;
    match (a.shape(), h.shape()) {
        (&[n, c, hh, w], &[n2, c2, hh2, w2]) if n == n2 && c2 == 2 * c && hh == hh2 && w == w2 => {
            Ok(PairedDims { n, c, p: hh * w })
        }
        _ => Err(Error::shape(
            op,
            format!(
                "expects [n, c, H, W] and [n, 2c, H, W], got {} and {}",
                shape::fmt(a.shape()),
                shape::fmt(h.shape())
            ),
        )),
    }
}

impl Tensor {
    /// Glow's affine coupling of `xb [n, c, H, W]` by the coupling network's output
    /// `h [n, 2c, H, W]` (shift and scale interleaved): `(yb [n, c, H, W], logdet [n])`.
    /// See the module doc for the formulas and their gradients.
    pub fn affine_coupling(xb: &Tensor, h: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = paired_dims("affine_coupling", xb, h)?;
        let (yb, logdet) = dispatch!("affine_coupling", 0, xb.device(), b => {
            b.affine_coupling(b.buf(xb.storage()), b.buf(h.storage()), d)
                .map(|(y, l)| (b.wrap(y), b.wrap(l)))
        })?;
        let backward = move |dy: Option<&Tensor>, dld: Option<&Tensor>, xb: &Tensor, h: &Tensor| {
            let dev = xb.device();
            let (dx, dh) = dispatch!("affine_coupling_backward", 0, dev, b => {
                b.affine_coupling_backward(
                    dy.map(|t| b.buf(t.storage())),
                    dld.map(|t| b.buf(t.storage())),
                    b.buf(xb.storage()),
                    b.buf(h.storage()),
                    d,
                )
                .map(|(dx, dh)| (dx.map(|x| b.wrap(x)), b.wrap(dh)))
            })?;
            let dx = dx.map(|s| Tensor::from_storage(s, xb.shape().to_vec(), dev.clone()));
            Ok(vec![
                dx,
                Some(Tensor::from_storage(dh, h.shape().to_vec(), dev.clone())),
            ])
        };
        let yb = Tensor::from_op(
            yb,
            xb.shape().to_vec(),
            "affine_coupling",
            &[xb, h],
            move |a| backward(Some(a.dy), None, &a.inputs[0], &a.inputs[1]),
        )?;
        let logdet = Tensor::from_op(
            logdet,
            vec![d.n],
            "affine_coupling_logdet",
            &[xb, h],
            move |a| backward(None, Some(a.dy), &a.inputs[0], &a.inputs[1]),
        )?;
        Ok((yb, logdet))
    }

    /// `Σ log N(z; mean, e^logs)` per image `[n]` over `z [n, c, H, W]`, with `(mean,
    /// logs)` the channels of `h [n, 2c, H, W]` paired as `pairing` says. See the module
    /// doc for the formulas and their gradients.
    pub fn gaussian_log_prob(z: &Tensor, h: &Tensor, pairing: Pairing) -> Result<Tensor> {
        let d = paired_dims("gaussian_log_prob", z, h)?;
        let lp = dispatch!("gaussian_log_prob", 0, z.device(), b => b.wrap_res(
            b.gaussian_log_prob(b.buf(z.storage()), b.buf(h.storage()), d, pairing)))?;
        Tensor::from_op(lp, vec![d.n], "gaussian_log_prob", &[z, h], move |a| {
            let (z, h) = (&a.inputs[0], &a.inputs[1]);
            let dev = z.device();
            let (dz, dh) = dispatch!("gaussian_log_prob_backward", 0, dev, b => {
                b.gaussian_log_prob_backward(
                    b.buf(a.dy.storage()),
                    b.buf(z.storage()),
                    b.buf(h.storage()),
                    d,
                    pairing,
                )
                .map(|(dz, dh)| (b.wrap(dz), b.wrap(dh)))
            })?;
            Ok(vec![
                Some(Tensor::from_storage(dz, z.shape().to_vec(), dev.clone())),
                Some(Tensor::from_storage(dh, h.shape().to_vec(), dev.clone())),
            ])
        })
    }

    /// Relu's VJP and the bias gradient beneath it, in one pass: for the output gradient
    /// `self` and relu's output `y`, both `[n, c, H, W]`, returns `(self · [y > 0]` `[n,
    /// c, H, W]`, its sum over images and pixels `[c])`. The backward pass of
    /// [`Tensor::conv2d_relu`] with a bias; the results are not differentiated (backward
    /// passes run without recording).
    pub fn relu_grad_bias(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        self.same_device("relu_grad_bias", y)?;
        let shape: [usize; 4] = match (self.shape(), y.shape()) {
            (&[n, c, h, w], s) if s == [n, c, h, w] => [n, c, h, w],
            (a, b) => {
                return Err(Error::shape(
                    "relu_grad_bias",
                    format!(
                        "expects two [n, c, H, W] tensors of one shape, got {} and {}",
                        shape::fmt(a),
                        shape::fmt(b)
                    ),
                ))
            }
        };
        let dev = self.device();
        let (dz, db) = dispatch!("relu_grad_bias", 0, dev, b => {
            b.relu_grad_bias(b.buf(self.storage()), b.buf(y.storage()), shape)
                .map(|(dz, db)| (b.wrap(dz), b.wrap(db)))
        })?;
        Ok((
            Tensor::from_storage(dz, shape.to_vec(), dev.clone()),
            Tensor::from_storage(db, vec![shape[1]], dev.clone()),
        ))
    }
}
