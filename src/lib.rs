//! Helpers shared by the top-level examples, integration tests and benchmarks.
//!
//! The real code lives in the `engine` and `glow` crates; this package holds `tests/`,
//! `examples/` and `benches/` and what they have in common: the list of devices a test
//! runs on and [`device_test!`], which turns one test body into one test per device; and
//! what the tour uses: [`tiny`], its stop 0 (the engine's whole idea in one short file),
//! [`exercises`] and their checks, and [`pictures`], which draws its figures.

pub use engine;
pub use engine::device_test;
pub use glow;

pub mod cli;
pub mod exercises;
pub mod pictures;
pub mod tiny;

/// `docs/exercises.md`, the exercises' worked solutions, included here so that `cargo
/// test` runs each one against its check.
#[doc = include_str!("../docs/exercises.md")]
pub mod solutions {}

/// `docs/tour.md`, included here so that `cargo test` compiles and runs its snippets.
// Its excerpts of the code are fragments (a loop's head, the middle of a function),
// which rustdoc cannot parse to highlight them.
#[allow(rustdoc::invalid_rust_codeblocks)]
#[doc = include_str!("../docs/tour.md")]
pub mod tour {}

pub mod testing {
    //! The fixtures of the top-level tests: everything of [`engine::testing`] (the
    //! devices, [`device_test!`](crate::device_test), the Vulkan test device), and what
    //! the Glow tests share (scratch folders, the built examples, a batch of images,
    //! a few training steps).
    pub use engine::testing::*;
    use engine::Device;

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

    impl AsRef<std::path::Path> for Scratch {
        fn as_ref(&self) -> &std::path::Path {
            &self.0
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

    /// The small Glow the model, checkpoint and reversible tests start from: 8x8 RGB
    /// images, L=2, K=2, hidden 8, a learned top prior, with `coupling` and
    /// `permutation`; each test changes what it needs with `..small_glow(..)`.
    pub fn small_glow(
        coupling: glow::Coupling,
        permutation: glow::Permutation,
    ) -> glow::GlowConfig {
        glow::GlowConfig {
            image_shape: [3, 8, 8],
            levels: 2,
            depth: 2,
            hidden: 8,
            coupling,
            permutation,
            learn_top: true,
            ..glow::GlowConfig::default()
        }
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

    /// The largest elementwise difference between two tensors of the same size.
    pub fn max_abs_diff(a: &engine::Tensor, b: &engine::Tensor) -> engine::Result<f32> {
        let (a, b) = (a.to_vec()?, b.to_vec()?);
        Ok(a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max))
    }

    /// Every latent `model` encodes `x` to (unconditional), flattened into one vector:
    /// what a brute-force Jacobian takes the gradient of, one entry at a time.
    pub fn flat_latents(model: &glow::Glow, x: &engine::Tensor) -> engine::Result<engine::Tensor> {
        let latents = model.encode(x, None)?;
        let flat: Vec<engine::Tensor> = latents
            .iter()
            .map(|z| z.reshape(&[z.numel()]))
            .collect::<engine::Result<_>>()?;
        engine::Tensor::concat(&flat.iter().collect::<Vec<_>>(), 0)
    }
}
