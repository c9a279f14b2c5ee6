//! Exercises for the tour (`docs/tour.md`), each a function to write here and a check of
//! it. The bodies below are placeholders that answer "not attempted"; write one, then run
//! its test, which is ignored until you do:
//!
//! ```sh
//! cargo test --test exercises -- --ignored softsign   # or: detach, sigmoid, coupling, bits
//! ```
//!
//! Worked solutions, each run against the same check, are in `docs/exercises.md`; try
//! first. The checks compare with an independent computation (finite differences, a
//! determinant by elimination, the model's own bits/dim), never with a stored answer.
//!
//! | exercise | stop | write |
//! |---|---|---|
//! | 1 | 2 (an op and its VJP) | [`softsign_vjp`] |
//! | 2 | 4 (checking a gradient) | [`detached_square`] |
//! | 3 | 0 and 9 (a new unary op) | [`tiny_sigmoid`] |
//! | 4 | 10 (coupling) | [`coupling_logdet`] |
//! | 5 | 12 (one training step) | [`bits_per_dim`] |

use engine::gradcheck::GradCheck;
use engine::{Device, Tensor};

/// What a placeholder answers.
pub const NOT_ATTEMPTED: &str = "not attempted yet: write this function";

/// What an exercise returns: the answer, or why there is none.
pub type Answer<T> = std::result::Result<T, String>;

// ---------------------------------------------------------------------------------------
// The exercises: write these.

/// **Exercise 1 (stop 2).** The vector-Jacobian product of softsign, `y = x / (1 + |x|)`,
/// elementwise: given `x` and the output gradient `dy`, return `dx`. Work out `dy/dx` by
/// hand first (the quotient rule, on each side of 0).
pub fn softsign_vjp(x: &[f32], dy: &[f32]) -> Answer<Vec<f32>> {
    let _ = (x, dy);
    Err(NOT_ATTEMPTED.into())
}

/// **Exercise 2 (stop 4).** A function whose *value* is `x²` but whose gradient, as
/// `backward()` computes it, is wrong, written with ordinary ops and [`Tensor::detach`]
/// (which cuts the graph). The check confirms the value, then runs [`GradCheck`], which
/// must catch it: this is how a wrong VJP shows up.
pub fn detached_square(x: &Tensor) -> engine::Result<Tensor> {
    let _ = x;
    Err(engine::Error::invalid("detached_square", NOT_ATTEMPTED))
}

/// **Exercise 3 (stops 0 and 9).** The sigmoid `1 / (1 + e^−x)` as an op of stop 0's
/// engine, from [`crate::tiny::Tensor::elementwise`]: its function and its derivative,
/// which can be written with the output alone (`y · (1 − y)`).
pub fn tiny_sigmoid(x: &crate::tiny::Tensor) -> crate::tiny::Result<crate::tiny::Tensor> {
    let _ = x;
    Err(NOT_ATTEMPTED.into())
}

/// **Exercise 4 (stop 10).** The log-determinant of a coupling's Jacobian: `y_a = x_a`,
/// `y_b = x_b · s + t(x_a)` with the scales `s` given (an affine coupling; an additive
/// one has every `s = 1`). The network `t` may be anything: why does it not matter?
pub fn coupling_logdet(s: &[f32]) -> Answer<f64> {
    let _ = s;
    Err(NOT_ATTEMPTED.into())
}

/// **Exercise 5 (stop 12).** Bits per dimension of one image from the flow's continuous
/// log-density `log p(x)` (nats, `x` the dequantised image scaled into `[−0.5, 0.5)`, as
/// `Glow::forward`'s log-determinant plus the latents' log-density give it), its `dims`
/// values, and `n_bits` bits per colour. Mind the scaling of the pixels' bins.
pub fn bits_per_dim(log_density: f64, dims: usize, n_bits: u32) -> Answer<f64> {
    let _ = (log_density, dims, n_bits);
    Err(NOT_ATTEMPTED.into())
}

// ---------------------------------------------------------------------------------------
// The checks: each takes an answer and says what is wrong with it.

