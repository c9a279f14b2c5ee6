//! Every `Backend` primitive on every fast device against one oracle: the reference
//! device (`engine::reference`, each primitive written plainly on ndarray in `f64`).
//!
//! - Each primitive family has one generic body, `check_xxx<B: Backend>(b: &B)`, which
//!   runs the primitive on `b` and on [`ReferenceBackend`] with the same inputs and
//!   compares the outputs. [`primitive_tests!`] turns each body into a module `xxx` with
//!   the tests `cpu` and (with the `vulkan` feature) `vulkan`; the Vulkan device has the
//!   Khronos validation layer on and fails on any message; where no Vulkan device opens
//!   it skips, by the rules of `engine::testing::vulkan_device`.
//! - Agreement is the normalised error `|got − want|₂ / max(|want|₂, 1e-30)` over a whole
//!   output, plus a check that every output element is finite, under a tolerance per
//!   family (the `const`s below, each with the reason for its value). Ops that only move
//!   values, or compute one correctly rounded `f32` operation, must match exactly.
//! - The case lists reach each device's separate code paths: lengths past the CPU's
//!   `PAR_THRESHOLD` (32·1024 elements) for its parallel loops; the CPU convolution's
//!   GEMM paths (`cpu/conv.rs`); ranks past what Vulkan's strided kernels merge to, and
//!   more workgroups than one grid axis holds.
//! - The reference itself is checked against values that it does not compute:
//!   `reference_oracle` holds small cases derived by hand (the derivation beside each
//!   literal), and `reference_adjoints` checks that its convolution's two backward ops
//!   are the adjoints of the forward (`engine/tests/ops.rs` adds hand-worked values of the
//!   tensor-level ops on every device, the reference included).
//!
//! Run: `cargo test --test primitives`. Device behaviour that is not about values stays
//! with the device: `engine/tests/vulkan_backend.rs`, and `engine/src/cpu/tests.rs`.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use engine::backend::fused::*;
use engine::backend::*;
use engine::reference::ReferenceBackend;
use engine::testing::test_data as data;

/// The oracle.
const REF: ReferenceBackend = ReferenceBackend;

/// `primitive_tests! { name: check_fn, .. }`: a module `name` per body, with one test per
/// fast device.
macro_rules! primitive_tests {
    ($($name:ident: $check:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn cpu() {
                super::$check(&engine::cpu::CpuBackend);
            }

            #[cfg(feature = "vulkan")]
            #[test]
            fn vulkan() {
                if let Some(d) = engine::testing::vulkan_backend() {
                    super::$check(&d);
                    engine::testing::assert_no_validation_messages();
                }
            }
        }
    )*};
}

primitive_tests! {
    unary: check_unary,
    binary: check_binary,
    aliased_inputs: check_aliased_inputs,
    reduce: check_reduce,
    reduce_sum_of_a_million: check_reduce_sum_of_a_million,
    matmul: check_matmul,
    conv2d: check_conv2d,
    conv2d_backward: check_conv2d_backward,
    permute: check_permute,
    slice_concat_gather: check_slice_concat_gather,
    random: check_random,
    affine_coupling: check_affine_coupling,
    gaussian_log_prob: check_gaussian_log_prob,
    adam_update: check_adam_update,
}

/// The fused ops' default compositions (`engine::backend::fused::Fused`), on the CPU
/// device's core primitives alone, against the reference device's fused ops.
#[test]
fn the_fused_ops_composed_from_the_core_agree_with_the_reference() {
    let core = CoreOnly(engine::cpu::CpuBackend);
    check_affine_coupling(&core);
    check_gaussian_log_prob(&core);
}

/// The GEMM-tiled kernels (matmul and the three convolutions) at the other workgroup
/// edge a device may choose (8 instead of 16, see `gemm_tile` in
/// `engine/src/vulkan/backend.rs`), on a private device opened with that tile.
#[cfg(feature = "vulkan")]
#[test]
fn gemm_kernels_at_the_small_tile_on_vulkan() {
    let Some(options) = engine::testing::vulkan_options() else {
        return;
    };
    let options = engine::vulkan::VulkanOptions {
        gemm_tile: Some(8),
        ..options
    };
    let d = engine::vulkan::VulkanDevice::new(options).unwrap();
    check_matmul(&d);
    check_conv2d(&d);
    check_conv2d_backward(&d);
    engine::testing::assert_no_validation_messages();
}

/// The naive convolution kernel (`shaders/conv2d_naive.comp`, the tour's starting point)
/// against the reference, on a private device opened with it.
#[cfg(feature = "vulkan")]
#[test]
fn the_naive_conv2d_kernel_on_vulkan() {
    let Some(options) = engine::testing::vulkan_options() else {
        return;
    };
    let options = engine::vulkan::VulkanOptions {
        conv: engine::vulkan::ConvKernel::Naive,
        ..options
    };
    let d = engine::vulkan::VulkanDevice::new(options).unwrap();
    check_conv2d(&d);
    engine::testing::assert_no_validation_messages();
}

// ---- Tolerances ---------------------------------------------------------------------
//
// f32 has a 24-bit significand: one rounding is a relative error of at most
// 2^-24 ≈ 6e-8 (half an ulp). The reference accumulates in f64 and rounds each output
// once, so its error is below that; what a tolerance has to cover is the fast device's.
// "Measured" is the largest normalised error of the family over the cases below, on the
// CPU and on Vulkan (Mesa's lavapipe).

/// Results that are one correctly rounded `f32` operation, or none: layout copies, neg,
/// abs, relu, step, and `+ − ×` and `max` of two `f32`s. The `f64` result of `+` or `×`
/// of two `f32`s is exact at these magnitudes, so the reference's single rounding gives
/// the correctly rounded `f32` result, which IEEE arithmetic (CPU) and Vulkan (its
/// precision rules make `+ − ×` correctly rounded) both produce. Measured: 0.
const EXACT: f64 = 0.0;

/// `1/x`, `√x` and `a/b`: correctly rounded on the CPU; GLSL allows 2.5 ulp for
/// division and builds `sqrt` from `inversesqrt` (2 ulp) and a division, so up to ~5 ulp
/// (3e-7) per element. Measured: 0 on both.
const DIVISION: f64 = 1e-6;

/// exp, log, sigmoid, softplus, tanh and pow: GLSL allows `exp` 3 + 2|x| ulp (15 ulp,
/// 1e-6, at |x| = 6) and builds `pow` from `exp2(y · log2 x)`, whose error grows with
/// `|y · log2 x|` (≤ 8 here); libm and the CPU's polynomials are within a few ulp.
/// 1e-5 covers that with a margin of about 10. Measured: 4e-8 (CPU), 4e-7 (Vulkan, pow);
/// the fused ops' elementwise outputs (through sigmoid and e^-logs) 2.5e-7.
const TRANSCENDENTAL: f64 = 1e-5;

/// `exp` on inputs up to 88 (e^88 ≈ 1.7e38, near `f32::MAX`): GLSL's bound is
/// 3 + 2·88 = 179 ulp ≈ 1.1e-5 there, and the largest outputs dominate the norm.
/// Measured: 0 (CPU), 1.7e-6 (Vulkan).
const EXP_NEAR_OVERFLOW: f64 = 2e-5;

/// Sums of k `f32` terms (reductions, matmul, convolutions, the log-densities): the CPU
/// adds in `f32` lanes or blocks and the Vulkan kernels in `f32` trees, in orders other
/// than the reference's. With random signs the rounding errors add like a random walk,
/// about √k · 2^-24 of the sum's scale: 1e-6 for k ≈ 300 (matmul's k ≤ 257, a 1x1
/// convolution over 256 channels, a weight gradient over 5·99 pixels), a little more for
/// the reductions' few long sums. 1e-5 leaves a margin of ~10; a wrong term or a wrong
/// sign costs far more than that. Measured: 4e-7 (CPU), 1.4e-6 (Vulkan, the sum of
/// 55 296 elements).
const SUM: f64 = 1e-5;

