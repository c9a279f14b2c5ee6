//! Device memory: gpu-allocator suballocation behind a caching pool of buffers.
//!
//! Every buffer is a [`Block`]: one `vk::Buffer` bound to a suballocation of a large
//! gpu-allocator memory block (never one `vkAllocateMemory` per tensor). Blocks are
//! rounded up to a size class (powers of two from 256 bytes) and, when a tensor is
//! dropped, go back to the pool's free list of their class instead of being freed, so a
//! training step that repeats the same shapes allocates nothing after its first
//! repetition. [`PoolStats`] counts allocations, reuses and live bytes.
//!
//! When may a freed block be handed out again while work that reads it is recorded or
//! in flight?
//! - Device-local blocks: at once. All work goes to one queue, each command buffer
//!   starts with a full barrier (covering everything earlier in submission order), and
//!   inside a command buffer the recorder tracks hazards by block id, so the new
//!   writer is ordered after the old readers by a barrier (see `recorder.rs`).
//! - Staging blocks: the host writes or reads them directly, which no barrier orders,
//!   so they are reusable only once the batch that last used them has signalled its
//!   fence (`ready_serial <= completed`).
//!
//! Running out of device memory returns [`Error::Device`]; before giving up, the pool
//! frees its cached blocks and retries once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ash::vk;
use gpu_allocator::vulkan::{Allocation, AllocationCreateDesc, AllocationScheme, Allocator};
use gpu_allocator::MemoryLocation;

use super::Shared;
use crate::{Error, Result};

/// Counters of the buffer pool, from [`super::VulkanDevice::pool_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Blocks created with new memory (each a gpu-allocator suballocation).
    pub allocations: u64,
    /// Requests served from the free lists without new memory.
    pub reuses: u64,
    /// Bytes in blocks currently held by buffers (size classes, not requested sizes).
    pub bytes_live: u64,
    /// The most `bytes_live` since the pool was made or its peak last reset.
    pub bytes_peak: u64,
    /// Bytes in all blocks the pool owns, live or cached.
    pub bytes_reserved: u64,
}

/// Where a block lives: device-local memory for tensors, or host-visible staging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Place {
    /// Tensor storage (device-local where the device has such memory).
    Device,
    /// Host-written source of an upload.
    Upload,
    /// Host-read destination of a readback.
    Readback,
}

impl Place {
    fn location(self) -> MemoryLocation {
        match self {
            Place::Device => MemoryLocation::GpuOnly,
            Place::Upload => MemoryLocation::CpuToGpu,
            Place::Readback => MemoryLocation::GpuToCpu,
        }
    }
}

/// One pooled buffer: a `vk::Buffer` over a suballocation.
pub(crate) struct Block {
    /// Unique for the pool's lifetime; the recorder's hazard tracking keys on it.
    pub id: u64,
    pub buffer: vk::Buffer,
    pub allocation: Allocation,
    /// Capacity in bytes (the size class).
    pub size: u64,
    pub place: Place,
}

struct FreeBlock {
    block: Block,
    /// Serial of the last batch that used it (only matters for staging blocks).
    ready_serial: u64,
}

/// The allocator and the free lists. Guarded by `Shared::pool`.
pub(crate) struct Pool {
    allocator: Option<Allocator>,
    free: HashMap<(Place, u64), Vec<FreeBlock>>,
    stats: PoolStats,
    next_id: u64,
}

const MIN_CLASS: u64 = 256;

fn size_class(bytes: u64) -> u64 {
    bytes.max(MIN_CLASS).next_power_of_two()
}

