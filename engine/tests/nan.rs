//! NaN and infinities through every op family, on every device: NaN comes out wherever
//! IEEE arithmetic and PyTorch give NaN, and nowhere else.
//!
//! The reference device defines these semantics (`engine/src/reference/`); the CPU and
//! Vulkan devices must match it. The rules, as in IEEE 754 and PyTorch:
//! - an arithmetic op with a NaN operand gives NaN; so do `0 · ∞`, `∞ − ∞`, `0 / 0`,
//!   `∞ / ∞`, `log` and `sqrt` of a negative number;
//! - `relu`, `maximum` and the `max` reduction return NaN when any operand is NaN
//!   (`f32::max` would return the other operand and hide it);
//! - `heaviside(NaN) = 0`, because `NaN > 0` is false (PyTorch's `(x > 0).float()` and
//!   `heaviside`): `step` is a gate, and the value it gates carries the NaN;
//! - a reduction is NaN only where the reduced elements include a NaN, and a convolution
//!   only where its receptive field does.
//!
//! Expected values are written out per case; a finite expectation is compared within a
//! relative `1e-5`.

use engine::backend::fused::Pairing;
use engine::backend::{AdamKind, AdamUpdate};
use engine::device_test;
use engine::{Device, Result, Tensor};

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

/// Whether `got` is `want`: both NaN, the same infinity, or finite and close.
fn same(got: f32, want: f32) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= 1e-5 * (1.0 + want.abs())
}

/// Asserts `t` holds `want`, element by element (see [`same`]).
fn expect(what: &str, t: &Tensor, want: &[f32]) -> Result<()> {
    let got = t.to_vec()?;
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| !same(got[i], want[i])).collect();
    assert!(
        bad.is_empty(),
        "{what}: got {got:?}, want {want:?} (differ at {bad:?})"
    );
    Ok(())
}

/// Asserts that `t` is NaN exactly at the flat indices where `nan(i)` holds.
fn expect_nan_at(what: &str, t: &Tensor, nan: impl Fn(usize) -> bool) -> Result<()> {
    let got = t.to_vec()?;
    for (i, v) in got.iter().enumerate() {
        match (nan(i), v.is_nan()) {
            (true, false) => panic!("{what}[{i}]: want NaN, got {v}"),
            (false, true) => panic!("{what}[{i}]: want a number, got NaN"),
            _ => {}
        }
    }
    Ok(())
}

/// `values` with `NAN` written at the flat indices `at`.
fn with_nan(mut values: Vec<f32>, at: &[usize]) -> Vec<f32> {
    for &i in at {
        values[i] = NAN;
    }
    values
}

/// `len` varied finite values in `[lo, hi)`.
fn data(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    engine::testing::test_data(len, seed, lo, hi)
}

/// The row-major flat index of `at` in `shape`.
fn flat(shape: &[usize], at: &[usize]) -> usize {
    shape.iter().zip(at).fold(0, |acc, (&e, &i)| acc * e + i)
}

/// The multi-index of flat index `i` in `shape`.
fn unflat(shape: &[usize], mut i: usize) -> Vec<usize> {
    let mut at = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        at[d] = i % shape[d];
        i /= shape[d];
    }
    at
}

