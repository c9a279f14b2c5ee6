//! Throughput of the heavy primitives (matmul and the three convolution ops) at Glow's
//! shapes, on every device compiled in.
//!
//! Run with `cargo bench --bench ops`; `BENCH_DEVICES=cpu,vulkan` adds the Vulkan device
//! and `BENCH_HIDDEN=128` keeps one hidden width; `BENCH_PRECISION=bf16` runs the
//! convolutions as a Glow coupling network's would with bf16 products (`engine::precision`;
//! the CPU device's wide ones only, where the CPU has AVX-512 BF16). Each row is the median of several timed
//! repetitions after a warm-up; GFLOP/s counts `2 · multiply-adds / time`, and the last
//! column is that as a share of the device's SGEMM ceiling (its 2048³ matmul row, or
//! 512³ on a software Vulkan driver). One JSON line per row follows the table.
//! With the Vulkan device, `conv2d (naive kernel)` rows time the tour's naive
//! convolution kernel (`shaders/conv2d_naive.comp`) on the forward convolutions of
//! configuration S, to read beside the tiled kernel's `conv2d` rows.
//! The timing code is generic over [`Backend`], so another device is one more
//! `bench_device` call in `main`; every repetition reads its output back with `to_host`,
//! so an asynchronous device is timed to completion rather than to submission.

use std::time::{Duration, Instant};

use engine::backend::{Backend, Conv2dDims, Distribution, Epilogue, MatmulDims};
use engine::cpu::CpuBackend;

/// One line of the printed table.
struct Row {
    device: String,
    op: &'static str,
    shape: String,
    median: Duration,
    flops: f64,
}

