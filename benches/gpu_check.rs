//! The report of the GPU check (`benches/gpu/check.sh`; see `benches/gpu/README.md`):
//! the Vulkan device's identity and limits, every primitive on it against the CPU
//! device, the Glow model's agreement between the two, and the tour's naive and tiled
//! convolution kernels timed side by side (`conv_kernels`), as one JSON line.
//!
//! `cargo bench --bench gpu_check` runs it on the default Vulkan device
//! (`ENGINE_VULKAN_DEVICE` picks another). `GPU_CHECK_QUICK=1` leaves out the
//! convolutions at the paper's widths (512 channels), which a CPU Vulkan driver takes
//! minutes over. Errors are normalised, `‖gpu − cpu‖₂ / ‖cpu‖₂`, and the largest absolute
//! difference; the tests hold them to 1e-5 on lavapipe (`engine/tests/primitives.rs`).

use engine::backend::fused::*;
use engine::backend::*;
use engine::cpu::CpuBackend;
use engine::vulkan::VulkanDevice;
use engine::{no_grad, Device, Result, Tensor};
use glow::{Coupling, Glow, GlowConfig, Permutation};
use serde_json::{json, Value};

use glow_rs::testing::test_data as data;

/// A `k`x`k` convolution `c_in → c_out` of a Glow model's first level: 16 images of
/// 16x16 after the squeeze.
fn conv(c_in: usize, c_out: usize, k: usize) -> Conv2dDims {
    Conv2dDims {
        n: 16,
        c_in,
        c_out,
        h: 16,
        w: 16,
        kh: k,
        kw: k,
    }
}

/// The coupling network's three convolutions of the paper's model at its first level
/// (16 images of 16x16 after the squeeze, hidden 512): 3x3 6→512, 1x1 512→512 and the
/// zero-initialised 3x3 512→12.
fn glow_convs(full: bool) -> Vec<Conv2dDims> {
    if !full {
        return Vec::new();
    }
    vec![conv(6, 512, 3), conv(512, 512, 1), conv(512, 12, 3)]
}

