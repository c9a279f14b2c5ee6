//! Matrix products `C = A · B`, single or batched, and their derivatives.
//!
//! `dA = dC · Bᵀ` and `dB = Aᵀ · dC`. The backend multiplies with either operand stored
//! transposed, so the backward pass never materialises a transpose. When one operand is a
//! single matrix shared by the whole batch, its gradient sums over the batch.

use crate::backend::{Backend, MatmulDims};
use crate::device::DeviceBackend;
use crate::shape;
use crate::{Error, Result, Tensor};

/// Runs the backend product without recording; `out_shape` is `[batch, m, n]` or `[m, n]`.
fn matmul_raw(a: &Tensor, b: &Tensor, dims: MatmulDims, out_shape: Vec<usize>) -> Result<Tensor> {
    let flops = 2 * dims.batch * dims.m * dims.k * dims.n;
    let storage = dispatch!("matmul", flops, a.device(), be => be.wrap_res(
        be.matmul(be.buf(a.storage()), be.buf(b.storage()), dims)))?;
    Ok(Tensor::from_storage(storage, out_shape, a.device().clone()))
}

impl Tensor {
    /// Matrix product. `self` is `[m, k]` or `[batch, m, k]`; `other` is `[k, n]` or
    /// `[batch, k, n]`. A 2-D operand is shared by every batch entry. The result is
    /// `[batch, m, n]` if either input is batched, else `[m, n]`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.same_device("matmul", other)?;
        let (a, b) = (self.shape(), other.shape());
        let bad = || {
            Error::shape(
                "matmul",
                format!(
                    "cannot multiply {} by {} (expected [m, k] or [batch, m, k] times [k, n] or [batch, k, n])",
                    shape::fmt(a),
                    shape::fmt(b)
                ),
            )
        };
        if !(2..=3).contains(&a.len()) || !(2..=3).contains(&b.len()) {
            return Err(bad());
        }
        let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
        let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
        let a_batch = (a.len() == 3).then(|| a[0]);
        let b_batch = (b.len() == 3).then(|| b[0]);
        if k != k2 {
            return Err(bad());
        }
        let batch = match (a_batch, b_batch) {
            (Some(x), Some(y)) if x != y => return Err(bad()),
            (Some(x), _) | (_, Some(x)) => Some(x),
            (None, None) => None,
        };
        let dims = MatmulDims {
            batch: batch.unwrap_or(1),
            m,
            k,
            n,
            a_batched: a_batch.is_some(),
            b_batched: b_batch.is_some(),
            trans_a: false,
            trans_b: false,
        };
        let out_shape = match batch {
            Some(bt) => vec![bt, m, n],
            None => vec![m, n],
        };
        let out = matmul_raw(self, other, dims, out_shape.clone())?;
        Tensor::from_op(
            out.storage().clone(),
            out_shape,
            "matmul",
            &[self, other],
            move |g| {
                let (a, b) = (&g.inputs[0], &g.inputs[1]);
                let sum_batch = |t: Tensor, batched: bool| {
                    if batched || batch.is_none() {
                        Ok(t)
                    } else {
                        t.sum(&[0], false)
                    }
                };
                let da = if g.needs[0] {
                    // dA[bt] = dC[bt] · B[bt]ᵀ : [m, n] · [n, k]
                    let d = MatmulDims {
                        k: n,
                        n: k,
                        a_batched: true,
                        trans_b: true,
                        ..dims
                    };
                    let mut shape = vec![m, k];
                    if batch.is_some() {
                        shape.insert(0, dims.batch);
                    }
                    Some(sum_batch(matmul_raw(g.dy, b, d, shape)?, dims.a_batched)?)
                } else {
                    None
                };
                let db = if g.needs[1] {
                    // dB[bt] = A[bt]ᵀ · dC[bt] : [k, m] · [m, n]
                    let d = MatmulDims {
                        m: k,
                        k: m,
                        b_batched: true,
                        trans_a: true,
                        ..dims
                    };
                    let mut shape = vec![k, n];
                    if batch.is_some() {
                        shape.insert(0, dims.batch);
                    }
                    Some(sum_batch(matmul_raw(a, g.dy, d, shape)?, dims.b_batched)?)
                } else {
                    None
                };
                Ok(vec![da, db])
            },
        )
    }
}
