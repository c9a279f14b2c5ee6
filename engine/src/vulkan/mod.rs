//! The Vulkan compute device: every [`crate::backend::Backend`] primitive as a GLSL
//! compute kernel (`shaders/*.comp`), run through ash on any Vulkan 1.1 device.
//!
//! Where things are:
//! - `context.rs`: loading Vulkan, choosing the physical device, the compute queue,
//!   validation layer and debug messenger.
//! - `memory.rs`: gpu-allocator suballocation, the caching buffer pool, [`VulkanBuffer`].
//! - `pipelines.rs`: the embedded SPIR-V kernels and their pipelines.
//! - `spirv_sources.rs`: why the SPIR-V is committed, and the check that it matches the
//!   GLSL (shared with `build.rs` and the `compile-shaders` tool).
//! - `opcode_table.rs`: the elementwise kernels' op codes, generated for Rust and GLSL
//!   from `shaders/opcodes.txt` (also shared with `build.rs` and `compile-shaders`).
//! - `recorder.rs`: batching dispatches into command buffers, barriers from hazard
//!   tracking, submission and fences.
//! - `profile.rs`: per-kernel GPU time from timestamp queries.
//! - `backend.rs`: the thin `Backend` impl: shapes into push constants, one launch per op
//!   (`args.rs` holds the shape/stride packing it shares).
//!
//! This file holds [`VulkanDevice`] (a cheap `Arc` handle) and the few operations every
//! op shares: allocating a buffer, launching a kernel, uploading and reading back.
//!
//! Environment variables: `ENGINE_VULKAN_DEVICE` (index or name substring),
//! `ENGINE_VULKAN_VALIDATION=1` (Khronos validation layer), `ENGINE_VULKAN_PROFILE=1`
//! (print a per-kernel time table at exit).

#![warn(missing_docs)]

mod args;
mod backend;
mod context;
mod memory;
#[cfg(test)]
#[allow(dead_code)] // build.rs and the compile-shaders tool use the rest of it
mod opcode_table;
mod pipelines;
mod profile;
mod recorder;
#[cfg(test)]
#[allow(dead_code)] // build.rs and the compile-shaders tool use the rest of it
mod spirv_sources;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

pub use context::{validation_message_count, DeviceInfo, DeviceKind, DeviceSelector};
pub use memory::{PoolStats, VulkanBuffer};
pub use profile::KernelTime;

use context::Context;
use memory::{BufferInner, Place, Pool};
use pipelines::{Kernel, Pipelines};
use recorder::{Access, Recorder};

use crate::{Error, Result};

/// How to open a Vulkan device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VulkanOptions {
    /// Which device; `None` picks by kind (discrete, integrated, virtual, CPU).
    pub device: Option<DeviceSelector>,
    /// Enable `VK_LAYER_KHRONOS_validation` (when installed) with a debug messenger.
    pub validation: bool,
    /// Time every kernel with timestamp queries (see [`VulkanDevice::profile`]).
    pub profile: bool,
}

impl VulkanOptions {
    /// Options from `ENGINE_VULKAN_DEVICE`, `ENGINE_VULKAN_VALIDATION` and
    /// `ENGINE_VULKAN_PROFILE` (`1`, `true` or `yes` turn a flag on).
    pub fn from_env() -> Self {
        let flag = |name: &str| {
            std::env::var(name)
                .map(|v| matches!(v.trim().to_lowercase().as_str(), "1" | "true" | "yes"))
                .unwrap_or(false)
        };
        VulkanOptions {
            device: std::env::var("ENGINE_VULKAN_DEVICE")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|s| DeviceSelector::parse(&s)),
            validation: flag("ENGINE_VULKAN_VALIDATION"),
            profile: flag("ENGINE_VULKAN_PROFILE"),
        }
    }
}

/// Lists the physical devices that have a compute queue.
pub fn enumerate_devices() -> Result<Vec<DeviceInfo>> {
    context::enumerate()
}

/// The state behind a [`VulkanDevice`] handle. Locks are taken in the order
/// `pipes`, then `rec`, then `pool`; dropping a buffer takes only `pool`.
pub(crate) struct Shared {
    pipes: Mutex<Pipelines>,
    rec: Mutex<Recorder>,
    pub(crate) pool: Mutex<Pool>,
    options: VulkanOptions,
    /// Declared last: destroyed after everything made from it (see `Drop`).
    ctx: Context,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::Device("vulkan: device state poisoned by an earlier panic".into()))
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.options.profile {
            eprint!("{}", self.profile_table());
        }
        let device = &self.ctx.device;
        if let Ok(mut rec) = self.rec.lock() {
            rec.destroy(&self.ctx, &self.pool);
        }
        if let Ok(mut p) = self.pipes.lock() {
            p.destroy(device);
        }
        if let Ok(mut p) = self.pool.lock() {
            p.destroy(device);
        }
    }
}