/// Median wall time of `run` (including a read-back of its output), after warm-up.
/// Repeats until about half a second has passed, at least 5 and at most 50 times.
fn time<B: Backend>(b: &B, run: impl Fn() -> B::Buffer) -> Duration {
    for _ in 0..2 {
        b.to_host(&run()).expect("warm-up");
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (times.len() < 50 && start.elapsed() < Duration::from_millis(500)) {
        let t = Instant::now();
        b.to_host(&run()).expect("timed run");
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// A buffer of `len` normal draws on `b`.
fn input<B: Backend>(b: &B, len: usize, seed: u64) -> B::Buffer {
    let dist = Distribution::Normal {
        mean: 0.0,
        std: 1.0,
    };
    b.random(len, dist, seed).expect("random input")
}

/// The distinct convolutions of a Glow step with L = 3 on 32x32x3 images, batch 16, for
/// hidden widths 128 and 512 (`BENCH_HIDDEN=128` or `=512` keeps one), labelled with the
/// layer they serve. Level `l` (1-based) runs at `32 / 2^l` pixels square with `C = 3·4^l
/// / 2^(l-1)` channels (12, 24, 48).
fn glow_convs() -> Vec<(String, Conv2dDims)> {
    let hidden: Vec<usize> = match std::env::var("BENCH_HIDDEN") {
        Ok(h) => h.split(',').filter_map(|v| v.trim().parse().ok()).collect(),
        Err(_) => vec![128, 512],
    };
    let conv = |hw, c_in, c_out, k| Conv2dDims {
        n: 16,
        c_in,
        c_out,
        h: hw,
        w: hw,
        kh: k,
        kw: k,
    };
    let mut out = Vec::new();
    for (level, (hw, c)) in [(16, 12), (8, 24), (4, 48)].into_iter().enumerate() {
        let l = level + 1;
        out.push((format!("L{l} invconv"), conv(hw, c, c, 1)));
        if l < 3 {
            out.push((format!("L{l} split prior"), conv(hw, c / 2, c, 3)));
        } else {
            out.push((format!("L{l} top prior"), conv(hw, 2 * c, 2 * c, 3)));
        }
        for &h in &hidden {
            out.push((format!("L{l} h{h} nn.conv1"), conv(hw, c / 2, h, 3)));
            out.push((format!("L{l} h{h} nn.conv2"), conv(hw, h, h, 1)));
            out.push((format!("L{l} h{h} nn.zeroconv"), conv(hw, h, c, 3)));
        }
    }
    out
}

/// Times every benchmarked op on one device; `large` adds the 2048³ matmul (skipped on
/// software Vulkan drivers, where one repetition takes about a minute).
fn bench_device<B: Backend>(b: &B, large: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut push = |op, shape: String, median, macs: usize| {
        rows.push(Row {
            device: b.name(),
            op,
            shape,
            median,
            flops: 2.0 * macs as f64,
        })
    };

    let sizes: &[usize] = if large { &[512, 2048] } else { &[512] };
    for &s in sizes {
        let dims = MatmulDims {
            batch: 1,
            m: s,
            k: s,
            n: s,
            a_batched: true,
            b_batched: true,
            trans_a: false,
            trans_b: false,
        };
        let (x, y) = (input(b, s * s, 1), input(b, s * s, 2));
        let t = time(b, || b.matmul(&x, &y, dims).unwrap());
        push("matmul", format!("[{s},{s}]·[{s},{s}]"), t, s * s * s);
    }

    // Every convolution of a Glow step (L = 3, batch 16) at its level's size, for the
    // hidden widths of configurations S (128) and P (512): see `glow_convs`.
    let bf16 = match std::env::var("BENCH_PRECISION").as_deref() {
        Ok("bf16") => true,
        Ok("f32") | Err(_) => false,
        Ok(other) => panic!("BENCH_PRECISION={other:?} is not f32 or bf16"),
    };
    if bf16 {
        engine::precision::set_matmul_precision(engine::precision::MatmulPrecision::Bf16);
    }
    for (what, d) in glow_convs() {
        let shape = format!(
            "{what} [{},{},{},{}]→{} {}x{}",
            d.n, d.c_in, d.h, d.w, d.c_out, d.kh, d.kw
        );
        let x = input(b, d.input_len(), 3);
        let w = input(b, d.weight_len(), 4);
        let bias = input(b, d.c_out, 5);
        let dy = input(b, d.output_len(), 6);
        let t = time(b, || {
            engine::precision::within(bf16, || {
                b.conv2d(&x, &w, Some(&bias), d, Epilogue::None).unwrap()
            })
        });
        push("conv2d", shape.clone(), t, d.macs());
        let t = time(b, || {
            engine::precision::within(bf16, || b.conv2d_backward_input(&dy, &w, d).unwrap())
        });
        push("conv2d_backward_input", shape.clone(), t, d.macs());
        let t = time(b, || {
            engine::precision::within(bf16, || b.conv2d_backward_weight(&x, &dy, d).unwrap())
        });
        push("conv2d_backward_weight", shape, t, d.macs());
    }
    rows
}

/// The forward convolutions of configuration S (hidden 128) on a device whose `conv2d`
/// is the naive kernel: the rows to read beside the tiled kernel's `conv2d` rows.
#[cfg(feature = "vulkan")]
fn bench_naive_conv(b: &engine::vulkan::VulkanDevice) -> Vec<Row> {
    let mut rows = Vec::new();
    for (what, d) in glow_convs()
        .into_iter()
        .filter(|(w, _)| !w.contains("h512"))
    {
        let shape = format!(
            "{what} [{},{},{},{}]→{} {}x{}",
            d.n, d.c_in, d.h, d.w, d.c_out, d.kh, d.kw
        );
        let (x, w, bias) = (
            input(b, d.input_len(), 3),
            input(b, d.weight_len(), 4),
            input(b, d.c_out, 5),
        );
        let t = time(b, || {
            b.conv2d(&x, &w, Some(&bias), d, Epilogue::None).unwrap()
        });
        rows.push(Row {
            device: b.name(),
            op: "conv2d (naive kernel)",
            shape,
            median: t,
            flops: 2.0 * d.macs() as f64,
        });
    }
    rows
}

fn main() {
    // BENCH_DEVICES: `cpu` (default), `vulkan`, or both (`cpu,vulkan`).
    let wanted = std::env::var("BENCH_DEVICES").unwrap_or_else(|_| "cpu".into());
    let wants = |d: &str| wanted.split(',').any(|w| w.trim() == d);
    let mut rows = Vec::new();
    if wants("cpu") {
        rows.extend(bench_device(&CpuBackend, true));
    }
    // On a software Vulkan driver the 2048³ matmul takes about a minute a repetition, so
    // there the 512³ product is the ceiling.
    #[cfg(feature = "vulkan")]
    if wants("vulkan") {
        match engine::vulkan::VulkanDevice::default_device() {
            Ok(d) => {
                let software = d.info().kind == engine::vulkan::DeviceKind::Cpu;
                rows.extend(bench_device(&d, !software));
                // The tour's naive convolution kernel (stop 8), on the same device.
                let options = engine::vulkan::VulkanOptions {
                    conv: engine::vulkan::ConvKernel::Naive,
                    ..d.options().clone()
                };
                match engine::vulkan::VulkanDevice::new(options) {
                    Ok(naive) => rows.extend(bench_naive_conv(&naive)),
                    Err(e) => eprintln!("skipping the naive convolution: {e}"),
                }
            }
            Err(e) => eprintln!("skipping Vulkan: {e}"),
        }
    }
    println!(
        "{:<8} {:<24} {:<40} {:>10} {:>8} {:>8}",
        "device", "op", "shape", "median ms", "GFLOP/s", "ceiling"
    );
    let mut json = Vec::new();
    for r in &rows {
        let gflops = r.flops / r.median.as_secs_f64() / 1e9;
        // The device's SGEMM ceiling: its largest matmul row.
        let ceiling = rows
            .iter()
            .filter(|c| c.device == r.device && c.op == "matmul")
            .max_by(|a, b| a.flops.total_cmp(&b.flops))
            .map(|c| c.flops / c.median.as_secs_f64() / 1e9)
            .unwrap_or(f64::NAN);
        println!(
            "{:<8.8} {:<24} {:<40} {:>10.3} {:>8.1} {:>7.0}%",
            r.device,
            r.op,
            r.shape,
            r.median.as_secs_f64() * 1e3,
            gflops,
            100.0 * gflops / ceiling
        );
        json.push(format!(
            "{{\"bench\":\"ops\",\"device\":{:?},\"op\":{:?},\"shape\":{:?},\"median_ms\":{},\"gflops\":{},\"fraction_of_ceiling\":{}}}",
            r.device,
            r.op,
            r.shape,
            r.median.as_secs_f64() * 1e3,
            gflops,
            gflops / ceiling
        ));
    }
    for line in json {
        println!("{line}");
    }
}