device_test!(fn unary_maps(dev) {
    // Inputs: NaN, +∞, −∞, −1, 0, 2.
    let x = Tensor::from_slice(&[NAN, INF, -INF, -1.0, 0.0, 2.0], &[6], dev)?;
    let f = |v: f64| v as f32;
    let sigmoid = |v: f64| f(1.0 / (1.0 + (-v).exp()));
    let softplus = |v: f64| f(v.exp().ln_1p());
    expect("neg", &x.neg()?, &[NAN, -INF, INF, 1.0, 0.0, -2.0])?;
    expect("exp", &x.exp()?, &[NAN, INF, 0.0, f((-1f64).exp()), 1.0, f(2f64.exp())])?;
    // ln of a negative number is NaN, ln 0 = −∞.
    expect("log", &x.log()?, &[NAN, INF, NAN, NAN, -INF, f(2f64.ln())])?;
    expect("sigmoid", &x.sigmoid()?, &[NAN, 1.0, 0.0, sigmoid(-1.0), 0.5, sigmoid(2.0)])?;
    expect("softplus", &x.softplus()?, &[NAN, INF, 0.0, softplus(-1.0), f(2f64.ln()), softplus(2.0)])?;
    // relu(NaN) = NaN: the case whose loss let a damaged checkpoint's NaN vanish.
    expect("relu", &x.relu()?, &[NAN, INF, 0.0, 0.0, 0.0, 2.0])?;
    expect("leaky_relu", &x.leaky_relu(0.1)?, &[NAN, INF, -INF, -0.1, 0.0, 2.0])?;
    // NaN > 0 is false, so the gate is closed (see the module doc).
    expect("heaviside", &x.heaviside()?, &[0.0, 1.0, 0.0, 0.0, 0.0, 1.0])?;
    expect("sqrt", &x.sqrt()?, &[NAN, INF, NAN, NAN, 0.0, f(2f64.sqrt())])?;
    expect("recip", &x.recip()?, &[NAN, 0.0, 0.0, -1.0, INF, 0.5])?;
    expect("square", &x.square()?, &[NAN, INF, INF, 1.0, 0.0, 4.0])?;
    expect("abs", &x.abs()?, &[NAN, INF, INF, 1.0, 0.0, 2.0])?;
    expect("tanh", &x.tanh()?, &[NAN, 1.0, -1.0, f((-1f64).tanh()), 0.0, f(2f64.tanh())])?;
    expect("scale", &x.scale(2.0)?, &[NAN, INF, -INF, -2.0, 0.0, 4.0])?;
    // ∞ · 0 is NaN.
    expect("scale by 0", &x.scale(0.0)?, &[NAN, NAN, NAN, 0.0, 0.0, 0.0])?;
    expect("add_scalar", &x.add_scalar(1.0)?, &[NAN, INF, -INF, 0.0, 1.0, 3.0])?;
    expect("add_scalar ∞", &x.add_scalar(-INF)?, &[NAN, NAN, -INF, -INF, -INF, -INF])?;
    expect("powf 2", &x.powf(2.0)?, &[NAN, INF, INF, 1.0, 0.0, 4.0])?;
    expect("powf 3", &x.powf(3.0)?, &[NAN, INF, -INF, -1.0, 0.0, 8.0])?;
    // x^0 = 1 for every x, NaN included (IEEE pow, and torch.pow).
    expect("powf 0", &x.powf(0.0)?, &[1.0; 6])?;
    Ok(())
});

device_test!(fn binary_ops(dev) {
    let a = Tensor::from_slice(&[NAN, 1.0, NAN, INF, INF, -INF, 0.0, 0.0, 1.0], &[9], dev)?;
    let b = Tensor::from_slice(&[1.0, NAN, NAN, INF, -INF, 1.0, 0.0, INF, 0.0], &[9], dev)?;
    expect("add", &a.add(&b)?, &[NAN, NAN, NAN, INF, NAN, -INF, 0.0, INF, 1.0])?;
    expect("sub", &a.sub(&b)?, &[NAN, NAN, NAN, NAN, INF, -INF, 0.0, -INF, 1.0])?;
    expect("mul", &a.mul(&b)?, &[NAN, NAN, NAN, INF, -INF, -INF, 0.0, NAN, 0.0])?;
    expect("div", &a.div(&b)?, &[NAN, NAN, NAN, NAN, NAN, -INF, NAN, 0.0, INF])?;
    expect("maximum", &a.maximum(&b)?, &[NAN, NAN, NAN, INF, INF, 1.0, 0.0, INF, 1.0])?;
    expect("maximum, swapped", &b.maximum(&a)?, &[NAN, NAN, NAN, INF, INF, 1.0, 0.0, INF, 1.0])?;
    // a · [b > 0]: a product, so NaN · 0 and ∞ · 0 are NaN.
    expect("relu_grad", &a.relu_grad(&b)?, &[NAN, 0.0, NAN, INF, NAN, -INF, 0.0, 0.0, 0.0])?;
    Ok(())
});

