//! Finite-difference checks of every differentiable op, on every device.
//!
//! Each test builds a small function of random inputs and asks
//! [`engine::gradcheck::GradCheck`] to compare `backward()` with central differences
//! (tolerances and their derivation are in that module's docs). Inputs of functions with
//! a kink or a pole (relu, abs, recip, log) are kept away from it.

use engine::backend::fused::Pairing;
use engine::device_test;
use engine::gradcheck::GradCheck;
use engine::{Device, Result, Tensor};

/// Runs the default check and fails with the report if any element misses.
fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> Result<()> {
    let report = GradCheck::default().run(f, inputs)?;
    assert!(report.passed(), "{report}");
    Ok(())
}

/// Uniform values in `[-1, 1)`.
fn uniform(shape: &[usize], seed: u64, dev: &Device) -> Result<Tensor> {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed, dev)
}

/// Values with `0.2 <= |x| < 1` and random signs: at least 20 finite-difference steps
/// away from the kinks of relu and abs and from the pole of 1/x.
fn away_from_zero(shape: &[usize], seed: u64, dev: &Device) -> Result<Tensor> {
    let magnitude = Tensor::rand_uniform(shape, 0.2, 1.0, seed, dev)?;
    let sign = uniform(shape, seed + 1, dev)?
        .heaviside()?
        .scale(2.0)?
        .add_scalar(-1.0)?;
    magnitude.mul(&sign)
}

/// Values in `[0.5, 2)`, inside the domain of log, sqrt and powf.
fn positive(shape: &[usize], seed: u64, dev: &Device) -> Result<Tensor> {
    Tensor::rand_uniform(shape, 0.5, 2.0, seed, dev)
}

device_test!(fn neg(dev) { check(|t| t[0].neg(), &[uniform(&[3, 4], 1, dev)?]) });
device_test!(fn exp(dev) { check(|t| t[0].exp(), &[uniform(&[3, 4], 2, dev)?]) });
device_test!(fn log(dev) { check(|t| t[0].log(), &[positive(&[3, 4], 3, dev)?]) });
device_test!(fn sigmoid(dev) {
    check(|t| t[0].scale(3.0)?.sigmoid(), &[uniform(&[3, 4], 4, dev)?])
});
device_test!(fn softplus(dev) {
    check(|t| t[0].scale(3.0)?.softplus(), &[uniform(&[3, 4], 5, dev)?])
});
device_test!(fn relu(dev) { check(|t| t[0].relu(), &[away_from_zero(&[4, 5], 6, dev)?]) });
// relu's VJP as an op of its own: linear in the gradient; the gate's input is detached
// (its derivative is zero away from 0, which the finite differences see too).
device_test!(fn relu_grad(dev) {
    check(
        |t| t[0].relu_grad(&t[1]),
        &[uniform(&[4, 5], 120, dev)?, away_from_zero(&[4, 5], 121, dev)?],
    )
});
// Both slopes matter: 0.1 is the usual choice, -0.5 makes the negative side decrease.
device_test!(fn leaky_relu(dev) {
    for slope in [0.1, -0.5] {
        check(|t| t[0].leaky_relu(slope), &[away_from_zero(&[4, 5], 122, dev)?])?;
    }
    Ok(())
});
device_test!(fn sqrt(dev) { check(|t| t[0].sqrt(), &[positive(&[3, 4], 7, dev)?]) });
device_test!(fn recip(dev) { check(|t| t[0].recip(), &[away_from_zero(&[3, 4], 8, dev)?]) });
device_test!(fn square(dev) { check(|t| t[0].square(), &[uniform(&[3, 4], 9, dev)?]) });
device_test!(fn abs(dev) { check(|t| t[0].abs(), &[away_from_zero(&[4, 5], 10, dev)?]) });
device_test!(fn tanh(dev) { check(|t| t[0].scale(2.0)?.tanh(), &[uniform(&[3, 4], 11, dev)?]) });
device_test!(fn scale(dev) { check(|t| t[0].scale(-2.5), &[uniform(&[3, 4], 12, dev)?]) });
device_test!(fn add_scalar(dev) { check(|t| t[0].add_scalar(0.7), &[uniform(&[3, 4], 13, dev)?]) });
device_test!(fn powf(dev) { check(|t| t[0].powf(1.7), &[positive(&[3, 4], 14, dev)?]) });

