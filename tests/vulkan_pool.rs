//! The buffer pool makes a steady training step allocate no new device memory.
//!
//! A training-shaped sequence (conv forward, activation, loss reduction, both conv
//! backward ops, Adam updates) runs five times on a private device (its own pool, so
//! tests running in parallel do not disturb the counters). After the first repetition
//! the pool's allocation counter must not move; every later buffer is a reuse.
//! Skips with `ENGINE_NO_VULKAN=1`; fails without a Vulkan device otherwise.
#![cfg(feature = "vulkan")]

use engine::backend::*;
use engine::vulkan::{validation_message_count, VulkanDevice, VulkanOptions};

#[test]
fn training_step_reuses_pooled_memory() {
    if std::env::var("ENGINE_NO_VULKAN").is_ok_and(|v| v == "1") {
        return;
    }
    let options = VulkanOptions {
        validation: true,
        ..VulkanOptions::from_env()
    };
    let d = VulkanDevice::new(options)
        .unwrap_or_else(|e| panic!("{e} (set ENGINE_NO_VULKAN=1 to skip the Vulkan tests)"));
    let c = Conv2dDims {
        n: 4,
        c_in: 8,
        c_out: 8,
        h: 16,
        w: 16,
        kh: 3,
        kw: 3,
    };
    let w = d
        .random(
            c.weight_len(),
            Distribution::Normal {
                mean: 0.0,
                std: 0.1,
            },
            1,
        )
        .unwrap();
    let bias = d.full(c.c_out, 0.0).unwrap();
    let (mw, vw) = (
        d.full(c.weight_len(), 0.0).unwrap(),
        d.full(c.weight_len(), 0.0).unwrap(),
    );
    let (mb, vb) = (d.full(c.c_out, 0.0).unwrap(), d.full(c.c_out, 0.0).unwrap());
    let mut allocations = Vec::new();
    let mut losses = Vec::new();
    for step in 1..=5u32 {
        let x = d
            .random(
                c.input_len(),
                Distribution::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                100 + step as u64,
            )
            .unwrap();
        let y = d.conv2d(&x, &w, Some(&bias), c).unwrap();
        let a = d.unary(UnaryOp::Softplus, &y, c.output_len()).unwrap();
        let shape = [c.n, c.c_out, c.h, c.w];
        let loss = d.reduce(ReduceOp::Sum, &a, &shape, &[0, 1, 2, 3]).unwrap();
        // d loss / d y = sigmoid(y)
        let dy = d.unary(UnaryOp::Sigmoid, &y, c.output_len()).unwrap();
        let _dx = d.conv2d_backward_input(&dy, &w, c).unwrap();
        let dw = d.conv2d_backward_weight(&x, &dy, c).unwrap();
        let db = d.reduce(ReduceOp::Sum, &dy, &shape, &[0, 2, 3]).unwrap();
        let s = AdamStep {
            kind: AdamKind::Adam,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            step,
        };
        d.adam_update(&w, &dw, &mw, &vw, c.weight_len(), &s)
            .unwrap();
        d.adam_update(&bias, &db, &mb, &vb, c.c_out, &s).unwrap();
        losses.push(d.to_host(&loss).unwrap()[0]);
        allocations.push(d.pool_stats().allocations);
    }
    let stats = d.pool_stats();
    assert!(
        allocations[1..].iter().all(|&a| a == allocations[0]),
        "allocations per step {allocations:?}"
    );
    assert!(stats.reuses > 0, "{stats:?}");
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    // Dropping the cache returns its memory; live buffers keep theirs.
    d.release_cached_memory().unwrap();
    let after = d.pool_stats();
    assert_eq!(after.bytes_reserved, after.bytes_live, "{after:?}");
    assert_eq!(
        validation_message_count(),
        0,
        "validation layer reported problems"
    );
}

/// A tensor larger than the device can hold is an error value, not a crash.
#[test]
fn oversized_allocation_is_an_error() {
    if std::env::var("ENGINE_NO_VULKAN").is_ok_and(|v| v == "1") {
        return;
    }
    let d = VulkanDevice::default_device()
        .unwrap_or_else(|e| panic!("{e} (set ENGINE_NO_VULKAN=1 to skip the Vulkan tests)"));
    match d.full(1 << 40, 0.0) {
        Err(engine::Error::Device(msg)) => assert!(msg.contains("exceeds"), "{msg}"),
        other => panic!("expected a device error, got {other:?}"),
    }
    // The device still works afterwards.
    assert_eq!(d.to_host(&d.full(3, 1.0).unwrap()).unwrap(), vec![1.0; 3]);
}