device_test!(fn broadcast_maximum(dev) {
    // Each broadcasting path: a scalar either side, a row, a column.
    let a = Tensor::from_slice(&[NAN, 1.0, -2.0, 3.0, NAN, 5.0], &[2, 3], dev)?;
    let scalar = Tensor::from_slice(&[0.0], &[1], dev)?;
    expect("a max 0", &a.maximum(&scalar)?, &[NAN, 1.0, 0.0, 3.0, NAN, 5.0])?;
    expect("0 max a", &scalar.maximum(&a)?, &[NAN, 1.0, 0.0, 3.0, NAN, 5.0])?;
    let nan_scalar = Tensor::from_slice(&[NAN], &[1], dev)?;
    expect("a max NaN", &a.maximum(&nan_scalar)?, &[NAN; 6])?;
    let row = Tensor::from_slice(&[2.0, NAN, 0.0], &[3], dev)?;
    expect("a max row", &a.maximum(&row)?, &[NAN, NAN, 0.0, 3.0, NAN, 5.0])?;
    let col = Tensor::from_slice(&[NAN, 4.0], &[2, 1], dev)?;
    expect("a max col", &a.maximum(&col)?, &[NAN, NAN, NAN, 4.0, NAN, 5.0])?;
    Ok(())
});

device_test!(fn reductions_over_an_axis_with_one_nan(dev) {
    // [2, 3, 4] with one NaN at [1, 2, 1] and one +∞ at [0, 1, 3].
    let shape = [2, 3, 4];
    let mut v = with_nan(data(24, 1, -1.0, 1.0), &[flat(&shape, &[1, 2, 1])]);
    v[flat(&shape, &[0, 1, 3])] = INF;
    let x = Tensor::from_slice(&v, &shape, dev)?;
    // Over axis 2: output [2, 3]; NaN only at [1, 2], +∞ at [0, 1].
    for (what, y) in [
        ("sum", x.sum(&[2], false)?),
        ("mean", x.mean(&[2], false)?),
        ("max", x.max(&[2], false)?),
    ] {
        let got = y.to_vec()?;
        for (i, g) in got.iter().enumerate() {
            match i {
                5 => assert!(g.is_nan(), "{what} over axis 2 [{i}]: want NaN, got {g}"),
                1 => assert_eq!(*g, INF, "{what} over axis 2 [{i}]"),
                _ => assert!(g.is_finite(), "{what} over axis 2 [{i}]: got {g}"),
            }
        }
    }
    // Over axis 0: output [3, 4]; NaN only at [2, 1]. Over axes {0, 2}: only at [2].
    for (what, y) in [("sum", x.sum(&[0], false)?), ("max", x.max(&[0], false)?)] {
        expect_nan_at(&format!("{what} over axis 0"), &y, |i| i == 9)?;
    }
    expect_nan_at("max over {0, 2}", &x.max(&[0, 2], false)?, |i| i == 2)?;
    assert!(x.sum_all()?.item()?.is_nan());
    assert!(x.max(&[0, 1, 2], false)?.item()?.is_nan());
    // A NaN first in its run and a NaN last in its run (a fold that keeps the other
    // operand loses one of the two).
    let x = Tensor::from_slice(&[NAN, 1.0, 2.0, 3.0, 4.0, NAN], &[2, 3], dev)?;
    expect("max, NaN first and last", &x.max(&[1], false)?, &[NAN, NAN])?;
    expect("max over rows", &x.max(&[0], false)?, &[NAN, 4.0, NAN])?;
    Ok(())
});

