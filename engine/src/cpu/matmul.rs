//! Matrix products on `matrixmultiply::sgemm`.
//!
//! [`sgemm`] is the one place that calls the unsafe, pointer-based GEMM: it checks that
//! every strided access stays inside its slice, so the rest of the CPU device (the
//! batched product here, the convolutions in `conv.rs`) uses it safely. Transposed
//! operands are expressed with strides (row stride 1, column stride = rows), never with
//! a transposing copy; matrixmultiply packs panels either way.
//!
//! Threads: every CPU op runs on rayon's one pool; matrixmultiply is built without its
//! own threads (its `threading` feature). A batch of products runs one product per task;
//! a single large product is split into blocks of rows of `C`, one single-threaded
//! `sgemm` each. The blocks depend on the shape only, and each element of `C` is the same
//! dot product in the same order whatever block holds it, so results do not depend on
//! the thread count, and large products run as fast as with matrixmultiply's own threads
//! (`docs/measurements.md`).

use rayon::prelude::*;

use crate::backend::MatmulDims;

/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MACS: usize = 1 << 18;

/// Rows of `C` per task when one product is split: a multiple of 16 (the kernel's row
/// tile, so no block adds an edge), about a quarter of `m`.
fn row_block(m: usize) -> usize {
    m.div_ceil(4).next_multiple_of(16)
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
    let operands = |i: usize| {
        (
            Mat::new(&a[i * a_step..], m, k, d.trans_a),
            Mat::new(&b[i * b_step..], k, n, d.trans_b),
        )
    };
    let macs = m * k * n;
    if d.batch > 1 && macs * d.batch >= PAR_MACS {
        // Enough products to share out: one per task.
        c.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| {
            let (ai, bi) = operands(i);
            sgemm((m, k, n), ai, bi, 0.0, c, n);
        });
        return c;
    }
    let rb = row_block(m);
    for (i, c) in c.chunks_mut(m * n).enumerate() {
        let (ai, bi) = operands(i);
        if macs < PAR_MACS || rb >= m {
            sgemm((m, k, n), ai, bi, 0.0, c, n);
            continue;
        }
        // One large product: blocks of rows of C. Row r0 of A starts r0 row strides in.
        c.par_chunks_mut(rb * n).enumerate().for_each(|(j, c)| {
            let r0 = j * rb;
            let rows = rb.min(m - r0);
            let aj = Mat {
                data: &ai.data[r0 * ai.rs..],
                ..ai
            };
            sgemm((rows, k, n), aj, bi, 0.0, c, n);
        });
    }
    c
}
