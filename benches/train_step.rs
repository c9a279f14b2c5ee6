//! Time, throughput and memory of one Glow training step, for the configurations the
//! speed targets are stated for.
//!
//! `cargo bench --bench train_step` runs, for each configuration, a child process (so
//! each has its own peak RSS) that times training steps (forward, backward, gradient
//! clipping at 50 and the Adamax update, as the PyTorch port's harness does) and prints
//! one line and one JSON line:
//!
//! | name | model (L = 3, affine coupling, LU 1x1 convolutions, learned top, batch 16) |
//! |---|---|
//! | `S` | K = 8, hidden 128 |
//! | `K32` | K = 32, hidden 128 |
//! | `S512` | K = 8, hidden 512 |
//! | `P` | K = 32, hidden 512 (the paper's) |
//!
//! Each line gives the median and minimum step time, images/s, the FLOPs of every
//! convolution and matmul of one step (forward and backward, counted by the engine's
//! profiler as they ran), the effective GFLOP/s they imply, the SGEMM ceiling (a
//! 2048³ product on the same device, measured just before the configuration, in the
//! parent process) and the child's peak RSS.
//!
//! Environment: `BENCH_CONFIGS=S,K32,S512,P` (which ones), `BENCH_STEPS` (timed steps;
//! default 20 for S, 8 for K32, 6 for S512, 4 for P), `BENCH_DEVICES=cpu|vulkan`
//! (default cpu), `BENCH_PROFILE=1` (print the per-op table of the timed steps, see
//! `engine::profile`), `BENCH_BATCH` (images per step; default 16),
//! `BENCH_MEMORY=stored|reversible` (the model's `GlowConfig::memory`; default stored),
//! `BENCH_PRECISION=f32|bf16` (`engine::precision`: the coupling networks' products;
//! default f32; the JSON gives the precision asked for and the one this CPU computed in),
//! `BENCH_SHARDS=N` (CPU only; default 1: the batch-parallel step of `train_cifar10
//! --shards N`, N threads of the child each with an equal share of the cores, each
//! computing the forward and backward pass of its shard of the batch, then one average
//! of the gradients through `glow::parallel::InProcess` and the same update on every
//! shard; the FLOPs are counted on one unsharded step, and `BENCH_PROFILE` prints no
//! table).
//! On the Vulkan device the JSON line also gives, per timed step, the dispatches,
//! barriers, submits, host waits, pipelines created and allocations
//! (`engine::vulkan::DeviceCounters`).

use std::process::Command;
use std::time::Instant;

use engine::backend::AdamKind;
use engine::precision::MatmulPrecision;
use engine::{no_grad, profile, Device, Tensor};
use glow::optim::{Optimizer, OptimizerConfig};
use glow::{Glow, GlowConfig, Memory};

/// A benchmark configuration: name, depth K, hidden width, default timed steps.
const CONFIGS: [(&str, usize, usize, usize); 4] = [
    ("S", 8, 128, 20),
    ("K32", 32, 128, 8),
    ("S512", 8, 512, 6),
    ("P", 32, 512, 4),
];

/// Images per step unless `BENCH_BATCH` says otherwise.
const BATCH: usize = 16;

/// `BENCH_BATCH`, or [`BATCH`].
fn batch() -> usize {
    std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&b| b > 0)
        .unwrap_or(BATCH)
}

fn main() {
    let device_name = std::env::var("BENCH_DEVICES").unwrap_or_else(|_| "cpu".into());
    if let Ok(name) = std::env::var("BENCH_CHILD_CONFIG") {
        let ceiling: f64 = std::env::var("BENCH_CHILD_CEILING")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN);
        let device = open(&device_name);
        child(&name, &device, ceiling).expect("train step benchmark");
        return;
    }
    let wanted = std::env::var("BENCH_CONFIGS").unwrap_or_else(|_| "S,K32,S512,P".into());
    let device = open(&device_name);
    for (name, ..) in CONFIGS {
        if !wanted.split(',').any(|w| w.trim() == name) {
            continue;
        }
        let ceiling = sgemm_ceiling(&device).expect("sgemm ceiling");
        let exe = std::env::current_exe().expect("own path");
        let status = Command::new(exe)
            .env("BENCH_CHILD_CONFIG", name)
            .env("BENCH_CHILD_CEILING", ceiling.to_string())
            .status()
            .expect("spawn the benchmark child");
        if !status.success() {
            eprintln!("train_step: configuration {name} failed ({status})");
            std::process::exit(1);
        }
    }
}

fn open(name: &str) -> Device {
    match name {
        "cpu" => Device::Cpu,
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::vulkan().expect("a Vulkan device"),
        other => {
            eprintln!("BENCH_DEVICES: unknown device {other:?} (cpu or vulkan)");
            std::process::exit(2);
        }
    }
}

