//! Reductions (sum, max) over any set of axes, keeping the rank.
//!
//! The input is described as a strided loop nest with two operands: the input (walked
//! contiguously) and the output accumulator (stride 0 along reduced axes). After
//! [`collapse`] the reduced and kept axes alternate, and the innermost run is either
//! reduced (fold a contiguous run into one accumulator: summing rows) or kept (add the
//! run elementwise into a run of accumulators: summing over leading axes). So
//! `[N, C, H, W]` over `{0, 2, 3}` (per-channel statistics) is `N·C` runs of `H·W`.
//!
//! Accuracy: sums accumulate in `f64` (eight independent lanes per run, so the loop
//! still vectorises), which keeps a sum of a million `f32`s exact to `f32` rounding
//! without pairwise blocking. Max accumulates in `f32` and propagates NaN, as IEEE
//! `maximum` and PyTorch do (`f32::max` would skip it).
//!
//! Parallelism splits the outermost collapsed axis: a kept axis gives each task its own
//! part of the output; a reduced axis gives each task a private accumulator, combined
//! at the end.

use rayon::prelude::*;

use super::elementwise::nan_max;
use super::strided::{collapse, Dim, Odometer};
use super::{contiguous_strides, PAR_THRESHOLD};
use crate::backend::ReduceOp;

/// Reduces `x` of `shape` over the sorted axes `axes`.
pub(super) fn reduce(op: ReduceOp, x: &[f32], shape: &[usize], axes: &[usize]) -> Vec<f32> {
    match op {
        ReduceOp::Sum => reduce_with::<Sum, _>(x, shape, axes),
        ReduceOp::Max => reduce_with::<Max, _>(x, shape, axes),
    }
}

/// One reduction: its accumulator and how runs fold into it.
trait Reducer {
    /// The accumulator type.
    type Acc: Copy + Send + Sync;
    /// The identity of the reduction.
    const INIT: Self::Acc;
    /// Folds a contiguous run into one accumulator.
    fn fold_run(acc: Self::Acc, run: &[f32]) -> Self::Acc;
    /// Folds `run[i]` into `acc[i]`.
    fn fold_each(acc: &mut [Self::Acc], run: &[f32]);
    /// Merges two partial results.
    fn combine(a: Self::Acc, b: Self::Acc) -> Self::Acc;
    /// The final value.
    fn finish(acc: Self::Acc) -> f32;
}

/// Sum with `f64` accumulators.
struct Sum;

impl Reducer for Sum {
    type Acc = f64;
    const INIT: f64 = 0.0;
    fn fold_run(acc: f64, run: &[f32]) -> f64 {
        // Eight lanes break the dependency chain so the f32→f64 adds vectorise.
        let mut lanes = [0.0f64; 8];
        let chunks = run.chunks_exact(8);
        let rest: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
        for c in chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += v as f64;
            }
        }
        acc + lanes.iter().sum::<f64>() + rest
    }
    fn fold_each(acc: &mut [f64], run: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(run) {
            *a += v as f64;
        }
    }
    fn combine(a: f64, b: f64) -> f64 {
        a + b
    }
    fn finish(acc: f64) -> f32 {
        acc as f32
    }
}

/// Maximum with `f32` accumulators (exact, so no wider type is needed).
struct Max;

impl Reducer for Max {
    type Acc = f32;
    const INIT: f32 = f32::NEG_INFINITY;
    fn fold_run(acc: f32, run: &[f32]) -> f32 {
        run.iter().fold(acc, |m, &v| nan_max(m, v))
    }
    fn fold_each(acc: &mut [f32], run: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(run) {
            *a = nan_max(*a, v);
        }
    }
    fn combine(a: f32, b: f32) -> f32 {
        nan_max(a, b)
    }
    fn finish(acc: f32) -> f32 {
        acc
    }
}

/// Where the reduced elements come from, one run at a time: an input to read, or
/// ([`Filled`]) an elementwise kernel that writes each run into an output just before
/// the run is folded, so that an op and its reduction are one pass over memory.
trait Source: Send + Sized {
    /// Elements in this source.
    fn len(&self) -> usize;
    /// The `len` elements from offset `at`.
    fn run(&mut self, at: usize, len: usize) -> &[f32];
    /// The elements before `mid` and those from `mid` on.
    fn split_at(self, mid: usize) -> (Self, Self);
}

impl Source for &[f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn run(&mut self, at: usize, len: usize) -> &[f32] {
        &self[at..at + len]
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        <[f32]>::split_at(self, mid)
    }
}

/// An output that `fill(offset, run)` writes run by run (`offset`: of `run[0]` in the
/// whole output), each run just before it is reduced.
struct Filled<'a, F> {
    out: &'a mut [f32],
    start: usize,
    fill: &'a F,
}

