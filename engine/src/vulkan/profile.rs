//! Per-kernel GPU time from timestamp queries.
//!
//! With profiling on (`ENGINE_VULKAN_PROFILE=1` or [`super::VulkanOptions::profile`]),
//! the recorder writes a timestamp before and after every dispatch; when a batch's fence
//! signals, the tick differences are added to this table under the kernel's name.
//! Dispatches without a barrier between them may overlap on a real GPU, so a kernel's
//! time can include some of its neighbours'; totals over many calls are still the right
//! place to look first.

use std::collections::BTreeMap;

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
pub(crate) fn table(device: &str, rows: &[KernelTime]) -> String {
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
    s
}