device_test!(fn long_reductions_with_one_nan(dev) {
    // Long enough for the CPU's parallel paths (both a kept and a reduced outer axis)
    // and for the Vulkan workgroup reduction (more than 64 elements per output).
    let (rows, cols) = (4, 20_000);
    let at = flat(&[rows, cols], &[2, 12_345]);
    let x = Tensor::from_slice(&with_nan(data(rows * cols, 2, -1.0, 1.0), &[at]), &[rows, cols], dev)?;
    for (what, y) in [("sum", x.sum(&[1], false)?), ("max", x.max(&[1], false)?)] {
        expect_nan_at(&format!("{what} over the long axis"), &y, |i| i == 2)?;
    }
    for (what, y) in [("sum", x.sum(&[0], false)?), ("max", x.max(&[0], false)?)] {
        expect_nan_at(&format!("{what} over the short axis"), &y, |i| i == 12_345)?;
    }
    let xt = x.transpose(0, 1)?; // [cols, rows]: the reduced axis outermost
    for (what, y) in [("sum", xt.sum(&[0], false)?), ("max", xt.max(&[0], false)?)] {
        expect_nan_at(&format!("{what} over the outer axis"), &y, |i| i == 2)?;
    }
    Ok(())
});

device_test!(fn log_softmax_row_with_nan(dev) {
    let x = Tensor::from_slice(&[1.0, NAN, 3.0, 1.0, 2.0, 3.0], &[2, 3], dev)?;
    expect_nan_at("log_softmax", &x.log_softmax(1)?, |i| i < 3)
});

device_test!(fn matmul_with_nan_and_inf(dev) {
    // A [3, 4] with a NaN at [1, 2]: row 1 of A·B is NaN in every column, even where
    // the row of B it meets is 0 (NaN · 0 is NaN).
    let mut a = data(12, 3, -1.0, 1.0);
    a[flat(&[3, 4], &[1, 2])] = NAN;
    let mut b = data(20, 4, -1.0, 1.0);
    for j in 0..5 {
        b[flat(&[4, 5], &[2, j])] = 0.0;
    }
    let (a, b) = (Tensor::from_slice(&a, &[3, 4], dev)?, Tensor::from_slice(&b, &[4, 5], dev)?);
    expect_nan_at("matmul", &a.matmul(&b)?, |i| i / 5 == 1)?;
    // ∞ in A at [0, 0] meets B[0, 3] = 0: NaN only at C[0, 3]; the rest of row 0 is ±∞.
    let mut a = data(12, 5, 0.5, 1.0);
    a[0] = INF;
    let mut b = data(20, 6, 0.5, 1.0);
    b[3] = 0.0;
    let (a, b) = (Tensor::from_slice(&a, &[3, 4], dev)?, Tensor::from_slice(&b, &[4, 5], dev)?);
    let c = a.matmul(&b)?.to_vec()?;
    assert!(c[3].is_nan(), "∞ · 0 in a matmul: got {}", c[3]);
    assert!((0..5).filter(|&j| j != 3).all(|j| c[j] == INF), "{c:?}");
    assert!(c[5..].iter().all(|v| v.is_finite()), "{c:?}");
    Ok(())
});

/// Whether output pixel `(r, s)` of a "same" `kh × kw` convolution reads input pixel
/// `(r0, s0)`.
fn reads(r: usize, s: usize, (r0, s0): (usize, usize), kh: usize, kw: usize) -> bool {
    r.abs_diff(r0) <= kh / 2 && s.abs_diff(s0) <= kw / 2
}