/// The sum of 2^20 copies of 0.1. One running `f32` sum over all of them drifts by
/// about 1%. The Vulkan kernel (`shaders/reduce.comp`) has 128 invocations each add
/// 8192 terms in a running `f32` sum and then adds the 128 partial sums as a tree; for
/// this input every partial sum is the same, so the error is that of one running sum
/// of 8192 copies, 6.5e-5 (deterministic: it depends only on the kernel's order).
/// 1e-4 holds that and still fails the 1% drift. The CPU accumulates in `f64`, so it
/// is held to one rounding instead (see the check).
const MILLION_SUM: f64 = 1e-4;

/// Uniform fills: every device evaluates the same integer hash (`engine::random`); only
/// the final `low + (high − low) · u` may round differently on the GPU (contracted into
/// an fma), by at most an ulp. Measured: 0. (The CPU runs the host's functions and is
/// checked bit for bit.)
const RANDOM_UNIFORM: f64 = 1e-7;

/// Normal fills: Box–Muller through the device's own `log`, `sqrt` and `cos`, a few ulp
/// per element. Measured: 7.5e-8 (Vulkan).
const RANDOM_NORMAL: f64 = 1e-5;

/// Adam's parameters: each step rounds `p ~ 1` once, and its update (about
/// `lr = 1e-2`) after a handful of `f32` operations, a few ulp of the update: about
/// 2^-24 of `p` per step, 2e-7 after the three steps. Measured: 1.6e-8.
const ADAM_PARAM: f64 = 1e-6;

/// Adam's moments: `β1 m + (1 − β1) g` cancels where `m` and `g` have opposite signs,
/// which magnifies the result's relative rounding error. Measured: 7.4e-8; 1e-5 is the
/// bound the old per-device tests used.
const ADAM_MOMENT: f64 = 1e-5;

// ---- Helpers ------------------------------------------------------------------------

fn up<D: Backend>(d: &D, x: &[f32]) -> D::Buffer {
    d.from_host(x).unwrap()
}

fn host<D: Backend>(d: &D, x: &D::Buffer) -> Vec<f32> {
    d.to_host(x).unwrap()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `f()` for `key`, computed once per process: the `cpu` and `vulkan` tests of a family
/// ask for the same reference outputs, and the reference's convolution and matmul loops
/// are most of this file's run time (a 1x1 convolution over 256 channels takes seconds).
/// `key` must name everything the result depends on.
fn once_per_process<T: Clone + Send + Sync + 'static>(key: String, f: impl FnOnce() -> T) -> T {
    type Slot = Arc<OnceLock<Box<dyn Any + Send + Sync>>>;
    static DONE: Mutex<BTreeMap<String, Slot>> = Mutex::new(BTreeMap::new());
    let slot = DONE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .clone();
    let value = slot.get_or_init(|| Box::new(f()));
    value.downcast_ref::<T>().expect("one type per key").clone()
}

use engine::testing::normalised_error as norm_err;

/// Asserts that `got` (the device's) is finite and within `tol` of `want` (the
/// reference's) in normalised error; names the worst element when it is not.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        want.iter().all(|v| v.is_finite()),
        "{what}: the reference's output is not finite (a bad test input)"
    );
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("{what}: element {i} is {} (want {})", got[i], want[i]);
    }
    let err = norm_err(got, want);
    if err.is_nan() || err > tol {
        let (i, _) = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs())
            .enumerate()
            .fold((0, -1.0), |m, (i, e)| if e > m.1 { (i, e) } else { m });
        panic!(
            "{what}: normalised error {err:e} > {tol:e} (worst element {i}: got {}, want {})",
            got[i], want[i]
        );
    }
}

// ---- Elementwise --------------------------------------------------------------------

fn unary_on<D: Backend>(d: &D, op: UnaryOp, x: &[f32]) -> Vec<f32> {
    host(d, &d.unary(op, &up(d, x), x.len()).unwrap())
}

fn check_unary<B: Backend>(b: &B) {
    // 40 001 elements: past PAR_THRESHOLD, so the CPU's parallel map runs, in chunks
    // with a short last one.
    let any = data(40_001, 1, -6.0, 6.0);
    let pos = data(40_001, 2, 0.01, 5.0);
    // Large magnitudes, for the overflow-free forms of sigmoid, softplus and tanh.
    let mut wide = data(64, 3, -120.0, 120.0);
    wide.extend([
        -1000.0, -100.0, -88.7, -20.0, -0.0, 0.0, 20.0, 88.7, 100.0, 1000.0,
    ]);
    // exp from deep underflow (e^-100 is an f32 subnormal, e^-1000 is 0) to e^88,
    // just below f32::MAX.
    let exp_wide: Vec<f32> = wide.iter().map(|v| v.min(88.0)).collect();
    let cases: Vec<(UnaryOp, &[f32], f64)> = vec![
        (UnaryOp::Neg, &any, EXACT),
        (UnaryOp::Neg, &wide, EXACT),
        (UnaryOp::Relu, &any, EXACT),
        (UnaryOp::Relu, &wide, EXACT),
        (UnaryOp::Heaviside, &any, EXACT),
        (UnaryOp::Heaviside, &wide, EXACT),
        (UnaryOp::Abs, &any, EXACT),
        (UnaryOp::Square, &any, EXACT),
        (UnaryOp::Square, &wide, EXACT),
        (UnaryOp::Scale(-1.5), &any, EXACT),
        (UnaryOp::AddScalar(0.25), &any, EXACT),
        (UnaryOp::AddScalar(0.25), &wide, EXACT),
        // One f32 product on the negative side, as exact as the reference's rounding.
        (UnaryOp::LeakyRelu(0.1), &any, EXACT),
        (UnaryOp::LeakyRelu(-0.5), &wide, EXACT),
        (UnaryOp::Sqrt, &pos, DIVISION),
        (UnaryOp::Recip, &pos, DIVISION),
        (UnaryOp::Exp, &any, TRANSCENDENTAL),
        (UnaryOp::Exp, &exp_wide, EXP_NEAR_OVERFLOW),
        (UnaryOp::Log, &pos, TRANSCENDENTAL),
        (UnaryOp::Sigmoid, &any, TRANSCENDENTAL),
        (UnaryOp::Sigmoid, &wide, TRANSCENDENTAL),
        (UnaryOp::Softplus, &any, TRANSCENDENTAL),
        (UnaryOp::Softplus, &wide, TRANSCENDENTAL),
        (UnaryOp::Tanh, &any, TRANSCENDENTAL),
        (UnaryOp::Tanh, &wide, TRANSCENDENTAL),
        (UnaryOp::Powf(1.5), &pos, TRANSCENDENTAL),
        (UnaryOp::Powf(2.5), &pos, TRANSCENDENTAL),
        (UnaryOp::Powf(0.5), &pos, TRANSCENDENTAL),
        // Integer exponents of negative bases (GLSL's pow alone is undefined there).
        (UnaryOp::Powf(3.0), &any, TRANSCENDENTAL),
        (UnaryOp::Powf(-2.0), &any, TRANSCENDENTAL),
    ];
    for (op, x, tol) in cases {
        let what = format!("{op:?} on {} elements", x.len());
        assert_close(&what, &unary_on(b, op, x), &unary_on(&REF, op, x), tol);
    }
}

fn binary_on<D: Backend>(
    d: &D,
    op: BinaryOp,
    a: &[f32],
    sa: &[usize],
    c: &[f32],
    sc: &[usize],
    so: &[usize],
) -> Vec<f32> {
    host(d, &d.binary(op, &up(d, a), sa, &up(d, c), sc, so).unwrap())
}

