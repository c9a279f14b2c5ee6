//! Vulkan device parity tests: every `Backend` primitive, forward and backward, against
//! a naive host reference written out in this file (f64 accumulation).
//!
//! Run: `cargo test --test vulkan_backend` (the root package enables the `vulkan`
//! feature by default). The tests open the process-wide device with the Khronos
//! validation layer on (when installed) and fail on any validation message. With no
//! Vulkan device they fail, unless `ENGINE_NO_VULKAN=1` is set, in which case they skip.
//! Choose a device with `ENGINE_VULKAN_DEVICE=<index or name>`.
//!
//! Agreement is measured as the normalised error `|a - b|₂ / max(|b|₂, 1e-30)`; the bound
//! is 1e-5 except where a comment gives the reason for another.
#![cfg(feature = "vulkan")]

use engine::backend::*;
use engine::vulkan::{validation_message_count, VulkanDevice, VulkanOptions};

/// The shared device with validation on, or `None` when `ENGINE_NO_VULKAN=1`.
fn device() -> Option<VulkanDevice> {
    glow_rs::testing::vulkan_backend()
}

/// Deterministic test data in [lo, hi).
use glow_rs::testing::test_data as data;

fn norm_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f32], tol: f64, what: &str) {
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output {got:?}"
    );
    let e = norm_err(got, want);
    assert!(e <= tol, "{what}: normalised error {e:e} > {tol:e}");
}

/// No validation layer message so far (checked at the end of every test).
fn assert_no_validation_messages() {
    assert_eq!(
        validation_message_count(),
        0,
        "validation layer reported problems"
    );
}

fn up(d: &VulkanDevice, x: &[f32]) -> VulkanBuffer {
    d.from_host(x).unwrap()
}

use engine::vulkan::VulkanBuffer;

#[test]
fn upload_readback_and_full() {
    let Some(d) = device() else { return };
    let x = data(1000, 1, -1.0, 1.0);
    assert_eq!(d.to_host(&up(&d, &x)).unwrap(), x);
    assert_eq!(d.to_host(&d.full(77, 2.5).unwrap()).unwrap(), vec![2.5; 77]);
    assert!(d.to_host(&d.full(0, 1.0).unwrap()).unwrap().is_empty());
    assert_no_validation_messages();
}

#[test]
fn unary_ops_match_reference() {
    let Some(d) = device() else { return };
    let any = data(4099, 2, -6.0, 6.0);
    let pos = data(4099, 3, 0.01, 5.0);
    // Large magnitudes check the overflow-free forms of sigmoid, softplus and tanh.
    let mut wide = data(64, 4, -120.0, 120.0);
    wide.extend([-100.0, 100.0, -88.7, 88.7, 0.0, -0.0]);
    type F = fn(f64) -> f64;
    let cases: Vec<(UnaryOp, &[f32], F)> = vec![
        (UnaryOp::Neg, &any, |x| -x),
        (UnaryOp::Exp, &any, f64::exp),
        (UnaryOp::Log, &pos, f64::ln),
        (UnaryOp::Sigmoid, &any, |x| 1.0 / (1.0 + (-x).exp())),
        (UnaryOp::Sigmoid, &wide, |x| 1.0 / (1.0 + (-x).exp())),
        (UnaryOp::Softplus, &any, |x| {
            x.max(0.0) + (-x.abs()).exp().ln_1p()
        }),
        (UnaryOp::Softplus, &wide, |x| {
            x.max(0.0) + (-x.abs()).exp().ln_1p()
        }),
        (UnaryOp::Relu, &any, |x| x.max(0.0)),
        (UnaryOp::Step, &any, |x| if x > 0.0 { 1.0 } else { 0.0 }),
        (UnaryOp::Sqrt, &pos, f64::sqrt),
        (UnaryOp::Recip, &pos, |x| 1.0 / x),
        (UnaryOp::Square, &any, |x| x * x),
        (UnaryOp::Abs, &any, f64::abs),
        (UnaryOp::Tanh, &any, f64::tanh),
        (UnaryOp::Tanh, &wide, f64::tanh),
        (UnaryOp::Scale(-1.5), &any, |x| -1.5 * x),
        (UnaryOp::AddScalar(0.25), &any, |x| x + 0.25),
        (UnaryOp::Powf(2.5), &pos, |x| x.powf(2.5)),
        (UnaryOp::Powf(3.0), &any, |x| x.powi(3)),
        (UnaryOp::Powf(-2.0), &any, |x| x.powi(-2)),
    ];
    for (op, x, f) in cases {
        let got = d
            .to_host(&d.unary(op, &up(&d, x), x.len()).unwrap())
            .unwrap();
        let want: Vec<f32> = x.iter().map(|&v| f(v as f64) as f32).collect();
        // exp/log/pow on the device are a few ulp off (GLSL allows 3 + 2|x| ulp for exp);
        // 1e-5 of the norm covers that with margin.
        assert_close(&got, &want, 1e-5, &format!("{op:?}"));
    }
    assert_no_validation_messages();
}

