//! Reference convolution and its two adjoints, as direct loops in `f64`.
//!
//! A stride-1 "same" convolution (padding `kh / 2`, `kw / 2`, see [`Conv2dDims`]) is one
//! sum over seven indices:
//!
//! `y[b, o, r, s] = bias[o] + Σ_{i, u, v} w[o, i, u, v] · x[b, i, r + u − ph, s + v − pw]`
//!
//! with out-of-image terms of `x` counted as zero. Its two backward ops are the same
//! sum read the other two ways: each term `w · x` contributes `dy · x` to `dw` and
//! `dy · w` to `dx`. So all three are written over one loop nest, [`for_each_term`],
//! which makes the adjoint relation visible rather than re-derived.
//!
//! The fast versions: `cpu/conv.rs` and `cpu/conv_kernels.rs` (direct and GEMM paths),
//! and `shaders/conv2d*.comp`.

use ndarray::{Array4, ArrayD, ArrayView4, Ix4};

use crate::backend::Conv2dDims;

/// `[n, c_in, h, w]`.
pub(super) fn input_shape(d: Conv2dDims) -> [usize; 4] {
    [d.n, d.c_in, d.h, d.w]
}

/// `[n, c_out, h, w]`.
pub(super) fn output_shape(d: Conv2dDims) -> [usize; 4] {
    [d.n, d.c_out, d.h, d.w]
}

/// `[c_out, c_in, kh, kw]`.
pub(super) fn weight_shape(d: Conv2dDims) -> [usize; 4] {
    [d.c_out, d.c_in, d.kh, d.kw]
}

/// Calls `f(y_index, w_index, x_index)` for every term `w[w_index] · x[x_index]` of the
/// sum that makes `y[y_index]`, skipping the terms that fall in the zero padding.
fn for_each_term(d: Conv2dDims, mut f: impl FnMut([usize; 4], [usize; 4], [usize; 4])) {
    let (ph, pw) = (d.kh / 2, d.kw / 2);
    for b in 0..d.n {
        for o in 0..d.c_out {
            for r in 0..d.h {
                for s in 0..d.w {
                    for i in 0..d.c_in {
                        for u in 0..d.kh {
                            for v in 0..d.kw {
                                // Input row r + u − ph and column s + v − pw, if inside.
                                let (Some(row), Some(col)) =
                                    ((r + u).checked_sub(ph), (s + v).checked_sub(pw))
                                else {
                                    continue;
                                };
                                if row < d.h && col < d.w {
                                    f([b, o, r, s], [o, i, u, v], [b, i, row, col]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An operand as a 4-D view: fixed-rank indexing is several times faster than
/// indexing an `ArrayD`, and these loops are the reference device's hot spot.
fn rank4(a: &ArrayD<f64>) -> ArrayView4<'_, f64> {
    a.view()
        .into_dimensionality::<Ix4>()
        .expect("a rank-4 operand")
}

/// `y = conv(x, w) + bias`, `[n, c_out, h, w]`.
pub(super) fn forward(
    x: &ArrayD<f64>,
    w: &ArrayD<f64>,
    bias: Option<&ArrayD<f64>>,
    d: Conv2dDims,
) -> ArrayD<f64> {
    let (x, w) = (rank4(x), rank4(w));
    let mut y = Array4::zeros(output_shape(d));
    for_each_term(d, |yi, wi, xi| y[yi] += w[wi] * x[xi]);
    if let Some(bias) = bias {
        for ((_, o, _, _), v) in y.indexed_iter_mut() {
            *v += bias[[o]];
        }
    }
    y.into_dyn()
}

/// `dx = ∂L/∂x` from `dy = ∂L/∂y`: every term `w · x` of `y` sends `dy · w` back to `x`.
pub(super) fn backward_input(dy: &ArrayD<f64>, w: &ArrayD<f64>, d: Conv2dDims) -> ArrayD<f64> {
    let (dy, w) = (rank4(dy), rank4(w));
    let mut dx = Array4::zeros(input_shape(d));
    for_each_term(d, |yi, wi, xi| dx[xi] += dy[yi] * w[wi]);
    dx.into_dyn()
}

/// `dw = ∂L/∂w` from `dy`, summed over the batch: every term sends `dy · x` to `w`.
pub(super) fn backward_weight(x: &ArrayD<f64>, dy: &ArrayD<f64>, d: Conv2dDims) -> ArrayD<f64> {
    let (x, dy) = (rank4(x), rank4(dy));
    let mut dw = Array4::zeros(weight_shape(d));
    for_each_term(d, |yi, wi, xi| dw[wi] += dy[yi] * x[xi]);
    dw.into_dyn()
}
