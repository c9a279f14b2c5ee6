//! Small dense linear algebra on the host, in `f64`.
//!
//! Glow's invertible 1x1 convolution needs `log|det W|`, `W⁻¹` and an LU factorisation of
//! a `C × C` matrix with `C ≤ 48` or so. That is microseconds of host work, and doing it in
//! `f64` avoids the near-singular `W` failures seen in `f32` ports. Matrices are
//! row-major `Vec<f64>` of `n × n`.

use crate::{Error, Result};

/// `P · A = L · U` with partial pivoting, packed: `L` (unit diagonal, not stored) below
/// the diagonal of `lu`, `U` on and above it; `perm[i]` is the row of `A` that became row
/// `i`; `sign` is the determinant of `P` (±1).
#[derive(Debug, Clone)]
pub struct Lu {
    /// Order of the matrix.
    pub n: usize,
    /// Packed factors.
    pub lu: Vec<f64>,
    /// Row permutation.
    pub perm: Vec<usize>,
    /// `det P`.
    pub sign: f64,
}

impl Lu {
    /// Factorises the `n × n` matrix `a`. Fails if a pivot is exactly zero (singular).
    pub fn new(a: &[f64], n: usize) -> Result<Lu> {
        if a.len() != n * n {
            return Err(Error::shape(
                "lu",
                format!("{} values do not form a {n}x{n} matrix", a.len()),
            ));
        }
        let mut lu = a.to_vec();
        let mut perm: Vec<usize> = (0..n).collect();
        let mut sign = 1.0;
        for k in 0..n {
            let pivot = (k..n)
                .max_by(|&i, &j| lu[i * n + k].abs().total_cmp(&lu[j * n + k].abs()))
                .unwrap_or(k);
            if lu[pivot * n + k] == 0.0 || !lu[pivot * n + k].is_finite() {
                return Err(Error::invalid(
                    "lu",
                    format!("the {n}x{n} matrix is singular or not finite (column {k})"),
                ));
            }
            if pivot != k {
                for c in 0..n {
                    lu.swap(k * n + c, pivot * n + c);
                }
                perm.swap(k, pivot);
                sign = -sign;
            }
            let d = lu[k * n + k];
            for i in k + 1..n {
                let f = lu[i * n + k] / d;
                lu[i * n + k] = f;
                for c in k + 1..n {
                    lu[i * n + c] -= f * lu[k * n + c];
                }
            }
        }
        Ok(Lu { n, lu, perm, sign })
    }

    /// `log |det A|`.
    pub fn log_abs_det(&self) -> f64 {
        (0..self.n)
            .map(|i| self.lu[i * self.n + i].abs().ln())
            .sum()
    }

    /// The sign of `det A`.
    pub fn det_sign(&self) -> f64 {
        let diag_sign: f64 = (0..self.n)
            .map(|i| self.lu[i * self.n + i].signum())
            .product();
        self.sign * diag_sign
    }

    /// `A⁻¹`, by solving `A X = I` column by column.
    pub fn inverse(&self) -> Vec<f64> {
        let n = self.n;
        let mut inv = vec![0.0; n * n];
        let mut col = vec![0.0; n];
        for j in 0..n {
            // Solve L y = P e_j, then U x = y.
            for (c, &p) in col.iter_mut().zip(&self.perm) {
                *c = if p == j { 1.0 } else { 0.0 };
            }
            for i in 0..n {
                let s: f64 = (0..i).map(|c| self.lu[i * n + c] * col[c]).sum();
                col[i] -= s;
            }
            for i in (0..n).rev() {
                let s: f64 = (i + 1..n).map(|c| self.lu[i * n + c] * col[c]).sum();
                col[i] = (col[i] - s) / self.lu[i * n + i];
            }
            for i in 0..n {
                inv[i * n + j] = col[i];
            }
        }
        inv
    }

    /// The factors as separate matrices `(P, L, U)` with `A = P · L · U` (the convention
    /// of `scipy.linalg.lu`, which Glow's LU-decomposed 1x1 convolution follows).
    pub fn plu(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let n = self.n;
        let (mut p, mut l, mut u) = (vec![0.0; n * n], vec![0.0; n * n], vec![0.0; n * n]);
        for i in 0..n {
            // Row i of P·A is row perm[i] of A, so A = Pᵀ(LU) and scipy's P is our Pᵀ.
            p[self.perm[i] * n + i] = 1.0;
            for c in 0..n {
                match c.cmp(&i) {
                    std::cmp::Ordering::Less => l[i * n + c] = self.lu[i * n + c],
                    std::cmp::Ordering::Equal => {
                        l[i * n + c] = 1.0;
                        u[i * n + c] = self.lu[i * n + c];
                    }
                    std::cmp::Ordering::Greater => u[i * n + c] = self.lu[i * n + c],
                }
            }
        }
        (p, l, u)
    }
}

/// The orthogonal factor `Q` of `A = Q R` (modified Gram–Schmidt on columns, with `R`'s
/// diagonal made positive so `Q` is unique). For a Gaussian `A` this is a random rotation
/// or reflection: Glow's initialisation of the 1x1 convolution.
pub fn qr_q(a: &[f64], n: usize) -> Result<Vec<f64>> {
    if a.len() != n * n {
        return Err(Error::shape(
            "qr",
            format!("{} values do not form a {n}x{n} matrix", a.len()),
        ));
    }
    let mut q = a.to_vec();
    for j in 0..n {
        for k in 0..j {
            let dot: f64 = (0..n).map(|i| q[i * n + k] * q[i * n + j]).sum();
            for i in 0..n {
                q[i * n + j] -= dot * q[i * n + k];
            }
        }
        let norm = (0..n).map(|i| q[i * n + j].powi(2)).sum::<f64>().sqrt();
        if norm < 1e-12 {
            return Err(Error::invalid("qr", "the matrix has dependent columns"));
        }
        for i in 0..n {
            q[i * n + j] /= norm;
        }
    }
    Ok(q)
}

/// `A · B` for `n × n` matrices.
pub fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [f64; 9] = [2.0, 1.0, 1.0, 4.0, -6.0, 0.0, -2.0, 7.0, 2.0];

    #[test]
    fn determinant_and_inverse() {
        // det A = 2(-12 - 0) - 1(8 - 0) + 1(28 - 12) = -24 - 8 + 16 = -16.
        let lu = Lu::new(&A, 3).unwrap();
        assert!((lu.log_abs_det() - 16f64.ln()).abs() < 1e-12);
        assert_eq!(lu.det_sign(), -1.0);
        let prod = matmul(&A, &lu.inverse(), 3);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((prod[i * 3 + j] - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn plu_reconstructs() {
        let (p, l, u) = Lu::new(&A, 3).unwrap().plu();
        let back = matmul(&matmul(&p, &l, 3), &u, 3);
        for (x, y) in back.iter().zip(A) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn singular_is_an_error() {
        assert!(Lu::new(&[1.0, 2.0, 2.0, 4.0], 2).is_err());
    }

    #[test]
    fn qr_gives_orthogonal_q() {
        let q = qr_q(&A, 3).unwrap();
        let mut qt = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                qt[j * 3 + i] = q[i * 3 + j];
            }
        }
        let prod = matmul(&qt, &q, 3);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((prod[i * 3 + j] - want).abs() < 1e-12);
            }
        }
    }
}
