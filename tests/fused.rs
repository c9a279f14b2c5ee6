//! The fused Glow ops against the chains of ordinary ops they replace, on every device:
//! the same values and the same gradients (engine/src/ops/fused.rs has the formulas).

use engine::backend::fused::Pairing;
use engine::{Device, Result, Tensor};
use glow_rs::device_test;

/// Largest difference relative to the larger magnitude, over two tensors' values.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) -> Result<()> {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    for (i, (g, w)) in got.to_vec()?.iter().zip(want.to_vec()?).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: fused {g}, composed {w}"
        );
    }
    Ok(())
}

/// `(h[:, 0::2], h[:, 1::2])` by reshape and slice.
fn interleaved(h: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = h.shape().to_vec();
    let v = h.reshape(&[s[0], s[1] / 2, 2, s[2], s[3]])?;
    let half = [s[0], s[1] / 2, s[2], s[3]];
    Ok((
        v.slice(2, 0, 1)?.reshape(&half)?,
        v.slice(2, 1, 1)?.reshape(&half)?,
    ))
}

fn inputs(dev: &Device, c: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let a = Tensor::randn(&[4, c, 8, 8], 0.0, 1.0, seed, dev)?.with_grad();
    let h = Tensor::randn(&[4, 2 * c, 8, 8], 0.0, 1.5, seed + 1, dev)?.with_grad();
    Ok((a, h))
}

device_test!(fn affine_coupling_matches_its_composition(dev) {
    let (xb, h) = inputs(dev, 6, 1)?;
    let (yb, logdet) = Tensor::affine_coupling(&xb, &h)?;
    // The chain glow's coupling ran before the fused op.
    let (shift, raw) = interleaved(&h)?;
    let logit = raw.add_scalar(2.0)?;
    let yb_ref = xb.add(&shift)?.mul(&logit.sigmoid()?)?;
    let logdet_ref = logit.neg()?.softplus()?.neg()?.sum(&[1, 2, 3], false)?;
    assert_close("yb", &yb, &yb_ref, 1e-5)?;
    assert_close("logdet", &logdet, &logdet_ref, 1e-5)?;

    // One loss through both outputs, so both backward paths meet in dh.
    let wy = Tensor::randn(yb.shape(), 0.0, 1.0, 3, dev)?;
    let wl = Tensor::randn(&[4], 0.0, 1.0, 4, dev)?;
    let loss = |yb: &Tensor, ld: &Tensor| yb.mul(&wy)?.sum_all()?.add(&ld.mul(&wl)?.sum_all()?);
    let g = loss(&yb, &logdet)?.backward()?;
    let g_ref = loss(&yb_ref, &logdet_ref)?.backward()?;
    assert_close("dxb", g.get(&xb).unwrap(), g_ref.get(&xb).unwrap(), 1e-5)?;
    assert_close("dh", g.get(&h).unwrap(), g_ref.get(&h).unwrap(), 1e-5)
});

device_test!(fn conv2d_relu_matches_its_composition(dev) {
    // A 3x3 on the direct kernels and a wide 1x1 on 8x8, which the CPU runs as a GEMM.
    for (c_in, c_out, k, seed) in [(6, 16, 3, 10), (128, 128, 1, 20)] {
        let x = Tensor::randn(&[2, c_in, 8, 8], 0.0, 1.0, seed, dev)?.with_grad();
        let w = Tensor::randn(&[c_out, c_in, k, k], 0.0, 0.1, seed + 1, dev)?.with_grad();
        let b = Tensor::randn(&[c_out], 0.0, 0.5, seed + 2, dev)?.with_grad();
        let y = x.conv2d_relu(&w, Some(&b))?;
        let y_ref = x.conv2d(&w, Some(&b))?.relu()?;
        // The same convolution on the same device: only the relu moved.
        assert_close("y", &y, &y_ref, 0.0)?;
        let wy = Tensor::randn(y.shape(), 0.0, 1.0, seed + 3, dev)?;
        let g = y.mul(&wy)?.sum_all()?.backward()?;
        let g_ref = y_ref.mul(&wy)?.sum_all()?.backward()?;
        for (name, t) in [("dx", &x), ("dw", &w), ("db", &b)] {
            assert_close(name, g.get(t).unwrap(), g_ref.get(t).unwrap(), 0.0)?;
        }
    }
    Ok(())
});

device_test!(fn gaussian_log_prob_matches_its_composition(dev) {
    for pairing in [Pairing::Interleaved, Pairing::Halves] {
        let (z, h) = inputs(dev, 6, 5)?;
        let (mean, logs) = match pairing {
            Pairing::Interleaved => interleaved(&h)?,
            Pairing::Halves => (h.slice(1, 0, 6)?, h.slice(1, 6, 6)?),
        };
        let lp = Tensor::gaussian_log_prob(&z, &h, pairing)?;
        // The composition glow::gaussian::log_prob computes.
        let lp_ref = glow::gaussian::log_prob(&mean, &logs, &z)?;
        // Sums of 384 terms of size ~1: relative 1e-5 of the total.
        assert_close("log p", &lp, &lp_ref, 1e-5)?;
        let w = Tensor::randn(&[4], 0.0, 1.0, 7, dev)?;
        let g = lp.mul(&w)?.sum_all()?.backward()?;
        let g_ref = lp_ref.mul(&w)?.sum_all()?.backward()?;
        assert_close("dz", g.get(&z).unwrap(), g_ref.get(&z).unwrap(), 1e-5)?;
        assert_close("dh", g.get(&h).unwrap(), g_ref.get(&h).unwrap(), 1e-5)?;
    }
    Ok(())
});
