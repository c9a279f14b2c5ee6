//! Command recording and batching: many dispatches per command buffer, barriers only
//! where one dispatch depends on another, and a submit only when the host needs data
//! or a batch is full.
//!
//! A [`Frame`] is one batch: a command buffer, its descriptor pool, a fence, and (when
//! profiling) a timestamp query pool. Ops append dispatches to the current frame. Hazard
//! tracking works on block ids: the blocks written and read since the last barrier are
//! remembered, and a dispatch that reads a written block (read-after-write) or writes a
//! read or written one (write-after-read, write-after-write) first records one global
//! compute/transfer memory barrier and clears both sets. Independent dispatches thus run
//! back to back with no barrier.
//!
//! Every frame begins with a full barrier, which orders it after all earlier
//! submissions on the queue (the reason freed device blocks can be reused at once, see
//! `memory.rs`), and ends with a barrier that makes transfer writes visible to the host.
//! [`Recorder::wait`] is the only place the host blocks, and only `to_host` (or a full
//! queue of frames) calls it.

use std::collections::{HashSet, VecDeque};

use ash::vk;

use super::memory::{Block, Pool};
use super::pipelines::{Pipeline, PUSH_BYTES};
use super::profile::{DeviceCounters, Profiler};
use crate::{Error, Result};

/// Dispatches per frame before it is submitted without waiting.
const MAX_DISPATCHES: u32 = 256;
/// Storage-buffer descriptors per frame (every kernel binds at most 6).
const MAX_DESCRIPTORS: u32 = MAX_DISPATCHES * 6;
/// Frames in flight before a submit waits for the oldest.
const MAX_IN_FLIGHT: usize = 3;

fn vk_err(what: &'static str) -> impl Fn(vk::Result) -> Error {
    move |e| Error::Device(format!("vulkan: {what} failed: {e}"))
}

/// One batch of recorded work.
struct Frame {
    serial: u64,
    cmd_pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
    desc_pool: vk::DescriptorPool,
    queries: Option<vk::QueryPool>,
    dispatches: u32,
    /// Kernel name of each timed command, in query order (pairs of queries).
    labels: Vec<&'static str>,
    /// Staging blocks to return to the pool once the frame's fence signals.
    staging: Vec<Block>,
}

/// A buffer a command touches: its block's handle and id, and whether it is written.
#[derive(Clone, Copy)]
pub(crate) struct Access {
    pub buffer: vk::Buffer,
    pub id: u64,
    pub write: bool,
}

/// The recording state of one device. Guarded by `Shared::rec`.
pub(crate) struct Recorder {
    current: Option<Frame>,
    in_flight: VecDeque<Frame>,
    spare: Vec<Frame>,
    next_serial: u64,
    written: HashSet<u64>,
    read: HashSet<u64>,
    /// Nanoseconds per tick when profiling, else `None`.
    timing: Option<f64>,
    pub profiler: Profiler,
    /// Dispatches, barriers, submits and host waits so far (the other fields of
    /// [`DeviceCounters`] are filled in by the pipelines and the pool).
    pub counters: DeviceCounters,
    /// The last serial whose fence has signalled.
    pub completed: u64,
}

impl Recorder {
    pub fn new(timing: Option<f64>) -> Self {
        Recorder {
            current: None,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            next_serial: 1,
            written: HashSet::new(),
            read: HashSet::new(),
            timing,
            profiler: Profiler::default(),
            counters: DeviceCounters::default(),
            completed: 0,
        }
    }

    /// The serial of the frame being recorded (opening one if needed).
    pub fn serial(&mut self, ctx: &super::context::Context) -> Result<u64> {
        Ok(self.frame(ctx)?.serial)
    }

