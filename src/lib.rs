//! Helpers shared by the top-level examples, integration tests and benchmarks.
//!
//! The real code lives in the `engine` and `glow` crates; this package holds `tests/`,
//! `examples/` and `benches/` and what they have in common: the list of devices a test
//! runs on and [`device_test!`], which turns one test body into one test per device.

pub use engine;
pub use glow;

pub mod cli;

/// `docs/tour.md`, included here so that `cargo test` compiles and runs its snippets.
// Its excerpts of the code are fragments (a loop's head, the middle of a function),
// which rustdoc cannot parse to highlight them.
#[allow(rustdoc::invalid_rust_codeblocks)]
#[doc = include_str!("../docs/tour.md")]
pub mod tour {}

pub mod testing {
    //! Running one test body on every device.
    use engine::Device;

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
    fn vulkan_status() -> &'static Result<engine::vulkan::VulkanDevice, NoVulkan> {
        static STATUS: std::sync::OnceLock<Result<engine::vulkan::VulkanDevice, NoVulkan>> =
            std::sync::OnceLock::new();
        STATUS.get_or_init(|| {
            let required = env_flag("ENGINE_REQUIRE_VULKAN");
            if env_flag("ENGINE_NO_VULKAN") {
                return Err(if required {
                    NoVulkan::Fail("ENGINE_REQUIRE_VULKAN=1 and ENGINE_NO_VULKAN=1 contradict each other".into())
                } else {
                    NoVulkan::Skip("ENGINE_NO_VULKAN=1 is set".into())
                });
            }
            // The process-wide device, with the Khronos validation layer when it is installed.
            let options = engine::vulkan::VulkanOptions {
                validation: true,
                ..engine::vulkan::VulkanOptions::from_env()
            };
            match engine::vulkan::VulkanDevice::init_default(options) {
                Ok(d) if required && !d.validating() => Err(NoVulkan::Fail(format!(
                    "{} opened without the Khronos validation layer (install vulkan-validationlayers)",
                    d.describe()
                ))),
                Ok(d) => Ok(d),
                Err(e) if required => Err(NoVulkan::Fail(format!("no Vulkan device: {e}"))),
                Err(e) => Err(NoVulkan::Skip(e.to_string())),
            }
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
    ///   run them (`tests/vulkan_required.rs` shows the difference).
    #[cfg(feature = "vulkan")]
    pub fn vulkan_device() -> Option<Device> {
        vulkan_backend().map(Device::Vulkan)
    }

    /// [`vulkan_device`]'s backend, for tests of the primitives themselves.
    #[cfg(feature = "vulkan")]
    pub fn vulkan_backend() -> Option<engine::vulkan::VulkanDevice> {
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

    /// Options for a test that opens a private Vulkan device (its own pool or pipeline
    /// cache): the environment's options with validation on, or `None` when this process
    /// skips its Vulkan tests, by the rules of [`vulkan_device`].
    #[cfg(feature = "vulkan")]
    pub fn vulkan_options() -> Option<engine::vulkan::VulkanOptions> {
        vulkan_backend().map(|_| engine::vulkan::VulkanOptions {
            validation: true,
            ..engine::vulkan::VulkanOptions::from_env()
        })
    }

    /// A fresh, empty directory for one test, `base/{prefix}-{pid}-{n}` (unique within the
    /// process), removed when dropped unless the test is failing (then it is kept to look
    /// at). Integration tests pass `env!("CARGO_TARGET_TMPDIR")` as `base`.
    pub struct Scratch(std::path::PathBuf);

    impl Scratch {
        /// Creates the directory, after removing one a crashed run left there.
        pub fn new(base: impl AsRef<std::path::Path>, prefix: &str) -> Scratch {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = base
                .as_ref()
                .join(format!("{prefix}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a scratch directory");
            Scratch(dir)
        }

        /// `name` inside the directory.
        pub fn path(&self, name: &str) -> std::path::PathBuf {
            self.0.join(name)
        }
    }

    impl std::ops::Deref for Scratch {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// The built example `name`. `cargo test` builds the examples as plain programs, in
    /// the test profile, into `target/<profile>/examples/`, beside
    /// `target/<profile>/deps/` where test binaries live; this finds them from
    /// [`std::env::current_exe`]. `cargo test --test NAME` alone does not build (or
    /// rebuild) them: run `cargo build --profile test --examples` first, or the test
    /// fails naming the missing file.
    pub fn example_binary(name: &str) -> std::path::PathBuf {
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(std::path::Path::parent)
            .expect("the test binary lives in target/<profile>/deps/");
        let path = profile_dir
            .join("examples")
            .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        assert!(
            path.is_file(),
            "the example binary {} is missing: `cargo test` builds the examples, \
             `cargo test --test NAME` alone does not (run `cargo build --profile test --examples`)",
            path.display()
        );
        path
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

    /// Fails if the validation layer has reported anything in this process.
    #[cfg(feature = "vulkan")]
    pub fn assert_no_validation_messages() {
        let n = engine::vulkan::validation_message_count();
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

    /// Adds `scale · N(0, 1)` to every trainable parameter of `model`: a generic point,
    /// away from an initialisation where some gradients are zero up to rounding.
    pub fn perturb(model: &glow::Glow, scale: f32, seed: u64) -> engine::Result<()> {
        for (i, p) in model.trainable_params().into_iter().enumerate() {
            let v = p.get();
            let noise = engine::Tensor::randn(v.shape(), 0.0, scale, seed + i as u64, v.device())?;
            p.set(&v.add(&noise)?)?;
        }
        Ok(())
    }

    /// `(step, loss)` of the good steps among a run's `metrics.jsonl` lines (those with a
    /// numeric `loss`; evaluations and skipped steps have none), in order.
    pub fn step_losses(lines: &[serde_json::Value]) -> Vec<(u64, f32)> {
        lines
            .iter()
            .filter(|v| v["loss"].is_number())
            .map(|v| {
                (
                    v["step"].as_u64().unwrap(),
                    v["loss"].as_f64().unwrap() as f32,
                )
            })
            .collect()
    }

    /// A batch of `b` images of `cfg`'s shape in the flow's input range [-0.5, 0.5).
    pub fn glow_images(
        cfg: &glow::GlowConfig,
        b: usize,
        seed: u64,
        dev: &Device,
    ) -> engine::Result<engine::Tensor> {
        let [c, h, w] = cfg.image_shape;
        engine::Tensor::rand_uniform(&[b, c, h, w], -0.5, 0.5, seed, dev)
    }

    /// `steps` Adamax steps of `model` on the fixed batch `x`, so that its weights move
    /// away from their identity-like initialisation.
    pub fn train_adamax(
        model: &glow::Glow,
        x: &engine::Tensor,
        steps: usize,
        lr: f32,
    ) -> engine::Result<()> {
        let mut opt = glow::optim::Optimizer::new(glow::optim::OptimizerConfig {
            kind: engine::backend::AdamKind::Adamax,
            lr,
            ..Default::default()
        });
        for _ in 0..steps {
            let (loss, _) = model.loss(x, None)?;
            let grads = loss.backward()?;
            opt.step(&model.trainable_params(), &grads)?;
        }
        Ok(())
    }

    /// Every device a test should run on.
    pub fn devices() -> Vec<Device> {
        #[allow(unused_mut)]
        let mut out = vec![Device::Cpu, Device::Reference];
        #[cfg(feature = "vulkan")]
        out.extend(vulkan_device());
        out
    }
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
/// expands to a module `adds` with tests `cpu`, `reference` and (with the `vulkan`
/// feature) `vulkan`.
/// The body receives `dev: &Device` and returns `engine::Result<()>`.
#[macro_export]
macro_rules! device_test {
    (fn $name:ident($dev:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($dev: &$crate::engine::Device) -> $crate::engine::Result<()> $body

            #[test]
            fn cpu() {
                body(&$crate::engine::Device::Cpu).unwrap();
            }

            #[test]
            fn reference() {
                body(&$crate::engine::Device::Reference).unwrap();
            }

            #[cfg(feature = "vulkan")]
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