/// Naive broadcasting reference over any rank.
fn broadcast_ref(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &[usize],
    f: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    let len: usize = out.iter().product();
    let index = |mut i: usize, shape: &[usize]| {
        let mut off = 0;
        let mut stride = 1;
        for d in (0..out.len()).rev() {
            let c = i % out[d];
            i /= out[d];
            if shape[d] != 1 {
                off += c * stride;
            }
            stride *= shape[d];
        }
        off
    };
    (0..len)
        .map(|i| f(a[index(i, a_shape)], b[index(i, b_shape)]))
        .collect()
}

/// A host reference of one binary op.
type BinFn = fn(f32, f32) -> f32;

#[test]
fn binary_ops_broadcast() {
    let Some(d) = device() else { return };
    let shapes: &[(&[usize], &[usize], &[usize])] = &[
        (&[2, 3, 4], &[2, 3, 4], &[2, 3, 4]),
        (&[2, 3, 4], &[1, 3, 1], &[2, 3, 4]),
        (&[4, 1], &[1, 5], &[4, 5]),
        (&[1], &[7], &[7]),
        (
            &[2, 1, 3, 1, 2, 3],
            &[1, 4, 3, 2, 1, 3],
            &[2, 4, 3, 2, 2, 3],
        ),
        // Rank 8, but the size-1 and contiguous axes merge to rank <= 6.
        (
            &[2, 1, 1, 3, 4, 1, 1, 5],
            &[1, 1, 1, 3, 4, 1, 1, 1],
            &[2, 1, 1, 3, 4, 1, 1, 5],
        ),
    ];
    for (i, (sa, sb, so)) in shapes.iter().enumerate() {
        let a = data(sa.iter().product(), 10 + i as u64, -2.0, 2.0);
        let b = data(sb.iter().product(), 20 + i as u64, 0.5, 2.0);
        let ops: [(BinaryOp, BinFn); 6] = [
            (BinaryOp::Add, |x, y| x + y),
            (BinaryOp::Sub, |x, y| x - y),
            (BinaryOp::Mul, |x, y| x * y),
            (BinaryOp::Div, |x, y| x / y),
            (BinaryOp::Max, f32::max),
            (BinaryOp::ReluGrad, |x, y| if y > 0.0 { x } else { 0.0 }),
        ];
        for (op, f) in ops {
            // relu_grad's gate needs both signs of `b`; the others keep it off zero.
            let b: Vec<f32> = match op {
                BinaryOp::ReluGrad => b.iter().map(|v| v - 1.25).collect(),
                _ => b.clone(),
            };
            let got = d
                .to_host(&d.binary(op, &up(&d, &a), sa, &up(&d, &b), sb, so).unwrap())
                .unwrap();
            let want = broadcast_ref(&a, sa, &b, sb, so, f);
            assert_close(&got, &want, 1e-6, &format!("{op:?} {sa:?} {sb:?}"));
        }
    }
    assert_no_validation_messages();
}

/// Naive reduction reference.
fn reduce_ref(x: &[f32], shape: &[usize], axes: &[usize], max: bool) -> Vec<f32> {
    let out_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &e)| if axes.contains(&d) { 1 } else { e })
        .collect();
    let n_out: usize = out_shape.iter().product();
    let mut acc = vec![if max { f64::NEG_INFINITY } else { 0.0 }; n_out];
    for (i, &v) in x.iter().enumerate() {
        let (mut rem, mut o, mut stride) = (i, 0, 1);
        for d in (0..shape.len()).rev() {
            let c = rem % shape[d];
            rem /= shape[d];
            if !axes.contains(&d) {
                o += c * stride;
            }
            stride *= out_shape[d];
        }
        acc[o] = if max {
            acc[o].max(v as f64)
        } else {
            acc[o] + v as f64
        };
    }
    acc.into_iter().map(|v| v as f32).collect()
}

