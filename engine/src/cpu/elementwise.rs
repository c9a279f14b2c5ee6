//! Elementwise kernels: unary maps and binary ops with NumPy broadcasting.
//!
//! Every op is a closure handed to one generic loop, so each `match` arm compiles to
//! its own vectorised slice loop. Broadcasting has three paths: same shape (one zip),
//! one operand a single element (a map with a constant), and the general strided path,
//! which after [`collapse`] is a loop over rows whose inner run reads each operand
//! either contiguously or as a repeated scalar; `[N, C, H, W] op [1, C, 1, 1]` is thus a
//! row of `H·W` elements against one scalar per row.

use super::strided::{collapse, Dim, Odometer};
use super::{contiguous_strides, par_fill};
use crate::backend::{BinaryOp, UnaryOp};

/// `y[i] = op(x[i])`.
pub(super) fn unary(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    match op {
        UnaryOp::Neg => map(x, |v| -v),
        UnaryOp::Exp => map(x, f32::exp),
        UnaryOp::Log => map(x, f32::ln),
        UnaryOp::Sigmoid => map(x, sigmoid),
        UnaryOp::Softplus => map(x, softplus),
        UnaryOp::Relu => map(x, relu),
        UnaryOp::Heaviside => map(x, |v| if v > 0.0 { 1.0 } else { 0.0 }),
        UnaryOp::Sqrt => map(x, f32::sqrt),
        UnaryOp::Recip => map(x, |v| 1.0 / v),
        UnaryOp::Square => map(x, |v| v * v),
        UnaryOp::Abs => map(x, f32::abs),
        UnaryOp::Tanh => map(x, f32::tanh),
        UnaryOp::Scale(s) => map(x, |v| v * s),
        UnaryOp::AddScalar(s) => map(x, |v| v + s),
        UnaryOp::Powf(p) => map(x, |v| v.powf(p)),
        UnaryOp::LeakyRelu(s) => map(x, |v| if v > 0.0 { v } else { s * v }),
    }
}

/// `max(x, 0)`, keeping NaN: `relu(NaN) = NaN`, as in IEEE arithmetic and PyTorch
/// (`f32::max` would return 0 and hide it). `x < 0` is false for NaN, so NaN falls
/// through to the second branch; the select compiles to one `maxps`.
#[inline]
pub(crate) fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// `max(a, b)`, NaN when either is NaN (IEEE `maximum`, PyTorch's `max`); `f32::max`
/// would return the other operand.
#[inline]
pub(crate) fn nan_max(a: f32, b: f32) -> f32 {
    if a > b || a.is_nan() {
        a
    } else {
        b
    }
}

/// `1 / (1 + e^-x)`; for `x < 0` it uses `e^x / (1 + e^x)` so `e^-x` never overflows.
#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|)`: the exponent is never positive, so it
/// cannot overflow, and `ln_1p` keeps precision when `e^-|x|` is tiny. NaN stays NaN.
#[inline]
pub(crate) fn softplus(x: f32) -> f32 {
    relu(x) + (-x.abs()).exp().ln_1p()
}

/// Applies `f` to every element, in parallel for big arrays.
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = super::pool::take(x.len());
    par_fill(&mut out, 1, |start, out| {
        let x = &x[start..start + out.len()];
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f(v);
        }
    });
    out
}

/// `y = op(a, b)` with broadcasting; all shapes have the same rank.
pub(super) fn binary(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out_shape: &[usize],
) -> Vec<f32> {
    let shapes = (a_shape, b_shape, out_shape);
    match op {
        BinaryOp::Add => broadcast(a, b, shapes, |x, y| x + y),
        BinaryOp::Sub => broadcast(a, b, shapes, |x, y| x - y),
        BinaryOp::Mul => broadcast(a, b, shapes, |x, y| x * y),
        BinaryOp::Div => broadcast(a, b, shapes, |x, y| x / y),
        BinaryOp::Max => broadcast(a, b, shapes, nan_max),
        BinaryOp::ReluGrad => broadcast(a, b, shapes, |x, y| x * if y > 0.0 { 1.0 } else { 0.0 }),
    }
}

/// The broadcasting loop for one op `f`; see the module doc for its three paths.
fn broadcast<F>(a: &[f32], b: &[f32], shapes: (&[usize], &[usize], &[usize]), f: F) -> Vec<f32>
where
    F: Fn(f32, f32) -> f32 + Sync + Send + Copy,
{
    let (a_shape, b_shape, out_shape) = shapes;
    let n: usize = out_shape.iter().product();
    let mut out = super::pool::take(n);
    if n == 0 {
        return out;
    }
    if a.len() == n && b.len() == n {
        // Extents are equal or 1, so equal products mean equal shapes.
        par_fill(&mut out, 1, |s, out| {
            let (a, b) = (&a[s..s + out.len()], &b[s..s + out.len()]);
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        });
        return out;
    }
    if a.len() == n && b.len() == 1 {
        let y = b[0];
        par_fill(&mut out, 1, |s, out| {
            let a = &a[s..s + out.len()];
            for (o, &x) in out.iter_mut().zip(a) {
                *o = f(x, y);
            }
        });
        return out;
    }
    if a.len() == 1 && b.len() == n {
        let x = a[0];
        par_fill(&mut out, 1, |s, out| {
            let b = &b[s..s + out.len()];
            for (o, &y) in out.iter_mut().zip(b) {
                *o = f(x, y);
            }
        });
        return out;
    }

    // General path: walk the output contiguously and each input with stride 0 along its
    // broadcast axes.
    let sa = contiguous_strides(a_shape);
    let sb = contiguous_strides(b_shape);
    let dims: Vec<Dim<2>> = (0..out_shape.len())
        .map(|d| {
            let pick = |shape: &[usize], s: &[usize]| if shape[d] == 1 { 0 } else { s[d] };
            (out_shape[d], [pick(a_shape, &sa), pick(b_shape, &sb)])
        })
        .collect();
    let mut dims = collapse(&dims);
    let Some((len, [ia, ib])) = dims.pop() else {
        // Every extent is 1: a single element.
        if n == 1 {
            out[0] = f(a[0], b[0]);
        }
        return out;
    };
    // After collapsing, the innermost dim of each input is contiguous or broadcast.
    debug_assert!(ia <= 1 && ib <= 1);
    par_fill(&mut out, len, |s, out| {
        let mut odo = Odometer::new(&dims, s / len);
        for row in out.chunks_exact_mut(len) {
            let [oa, ob] = odo.offsets;
            match (ia, ib) {
                (1, 1) => {
                    for ((o, &x), &y) in row.iter_mut().zip(&a[oa..oa + len]).zip(&b[ob..ob + len])
                    {
                        *o = f(x, y);
                    }
                }
                (1, _) => {
                    let y = b[ob];
                    for (o, &x) in row.iter_mut().zip(&a[oa..oa + len]) {
                        *o = f(x, y);
                    }
                }
                (_, 1) => {
                    let x = a[oa];
                    for (o, &y) in row.iter_mut().zip(&b[ob..ob + len]) {
                        *o = f(x, y);
                    }
                }
                _ => row.fill(f(a[oa], b[ob])),
            }
            odo.advance();
        }
    });
    out
}