// Binary ops with broadcasting on both sides: [2, 3, 4] against [3, 1] exercises a
// missing leading axis and an extent-1 axis at once.
device_test!(fn add_broadcast(dev) {
    check(|t| t[0].add(&t[1]), &[uniform(&[2, 3, 4], 20, dev)?, uniform(&[3, 1], 21, dev)?])
});
device_test!(fn sub_broadcast(dev) {
    check(|t| t[0].sub(&t[1]), &[uniform(&[3, 1], 22, dev)?, uniform(&[2, 3, 4], 23, dev)?])
});
device_test!(fn mul_broadcast(dev) {
    check(|t| t[0].mul(&t[1]), &[uniform(&[2, 3, 4], 24, dev)?, uniform(&[1, 3, 1], 25, dev)?])
});
device_test!(fn div_broadcast(dev) {
    check(
        |t| t[0].div(&t[1]),
        &[uniform(&[2, 3, 4], 26, dev)?, away_from_zero(&[4], 27, dev)?],
    )
});

device_test!(fn sum_axes(dev) {
    check(|t| t[0].sum(&[0, 2], false), &[uniform(&[2, 3, 4], 30, dev)?])?;
    check(|t| t[0].sum(&[1], true), &[uniform(&[2, 3, 4], 31, dev)?])
});
device_test!(fn mean_axes(dev) {
    check(|t| t[0].mean(&[0, 2, 3], true), &[uniform(&[2, 3, 2, 2], 32, dev)?])
});
device_test!(fn sum_all_and_mean_all(dev) {
    check(|t| t[0].sum_all(), &[uniform(&[3, 5], 33, dev)?])?;
    check(|t| t[0].mean_all(), &[uniform(&[3, 5], 34, dev)?])
});
device_test!(fn expand_and_sum_to(dev) {
    check(|t| t[0].expand(&[2, 3, 4]), &[uniform(&[3, 1], 35, dev)?])?;
    check(|t| t[0].sum_to(&[3, 1]), &[uniform(&[2, 3, 4], 36, dev)?])
});

device_test!(fn matmul_2d(dev) {
    check(|t| t[0].matmul(&t[1]), &[uniform(&[3, 4], 40, dev)?, uniform(&[4, 5], 41, dev)?])
});
device_test!(fn matmul_batched(dev) {
    check(|t| t[0].matmul(&t[1]), &[uniform(&[2, 3, 4], 42, dev)?, uniform(&[2, 4, 5], 43, dev)?])
});
device_test!(fn matmul_broadcast_operand(dev) {
    // A shared right operand gets the gradient summed over the batch, and vice versa.
    check(|t| t[0].matmul(&t[1]), &[uniform(&[2, 3, 4], 44, dev)?, uniform(&[4, 5], 45, dev)?])?;
    check(|t| t[0].matmul(&t[1]), &[uniform(&[3, 4], 46, dev)?, uniform(&[2, 4, 5], 47, dev)?])
});

device_test!(fn conv2d_3x3_bias(dev) {
    check(
        |t| t[0].conv2d(&t[1], Some(&t[2])),
        &[uniform(&[2, 3, 5, 4], 50, dev)?, uniform(&[4, 3, 3, 3], 51, dev)?, uniform(&[4], 52, dev)?],
    )
});
// The fused conv2d + relu: weights small enough (|conv| <= 27 · 0.05 < 1.4) that the
// biases of ±2 keep every pre-activation at least 0.6 from relu's kink, so half the
// channels pass gradients and half are dead, and no finite difference crosses the kink.
device_test!(fn conv2d_relu(dev) {
    check(
        |t| t[0].conv2d_relu(&t[1], Some(&t[2])),
        &[
            uniform(&[2, 3, 5, 4], 122, dev)?,
            uniform(&[4, 3, 3, 3], 123, dev)?.scale(0.05)?,
            Tensor::from_vec(vec![2.0, -2.0, 2.0, -2.0], &[4], dev)?,
        ],
    )
});
device_test!(fn conv2d_1x1(dev) {
    check(|t| t[0].conv2d(&t[1], None), &[uniform(&[2, 4, 3, 3], 53, dev)?, uniform(&[5, 4, 1, 1], 54, dev)?])
});
device_test!(fn conv2d_non_square_kernel(dev) {
    check(|t| t[0].conv2d(&t[1], None), &[uniform(&[1, 2, 5, 6], 55, dev)?, uniform(&[3, 2, 3, 1], 56, dev)?])
});