/// `(a_shape, b_shape, out_shape)` of the broadcasting cases.
type BinaryShapes = (&'static [usize], &'static [usize], &'static [usize]);

const BINARY_SHAPES: &[BinaryShapes] = &[
    (&[1], &[1], &[1]),
    (&[1], &[7], &[7]),
    (&[3, 4], &[3, 4], &[3, 4]),
    (&[3, 4], &[1, 1], &[3, 4]),
    (&[1, 1], &[3, 4], &[3, 4]),
    (&[5, 1], &[1, 7], &[5, 7]),
    (&[4, 1], &[1, 5], &[4, 5]),
    (&[3, 4, 2], &[3, 4, 1], &[3, 4, 2]),
    (&[2, 3, 4], &[2, 3, 4], &[2, 3, 4]),
    (&[2, 3, 4], &[1, 3, 1], &[2, 3, 4]),
    (&[2, 3, 4, 5], &[1, 3, 1, 1], &[2, 3, 4, 5]),
    (&[1, 3, 1, 1], &[2, 3, 4, 5], &[2, 3, 4, 5]),
    (&[2, 1, 4, 1], &[1, 3, 1, 5], &[2, 3, 4, 5]),
    (&[4, 1, 5, 6], &[1, 3, 5, 1], &[4, 3, 5, 6]),
    // Rank 6 with no axes to merge: the Vulkan kernel's full rank.
    (
        &[2, 1, 3, 1, 2, 3],
        &[1, 4, 3, 2, 1, 3],
        &[2, 4, 3, 2, 2, 3],
    ),
    // Rank 8, whose size-1 and contiguous axes merge to rank <= 6 on Vulkan.
    (
        &[2, 1, 1, 3, 4, 1, 1, 5],
        &[1, 1, 1, 3, 4, 1, 1, 1],
        &[2, 1, 1, 3, 4, 1, 1, 5],
    ),
    // Past PAR_THRESHOLD, each of the CPU's three paths: the same shape (one zip), one
    // operand a single element (a map), and the general strided loop.
    (&[200, 201], &[200, 201], &[200, 201]),
    (&[200, 201], &[1, 1], &[200, 201]),
    (&[4, 16, 32, 32], &[1, 16, 1, 1], &[4, 16, 32, 32]),
];

fn check_binary<B: Backend>(b: &B) {
    for (i, &(sa, sc, so)) in BINARY_SHAPES.iter().enumerate() {
        let seed = 10 + 2 * i as u64;
        let a = data(numel(sa), seed, -2.0, 2.0);
        // Divisors away from 0; relu_grad's gate needs both signs.
        let positive = data(numel(sc), seed + 1, 0.5, 2.5);
        let signed = data(numel(sc), seed + 1, -1.25, 1.25);
        for (op, c, tol) in [
            (BinaryOp::Add, &positive, EXACT),
            (BinaryOp::Sub, &positive, EXACT),
            (BinaryOp::Mul, &positive, EXACT),
            (BinaryOp::Max, &positive, EXACT),
            (BinaryOp::ReluGrad, &signed, EXACT),
            (BinaryOp::Div, &positive, DIVISION),
        ] {
            let what = format!("{op:?} {sa:?} {sc:?} -> {so:?}");
            let got = binary_on(b, op, &a, sa, c, sc, so);
            let want = binary_on(&REF, op, &a, sa, c, sc, so);
            assert_close(&what, &got, &want, tol);
        }
    }
}

/// One buffer passed as several operands (the CPU's read locks must not conflict).
fn check_aliased_inputs<B: Backend>(b: &B) {
    fn run<D: Backend>(d: &D) -> Vec<Vec<f32>> {
        let a = up(d, &[1.0, -2.0, 3.0]);
        let same = d.binary(BinaryOp::Mul, &a, &[3], &a, &[3], &[3]).unwrap();
        // The same buffer as a column and as a row: an outer sum.
        let outer = d
            .binary(BinaryOp::Add, &a, &[3, 1], &a, &[1, 3], &[3, 3])
            .unwrap();
        let parts = [(&a, &[3][..]), (&a, &[3][..]), (&a, &[3][..])];
        let concat = d.concat(&parts, 0).unwrap();
        vec![host(d, &same), host(d, &outer), host(d, &concat)]
    }
    for (what, (got, want)) in ["a · a", "a + aᵀ", "concat(a, a, a)"]
        .iter()
        .zip(run(b).into_iter().zip(run(&REF)))
    {
        assert_close(what, &got, &want, EXACT);
    }
}

fn reduce_on<D: Backend>(
    d: &D,
    op: ReduceOp,
    x: &[f32],
    shape: &[usize],
    axes: &[usize],
) -> Vec<f32> {
    host(d, &d.reduce(op, &up(d, x), shape, axes).unwrap())
}

fn check_reduce<B: Backend>(b: &B) {
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4, 5], &[]),
        (&[2, 3, 4, 5], &[0]),
        (&[2, 3, 4, 5], &[1]),
        (&[2, 3, 4, 5], &[3]),
        (&[2, 3, 4, 5], &[0, 2]),
        (&[2, 3, 4, 5], &[1, 3]),
        (&[2, 3, 4, 5], &[0, 2, 3]),
        (&[2, 3, 4, 5], &[0, 1, 2, 3]),
        (&[7, 1, 3], &[1, 2]),
        (&[2, 300], &[1]),
        (&[5000], &[0]),
        (&[7, 200, 3], &[0, 1]),
        (&[6, 5, 40, 3], &[2]),
        (&[6, 5, 40, 3], &[0, 2, 3]),
        // Past PAR_THRESHOLD: the CPU splits a kept outer axis, or the reduced one.
        (&[6, 16, 24, 24], &[0]),
        (&[6, 16, 24, 24], &[3]),
        (&[6, 16, 24, 24], &[0, 2, 3]),
        (&[6, 16, 24, 24], &[1, 2, 3]),
        (&[6, 16, 24, 24], &[0, 1, 2, 3]),
        // 70 000 outputs: more workgroups than one Vulkan grid axis holds (65 535).
        (&[70_000, 70], &[1]),
    ];
    for (i, &(shape, axes)) in cases.iter().enumerate() {
        // Every other case is all negative, which exposes a wrong identity for max
        // (0 instead of -inf).
        let (lo, hi) = if i % 2 == 1 {
            (-3.0, -1.0)
        } else {
            (-1.0, 1.0)
        };
        let x = data(numel(shape), 30 + i as u64, lo, hi);
        for (op, tol) in [(ReduceOp::Sum, SUM), (ReduceOp::Max, EXACT)] {
            let what = format!("{op:?} of {shape:?} over {axes:?}");
            let got = reduce_on(b, op, &x, shape, axes);
            assert_close(&what, &got, &reduce_on(&REF, op, &x, shape, axes), tol);
        }
    }
}

fn check_reduce_sum_of_a_million<B: Backend>(b: &B) {
    let n = 1 << 20;
    let x = vec![0.1f32; n];
    let got = reduce_on(b, ReduceOp::Sum, &x, &[n], &[0]);
    let want = reduce_on(&REF, ReduceOp::Sum, &x, &[n], &[0]);
    assert_close("Σ 2^20 × 0.1", &got, &want, MILLION_SUM);
    if b.name() == "cpu" {
        // The CPU's sums accumulate in f64: one rounding, 2^-24 ≈ 6e-8.
        assert_close("Σ 2^20 × 0.1 on the CPU", &got, &want, 6e-8);
    }
}

// ---- Matmul -------------------------------------------------------------------------

fn matmul_on<D: Backend>(d: &D, a: &[f32], c: &[f32], dims: MatmulDims) -> Vec<f32> {
    host(d, &d.matmul(&up(d, a), &up(d, c), dims).unwrap())
}