impl Pool {
    pub fn new(allocator: Allocator) -> Self {
        Pool {
            allocator: Some(allocator),
            free: HashMap::new(),
            stats: PoolStats::default(),
            next_id: 1,
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Starts a new high-water mark at the current live bytes.
    pub fn reset_peak(&mut self) {
        self.stats.bytes_peak = self.stats.bytes_live;
    }

    /// A block of at least `bytes` in `place`; `completed` is the last finished batch.
    pub fn acquire(
        &mut self,
        device: &ash::Device,
        place: Place,
        bytes: u64,
        completed: u64,
    ) -> Result<Block> {
        let class = size_class(bytes);
        if let Some(list) = self.free.get_mut(&(place, class)) {
            let ready = |f: &FreeBlock| place == Place::Device || f.ready_serial <= completed;
            if let Some(pos) = list.iter().position(ready) {
                let f = list.swap_remove(pos);
                self.stats.reuses += 1;
                self.stats.bytes_live += class;
                self.stats.bytes_peak = self.stats.bytes_peak.max(self.stats.bytes_live);
                return Ok(f.block);
            }
        }
        let block = match self.create(device, place, class) {
            Ok(b) => b,
            Err(_) => {
                // Out of memory (or fragmentation): drop the cache and retry once. Cached
                // staging blocks may still be in flight, so wait for the device first.
                // SAFETY: waiting is always valid.
                unsafe { device.device_wait_idle() }
                    .map_err(|e| Error::Device(format!("vulkan: wait idle failed: {e}")))?;
                self.trim(device);
                self.create(device, place, class)?
            }
        };
        self.stats.allocations += 1;
        self.stats.bytes_live += class;
        self.stats.bytes_peak = self.stats.bytes_peak.max(self.stats.bytes_live);
        self.stats.bytes_reserved += class;
        Ok(block)
    }

    /// Returns a block to its free list; `last_use` is the serial of its last batch.
    pub fn release(&mut self, block: Block, last_use: u64) {
        self.stats.bytes_live -= block.size;
        self.free
            .entry((block.place, block.size))
            .or_default()
            .push(FreeBlock {
                block,
                ready_serial: last_use,
            });
    }

    fn create(&mut self, device: &ash::Device, place: Place, size: u64) -> Result<Block> {
        let usage = vk::BufferUsageFlags::STORAGE_BUFFER
            | vk::BufferUsageFlags::TRANSFER_SRC
            | vk::BufferUsageFlags::TRANSFER_DST;
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid device and create info.
        let buffer = unsafe { device.create_buffer(&info, None) }
            .map_err(|e| Error::Device(format!("vulkan: creating a {size}-byte buffer: {e}")))?;
        let requirements = unsafe { device.get_buffer_memory_requirements(buffer) };
        let allocator = self.allocator.as_mut().expect("allocator lives until drop");
        let allocation = match allocator.allocate(&AllocationCreateDesc {
            name: "engine tensor",
            requirements,
            location: place.location(),
            linear: true,
            allocation_scheme: AllocationScheme::GpuAllocatorManaged,
        }) {
            Ok(a) => a,
            Err(e) => {
                unsafe { device.destroy_buffer(buffer, None) };
                return Err(Error::Device(format!(
                    "vulkan: out of device memory allocating {size} bytes: {e}"
                )));
            }
        };
        // SAFETY: the allocation satisfies the buffer's requirements.
        if let Err(e) =
            unsafe { device.bind_buffer_memory(buffer, allocation.memory(), allocation.offset()) }
        {
            unsafe { device.destroy_buffer(buffer, None) };
            let _ = allocator.free(allocation);
            return Err(Error::Device(format!("vulkan: binding buffer memory: {e}")));
        }
        let id = self.next_id;
        self.next_id += 1;
        Ok(Block {
            id,
            buffer,
            allocation,
            size,
            place,
        })
    }

    /// Frees every cached block. The caller guarantees none is in use by the device.
    pub fn trim(&mut self, device: &ash::Device) {
        let allocator = self.allocator.as_mut().expect("allocator lives until drop");
        for (_, list) in self.free.drain() {
            for f in list {
                self.stats.bytes_reserved -= f.block.size;
                // SAFETY: the device is idle (caller) and nothing else refers to it.
                unsafe { device.destroy_buffer(f.block.buffer, None) };
                let _ = allocator.free(f.block.allocation);
            }
        }
    }

    /// Frees everything, then the allocator itself (before the device is destroyed).
    pub fn destroy(&mut self, device: &ash::Device) {
        self.trim(device);
        self.allocator = None;
    }
}

/// A dense `f32` array in device memory: the Vulkan backend's buffer.
///
/// Cheap to clone (an `Arc`); clones share memory. When the last clone is dropped the
/// block goes back to the device's pool (see the module documentation for when it may
/// be reused).
#[derive(Clone)]
pub struct VulkanBuffer(pub(crate) Arc<BufferInner>);

pub(crate) struct BufferInner {
    pub shared: Arc<Shared>,
    pub block: Option<Block>,
    /// Elements (f32) the buffer holds; the block may be larger.
    pub len: usize,
    /// Serial of the last batch that recorded work on it.
    pub last_use: AtomicU64,
}

impl VulkanBuffer {
    /// Number of `f32` elements.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    pub(crate) fn block(&self) -> &Block {
        self.0.block.as_ref().expect("block present until drop")
    }

    /// Marks the buffer as used by batch `serial`.
    pub(crate) fn touch(&self, serial: u64) {
        self.0.last_use.fetch_max(serial, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for VulkanBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VulkanBuffer(len {}, block {})",
            self.0.len,
            self.block().id
        )
    }
}

impl Drop for BufferInner {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            let last = *self.last_use.get_mut();
            if let Ok(mut pool) = self.shared.pool.lock() {
                pool.release(block, last);
            }
        }
    }
}
