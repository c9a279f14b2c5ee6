//! Where a tensor lives: the [`Device`] handle and the type-erased [`Storage`].
//!
//! The tensor layer is written once, against [`crate::backend::Backend`]. Each op picks the
//! concrete backend of its inputs' device with [`with_backend!`], which hands the op body a
//! `&impl DeviceBackend` that can unwrap a [`Storage`] into its own buffer type and wrap
//! results back. Adding a device means adding one arm here, one `Backend` impl (the core
//! primitives) and one `Fused` impl (empty to begin with: every fused op then runs as
//! its composition of the core, as on [`Device::CoreCpu`]).

use crate::backend::Backend;
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::reference::{ReferenceBackend, ReferenceBuffer};
use crate::Result;

/// A compute device. Cheap to clone; clones refer to the same device.
#[derive(Clone, Debug, PartialEq)]
pub enum Device {
    /// The fast CPU device: the primitives on slices, rayon and matrixmultiply
    /// (`cpu/`).
    Cpu,
    /// The reference device: every primitive written plainly on ndarray in `f64`
    /// (`reference/`), the oracle the other devices are tested against. Slow.
    Reference,
    /// A Vulkan compute device.
    #[cfg(feature = "vulkan")]
    Vulkan(crate::vulkan::VulkanDevice),
    /// The CPU device's core primitives alone, every fused op composed from them
    /// ([`crate::backend::fused::CoreOnly`]): what a device that has written only the core
    /// of [`crate::backend::Backend`] computes. Its buffers are the CPU device's.
    CoreCpu,
}

impl Device {
    /// A short description, e.g. `"cpu"`.
    pub fn name(&self) -> String {
        with_backend!(self, b => b.name())
    }

    /// The first Vulkan device chosen by the default policy (see [`crate::vulkan`]).
    #[cfg(feature = "vulkan")]
    pub fn vulkan() -> Result<Device> {
        Ok(Device::Vulkan(
            crate::vulkan::VulkanDevice::default_device()?
        ))
    }

    /// Whether this is the CPU device.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// A tensor's memory on its device.
#[derive(Clone)]
pub enum Storage {
    /// Host memory of the CPU device.
    Cpu(CpuBuffer),
    /// Host memory of the reference device.
    Reference(ReferenceBuffer),
    /// Device memory of a Vulkan device.
    #[cfg(feature = "vulkan")]
    Vulkan(crate::vulkan::VulkanBuffer),
}

/// A backend that knows how to find its buffers inside a [`Storage`].
pub trait DeviceBackend: Backend {
    /// The backend's buffer inside `s`. `s` must live on this backend's device; the
    /// tensor layer checks devices before dispatching, so a mismatch is an engine bug.
    fn buf<'a>(&self, s: &'a Storage) -> &'a Self::Buffer;
    /// Wraps a result buffer.
    fn wrap(&self, b: Self::Buffer) -> Storage;
    /// Wraps a fallible result buffer.
    fn wrap_res(&self, b: Result<Self::Buffer>) -> Result<Storage> {
        b.map(|b| self.wrap(b))
    }
}

impl DeviceBackend for CpuBackend {
    fn buf<'a>(&self, s: &'a Storage) -> &'a CpuBuffer {
        match s {
            Storage::Cpu(b) => b,
            _ => unreachable!("engine bug: a non-CPU buffer reached the CPU backend"),
        }
    }
    fn wrap(&self, b: CpuBuffer) -> Storage {
        Storage::Cpu(b)
    }
}

impl DeviceBackend for crate::backend::fused::CoreOnly<CpuBackend> {
    fn buf<'a>(&self, s: &'a Storage) -> &'a CpuBuffer {
        self.0.buf(s)
    }
    fn wrap(&self, b: CpuBuffer) -> Storage {
        self.0.wrap(b)
    }
}

impl DeviceBackend for ReferenceBackend {
    fn buf<'a>(&self, s: &'a Storage) -> &'a ReferenceBuffer {
        match s {
            Storage::Reference(b) => b,
            _ => unreachable!("engine bug: a non-reference buffer reached the reference backend"),
        }
    }
    fn wrap(&self, b: ReferenceBuffer) -> Storage {
        Storage::Reference(b)
    }
}

#[cfg(feature = "vulkan")]
impl DeviceBackend for crate::vulkan::VulkanDevice {
    fn buf<'a>(&self, s: &'a Storage) -> &'a crate::vulkan::VulkanBuffer {
        match s {
            Storage::Vulkan(b) => b,
            _ => unreachable!("engine bug: a non-Vulkan buffer reached the Vulkan backend"),
        }
    }
    fn wrap(&self, b: crate::vulkan::VulkanBuffer) -> Storage {
        Storage::Vulkan(b)
    }
}

/// Runs `$body` with `$b` bound to the concrete backend of `$device`.
macro_rules! with_backend {
    ($device:expr, $b:ident => $body:expr) => {
        match $device {
            $crate::device::Device::Cpu => {
                let $b = &$crate::cpu::CpuBackend;
                $body
            }
            $crate::device::Device::Reference => {
                let $b = &$crate::reference::ReferenceBackend;
                $body
            }
            $crate::device::Device::CoreCpu => {
                let $b = &$crate::backend::fused::CoreOnly($crate::cpu::CpuBackend);
                $body
            }
            #[cfg(feature = "vulkan")]
            $crate::device::Device::Vulkan(v) => {
                let $b = v;
                $body
            }
        }
    };
}
pub(crate) use with_backend;

/// [`with_backend!`] for an op's call into its device: `$body` (a `Result`) runs timed
/// under the op name `$op`, with `$flops` of arithmetic, when [`crate::profile`] is on.
macro_rules! dispatch {
    ($op:expr, $flops:expr, $device:expr, $b:ident => $body:expr) => {
        $crate::profile::time($op, $flops as f64, || with_backend!($device, $b => $body))
    };
}
