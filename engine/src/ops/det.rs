//! Determinant and inverse of small square matrices, computed on the host in `f64`.
//!
//! - `log_abs_det`: `y = log|det W|`, `dW = dy · W⁻ᵀ`.
//! - `inverse`: `Y = W⁻¹`, `dW = -Yᵀ · dY · Yᵀ`.
//!
//! These are the only ops that read values back to the host mid-graph. Their matrices
//! are Glow's `C × C` 1x1-convolution weights (C ≤ 48), so the copy is tiny, and `f64`
//! keeps a near-singular `W` from turning into infinities.

use crate::linalg::Lu;
use crate::shape;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Checks for a square matrix and returns its order.
    fn square_order(&self, op: &'static str) -> Result<usize> {
        match self.shape() {
            [n, m] if n == m => Ok(*n),
            s => Err(Error::shape(
                op,
                format!("needs a square matrix [n, n], got {}", shape::fmt(s)),
            )),
        }
    }

    /// The LU factorisation of this square matrix, in `f64`.
    fn lu_f64(&self, op: &'static str) -> Result<Lu> {
        let n = self.square_order(op)?;
        let a: Vec<f64> = self.to_vec()?.into_iter().map(f64::from).collect();
        Lu::new(&a, n).map_err(|e| Error::invalid(op, e.to_string()))
    }

    /// `log |det W|` of a square matrix, as a scalar `[]`.
    pub fn log_abs_det(&self) -> Result<Tensor> {
        let lu = self.lu_f64("log_abs_det")?;
        let n = lu.n;
        let value = Tensor::scalar(lu.log_abs_det() as f32, self.device())?;
        let inv_t: Vec<f32> = {
            let inv = lu.inverse();
            (0..n * n)
                .map(|k| inv[(k % n) * n + k / n] as f32)
                .collect()
        };
        let inv_t = Tensor::from_vec(inv_t, &[n, n], self.device())?;
        Tensor::from_op(
            value.storage().clone(),
            vec![],
            "log_abs_det",
            &[self],
            move |a| Ok(vec![Some(inv_t.mul(a.dy)?)]),
        )
    }

    /// The inverse of a square matrix.
    pub fn inverse(&self) -> Result<Tensor> {
        let lu = self.lu_f64("inverse")?;
        let n = lu.n;
        let inv: Vec<f32> = lu.inverse().into_iter().map(|v| v as f32).collect();
        let inv = Tensor::from_vec(inv, &[n, n], self.device())?;
        Tensor::from_op(inv.storage().clone(), vec![n, n], "inverse", &[self], |a| {
            let yt = a.out.transpose(0, 1)?;
            Ok(vec![Some(yt.matmul(a.dy)?.matmul(&yt)?.neg()?)])
        })
    }
}