impl Shared {
    fn profile_table(&self) -> String {
        let rows = match self.rec.lock() {
            Ok(mut rec) => {
                let _ = rec.flush(&self.ctx, &self.pool);
                rec.profiler.rows()
            }
            Err(_) => vec![],
        };
        profile::table(&self.ctx.info.name, &rows)
    }
}

/// A Vulkan compute device: a cheap handle (an `Arc`); clones share the device, and two
/// handles are equal when they refer to the same opened device.
#[derive(Clone)]
pub struct VulkanDevice(Arc<Shared>);

impl PartialEq for VulkanDevice {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for VulkanDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VulkanDevice({})", self.describe())
    }
}

static DEFAULT: OnceLock<Result<VulkanDevice>> = OnceLock::new();

extern "C" {
    fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
}

/// Prints the shared device's profile when the process exits (it is never dropped).
extern "C" fn print_default_profile() {
    if let Some(Ok(d)) = DEFAULT.get() {
        d.print_profile();
    }
}

impl VulkanDevice {
    /// Opens a new device with `options` (prefer [`VulkanDevice::default_device`], which
    /// opens one per process).
    pub fn new(options: VulkanOptions) -> Result<Self> {
        let ctx = Context::new(options.validation, options.device.as_ref())?;
        let allocator =
            gpu_allocator::vulkan::Allocator::new(&gpu_allocator::vulkan::AllocatorCreateDesc {
                instance: ctx.instance.instance.clone(),
                device: ctx.device.clone(),
                physical_device: ctx.physical,
                debug_settings: Default::default(),
                buffer_device_address: false,
                allocation_sizes: Default::default(),
            })
            .map_err(|e| Error::Device(format!("vulkan: creating the allocator: {e}")))?;
        let timing = if options.profile {
            if ctx.timestamp_period.is_none() {
                eprintln!(
                    "engine: {} has no compute timestamps; profiling is off",
                    ctx.info.name
                );
            }
            ctx.timestamp_period
        } else {
            None
        };
        Ok(VulkanDevice(Arc::new(Shared {
            pipes: Mutex::new(Pipelines::new(&ctx.device)?),
            rec: Mutex::new(Recorder::new(timing)),
            pool: Mutex::new(Pool::new(allocator)),
            options,
            ctx,
        })))
    }

    /// The process-wide device, opened on first call with [`VulkanOptions::from_env`].
    pub fn default_device() -> Result<Self> {
        Self::init_default(VulkanOptions::from_env())
    }

    /// The process-wide device, opened with `options` if no call opened it yet (later
    /// calls return the existing device and ignore their options).
    pub fn init_default(options: VulkanOptions) -> Result<Self> {
        DEFAULT
            .get_or_init(|| {
                let profile = options.profile;
                let d = VulkanDevice::new(options);
                if profile && d.is_ok() {
                    // SAFETY: registering a plain function; it only touches `DEFAULT`.
                    unsafe { atexit(print_default_profile) };
                }
                d
            })
            .clone()
    }

    /// What the device is, e.g. `vulkan:0 (llvmpipe (LLVM 15.0.6, 256 bits))`.
    pub fn describe(&self) -> String {
        let i = &self.0.ctx.info;
        format!("vulkan:{} ({})", i.index, i.name)
    }

    /// The chosen physical device.
    pub fn info(&self) -> &DeviceInfo {
        &self.0.ctx.info
    }

    /// The options the device was opened with.
    pub fn options(&self) -> &VulkanOptions {
        &self.0.options
    }

    /// Counters of the buffer pool (allocations, reuses, live bytes).
    pub fn pool_stats(&self) -> PoolStats {
        self.0.pool.lock().map(|p| p.stats()).unwrap_or_default()
    }

    /// Starts a new high-water mark of the pool's live bytes ([`PoolStats::bytes_peak`]).
    pub fn reset_pool_peak(&self) {
        if let Ok(mut p) = self.0.pool.lock() {
            p.reset_peak();
        }
    }

    /// Submits all recorded work and waits for it.
    pub fn synchronize(&self) -> Result<()> {
        lock(&self.0.rec)?.flush(&self.0.ctx, &self.0.pool)
    }

    /// Per-kernel GPU time so far (empty unless opened with profiling on), after waiting
    /// for all recorded work.
    pub fn profile(&self) -> Result<Vec<KernelTime>> {
        let mut rec = lock(&self.0.rec)?;
        rec.flush(&self.0.ctx, &self.0.pool)?;
        Ok(rec.profiler.rows())
    }

    /// Prints the per-kernel table (kernel, calls, total ms, mean µs) to stderr.
    pub fn print_profile(&self) {
        eprint!("{}", self.0.profile_table());
    }

