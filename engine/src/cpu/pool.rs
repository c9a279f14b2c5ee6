//! Recycling of CPU buffers, so a steady training loop stops asking the OS for memory.
//!
//! Without it, every op's output of a few hundred KiB is a fresh `mmap` from the
//! allocator: the kernel then zeroes each page on first touch, and profiling a Glow
//! training step showed about a third of the time in page faults and `memset`. Freed
//! buffers of at least [`MIN_POOLED`] elements go back to a free list keyed by length
//! (a training step repeats the same shapes), bounded by [`MAX_POOLED_BYTES`].

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Buffers shorter than this are left to the allocator, which serves them from its own
/// free lists without page faults.
const MIN_POOLED: usize = 4096;

/// Upper bound on memory held by the free lists.
const MAX_POOLED_BYTES: usize = 2 << 30;

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// A vector of `len` elements with unspecified (but initialised) contents: for outputs
/// that a kernel overwrites completely.
pub(crate) fn take(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED {
        let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = guard.as_mut() {
            if let Some(v) = pool.free.get_mut(&len).and_then(Vec::pop) {
                pool.bytes -= len * 4;
                return v;
            }
        }
    }
    vec![0.0; len]
}

/// Returns a vector to the free list (or to the allocator if small or the pool is full).
fn give(v: Vec<f32>) {
    let len = v.len();
    if len < MIN_POOLED || v.capacity() != len {
        return;
    }
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.get_or_insert_with(|| Pool {
        free: HashMap::new(),
        bytes: 0,
    });
    if pool.bytes + len * 4 <= MAX_POOLED_BYTES {
        pool.bytes += len * 4;
        pool.free.entry(len).or_default().push(v);
    }
}

/// The storage of a [`super::CpuBuffer`]: a vector that returns to the pool when dropped.
#[derive(Debug, Default)]
pub(crate) struct Block(Vec<f32>);

impl Block {
    /// Wraps `v`, counting its bytes as live in [`crate::memory`] until dropped.
    pub(crate) fn new(v: Vec<f32>) -> Block {
        crate::memory::CPU.add(v.len() * 4);
        Block(v)
    }
}

impl Deref for Block {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl DerefMut for Block {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        crate::memory::CPU.sub(self.0.len() * 4);
        give(std::mem::take(&mut self.0));
    }
}
