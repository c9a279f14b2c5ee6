//! Reference unary maps, broadcasting binary ops and reductions, in `f64`.
//!
//! The fast versions: `cpu/elementwise.rs`, `cpu/reduce.rs`, and the kernels
//! `shaders/unary.comp`, `shaders/binary.comp`, `shaders/reduce.comp`.

use ndarray::{ArrayD, Axis, IxDyn, Zip};

use crate::backend::{BinaryOp, ReduceOp, UnaryOp};

/// `max(a, b)` that returns NaN when either is NaN (IEEE `maximum`, PyTorch's `max`);
/// Rust's `f64::max` returns the other operand instead.
pub(super) fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// `op(x)`, by its definition (see [`UnaryOp`] for each formula).
pub(super) fn unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        // Both forms are 1 / (1 + e^-x); each is the one whose exponential cannot
        // overflow for its sign of x.
        UnaryOp::Sigmoid if x >= 0.0 => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Sigmoid => x.exp() / (1.0 + x.exp()),
        // ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), which never overflows.
        UnaryOp::Softplus => nan_max(x, 0.0) + (-x.abs()).exp().ln_1p(),
        UnaryOp::Relu => nan_max(x, 0.0),
        // NaN > 0 is false, so heaviside(NaN) = 0, as PyTorch's `(x > 0).float()`: a gate,
        // whose gated value carries the NaN (relu's gradient is a product with it).
        UnaryOp::Heaviside => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Square => x * x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Scale(s) => x * f64::from(s),
        UnaryOp::AddScalar(s) => x + f64::from(s),
        UnaryOp::Powf(p) => x.powf(f64::from(p)),
        // NaN > 0 is false, so NaN takes the second branch and stays NaN.
        UnaryOp::LeakyRelu(s) => {
            if x > 0.0 {
                x
            } else {
                f64::from(s) * x
            }
        }
    }
}

/// `op(a, b)` elementwise, after broadcasting both to `out_shape` (every extent of an
/// input equals the output's or is 1: ndarray's `broadcast` repeats the size-1 axes).
pub(super) fn binary(
    op: BinaryOp,
    a: &ArrayD<f64>,
    b: &ArrayD<f64>,
    out_shape: &[usize],
) -> ArrayD<f64> {
    let out = IxDyn(out_shape);
    let a = a
        .broadcast(out.clone())
        .expect("checked by the tensor layer");
    let b = b.broadcast(out).expect("checked by the tensor layer");
    let f = |&x: &f64, &y: &f64| match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Max => nan_max(x, y),
        // A product with the gate, not a select, so that NaN · 0 is still NaN.
        BinaryOp::ReluGrad => x * if y > 0.0 { 1.0 } else { 0.0 },
    };
    Zip::from(&a).and(&b).map_collect(f)
}

/// Reduces `x` over `axes`, keeping each reduced axis with extent 1. One axis at a
/// time: reducing several axes is reducing each of them in turn.
pub(super) fn reduce(op: ReduceOp, mut x: ArrayD<f64>, axes: &[usize]) -> ArrayD<f64> {
    for &axis in axes {
        let folded = match op {
            ReduceOp::Sum => x.sum_axis(Axis(axis)),
            ReduceOp::Max => x.fold_axis(Axis(axis), f64::NEG_INFINITY, |&m, &v| nan_max(m, v)),
        };
        x = folded.insert_axis(Axis(axis));
    }
    x
}