/// Whether `got` is within `tol` of `want`; false for NaN, so that a NaN answer fails.
fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol
}

/// Checks a softsign VJP against central differences of softsign in `f64`, on values
/// on both sides of 0 and far from it.
pub fn check_softsign_vjp(vjp: impl Fn(&[f32], &[f32]) -> Answer<Vec<f32>>) -> Answer<()> {
    let x: Vec<f32> = (0..41).map(|i| (i as f32 - 20.0) * 0.37 + 0.011).collect();
    let dy: Vec<f32> = (0..41).map(|i| ((i * 7) % 5) as f32 - 1.5).collect();
    let dx = vjp(&x, &dy)?;
    if dx.len() != x.len() {
        return Err(format!("{} gradients for {} inputs", dx.len(), x.len()));
    }
    let softsign = |v: f64| v / (1.0 + v.abs());
    for i in 0..x.len() {
        let (v, h) = (f64::from(x[i]), 1e-4);
        let want = f64::from(dy[i]) * (softsign(v + h) - softsign(v - h)) / (2.0 * h);
        if !close(f64::from(dx[i]), want, 1e-4 * (1.0 + want.abs())) {
            return Err(format!(
                "at x = {}, dy = {}: dx = {}, finite differences give {want:.6}",
                x[i], dy[i], dx[i]
            ));
        }
    }
    Ok(())
}

/// Checks a function meant to equal `x²` with a wrong gradient: its values, then that
/// [`GradCheck`] reports the gradient wrong.
pub fn check_detached_square(f: impl Fn(&Tensor) -> engine::Result<Tensor>) -> Answer<()> {
    let dev = Device::Cpu;
    let x = Tensor::from_slice(&[-1.5, -0.5, 0.25, 2.0], &[4], &dev).map_err(|e| e.to_string())?;
    let y = f(&x).map_err(|e| e.to_string())?;
    let (xs, ys) = (
        x.to_vec().unwrap_or_default(),
        y.to_vec().unwrap_or_default(),
    );
    if ys.len() != xs.len()
        || xs
            .iter()
            .zip(&ys)
            .any(|(a, b)| !close(f64::from(a * a), f64::from(*b), 1e-6))
    {
        return Err(format!("the values are {ys:?}, not x² of {xs:?}"));
    }
    let tracked = f(&x.with_grad()).map_err(|e| e.to_string())?;
    if !tracked.requires_grad() {
        return Err(
            "the result is cut off from x entirely (no gradient at all); keep one \
                    factor in the graph"
                .into(),
        );
    }
    let report = GradCheck::default()
        .run(|t| f(&t[0]), &[x])
        .map_err(|e| e.to_string())?;
    match report.passed() {
        true => Err(format!(
            "the gradient is right ({report}): it should not be"
        )),
        false => Ok(()),
    }
}

/// Checks a sigmoid of the tiny engine: its values, and its gradient from `backward()`
/// against central differences.
pub fn check_tiny_sigmoid(
    f: impl Fn(&crate::tiny::Tensor) -> crate::tiny::Result<crate::tiny::Tensor>,
) -> Answer<()> {
    use crate::tiny::{Device, Tensor};
    let xs: Vec<f32> = vec![-6.0, -1.0, -0.1, 0.0, 0.3, 2.0, 9.0];
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let x = Tensor::from_vec(xs.clone(), &[xs.len()], &Device::Host)?.with_grad();
    let y = f(&x)?;
    let ys = y.to_vec()?;
    if ys.len() != xs.len() {
        return Err(format!("{} values for {} inputs", ys.len(), xs.len()));
    }
    for (v, got) in xs.iter().zip(&ys) {
        if !close(f64::from(*got), sigmoid(f64::from(*v)), 1e-6) {
            return Err(format!(
                "sigmoid({v}) = {got}, want {}",
                sigmoid(f64::from(*v))
            ));
        }
    }
    let grads = y.mean_all()?.backward()?;
    let dx = grads.get(&x).ok_or("no gradient reaches x")?.to_vec()?;
    for (i, v) in xs.iter().enumerate() {
        let (v, h) = (f64::from(*v), 1e-4);
        let want = (sigmoid(v + h) - sigmoid(v - h)) / (2.0 * h) / xs.len() as f64;
        if !close(f64::from(dx[i]), want, 1e-5) {
            return Err(format!("d mean / dx at x = {v}: {}, want {want:.6}", dx[i]));
        }
    }
    Ok(())
}

