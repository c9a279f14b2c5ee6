//! Per-op host time: where a training step goes, op by op.
//!
//! With profiling on (`ENGINE_PROFILE=1`, or [`set_enabled`]), every op's call into its
//! device is timed and added to a table keyed by the op's name and its phase: forward
//! (the op was called by model code) or backward (called by a backward closure during
//! [`Tensor::backward`](crate::Tensor::backward)). Convolutions and matmuls also add
//! their FLOPs (2 per multiply-add), so the table shows each kind's GFLOP/s. Off, the
//! cost is one relaxed atomic load per op.
//!
//! `ENGINE_PROFILE=1` prints the ten largest rows to stderr when the process exits;
//! [`rows`] and [`reset`] serve benchmarks that want the table per phase of a run.
//!
//! On the CPU device the time is the kernel's own. On the Vulkan device an op only
//! records a dispatch, so the time is host-side recording; `ENGINE_VULKAN_PROFILE=1`
//! gives the GPU's times.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, Once};
use std::time::Instant;

/// Which pass an op ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Called from model code (or anything outside a backward pass).
    Forward,
    /// Called by a backward closure during `backward()`.
    Backward,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Backward => "backward",
        }
    }
}

/// One row of the table: an op kind in one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// The op's name, e.g. `conv2d`, `conv2d_backward_weight`, `mul`.
    pub op: &'static str,
    /// Forward or backward.
    pub phase: Phase,
    /// Calls timed.
    pub calls: u64,
    /// Total time in seconds.
    pub seconds: f64,
    /// FLOPs done (convolutions and matmuls only; 0 for the rest).
    pub flops: f64,
}

/// 0: not read yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);
/// (op, phase) → (calls, seconds, flops).
type Table = HashMap<(&'static str, Phase), (u64, f64, f64)>;
static TABLE: Mutex<Option<Table>> = Mutex::new(None);
static AT_EXIT: Once = Once::new();

thread_local! {
    static PHASE: Cell<Phase> = const { Cell::new(Phase::Forward) };
}

/// Whether ops are being timed.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => {
            let on = std::env::var("ENGINE_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
            set_enabled(on);
            if on {
                print_at_exit();
            }
            on
        }
    }
}

/// Turns timing on or off for the whole process (overrides `ENGINE_PROFILE`).
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Forgets every timing so far.
pub fn reset() {
    *TABLE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The table so far, largest total time first.
pub fn rows() -> Vec<OpTime> {
    let table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<OpTime> = table
        .iter()
        .flatten()
        .map(|(&(op, phase), &(calls, seconds, flops))| OpTime {
            op,
            phase,
            calls,
            seconds,
            flops,
        })
        .collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.op.cmp(b.op)));
    rows
}

/// The first `top` rows as a table, with each row's share of all timed op time.
pub fn table(top: usize) -> String {
    let rows = rows();
    let total: f64 = rows.iter().map(|r| r.seconds).sum();
    let mut s = format!(
        "engine op profile: {:.3} s in {} op calls\n{:<26} {:<9} {:>8} {:>10} {:>10} {:>6} {:>8}\n",
        total,
        rows.iter().map(|r| r.calls).sum::<u64>(),
        "op",
        "phase",
        "calls",
        "total ms",
        "mean µs",
        "share",
        "GFLOP/s"
    );
    for r in rows.iter().take(top) {
        let gflops = if r.flops > 0.0 {
            format!("{:.1}", r.flops / r.seconds.max(1e-12) / 1e9)
        } else {
            String::new()
        };
        s += &format!(
            "{:<26} {:<9} {:>8} {:>10.2} {:>10.1} {:>5.1}% {:>8}\n",
            r.op,
            r.phase.name(),
            r.calls,
            r.seconds * 1e3,
            r.seconds * 1e6 / r.calls.max(1) as f64,
            100.0 * r.seconds / total.max(1e-12),
            gflops
        );
    }
    s
}

/// Runs `f`, an op's call into its device, and adds its time under `op` when profiling
/// is on. `flops` is the op's arithmetic (0 when not counted).
pub(crate) fn time<R>(op: &'static str, flops: f64, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let r = f();
    let seconds = start.elapsed().as_secs_f64();
    let phase = PHASE.with(|p| p.get());
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let e = table
        .get_or_insert_with(HashMap::new)
        .entry((op, phase))
        .or_default();
    e.0 += 1;
    e.1 += seconds;
    e.2 += flops;
    r
}

/// The pass this thread is in.
pub(crate) fn phase() -> Phase {
    PHASE.with(|p| p.get())
}

/// Marks this thread as running a backward pass until dropped.
pub(crate) struct BackwardPhase {
    previous: Phase,
}

impl BackwardPhase {
    pub(crate) fn enter() -> BackwardPhase {
        BackwardPhase {
            previous: PHASE.with(|p| p.replace(Phase::Backward)),
        }
    }
}

impl Drop for BackwardPhase {
    fn drop(&mut self) {
        PHASE.with(|p| p.set(self.previous));
    }
}

extern "C" {
    fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn print_table() {
    if !rows().is_empty() {
        eprint!("{}", table(10));
    }
}

/// Prints the top ten rows when the process exits (once).
fn print_at_exit() {
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with the C runtime.
        unsafe { atexit(print_table) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_flops_are_kept_apart() {
        // The table is process-wide; this is the only unit test that turns it on.
        set_enabled(true);
        reset();
        time("probe_op", 100.0, || {
            std::thread::sleep(std::time::Duration::from_millis(2))
        });
        {
            let _b = BackwardPhase::enter();
            time("probe_op", 0.0, || ());
            time("probe_op", 0.0, || ());
        }
        time("probe_op", 50.0, || ());
        set_enabled(false);
        time("probe_op", 1.0, || ()); // off: not counted
        let rows: Vec<_> = rows().into_iter().filter(|r| r.op == "probe_op").collect();
        let fwd = rows.iter().find(|r| r.phase == Phase::Forward).unwrap();
        let bwd = rows.iter().find(|r| r.phase == Phase::Backward).unwrap();
        assert_eq!((fwd.calls, fwd.flops), (2, 150.0));
        assert_eq!((bwd.calls, bwd.flops), (2, 0.0));
        assert!(fwd.seconds >= 0.002, "{fwd:?}");
        assert!(table(10).contains("probe_op"));
    }
}
