//! Finite-difference gradient checks: is each backward the true derivative of its forward?
//!
//! For a function `f` of some tensors, the harness builds the scalar loss
//! `L = Σ r ⊙ f(inputs)` with fixed random weights `r` (a plain sum would hide errors
//! that cancel, e.g. in a softmax), back-propagates it, and compares every checked
//! element of every input's gradient with the central difference
//! `(L(x + ε) - L(x - ε)) / 2ε`. The perturbed losses are summed in `f64` on the host.
//!
//! The engine computes in `f32`, so the check is in `f32` with a stated tolerance. With
//! `ε = 1e-2` and `O(1)` inputs the central difference's truncation error is about
//! `ε²/6 · |f'''| ≈ 2e-5` and the rounding error about `6e-8 · √K · |f| / 2ε` for `K`
//! outputs, below `1e-4` for the sizes the tests use. A gradient element passes when
//! `|analytic - numeric| ≤ atol + rtol · max(|analytic|, |numeric|)` with the defaults
//! `atol = 1e-3`, `rtol = 1e-2`; a backward that drops a term or a factor misses by
//! `O(1)`. Functions with kinks (relu, abs) must be checked away from them.
//!
//! ```
//! use engine::{gradcheck::GradCheck, Device, Tensor};
//! let x = Tensor::from_slice(&[0.3, -1.2, 2.0], &[3], &Device::Cpu)?;
//! let report = GradCheck::default().run(|t| t[0].exp()?.mul(&t[0]), &[x])?;
//! assert!(report.passed(), "{report}");
//! # Ok::<(), engine::Error>(())
//! ```

use std::fmt;

use crate::{no_grad, Result, Tensor};

/// Settings of a gradient check; see the module documentation for the defaults.
#[derive(Debug, Clone)]
pub struct GradCheck {
    /// Half-width of the central difference.
    pub eps: f32,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// At most this many elements of each input are checked, evenly spaced (each costs
    /// two evaluations of `f`).
    pub max_elements: usize,
    /// Seed of the loss weights `r`.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            eps: 1e-2,
            atol: 1e-3,
            rtol: 1e-2,
            max_elements: 64,
            seed: 7,
        }
    }
}

/// One gradient element that missed the tolerance.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// Which input.
    pub input: usize,
    /// Flat index of the element.
    pub index: usize,
    /// From `backward()`.
    pub analytic: f64,
    /// From central differences.
    pub numeric: f64,
}

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct GradCheckReport {
    /// Elements compared.
    pub checked: usize,
    /// Largest `|analytic - numeric|` seen.
    pub max_abs_err: f64,
    /// Elements outside the tolerance.
    pub mismatches: Vec<Mismatch>,
}

impl GradCheckReport {
    /// Whether every checked element agreed.
    pub fn passed(&self) -> bool {
        self.checked > 0 && self.mismatches.is_empty()
    }
}

impl fmt::Display for GradCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} elements checked, max abs error {:.3e}, {} mismatches",
            self.checked,
            self.max_abs_err,
            self.mismatches.len()
        )?;
        for m in self.mismatches.iter().take(5) {
            write!(
                f,
                "\n  input {} element {}: analytic {:.6e}, numeric {:.6e}",
                m.input, m.index, m.analytic, m.numeric
            )?;
        }
        Ok(())
    }
}

impl GradCheck {
    /// Checks the gradients of `f` with respect to every tensor in `inputs` (their values
    /// are used; whether they require grad does not matter).
    pub fn run(
        &self,
        f: impl Fn(&[Tensor]) -> Result<Tensor>,
        inputs: &[Tensor],
    ) -> Result<GradCheckReport> {
        let leaves: Vec<Tensor> = inputs.iter().map(|t| t.detach().with_grad()).collect();
        let out = f(&leaves)?;
        let weights = Tensor::randn(out.shape(), 0.0, 1.0, self.seed, out.device())?;
        let weights_host: Vec<f64> = weights.to_vec()?.into_iter().map(f64::from).collect();
        let grads = out.mul(&weights)?.sum_all()?.backward()?;

        let loss_at = |perturbed: &[Tensor]| -> Result<f64> {
            let values = no_grad(|| f(perturbed))?.to_vec()?;
            Ok(values
                .iter()
                .zip(&weights_host)
                .map(|(&v, &r)| f64::from(v) * r)
                .sum())
        };

        let mut report = GradCheckReport::default();
        for (i, input) in inputs.iter().enumerate() {
            let analytic = match grads.get(&leaves[i]) {
                Some(g) => g.to_vec()?,
                None => vec![0.0; input.numel()],
            };
            let base = input.to_vec()?;
            let n = base.len();
            let step = n.div_ceil(self.max_elements.max(1)).max(1);
            for j in (0..n).step_by(step) {
                let eval = |delta: f32| -> Result<f64> {
                    let mut values = base.clone();
                    values[j] += delta;
                    let mut args: Vec<Tensor> = inputs.iter().map(Tensor::detach).collect();
                    args[i] = Tensor::from_slice(&values, input.shape(), input.device())?;
                    loss_at(&args)
                };
                // Divide by the step actually taken, which f32 rounding may shift.
                let (plus, minus) = (base[j] + self.eps, base[j] - self.eps);
                let numeric = (eval(self.eps)? - eval(-self.eps)?) / f64::from(plus - minus);
                let a = f64::from(analytic[j]);
                let err = (a - numeric).abs();
                report.checked += 1;
                report.max_abs_err = report.max_abs_err.max(err);
                if err > self.atol + self.rtol * a.abs().max(numeric.abs()) || !err.is_finite() {
                    report.mismatches.push(Mismatch {
                        input: i,
                        index: j,
                        analytic: a,
                        numeric,
                    });
                }
            }
        }
        Ok(report)
    }
}
