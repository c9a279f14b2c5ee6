//! Forward values of every op on small inputs whose results are worked out by hand in
//! the comments, on every device.

use approx::assert_abs_diff_eq;
use engine::device_test;
use engine::{Result, Tensor};

/// Asserts two float slices agree within `tol`.
fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_abs_diff_eq!(*g, *w, epsilon = tol);
    }
}

device_test!(fn unary_values(dev) {
    let x = Tensor::from_slice(&[-2.0, 0.0, 0.5, 3.0], &[4], dev)?;
    close(&x.neg()?.to_vec()?, &[2.0, 0.0, -0.5, -3.0], 0.0);
    close(&x.relu()?.to_vec()?, &[0.0, 0.0, 0.5, 3.0], 0.0);
    // leaky_relu with slope 0.1: -2 · 0.1 = -0.2 on the negative side, the rest kept.
    close(&x.leaky_relu(0.1)?.to_vec()?, &[-0.2, 0.0, 0.5, 3.0], 1e-7);
    close(&x.heaviside()?.to_vec()?, &[0.0, 0.0, 1.0, 1.0], 0.0);
    close(&x.abs()?.to_vec()?, &[2.0, 0.0, 0.5, 3.0], 0.0);
    close(&x.square()?.to_vec()?, &[4.0, 0.0, 0.25, 9.0], 1e-6);
    close(&x.scale(2.0)?.add_scalar(1.0)?.to_vec()?, &[-3.0, 1.0, 2.0, 7.0], 1e-6);
    // e^-2 = 0.135335, e^0.5 = 1.648721, e^3 = 20.085537
    close(&x.exp()?.to_vec()?, &[0.135_335, 1.0, 1.648_721, 20.085_537], 1e-5);
    // sigmoid(-2) = 1/(1+e^2) = 0.119203, sigmoid(0.5) = 0.622459, sigmoid(3) = 0.952574
    close(&x.sigmoid()?.to_vec()?, &[0.119_203, 0.5, 0.622_459, 0.952_574], 1e-6);
    // softplus(x) = ln(1 + e^x): ln(1.135335) = 0.126928, ln 2, ln(2.648721) = 0.974077, ln(21.085537) = 3.048587
    close(&x.softplus()?.to_vec()?, &[0.126_928, std::f32::consts::LN_2, 0.974_077, 3.048_587], 1e-5);
    // tanh(-2) = -0.964028, tanh(0.5) = 0.462117, tanh(3) = 0.995055
    close(&x.tanh()?.to_vec()?, &[-0.964_028, 0.0, 0.462_117, 0.995_055], 1e-6);
    let p = Tensor::from_slice(&[0.25, 1.0, 4.0], &[3], dev)?;
    close(&p.sqrt()?.to_vec()?, &[0.5, 1.0, 2.0], 1e-6);
    close(&p.recip()?.to_vec()?, &[4.0, 1.0, 0.25], 1e-6);
    close(&p.log()?.to_vec()?, &[-1.386_294, 0.0, 1.386_294], 1e-6);
    close(&p.powf(1.5)?.to_vec()?, &[0.125, 1.0, 8.0], 1e-5);
    Ok(())
});

device_test!(fn extreme_inputs_stay_finite(dev) {
    // sigmoid(±100) saturates to 1 and 0; softplus(100) = 100, softplus(-100) = e^-100 ≈ 0.
    let x = Tensor::from_slice(&[-100.0, 100.0], &[2], dev)?;
    close(&x.sigmoid()?.to_vec()?, &[0.0, 1.0], 1e-7);
    close(&x.softplus()?.to_vec()?, &[0.0, 100.0], 1e-5);
    Ok(())
});

device_test!(fn binary_broadcasting_values(dev) {
    // [[1, 2, 3], [4, 5, 6]] op [10, 20, 30] (a row) and op [[1], [2]] (a column).
    let a = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], dev)?;
    let row = Tensor::from_slice(&[10.0, 20.0, 30.0], &[3], dev)?;
    let col = Tensor::from_slice(&[1.0, 2.0], &[2, 1], dev)?;
    close(&a.add(&row)?.to_vec()?, &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0], 0.0);
    close(&a.sub(&col)?.to_vec()?, &[0.0, 1.0, 2.0, 2.0, 3.0, 4.0], 0.0);
    close(&a.mul(&col)?.to_vec()?, &[1.0, 2.0, 3.0, 8.0, 10.0, 12.0], 0.0);
    close(&row.div(&a)?.to_vec()?, &[10.0, 10.0, 10.0, 2.5, 4.0, 5.0], 1e-6);
    // A column against a row broadcasts both ways: [2, 1] + [3] -> [2, 3].
    close(&col.add(&row)?.to_vec()?, &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0], 0.0);
    close(&a.maximum(&Tensor::scalar(3.5, dev)?)?.to_vec()?, &[3.5, 3.5, 3.5, 4.0, 5.0, 6.0], 0.0);
    Ok(())
});