device_test!(fn conv2d_and_conv2d_relu_with_one_nan_pixel(dev) {
    // 3x3 (direct on the CPU), 1x1 narrow (direct) and 1x1 wide on 8x8 (the CPU's GEMM
    // path). One NaN pixel in image 1 (interior) and one in image 0 (a corner): every
    // output pixel whose receptive field holds one is NaN, in every output channel, and
    // stays NaN through the fused relu; every other output is finite (and >= 0 after relu).
    for (c_in, c_out, h, w, k) in [(3, 4, 5, 6, 3), (3, 4, 5, 6, 1), (128, 128, 8, 8, 1)] {
        let xs = [2, c_in, h, w];
        let nan1 = (1, c_in - 1, 2, 3);
        let nan0 = (0, 0, 0, 0);
        let xv = with_nan(
            data(2 * c_in * h * w, 7, -1.0, 1.0),
            &[flat(&xs, &[nan1.0, nan1.1, nan1.2, nan1.3]), 0],
        );
        let x = Tensor::from_slice(&xv, &xs, dev)?;
        let wt = Tensor::randn(&[c_out, c_in, k, k], 0.0, 0.3, 8, dev)?;
        let bias = Tensor::randn(&[c_out], 0.0, 0.3, 9, dev)?;
        let ys = [2, c_out, h, w];
        let nan_out = |i: usize| {
            let at = unflat(&ys, i);
            let (b, r, s) = (at[0], at[2], at[3]);
            (b == nan1.0 && reads(r, s, (nan1.2, nan1.3), k, k))
                || (b == nan0.0 && reads(r, s, (nan0.2, nan0.3), k, k))
        };
        let what = format!("{c_in}->{c_out} {k}x{k} on {h}x{w}");
        expect_nan_at(&format!("conv2d {what}"), &x.conv2d(&wt, Some(&bias))?, nan_out)?;
        let y = x.conv2d_relu(&wt, Some(&bias))?;
        expect_nan_at(&format!("conv2d_relu {what}"), &y, nan_out)?;
        assert!(y.to_vec()?.iter().all(|v| v.is_nan() || *v >= 0.0));
    }
    Ok(())
});

device_test!(fn conv2d_gradients_with_one_nan(dev) {
    // loss = Σ conv(x, w) · r with r NaN at [1, 0, 2, 2]: that is the output gradient, so
    // dx is NaN where the pixel's kernel footprint lands (image 1, every input channel),
    // dw is NaN for output channel 0 (every input channel and tap: the pixel is interior)
    // and dbias for channel 0 only.
    let (xs, ws) = ([2, 3, 5, 5], [4, 3, 3, 3]);
    for relu in [false, true] {
        let x = Tensor::randn(&xs, 0.0, 1.0, 10, dev)?.with_grad();
        let w = Tensor::randn(&ws, 0.0, 0.3, 11, dev)?.with_grad();
        let bias = Tensor::randn(&[4], 0.0, 0.3, 12, dev)?.with_grad();
        let rv = with_nan(data(2 * 4 * 25, 13, -1.0, 1.0), &[flat(&[2, 4, 5, 5], &[1, 0, 2, 2])]);
        let r = Tensor::from_slice(&rv, &[2, 4, 5, 5], dev)?;
        let y = if relu { x.conv2d_relu(&w, Some(&bias))? } else { x.conv2d(&w, Some(&bias))? };
        let grads = y.mul(&r)?.sum_all()?.backward()?;
        let what = if relu { "conv2d_relu" } else { "conv2d" };
        expect_nan_at(&format!("{what} dx"), grads.get(&x).unwrap(), |i| {
            let at = unflat(&xs, i);
            at[0] == 1 && reads(at[2], at[3], (2, 2), 3, 3)
        })?;
        expect_nan_at(&format!("{what} dw"), grads.get(&w).unwrap(), |i| i < 27)?;
        expect_nan_at(&format!("{what} dbias"), grads.get(&bias).unwrap(), |i| i == 0)?;
    }
    Ok(())
});

