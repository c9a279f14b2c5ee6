//! Throughput of the heavy primitives (matmul and the three convolution ops) at Glow's
//! shapes, on every device compiled in.
//!
//! Run with `cargo bench --bench ops` (the Vulkan device is included when the
//! root package's default `vulkan` feature is on). Each row is the median of several
//! timed repetitions after a warm-up, and GFLOP/s counts `2 · multiply-adds / time`.
//! The timing code is generic over [`Backend`], so another device is one more
//! `bench_device` call in `main`; every repetition reads its output back with `to_host`,
//! so an asynchronous device is timed to completion rather than to submission.

use std::time::{Duration, Instant};

use engine::backend::{Backend, Conv2dDims, Distribution, MatmulDims};
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

    // The per-image GEMMs of the three convolutions below (weight shared, 16 images):
    // the ceiling the convolutions can reach, since each is im2col plus these GEMMs.
    for (batch, m, k, n) in [(16, 128, 54, 256), (16, 128, 128, 256), (16, 12, 1152, 256)] {
        let dims = MatmulDims {
            batch,
            m,
            k,
            n,
            a_batched: false,
            b_batched: true,
            trans_a: false,
            trans_b: false,
        };
        let (x, y) = (input(b, m * k, 1), input(b, batch * k * n, 2));
        let t = time(b, || b.matmul(&x, &y, dims).unwrap());
        push(
            "matmul",
            format!("{batch}x [{m},{k}]·[{k},{n}]"),
            t,
            batch * m * k * n,
        );
    }
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

    // Glow's convolutions at 16x16 with a batch of 16: the coupling network's first
    // (3x3, 6→128), middle (1x1, 128→128) and zero-initialised last (3x3, 128→12) layers.
    let conv = |c_in, c_out, k| Conv2dDims {
        n: 16,
        c_in,
        c_out,
        h: 16,
        w: 16,
        kh: k,
        kw: k,
    };
    for d in [conv(6, 128, 3), conv(128, 128, 1), conv(128, 12, 3)] {
        let shape = format!(
            "[{},{},{},{}]→{} {}x{}",
            d.n, d.c_in, d.h, d.w, d.c_out, d.kh, d.kw
        );
        let x = input(b, d.input_len(), 3);
        let w = input(b, d.weight_len(), 4);
        let bias = input(b, d.c_out, 5);
        let dy = input(b, d.output_len(), 6);
        let t = time(b, || b.conv2d(&x, &w, Some(&bias), d).unwrap());
        push("conv2d", shape.clone(), t, d.macs());
        let t = time(b, || b.conv2d_backward_input(&dy, &w, d).unwrap());
        push("conv2d_backward_input", shape.clone(), t, d.macs());
        let t = time(b, || b.conv2d_backward_weight(&x, &dy, d).unwrap());
        push("conv2d_backward_weight", shape, t, d.macs());
    }
    rows
}

fn main() {
    #[allow(unused_mut)]
    let mut rows = bench_device(&CpuBackend, true);
    // The Vulkan device (the root package enables it by default); its name is cut to
    // `vulkan:N` in the table.
    #[cfg(feature = "vulkan")]
    match engine::vulkan::VulkanDevice::default_device() {
        Ok(d) => {
            let software = d.info().kind == engine::vulkan::DeviceKind::Cpu;
            rows.extend(bench_device(&d, !software))
        }
        Err(e) => eprintln!("skipping Vulkan: {e}"),
    }
    println!(
        "{:<8} {:<24} {:<24} {:>11} {:>9}",
        "device", "op", "shape", "median ms", "GFLOP/s"
    );
    for r in rows {
        let secs = r.median.as_secs_f64();
        println!(
            "{:<8.8} {:<24} {:<24} {:>11.3} {:>9.1}",
            r.device,
            r.op,
            r.shape,
            secs * 1e3,
            r.flops / secs / 1e9
        );
    }
}