device_test!(fn reduction_values(dev) {
    // x[i, j, k] = 12i + 4j + k over shape [2, 3, 4].
    let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let x = Tensor::from_slice(&data, &[2, 3, 4], dev)?;
    // Σ over j and k of row i: 16·... -> i=0: Σ 0..12 = 66, i=1: Σ 12..24 = 210.
    close(&x.sum(&[1, 2], false)?.to_vec()?, &[66.0, 210.0], 0.0);
    // Σ over i: x[0, j, k] + x[1, j, k] = 2(4j + k) + 12.
    let s0 = x.sum(&[0], true)?;
    assert_eq!(s0.shape(), &[1, 3, 4]);
    close(&s0.to_vec()?[..4], &[12.0, 14.0, 16.0, 18.0], 0.0);
    // Mean over k of row (i, j) = 12i + 4j + 1.5.
    close(&x.mean(&[2], false)?.to_vec()?, &[1.5, 5.5, 9.5, 13.5, 17.5, 21.5], 1e-6);
    assert_eq!(x.sum_all()?.item()?, 276.0); // Σ 0..24 = 23·24/2
    close(&x.max(&[0, 2], false)?.to_vec()?, &[15.0, 19.0, 23.0], 0.0);
    Ok(())
});

device_test!(fn matmul_values(dev) {
    // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]].
    let a = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[2, 2], dev)?;
    let b = Tensor::from_slice(&[5.0, 6.0, 7.0, 8.0], &[2, 2], dev)?;
    close(&a.matmul(&b)?.to_vec()?, &[19.0, 22.0, 43.0, 50.0], 0.0);
    // Batched with a shared right operand: batch 1 is 2·a, so its product doubles.
    let ab = Tensor::concat(&[&a.reshape(&[1, 2, 2])?, &a.scale(2.0)?.reshape(&[1, 2, 2])?], 0)?;
    close(&ab.matmul(&b)?.to_vec()?, &[19.0, 22.0, 43.0, 50.0, 38.0, 44.0, 86.0, 100.0], 0.0);
    Ok(())
});

device_test!(fn conv2d_values(dev) {
    // A 3x3 box filter of ones over a 3x3 image of ones with zero padding counts each
    // pixel's in-image neighbours: 4 at corners, 6 at edges, 9 in the centre; bias +1.
    let x = Tensor::ones(&[1, 1, 3, 3], dev)?;
    let w = Tensor::ones(&[1, 1, 3, 3], dev)?;
    let b = Tensor::ones(&[1], dev)?;
    close(&x.conv2d(&w, Some(&b))?.to_vec()?, &[5.0, 7.0, 5.0, 7.0, 10.0, 7.0, 5.0, 7.0, 5.0], 0.0);
    // A 1x1 convolution mixes channels per pixel: out = 2·c0 - c1.
    let x = Tensor::from_slice(&[1.0, 2.0, 10.0, 20.0], &[1, 2, 1, 2], dev)?;
    let w = Tensor::from_slice(&[2.0, -1.0], &[1, 2, 1, 1], dev)?;
    close(&x.conv2d(&w, None)?.to_vec()?, &[-8.0, -16.0], 0.0);
    Ok(())
});