device_test!(fn affine_coupling_with_nan_and_inf(dev) {
    // xb [2, 2, 1, 3], h [2, 4, 1, 3] (shift = h[:, 0::2], t = h[:, 1::2] + 2).
    let xs = [2, 2, 1, 3];
    let hs = [2, 4, 1, 3];
    let xv = with_nan(data(12, 14, -1.0, 1.0), &[flat(&xs, &[0, 1, 0, 2])]);
    let mut hv = data(24, 15, -1.0, 1.0);
    hv[flat(&hs, &[1, 1, 0, 0])] = NAN; // t of image 1, channel 0, pixel 0
    hv[flat(&hs, &[1, 3, 0, 1])] = INF; // t = +∞: σ = 1, log σ = 0
    hv[flat(&hs, &[0, 3, 0, 0])] = -INF; // t = −∞: σ = 0, log σ = −∞
    let (xb, h) = (Tensor::from_slice(&xv, &xs, dev)?, Tensor::from_slice(&hv, &hs, dev)?);
    let (yb, logdet) = Tensor::affine_coupling(&xb, &h)?;
    // yb is NaN where xb or t is; (xb + shift) · 0 = 0 where t = −∞.
    let nan_y = [flat(&xs, &[0, 1, 0, 2]), flat(&xs, &[1, 0, 0, 0])];
    expect_nan_at("affine_coupling yb", &yb, |i| nan_y.contains(&i))?;
    assert_eq!(yb.to_vec()?[flat(&xs, &[0, 1, 0, 0])], 0.0);
    // Image 0 holds log σ(−∞) = −∞ (and no NaN in t); image 1 holds the NaN t.
    expect("affine_coupling logdet", &logdet, &[-INF, NAN])?;

    // Backward with a NaN output gradient at one element: dxb there, and the shift and
    // t of that element.
    let xb = Tensor::from_slice(&data(12, 16, -1.0, 1.0), &xs, dev)?.with_grad();
    let h = Tensor::from_slice(&data(24, 17, -1.0, 1.0), &hs, dev)?.with_grad();
    let (yb, logdet) = Tensor::affine_coupling(&xb, &h)?;
    let at = flat(&xs, &[1, 1, 0, 2]);
    let r = Tensor::from_slice(&with_nan(data(12, 18, -1.0, 1.0), &[at]), &xs, dev)?;
    let grads = yb.mul(&r)?.sum_all()?.add(&logdet.sum_all()?)?.backward()?;
    expect_nan_at("affine_coupling dxb", grads.get(&xb).unwrap(), |i| i == at)?;
    let (shift_at, t_at) = (flat(&hs, &[1, 2, 0, 2]), flat(&hs, &[1, 3, 0, 2]));
    expect_nan_at("affine_coupling dh", grads.get(&h).unwrap(), |i| i == shift_at || i == t_at)?;
    // A NaN log-det gradient: every dt of that image.
    let (_, logdet) = Tensor::affine_coupling(&xb, &h)?;
    let r = Tensor::from_slice(&[1.0, NAN], &[2], dev)?;
    let grads = logdet.mul(&r)?.sum_all()?.backward()?;
    expect_nan_at("affine_coupling dh from dlogdet", grads.get(&h).unwrap(), |i| {
        let at = unflat(&hs, i);
        at[0] == 1 && at[1] % 2 == 1
    })?;
    Ok(())
});

