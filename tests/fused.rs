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

device_test!(fn relu_grad_bias_matches_its_composition(dev) {
    // Small and large (the CPU's parallel paths: over images, and over channels when
    // there is one image), and the edges where a reduced axis has extent 1.
    // Images or channels that do not split evenly into the CPU's parallel parts, too.
    let shapes = [
        [2, 16, 8, 8],
        [16, 32, 16, 16],
        [7, 32, 16, 16],
        [1, 64, 32, 32],
        [1, 67, 32, 32],
        [3, 1, 5, 7],
        [5, 3, 1, 1],
        [1, 1, 1, 1],
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        let seed = 40 + 2 * i as u64;
        // A relu's output: half its elements exactly zero.
        let y = Tensor::randn(&shape, 0.0, 1.0, seed, dev)?.relu()?;
        let dy = Tensor::randn(&shape, 0.0, 1.0, seed + 1, dev)?;
        let (dz, db) = dy.relu_grad_bias(&y)?;
        let dz_ref = dy.relu_grad(&y)?;
        let db_ref = dz_ref.sum(&[0, 2, 3], false)?;
        // One pass instead of two, the same arithmetic in the same order: the same bits.
        assert_close("dz", &dz, &dz_ref, 0.0)?;
        assert_close("db", &db, &db_ref, 0.0)?;
    }
    let a = Tensor::zeros(&[2, 3, 4, 4], dev)?;
    let err = a.relu_grad_bias(&Tensor::zeros(&[2, 3, 4, 5], dev)?).unwrap_err();
    assert!(err.to_string().contains("relu_grad_bias"), "{err}");
    assert!(a.reshape(&[2, 3, 16])?.relu_grad_bias(&a.reshape(&[2, 3, 16])?).is_err());
    Ok(())
});

#[test]
fn relu_grad_bias_composed_gives_the_cpu_kernel_bits() {
    // Device::CoreCpu runs the default composition on the CPU's core kernels: the fused
    // CPU kernel must give its bits (the training run's losses depend on them).
    for shape in [
        [16, 32, 16, 16],
        [7, 32, 16, 16],
        [1, 67, 32, 32],
        [3, 5, 7, 9],
    ] {
        let run = |dev: &Device| -> Result<(Vec<f32>, Vec<f32>)> {
            let y = Tensor::randn(&shape, 0.0, 1.0, 7, dev)?.relu()?;
            let dy = Tensor::randn(&shape, 0.0, 1.0, 8, dev)?;
            let (dz, db) = dy.relu_grad_bias(&y)?;
            Ok((dz.to_vec()?, db.to_vec()?))
        };
        let (fused, composed) = (run(&Device::Cpu).unwrap(), run(&Device::CoreCpu).unwrap());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused.0), bits(&composed.0), "dz of {shape:?}");
        assert_eq!(bits(&fused.1), bits(&composed.1), "db of {shape:?}");
    }
}