fn check_matmul<B: Backend>(b: &B) {
    // (batch, m, k, n): odd small sizes; a batch of small products; a batch of larger
    // ones (one product per CPU task); one product the CPU splits by rows (200 in blocks
    // of 64, the last one short); products crossing many Vulkan tiles with each of its
    // per-invocation blockings (1, 2 or 4 outputs per axis, picked from the extents);
    // and the 1x1x1 product.
    let sizes = [
        (3, 5, 7, 3),
        (10, 4, 6, 9),
        (3, 17, 33, 19),
        (2, 21, 40, 18),
        (2, 96, 130, 70),
        (1, 200, 70, 90),
        (2, 130, 257, 67),
        (2, 40, 70, 50),
        (2, 70, 33, 33),
        (2, 20, 100, 300),
        (1, 1, 1, 1),
    ];
    for (i, (batch, m, k, n)) in sizes.into_iter().enumerate() {
        // All 16 combinations of the four flags.
        for bits in 0..16u32 {
            let dims = MatmulDims {
                batch,
                m,
                k,
                n,
                trans_a: bits & 1 != 0,
                trans_b: bits & 2 != 0,
                a_batched: bits & 4 != 0,
                b_batched: bits & 8 != 0,
            };
            let batches = |batched| if batched { batch } else { 1 };
            let seed = 100 + 2 * i as u64;
            let a = data(batches(dims.a_batched) * m * k, seed, -1.0, 1.0);
            let c = data(batches(dims.b_batched) * k * n, seed + 1, -1.0, 1.0);
            let got = matmul_on(b, &a, &c, dims);
            let want = once_per_process(format!("matmul {dims:?} {seed}"), || {
                matmul_on(&REF, &a, &c, dims)
            });
            assert_close(&format!("{dims:?}"), &got, &want, SUM);
        }
    }
}

// ---- Convolution --------------------------------------------------------------------

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
        dims(1, 5, 2, 6, 5, 1, 1),
        dims(2, 8, 4, 5, 7, 1, 1),
        dims(3, 3, 4, 5, 7, 3, 3),
        dims(2, 3, 4, 7, 9, 3, 3),
        dims(2, 6, 8, 8, 8, 3, 3),
        dims(2, 2, 3, 7, 5, 5, 3),
        dims(3, 2, 3, 5, 8, 3, 5),
        // Kernel taller than the image: some taps never touch it.
        dims(1, 2, 2, 3, 2, 5, 3),
        // Whole and partial 16-pixel blocks, few output channels (cpu/conv_kernels.rs).
        dims(2, 8, 12, 4, 4, 3, 3),
        dims(3, 16, 20, 8, 8, 3, 3),
        dims(2, 12, 12, 4, 8, 1, 1),
        dims(2, 16, 8, 16, 16, 3, 3),
        // Images no larger than the kernel (Glow's top level can be 1x1 or 2x2).
        dims(2, 3, 2, 1, 1, 3, 3),
        dims(1, 2, 3, 2, 2, 3, 3),
        dims(1, 2, 2, 1, 4, 3, 3),
        dims(1, 2, 2, 4, 1, 3, 3),
        // Big enough for threaded GEMMs and several images per task.
        dims(5, 16, 24, 9, 11, 3, 3),
        dims(5, 32, 40, 9, 11, 1, 1),
        // The weight gradient's copies of x into zero-padded planes and of dy into
        // lane panels past PAR_THRESHOLD (cpu/conv.rs: 2·16·34·34 and 2·1024·16).
        dims(2, 16, 16, 32, 32, 3, 3),
        // The CPU's GEMM paths for 1x1 convolutions (cpu/conv.rs: forward and input
        // gradient from 128 channels on 64 pixels, the weight gradient from 256
        // channels, in tasks of 4 images: here 4 + 1), and one case on each side of
        // the thresholds: 63 pixels (direct), 130/140 channels (GEMM forward and input
        // gradient, direct weight gradient).
        dims(2, 128, 130, 7, 9, 1, 1),
        dims(2, 130, 140, 8, 9, 1, 1),
        dims(5, 256, 264, 8, 8, 1, 1),
    ]
}

/// The convolution's inputs for `d`: `x`, `w`, `bias`, `dy`.
fn conv_inputs(d: Conv2dDims, seed: u64) -> [Vec<f32>; 4] {
    [
        data(d.input_len(), seed, -1.0, 1.0),
        data(d.weight_len(), seed + 1, -0.5, 0.5),
        data(d.c_out, seed + 2, -1.0, 1.0),
        data(d.output_len(), seed + 3, -1.0, 1.0),
    ]
}

/// conv2d without and with bias, and with the relu epilogue.
fn conv_forward_on<D: Backend>(
    d: &D,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    dims: Conv2dDims,
) -> [Vec<f32>; 3] {
    let (x, w, bias) = (up(d, x), up(d, w), up(d, bias));
    [
        host(d, &d.conv2d(&x, &w, None, dims, Epilogue::None).unwrap()),
        host(
            d,
            &d.conv2d(&x, &w, Some(&bias), dims, Epilogue::None).unwrap(),
        ),
        host(
            d,
            &d.conv2d(&x, &w, Some(&bias), dims, Epilogue::Relu).unwrap(),
        ),
    ]
}

/// conv2d_backward_input and conv2d_backward_weight.
fn conv_backward_on<D: Backend>(
    d: &D,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dims: Conv2dDims,
) -> [Vec<f32>; 2] {
    let (x, w, dy) = (up(d, x), up(d, w), up(d, dy));
    [
        host(d, &d.conv2d_backward_input(&dy, &w, dims).unwrap()),
        host(d, &d.conv2d_backward_weight(&x, &dy, dims).unwrap()),
    ]
}

fn check_conv2d<B: Backend>(b: &B) {
    for (i, dims) in conv_cases().into_iter().enumerate() {
        let seed = 200 + 4 * i as u64;
        let [x, w, bias, _] = conv_inputs(dims, seed);
        let got = conv_forward_on(b, &x, &w, &bias, dims);
        let want = once_per_process(format!("conv2d {dims:?} {seed}"), || {
            conv_forward_on(&REF, &x, &w, &bias, dims)
        });
        for ((name, got), want) in ["conv2d", "conv2d + bias", "conv2d_relu + bias"]
            .iter()
            .zip(&got)
            .zip(&want)
        {
            assert_close(&format!("{name} {dims:?}"), got, want, SUM);
        }
    }
}

fn check_conv2d_backward<B: Backend>(b: &B) {
    for (i, dims) in conv_cases().into_iter().enumerate() {
        let seed = 300 + 4 * i as u64;
        let [x, w, _, dy] = conv_inputs(dims, seed);
        let got = conv_backward_on(b, &x, &w, &dy, dims);
        let want = once_per_process(format!("conv2d_backward {dims:?} {seed}"), || {
            conv_backward_on(&REF, &x, &w, &dy, dims)
        });
        for ((name, got), want) in ["conv2d_backward_input", "conv2d_backward_weight"]
            .iter()
            .zip(&got)
            .zip(&want)
        {
            assert_close(&format!("{name} {dims:?}"), got, want, SUM);
        }
    }
}

// ---- Layout -------------------------------------------------------------------------

fn permute_on<D: Backend>(d: &D, x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    host(d, &d.permute(&up(d, x), shape, perm).unwrap())
}

fn check_permute<B: Backend>(b: &B) {
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4, 5], &[0, 1, 2, 3]),
        (&[2, 3, 4, 5], &[3, 2, 1, 0]),
        (&[2, 3, 4, 5], &[0, 2, 3, 1]),
        (&[2, 3, 4, 5], &[1, 0, 2, 3]),
        (&[2, 3, 4, 5], &[0, 3, 1, 2]),
        (&[2, 3, 4, 5], &[2, 0, 3, 1]),
        (&[3, 4, 5, 6], &[3, 1, 0, 2]),
        (&[3, 1, 4], &[2, 1, 0]),
        // A full reversal of rank 6 cannot merge axes: the Vulkan kernel's full rank.
        (&[2, 3, 2, 2, 3, 2], &[5, 4, 3, 2, 1, 0]),
        // Past PAR_THRESHOLD.
        (&[300, 170], &[1, 0]),
        (&[4, 8, 33, 40], &[0, 2, 3, 1]),
    ];
    for (i, &(shape, perm)) in cases.iter().enumerate() {
        let x = data(numel(shape), 400 + i as u64, -1.0, 1.0);
        let what = format!("permute {shape:?} by {perm:?}");
        let got = permute_on(b, &x, shape, perm);
        assert_close(&what, &got, &permute_on(&REF, &x, shape, perm), EXACT);
    }
}

