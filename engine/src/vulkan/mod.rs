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
pub use profile::{DeviceCounters, KernelTime};

use context::Context;
use memory::{BufferInner, Place, Pool};
use pipelines::{Kernel, Pipelines};
use recorder::{Access, Recorder};

use crate::{Error, Result};

/// A device's identity and the limits the engine reads (see [`VulkanDevice::properties`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProperties {
    /// The driver's name for the device.
    pub name: String,
    /// Discrete, integrated, virtual, CPU.
    pub kind: DeviceKind,
    /// Vulkan version, `"major.minor.patch"`.
    pub api_version: String,
    /// The driver's version number (its encoding is the vendor's).
    pub driver_version: u32,
    /// PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel, 0x10005 Mesa's CPU driver).
    pub vendor_id: u32,
    /// The vendor's device id.
    pub device_id: u32,
    /// Invocations per subgroup.
    pub subgroup_size: u32,
    /// Shared memory per workgroup, in bytes.
    pub max_shared_memory_bytes: u32,
    /// Invocations per workgroup.
    pub max_workgroup_invocations: u32,
    /// The GEMM workgroup edge chosen for it (`gemm_tile` in `backend.rs`).
    pub gemm_tile: u32,
    /// Memory heaps: bytes, and whether device-local.
    pub heaps: Vec<(u64, bool)>,
}

/// How to open a Vulkan device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VulkanOptions {
    /// Which device; `None` picks by kind (discrete, integrated, virtual, CPU).
    pub device: Option<DeviceSelector>,
    /// Enable `VK_LAYER_KHRONOS_validation` (when installed) with a debug messenger.
    pub validation: bool,
    /// Time every kernel with timestamp queries (see [`VulkanDevice::profile`]).
    pub profile: bool,
    /// A folder where the driver's compiled pipelines are kept between runs (one file per
    /// device model); `None` compiles every pipeline afresh.
    pub pipeline_cache: Option<std::path::PathBuf>,
    /// The GEMM workgroup edge (8 or 16) instead of the one chosen from the device's
    /// limits (`backend::gemm_tile`), to run the other tiling in tests.
    pub gemm_tile: Option<u32>,
    /// Which kernel computes `conv2d`: the tiled one, or the naive loop nest the tour
    /// starts from (`ENGINE_VULKAN_CONV=naive`), to learn from and compare with.
    pub conv: ConvKernel,
}

/// The kernels that can compute a forward convolution (`VulkanOptions::conv`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConvKernel {
    /// `shaders/conv2d.comp`: an implicit GEMM on shared-memory tiles, register blocked.
    #[default]
    Tiled,
    /// `shaders/conv2d_naive.comp`: one invocation per output, the reference loop nest.
    Naive,
}

impl VulkanOptions {
    /// Options from `ENGINE_VULKAN_DEVICE`, `ENGINE_VULKAN_VALIDATION` and
    /// `ENGINE_VULKAN_PROFILE` (`1`, `true` or `yes` turn a flag on),
    /// `ENGINE_VULKAN_CONV` (`naive` for [`ConvKernel::Naive`]), and
    /// `ENGINE_VULKAN_PIPELINE_CACHE` (a folder, or `off`; by default
    /// `$XDG_CACHE_HOME/glow-rs`, else `$HOME/.cache/glow-rs`).
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
            pipeline_cache: pipeline_cache_from_env(),
            gemm_tile: None,
            conv: match std::env::var("ENGINE_VULKAN_CONV")
                .map(|v| v.trim().to_lowercase())
                .as_deref()
            {
                Ok("naive") => ConvKernel::Naive,
                Ok("tiled") | Ok("") | Err(_) => ConvKernel::Tiled,
                Ok(other) => {
                    eprintln!(
                        "warning: ENGINE_VULKAN_CONV={other:?} is neither naive nor tiled; \
                         using the tiled kernel"
                    );
                    ConvKernel::Tiled
                }
            },
        }
    }
}

/// The pipeline cache's file for one device model (vendor and device id) in `dir`.
fn pipeline_cache_file(
    dir: &std::path::Path,
    p: &ash::vk::PhysicalDeviceProperties,
) -> std::path::PathBuf {
    dir.join(format!(
        "vulkan-pipelines-{:04x}-{:04x}.bin",
        p.vendor_id, p.device_id
    ))
}

