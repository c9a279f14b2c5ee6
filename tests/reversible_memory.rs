//! The point of `Memory::Reversible`: the high-water mark of live bytes during a
//! backward pass does not grow with depth, and what a forward pass keeps for it does not
//! grow with the number of levels. Measured with `Device::memory_stats` on every
//! device, in a process of its own (the CPU and reference counters are process-wide),
//! one test at a time ([`one_at_a_time`]), so that each test is the only user of its
//! device while it measures.

use engine::{Device, Result, Tensor};
use glow::{Coupling, Glow, GlowConfig, Memory, Permutation};
use glow_rs::device_test;

/// Held for a whole test: the devices' counters see every test of the process.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A model of `levels` levels of depth `k` on `[3, 16, 16]` images, with coupling
/// networks of width 2, and a batch of 48 images for it.
fn model_and_batch(
    levels: usize,
    k: usize,
    memory: Memory,
    dev: &Device,
) -> Result<(Glow, Tensor)> {
    let cfg = GlowConfig {
        image_shape: [3, 16, 16],
        levels,
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
    Ok((model, x))
}

/// Peak live bytes on `dev` from the start of a backward pass to its end, for a model of
/// depth `k`. Small coupling networks and a large batch, so that activations, not the
/// parameters and their gradients (which must grow with `K`), dominate. Measured:
/// reversible K=32 / K=8 is 1.07 on the CPU and reference devices and 1.09 on Vulkan
/// (whose 256-byte minimum size class inflates the many tiny parameters), stored mode
/// 3.7; at batch 32 Vulkan's ratio was 1.17, too close to the bound.
fn backward_peak(levels: usize, k: usize, memory: Memory, dev: &Device) -> Result<usize> {
    let (model, x) = model_and_batch(levels, k, memory, dev)?;
    let (loss, _) = model.loss(&x, None)?;
    dev.reset_peak();
    let grads = loss.backward()?;
    let peak = dev.memory_stats().peak_bytes;
    drop(grads);
    Ok(peak)
}

device_test!(fn reversible_backward_peak_does_not_grow_with_depth(dev) {
    let _alone = one_at_a_time();
    let (rev8, rev32) = (backward_peak(2, 8, Memory::Reversible, dev)?, backward_peak(2, 32, Memory::Reversible, dev)?);
    let (st8, st32) = (backward_peak(2, 8, Memory::Stored, dev)?, backward_peak(2, 32, Memory::Stored, dev)?);
    eprintln!("{dev}: backward peak, K=8 / K=32: reversible {rev8} / {rev32} bytes, stored {st8} / {st32} bytes");
    assert!(rev32 as f64 <= 1.2 * rev8 as f64, "reversible: K=32 peak {rev32} vs K=8 {rev8}");
    // The measurement sees what the mode saves: stored mode keeps every step's activations.
    assert!(st32 as f64 >= 2.0 * st8 as f64, "stored: K=32 peak {st32} vs K=8 {st8}");
    Ok(())
});

/// Live bytes that `model`'s loss keeps for the backward pass on a batch of 48: live
/// bytes with the loss alive minus live bytes before the forward.
fn kept_for_backward(levels: usize, memory: Memory, dev: &Device) -> Result<usize> {
    let (model, x) = model_and_batch(levels, 4, memory, dev)?;
    engine::no_grad(|| model.loss(&x, None))?; // ActNorm's data-dependent initialisation
    let before = dev.memory_stats().live_bytes;
    let (loss, _) = model.loss(&x, None)?;
    let kept = dev.memory_stats().live_bytes.saturating_sub(before);
    drop(loss);
    Ok(kept)
}

device_test!(fn reversible_mode_keeps_no_more_with_more_levels(dev) {
    let _alone = one_at_a_time();
    // The whole flow, splits included, is one op: what the graph keeps is the latents
    // (together the input's size) and the top prior's operands, which shrink as levels
    // are added. Measured, L=2 / L=4: 297 / 187 kB on the CPU and reference devices, 527
    // / 332 kB on Vulkan; with a reversible op per level and the splits outside it, 669
    // / 889 kB and 1188 / 1569 kB (ratios 1.33 and 1.32); stored mode 6.2 / 7.8 MB.
    let (rev2, rev4) = (kept_for_backward(2, Memory::Reversible, dev)?, kept_for_backward(4, Memory::Reversible, dev)?);
    let (st2, st4) = (kept_for_backward(2, Memory::Stored, dev)?, kept_for_backward(4, Memory::Stored, dev)?);
    eprintln!("{dev}: kept for backward, L=2 / L=4: reversible {rev2} / {rev4} bytes, stored {st2} / {st4} bytes");
    assert!(rev4 as f64 <= 1.1 * rev2 as f64, "reversible: L=4 keeps {rev4} bytes vs L=2 {rev2}");
    assert!(st4 > st2, "stored: L=4 keeps {st4} bytes vs L=2 {st2}");
    // Peak during the backward pass: one block's local graph, whatever L.
    let (peak2, peak4) = (backward_peak(2, 4, Memory::Reversible, dev)?, backward_peak(4, 4, Memory::Reversible, dev)?);
    eprintln!("{dev}: backward peak, L=2 / L=4: reversible {peak2} / {peak4} bytes");
    assert!(peak4 as f64 <= 1.2 * peak2 as f64, "reversible: L=4 peak {peak4} vs L=2 {peak2}");
    Ok(())
});
