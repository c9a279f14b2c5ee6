//! Per-kernel GPU time from timestamp queries.
//!
//! With profiling on (`ENGINE_VULKAN_PROFILE=1` or [`super::VulkanOptions::profile`]),
//! the recorder writes a timestamp before and after every dispatch; when a batch's fence
//! signals, the tick differences are added to this table under the kernel's name.
//! Dispatches without a barrier between them may overlap on a real GPU, so a kernel's
//! time can include some of its neighbours'; totals over many calls are still the right
//! place to look first.
//!
//! [`DeviceCounters`] are always on: how many dispatches, barriers, submits, host waits,
//! pipelines, layouts and allocations the device has seen; the table ends with them.

use std::collections::BTreeMap;

/// Counts of the work a device has been given since it was opened, always on (each is
/// one integer add where the event happens). Subtract two snapshots
/// ([`DeviceCounters::since`]) to see what one training step costs: on a real GPU every
/// dispatch, barrier and submit has a fixed cost of microseconds and every host wait
/// stalls the pipeline, so these, not kernel time, are what a small step is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Kernel dispatches and buffer copies recorded.
    pub dispatches: u64,
    /// Pipeline barriers recorded (one between dependent dispatches, plus one at each
    /// end of every batch).
    pub barriers: u64,
    /// Command buffers submitted to the queue.
    pub submits: u64,
    /// Times the host blocked on the device: a read-back (`to_host`), an explicit
    /// synchronisation, or a full queue of batches.
    pub host_waits: u64,
    /// Compute pipelines created (each a shader compile by the driver, unless the
    /// pipeline cache had it).
    pub pipelines_created: u64,
    /// Descriptor-set and pipeline layouts created (one pair per binding count).
    pub layouts_created: u64,
    /// Device memory allocations by the buffer pool (see [`super::PoolStats`]).
    pub allocations: u64,
}

impl DeviceCounters {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &DeviceCounters) -> DeviceCounters {
        DeviceCounters {
            dispatches: self.dispatches - earlier.dispatches,
            barriers: self.barriers - earlier.barriers,
            submits: self.submits - earlier.submits,
            host_waits: self.host_waits - earlier.host_waits,
            pipelines_created: self.pipelines_created - earlier.pipelines_created,
            layouts_created: self.layouts_created - earlier.layouts_created,
            allocations: self.allocations - earlier.allocations,
        }
    }
}

impl std::fmt::Display for DeviceCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} dispatches, {} barriers, {} submits, {} host waits, {} pipelines and {} \
             layouts created, {} allocations",
            self.dispatches,
            self.barriers,
            self.submits,
            self.host_waits,
            self.pipelines_created,
            self.layouts_created,
            self.allocations
        )
    }
}

/// Accumulated GPU time per kernel.
#[derive(Debug, Default)]
pub(crate) struct Profiler {
    /// Kernel name -> (calls, nanoseconds).
    totals: BTreeMap<&'static str, (u64, f64)>,
}

/// One row of [`super::VulkanDevice::profile`].
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    /// The kernel (`shaders/NAME.comp`, or `copy` for transfers).
    pub kernel: &'static str,
    /// Dispatches timed.
    pub calls: u64,
    /// Total GPU time in milliseconds.
    pub total_ms: f64,
}

impl Profiler {
    /// Adds one timed dispatch.
    pub fn add(&mut self, kernel: &'static str, nanos: f64) {
        let e = self.totals.entry(kernel).or_default();
        e.0 += 1;
        e.1 += nanos;
    }

    /// Rows sorted by total time, largest first.
    pub fn rows(&self) -> Vec<KernelTime> {
        let mut rows: Vec<_> = self
            .totals
            .iter()
            .map(|(k, (calls, ns))| KernelTime {
                kernel: k,
                calls: *calls,
                total_ms: ns / 1e6,
            })
            .collect();
        rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        rows
    }
}

/// Formats rows as the table `ENGINE_VULKAN_PROFILE=1` prints.
pub(crate) fn table(device: &str, rows: &[KernelTime], counters: &DeviceCounters) -> String {
    let mut s = format!("Vulkan kernel profile ({device})\n");
    s += &format!(
        "{:<26} {:>8} {:>12} {:>12}\n",
        "kernel", "calls", "total ms", "mean µs"
    );
    for r in rows {
        s += &format!(
            "{:<26} {:>8} {:>12.3} {:>12.2}\n",
            r.kernel,
            r.calls,
            r.total_ms,
            r.total_ms * 1e3 / r.calls.max(1) as f64
        );
    }
    s += &format!("since the device was opened: {counters}\n");
    s
}
