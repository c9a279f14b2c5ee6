//! The point of `Memory::Reversible`: the high-water mark of live bytes during a
//! backward pass does not grow with depth. Measured with `Device::memory_stats` on every
//! device, in a process of its own (the CPU and reference counters are process-wide;
//! each device's test is the only user of its device here).

use engine::{Device, Result, Tensor};
use glow::{Coupling, Glow, GlowConfig, Memory, Permutation};
use glow_rs::device_test;

/// Peak live bytes on `dev` from the start of a backward pass to its end, for a model of
/// depth `k`. Small coupling networks and a large batch, so that activations, not the
/// parameters and their gradients (which must grow with `K`), dominate. Measured:
/// reversible K=32 / K=8 is 1.07 on the CPU and reference devices and 1.09 on Vulkan
/// (whose 256-byte minimum size class inflates the many tiny parameters), stored mode
/// 3.7; at batch 32 Vulkan's ratio was 1.17, too close to the bound.
fn backward_peak(k: usize, memory: Memory, dev: &Device) -> Result<usize> {
    let cfg = GlowConfig {
        image_shape: [3, 16, 16],
        levels: 2,
        depth: k,
        hidden: 2,
        coupling: Coupling::Additive,
        permutation: Permutation::Reverse,
        learn_top: false,
        memory,
        ..GlowConfig::default()
    };
    let model = Glow::new(cfg, dev)?;
    let x = Tensor::rand_uniform(&[48, 3, 16, 16], -0.5, 0.5, 7, dev)?;
    let (loss, _) = model.loss(&x, None)?;
    dev.reset_peak();
    let grads = loss.backward()?;
    let peak = dev.memory_stats().peak_bytes;
    drop(grads);
    Ok(peak)
}

device_test!(fn reversible_backward_peak_does_not_grow_with_depth(dev) {
    let (rev8, rev32) = (backward_peak(8, Memory::Reversible, dev)?, backward_peak(32, Memory::Reversible, dev)?);
    let (st8, st32) = (backward_peak(8, Memory::Stored, dev)?, backward_peak(32, Memory::Stored, dev)?);
    eprintln!("{dev}: backward peak, K=8 / K=32: reversible {rev8} / {rev32} bytes, stored {st8} / {st32} bytes");
    assert!(rev32 as f64 <= 1.2 * rev8 as f64, "reversible: K=32 peak {rev32} vs K=8 {rev8}");
    // The measurement sees what the mode saves: stored mode keeps every step's activations.
    assert!(st32 as f64 >= 2.0 * st8 as f64, "stored: K=32 peak {st32} vs K=8 {st8}");
    Ok(())
});
