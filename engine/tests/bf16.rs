//! The CPU device's bf16 convolutions (`engine::precision`) against the reference device:
//! forward, input gradient and weight gradient, at odd sizes, 1x1 and 3x3. A pass takes
//! the bf16 kernels where its product has 64 rows or more (output channels for the
//! forward pass and the weight gradient, input channels for the input gradient) and, for
//! the gradients, the image has 64 pixels or more: the rule of `cpu/bf16.rs`'s `pays`;
//! the narrower forward passes here check that they stay f32.
//!
//! The tolerance is derived, not tuned: rounding both operands to bf16 (unit roundoff
//! 2⁻⁸) errs by at most `2⁻⁷ + 2⁻¹⁶` of each product's size, and the `f32` sum of `K` of
//! them by `K · 2⁻²³` more, so every output is within `(2⁻⁷ + 2⁻¹⁶ + K · 2⁻²³) · Σ |a|·|b|`
//! of the exact
//! value, where the sum of sizes is the same convolution of the absolute values (computed
//! on the reference device, in f64) and `K` the length of the sum.
//!
//! On a CPU without `avx512bf16` the setting computes in f32; the test then checks that,
//! and says so.

use engine::precision::{self, MatmulPrecision};
use engine::{Device, Result, Tensor};

/// `(n, c_in, c_out, h, w, k)`.
const SHAPES: [(usize, usize, usize, usize, usize, usize); 10] = [
    (2, 3, 5, 7, 6, 3),
    // Odd sizes of 64 pixels or more, so that the gradient passes take bf16 too.
    (2, 70, 66, 9, 11, 3),
    (3, 96, 64, 9, 7, 3),
    (2, 6, 128, 16, 16, 3),
    (3, 128, 12, 8, 8, 3),
    (2, 128, 128, 16, 16, 1),
    (5, 64, 96, 5, 9, 1),
    (3, 96, 64, 7, 5, 3),
    (6, 512, 512, 4, 4, 1),
    (2, 70, 66, 3, 3, 3),
];

/// Whether the CPU device runs the forward pass of a convolution into `c_out` channels
/// in bf16 when asked.
fn wide(c_out: usize) -> bool {
    c_out >= 64
}

/// Checks `got` (CPU) against `want` (reference) within `(2⁻⁷ + 2⁻¹⁶ + k·2⁻²³) · scale`.
fn within(what: &str, got: &Tensor, want: &Tensor, scale: &Tensor, k: usize) -> Result<()> {
    let (got, want, scale) = (got.to_vec()?, want.to_vec()?, scale.to_vec()?);
    let factor = 2f64.powi(-7) + 2f64.powi(-16) + k as f64 * 2f64.powi(-23);
    for (i, ((g, w), s)) in got.iter().zip(&want).zip(&scale).enumerate() {
        // The reference's own f32 output rounding: half an ulp of the value.
        let bound = factor * f64::from(*s) + f64::from(w.abs()) * 2f64.powi(-24) + 1e-7;
        let err = f64::from(g - w).abs();
        assert!(
            err <= bound,
            "{what} [{i}]: {g} vs {w}, error {err} > {bound}"
        );
    }
    Ok(())
}

#[test]
fn bf16_convolutions_are_within_their_bound_of_the_reference() -> Result<()> {
    let effective = precision::set_matmul_precision(MatmulPrecision::Bf16);
    if effective != MatmulPrecision::Bf16 {
        eprintln!("note: this CPU has no avx512bf16: --matmul-precision bf16 computes in f32 here");
    }
    for (i, &(n, c_in, c_out, h, w, k)) in SHAPES.iter().enumerate() {
        let seed = 10 * i as u64;
        let make =
            |shape: &[usize], s: u64| Tensor::rand_uniform(shape, -1.0, 1.0, s, &Device::Cpu);
        let (x, wt, b) = (
            make(&[n, c_in, h, w], seed)?,
            make(&[c_out, c_in, k, k], seed + 1)?,
            make(&[c_out], seed + 2)?,
        );
        let g = make(&[n, c_out, h, w], seed + 3)?;
        let leaf =
            |t: &Tensor, d: &Device| -> Result<Tensor> { Ok(t.to_device(d)?.detach().with_grad()) };

        // The CPU device in bf16 (forward inside `reduced`, backward outside it: the op
        // remembers).
        let (xc, wc) = (leaf(&x, &Device::Cpu)?, leaf(&wt, &Device::Cpu)?);
        let y = precision::reduced(|| xc.conv2d(&wc, Some(&b)))?;
        let grads = y.mul(&g)?.sum_all()?.backward()?;
        let (dx, dw) = (
            grads.get(&xc).unwrap().clone(),
            grads.get(&wc).unwrap().clone(),
        );

        // The reference, and the same sums over absolute values for the bound.
        let r = Device::Reference;
        let (xr, wr) = (leaf(&x, &r)?, leaf(&wt, &r)?);
        let yr = xr.conv2d(&wr, Some(&b.to_device(&r)?))?;
        let gr_ = yr.mul(&g.to_device(&r)?)?.sum_all()?.backward()?;
        let (xa, wa) = (leaf(&x.abs()?, &r)?, leaf(&wt.abs()?, &r)?);
        let ya = xa.conv2d(&wa, None)?;
        let ga = ya.mul(&g.abs()?.to_device(&r)?)?.sum_all()?.backward()?;

        let what = format!("n{n} {c_in}->{c_out} {h}x{w} k{k}");
        within(&format!("{what} forward"), &y, &yr, &ya, c_in * k * k)?;
        within(
            &format!("{what} dx"),
            &dx,
            gr_.get(&xr).unwrap(),
            ga.get(&xa).unwrap(),
            c_out * k * k,
        )?;
        within(
            &format!("{what} dw"),
            &dw,
            gr_.get(&wr).unwrap(),
            ga.get(&wa).unwrap(),
            n * h * w,
        )?;

        // Outside `reduced` the setting changes nothing: bit for bit the f32 kernels.
        let plain = xc.conv2d(&wc, Some(&b))?.to_vec()?;
        precision::set_matmul_precision(MatmulPrecision::F32);
        let f32_only = xc.conv2d(&wc, Some(&b))?.to_vec()?;
        precision::set_matmul_precision(MatmulPrecision::Bf16);
        assert_eq!(plain, f32_only, "{what}: outside reduced code");
        // And inside it, the products really were rounded where the CPU has bf16 and
        // the channels are wide.
        assert_eq!(
            y.to_vec()? != plain,
            effective == MatmulPrecision::Bf16 && wide(c_out),
            "{what}: the bf16 path ran exactly where it should"
        );
    }
    Ok(())
}