    fn new_frame(ctx: &super::context::Context, timed: bool) -> Result<Frame> {
        let d = &ctx.device;
        // SAFETY: valid device; create infos live for each call.
        unsafe {
            let cmd_pool = d
                .create_command_pool(
                    &vk::CommandPoolCreateInfo::default().queue_family_index(ctx.queue_family),
                    None,
                )
                .map_err(vk_err("creating a command pool"))?;
            let cmd = d
                .allocate_command_buffers(
                    &vk::CommandBufferAllocateInfo::default()
                        .command_pool(cmd_pool)
                        .level(vk::CommandBufferLevel::PRIMARY)
                        .command_buffer_count(1),
                )
                .map_err(vk_err("allocating a command buffer"))?[0];
            let fence = d
                .create_fence(&vk::FenceCreateInfo::default(), None)
                .map_err(vk_err("creating a fence"))?;
            let sizes = [vk::DescriptorPoolSize {
                ty: vk::DescriptorType::STORAGE_BUFFER,
                descriptor_count: MAX_DESCRIPTORS,
            }];
            let desc_pool = d
                .create_descriptor_pool(
                    &vk::DescriptorPoolCreateInfo::default()
                        .max_sets(MAX_DISPATCHES)
                        .pool_sizes(&sizes),
                    None,
                )
                .map_err(vk_err("creating a descriptor pool"))?;
            let queries = if timed {
                Some(
                    d.create_query_pool(
                        &vk::QueryPoolCreateInfo::default()
                            .query_type(vk::QueryType::TIMESTAMP)
                            .query_count(2 * (MAX_DISPATCHES + 2)),
                        None,
                    )
                    .map_err(vk_err("creating a query pool"))?,
                )
            } else {
                None
            };
            Ok(Frame {
                serial: 0,
                cmd_pool,
                cmd,
                fence,
                desc_pool,
                queries,
                dispatches: 0,
                labels: Vec::new(),
                staging: Vec::new(),
            })
        }
    }