fn sweep<B: Fused>(b: &B, full: bool) -> Vec<(String, Vec<f32>)> {
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
        UnaryOp::Heaviside,
        UnaryOp::Square,
        UnaryOp::Abs,
        UnaryOp::Tanh,
        UnaryOp::Scale(0.3),
        UnaryOp::AddScalar(-1.0),
        UnaryOp::Powf(3.0),
        UnaryOp::LeakyRelu(0.1),
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
    ]
    .into_iter()
    .chain(glow_convs(full))
    {
        let x = up(&data(d.input_len(), 8, -1.0, 1.0));
        let w = up(&data(d.weight_len(), 9, -0.3, 0.3));
        let bias = up(&data(d.c_out, 10, -1.0, 1.0));
        let dy = up(&data(d.output_len(), 11, -1.0, 1.0));
        keep(
            format!("conv2d {d:?}"),
            &b.conv2d(&x, &w, Some(&bias), d, Epilogue::None).unwrap(),
        );
        keep(
            format!("conv2d_relu {d:?}"),
            &b.conv2d(&x, &w, Some(&bias), d, Epilogue::Relu).unwrap(),
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
            let s = AdamUpdate {
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

    // The fused Glow ops, at a Glow shape (16 images, 6 channels, 16x16 pixels).
    let pd = PairedDims {
        n: 16,
        c: 6,
        p: 256,
    };
    let xb = up(&data(pd.n * pd.c * pd.p, 20, -1.0, 1.0));
    let h = up(&data(2 * pd.n * pd.c * pd.p, 21, -1.5, 1.5));
    let (yb, ld) = b.affine_coupling(&xb, &h, pd).unwrap();
    keep("affine_coupling yb".into(), &yb);
    keep("affine_coupling logdet".into(), &ld);
    let dyb = up(&data(pd.n * pd.c * pd.p, 22, -1.0, 1.0));
    let dld = up(&data(pd.n, 23, -1.0, 1.0));
    let (dxb, dh) = b
        .affine_coupling_backward(Some(&dyb), Some(&dld), &xb, &h, pd)
        .unwrap();
    keep("affine_coupling_backward dxb".into(), &dxb.unwrap());
    keep("affine_coupling_backward dh".into(), &dh);
    for pairing in [Pairing::Interleaved, Pairing::Halves] {
        let lp = b.gaussian_log_prob(&xb, &h, pd, pairing).unwrap();
        keep(format!("gaussian_log_prob {pairing:?}"), &lp);
        let (dz, dh) = b
            .gaussian_log_prob_backward(&dld, &xb, &h, pd, pairing)
            .unwrap();
        keep(format!("gaussian_log_prob_backward dz {pairing:?}"), &dz);
        keep(format!("gaussian_log_prob_backward dh {pairing:?}"), &dh);
    }
    out
}

/// `(normalised error, largest absolute difference)` of `got` against `want`; a NaN
/// anywhere makes both NaN (it is the worst error there is).
fn errors(got: &[f32], want: &[f32]) -> (f64, f64) {
    if got.len() != want.len() {
        return (f64::INFINITY, f64::INFINITY);
    }
    let max = got
        .iter()
        .zip(want)
        .map(|(g, w)| (f64::from(*g) - f64::from(*w)).abs())
        .fold(0.0, |m: f64, d| {
            if m.is_nan() || d.is_nan() {
                f64::NAN
            } else {
                m.max(d)
            }
        });
    (glow_rs::testing::normalised_error(got, want), max)
}

/// The Glow model on the GPU against the CPU: log p(x), every parameter's gradient (the
/// largest normalised error over parameters) and decode, at one generic point (as
/// `tests/glow_model.rs` checks against the reference device).
fn glow_agreement(gpu: &Device) -> Result<Value> {
    let cpu = Device::Cpu;
    let cfg = GlowConfig {
        image_shape: [3, 16, 16],
        levels: 2,
        depth: 4,
        hidden: 64,
        coupling: Coupling::Affine,
        permutation: Permutation::InvconvLu,
        learn_top: true,
        ..GlowConfig::default()
    };
    let (m_cpu, m_gpu) = (Glow::new(cfg.clone(), &cpu)?, Glow::new(cfg.clone(), gpu)?);
    let x_cpu = Tensor::rand_uniform(&[8, 3, 16, 16], -0.5, 0.5, 31, &cpu)?;
    let x_gpu = x_cpu.to_device(gpu)?;
    no_grad(|| m_cpu.forward(&x_cpu, None))?;
    // A generic point: at initialisation some gradients are zero up to rounding (the
    // ActNorm biases right after their data-dependent init), where a normalised error
    // measures nothing.
    glow_rs::testing::perturb(&m_cpu, 0.02, 70)?;
    m_gpu.load_state(&m_cpu.state()?)?;
    let lp = errors(
        &m_gpu.log_prob(&x_gpu, None)?.to_vec()?,
        &m_cpu.log_prob(&x_cpu, None)?.to_vec()?,
    );
    let (g_cpu, g_gpu) = (
        m_cpu.loss(&x_cpu, None)?.0.backward()?,
        m_gpu.loss(&x_gpu, None)?.0.backward()?,
    );
    let mut worst = (0.0f64, String::new());
    for (p_cpu, p_gpu) in m_cpu
        .trainable_params()
        .iter()
        .zip(m_gpu.trainable_params())
    {
        let (Some(a), Some(b)) = (g_cpu.get(&p_cpu.get()), g_gpu.get(&p_gpu.get())) else {
            continue;
        };
        let (e, _) = errors(&b.to_vec()?, &a.to_vec()?);
        if e.is_nan() || e > worst.0 {
            worst = (e, p_cpu.name().to_string());
        }
    }
    let z = m_cpu.encode(&x_cpu, None)?;
    let z_gpu: Vec<Tensor> = z.iter().map(|t| t.to_device(gpu)).collect::<Result<_>>()?;
    let decode = errors(
        &m_gpu.decode(&z_gpu)?.to_vec()?,
        &m_cpu.decode(&z)?.to_vec()?,
    );
    Ok(json!({
        "config": "L=2 K=4 hidden 64, 16x16 images, batch 8",
        "log_p_error": lp.0,
        "gradient_error_max": worst.0,
        "gradient_error_worst_param": worst.1,
        "decode_error": decode.0,
    }))
}

/// The tour's two convolution kernels (stop 8) on this device: GFLOP/s of the naive one
/// (`shaders/conv2d_naive.comp`, on a second device opened with it) and of the tiled one,
/// medians of five timed runs after a warm-up, each read back, and how far apart their
/// results are.
fn conv_kernels(vk: &VulkanDevice, full: bool) -> Result<Vec<Value>> {
    let naive = VulkanDevice::new(engine::vulkan::VulkanOptions {
        conv: engine::vulkan::ConvKernel::Naive,
        ..vk.options().clone()
    })?;
    let mut shapes = vec![conv(6, 128, 3), conv(128, 12, 3)];
    if full {
        shapes.push(conv(6, 512, 3));
        shapes.push(conv(512, 12, 3));
    }
    let mut rows = Vec::new();
    for d in shapes {
        let time = |b: &VulkanDevice| -> Result<(f64, Vec<f32>)> {
            let x = b.from_host(&data(d.input_len(), 1, -1.0, 1.0))?;
            let w = b.from_host(&data(d.weight_len(), 2, -0.1, 0.1))?;
            let run = || {
                b.conv2d(&x, &w, None, d, Epilogue::None)
                    .and_then(|y| b.to_host(&y))
            };
            let out = run()?;
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = std::time::Instant::now();
                run()?;
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            Ok((times[2], out))
        };
        let ((t_naive, y_naive), (t_tiled, y_tiled)) = (time(&naive)?, time(vk)?);
        let flops = 2.0 * d.macs() as f64;
        rows.push(json!({
            "shape": format!("{d:?}"),
            "naive_gflops": flops / t_naive / 1e9,
            "tiled_gflops": flops / t_tiled / 1e9,
            "normalised_difference": errors(&y_naive, &y_tiled).0,
        }));
    }
    Ok(rows)
}

fn main() {
    let quick = std::env::var("GPU_CHECK_QUICK").is_ok_and(|v| v == "1");
    let vk = match VulkanDevice::default_device() {
        Ok(d) => d,
        Err(e) => {
            println!("{}", json!({"bench": "gpu_check", "error": e.to_string()}));
            std::process::exit(1);
        }
    };
    let p = vk.properties();
    let cpu = sweep(&CpuBackend, !quick);
    let gpu = sweep(&vk, !quick);
    let mut primitives = Vec::new();
    let mut worst = 0.0f64;
    for ((label, c), (_, g)) in cpu.iter().zip(&gpu) {
        let (norm, max) = errors(g, c);
        // Once NaN, the worst stays NaN (`f64::max` would drop it at the next value).
        worst = if worst.is_nan() || norm.is_nan() {
            f64::NAN
        } else {
            worst.max(norm)
        };
        primitives
            .push(json!({"primitive": label, "normalised_error": norm, "max_abs_error": max}));
    }
    let glow = glow_agreement(&Device::Vulkan(vk.clone()))
        .unwrap_or_else(|e| json!({"error": e.to_string()}));
    let convs = conv_kernels(&vk, !quick)
        .map(Value::from)
        .unwrap_or_else(|e| json!({"error": e.to_string()}));
    let heaps: Vec<Value> = p
        .heaps
        .iter()
        .map(|(bytes, local)| json!({"bytes": bytes, "device_local": local}))
        .collect();
    println!(
        "{}",
        json!({
            "bench": "gpu_check",
            "device": {
                "name": p.name,
                "kind": format!("{:?}", p.kind),
                "api_version": p.api_version,
                "driver_version": p.driver_version,
                "vendor_id": p.vendor_id,
                "device_id": p.device_id,
                "subgroup_size": p.subgroup_size,
                "max_shared_memory_bytes": p.max_shared_memory_bytes,
                "max_workgroup_invocations": p.max_workgroup_invocations,
                "gemm_tile": p.gemm_tile,
                "memory_heaps": heaps,
            },
            "primitives": primitives,
            "primitives_max_normalised_error": worst,
            "glow": glow,
            "conv_kernels": convs,
            "counters": vk.counters().to_string(),
        })
    );
}
