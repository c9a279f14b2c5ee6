//! Vulkan-device behaviour that is not about the values of a primitive: host transfers,
//! long chains of dependent dispatches, the shared default device, device selection.
//!
//! The values of every primitive are checked against the reference device in
//! `engine/tests/primitives.rs`, on this device as on the CPU.
//!
//! Run: `cargo test --test vulkan_backend` (the root package enables the `vulkan`
//! feature by default). The tests open the process-wide device with the Khronos
//! validation layer on (when installed) and fail on any validation message. With no
//! Vulkan device they skip, or fail with `ENGINE_REQUIRE_VULKAN=1` (as on CI).
//! Choose a device with `ENGINE_VULKAN_DEVICE=<index or name>`.
#![cfg(feature = "vulkan")]

use engine::backend::*;
use engine::testing::{assert_no_validation_messages, test_data as data};
use engine::vulkan::{VulkanDevice, VulkanOptions};

/// The shared device with validation on, or `None` where this process skips Vulkan.
fn device() -> Option<VulkanDevice> {
    engine::testing::vulkan_backend()
}

#[test]
fn upload_readback_and_full() {
    let Some(d) = device() else { return };
    let x = data(1000, 1, -1.0, 1.0);
    assert_eq!(d.to_host(&d.from_host(&x).unwrap()).unwrap(), x);
    assert_eq!(d.to_host(&d.full(77, 2.5).unwrap()).unwrap(), vec![2.5; 77]);
    assert!(d.to_host(&d.full(0, 1.0).unwrap()).unwrap().is_empty());
    assert_no_validation_messages();
}

/// A long chain of dependent ops spans several command buffers (256 dispatches each)
/// with no host wait in between; the result must still be exact.
#[test]
fn long_dependent_chains_span_batches() {
    let Some(d) = device() else { return };
    let mut x = d.full(1000, 0.0).unwrap();
    for _ in 0..700 {
        x = d.unary(UnaryOp::AddScalar(1.0), &x, 1000).unwrap();
    }
    assert_eq!(d.to_host(&x).unwrap(), vec![700.0; 1000]);
    assert_no_validation_messages();
}

/// The device is shared per process and compares equal to itself.
#[test]
fn default_device_is_shared() {
    let Some(d) = device() else { return };
    assert_eq!(VulkanDevice::default_device().unwrap(), d);
    assert_eq!(
        engine::Device::vulkan().unwrap(),
        engine::Device::Vulkan(d.clone())
    );
    assert!(d.name().starts_with("vulkan:"));
}

/// An unknown device name is a one-line error, not a panic.
#[test]
fn unknown_device_is_an_error() {
    if device().is_none() {
        return;
    }
    let options = VulkanOptions {
        device: Some(engine::vulkan::DeviceSelector::Name("no such gpu".into())),
        ..Default::default()
    };
    match VulkanDevice::new(options) {
        Err(engine::Error::Device(msg)) => assert!(msg.contains("no device named")),
        other => panic!("expected a device error, got {other:?}"),
    }
}