/// Slices, concatenations and gathers of `x` along `axis`, on the host.
fn slice_concat_gather_on<D: Backend>(
    d: &D,
    x: &[f32],
    shape: &[usize],
    axis: usize,
) -> Vec<(String, Vec<f32>)> {
    let xb = up(d, x);
    let extent = shape[axis];
    let mut out = Vec::new();
    // The middle, without the first and last index; and the last index alone.
    for (start, len) in [(1, extent - 2), (extent - 1, 1)] {
        let y = d.slice(&xb, shape, axis, start, len).unwrap();
        out.push((format!("slice {start}..{}", start + len), host(d, &y)));
    }
    // x with parts of other extents along the axis, two and three parts.
    let with_extent = |e: usize| {
        let mut s = shape.to_vec();
        s[axis] = e;
        s
    };
    let (s2, s5) = (with_extent(2), with_extent(5));
    let p2 = up(d, &data(numel(&s2), 500 + axis as u64, -1.0, 1.0));
    let p5 = up(d, &data(numel(&s5), 510 + axis as u64, -1.0, 1.0));
    let c = d.concat(&[(&xb, shape), (&p5, &s5)], axis).unwrap();
    out.push(("concat of 2".into(), host(d, &c)));
    let c = d
        .concat(&[(&p2, &s2), (&xb, shape), (&p5, &s5)], axis)
        .unwrap();
    out.push(("concat of 3".into(), host(d, &c)));
    // Gathers with repeats and reordering, of one index, and the whole axis reversed
    // (a permutation, as Glow's shuffles use it: as large as x, so past PAR_THRESHOLD
    // for the large shape).
    let reversed: Vec<usize> = (0..extent).rev().collect();
    for indices in [
        vec![extent - 1, 0, extent / 2, extent / 2, 1],
        vec![1],
        reversed,
    ] {
        let g = d.gather(&xb, shape, axis, &indices).unwrap();
        out.push((format!("gather {indices:?}"), host(d, &g)));
    }
    out
}

fn check_slice_concat_gather<B: Backend>(b: &B) {
    // The last shape is past PAR_THRESHOLD.
    for (i, shape) in [[3usize, 4, 5], [2, 3, 4], [40, 30, 50]].iter().enumerate() {
        let x = data(numel(shape), 450 + i as u64, -1.0, 1.0);
        for axis in 0..3 {
            let got = slice_concat_gather_on(b, &x, shape, axis);
            let want = slice_concat_gather_on(&REF, &x, shape, axis);
            for ((name, got), (_, want)) in got.iter().zip(&want) {
                let what = format!("{name} of {shape:?} along axis {axis}");
                assert_close(&what, got, want, EXACT);
            }
        }
    }
}

// ---- Random fills -------------------------------------------------------------------

fn check_random<B: Backend>(b: &B) {
    // Odd, past PAR_THRESHOLD, and counters of a 64-bit seed.
    let n = 100_003;
    let seeds = [42, 0x1234_5678_9abc_def0];
    let uniform = Distribution::Uniform {
        low: -2.0,
        high: 3.0,
    };
    let normal = Distribution::Normal {
        mean: 1.0,
        std: 2.0,
    };
    for seed in seeds {
        for (dist, tol) in [(uniform, RANDOM_UNIFORM), (normal, RANDOM_NORMAL)] {
            let got = host(b, &b.random(n, dist, seed).unwrap());
            let want = host(&REF, &REF.random(n, dist, seed).unwrap());
            let what = format!("{dist:?} seed {seed:#x}");
            assert_close(&what, &got, &want, tol);
            if b.name() == "cpu" {
                // The CPU evaluates the host's own `engine::random` functions, as the
                // reference does: the same bits.
                assert_eq!(got, want, "{what}: the CPU computes the host's stream");
            }
            if let Distribution::Uniform { low, high } = dist {
                assert!(got.iter().all(|v| (low..high).contains(v)), "{what}: range");
            }
        }
    }
}

// ---- Fused Glow ops -----------------------------------------------------------------

/// `(n, c, p)` of the fused ops: a few 8x8 images; rows of 29 pixels (no whole 8-lane
/// block at the end); and one past PAR_THRESHOLD (4 images of 16 channels of 32x32).
const PAIRED: [PairedDims; 3] = [
    PairedDims { n: 3, c: 6, p: 64 },
    PairedDims { n: 2, c: 5, p: 29 },
    PairedDims {
        n: 4,
        c: 16,
        p: 1024,
    },
];

/// `xb` (or `z`) `[n, c, p]`, `h` `[n, 2c, p]` in `[-h_max, h_max)`, an output gradient
/// `[n, c, p]` and a per-image gradient `[n]`.
fn paired_inputs(d: PairedDims, seed: u64, h_max: f32) -> [Vec<f32>; 4] {
    let len = d.n * d.c * d.p;
    [
        data(len, seed, -2.0, 2.0),
        data(2 * len, seed + 1, -h_max, h_max),
        data(len, seed + 2, -1.0, 1.0),
        data(d.n, seed + 3, -1.0, 1.0),
    ]
}

/// The coupling forward, `[yb, logdet]`, and its backward from each combination of
/// `dyb` and `dlogdet`, `[dxb, dh]` (`dxb` empty without `dyb`).
fn affine_coupling_on<D: Fused>(
    d: &D,
    inputs: &[Vec<f32>; 4],
    dims: PairedDims,
) -> Vec<(String, Vec<f32>)> {
    let [xb, h, dyb, dlogdet] = inputs.each_ref().map(|v| up(d, v));
    let (yb, logdet) = d.affine_coupling(&xb, &h, dims).unwrap();
    let mut out = vec![
        ("yb".into(), host(d, &yb)),
        ("logdet".into(), host(d, &logdet)),
    ];
    for (dy, dl) in [
        (Some(&dyb), Some(&dlogdet)),
        (Some(&dyb), None),
        (None, Some(&dlogdet)),
        (None, None),
    ] {
        let (dxb, dh) = d.affine_coupling_backward(dy, dl, &xb, &h, dims).unwrap();
        let given = format!("from dyb {}, dlogdet {}", dy.is_some(), dl.is_some());
        let dxb = dxb.map_or(Vec::new(), |g| host(d, &g));
        out.push((format!("dxb {given}"), dxb));
        out.push((format!("dh {given}"), host(d, &dh)));
    }
    out
}

fn check_affine_coupling<B: Fused>(b: &B) {
    for (i, dims) in PAIRED.into_iter().enumerate() {
        // The coupling's logit t = h + 2 of both signs: the two branches of σ.
        let inputs = paired_inputs(dims, 600 + 4 * i as u64, 5.0);
        let got = affine_coupling_on(b, &inputs, dims);
        let want = affine_coupling_on(&REF, &inputs, dims);
        for ((name, got), (_, want)) in got.iter().zip(&want) {
            // yb and the gradients are a few elementwise operations through a sigmoid;
            // logdet sums c·p logarithms.
            let tol = if name == "logdet" {
                SUM
            } else {
                TRANSCENDENTAL
            };
            assert_close(&format!("{name} {dims:?}"), got, want, tol);
        }
    }
}

