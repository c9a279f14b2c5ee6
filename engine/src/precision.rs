//! The matrix-product precision, like PyTorch's `torch.set_float32_matmul_precision`:
//! tensors stay `f32`, and with [`MatmulPrecision::Bf16`] the CPU device's convolutions
//! round their operands to bfloat16 (8 significant bits) and accumulate in `f32` with the
//! AVX-512 BF16 dot-product instruction, which does twice the multiply-adds of an `f32`
//! FMA. (Its kernels, in `cpu/bf16.rs`, are a first version: a training step is not yet
//! faster than in `f32`; see there.)
//!
//! Two switches decide it, so that a model can keep its exact parts exact:
//! - [`set_matmul_precision`], for the whole process (the default is `F32`);
//! - [`reduced`], around the code whose products may be rounded: only the convolutions
//!   run inside it (on this thread) use the lower precision, and their backward passes
//!   do too, wherever they run (the op remembers). Glow puts only its coupling networks
//!   inside: they compute the scales and shifts of an affine map, whose inverse and
//!   log-determinant are exact for whatever values they return. (The inverse recomputes
//!   them from the reconstructed half, which f32 rounding can leave a hair off the
//!   forward pass's; rounded to bf16 that hair can become a bf16 step, so a round trip
//!   is looser than in f32: docs/measurements.md.)
//!
//! The reference and Vulkan devices, and a CPU without `avx512bf16`, compute in `f32`
//! whatever the setting; [`effective`] says what a setting gets on this machine.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

/// How the CPU device multiplies inside [`reduced`] code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPrecision {
    /// `f32` operands and accumulation (the default).
    F32,
    /// Operands rounded to bfloat16 (round to nearest even), products accumulated in `f32`.
    Bf16,
}

static GLOBAL: AtomicU8 = AtomicU8::new(0);

thread_local! {
    static REDUCED: Cell<bool> = const { Cell::new(false) };
}

/// Sets the process's matrix-product precision and returns what this machine gives for
/// it ([`effective`]): `F32` when the CPU cannot do bf16 products.
pub fn set_matmul_precision(precision: MatmulPrecision) -> MatmulPrecision {
    let code = match precision {
        MatmulPrecision::F32 => 0,
        MatmulPrecision::Bf16 => 1,
    };
    GLOBAL.store(code, Ordering::SeqCst);
    effective(precision)
}

/// The process's setting.
pub fn matmul_precision() -> MatmulPrecision {
    match GLOBAL.load(Ordering::SeqCst) {
        0 => MatmulPrecision::F32,
        _ => MatmulPrecision::Bf16,
    }
}

/// What `precision` computes in on this machine's CPU device: `Bf16` only where the CPU
/// has the AVX-512 BF16 instructions.
pub fn effective(precision: MatmulPrecision) -> MatmulPrecision {
    if precision == MatmulPrecision::Bf16 && bf16_supported() {
        MatmulPrecision::Bf16
    } else {
        MatmulPrecision::F32
    }
}

/// Whether this CPU has the AVX-512 BF16 dot product (checked once).
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `f` with reduced precision allowed on this thread (module docs), restoring the
/// previous state after.
pub fn reduced<R>(f: impl FnOnce() -> R) -> R {
    within(true, f)
}

/// Runs `f` with reduced precision allowed or not, restoring the previous state after:
/// what an op's backward pass uses to run as its forward pass did.
pub fn within<R>(allowed: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REDUCED.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(REDUCED.with(|r| r.replace(allowed)));
    f()
}

/// Whether code here runs inside [`reduced`].
pub fn allowed() -> bool {
    REDUCED.with(Cell::get)
}

/// Whether a convolution started here, now, computes in bf16: inside [`reduced`], with
/// the process set to `Bf16` and a CPU that has it.
pub fn use_bf16() -> bool {
    allowed() && effective(matmul_precision()) == MatmulPrecision::Bf16
}
