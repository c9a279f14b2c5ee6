//! Reference batched matrix product: `C[b][i, j] = Σ_l op(A[b])[i, l] · op(B[b])[l, j]`.
//!
//! The fast versions: `cpu/matmul.rs` (matrixmultiply's SGEMM) and `shaders/matmul.comp`.

use ndarray::{ArrayD, ArrayView3, Ix3, IxDyn};

use crate::backend::MatmulDims;

/// The stored shapes of `A` and `B`: `[batch or 1, rows, cols]` as they sit in memory
/// (a transposed operand is stored with its two matrix axes swapped).
pub(super) fn operand_shapes(d: MatmulDims) -> ([usize; 3], [usize; 3]) {
    let batches = |batched: bool| if batched { d.batch } else { 1 };
    let a = if d.trans_a { [d.k, d.m] } else { [d.m, d.k] };
    let b = if d.trans_b { [d.n, d.k] } else { [d.k, d.n] };
    (
        [batches(d.a_batched), a[0], a[1]],
        [batches(d.b_batched), b[0], b[1]],
    )
}

/// `A[b]` as the `[m, k]` (or `B[b]` as the `[k, n]`) matrix the product reads: a
/// transposed operand is viewed with its axes swapped, a shared one is matrix 0.
fn operand(x: &ArrayD<f64>, transposed: bool) -> ArrayView3<'_, f64> {
    let x = x
        .view()
        .into_dimensionality::<Ix3>()
        .expect("a rank-3 operand");
    if transposed {
        x.permuted_axes([0, 2, 1])
    } else {
        x
    }
}

/// The batched product, `[batch, m, n]`, by the definition of a matrix product.
pub(super) fn matmul(a: &ArrayD<f64>, b: &ArrayD<f64>, d: MatmulDims) -> ArrayD<f64> {
    let (a, b) = (operand(a, d.trans_a), operand(b, d.trans_b));
    let mut c = ArrayD::zeros(IxDyn(&[d.batch, d.m, d.n]));
    for batch in 0..d.batch {
        let ab = if d.a_batched { batch } else { 0 };
        let bb = if d.b_batched { batch } else { 0 };
        for i in 0..d.m {
            for j in 0..d.n {
                c[[batch, i, j]] = (0..d.k).map(|l| a[[ab, i, l]] * b[[bb, l, j]]).sum();
            }
        }
    }
    c
}