#[test]
fn reduce_sum_and_max_over_any_axes() {
    let Some(d) = device() else { return };
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4, 5, 6], &[]),
        (&[3, 4, 5, 6], &[0]),
        (&[3, 4, 5, 6], &[1, 3]),
        (&[3, 4, 5, 6], &[2]),
        (&[3, 4, 5, 6], &[0, 1, 2, 3]),
        (&[2, 300], &[1]),
        (&[5000], &[0]),
        (&[7, 200, 3], &[0, 1]),
        // Many outputs with a long reduction: more than 65535 workgroups.
        (&[70000, 70], &[1]),
    ];
    for (i, (shape, axes)) in cases.iter().enumerate() {
        // Every other case is all negative, which exposes a wrong identity for max
        // (0 instead of -inf).
        let (lo, hi) = if i % 2 == 1 {
            (-3.0, -1.0)
        } else {
            (-1.0, 1.0)
        };
        let x = data(shape.iter().product(), 30 + i as u64, lo, hi);
        let xb = up(&d, &x);
        for (op, max) in [(ReduceOp::Sum, false), (ReduceOp::Max, true)] {
            let got = d.to_host(&d.reduce(op, &xb, shape, axes).unwrap()).unwrap();
            // Sums are accumulated in a different order than the f64 reference.
            assert_close(
                &got,
                &reduce_ref(&x, shape, axes, max),
                1e-5,
                &format!("{op:?} {shape:?} {axes:?}"),
            );
        }
    }
    assert_no_validation_messages();
}

fn matmul_ref(a: &[f32], b: &[f32], dm: MatmulDims) -> Vec<f32> {
    let MatmulDims { batch, m, k, n, .. } = dm;
    let mut c = vec![0f32; batch * m * n];
    for bi in 0..batch {
        let ab = if dm.a_batched { bi * m * k } else { 0 };
        let bb = if dm.b_batched { bi * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    let av = if dm.trans_a {
                        a[ab + p * m + i]
                    } else {
                        a[ab + i * k + p]
                    };
                    let bv = if dm.trans_b {
                        b[bb + j * k + p]
                    } else {
                        b[bb + p * n + j]
                    };
                    s += av as f64 * bv as f64;
                }
                c[(bi * m + i) * n + j] = s as f32;
            }
        }
    }
    c
}

#[test]
fn matmul_with_transposes_and_broadcast_operands() {
    let Some(d) = device() else { return };
    for bits in 0..16u32 {
        let dm = MatmulDims {
            batch: 3,
            m: 17,
            k: 33,
            n: 19,
            trans_a: bits & 1 != 0,
            trans_b: bits & 2 != 0,
            a_batched: bits & 4 != 0,
            b_batched: bits & 8 != 0,
        };
        let a = data(
            if dm.a_batched { 3 } else { 1 } * 17 * 33,
            40 + bits as u64,
            -1.0,
            1.0,
        );
        let b = data(
            if dm.b_batched { 3 } else { 1 } * 33 * 19,
            60 + bits as u64,
            -1.0,
            1.0,
        );
        let got = d
            .to_host(&d.matmul(&up(&d, &a), &up(&d, &b), dm).unwrap())
            .unwrap();
        assert_close(&got, &matmul_ref(&a, &b, dm), 1e-5, &format!("{dm:?}"));
    }
    // Larger products crossing many blocks, covering every per-invocation blocking
    // (1, 2 or 4 outputs per axis, picked from the extents).
    for (m, k, n) in [(130, 257, 67), (40, 70, 50), (70, 33, 33), (20, 100, 300)] {
        let dm = MatmulDims {
            batch: 2,
            m,
            k,
            n,
            a_batched: true,
            b_batched: false,
            trans_a: false,
            trans_b: true,
        };
        let a = data(2 * m * k, 90, -1.0, 1.0);
        let b = data(k * n, 91, -1.0, 1.0);
        let got = d
            .to_host(&d.matmul(&up(&d, &a), &up(&d, &b), dm).unwrap())
            .unwrap();
        assert_close(&got, &matmul_ref(&a, &b, dm), 1e-5, &format!("{m}x{k}x{n}"));
    }
    assert_no_validation_messages();
}

/// x[n, ci, y + ky - ph, x + kx - pw], zero outside.
fn conv_x(x: &[f32], c: &Conv2dDims, b: usize, ci: usize, iy: isize, ix: isize) -> f64 {
    if iy < 0 || ix < 0 || iy >= c.h as isize || ix >= c.w as isize {
        return 0.0;
    }
    x[((b * c.c_in + ci) * c.h + iy as usize) * c.w + ix as usize] as f64
}

