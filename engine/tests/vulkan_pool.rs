//! The buffer pool makes a steady training step allocate no new device memory.
//!
//! A training-shaped sequence (conv forward, activation, loss reduction, both conv
//! backward ops, Adam updates) runs five times on a private device (its own pool, so
//! tests running in parallel do not disturb the counters). After the first repetition
//! the pool's allocation counter must not move; every later buffer is a reuse.
//! Skips where no Vulkan device opens, or fails there with `ENGINE_REQUIRE_VULKAN=1`
//! (`engine::testing::vulkan_device`).
#![cfg(feature = "vulkan")]

use engine::backend::*;
use engine::vulkan::{validation_message_count, VulkanDevice, VulkanOptions};

#[test]
fn training_step_reuses_pooled_memory() {
    let Some(options) = engine::testing::vulkan_options() else {
        return;
    };
    let d = VulkanDevice::new(options).unwrap();
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
        let y = d.conv2d(&x, &w, Some(&bias), c, Epilogue::None).unwrap();
        let a = d.unary(UnaryOp::Softplus, &y, c.output_len()).unwrap();
        let shape = [c.n, c.c_out, c.h, c.w];
        let loss = d.reduce(ReduceOp::Sum, &a, &shape, &[0, 1, 2, 3]).unwrap();
        // d loss / d y = sigmoid(y)
        let dy = d.unary(UnaryOp::Sigmoid, &y, c.output_len()).unwrap();
        let _dx = d.conv2d_backward_input(&dy, &w, c).unwrap();
        let dw = d.conv2d_backward_weight(&x, &dy, c).unwrap();
        let db = d.reduce(ReduceOp::Sum, &dy, &shape, &[0, 2, 3]).unwrap();
        let s = AdamUpdate {
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
    let Some(d) = engine::testing::vulkan_backend() else {
        return;
    };
    match d.full(1 << 40, 0.0) {
        Err(engine::Error::Device(msg)) => assert!(msg.contains("exceeds"), "{msg}"),
        other => panic!("expected a device error, got {other:?}"),
    }
    // The device still works afterwards.
    assert_eq!(d.to_host(&d.full(3, 1.0).unwrap()).unwrap(), vec![1.0; 3]);
}

/// A private device with validation on and the pipeline cache in `cache` (if any).
fn private_device(cache: Option<std::path::PathBuf>) -> Option<VulkanDevice> {
    let options = VulkanOptions {
        pipeline_cache: cache,
        ..engine::testing::vulkan_options()?
    };
    Some(VulkanDevice::new(options).unwrap())
}

/// The pipeline cache is written when a device closes and read by the next device of
/// the same model; a file that is not a cache of this driver and device is ignored.
#[test]
fn the_pipeline_cache_is_kept_between_devices_and_foreign_data_is_ignored() {
    let dir = std::env::temp_dir().join(format!("engine-pipeline-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let Some(first) = private_device(Some(dir.clone())) else {
        return;
    };
    assert_eq!(first.pipeline_cache_loaded_bytes(), 0, "no file yet");
    let x = first.full(300, -1.5).unwrap();
    let y = first.unary(UnaryOp::Relu, &x, 300).unwrap();
    assert_eq!(first.to_host(&y).unwrap(), vec![0.0; 300]);
    drop((x, y, first));
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let saved = std::fs::read(&files[0]).unwrap();
    // The spec's header: its own length (32) and version 1 lead the data.
    assert_eq!(&saved[..8], &[32, 0, 0, 0, 1, 0, 0, 0], "{:?}", &saved[..8]);

    let second = private_device(Some(dir.clone())).unwrap();
    assert_eq!(second.pipeline_cache_loaded_bytes(), saved.len());
    let x = second.full(3, 2.0).unwrap();
    assert_eq!(
        second
            .to_host(&second.unary(UnaryOp::Relu, &x, 3).unwrap())
            .unwrap(),
        vec![2.0; 3]
    );
    drop((x, second));

    std::fs::write(
        &files[0],
        b"not a pipeline cache, but long enough to have a header",
    )
    .unwrap();
    let third = private_device(Some(dir.clone())).unwrap();
    assert_eq!(
        third.pipeline_cache_loaded_bytes(),
        0,
        "foreign data must be ignored"
    );
    let x = third.full(3, 2.0).unwrap();
    assert_eq!(
        third
            .to_host(&third.unary(UnaryOp::Relu, &x, 3).unwrap())
            .unwrap(),
        vec![2.0; 3]
    );
    drop((x, third));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        validation_message_count(),
        0,
        "validation layer reported problems"
    );
}