    /// Frees the device memory cached by the buffer pool (after waiting for all work);
    /// live buffers are untouched. Useful between phases with different shapes.
    pub fn release_cached_memory(&self) -> Result<()> {
        let mut rec = lock(&self.0.rec)?;
        rec.flush(&self.0.ctx, &self.0.pool)?;
        lock(&self.0.pool)?.trim(&self.0.ctx.device);
        Ok(())
    }

    /// A new buffer of `len` elements with undefined contents.
    pub(crate) fn alloc(&self, len: usize) -> Result<VulkanBuffer> {
        // Kernels bind whole buffers; a larger one could not be bound at all.
        let bytes = (len as u64).saturating_mul(4);
        if bytes > self.0.ctx.max_storage_bytes {
            return Err(Error::Device(format!(
                "vulkan: a tensor of {len} elements exceeds {}'s largest storage buffer ({} bytes)",
                self.0.ctx.info.name, self.0.ctx.max_storage_bytes
            )));
        }
        let block = lock(&self.0.pool)?.acquire(&self.0.ctx.device, Place::Device, bytes, 0)?;
        Ok(VulkanBuffer(Arc::new(BufferInner {
            shared: self.0.clone(),
            block: Some(block),
            len,
            last_use: AtomicU64::new(0),
        })))
    }

    /// Records one dispatch of `kernel`; `bufs` are its bindings in order, with whether
    /// the kernel writes each.
    pub(crate) fn launch(
        &self,
        kernel: &Kernel,
        spec: &[u32],
        bufs: &[(&VulkanBuffer, bool)],
        push: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        debug_assert_eq!(bufs.len() as u32, kernel.bindings);
        if groups.contains(&0) {
            return Ok(());
        }
        let pipe = lock(&self.0.pipes)?.get(&self.0.ctx.device, kernel, spec)?;
        let mut rec = lock(&self.0.rec)?;
        let serial = rec.serial(&self.0.ctx)?;
        let accesses: Vec<Access> = bufs
            .iter()
            .map(|(b, write)| {
                b.touch(serial);
                Access {
                    buffer: b.block().buffer,
                    id: b.block().id,
                    write: *write,
                }
            })
            .collect();
        rec.dispatch(
            &self.0.ctx,
            &self.0.pool,
            pipe,
            kernel.name,
            &accesses,
            push,
            groups,
        )
    }

    /// A new buffer of `len` 4-byte elements holding `bytes` (f32 or u32 data).
    pub(crate) fn upload(&self, bytes: &[u8]) -> Result<VulkanBuffer> {
        let len = bytes.len() / 4;
        let dst = self.alloc(len)?;
        if bytes.is_empty() {
            return Ok(dst);
        }
        let mut rec = lock(&self.0.rec)?;
        let serial = rec.serial(&self.0.ctx)?;
        let mut staging = lock(&self.0.pool)?.acquire(
            &self.0.ctx.device,
            Place::Upload,
            bytes.len() as u64,
            rec.completed,
        )?;
        match staging.allocation.mapped_slice_mut() {
            Some(m) => m[..bytes.len()].copy_from_slice(bytes),
            None => {
                lock(&self.0.pool)?.release(staging, 0);
                return Err(Error::Device(
                    "vulkan: staging memory is not host-mapped".into(),
                ));
            }
        }
        dst.touch(serial);
        let src = Access {
            buffer: staging.buffer,
            id: staging.id,
            write: false,
        };
        let to = Access {
            buffer: dst.block().buffer,
            id: dst.block().id,
            write: true,
        };
        rec.copy(
            &self.0.ctx,
            &self.0.pool,
            src,
            to,
            bytes.len() as u64,
            Some(staging),
        )?;
        Ok(dst)
    }

    /// Reads a buffer back: records a copy to staging, submits, waits for it.
    pub(crate) fn download(&self, x: &VulkanBuffer) -> Result<Vec<f32>> {
        if x.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = 4 * x.len() as u64;
        let mut rec = lock(&self.0.rec)?;
        let serial = rec.serial(&self.0.ctx)?;
        let staging = lock(&self.0.pool)?.acquire(
            &self.0.ctx.device,
            Place::Readback,
            bytes,
            rec.completed,
        )?;
        x.touch(serial);
        let src = Access {
            buffer: x.block().buffer,
            id: x.block().id,
            write: false,
        };
        let dst = Access {
            buffer: staging.buffer,
            id: staging.id,
            write: true,
        };
        let result = rec
            .copy(&self.0.ctx, &self.0.pool, src, dst, bytes, None)
            .and_then(|_| rec.flush(&self.0.ctx, &self.0.pool));
        let out = result.and_then(|_| {
            let m = staging.allocation.mapped_slice().ok_or_else(|| {
                Error::Device("vulkan: readback memory is not host-mapped".into())
            })?;
            Ok(m[..bytes as usize]
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        });
        let done = rec.completed;
        lock(&self.0.pool)?.release(staging, done);
        out
    }
}
