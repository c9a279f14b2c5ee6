//! Matrix products on `matrixmultiply::sgemm`.
//!
//! [`sgemm`] is the one place that calls the unsafe, pointer-based GEMM: it checks that
//! every strided access stays inside its slice, so the rest of the CPU device (the
//! batched product here, the convolutions in `conv.rs`) uses it safely. Transposed
//! operands are expressed with strides (row stride 1, column stride = rows), never with
//! a transposing copy; matrixmultiply packs panels either way.
//!
//! Threads: matrixmultiply splits one product across its own pool when
//! `m·k + k·n ≥ 2^15` (`MATMUL_NUM_THREADS` sets the pool size, default the physical
//! cores). Batches of products below that size would run on one core, so [`batched`]
//! hands them to rayon instead, one product per task.

use rayon::prelude::*;

use crate::backend::MatmulDims;

/// Below this `m·k + k·n` matrixmultiply runs single-threaded (its own heuristic).
const GEMM_THREADING_SIZE: usize = 1 << 15;

/// Whether matrixmultiply splits an `[m, k] · [k, n]` product across its own threads;
/// callers with many such products parallelise over them only when it does not, so the
/// two pools do not compete for the same cores.
fn gemm_is_threaded(m: usize, k: usize, n: usize) -> bool {
    m * k + k * n >= GEMM_THREADING_SIZE
}

/// A matrix operand: data and strides (in elements) of its rows and columns.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    /// The elements, starting at entry `(0, 0)`.
    pub data: &'a [f32],
    /// Distance between consecutive rows.
    pub rs: usize,
    /// Distance between consecutive columns.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `[rows, cols]` matrix stored as written (`trans` false) or stored as
    /// its transpose `[cols, rows]` (`trans` true).
    pub fn new(data: &'a [f32], rows: usize, cols: usize, trans: bool) -> Self {
        if trans {
            Mat {
                data,
                rs: 1,
                cs: rows,
            }
        } else {
            Mat {
                data,
                rs: cols,
                cs: 1,
            }
        }
    }

    /// Whether a `[rows, cols]` walk with these strides stays inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `C = A · B + beta · C` with `A [m, k]`, `B [k, n]` and `C [m, n]` row-major with
/// row stride `ldc` (so `C` may be a block of a wider matrix).
///
/// Panics if a stride walks outside its slice: that is an engine bug, and the check is
/// what makes the raw-pointer call sound.
pub(crate) fn sgemm(
    (m, k, n): (usize, usize, usize),
    a: Mat,
    b: Mat,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.fits(m, k) && b.fits(k, n), "sgemm: operand out of bounds");
    assert!((m - 1) * ldc + n <= c.len(), "sgemm: output out of bounds");
    if k == 0 {
        // An empty sum: C = beta · C (and matrixmultiply need not handle it).
        for row in c.chunks_mut(ldc).take(m) {
            for v in &mut row[..n] {
                *v *= beta;
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every index `i·rs + j·cs` of A, B and C inside its
    // slice; C is borrowed mutably and so does not overlap A or B.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}

/// The batched product of [`MatmulDims`]: `C[i] = op(A[i]) · op(B[i])`, output
/// `[batch, m, n]`; a non-batched operand is shared by every `i`.
pub(super) fn batched(a: &[f32], b: &[f32], d: MatmulDims) -> Vec<f32> {
    let (m, k, n) = (d.m, d.k, d.n);
    // beta = 0 below: sgemm never reads C, so its contents do not matter.
    let mut c = super::pool::take(d.batch * m * n);
    if c.is_empty() {
        return c;
    }
    let a_step = if d.a_batched { m * k } else { 0 };
    let b_step = if d.b_batched { k * n } else { 0 };
    let one = |i: usize, c: &mut [f32]| {
        let ai = Mat::new(&a[i * a_step..], m, k, d.trans_a);
        let bi = Mat::new(&b[i * b_step..], k, n, d.trans_b);
        sgemm((m, k, n), ai, bi, 0.0, c, n);
    };
    if d.batch > 1 && !gemm_is_threaded(m, k, n) {
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, c)| one(i, c));
    } else {
        for (i, c) in c.chunks_mut(m * n).enumerate() {
            one(i, c);
        }
    }
    c
}