/// The log-density `[lp]` and its gradients `[dz, dh]`.
fn gaussian_log_prob_on<D: Fused>(
    d: &D,
    inputs: &[Vec<f32>; 4],
    dims: PairedDims,
    pairing: Pairing,
) -> [Vec<f32>; 3] {
    let [z, h, _, dlp] = inputs.each_ref().map(|v| up(d, v));
    let lp = d.gaussian_log_prob(&z, &h, dims, pairing).unwrap();
    let (dz, dh) = d
        .gaussian_log_prob_backward(&dlp, &z, &h, dims, pairing)
        .unwrap();
    [host(d, &lp), host(d, &dz), host(d, &dh)]
}

fn check_gaussian_log_prob<B: Fused>(b: &B) {
    for (i, dims) in PAIRED.into_iter().enumerate() {
        // Scales e^logs between e^-1.5 and e^1.5.
        let inputs = paired_inputs(dims, 700 + 4 * i as u64, 1.5);
        for pairing in [Pairing::Interleaved, Pairing::Halves] {
            let got = gaussian_log_prob_on(b, &inputs, dims, pairing);
            let want = gaussian_log_prob_on(&REF, &inputs, dims, pairing);
            // lp sums c·p terms; the gradients are elementwise through e^-logs.
            for ((name, tol), (got, want)) in
                [("lp", SUM), ("dz", TRANSCENDENTAL), ("dh", TRANSCENDENTAL)]
                    .iter()
                    .zip(got.iter().zip(&want))
            {
                assert_close(&format!("{name} {pairing:?} {dims:?}"), got, want, *tol);
            }
        }
    }
}

// ---- The optimiser step -------------------------------------------------------------

/// `param`, `m` and `v` after three steps from the given state, with the gradients of
/// `seed`.
fn adam_on<D: Backend>(d: &D, kind: AdamKind, state: &[Vec<f32>; 3], seed: u64) -> [Vec<f32>; 3] {
    let len = state[0].len();
    let [p, m, v] = state.each_ref().map(|s| up(d, s));
    for step in 1..=3 {
        let g = up(d, &data(len, seed + u64::from(step), -1.0, 1.0));
        let s = AdamUpdate {
            kind,
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step,
        };
        d.adam_update(&p, &g, &m, &v, len, &s).unwrap();
    }
    [host(d, &p), host(d, &m), host(d, &v)]
}

fn check_adam_update<B: Backend>(b: &B) {
    for kind in [AdamKind::Adam, AdamKind::Adamax] {
        // Short, and past PAR_THRESHOLD (the CPU's parallel chunks).
        for len in [37, 70_001] {
            let p = data(len, 800, -1.0, 1.0);
            let fresh = [p.clone(), vec![0.0; len], vec![0.0; len]];
            let warm = [p, data(len, 801, -0.1, 0.1), data(len, 802, 0.01, 0.11)];
            for (start, state) in [("zero moments", fresh), ("earlier moments", warm)] {
                let got = adam_on(b, kind, &state, 810);
                let want = adam_on(&REF, kind, &state, 810);
                assert_ne!(got[0], state[0], "the update moved the parameters");
                for ((name, tol), (got, want)) in [
                    ("param", ADAM_PARAM),
                    ("m", ADAM_MOMENT),
                    ("v", ADAM_MOMENT),
                ]
                .iter()
                .zip(got.iter().zip(&want))
                {
                    let what = format!("{kind:?} {name}, {len} elements from {start}");
                    assert_close(&what, got, want, *tol);
                }
            }
        }
    }
}

// ---- The reference itself -----------------------------------------------------------

/// Small cases on the reference device whose results are derived by hand in the
/// comments. Unless a comment says otherwise, every literal is exact in `f32`.
mod reference_oracle {
    use super::*;

    fn run_unary(op: UnaryOp, x: &[f32]) -> Vec<f32> {
        unary_on(&REF, op, x)
    }