device_test!(fn layout_values(dev) {
    let x = Tensor::from_slice(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 3], dev)?;
    close(&x.transpose(0, 1)?.to_vec()?, &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0], 0.0);
    close(&x.slice(1, 1, 2)?.to_vec()?, &[1.0, 2.0, 4.0, 5.0], 0.0);
    close(&x.gather(1, &[2, 0, 1])?.to_vec()?, &[2.0, 0.0, 1.0, 5.0, 3.0, 4.0], 0.0);
    let y = Tensor::concat(&[&x, &x.scale(10.0)?], 0)?;
    assert_eq!(y.shape(), &[4, 3]);
    close(&y.to_vec()?[6..], &[0.0, 10.0, 20.0, 30.0, 40.0, 50.0], 0.0);
    // Squeeze's view: [1, 1, 2, 2] -> [1, 1, 1, 2, 1, 2] -> permute to channel-major.
    let img = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2], dev)?;
    let sq = img.reshape(&[1, 1, 1, 2, 1, 2])?.permute(&[0, 1, 3, 5, 2, 4])?.reshape(&[1, 4, 1, 1])?;
    close(&sq.to_vec()?, &[1.0, 2.0, 3.0, 4.0], 0.0);
    Ok(())
});

device_test!(fn random_fills_are_seeded_and_have_the_right_moments(dev) {
    let n = 100_000;
    let u = Tensor::rand_uniform(&[n], -1.0, 3.0, 42, dev)?.to_vec()?;
    assert_eq!(u, Tensor::rand_uniform(&[n], -1.0, 3.0, 42, dev)?.to_vec()?);
    assert_ne!(u, Tensor::rand_uniform(&[n], -1.0, 3.0, 43, dev)?.to_vec()?);
    assert!(u.iter().all(|&v| (-1.0..3.0).contains(&v)));
    let mean = u.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    assert!((mean - 1.0).abs() < 0.02, "uniform mean {mean}"); // sd of mean = 1.155/√n ≈ 0.004
    let z = Tensor::randn(&[n], 2.0, 0.5, 7, dev)?.to_vec()?;
    let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    assert!((mean - 2.0).abs() < 0.01, "normal mean {mean}"); // sd of mean = 0.0016
    assert!((var - 0.25).abs() < 0.01, "normal variance {var}"); // sd of var ≈ 0.0011
    Ok(())
});

device_test!(fn adam_matches_the_formula(dev) {
    use engine::backend::{AdamKind, AdamUpdate};
    // One Adam step from m = v = 0: m = 0.1 g, v = 0.001 g², bias-corrected m̂ = g,
    // v̂ = g², so p -= lr · g / (|g| + eps) ≈ lr · sign(g).
    let p = Tensor::from_slice(&[1.0, 1.0], &[2], dev)?;
    let g = Tensor::from_slice(&[0.5, -2.0], &[2], dev)?;
    let (m, v) = (Tensor::zeros(&[2], dev)?, Tensor::zeros(&[2], dev)?);
    let step = AdamUpdate { kind: AdamKind::Adam, lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1 };
    p.adam_update(&g, &m, &v, &step)?;
    close(&p.to_vec()?, &[0.9, 1.1], 1e-6);
    close(&m.to_vec()?, &[0.05, -0.2], 1e-7);
    // 1 - β2 is not exact in f32 (relative error ~5e-5), hence the 1e-7 tolerance.
    close(&v.to_vec()?, &[0.000_25, 0.004], 1e-7);
    // Adamax from m = 0.05, u = |g|: second step with g = 0.5:
    // m = 0.9·0.05 + 0.1·0.5 = 0.095, u = max(0.999·0.5, 0.5 + 0) = 0.5,
    // p -= 0.1 / (1 - 0.81) · 0.095 / 0.5 = 0.1
    let p = Tensor::from_slice(&[1.0], &[1], dev)?;
    let g = Tensor::from_slice(&[0.5], &[1], dev)?;
    let (m, u) = (Tensor::from_slice(&[0.05], &[1], dev)?, Tensor::from_slice(&[0.5], &[1], dev)?);
    let step = AdamUpdate { kind: AdamKind::Adamax, eps: 0.0, step: 2, ..step };
    p.adam_update(&g, &m, &u, &step)?;
    close(&p.to_vec()?, &[0.9], 1e-6);
    close(&m.to_vec()?, &[0.095], 1e-7);
    close(&u.to_vec()?, &[0.5], 1e-7);
    Ok(())
});

#[test]
fn ndarray_round_trip() -> Result<()> {
    // Tensors round-trip through ndarray unchanged.
    let dev = engine::Device::Cpu;
    let a = ndarray::Array::from_shape_vec((2, 3), vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let t = Tensor::from_ndarray(&a.t(), &dev)?; // a transposed, non-contiguous view
    assert_eq!(t.shape(), &[3, 2]);
    assert_eq!(t.to_vec()?, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(t.to_ndarray()?, a.t().into_dyn());
    Ok(())
}