/// Checks a coupling log-determinant against `log |det J|` of the whole Jacobian of
/// `(x_a, x_b) → (x_a, x_b · s + t(x_a))`, built with a random lower-left block
/// (`∂t/∂x_a`) and reduced by Gaussian elimination with partial pivoting in `f64`.
pub fn check_coupling_logdet(logdet: impl Fn(&[f32]) -> Answer<f64>) -> Answer<()> {
    for s in [vec![1.0f32; 4], vec![0.5, 2.0, -3.0, 0.9], vec![1.5; 6]] {
        let n = s.len();
        // J = [[I, 0], [T, diag(s)]], T a fixed pseudo-random block.
        let mut j = vec![vec![0.0f64; 2 * n]; 2 * n];
        for i in 0..n {
            j[i][i] = 1.0;
            j[n + i][n + i] = f64::from(s[i]);
            for (k, cell) in j[n + i][..n].iter_mut().enumerate() {
                *cell = (((i * 31 + k * 17) % 13) as f64 - 6.0) / 3.0;
            }
        }
        let want = log_abs_det(j);
        let got = logdet(&s)?;
        // f32 inputs summed in f32 are within about 1e-7 relative; a wrong answer is off
        // by O(1) or is NaN.
        if !close(got, want, 1e-5 * (1.0 + want.abs())) {
            return Err(format!("for s = {s:?}: {got}, the Jacobian says {want}"));
        }
    }
    Ok(())
}

/// `log |det a|` by Gaussian elimination with partial pivoting.
fn log_abs_det(mut a: Vec<Vec<f64>>) -> f64 {
    let n = a.len();
    let mut sum = 0.0;
    for col in 0..n {
        let p = (col..n)
            .max_by(|&i, &k| a[i][col].abs().total_cmp(&a[k][col].abs()))
            .unwrap_or(col);
        a.swap(col, p);
        let pivot = a[col][col];
        sum += pivot.abs().ln();
        let top = a[col].clone();
        for row in a.iter_mut().skip(col + 1) {
            let f = row[col] / pivot;
            for (cell, &t) in row.iter_mut().zip(&top).skip(col) {
                *cell -= f * t;
            }
        }
    }
    sum
}

/// Checks a bits/dim formula against a small Glow's own `bits_per_dim`, from the
/// log-density its forward pass gives, at two bit depths.
pub fn check_bits_per_dim(bpd: impl Fn(f64, usize, u32) -> Answer<f64>) -> Answer<()> {
    let err = |e: engine::Error| e.to_string();
    for n_bits in [8, 5] {
        let cfg = glow::GlowConfig {
            image_shape: [3, 8, 8],
            levels: 2,
            depth: 1,
            hidden: 8,
            n_bits,
            ..glow::GlowConfig::default()
        };
        let model = glow::Glow::new(cfg.clone(), &Device::Cpu).map_err(err)?;
        let x = Tensor::rand_uniform(&[2, 3, 8, 8], -0.5, 0.5, 3, &Device::Cpu).map_err(err)?;
        let out = model.forward(&x, None).map_err(err)?;
        let density = out
            .logdet
            .add(&out.log_p_latents)
            .map_err(err)?
            .to_vec()
            .map_err(err)?;
        let want = model
            .bits_per_dim(&x, None)
            .map_err(err)?
            .to_vec()
            .map_err(err)?;
        for (d, w) in density.iter().zip(&want) {
            let got = bpd(f64::from(*d), cfg.dims(), n_bits)?;
            if !close(got, f64::from(*w), 1e-4) {
                return Err(format!(
                    "log p(x) = {d} nats over {} values at {n_bits} bits: {got} bits/dim, \
                     the model says {w}",
                    cfg.dims()
                ));
            }
        }
    }
    Ok(())
}
