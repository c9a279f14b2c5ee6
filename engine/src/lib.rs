//! A small tensor engine with tape-based reverse-mode autodiff.
//!
//! Start here:
//! - [`Tensor`] (in `tensor.rs`): an `f32` array on a [`Device`], and the ops on it.
//! - `ops/`: one file per op family; each op's forward and its backward (vector-Jacobian
//!   product) sit side by side.
//! - `autograd.rs`: the tape, `backward()` and `no_grad`; [`graph`]: a tensor's graph as
//!   Graphviz DOT text ([`Tensor::to_dot`]), to see the tape.
//! - [`backend::Backend`]: the ~20 core primitives a device provides, and
//!   [`backend::fused::Fused`], the fused ops it may write (or leave to their default
//!   compositions of the core); `reference/` writes
//!   each one plainly on ndarray in `f64` (the oracle), `cpu/` fast on slices, `vulkan/`
//!   with GLSL compute kernels from `shaders/`.
//! - [`gradcheck`]: finite-difference checks of every backward.
//! - [`profile`]: per-op time (`ENGINE_PROFILE=1`); [`memory`]: live and peak bytes.
//! - [`anomaly`]: find the first op that made a NaN or an infinity, and its layer.
//! - [`invertible`]: backward through invertible blocks without storing activations.
//! - [`precision`]: bf16 products for the code that allows them (the CPU device's
//!   convolutions, in `cpu/bf16.rs`).
//! - [`testing`]: one test body on every device ([`device_test!`]), for this crate's
//!   tests in `tests/` and the crates built on it.

#[macro_use]
pub mod device;
pub mod anomaly;
pub mod autograd;
pub mod backend;
pub mod cpu;
mod error;
pub mod gradcheck;
pub mod graph;
pub mod invertible;
pub mod linalg;
pub mod memory;
pub mod ops;
pub mod precision;
pub mod profile;
pub mod random;
pub mod reference;
pub mod shape;
mod tensor;
pub mod testing;
#[cfg(feature = "vulkan")]
pub mod vulkan;

pub use autograd::{no_grad, Gradients, NoGradGuard};
pub use device::Device;
pub use error::{Error, Result};
pub use tensor::Tensor;