device_test!(fn gaussian_log_prob_with_nan(dev) {
    let zs = [3, 2, 2, 2];
    let hs = [3, 4, 2, 2];
    for pairing in [Pairing::Interleaved, Pairing::Halves] {
        // NaN in z of image 0, in a mean of image 2; a log-scale of +∞ in image 1
        // (density 0 there: log p = −∞).
        let zv = with_nan(data(24, 19, -1.0, 1.0), &[flat(&zs, &[0, 1, 1, 0])]);
        let (km, kl) = pairing.channels(1, 2);
        let mut hv = data(48, 20, -0.5, 0.5);
        hv[flat(&hs, &[2, km, 0, 1])] = NAN;
        hv[flat(&hs, &[1, kl, 1, 1])] = INF;
        let (z, h) = (Tensor::from_slice(&zv, &zs, dev)?, Tensor::from_slice(&hv, &hs, dev)?);
        expect("gaussian_log_prob", &Tensor::gaussian_log_prob(&z, &h, pairing)?, &[NAN, -INF, NAN])?;

        // A NaN output gradient for image 1: dz and dh NaN in that image only.
        let z = Tensor::from_slice(&data(24, 21, -1.0, 1.0), &zs, dev)?.with_grad();
        let h = Tensor::from_slice(&data(48, 22, -0.5, 0.5), &hs, dev)?.with_grad();
        let lp = Tensor::gaussian_log_prob(&z, &h, pairing)?;
        let r = Tensor::from_slice(&[1.0, NAN, 1.0], &[3], dev)?;
        let grads = lp.mul(&r)?.sum_all()?.backward()?;
        expect_nan_at("gaussian dz", grads.get(&z).unwrap(), |i| i / 8 == 1)?;
        expect_nan_at("gaussian dh", grads.get(&h).unwrap(), |i| i / 16 == 1)?;
    }
    Ok(())
});

device_test!(fn adam_and_adamax_with_a_nan_and_an_infinite_gradient(dev) {
    // Gradients 0.1, NaN, 0.3, +∞ from m = v = 0. NaN makes m, v and the parameter NaN;
    // ∞ makes m and v infinite and the step ∞/∞ = NaN (as in torch.optim: Adamax's
    // v = maximum(β2·v, |g| + eps), and torch.maximum propagates NaN).
    for kind in [AdamKind::Adam, AdamKind::Adamax] {
        let p = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[4], dev)?;
        let g = Tensor::from_slice(&[0.1, NAN, 0.3, INF], &[4], dev)?;
        let (m, v) = (Tensor::zeros(&[4], dev)?, Tensor::zeros(&[4], dev)?);
        let step = AdamUpdate { kind, lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1 };
        p.adam_update(&g, &m, &v, &step)?;
        // One bias-corrected step moves each parameter by lr against the gradient's sign.
        expect(&format!("{kind:?} param"), &p, &[0.99, NAN, 2.99, NAN])?;
        let mv = m.to_vec()?;
        assert!(mv[1].is_nan() && mv[3] == INF && mv[0].is_finite(), "{kind:?} m: {mv:?}");
        let vv = v.to_vec()?;
        assert!(vv[1].is_nan() && vv[3] == INF && vv[0].is_finite(), "{kind:?} v: {vv:?}");
    }
    Ok(())
});

device_test!(fn layout_ops_keep_nan_in_place(dev) {
    let v = [NAN, 1.0, INF, 3.0, -INF, 5.0];
    let x = Tensor::from_slice(&v, &[2, 3], dev)?;
    expect("permute", &x.transpose(0, 1)?, &[NAN, 3.0, 1.0, -INF, INF, 5.0])?;
    expect("slice", &x.slice(1, 0, 1)?, &[NAN, 3.0])?;
    expect("concat", &Tensor::concat(&[&x, &x], 0)?, &[v, v].concat())?;
    expect("gather", &x.gather(1, &[2, 0])?, &[INF, NAN, 5.0, 3.0])?;
    expect("to_device", &x.to_device(&Device::Cpu)?, &v)?;
    Ok(())
});

device_test!(fn log_abs_det_of_a_nan_matrix_is_an_error(dev) {
    // The host LU refuses a non-finite matrix rather than return a finite log-det.
    let w = Tensor::from_slice(&[1.0, NAN, 0.0, 1.0], &[2, 2], dev)?;
    let e = w.log_abs_det().unwrap_err().to_string();
    assert!(e.contains("not finite"), "{e}");
    Ok(())
});
