//! Time of one Glow training step (forward, backward, Adamax update) per device.
//!
//! Run with `cargo bench --bench train_step`. The model is the one the speed target is
//! stated for: L = 3, K = 8, hidden 128, affine coupling, LU 1x1 convolutions, learned
//! top prior, batch 16 on 32x32x3 images (a common PyTorch port takes about 0.1 s per
//! step for it on the project's 2-core machines). Set `BENCH_STEPS` to change the
//! number of timed steps (default 10) and `BENCH_DEVICES=cpu` or `=vulkan` to pick one.

use std::time::Instant;

use engine::backend::AdamKind;
use engine::{no_grad, Device, Tensor};
use glow::optim::{Optimizer, OptimizerConfig};
use glow::{Glow, GlowConfig};

fn bench(device: &Device, steps: usize) -> engine::Result<()> {
    let cfg = GlowConfig {
        depth: 8,
        hidden: 128,
        ..GlowConfig::default()
    };
    let model = Glow::new(cfg, device)?;
    let batch = 16;
    let x = Tensor::rand_uniform(&[batch, 3, 32, 32], -0.5, 0.5, 1, device)?;
    no_grad(|| model.forward(&x, None))?;
    let mut opt = Optimizer::new(OptimizerConfig {
        kind: AdamKind::Adamax,
        lr: 1e-4,
        ..Default::default()
    });
    let mut step = || -> engine::Result<f32> {
        let (loss, _) = model.loss(&x, None)?;
        let grads = loss.backward()?;
        opt.step(&model.trainable_params(), &grads)?;
        loss.item()
    };
    step()?; // warm-up: allocations, pipeline creation
    let mut times = Vec::new();
    for _ in 0..steps {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{:<28} L=3 K=8 hidden=128 batch={batch}: median {:.3} s/step ({:.1} images/s), min {:.3} s over {steps} steps",
        device.name(),
        median,
        batch as f64 / median,
        times[0]
    );
    Ok(())
}

fn main() {
    let steps = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let which = std::env::var("BENCH_DEVICES").unwrap_or_default();
    if which.is_empty() || which == "cpu" {
        bench(&Device::Cpu, steps).expect("cpu train step");
    }
    #[cfg(feature = "vulkan")]
    if which.is_empty() || which == "vulkan" {
        match Device::vulkan() {
            Ok(dev) => bench(&dev, steps).expect("vulkan train step"),
            Err(e) => println!("vulkan: not available ({e})"),
        }
    }
}