fn conv_ref(x: &[f32], w: &[f32], bias: Option<&[f32]>, c: &Conv2dDims) -> Vec<f32> {
    let (ph, pw) = ((c.kh / 2) as isize, (c.kw / 2) as isize);
    let mut y = vec![0f32; c.output_len()];
    for b in 0..c.n {
        for co in 0..c.c_out {
            for oy in 0..c.h {
                for ox in 0..c.w {
                    let mut s = bias.map_or(0.0, |bb| bb[co] as f64);
                    for ci in 0..c.c_in {
                        for ky in 0..c.kh {
                            for kx in 0..c.kw {
                                let wv = w[((co * c.c_in + ci) * c.kh + ky) * c.kw + kx] as f64;
                                s += wv
                                    * conv_x(
                                        x,
                                        c,
                                        b,
                                        ci,
                                        oy as isize + ky as isize - ph,
                                        ox as isize + kx as isize - pw,
                                    );
                            }
                        }
                    }
                    y[((b * c.c_out + co) * c.h + oy) * c.w + ox] = s as f32;
                }
            }
        }
    }
    y
}

/// Both conv gradients by the chain rule over the forward's loops: each forward product
/// x·w contributes dy·w to dx and dy·x to dw.
fn conv_grads_ref(x: &[f32], w: &[f32], dy: &[f32], c: &Conv2dDims) -> (Vec<f32>, Vec<f32>) {
    let (ph, pw) = ((c.kh / 2) as isize, (c.kw / 2) as isize);
    let mut dx = vec![0f64; c.input_len()];
    let mut dw = vec![0f64; c.weight_len()];
    for b in 0..c.n {
        for co in 0..c.c_out {
            for oy in 0..c.h {
                for ox in 0..c.w {
                    let g = dy[((b * c.c_out + co) * c.h + oy) * c.w + ox] as f64;
                    for ci in 0..c.c_in {
                        for ky in 0..c.kh {
                            for kx in 0..c.kw {
                                let iy = oy as isize + ky as isize - ph;
                                let ix = ox as isize + kx as isize - pw;
                                if iy < 0 || ix < 0 || iy >= c.h as isize || ix >= c.w as isize {
                                    continue;
                                }
                                let xi =
                                    ((b * c.c_in + ci) * c.h + iy as usize) * c.w + ix as usize;
                                let wi = ((co * c.c_in + ci) * c.kh + ky) * c.kw + kx;
                                dx[xi] += g * w[wi] as f64;
                                dw[wi] += g * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (f(dx), f(dw))
}

#[test]
fn conv2d_forward_and_backward() {
    let Some(d) = device() else { return };
    let shapes = [
        Conv2dDims {
            n: 2,
            c_in: 3,
            c_out: 4,
            h: 7,
            w: 9,
            kh: 3,
            kw: 3,
        },
        Conv2dDims {
            n: 1,
            c_in: 5,
            c_out: 2,
            h: 6,
            w: 5,
            kh: 1,
            kw: 1,
        },
        Conv2dDims {
            n: 3,
            c_in: 2,
            c_out: 3,
            h: 5,
            w: 8,
            kh: 3,
            kw: 5,
        },
        Conv2dDims {
            n: 2,
            c_in: 16,
            c_out: 8,
            h: 16,
            w: 16,
            kh: 3,
            kw: 3,
        },
    ];
    for (i, c) in shapes.iter().enumerate() {
        let s = 100 + 10 * i as u64;
        let x = data(c.input_len(), s, -1.0, 1.0);
        let w = data(c.weight_len(), s + 1, -0.5, 0.5);
        let bias = data(c.c_out, s + 2, -1.0, 1.0);
        let dy = data(c.output_len(), s + 3, -1.0, 1.0);
        let (xb, wb, bb, dyb) = (up(&d, &x), up(&d, &w), up(&d, &bias), up(&d, &dy));
        let y = d
            .to_host(&d.conv2d(&xb, &wb, Some(&bb), *c).unwrap())
            .unwrap();
        assert_close(
            &y,
            &conv_ref(&x, &w, Some(&bias), c),
            1e-5,
            &format!("conv2d {c:?}"),
        );
        let y = d.to_host(&d.conv2d(&xb, &wb, None, *c).unwrap()).unwrap();
        assert_close(
            &y,
            &conv_ref(&x, &w, None, c),
            1e-5,
            &format!("conv2d no bias {c:?}"),
        );
        let (dx_ref, dw_ref) = conv_grads_ref(&x, &w, &dy, c);
        let dx = d
            .to_host(&d.conv2d_backward_input(&dyb, &wb, *c).unwrap())
            .unwrap();
        assert_close(&dx, &dx_ref, 1e-5, &format!("conv2d_backward_input {c:?}"));
        let dw = d
            .to_host(&d.conv2d_backward_weight(&xb, &dyb, *c).unwrap())
            .unwrap();
        assert_close(&dw, &dw_ref, 1e-5, &format!("conv2d_backward_weight {c:?}"));
    }
    assert_no_validation_messages();
}

#[test]
fn layout_ops_permute_slice_concat_gather() {
    let Some(d) = device() else { return };
    // permute [2, 3, 4, 5] by [2, 0, 3, 1]
    let shape = [2, 3, 4, 5];
    let x = data(120, 200, -1.0, 1.0);
    let perm = [2, 0, 3, 1];
    let got = d
        .to_host(&d.permute(&up(&d, &x), &shape, &perm).unwrap())
        .unwrap();
    let mut want = Vec::new();
    for i2 in 0..4 {
        for i0 in 0..2 {
            for i3 in 0..5 {
                for i1 in 0..3 {
                    want.push(x[((i0 * 3 + i1) * 4 + i2) * 5 + i3]);
                }
            }
        }
    }
    assert_eq!(got, want, "permute");
    // A full reversal of a rank-6 tensor cannot merge axes: the kernel's full rank.
    let shape6 = [2, 3, 2, 2, 3, 2];
    let x6 = data(144, 201, -1.0, 1.0);
    let rev = d
        .permute(&up(&d, &x6), &shape6, &[5, 4, 3, 2, 1, 0])
        .unwrap();
    let back = d
        .permute(&rev, &[2, 3, 2, 2, 3, 2], &[5, 4, 3, 2, 1, 0])
        .unwrap();
    assert_eq!(d.to_host(&back).unwrap(), x6, "permute rank 6 round trip");

    // slice axis 1 of [2, 3, 4, 5], range 1..3
    let got = d
        .to_host(&d.slice(&up(&d, &x), &shape, 1, 1, 2).unwrap())
        .unwrap();
    let want: Vec<f32> = (0..120)
        .filter(|i| (1..3).contains(&((i / 20) % 3)))
        .map(|i| x[i])
        .collect();
    assert_eq!(got, want, "slice");

    // concat along each axis of [2, 3, 4] and [2, 3, 4]-shaped-with-other-extent parts
    let a = data(24, 202, -1.0, 1.0);
    for axis in 0..3 {
        let mut sb = [2, 3, 4];
        sb[axis] = 5;
        let b = data(sb.iter().product(), 203, -1.0, 1.0);
        let got = d
            .to_host(
                &d.concat(
                    &[(&up(&d, &a), &[2, 3, 4][..]), (&up(&d, &b), &sb[..])],
                    axis,
                )
                .unwrap(),
            )
            .unwrap();
        let outer: usize = [2, 3, 4][..axis].iter().product();
        let (ca, cb) = (24 / outer, sb.iter().product::<usize>() / outer);
        let mut want = Vec::new();
        for o in 0..outer {
            want.extend_from_slice(&a[o * ca..(o + 1) * ca]);
            want.extend_from_slice(&b[o * cb..(o + 1) * cb]);
        }
        assert_eq!(got, want, "concat axis {axis}");
    }

    // gather axis 1 of [2, 3, 4, 5] with repeated indices
    let idx = [2, 0, 2, 1];
    let got = d
        .to_host(&d.gather(&up(&d, &x), &shape, 1, &idx).unwrap())
        .unwrap();
    let mut want = Vec::new();
    for o in 0..2 {
        for &j in &idx {
            want.extend_from_slice(&x[(o * 3 + j) * 20..(o * 3 + j + 1) * 20]);
        }
    }
    assert_eq!(got, want, "gather");
    assert_no_validation_messages();
}

#[test]
fn random_fills_match_the_host_hash() {
    let Some(d) = device() else { return };
    let seed = 0x1234_5678_9abc_def0;
    let got = d
        .to_host(
            &d.random(
                10_000,
                Distribution::Uniform {
                    low: -2.0,
                    high: 3.0,
                },
                seed,
            )
            .unwrap(),
        )
        .unwrap();
    let want: Vec<f32> = (0..10_000)
        .map(|i| -2.0 + 5.0 * engine::random::uniform01(seed, i))
        .collect();
    // Same integer hash; only the final affine map may round differently (fma).
    assert_close(&got, &want, 1e-7, "uniform");
    let got = d
        .to_host(
            &d.random(
                10_000,
                Distribution::Normal {
                    mean: 1.0,
                    std: 2.0,
                },
                seed,
            )
            .unwrap(),
        )
        .unwrap();
    let want: Vec<f32> = (0..10_000)
        .map(|i| 1.0 + 2.0 * engine::random::normal(seed, i))
        .collect();
    // Box-Muller through the device's log and cos: a few ulp per element.
    assert_close(&got, &want, 1e-5, "normal");
    assert_no_validation_messages();
}

fn adam_ref(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    let bc1 = 1.0 - (s.beta1 as f64).powi(s.step as i32);
    let bc2 = 1.0 - (s.beta2 as f64).powi(s.step as i32);
    for i in 0..p.len() {
        let (b1, b2, eps, lr) = (s.beta1 as f64, s.beta2 as f64, s.eps as f64, s.lr as f64);
        let gi = g[i] as f64 + s.weight_decay as f64 * p[i] as f64;
        let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
        let (vi, upd) = match s.kind {
            AdamKind::Adam => {
                let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
                (vi, lr * (mi / bc1) / ((vi / bc2).sqrt() + eps))
            }
            AdamKind::Adamax => {
                let vi = (b2 * v[i] as f64).max(gi.abs() + eps);
                (vi, lr / bc1 * mi / vi)
            }
        };
        m[i] = mi as f32;
        v[i] = vi as f32;
        p[i] = (p[i] as f64 - upd) as f32;
    }
}

#[test]
fn adam_and_adamax_updates() {
    let Some(d) = device() else { return };
    for kind in [AdamKind::Adam, AdamKind::Adamax] {
        let n = 3000;
        let mut p = data(n, 300, -1.0, 1.0);
        let mut m = vec![0.0; n];
        let mut v = vec![0.0; n];
        let (pb, mb, vb) = (up(&d, &p), up(&d, &m), up(&d, &v));
        for step in 1..=3 {
            let g = data(n, 310 + step as u64, -1.0, 1.0);
            let s = AdamStep {
                kind,
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-4,
                step,
            };
            d.adam_update(&pb, &up(&d, &g), &mb, &vb, n, &s).unwrap();
            adam_ref(&mut p, &g, &mut m, &mut v, &s);
        }
        assert_close(
            &d.to_host(&pb).unwrap(),
            &p,
            1e-6,
            &format!("{kind:?} param"),
        );
        assert_close(&d.to_host(&mb).unwrap(), &m, 1e-5, &format!("{kind:?} m"));
        assert_close(&d.to_host(&vb).unwrap(), &v, 1e-5, &format!("{kind:?} v"));
    }
    assert_no_validation_messages();
}

/// A long chain of dependent ops spans several command buffers (256 dispatches each)
/// with no host wait in between; the result must still be exact.
#[test]
fn long_dependent_chains_span_batches() {
    let Some(d) = device() else { return };
    let mut x = d.full(1000, 0.0).unwrap();
    for _ in 0..700 {
        x = d.unary(UnaryOp::AddScalar(1.0), &x, 1000).unwrap();
    }
    assert_eq!(d.to_host(&x).unwrap(), vec![700.0; 1000]);
    assert_no_validation_messages();
}

/// The device is shared per process and compares equal to itself.
#[test]
fn default_device_is_shared() {
    let Some(d) = device() else { return };
    assert_eq!(VulkanDevice::default_device().unwrap(), d);
    assert_eq!(
        engine::Device::vulkan().unwrap(),
        engine::Device::Vulkan(d.clone())
    );
    assert!(d.name().starts_with("vulkan:"));
}

/// An unknown device name is a one-line error, not a panic.
#[test]
fn unknown_device_is_an_error() {
    if device().is_none() {
        return;
    }
    let options = VulkanOptions {
        device: Some(engine::vulkan::DeviceSelector::Name("no such gpu".into())),
        ..Default::default()
    };
    match VulkanDevice::new(options) {
        Err(engine::Error::Device(msg)) => assert!(msg.contains("no device named")),
        other => panic!("expected a device error, got {other:?}"),
    }
}