/// GFLOP/s of a 2048³ matmul on `device`: the median of 3 after a warm-up.
fn sgemm_ceiling(device: &Device) -> engine::Result<f64> {
    let n = 2048;
    let a = Tensor::rand_uniform(&[n, n], -1.0, 1.0, 1, device)?;
    let b = Tensor::rand_uniform(&[n, n], -1.0, 1.0, 2, device)?;
    a.matmul(&b)?.to_vec()?;
    let mut rates = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        a.matmul(&b)?.to_vec()?;
        rates.push(2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(median(&mut rates))
}

/// The Vulkan device's counters (`engine::vulkan::DeviceCounters`): dispatches,
/// barriers, submits, host waits, pipelines created, allocations; `None` elsewhere.
fn vulkan_counters(device: &Device) -> Option<[u64; 6]> {
    match device {
        #[cfg(feature = "vulkan")]
        Device::Vulkan(v) => {
            let c = v.counters();
            Some([
                c.dispatches,
                c.barriers,
                c.submits,
                c.host_waits,
                c.pipelines_created,
                c.allocations,
            ])
        }
        _ => None,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of this process in bytes (Linux: `VmHWM`), if known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn child(name: &str, device: &Device, ceiling: f64) -> engine::Result<()> {
    let &(_, depth, hidden, default_steps) = CONFIGS.iter().find(|c| c.0 == name).unwrap();
    let steps = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_steps)
        .max(1);
    let memory = match std::env::var("BENCH_MEMORY").as_deref() {
        Ok("reversible") => Memory::Reversible,
        Ok("stored") | Err(_) => Memory::Stored,
        Ok(other) => {
            return Err(engine::Error::invalid(
                "BENCH_MEMORY",
                format!("{other:?} is not stored or reversible"),
            ))
        }
    };
    let asked = match std::env::var("BENCH_PRECISION").as_deref() {
        Ok("bf16") => MatmulPrecision::Bf16,
        Ok("f32") | Err(_) => MatmulPrecision::F32,
        Ok(other) => {
            return Err(engine::Error::invalid(
                "BENCH_PRECISION",
                format!("{other:?} is not f32 or bf16"),
            ))
        }
    };
    let precision = match device {
        Device::Cpu => engine::precision::set_matmul_precision(asked),
        _ => MatmulPrecision::F32,
    };
    let cfg = GlowConfig {
        depth,
        hidden,
        memory,
        ..GlowConfig::default()
    };
    let batch = batch();
    let shards = shards(device, batch)?;
    let optimizer = || {
        Optimizer::new(OptimizerConfig {
            kind: AdamKind::Adamax,
            lr: 1e-4,
            weight_decay: 5e-5,
            max_grad_norm: Some(50.0),
            ..Default::default()
        })
    };
    let x = Tensor::rand_uniform(&[batch, 3, 32, 32], -0.5, 0.5, 1, device)?;

    // One profiled step on the whole batch counts the FLOPs that ran, after a warm-up
    // step (buffer pools, pipelines); the timed steps run unprofiled unless
    // BENCH_PROFILE asks for the table.
    let mut show_profile = std::env::var("BENCH_PROFILE").is_ok_and(|v| v == "1");
    if show_profile && shards > 1 {
        // The table would mix the shards' set-up with their steps, and sum their op
        // time against one shard's wall time.
        eprintln!("BENCH_PROFILE: no per-op table in shards; profile BENCH_SHARDS=1");
        show_profile = false;
    }
    let model = Glow::new(cfg.clone(), device)?;
    no_grad(|| model.forward(&x, None))?; // ActNorm's data-dependent initialisation
    let mut opt = optimizer();
    let mut step = || -> engine::Result<f32> {
        let (loss, _) = model.loss(&x, None)?;
        let grads = loss.backward()?;
        opt.step(&model.trainable_params(), &grads)?;
        loss.item()
    };
    step()?;
    profile::set_enabled(true);
    profile::reset();
    step()?;
    let flops: f64 = profile::rows().iter().map(|r| r.flops).sum();
    profile::set_enabled(show_profile);
    profile::reset();

    let counters_before = vulkan_counters(device);
    let mut times = if shards == 1 {
        let mut times = Vec::new();
        for _ in 0..steps {
            let t = Instant::now();
            step()?;
            times.push(t.elapsed().as_secs_f64());
        }
        times
    } else {
        drop(model);
        sharded_steps(&cfg, device, &x, shards, steps, optimizer)?
    };
    // On the Vulkan device: what one timed step records and waits for, on average.
    let per_step = vulkan_counters(device)
        .zip(counters_before)
        .map(|(after, before)| {
            let per = |i: usize| (after[i] - before[i]) as f64 / steps as f64;
            serde_json::json!({
                "dispatches": per(0),
                "barriers": per(1),
                "submits": per(2),
                "host_waits": per(3),
                "pipelines_created": per(4),
                "allocations": per(5),
            })
        });
    if let Some(c) = &per_step {
        println!("{name:<4} per step on the device: {c}");
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let median = median(&mut times);
    let gflops = flops / median / 1e9;
    let rss = peak_rss();
    println!(
        "{name:<4} {dev} {memory:?} {precision:?}: K={depth} hidden={hidden} batch={batch}{sharded}: median {median:.3} s/step, \
         min {min:.3} ({:.1} images/s), {:.2} GFLOP/step, {gflops:.1} GFLOP/s effective = \
         {:.0}% of the {ceiling:.0} GFLOP/s SGEMM ceiling, peak RSS {}",
        batch as f64 / median,
        flops / 1e9,
        100.0 * gflops / ceiling,
        rss.map_or("?".into(), |b| format!("{:.2} GB", b as f64 / 1e9)),
        dev = device.name(),
        sharded = if shards > 1 { format!(" in {shards} shards") } else { String::new() },
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "train_step",
            "config": name,
            "device": device.name(),
            "levels": 3,
            "depth": depth,
            "hidden": hidden,
            "memory": format!("{memory:?}").to_lowercase(),
            "precision_asked": format!("{asked:?}").to_lowercase(),
            "precision": format!("{precision:?}").to_lowercase(),
            "batch": batch,
            "shards": shards,
            "steps": steps,
            "step_s_median": median,
            "step_s_min": min,
            "images_per_s": batch as f64 / median,
            "flops_per_step": flops,
            "effective_gflops": gflops,
            "sgemm_ceiling_gflops": ceiling,
            "fraction_of_ceiling": gflops / ceiling,
            "peak_rss_bytes": rss,
            "vulkan_per_step": per_step,
        })
    );
    if show_profile {
        let op_seconds: f64 = profile::rows().iter().map(|r| r.seconds).sum();
        let step_seconds: f64 = times.iter().sum();
        eprintln!(
            "ops account for {:.0}% of the timed steps' wall time",
            100.0 * op_seconds / step_seconds
        );
        eprint!("{}", profile::table(15));
    }
    Ok(())
}

/// `BENCH_SHARDS`: 1 unless set, and only on the CPU device; it must divide the batch.
fn shards(device: &Device, batch: usize) -> engine::Result<usize> {
    let Ok(v) = std::env::var("BENCH_SHARDS") else {
        return Ok(1);
    };
    let n: usize = v
        .parse()
        .ok()
        .filter(|&n| n > 0 && batch.is_multiple_of(n))
        .ok_or_else(|| {
            engine::Error::invalid(
                "BENCH_SHARDS",
                format!("{v:?} is not a positive divisor of the batch ({batch})"),
            )
        })?;
    if n > 1 && !matches!(device, Device::Cpu) {
        return Err(engine::Error::invalid(
            "BENCH_SHARDS",
            "shards run as threads of the CPU device",
        ));
    }
    Ok(n)
}

/// Times `steps` batch-parallel steps (see `BENCH_SHARDS` in the module doc) and returns
/// rank 0's step times. Every shard builds the same model (the same seeds) and
/// initialises its ActNorms from the whole batch's statistics, as `--shards` does.
fn sharded_steps(
    cfg: &GlowConfig,
    device: &Device,
    x: &Tensor,
    shards: usize,
    steps: usize,
    optimizer: impl Fn() -> Optimizer + Sync,
) -> engine::Result<Vec<f64>> {
    use glow::parallel::{self, Collective, InProcess};
    let threads = (rayon::current_num_threads() / shards).max(1);
    let per = x.shape()[0] / shards;
    parallel::run_ranks(
        shards,
        threads,
        "BENCH_SHARDS",
        |comm| {
            let model = Glow::new(cfg.clone(), device)?;
            let mine = x.slice(0, comm.rank() * per, per)?;
            {
                let _global = parallel::init_scope(comm.clone());
                no_grad(|| model.forward(&mine, None))?;
            }
            let mut opt = optimizer();
            let params = model.trainable_params();
            let mut step = || -> engine::Result<f32> {
                let (loss, _) = model.loss(&mine, None)?;
                let mut grads = loss.backward()?;
                let loss = loss.item()?;
                let mean =
                    parallel::average_gradients(comm.as_ref(), &params, &mut grads, &[loss])?;
                opt.step(&params, &grads)?;
                Ok(mean[0])
            };
            step()?; // warm-up
            let mut times = Vec::new();
            for _ in 0..steps {
                let t = Instant::now();
                step()?;
                times.push(t.elapsed().as_secs_f64());
            }
            Ok(times)
        },
        InProcess::is_another_ranks_failure,
    )
}