    /// The frame being recorded, opened (and its leading barrier recorded) if needed.
    fn frame(&mut self, ctx: &super::context::Context) -> Result<&mut Frame> {
        if self.current.is_none() {
            let mut f = match self.spare.pop() {
                Some(f) => f,
                None => Self::new_frame(ctx, self.timing.is_some())?,
            };
            f.serial = self.next_serial;
            self.next_serial += 1;
            let d = &ctx.device;
            // SAFETY: the frame is idle (new or retired), so its command buffer may begin.
            unsafe {
                d.begin_command_buffer(
                    f.cmd,
                    &vk::CommandBufferBeginInfo::default()
                        .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
                )
                .map_err(vk_err("beginning a command buffer"))?;
                if let Some(q) = f.queries {
                    d.cmd_reset_query_pool(f.cmd, q, 0, 2 * (MAX_DISPATCHES + 2));
                }
                let barrier = [vk::MemoryBarrier::default()
                    .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
                    .dst_access_mask(vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE)];
                self.counters.barriers += 1;
                d.cmd_pipeline_barrier(
                    f.cmd,
                    vk::PipelineStageFlags::ALL_COMMANDS,
                    vk::PipelineStageFlags::ALL_COMMANDS,
                    vk::DependencyFlags::empty(),
                    &barrier,
                    &[],
                    &[],
                );
            }
            self.written.clear();
            self.read.clear();
            self.current = Some(f);
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    /// Records a barrier first if `accesses` conflict with work since the last one.
    fn order(&mut self, ctx: &super::context::Context, accesses: &[Access]) -> Result<()> {
        let conflict = accesses
            .iter()
            .any(|a| self.written.contains(&a.id) || (a.write && self.read.contains(&a.id)));
        let cmd = self.frame(ctx)?.cmd;
        if conflict {
            let barrier = [vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
                .dst_access_mask(
                    vk::AccessFlags::SHADER_READ
                        | vk::AccessFlags::SHADER_WRITE
                        | vk::AccessFlags::TRANSFER_READ
                        | vk::AccessFlags::TRANSFER_WRITE,
                )];
            let stages = vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER;
            self.counters.barriers += 1;
            // SAFETY: recording into the open command buffer.
            unsafe {
                ctx.device.cmd_pipeline_barrier(
                    cmd,
                    stages,
                    stages,
                    vk::DependencyFlags::empty(),
                    &barrier,
                    &[],
                    &[],
                )
            };
            self.written.clear();
            self.read.clear();
        }
        for a in accesses {
            if a.write {
                self.written.insert(a.id);
            } else {
                self.read.insert(a.id);
            }
        }
        Ok(())
    }

    /// Writes a timestamp (when profiling) and remembers which kernel it belongs to.
    fn stamp(&mut self, ctx: &super::context::Context, label: Option<&'static str>) {
        let Some(f) = self.current.as_mut() else {
            return;
        };
        let Some(q) = f.queries else { return };
        let index = match label {
            Some(l) => {
                f.labels.push(l);
                2 * (f.labels.len() as u32 - 1)
            }
            None => 2 * (f.labels.len() as u32 - 1) + 1,
        };
        let stage = if label.is_some() {
            vk::PipelineStageFlags::TOP_OF_PIPE
        } else {
            vk::PipelineStageFlags::BOTTOM_OF_PIPE
        };
        // SAFETY: recording into the open command buffer; the query was reset at begin.
        unsafe { ctx.device.cmd_write_timestamp(f.cmd, stage, q, index) };
    }

    /// Records one dispatch of `pipe` over `groups` workgroups.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(
        &mut self,
        ctx: &super::context::Context,
        pool: &std::sync::Mutex<Pool>,
        pipe: Pipeline,
        label: &'static str,
        accesses: &[Access],
        push: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        debug_assert!(push.len() * 4 <= PUSH_BYTES as usize);
        self.order(ctx, accesses)?;
        let d = &ctx.device;
        let f = self.current.as_mut().expect("order opened a frame");
        let layouts = [pipe.set_layout];
        // SAFETY: the pool was sized for MAX_DISPATCHES sets and is reset per frame.
        let set = unsafe {
            d.allocate_descriptor_sets(
                &vk::DescriptorSetAllocateInfo::default()
                    .descriptor_pool(f.desc_pool)
                    .set_layouts(&layouts),
            )
        }
        .map_err(vk_err("allocating a descriptor set"))?[0];
        let infos: Vec<[vk::DescriptorBufferInfo; 1]> = accesses
            .iter()
            .map(|a| {
                [vk::DescriptorBufferInfo {
                    buffer: a.buffer,
                    offset: 0,
                    range: vk::WHOLE_SIZE,
                }]
            })
            .collect();
        let writes: Vec<_> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(i as u32)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(info)
            })
            .collect();
        let bytes: Vec<u8> = push.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let cmd = f.cmd;
        // SAFETY: recording into the open command buffer with objects that outlive it.
        unsafe {
            d.update_descriptor_sets(&writes, &[]);
            d.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, pipe.pipeline);
            d.cmd_bind_descriptor_sets(
                cmd,
                vk::PipelineBindPoint::COMPUTE,
                pipe.layout,
                0,
                &[set],
                &[],
            );
            if !bytes.is_empty() {
                d.cmd_push_constants(cmd, pipe.layout, vk::ShaderStageFlags::COMPUTE, 0, &bytes);
            }
        }
        self.stamp(ctx, Some(label));
        // SAFETY: as above.
        unsafe { d.cmd_dispatch(cmd, groups[0], groups[1], groups[2]) };
        self.stamp(ctx, None);
        self.count_command(ctx, pool)
    }

    /// Records a copy of `bytes` from `src` to `dst` (a transfer, ordered like a dispatch).
    /// `keep` is a staging block the copy reads, pooled again when the frame completes.
    pub fn copy(
        &mut self,
        ctx: &super::context::Context,
        pool: &std::sync::Mutex<Pool>,
        src: Access,
        dst: Access,
        bytes: u64,
        keep: Option<Block>,
    ) -> Result<()> {
        self.order(ctx, &[src, dst])?;
        let f = self.current.as_mut().expect("order opened a frame");
        f.staging.extend(keep);
        let cmd = f.cmd;
        self.stamp(ctx, Some("copy"));
        let region = [vk::BufferCopy {
            src_offset: 0,
            dst_offset: 0,
            size: bytes,
        }];
        // SAFETY: recording into the open command buffer.
        unsafe {
            ctx.device
                .cmd_copy_buffer(cmd, src.buffer, dst.buffer, &region)
        };
        self.stamp(ctx, None);
        self.count_command(ctx, pool)
    }

    /// Counts one recorded command; a full frame is submitted so batches stay bounded.
    fn count_command(
        &mut self,
        ctx: &super::context::Context,
        pool: &std::sync::Mutex<Pool>,
    ) -> Result<()> {
        let f = self.current.as_mut().expect("open");
        f.dispatches += 1;
        self.counters.dispatches += 1;
        if f.dispatches >= MAX_DISPATCHES {
            self.submit(ctx, pool)?;
        }
        Ok(())
    }

    /// Submits the current frame (if any) without waiting; returns its serial.
    pub fn submit(
        &mut self,
        ctx: &super::context::Context,
        pool: &std::sync::Mutex<Pool>,
    ) -> Result<u64> {
        let Some(f) = self.current.take() else {
            return Ok(self.next_serial - 1);
        };
        let d = &ctx.device;
        let serial = f.serial;
        self.counters.barriers += 1;
        self.counters.submits += 1;
        // SAFETY: ending and submitting the frame's command buffer; the fence is unsignalled.
        let submitted = unsafe {
            let barrier = [vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
                .dst_access_mask(vk::AccessFlags::HOST_READ)];
            d.cmd_pipeline_barrier(
                f.cmd,
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &barrier,
                &[],
                &[],
            );
            d.end_command_buffer(f.cmd)
                .map_err(vk_err("ending a command buffer"))
                .and_then(|_| {
                    let cmds = [f.cmd];
                    let submit = [vk::SubmitInfo::default().command_buffers(&cmds)];
                    d.queue_submit(ctx.queue, &submit, f.fence)
                        .map_err(vk_err("submitting work (device lost?)"))
                })
        };
        self.in_flight.push_back(f);
        submitted?;
        if self.in_flight.len() > MAX_IN_FLIGHT {
            let oldest = self.in_flight.front().map(|f| f.serial).unwrap_or(0);
            self.wait(ctx, pool, oldest)?;
        }
        Ok(serial)
    }

    /// Blocks until every frame up to `serial` has finished, then recycles them.
    pub fn wait(
        &mut self,
        ctx: &super::context::Context,
        pool: &std::sync::Mutex<Pool>,
        serial: u64,
    ) -> Result<()> {
        if self.in_flight.front().is_some_and(|f| f.serial <= serial) {
            self.counters.host_waits += 1;
        }
        while let Some(f) = self.in_flight.front() {
            if f.serial > serial {
                break;
            }
            // SAFETY: the fence belongs to a submitted frame.
            unsafe { ctx.device.wait_for_fences(&[f.fence], true, u64::MAX) }
                .map_err(vk_err("waiting for the device (device lost?)"))?;
            let f = self.in_flight.pop_front().expect("front exists");
            self.retire(ctx, pool, f)?;
        }
        Ok(())
    }

    /// Submits everything recorded and waits for all of it.
    pub fn flush(
        &mut self,
        ctx: &super::context::Context,
        pool: &std::sync::Mutex<Pool>,
    ) -> Result<()> {
        let serial = self.submit(ctx, pool)?;
        self.wait(ctx, pool, serial)
    }

    /// A finished frame: collect timings, return staging, reset for reuse.
    fn retire(
        &mut self,
        ctx: &super::context::Context,
        pool: &std::sync::Mutex<Pool>,
        mut f: Frame,
    ) -> Result<()> {
        let d = &ctx.device;
        if let (Some(q), Some(period)) = (f.queries, self.timing) {
            if !f.labels.is_empty() {
                let mut ticks = vec![0u64; 2 * f.labels.len()];
                // SAFETY: all these queries were written by the finished frame.
                unsafe {
                    d.get_query_pool_results(
                        q,
                        0,
                        &mut ticks,
                        vk::QueryResultFlags::TYPE_64 | vk::QueryResultFlags::WAIT,
                    )
                }
                .map_err(vk_err("reading timestamps"))?;
                for (i, label) in f.labels.iter().enumerate() {
                    let dt = ticks[2 * i + 1].wrapping_sub(ticks[2 * i]);
                    self.profiler.add(label, dt as f64 * period);
                }
            }
        }
        f.labels.clear();
        f.dispatches = 0;
        if let Ok(mut p) = pool.lock() {
            for b in f.staging.drain(..) {
                p.release(b, f.serial);
            }
        }
        // SAFETY: the frame's work has finished.
        unsafe {
            d.reset_fences(&[f.fence])
                .map_err(vk_err("resetting a fence"))?;
            d.reset_descriptor_pool(f.desc_pool, vk::DescriptorPoolResetFlags::empty())
                .map_err(vk_err("resetting a descriptor pool"))?;
            d.reset_command_pool(f.cmd_pool, vk::CommandPoolResetFlags::empty())
                .map_err(vk_err("resetting a command pool"))?;
        }
        self.completed = self.completed.max(f.serial);
        self.spare.push(f);
        Ok(())
    }

    /// Finishes all work and destroys every frame (device teardown).
    pub fn destroy(&mut self, ctx: &super::context::Context, pool: &std::sync::Mutex<Pool>) {
        let _ = self.flush(ctx, pool);
        // SAFETY: the device is idle.
        unsafe {
            let _ = ctx.device.device_wait_idle();
            for f in self
                .spare
                .drain(..)
                .chain(self.in_flight.drain(..))
                .chain(self.current.take())
            {
                if let Ok(mut p) = pool.lock() {
                    for b in f.staging {
                        p.release(b, 0);
                    }
                }
                ctx.device.destroy_descriptor_pool(f.desc_pool, None);
                ctx.device.destroy_fence(f.fence, None);
                ctx.device.destroy_command_pool(f.cmd_pool, None);
                if let Some(q) = f.queries {
                    ctx.device.destroy_query_pool(q, None);
                }
            }
        }
    }
}
