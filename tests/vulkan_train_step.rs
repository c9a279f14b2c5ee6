//! A steady Glow training step on the Vulkan device creates nothing and waits a fixed
//! number of times: the engine's pool and pipeline tests (`engine/tests/vulkan_pool.rs`)
//! at the scale of the model. Skips where no Vulkan device opens, or fails there with
//! `ENGINE_REQUIRE_VULKAN=1` (`engine::testing::vulkan_device`).
#![cfg(feature = "vulkan")]

use engine::vulkan::{validation_message_count, VulkanDevice};

/// A private device (its own pool and counters) with validation on.
fn private_device() -> Option<VulkanDevice> {
    Some(VulkanDevice::new(glow_rs::testing::vulkan_options()?).unwrap())
}

/// Glow training steps in steady state: after the first steps have created what they
/// need, a step creates no pipeline, no layout and no device memory, and blocks the host
/// once: the one read-back of the loss, its bits/dim and the gradient norm together
/// (`Trainer::try_step`), which the skip-or-update decision needs. The per-step counts
/// are printed (`--nocapture`) for the record.
#[test]
fn a_steady_glow_training_step_creates_nothing_and_waits_a_fixed_number_of_times() {
    use glow::optim::OptimizerConfig;
    use glow::train::Trainer;
    use glow::{Glow, GlowConfig};
    let Some(d) = private_device() else {
        return;
    };
    let dev = engine::Device::Vulkan(d.clone());
    let cfg = GlowConfig {
        image_shape: [3, 8, 8],
        levels: 2,
        depth: 2,
        hidden: 16,
        learn_top: true,
        ..GlowConfig::default()
    };
    let opt = OptimizerConfig {
        max_grad_norm: Some(50.0),
        ..OptimizerConfig::default()
    };
    let mut trainer = Trainer::new(Glow::new(cfg, &dev).unwrap(), opt, 0);
    let batch = 4;
    let pixels: Vec<u8> = (0..batch * 3 * 8 * 8)
        .map(|i| (i * 37 % 256) as u8)
        .collect();
    let labels = vec![0usize; batch];
    let mut per_step = Vec::new();
    for _ in 0..5 {
        let before = d.counters();
        let s = trainer.step(&pixels, &labels).unwrap();
        assert!(s.loss.is_finite(), "{s:?}");
        per_step.push(d.counters().since(&before));
    }
    for (i, c) in per_step.iter().enumerate() {
        eprintln!("step {}: {c}", i + 1);
    }
    // Steps 1 and 2 may create pipelines (step 1 initialises ActNorm, step 2 is the first
    // with non-zero optimiser moments); from step 3 on nothing is created.
    for c in &per_step[2..] {
        assert_eq!(
            (c.pipelines_created, c.layouts_created, c.allocations),
            (0, 0, 0),
            "{c}"
        );
        assert_eq!(c.host_waits, 1, "{c}");
        assert_eq!(c.dispatches, per_step[2].dispatches, "{c}");
    }
    assert_eq!(
        validation_message_count(),
        0,
        "validation layer reported problems"
    );
}
