//! Running one test body on every device, for the tests of this crate and of the crates
//! built on it: [`devices`], [`device_test!`](crate::device_test) (one test per device
//! from one body), the Vulkan test device and when it is skipped ([`vulkan_device`]), and
//! small helpers to compare devices ([`test_data`], [`normalised_error`]).

use crate::Device;

/// Why this process's Vulkan tests do not run.
#[derive(Clone, Debug)]
enum NoVulkan {
    /// Skip them: `ENGINE_NO_VULKAN=1`, or no device opened and nothing requires one.
    Skip(String),
    /// Fail them: `ENGINE_REQUIRE_VULKAN=1` and no device (or no validation).
    Fail(String),
}

/// Whether the environment variable `name` is set to `1`.
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// The shared test device with the validation layer on, or why there is none: decided
/// once per process (once per test binary), so that a machine without Vulkan pays for
/// one failed attempt and prints one notice, not one per test.
#[cfg(feature = "vulkan")]
fn vulkan_status() -> &'static Result<Device, NoVulkan> {
    static STATUS: std::sync::OnceLock<Result<Device, NoVulkan>> = std::sync::OnceLock::new();
    STATUS.get_or_init(|| {
        let required = env_flag("ENGINE_REQUIRE_VULKAN");
        if env_flag("ENGINE_NO_VULKAN") {
            return Err(if required {
                NoVulkan::Fail(
                    "ENGINE_REQUIRE_VULKAN=1 and ENGINE_NO_VULKAN=1 contradict each other".into(),
                )
            } else {
                NoVulkan::Skip("ENGINE_NO_VULKAN=1 is set".into())
            });
        }
        // The process-wide device, with the Khronos validation layer when it is installed.
        let options = crate::vulkan::VulkanOptions {
            validation: true,
            ..crate::vulkan::VulkanOptions::from_env()
        };
        match crate::vulkan::VulkanDevice::init_default(options) {
            Ok(d) if required && !d.validating() => Err(NoVulkan::Fail(format!(
                "{} opened without the Khronos validation layer (install vulkan-validationlayers)",
                d.describe()
            ))),
            Ok(d) => Ok(Device::Vulkan(d)),
            Err(e) if required => Err(NoVulkan::Fail(format!("no Vulkan device: {e}"))),
            Err(e) => Err(NoVulkan::Skip(e.to_string())),
        }
    })
}

/// Without the `vulkan` feature there is no Vulkan device: skipped, or under
/// `ENGINE_REQUIRE_VULKAN=1` a failure.
#[cfg(not(feature = "vulkan"))]
fn vulkan_status() -> &'static Result<Device, NoVulkan> {
    static STATUS: std::sync::OnceLock<Result<Device, NoVulkan>> = std::sync::OnceLock::new();
    STATUS.get_or_init(|| {
        let why = "built without the `vulkan` feature".to_string();
        Err(match env_flag("ENGINE_REQUIRE_VULKAN") {
            true => NoVulkan::Fail(why),
            false => NoVulkan::Skip(why),
        })
    })
}

/// The Vulkan device for tests, or `None` when this process skips its Vulkan tests.
///
/// - Where a Vulkan device opens, it is the process-wide device with the Khronos
///   validation layer on (when installed; [`assert_no_validation_messages`] then fails
///   a test on any message).
/// - Where none opens (no loader, no driver), or with `ENGINE_NO_VULKAN=1`, it is
///   `None` and the Vulkan variants pass without running; the first call prints one
///   notice naming what to install, straight to standard error so that the test
///   harness's capture does not hide it.
/// - With `ENGINE_REQUIRE_VULKAN=1` (CI sets it), a missing device, or a device
///   without the validation layer, fails every Vulkan test instead: CI must really
///   run them (`engine/tests/vulkan_required.rs` shows the difference).
pub fn vulkan_device() -> Option<Device> {
    match vulkan_status() {
        Ok(d) => Some(d.clone()),
        Err(NoVulkan::Skip(why)) => {
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                use std::io::Write;
                // Straight to the file descriptor: `eprintln!` inside a test is
                // captured and shown only if the test fails.
                let _ = writeln!(
                    std::io::stderr(),
                    "note: this binary's Vulkan tests are skipped: {why} \
                     (ENGINE_REQUIRE_VULKAN=1 makes that a failure)"
                );
            });
            None
        }
        Err(NoVulkan::Fail(why)) => {
            panic!("ENGINE_REQUIRE_VULKAN=1: {why}")
        }
    }
}

/// [`vulkan_device`]'s backend, for tests of the primitives themselves.
#[cfg(feature = "vulkan")]
pub fn vulkan_backend() -> Option<crate::vulkan::VulkanDevice> {
    match vulkan_device() {
        Some(Device::Vulkan(d)) => Some(d),
        _ => None,
    }
}

/// Options for a test that opens a private Vulkan device (its own pool or pipeline
/// cache): the environment's options with validation on, or `None` when this process
/// skips its Vulkan tests, by the rules of [`vulkan_device`].
#[cfg(feature = "vulkan")]
pub fn vulkan_options() -> Option<crate::vulkan::VulkanOptions> {
    vulkan_backend().map(|_| crate::vulkan::VulkanOptions {
        validation: true,
        ..crate::vulkan::VulkanOptions::from_env()
    })
}

/// `len` varied values in `[lo, hi)` from a xorshift stream (test data that needs no
/// device).
pub fn test_data(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// Fails if the validation layer has reported anything in this process (nothing to check
/// without the `vulkan` feature).
pub fn assert_no_validation_messages() {
    #[cfg(not(feature = "vulkan"))]
    let n = 0;
    #[cfg(feature = "vulkan")]
    let n = crate::vulkan::validation_message_count();
    assert_eq!(
        n, 0,
        "the Vulkan validation layer reported {n} message(s) (printed above)"
    );
}

/// `‖got − want‖₂ / max(‖want‖₂, 1e-30)`, in `f64`: how far one device's output is
/// from another's, as the agreement tests and the GPU check measure it. NaN when
/// either holds a NaN.
pub fn normalised_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "normalised_error: lengths differ");
    let sq = |v: f64| v * v;
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| sq(f64::from(g) - f64::from(w)))
        .sum();
    let den: f64 = want.iter().map(|&w| sq(f64::from(w))).sum();
    num.sqrt() / den.sqrt().max(1e-30)
}

/// Every device a test should run on.
pub fn devices() -> Vec<Device> {
    let mut out = vec![Device::Cpu, Device::Reference];
    out.extend(vulkan_device());
    out
}

/// Defines one test per device from a single body.
///
/// ```ignore
/// device_test!(fn adds(dev) {
///     let x = Tensor::ones(&[2], dev)?;
///     assert_eq!(x.add(&x)?.to_vec()?, vec![2.0, 2.0]);
///     Ok(())
/// });
/// ```
/// expands to a module `adds` with tests `cpu`, `reference` and `vulkan` (which skips or
/// fails by the rules of [`testing::vulkan_device`](crate::testing::vulkan_device)).
/// The body receives `dev: &Device` and returns `engine::Result<()>`.
#[macro_export]
macro_rules! device_test {
    (fn $name:ident($dev:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($dev: &$crate::Device) -> $crate::Result<()> $body

            #[test]
            fn cpu() {
                body(&$crate::Device::Cpu).unwrap();
            }

            #[test]
            fn reference() {
                body(&$crate::Device::Reference).unwrap();
            }

            #[test]
            fn vulkan() {
                if let Some(dev) = $crate::testing::vulkan_device() {
                    body(&dev).unwrap();
                    $crate::testing::assert_no_validation_messages();
                }
            }
        }
    };
}