device_test!(fn reshape(dev) { check(|t| t[0].reshape(&[4, 3])?.square(), &[uniform(&[2, 6], 60, dev)?]) });
device_test!(fn permute(dev) { check(|t| t[0].permute(&[2, 0, 1]), &[uniform(&[2, 3, 4], 61, dev)?]) });
device_test!(fn transpose(dev) { check(|t| t[0].transpose(0, 1), &[uniform(&[3, 4], 62, dev)?]) });
device_test!(fn slice(dev) {
    check(|t| t[0].slice(1, 1, 2), &[uniform(&[2, 4, 3], 63, dev)?])?;
    check(|t| t[0].slice(0, 0, 1), &[uniform(&[2, 4], 64, dev)?])
});
device_test!(fn concat(dev) {
    check(
        |t| Tensor::concat(&[&t[0], &t[1], &t[0]], 1),
        &[uniform(&[2, 1, 3], 65, dev)?, uniform(&[2, 3, 3], 66, dev)?],
    )
});
device_test!(fn gather_permutation(dev) {
    check(|t| t[0].gather(1, &[2, 0, 3, 1]), &[uniform(&[2, 4, 3], 67, dev)?])
});

device_test!(fn tensor_used_twice(dev) {
    // x appears on both sides and twice in the chain: d/dx (x·x + x) = 2x + 1.
    check(|t| t[0].mul(&t[0])?.add(&t[0])?.exp(), &[uniform(&[3, 3], 70, dev)?])
});

device_test!(fn two_layer_conv_net(dev) {
    // conv3x3 -> relu -> conv1x1 -> mean squared error against a target: gradients for
    // data, both weights, both biases.
    let x = uniform(&[2, 3, 4, 4], 80, dev)?;
    let w1 = uniform(&[6, 3, 3, 3], 81, dev)?.scale(0.5)?;
    let b1 = uniform(&[6], 82, dev)?;
    let w2 = uniform(&[2, 6, 1, 1], 83, dev)?;
    let b2 = uniform(&[2], 84, dev)?;
    let target = uniform(&[2, 2, 4, 4], 85, dev)?;
    let report = GradCheck { max_elements: 40, ..GradCheck::default() }.run(
        |t| {
            let h = t[0].conv2d(&t[1], Some(&t[2]))?.relu()?;
            let y = h.conv2d(&t[3], Some(&t[4]))?;
            y.sub(&target)?.square()?.mean_all()
        },
        &[x, w1, b1, w2, b2],
    )?;
    assert!(report.passed(), "{report}");
    Ok(())
});

device_test!(fn log_abs_det(dev) {
    // A well-conditioned matrix: identity plus a small random part.
    let w = uniform(&[4, 4], 90, dev)?.scale(0.3)?.add(&Tensor::from_vec(
        (0..16).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect(), &[4, 4], dev)?)?;
    check(|t| t[0].log_abs_det(), &[w])
});
device_test!(fn inverse(dev) {
    let w = uniform(&[3, 3], 91, dev)?.scale(0.3)?.add(&Tensor::from_vec(
        (0..9).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect(), &[3, 3], dev)?)?;
    check(|t| t[0].inverse(), &[w])
});
device_test!(fn log_softmax(dev) {
    // Composite: checked because the detached max must not change the gradient.
    check(|t| t[0].scale(3.0)?.log_softmax(1), &[uniform(&[3, 5], 92, dev)?])
});

// The fused Glow ops (engine/src/ops/fused.rs): both outputs of the coupling at once
// (yb flattened per image, then the log-determinant), and the Gaussian log-density with
// either channel pairing.
device_test!(fn affine_coupling(dev) {
    check(
        |t| {
            let (yb, logdet) = Tensor::affine_coupling(&t[0], &t[1])?;
            Tensor::concat(&[&yb.reshape(&[2, 12])?, &logdet.reshape(&[2, 1])?], 1)
        },
        &[uniform(&[2, 3, 2, 2], 93, dev)?, uniform(&[2, 6, 2, 2], 94, dev)?.scale(2.0)?],
    )
});
device_test!(fn gaussian_log_prob(dev) {
    for (pairing, seed) in [(Pairing::Interleaved, 95), (Pairing::Halves, 97)] {
        check(
            |t| Tensor::gaussian_log_prob(&t[0], &t[1], pairing),
            &[uniform(&[2, 3, 2, 2], seed, dev)?, uniform(&[2, 6, 2, 2], seed + 1, dev)?.scale(0.5)?],
        )?;
    }
    Ok(())
});