/// `ENGINE_VULKAN_PIPELINE_CACHE`, or the user's cache folder.
fn pipeline_cache_from_env() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    match std::env::var("ENGINE_VULKAN_PIPELINE_CACHE") {
        Ok(v) if matches!(v.trim().to_lowercase().as_str(), "off" | "0" | "none" | "") => None,
        Ok(v) => Some(PathBuf::from(v)),
        Err(_) => std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("glow-rs")),
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
    /// The workgroup edge of the GEMM-tiled kernels on this device.
    gemm_tile: u32,
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
        self.save_pipeline_cache_or_warn();
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
        profile::table(&self.ctx.info.name, &rows, &self.counters())
    }

    fn counters(&self) -> DeviceCounters {
        let mut c = self.rec.lock().map(|r| r.counters).unwrap_or_default();
        if let Ok(p) = self.pipes.lock() {
            c.pipelines_created = p.created;
            c.layouts_created = p.layouts_created;
        }
        c.allocations = self.pool.lock().map(|p| p.stats().allocations).unwrap_or(0);
        c
    }

    /// Writes the pipeline cache if pipelines were created since it was last written:
    /// to a temporary file, then renamed, so a crash leaves the old file or the new one.
    fn save_pipeline_cache(&self) -> Result<()> {
        let Some(dir) = &self.options.pipeline_cache else {
            return Ok(());
        };
        let Some(data) = lock(&self.pipes)?.unsaved_cache_data(&self.ctx.device)? else {
            return Ok(());
        };
        let file = pipeline_cache_file(dir, &self.ctx.props);
        let io = |e: std::io::Error| {
            Error::Device(format!(
                "vulkan: writing the pipeline cache {}: {e}",
                file.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &data).map_err(io)?;
        std::fs::rename(&tmp, &file).map_err(io)
    }

    /// [`Shared::save_pipeline_cache`] where no error can be returned: a cache that cannot
    /// be written costs the next run compile time, not correctness, so it is one line.
    fn save_pipeline_cache_or_warn(&self) {
        if let Err(e) = self.save_pipeline_cache() {
            eprintln!("engine: {e} (the next run compiles its pipelines again)");
        }
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

/// Saves the shared device's pipeline cache when the process exits.
extern "C" fn save_default_pipeline_cache() {
    if let Some(Ok(d)) = DEFAULT.get() {
        d.0.save_pipeline_cache_or_warn();
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
        let saved = (options.pipeline_cache.as_ref())
            .and_then(|dir| std::fs::read(pipeline_cache_file(dir, &ctx.props)).ok());
        let limits = &ctx.props.limits;
        let gemm_tile = match options.gemm_tile {
            Some(t @ (8 | 16)) => t,
            Some(t) => {
                return Err(Error::Device(format!(
                    "vulkan: a GEMM tile of {t} is not built in (8 or 16)"
                )))
            }
            None => backend::gemm_tile(
                ctx.subgroup_size,
                limits.max_compute_work_group_invocations,
                limits.max_compute_shared_memory_size,
            ),
        };
        Ok(VulkanDevice(Arc::new(Shared {
            gemm_tile,
            pipes: Mutex::new(Pipelines::new(&ctx.device, &ctx.props, saved.as_deref())?),
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
                let cache = options.pipeline_cache.is_some();
                let d = VulkanDevice::new(options);
                if profile && d.is_ok() {
                    // SAFETY: registering a plain function; it only touches `DEFAULT`.
                    unsafe { atexit(print_default_profile) };
                }
                if cache && d.is_ok() {
                    // SAFETY: as above.
                    unsafe { atexit(save_default_pipeline_cache) };
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

    /// Whether the Khronos validation layer is on for this device, with its messages
    /// counted by [`validation_message_count`]: asked for in the options and installed.
    pub fn validating(&self) -> bool {
        self.0.ctx.instance.validating()
    }

    /// The options the device was opened with.
    pub fn options(&self) -> &VulkanOptions {
        &self.0.options
    }

    /// What the device is and the limits the engine reads from it, for reports such as
    /// `benches/gpu/`'s.
    pub fn properties(&self) -> DeviceProperties {
        let ctx = &self.0.ctx;
        let p = &ctx.props;
        DeviceProperties {
            name: ctx.info.name.clone(),
            kind: ctx.info.kind,
            api_version: ctx.info.api_version.clone(),
            driver_version: p.driver_version,
            vendor_id: p.vendor_id,
            device_id: p.device_id,
            subgroup_size: ctx.subgroup_size,
            max_shared_memory_bytes: p.limits.max_compute_shared_memory_size,
            max_workgroup_invocations: p.limits.max_compute_work_group_invocations,
            gemm_tile: self.0.gemm_tile,
            heaps: ctx.heaps.clone(),
        }
    }

    /// Dispatches, barriers, submits, host waits, pipelines, layouts and allocations so
    /// far; subtract two snapshots with [`DeviceCounters::since`] for one step's.
    pub fn counters(&self) -> DeviceCounters {
        self.0.counters()
    }

    /// Writes the pipeline cache to [`VulkanOptions::pipeline_cache`] now, if pipelines
    /// were created since it was last written (it is also written when the device is
    /// dropped, and for the process-wide device at exit).
    pub fn save_pipeline_cache(&self) -> Result<()> {
        self.0.save_pipeline_cache()
    }

    /// Bytes of an earlier run's pipeline cache this device started from: 0 when there
    /// was none, or when the file was made by another driver or device (it is ignored).
    pub fn pipeline_cache_loaded_bytes(&self) -> usize {
        self.0.pipes.lock().map(|p| p.loaded_bytes).unwrap_or(0)
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
