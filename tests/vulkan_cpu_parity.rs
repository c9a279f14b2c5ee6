//! The Vulkan device against the CPU device: one generic sweep of every `Backend`
//! primitive (forward and backward ops) runs on both, and the outputs are compared by
//! normalised error `|vk - cpu|₂ / |cpu|₂ ≤ 1e-5`.
//!
//! Run: `cargo test --test vulkan_cpu_parity`. Fails without a Vulkan device unless
//! `ENGINE_NO_VULKAN=1` (then skips). Validation is on and any message fails the test.
#![cfg(feature = "vulkan")]

use engine::backend::*;
use engine::cpu::CpuBackend;
use engine::vulkan::validation_message_count;

use glow_rs::testing::test_data as data;

/// Runs every primitive on `b` with fixed inputs; returns (label, output) pairs.
fn sweep<B: Backend>(b: &B) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    let up = |x: &[f32]| b.from_host(x).unwrap();
    let mut keep = |label: String, buf: &B::Buffer| out.push((label, b.to_host(buf).unwrap()));

    let x = data(2000, 1, -8.0, 8.0);
    let pos = data(2000, 2, 0.05, 4.0);
    let (xb, pb) = (up(&x), up(&pos));
    for op in [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Relu,
        UnaryOp::Step,
        UnaryOp::Square,
        UnaryOp::Abs,
        UnaryOp::Tanh,
        UnaryOp::Scale(0.3),
        UnaryOp::AddScalar(-1.0),
        UnaryOp::Powf(3.0),
    ] {
        keep(format!("unary {op:?}"), &b.unary(op, &xb, 2000).unwrap());
    }
    for op in [
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Recip,
        UnaryOp::Powf(0.5),
    ] {
        keep(format!("unary {op:?}"), &b.unary(op, &pb, 2000).unwrap());
    }

    let (sa, sb, so) = ([4, 1, 5, 6], [1, 3, 5, 1], [4, 3, 5, 6]);
    let a = up(&data(120, 3, -2.0, 2.0));
    let c = up(&data(15, 4, 0.5, 2.0));
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
    ] {
        keep(
            format!("binary {op:?}"),
            &b.binary(op, &a, &sa, &c, &sb, &so).unwrap(),
        );
    }
    // relu_grad gates on the sign of its second operand: give it both signs.
    let signed = up(&data(15, 6, -1.0, 1.0));
    keep(
        "binary ReluGrad".to_string(),
        &b.binary(BinaryOp::ReluGrad, &a, &sa, &signed, &sb, &so)
            .unwrap(),
    );

    let shape = [6, 5, 40, 3];
    let r = up(&data(3600, 5, -1.0, 1.0));
    for axes in [&[0][..], &[1, 3], &[2], &[0, 1, 2, 3], &[0, 2, 3]] {
        for op in [ReduceOp::Sum, ReduceOp::Max] {
            keep(
                format!("reduce {op:?} {axes:?}"),
                &b.reduce(op, &r, &shape, axes).unwrap(),
            );
        }
    }

    for bits in 0..16u32 {
        let d = MatmulDims {
            batch: 2,
            m: 21,
            k: 40,
            n: 18,
            trans_a: bits & 1 != 0,
            trans_b: bits & 2 != 0,
            a_batched: bits & 4 != 0,
            b_batched: bits & 8 != 0,
        };
        let ma = up(&data(
            if d.a_batched { 2 } else { 1 } * 21 * 40,
            6,
            -1.0,
            1.0,
        ));
        let mb = up(&data(
            if d.b_batched { 2 } else { 1 } * 40 * 18,
            7,
            -1.0,
            1.0,
        ));
        keep(format!("matmul {d:?}"), &b.matmul(&ma, &mb, d).unwrap());
    }

    for d in [
        Conv2dDims {
            n: 2,
            c_in: 6,
            c_out: 8,
            h: 8,
            w: 8,
            kh: 3,
            kw: 3,
        },
        Conv2dDims {
            n: 2,
            c_in: 8,
            c_out: 4,
            h: 5,
            w: 7,
            kh: 1,
            kw: 1,
        },
    ] {
        let x = up(&data(d.input_len(), 8, -1.0, 1.0));
        let w = up(&data(d.weight_len(), 9, -0.3, 0.3));
        let bias = up(&data(d.c_out, 10, -1.0, 1.0));
        let dy = up(&data(d.output_len(), 11, -1.0, 1.0));
        keep(
            format!("conv2d {d:?}"),
            &b.conv2d(&x, &w, Some(&bias), d).unwrap(),
        );
        keep(
            format!("conv2d_backward_input {d:?}"),
            &b.conv2d_backward_input(&dy, &w, d).unwrap(),
        );
        keep(
            format!("conv2d_backward_weight {d:?}"),
            &b.conv2d_backward_weight(&x, &dy, d).unwrap(),
        );
    }

    let t = up(&data(360, 12, -1.0, 1.0));
    let ts = [3, 4, 5, 6];
    keep(
        "permute".into(),
        &b.permute(&t, &ts, &[3, 1, 0, 2]).unwrap(),
    );
    keep("slice".into(), &b.slice(&t, &ts, 2, 1, 3).unwrap());
    let t2 = up(&data(144, 13, -1.0, 1.0));
    keep(
        "concat".into(),
        &b.concat(&[(&t, &ts[..]), (&t2, &[3, 4, 2, 6][..])], 2)
            .unwrap(),
    );
    keep(
        "gather".into(),
        &b.gather(&t, &ts, 3, &[5, 0, 0, 2]).unwrap(),
    );
    keep(
        "random uniform".into(),
        &b.random(
            5000,
            Distribution::Uniform {
                low: -1.0,
                high: 2.0,
            },
            42,
        )
        .unwrap(),
    );
    keep(
        "random normal".into(),
        &b.random(
            5000,
            Distribution::Normal {
                mean: 0.5,
                std: 3.0,
            },
            43,
        )
        .unwrap(),
    );

    for kind in [AdamKind::Adam, AdamKind::Adamax] {
        let p = up(&data(1000, 14, -1.0, 1.0));
        let (m, v) = (b.full(1000, 0.0).unwrap(), b.full(1000, 0.0).unwrap());
        for step in 1..=3 {
            let g = up(&data(1000, 15 + step as u64, -1.0, 1.0));
            let s = AdamStep {
                kind,
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-3,
                step,
            };
            b.adam_update(&p, &g, &m, &v, 1000, &s).unwrap();
        }
        keep(format!("{kind:?} param"), &p);
        keep(format!("{kind:?} m"), &m);
        keep(format!("{kind:?} v"), &v);
    }
    out
}

#[test]
fn every_primitive_agrees_with_the_cpu_device() {
    let Some(vk) = glow_rs::testing::vulkan_backend() else {
        return;
    };
    let cpu = sweep(&CpuBackend);
    let gpu = sweep(&vk);
    let mut failures = Vec::new();
    for ((label, c), (_, g)) in cpu.iter().zip(&gpu) {
        let num: f64 = c
            .iter()
            .zip(g)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum();
        let den: f64 = c.iter().map(|a| (*a as f64).powi(2)).sum();
        let err = (num / den.max(1e-30)).sqrt();
        // `is_nan` catches a NaN error, which no comparison would.
        if c.len() != g.len() || err.is_nan() || err > 1e-5 {
            failures.push(format!("{label}: normalised error {err:e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "Vulkan disagrees with CPU:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        validation_message_count(),
        0,
        "validation layer reported problems"
    );
}