impl<F: Fn(usize, &mut [f32]) + Sync> Source for Filled<'_, F> {
    fn len(&self) -> usize {
        self.out.len()
    }
    fn run(&mut self, at: usize, len: usize) -> &[f32] {
        let run = &mut self.out[at..at + len];
        (self.fill)(self.start + at, run);
        run
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (a, b) = self.out.split_at_mut(mid);
        let (start, fill) = (self.start, self.fill);
        let first = Filled {
            out: a,
            start,
            fill,
        };
        let rest = Filled {
            out: b,
            start: start + mid,
            fill,
        };
        (first, rest)
    }
}

/// The sum over the sorted `axes` of what `fill(offset, run)` writes into `out` of
/// `shape`: each run is written, then summed while it is in cache. `fill` is called
/// once on every element, and the sums are [`reduce`]'s, bit for bit, since this is
/// the same loop with the writing added.
pub(super) fn sum_filled<F>(out: &mut [f32], shape: &[usize], axes: &[usize], fill: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let source = Filled {
        out,
        start: 0,
        fill: &fill,
    };
    reduce_with::<Sum, _>(source, shape, axes)
}

/// The reduction for one [`Reducer`]; see the module doc.
fn reduce_with<R: Reducer, S: Source>(x: S, shape: &[usize], axes: &[usize]) -> Vec<f32> {
    let mut out_shape = shape.to_vec();
    for &a in axes {
        out_shape[a] = 1;
    }
    let out_len: usize = out_shape.iter().product();
    let mut acc = vec![R::INIT; out_len];
    if x.len() != 0 {
        let si = contiguous_strides(shape);
        let so = contiguous_strides(&out_shape);
        let dims: Vec<Dim<2>> = (0..shape.len())
            .map(|d| {
                let reduced = axes.contains(&d);
                (shape[d], [si[d], if reduced { 0 } else { so[d] }])
            })
            .collect();
        let dims = collapse(&dims);
        accumulate_parallel::<R, S>(x, &dims, &mut acc);
    }
    acc.into_iter().map(R::finish).collect()
}

/// `x` cut into consecutive parts of `per` elements (the last may be shorter).
fn parts<S: Source>(mut x: S, per: usize) -> Vec<S> {
    let mut parts = Vec::with_capacity(x.len().div_ceil(per));
    while x.len() > per {
        let (first, rest) = x.split_at(per);
        parts.push(first);
        x = rest;
    }
    parts.push(x);
    parts
}

/// Splits the outermost collapsed axis across rayon tasks (for big inputs) and runs
/// [`accumulate`] on each part.
fn accumulate_parallel<R: Reducer, S: Source>(mut x: S, dims: &[Dim<2>], acc: &mut [R::Acc]) {
    let Some(&(e0, [si0, so0])) = dims.first() else {
        // Every extent is 1: the single element is the result.
        acc[0] = R::fold_run(acc[0], x.run(0, 1));
        return;
    };
    if x.len() < PAR_THRESHOLD || e0 == 1 {
        accumulate::<R, S>(x, dims, acc);
        return;
    }
    let tasks = (rayon::current_num_threads() * 4).min(e0);
    let per = e0.div_ceil(tasks);
    // Task t takes `per` steps of the outer axis: x[t·per·si0..][..per·si0].
    let parts = parts(x, per * si0);
    if so0 != 0 {
        // A kept outer axis: each task owns the output rows of its part.
        acc.par_chunks_mut(per * so0)
            .zip(parts)
            .for_each(|(acc, x)| {
                let mut sub = dims.to_vec();
                sub[0].0 = acc.len() / so0;
                accumulate::<R, S>(x, &sub, acc);
            });
    } else {
        // A reduced outer axis: private accumulators, merged at the end in task order
        // (collect keeps the order), so sums are reproducible run to run.
        let partials: Vec<Vec<R::Acc>> = parts
            .into_par_iter()
            .map(|x| {
                let mut sub = dims.to_vec();
                sub[0].0 = x.len() / si0;
                let mut mine = vec![R::INIT; acc.len()];
                accumulate::<R, S>(x, &sub, &mut mine);
                mine
            })
            .collect();
        let mut partial = vec![R::INIT; acc.len()];
        for part in partials {
            for (a, b) in partial.iter_mut().zip(part) {
                *a = R::combine(*a, b);
            }
        }
        acc.copy_from_slice(&partial);
    }
}

/// Folds the elements of the loop nest `dims` (offsets relative to `x` and `acc`) into
/// `acc`, one innermost run at a time.
fn accumulate<R: Reducer, S: Source>(mut x: S, dims: &[Dim<2>], acc: &mut [R::Acc]) {
    let (outer, inner) = dims.split_at(dims.len() - 1);
    let (len, [_, inner_out_stride]) = inner[0];
    let rows: usize = outer.iter().map(|d| d.0).product();
    let mut odo = Odometer::new(outer, 0);
    for _ in 0..rows {
        let [xi, oi] = odo.offsets;
        let run = x.run(xi, len);
        if inner_out_stride == 0 {
            acc[oi] = R::fold_run(acc[oi], run);
        } else {
            R::fold_each(&mut acc[oi..oi + len], run);
        }
        odo.advance();
    }
}