    /// `|got − want| ≤ rel · |want|` elementwise.
    #[track_caller]
    fn near(what: &str, got: &[f32], want: &[f64], rel: f64) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (&g, &w) in got.iter().zip(want) {
            assert!(
                (f64::from(g) - w).abs() <= rel * w.abs(),
                "{what}: {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn matmul_2x2_transposed_and_a_shared_operand() {
        // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] with the right operand stored transposed
        // (memory [5, 7, 6, 8]): [[1·5 + 2·7, 1·6 + 2·8], [3·5 + 4·7, 3·6 + 4·8]].
        let dims = MatmulDims {
            batch: 1,
            m: 2,
            k: 2,
            n: 2,
            a_batched: true,
            b_batched: true,
            trans_a: false,
            trans_b: true,
        };
        let c = matmul_on(&REF, &[1.0, 2.0, 3.0, 4.0], &[5.0, 7.0, 6.0, 8.0], dims);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        // Two 1x2 rows [1, 2] and [3, 4] times one shared column [10, 1]:
        // 1·10 + 2·1 = 12 and 3·10 + 4·1 = 34.
        let dims = MatmulDims {
            batch: 2,
            m: 1,
            k: 2,
            n: 1,
            b_batched: false,
            trans_b: false,
            ..dims
        };
        let c = matmul_on(&REF, &[1.0, 2.0, 3.0, 4.0], &[10.0, 1.0], dims);
        assert_eq!(c, [12.0, 34.0]);
        // The same rows times a column each, [10, 1] and [1, 10]: 1·10 + 2·1 = 12 and
        // 3·1 + 4·10 = 43.
        let dims = MatmulDims {
            b_batched: true,
            ..dims
        };
        let c = matmul_on(&REF, &[1.0, 2.0, 3.0, 4.0], &[10.0, 1.0, 1.0, 10.0], dims);
        assert_eq!(c, [12.0, 43.0]);
    }

    /// One channel, 3x3 image x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], and a 3x3 kernel
    /// that is not symmetric, so that a flipped kernel (a true convolution instead of
    /// PyTorch's cross-correlation) or a transposed one gives other numbers.
    const IMAGE: [f32; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    /// w[1][1] = 100 (the pixel itself), w[1][2] = 1 (its right neighbour),
    /// w[0][1] = 10 (the one above): y[r][s] = 100·x[r][s] + x[r][s+1] + 10·x[r−1][s],
    /// with x = 0 outside the image.
    const KERNEL: [f32; 9] = [0.0, 10.0, 0.0, 0.0, 100.0, 1.0, 0.0, 0.0, 0.0];
    const DIMS: Conv2dDims = Conv2dDims {
        n: 1,
        c_in: 1,
        c_out: 1,
        h: 3,
        w: 3,
        kh: 3,
        kw: 3,
    };

    #[test]
    fn conv_3x3_on_a_3x3_image_with_zero_padding() {
        // Row 0 (nothing above): 100 + 2, 200 + 3, 300 + 0 (nothing to the right).
        // Row 1: 400 + 5 + 10·1, 500 + 6 + 10·2, 600 + 0 + 10·3.
        // Row 2: 700 + 8 + 10·4, 800 + 9 + 10·5, 900 + 0 + 10·6.
        let y = [
            102.0, 203.0, 300.0, 415.0, 526.0, 630.0, 748.0, 859.0, 960.0,
        ];
        let [plain, biased, relu] = conv_forward_on(&REF, &IMAGE, &KERNEL, &[-500.0], DIMS);
        assert_eq!(plain, y);
        // Bias −500 on every pixel, then relu keeps the four that stay positive.
        assert_eq!(biased, y.map(|v| v - 500.0));
        assert_eq!(relu, [0.0, 0.0, 0.0, 0.0, 26.0, 130.0, 248.0, 359.0, 460.0]);
    }

    #[test]
    fn conv_backward_ops_on_one_pixel() {
        // dy = 1 at the centre only: y[1][1] = 100·x[1][1] + x[1][2] + 10·x[0][1], so
        // dx is 100 at (1, 1), 1 at (1, 2), 10 at (0, 1).
        let mut centre = [0.0; 9];
        centre[4] = 1.0;
        let [dx, _] = conv_backward_on(&REF, &IMAGE, &KERNEL, &centre, DIMS);
        assert_eq!(dx, [0.0, 10.0, 0.0, 0.0, 100.0, 1.0, 0.0, 0.0, 0.0]);
        // dy = 1 at the top-left corner only: dw[u][v] = x[u − 1][v − 1] (the pixel tap
        // (u, v) reads for output (0, 0)), 0 where that is outside the image.
        let mut corner = [0.0; 9];
        corner[0] = 1.0;
        let [_, dw] = conv_backward_on(&REF, &IMAGE, &KERNEL, &corner, DIMS);
        assert_eq!(dw, [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 4.0, 5.0]);
    }

    #[test]
    fn broadcast_sub_of_a_column_and_a_row() {
        // [[1], [2]] − [[10, 20, 30]] = [[1 − 10, 1 − 20, 1 − 30], [2 − 10, 2 − 20, 2 − 30]].
        let y = binary_on(
            &REF,
            BinaryOp::Sub,
            &[1.0, 2.0],
            &[2, 1],
            &[10.0, 20.0, 30.0],
            &[1, 3],
            &[2, 3],
        );
        assert_eq!(y, [-9.0, -19.0, -29.0, -8.0, -18.0, -28.0]);
        // relu_grad keeps a where b > 0: [5, 6, 7] · [b > 0] for b = [1, 0, −1].
        let y = binary_on(
            &REF,
            BinaryOp::ReluGrad,
            &[5.0, 6.0, 7.0],
            &[3],
            &[1.0, 0.0, -1.0],
            &[3],
            &[3],
        );
        assert_eq!(y, [5.0, 0.0, 0.0]);
    }

    #[test]
    fn sums_and_maxima_over_axes() {
        // x = [[1, 2, 3], [4, 5, 6]].
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        // Down the columns: 1 + 4, 2 + 5, 3 + 6. Along the rows: 1 + 2 + 3, 4 + 5 + 6.
        assert_eq!(
            reduce_on(&REF, ReduceOp::Sum, &x, &[2, 3], &[0]),
            [5.0, 7.0, 9.0]
        );
        assert_eq!(
            reduce_on(&REF, ReduceOp::Sum, &x, &[2, 3], &[1]),
            [6.0, 15.0]
        );
        // Everything: 21 = 6·7/2. The largest of each row: 3 and 6.
        assert_eq!(reduce_on(&REF, ReduceOp::Sum, &x, &[2, 3], &[0, 1]), [21.0]);
        assert_eq!(
            reduce_on(&REF, ReduceOp::Max, &x, &[2, 3], &[1]),
            [3.0, 6.0]
        );
        // The max of all-negative values is negative: its identity is −∞, not 0.
        let y = reduce_on(&REF, ReduceOp::Max, &[-3.0, -2.0], &[2], &[0]);
        assert_eq!(y, [-2.0]);
    }

    #[test]
    fn sigmoid_and_softplus_at_zero_and_far_out() {
        // σ(0) = 1/(1 + e^0) = 1/2; σ(±1000) = 1 and 0 (e^-1000 is 0 even in f64).
        assert_eq!(
            run_unary(UnaryOp::Sigmoid, &[0.0, 1000.0, -1000.0]),
            [0.5, 1.0, 0.0]
        );
        // softplus(0) = ln 2 (to f32 rounding); softplus(±1000) = 1000 + ln(1 + e^-1000)
        // = 1000 and ln(1 + e^-1000) = 0; softplus(100) = 100 + ln(1 + e^-100), and
        // e^-100 ≈ 3.7e-44 is far below half an ulp of 100.
        let y = run_unary(UnaryOp::Softplus, &[0.0, 1000.0, -1000.0, 100.0, -100.0]);
        assert_eq!(y[..4], [std::f32::consts::LN_2, 1000.0, 0.0, 100.0]);
        // softplus(−100) = ln(1 + e^-100) ≈ e^-100 = 3.720076e-44: an f32 subnormal,
        // whose spacing is 2^-149 ≈ 1.4e-45; the nearest is 27·2^-149 ≈ 3.78e-44.
        assert!(
            (f64::from(y[4]) - 3.720_076e-44).abs() < 1.4e-45,
            "{}",
            y[4]
        );
        // σ(−100) = e^-100 / (1 + e^-100): the same subnormal, not 0/0 or a NaN.
        assert_eq!(run_unary(UnaryOp::Sigmoid, &[-100.0]), [y[4]]);
    }

    #[test]
    fn nan_propagates_through_relu_and_max() {
        // IEEE and PyTorch: relu(NaN) = max(NaN, 0) = NaN, and so is max(NaN, 1) and a
        // max reduction over a NaN; heaviside(NaN) = [NaN > 0] = 0.
        let y = run_unary(UnaryOp::Relu, &[f32::NAN, -1.0]);
        assert!(y[0].is_nan() && y[1] == 0.0, "{y:?}");
        assert_eq!(run_unary(UnaryOp::Heaviside, &[f32::NAN]), [0.0]);
        let y = binary_on(
            &REF,
            BinaryOp::Max,
            &[f32::NAN, 2.0],
            &[2],
            &[1.0, f32::NAN],
            &[2],
            &[2],
        );
        assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
        let y = reduce_on(&REF, ReduceOp::Max, &[1.0, f32::NAN, 3.0], &[3], &[0]);
        assert!(y[0].is_nan(), "{y:?}");
        // relu_grad is a product with the gate, so a NaN gradient survives a closed gate.
        let y = binary_on(
            &REF,
            BinaryOp::ReluGrad,
            &[f32::NAN],
            &[1],
            &[-1.0],
            &[1],
            &[1],
        );
        assert!(y[0].is_nan(), "{y:?}");
    }

    #[test]
    fn layout_ops() {
        // x[i][j][k] = 4i + 2j + k over [2, 2, 2], permuted by [2, 1, 0]: y[k][j][i] =
        // x[i][j][k], read in y's order (k, j, i): 0, 4, 2, 6, 1, 5, 3, 7.
        let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let y = permute_on(&REF, &x, &[2, 2, 2], &[2, 1, 0]);
        assert_eq!(y, [0.0, 4.0, 2.0, 6.0, 1.0, 5.0, 3.0, 7.0]);
        // Over [3, 2] (rows [0, 1], [2, 3], [4, 5]): rows 1..3 are [2, 3, 4, 5]; gathering
        // rows 2, 0, 2 gives [4, 5, 0, 1, 4, 5]; column 1 alone is [1, 3, 5].
        let xb = up(&REF, &x[..6]);
        assert_eq!(
            host(&REF, &REF.slice(&xb, &[3, 2], 0, 1, 2).unwrap()),
            [2.0, 3.0, 4.0, 5.0]
        );
        assert_eq!(
            host(&REF, &REF.slice(&xb, &[3, 2], 1, 1, 1).unwrap()),
            [1.0, 3.0, 5.0]
        );
        let g = REF.gather(&xb, &[3, 2], 0, &[2, 0, 2]).unwrap();
        assert_eq!(host(&REF, &g), [4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
        // Joining [[0], [1]] and [[7, 8], [9, 10]] along axis 1: [[0, 7, 8], [1, 9, 10]].
        let a = up(&REF, &[0.0, 1.0]);
        let c = up(&REF, &[7.0, 8.0, 9.0, 10.0]);
        let y = REF
            .concat(&[(&a, &[2, 1][..]), (&c, &[2, 2][..])], 1)
            .unwrap();
        assert_eq!(host(&REF, &y), [0.0, 7.0, 8.0, 1.0, 9.0, 10.0]);
    }

    #[test]
    fn adam_with_weight_decay_at_step_1() {
        // lr 0.1, β1 0.9, β2 0.999, eps 1e-8, weight decay 0.25, from m = v = 0.
        // p = 2, grad 0.5: g = 0.5 + 0.25·2 = 1; m = 0.1·1 = 0.1; v = (1 − β2)·1² =
        // 1 − β2; bias-corrected m̂ = 0.1/(1 − 0.9) = 1 and v̂ = v/(1 − β2) = 1, so
        // p = 2 − 0.1·1/(√1 + 1e-8) = 1.9 (to f32 rounding).
        // p = −1, grad −3: g = −3 − 0.25 = −3.25; m̂ = −3.25, v̂ = 3.25², so
        // p = −1 + 0.1·3.25/(3.25 + 1e-8) = −0.9.
        let step = AdamUpdate {
            kind: AdamKind::Adam,
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.25,
            step: 1,
        };
        let [p, m, v] = [&[2.0, -1.0][..], &[0.0, 0.0], &[0.0, 0.0]].map(|s| up(&REF, s));
        REF.adam_update(&p, &up(&REF, &[0.5, -3.0]), &m, &v, 2, &step)
            .unwrap();
        // β1 and β2 are the f32s nearest 0.9 and 0.999 (0.9 − 2.4e-8, 0.999 + 1.3e-8),
        // so 1 − β1 and 1 − β2 are 2.4e-7 above and 1.3e-5 below 0.1 and 0.001: m and v
        // are that far from the decimal values; p, in which they cancel, is not.
        near("Adam p", &host(&REF, &p), &[1.9, -0.9], 1e-7);
        near("Adam m", &host(&REF, &m), &[0.1, -0.325], 1e-6);
        near(
            "Adam v",
            &host(&REF, &v),
            &[0.001, 0.001 * 3.25 * 3.25],
            2e-5,
        );
        // Adamax at step 1 from u = 0: m as above, u = max(β2·0, |g| + eps) = |g| (to
        // f32), and p −= lr/(1 − β1) · m/u = 0.1 · (0.1 g)/(0.1 |g|) = 0.1 · sign(g).
        let step = AdamUpdate {
            kind: AdamKind::Adamax,
            ..step
        };
        let [p, m, u] = [&[2.0, -1.0][..], &[0.0, 0.0], &[0.0, 0.0]].map(|s| up(&REF, s));
        REF.adam_update(&p, &up(&REF, &[0.5, -3.0]), &m, &u, 2, &step)
            .unwrap();
        near("Adamax p", &host(&REF, &p), &[1.9, -0.9], 1e-7);
        near("Adamax m", &host(&REF, &m), &[0.1, -0.325], 1e-6);
        near("Adamax u", &host(&REF, &u), &[1.0, 3.25], 1e-7);
    }

    #[test]
    fn affine_coupling_on_one_pixel() {
        // n = c = p = 1: xb = 1, h = (shift, raw) = (0.5, −2), so t = raw + 2 = 0 and
        // s = σ(0) = 1/2: yb = (1 + 0.5)·1/2 = 0.75, logdet = ln(1/2).
        let dims = PairedDims { n: 1, c: 1, p: 1 };
        let (xb, h) = (up(&REF, &[1.0]), up(&REF, &[0.5, -2.0]));
        let (yb, logdet) = REF.affine_coupling(&xb, &h, dims).unwrap();
        assert_eq!(host(&REF, &yb), [0.75]);
        assert_eq!(host(&REF, &logdet), [-std::f32::consts::LN_2]);
        // With dyb = dlogdet = 1: dxb = dshift = s = 1/2, and
        // dt = dyb·(xb + shift)·s(1 − s) + dlogdet·(1 − s) = 1.5·1/4 + 1/2 = 0.875.
        let one = up(&REF, &[1.0]);
        let (dxb, dh) = REF
            .affine_coupling_backward(Some(&one), Some(&one), &xb, &h, dims)
            .unwrap();
        assert_eq!(host(&REF, &dxb.unwrap()), [0.5]);
        assert_eq!(host(&REF, &dh), [0.5, 0.875]);
    }

    #[test]
    fn gaussian_log_prob_in_both_pairings() {
        // c = 2, one pixel: z = (1, 3), channel 0 with (mean, logs) = (1, 0) and
        // channel 1 with (1, ln 2). Channel 0: u = 0, lp = −½ ln 2π. Channel 1:
        // u = (3 − 1)/2 = 1, lp = −½(ln 2π + 2 ln 2 + 1). Total
        // −ln 2π − ln 2 − ½ = −1.837877 − 0.693147 − 0.5 = −3.031024 (to 1e-6).
        // Gradients of channel 1 (dlp = 1): dz = −u·e^-logs = −1/2, dmean = 1/2,
        // dlogs = u² − 1 = 0; channel 0: dz = dmean = 0, dlogs = −1.
        let dims = PairedDims { n: 1, c: 2, p: 1 };
        let ln2 = std::f32::consts::LN_2;
        // Interleaved: h = (mean0, logs0, mean1, logs1); halves: (mean0, mean1, logs0, logs1).
        for (pairing, h, dh) in [
            (
                Pairing::Interleaved,
                [1.0, 0.0, 1.0, ln2],
                [0.0, -1.0, 0.5, 0.0],
            ),
            (Pairing::Halves, [1.0, 1.0, 0.0, ln2], [0.0, 0.5, -1.0, 0.0]),
        ] {
            let inputs = [vec![1.0, 3.0], h.to_vec(), vec![], vec![1.0]];
            let [lp, got_dz, got_dh] = gaussian_log_prob_on(&REF, &inputs, dims, pairing);
            assert!((lp[0] + 3.031_024).abs() < 1e-6, "{pairing:?}: {lp:?}");
            near(&format!("dz {pairing:?}"), &got_dz, &[0.0, -0.5], 1e-7);
            for (g, w) in got_dh.iter().zip(dh) {
                assert!((g - w).abs() < 1e-7, "{pairing:?}: {got_dh:?}");
            }
        }
    }
}

/// The reference convolution's backward ops are the adjoints of its forward: for the
/// linear map `y = conv(x, w)` in `x` (and in `w`),
/// `⟨conv(x, w), dy⟩ = ⟨x, backward_input(dy, w)⟩ = ⟨w, backward_weight(x, dy)⟩`.
/// The inner products are taken in `f64` on the host. Each side is computed from
/// outputs rounded to `f32` once (relative error 2^-24 per element), so by
/// Cauchy–Schwarz each is within 6e-8 of its scale (`|y|₂·|dy|₂`, `|x|₂·|dx|₂` or
/// `|w|₂·|dw|₂`); the bound is 1e-6 of the largest scale. A wrong sign, index or
/// operand in one of the three accumulations misses it by orders of magnitude. (All
/// three are one loop nest in `reference/conv.rs`; a mistake in that shared loop would
/// keep them adjoint, and is what the hand-derived convolutions above are for.)
#[test]
fn reference_adjoints() {
    let dot = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(&u, &v)| f64::from(u) * f64::from(v))
            .sum()
    };
    let norm = |a: &[f32]| dot(a, a).sqrt();
    // Every case but the largest few (the reference's loops take a while on those):
    // odd and non-square kernels, one taller than the image, 1x1 images.
    for (i, dims) in conv_cases()
        .iter()
        .filter(|d| d.macs() < 1 << 20)
        .enumerate()
    {
        let [x, w, _, dy] = conv_inputs(*dims, 900 + 4 * i as u64);
        let [y, _, _] = conv_forward_on(&REF, &x, &w, &vec![0.0; dims.c_out], *dims);
        let [dx, dw] = conv_backward_on(&REF, &x, &w, &dy, *dims);
        let scale = [(&y, &dy), (&x, &dx), (&w, &dw)]
            .map(|(a, b)| norm(a) * norm(b))
            .into_iter()
            .fold(0.0, f64::max);
        let (forward, input, weight) = (dot(&y, &dy), dot(&x, &dx), dot(&w, &dw));
        for (name, other) in [("backward_input", input), ("backward_weight", weight)] {
            let err = (other - forward).abs() / scale;
            assert!(
                err < 1e-6,
                "{name} {dims:?}: ⟨y, dy⟩ = {forward}, adjoint {other} (error {err:e})"
            );
        }
    }
}
