//! How much memory each device's tensors hold: live bytes and their high-water mark.
//!
//! [`Device::memory_stats`] reports the bytes held by buffers that tensors own right now
//! (`live_bytes`) and the most that were held at once since the last
//! [`Device::reset_peak`] (`peak_bytes`). These are the numbers a memory-saving scheme is
//! judged by (see [`crate::invertible`]): a caching pool's capacity is not counted, only
//! what is handed out.
//!
//! - CPU: every [`crate::cpu::CpuBuffer`] counts its length while it exists, whether its
//!   vector came from the recycling pool (`cpu/pool.rs`) or the allocator.
//! - Reference: every reference buffer counts its length while it exists.
//! - Vulkan: the buffer pool's live bytes in size classes (`vulkan/memory.rs`).
//!
//! The CPU and reference counters are process-wide: tests that compare peaks on one of
//! these devices should not share their process with other work on the same device.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Device;

/// Live and peak bytes of a device's tensor buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes held by buffers right now.
    pub live_bytes: usize,
    /// The most bytes held at once since the last [`Device::reset_peak`].
    pub peak_bytes: usize,
}

/// A live-bytes counter with its high-water mark.
pub(crate) struct Counter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl Counter {
    pub(crate) const fn new() -> Counter {
        Counter {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Counts `bytes` more as live.
    pub(crate) fn add(&self, bytes: usize) {
        let live = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(live, Ordering::Relaxed);
    }

    /// Counts `bytes` as freed.
    pub(crate) fn sub(&self, bytes: usize) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn stats(&self) -> MemoryStats {
        MemoryStats {
            live_bytes: self.live.load(Ordering::Relaxed),
            peak_bytes: self.peak.load(Ordering::Relaxed),
        }
    }

    fn reset_peak(&self) {
        self.peak
            .store(self.live.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Bytes of live CPU buffers.
pub(crate) static CPU: Counter = Counter::new();
/// Bytes of live reference buffers.
pub(crate) static REFERENCE: Counter = Counter::new();

impl Device {
    /// Live and peak bytes of this device's tensor buffers (see [`crate::memory`]).
    pub fn memory_stats(&self) -> MemoryStats {
        match self {
            Device::Cpu | Device::CoreCpu => CPU.stats(),
            Device::Reference => REFERENCE.stats(),
            #[cfg(feature = "vulkan")]
            Device::Vulkan(v) => {
                let s = v.pool_stats();
                MemoryStats {
                    live_bytes: s.bytes_live as usize,
                    peak_bytes: s.bytes_peak as usize,
                }
            }
        }
    }

    /// Starts a new high-water mark at the current live bytes.
    pub fn reset_peak(&self) {
        match self {
            Device::Cpu | Device::CoreCpu => CPU.reset_peak(),
            Device::Reference => REFERENCE.reset_peak(),
            #[cfg(feature = "vulkan")]
            Device::Vulkan(v) => v.reset_pool_peak(),
        }
    }
}
