//! Tests of every CPU primitive against naive reference loops written here.
//!
//! The references are deliberately the slowest obvious code: index arithmetic per
//! element for broadcasting and layout, triple loops for matmul, direct convolution
//! with explicit padding checks, and the adjoint loops for the convolution backwards,
//! accumulated in `f64`. Shapes are odd and sizes cross `PAR_THRESHOLD` where a kernel
//! has a separate parallel path. Run with `cargo test -p engine cpu::`.

use super::*;

const B: CpuBackend = CpuBackend;

fn buf(data: &[f32]) -> CpuBuffer {
    B.from_host(data).unwrap()
}

fn host(x: &CpuBuffer) -> Vec<f32> {
    B.to_host(x).unwrap()
}

/// Deterministic test data in `[-1, 1)`.
fn data(len: usize, seed: u64) -> Vec<f32> {
    (0..len)
        .map(|i| 2.0 * crate::random::uniform01(seed, i as u32) - 1.0)
        .collect()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The multi-index of flat index `i` in a row-major `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// The flat index of `idx` in a row-major `shape`.
fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

/// Asserts `|got - want| ≤ tol · (1 + |want|)` elementwise (NaN-free inputs).
#[track_caller]
fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w} (err {err:e})"
        );
    }
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

#[test]
fn host_roundtrip_and_full() {
    let x = data(17, 1);
    assert_eq!(host(&buf(&x)), x);
    assert_eq!(host(&B.full(5, 2.5).unwrap()), vec![2.5; 5]);
}

#[test]
fn unary_matches_f64_formulas() {
    // Includes large |x| for the stability of sigmoid/softplus/exp-based ops, and a
    // length past PAR_THRESHOLD so the parallel path runs.
    let mut x: Vec<f32> = data(40_001, 2).iter().map(|v| v * 5.0).collect();
    x.extend([-1000.0, -100.0, -20.0, 0.0, 20.0, 100.0, 1000.0]);
    let pos: Vec<f32> = x.iter().map(|v| v.abs() + 0.1).collect();
    type Ref = fn(f64) -> f64;
    let cases: Vec<(UnaryOp, &[f32], Ref)> = vec![
        (UnaryOp::Neg, &x, |v| -v),
        (UnaryOp::Exp, &x[..40_001], f64::exp),
        (UnaryOp::Log, &pos, f64::ln),
        (UnaryOp::Sigmoid, &x, |v| 1.0 / (1.0 + (-v).exp())),
        (UnaryOp::Softplus, &x, |v| {
            if v > 30.0 {
                v
            } else {
                v.exp().ln_1p()
            }
        }),
        (UnaryOp::Relu, &x, |v| v.max(0.0)),
        (UnaryOp::Step, &x, |v| if v > 0.0 { 1.0 } else { 0.0 }),
        (UnaryOp::Sqrt, &pos, f64::sqrt),
        (UnaryOp::Recip, &pos, |v| 1.0 / v),
        (UnaryOp::Square, &x, |v| v * v),
        (UnaryOp::Abs, &x, f64::abs),
        (UnaryOp::Tanh, &x, f64::tanh),
        (UnaryOp::Scale(-1.5), &x, |v| -1.5 * v),
        (UnaryOp::AddScalar(0.25), &x, |v| v + 0.25),
        (UnaryOp::Powf(1.5), &pos, |v| v.powf(1.5)),
    ];
    for (op, input, reference) in cases {
        let y = host(&B.unary(op, &buf(input), input.len()).unwrap());
        let want: Vec<f64> = input.iter().map(|&v| reference(v as f64)).collect();
        assert!(y.iter().all(|v| v.is_finite()), "{op:?} not finite");
        assert_close(&y, &want, 1e-5);
    }
}

/// Naive broadcasting: each output index maps to an input index with broadcast axes
/// pinned to 0.
fn naive_binary(
    f: fn(f64, f64) -> f64,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out_shape: &[usize],
) -> Vec<f64> {
    let pin = |idx: &[usize], shape: &[usize]| -> usize {
        let i: Vec<usize> = idx
            .iter()
            .zip(shape)
            .map(|(&i, &n)| if n == 1 { 0 } else { i })
            .collect();
        ravel(&i, shape)
    };
    (0..numel(out_shape))
        .map(|i| {
            let idx = unravel(i, out_shape);
            f(a[pin(&idx, a_shape)] as f64, b[pin(&idx, b_shape)] as f64)
        })
        .collect()
}

#[test]
fn binary_broadcasting_matches_index_arithmetic() {
    type Shapes = (&'static [usize], &'static [usize], &'static [usize]);
    let shapes: [Shapes; 10] = [
        (&[3, 4], &[3, 4], &[3, 4]),
        (&[3, 4], &[1, 1], &[3, 4]),
        (&[1, 1], &[3, 4], &[3, 4]),
        (&[2, 3, 4, 5], &[1, 3, 1, 1], &[2, 3, 4, 5]),
        (&[1, 3, 1, 1], &[2, 3, 4, 5], &[2, 3, 4, 5]),
        (&[2, 1, 4, 1], &[1, 3, 1, 5], &[2, 3, 4, 5]),
        (&[5, 1], &[1, 7], &[5, 7]),
        (&[3, 4, 2], &[3, 4, 1], &[3, 4, 2]),
        (&[1], &[1], &[1]),
        // Past PAR_THRESHOLD: the parallel strided path.
        (&[4, 16, 32, 32], &[1, 16, 1, 1], &[4, 16, 32, 32]),
    ];
    type Reference = fn(f64, f64) -> f64;
    let ops: [(BinaryOp, Reference); 6] = [
        (BinaryOp::Add, |x, y| x + y),
        (BinaryOp::Sub, |x, y| x - y),
        (BinaryOp::Mul, |x, y| x * y),
        (BinaryOp::Div, |x, y| x / y),
        (BinaryOp::Max, f64::max),
        (BinaryOp::ReluGrad, |x, y| if y > 0.0 { x } else { 0.0 }),
    ];
    for (a_shape, b_shape, out_shape) in shapes {
        let a = data(numel(a_shape), 3);
        for (op, f) in ops {
            // Keep divisors away from 0; relu_grad's gate needs both signs.
            let shift = if op == BinaryOp::ReluGrad { 0.0 } else { 2.0 };
            let b: Vec<f32> = data(numel(b_shape), 4).iter().map(|v| v + shift).collect();
            let y = B
                .binary(op, &buf(&a), a_shape, &buf(&b), b_shape, out_shape)
                .unwrap();
            let want = naive_binary(f, &a, a_shape, &b, b_shape, out_shape);
            assert_close(&host(&y), &want, 1e-6);
        }
    }
}

#[test]
fn binary_accepts_aliased_inputs() {
    let a = buf(&[1.0, -2.0, 3.0]);
    let y = B.binary(BinaryOp::Mul, &a, &[3], &a, &[3], &[3]).unwrap();
    assert_eq!(host(&y), vec![1.0, 4.0, 9.0]);
}

/// Naive reduction: every input element folds into its output index (reduced axes
/// pinned to 0), in f64.
fn naive_reduce(op: ReduceOp, x: &[f32], shape: &[usize], axes: &[usize]) -> Vec<f64> {
    let mut out_shape = shape.to_vec();
    for &a in axes {
        out_shape[a] = 1;
    }
    let init = match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Max => f64::NEG_INFINITY,
    };
    let mut out = vec![init; numel(&out_shape)];
    for (i, &v) in x.iter().enumerate() {
        let mut idx = unravel(i, shape);
        for &a in axes {
            idx[a] = 0;
        }
        let o = &mut out[ravel(&idx, &out_shape)];
        *o = match op {
            ReduceOp::Sum => *o + v as f64,
            ReduceOp::Max => o.max(v as f64),
        };
    }
    out
}

#[test]
fn reduce_over_axis_sets_matches_naive() {
    let small: &[usize] = &[2, 3, 4, 5];
    let big: &[usize] = &[6, 16, 24, 24];
    let cases: Vec<(&[usize], &[usize])> = vec![
        (small, &[]),
        (small, &[0]),
        (small, &[1]),
        (small, &[3]),
        (small, &[0, 2]),
        (small, &[1, 3]),
        (small, &[0, 2, 3]),
        (small, &[0, 1, 2, 3]),
        (&[7, 1, 3], &[1, 2]),
        (big, &[0]),
        (big, &[0, 2, 3]),
        (big, &[1, 2, 3]),
        (big, &[3]),
        (big, &[0, 1, 2, 3]),
    ];
    for (shape, axes) in cases {
        let x = data(numel(shape), 5);
        for op in [ReduceOp::Sum, ReduceOp::Max] {
            let y = B.reduce(op, &buf(&x), shape, axes).unwrap();
            let want = naive_reduce(op, &x, shape, axes);
            assert_close(&host(&y), &want, 1e-6);
        }
    }
}

#[test]
fn reduce_sum_is_accurate_over_a_million_elements() {
    // A naive f32 running sum of 2^20 copies of 0.1 drifts by about 1%.
    let n = 1 << 20;
    let x = vec![0.1f32; n];
    let y = host(&B.reduce(ReduceOp::Sum, &buf(&x), &[n], &[0]).unwrap());
    assert_close(&y, &[n as f64 * 0.1f32 as f64], 1e-7);
}

/// Naive batched matmul; `A` is `[m, k]` stored transposed when `ta`, likewise `B`.
fn naive_matmul(a: &[f32], b: &[f32], d: MatmulDims) -> Vec<f64> {
    let (m, k, n) = (d.m, d.k, d.n);
    let mut c = vec![0.0; d.batch * m * n];
    for bi in 0..d.batch {
        let ao = if d.a_batched { bi * m * k } else { 0 };
        let bo = if d.b_batched { bi * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for l in 0..k {
                    let av = if d.trans_a {
                        a[ao + l * m + i]
                    } else {
                        a[ao + i * k + l]
                    };
                    let bv = if d.trans_b {
                        b[bo + j * k + l]
                    } else {
                        b[bo + l * n + j]
                    };
                    s += av as f64 * bv as f64;
                }
                c[(bi * m + i) * n + j] = s;
            }
        }
    }
    c
}

#[test]
fn matmul_transposed_and_broadcast_operands_match_naive() {
    // (batch, m, k, n): odd small sizes, a batch of small products, a batch of larger ones
    // (one product per task) and one product large enough to be split by rows (200 rows
    // in blocks of 32, the last one short).
    for (batch, m, k, n) in [
        (3, 5, 7, 3),
        (10, 4, 6, 9),
        (2, 96, 130, 70),
        (1, 200, 70, 90),
        (1, 1, 1, 1),
    ] {
        for bits in 0..16u32 {
            let d = MatmulDims {
                batch,
                m,
                k,
                n,
                a_batched: bits & 1 != 0,
                b_batched: bits & 2 != 0,
                trans_a: bits & 4 != 0,
                trans_b: bits & 8 != 0,
            };
            let a = data(if d.a_batched { batch } else { 1 } * m * k, 6);
            let b = data(if d.b_batched { batch } else { 1 } * k * n, 7);
            let c = host(&B.matmul(&buf(&a), &buf(&b), d).unwrap());
            assert_close(&c, &naive_matmul(&a, &b, d), 1e-5);
        }
    }
}

/// Naive direct convolution with explicit zero-padding checks.
fn naive_conv(x: &[f32], w: &[f32], bias: Option<&[f32]>, d: Conv2dDims) -> Vec<f64> {
    let (ph, pw) = ((d.kh / 2) as isize, (d.kw / 2) as isize);
    let mut y = vec![0.0; d.output_len()];
    for n in 0..d.n {
        for o in 0..d.c_out {
            for yy in 0..d.h {
                for xx in 0..d.w {
                    let mut s = bias.map_or(0.0, |b| b[o] as f64);
                    for c in 0..d.c_in {
                        for i in 0..d.kh {
                            for j in 0..d.kw {
                                let sy = yy as isize + i as isize - ph;
                                let sx = xx as isize + j as isize - pw;
                                if sy < 0 || sx < 0 || sy >= d.h as isize || sx >= d.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((n * d.c_in + c) * d.h + sy as usize) * d.w + sx as usize];
                                let wv = w[((o * d.c_in + c) * d.kh + i) * d.kw + j];
                                s += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((n * d.c_out + o) * d.h + yy) * d.w + xx] = s;
                }
            }
        }
    }
    y
}

/// The adjoints of [`naive_conv`], written as the same loop nest with the accumulation
/// turned around: `dx += w · dy` and `dw += x · dy`.
fn naive_conv_adjoints(x: &[f32], w: &[f32], dy: &[f32], d: Conv2dDims) -> (Vec<f64>, Vec<f64>) {
    let (ph, pw) = ((d.kh / 2) as isize, (d.kw / 2) as isize);
    let mut dx = vec![0.0; d.input_len()];
    let mut dw = vec![0.0; d.weight_len()];
    for n in 0..d.n {
        for o in 0..d.c_out {
            for yy in 0..d.h {
                for xx in 0..d.w {
                    let g = dy[((n * d.c_out + o) * d.h + yy) * d.w + xx] as f64;
                    for c in 0..d.c_in {
                        for i in 0..d.kh {
                            for j in 0..d.kw {
                                let sy = yy as isize + i as isize - ph;
                                let sx = xx as isize + j as isize - pw;
                                if sy < 0 || sx < 0 || sy >= d.h as isize || sx >= d.w as isize {
                                    continue;
                                }
                                let xi = ((n * d.c_in + c) * d.h + sy as usize) * d.w + sx as usize;
                                let wi = ((o * d.c_in + c) * d.kh + i) * d.kw + j;
                                dx[xi] += w[wi] as f64 * g;
                                dw[wi] += x[xi] as f64 * g;
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}

fn conv_cases() -> Vec<Conv2dDims> {
    let dims = |n, c_in, c_out, h, w, kh, kw| Conv2dDims {
        n,
        c_in,
        c_out,
        h,
        w,
        kh,
        kw,
    };
    vec![
        dims(2, 3, 4, 5, 7, 1, 1),
        dims(3, 3, 4, 5, 7, 3, 3),
        dims(2, 2, 3, 7, 5, 5, 3),
        // Kernel taller than the image: some taps never touch it.
        dims(1, 2, 2, 3, 2, 5, 3),
        // Whole and partial 16-pixel blocks, few output channels (conv_kernels.rs).
        dims(2, 8, 12, 4, 4, 3, 3),
        dims(3, 16, 20, 8, 8, 3, 3),
        dims(2, 12, 12, 4, 8, 1, 1),
        // Images no larger than the kernel (Glow's top level can be 1x1 or 2x2).
        dims(2, 3, 2, 1, 1, 3, 3),
        dims(1, 2, 3, 2, 2, 3, 3),
        dims(1, 2, 2, 1, 4, 3, 3),
        dims(1, 2, 2, 4, 1, 3, 3),
        // Big enough for threaded GEMMs and several images per task.
        dims(5, 16, 24, 9, 11, 3, 3),
        dims(5, 32, 40, 9, 11, 1, 1),
        // Wide enough, on enough pixels, for the GEMM paths of 1x1 convolutions (the
        // weight gradient's from 256 channels, in tasks of 4 images: here 4 + 1).
        dims(2, 130, 140, 8, 9, 1, 1),
        dims(5, 256, 264, 8, 8, 1, 1),
    ]
}

#[test]
fn conv2d_matches_direct_convolution() {
    for d in conv_cases() {
        let x = data(d.input_len(), 8);
        let w = data(d.weight_len(), 9);
        let bias = data(d.c_out, 10);
        let y = host(&B.conv2d(&buf(&x), &buf(&w), None, d).unwrap());
        assert_close(&y, &naive_conv(&x, &w, None, d), 1e-5);
        let want = naive_conv(&x, &w, Some(&bias), d);
        let y = host(&B.conv2d(&buf(&x), &buf(&w), Some(&buf(&bias)), d).unwrap());
        assert_close(&y, &want, 1e-5);
        let y = host(
            &B.conv2d_relu(&buf(&x), &buf(&w), Some(&buf(&bias)), d)
                .unwrap(),
        );
        let want_relu: Vec<f64> = want.iter().map(|v| v.max(0.0)).collect();
        assert_close(&y, &want_relu, 1e-5);
    }
}

#[test]
fn conv2d_backwards_match_naive_adjoints() {
    for d in conv_cases() {
        let x = data(d.input_len(), 11);
        let w = data(d.weight_len(), 12);
        let dy = data(d.output_len(), 13);
        let (want_dx, want_dw) = naive_conv_adjoints(&x, &w, &dy, d);
        let dx = host(&B.conv2d_backward_input(&buf(&dy), &buf(&w), d).unwrap());
        assert_close(&dx, &want_dx, 1e-5);
        let dw = host(&B.conv2d_backward_weight(&buf(&x), &buf(&dy), d).unwrap());
        assert_close(&dw, &want_dw, 1e-5);
    }
}

#[test]
fn permute_matches_index_arithmetic() {
    let cases: Vec<(&[usize], &[usize])> = vec![
        (&[2, 3, 4, 5], &[0, 1, 2, 3]),
        (&[2, 3, 4, 5], &[3, 2, 1, 0]),
        (&[2, 3, 4, 5], &[0, 2, 3, 1]),
        (&[2, 3, 4, 5], &[1, 0, 2, 3]),
        (&[2, 3, 4, 5], &[0, 3, 1, 2]),
        (&[3, 1, 4], &[2, 1, 0]),
        (&[300, 170], &[1, 0]),
        (&[4, 8, 33, 40], &[0, 2, 3, 1]),
    ];
    for (shape, perm) in cases {
        let x = data(numel(shape), 14);
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let want: Vec<f64> = (0..x.len())
            .map(|i| {
                let oi = unravel(i, &out_shape);
                let mut ii = vec![0; shape.len()];
                for (k, &p) in perm.iter().enumerate() {
                    ii[p] = oi[k];
                }
                x[ravel(&ii, shape)] as f64
            })
            .collect();
        let y = host(&B.permute(&buf(&x), shape, perm).unwrap());
        assert_close(&y, &want, 0.0);
    }
}

#[test]
fn slice_concat_gather_match_index_arithmetic() {
    for shape in [[3usize, 4, 5], [40, 30, 50]] {
        let x = data(numel(&shape), 15);
        let xb = buf(&x);
        for axis in 0..3 {
            // Slice: y[.., j, ..] = x[.., start + j, ..].
            let (start, len) = (1, shape[axis] - 2);
            let mut ys = shape;
            ys[axis] = len;
            let y = host(&B.slice(&xb, &shape, axis, start, len).unwrap());
            let want: Vec<f64> = (0..numel(&ys))
                .map(|i| {
                    let mut idx = unravel(i, &ys);
                    idx[axis] += start;
                    x[ravel(&idx, &shape)] as f64
                })
                .collect();
            assert_close(&y, &want, 0.0);

            // Concat of x and the slice: indices past shape[axis] come from the slice.
            let mut cs = shape;
            cs[axis] += len;
            let ysb = buf(&y);
            let c = host(
                &B.concat(&[(&xb, &shape[..]), (&ysb, &ys[..])], axis)
                    .unwrap(),
            );
            let want: Vec<f64> = (0..numel(&cs))
                .map(|i| {
                    let mut idx = unravel(i, &cs);
                    if idx[axis] < shape[axis] {
                        x[ravel(&idx, &shape)] as f64
                    } else {
                        idx[axis] -= shape[axis];
                        y[ravel(&idx, &ys)] as f64
                    }
                })
                .collect();
            assert_close(&c, &want, 0.0);

            // Gather with repeats and reordering.
            let indices = [shape[axis] - 1, 0, 2, 2, 1];
            let mut gs = shape;
            gs[axis] = indices.len();
            let g = host(&B.gather(&xb, &shape, axis, &indices).unwrap());
            let want: Vec<f64> = (0..numel(&gs))
                .map(|i| {
                    let mut idx = unravel(i, &gs);
                    idx[axis] = indices[idx[axis]];
                    x[ravel(&idx, &shape)] as f64
                })
                .collect();
            assert_close(&g, &want, 0.0);
        }
    }
}

#[test]
fn concat_of_aliased_parts() {
    let a = buf(&[1.0, 2.0]);
    let c = host(&B.concat(&[(&a, &[2][..]), (&a, &[2][..])], 0).unwrap());
    assert_eq!(c, vec![1.0, 2.0, 1.0, 2.0]);
}

#[test]
fn random_is_the_counter_based_stream() {
    let n = 100_003;
    let (low, high) = (-2.0f32, 3.0f32);
    let u = host(
        &B.random(n, Distribution::Uniform { low, high }, 42)
            .unwrap(),
    );
    for (i, &v) in u.iter().enumerate() {
        assert_eq!(
            v,
            low + (high - low) * crate::random::uniform01(42, i as u32)
        );
        assert!((low..high).contains(&v));
    }
    let (mean, std) = (1.0f32, 0.5f32);
    let g = host(&B.random(n, Distribution::Normal { mean, std }, 7).unwrap());
    for (i, &v) in g.iter().enumerate() {
        assert_eq!(v, mean + std * crate::random::normal(7, i as u32));
    }
    // And the stream has the right moments (tolerances are ~5 standard errors).
    let m = g.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = g.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
    assert!(
        (m - 1.0).abs() < 0.01 && (var.sqrt() - 0.5).abs() < 0.01,
        "{m} {var}"
    );
}

/// The documented Adam/Adamax step in f64, one element at a time.
fn naive_adam(p: &mut [f64], g: &[f32], m: &mut [f64], v: &mut [f64], s: &AdamStep) {
    let (b1, b2, eps, lr) = (s.beta1 as f64, s.beta2 as f64, s.eps as f64, s.lr as f64);
    let t = s.step as i32;
    for i in 0..p.len() {
        let g = g[i] as f64 + s.weight_decay as f64 * p[i];
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        match s.kind {
            AdamKind::Adam => {
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let mhat = m[i] / (1.0 - b1.powi(t));
                let vhat = v[i] / (1.0 - b2.powi(t));
                p[i] -= lr * mhat / (vhat.sqrt() + eps);
            }
            AdamKind::Adamax => {
                v[i] = (b2 * v[i]).max(g.abs() + eps);
                p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / v[i];
            }
        }
    }
}

#[test]
fn adam_update_matches_the_documented_formulas() {
    for kind in [AdamKind::Adam, AdamKind::Adamax] {
        for len in [37, 70_001] {
            let step = AdamStep {
                kind,
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                step: 3,
            };
            let p0 = data(len, 16);
            let g = data(len, 17);
            let m0: Vec<f32> = data(len, 18).iter().map(|v| v * 0.1).collect();
            let v0: Vec<f32> = data(len, 19).iter().map(|v| v.abs() * 0.1 + 0.01).collect();
            let (pb, gb, mb, vb) = (buf(&p0), buf(&g), buf(&m0), buf(&v0));
            B.adam_update(&pb, &gb, &mb, &vb, len, &step).unwrap();
            let (mut p, mut m, mut v) = (to_f64(&p0), to_f64(&m0), to_f64(&v0));
            naive_adam(&mut p, &g, &mut m, &mut v, &step);
            assert_close(&host(&pb), &p, 1e-5);
            assert_close(&host(&mb), &m, 1e-5);
            assert_close(&host(&vb), &v, 1e-5);
            // The update really moved the parameters.
            assert_ne!(host(&pb), p0);
        }
    }
}

#[test]
fn adam_update_refuses_aliased_buffers() {
    let step = AdamStep {
        kind: AdamKind::Adam,
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let (a, b, c) = (buf(&[1.0]), buf(&[1.0]), buf(&[1.0]));
    for (p, g, m, v) in [(&a, &a, &b, &c), (&a, &b, &a, &c), (&a, &b, &c, &c)] {
        let err = B.adam_update(p, g, m, v, 1, &step).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    op: "adam_update",
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(host(&a), vec![1.0], "nothing was written");
}
