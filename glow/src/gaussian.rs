//! The diagonal Gaussian priors: log-density and sampling with temperature.

use engine::{Result, Tensor};

/// `½ log 2π`.
const HALF_LOG_2PI: f32 = 0.918_938_5;

/// `Σ log N(x; mean, e^logs)` over all but the batch axis: `[B, C, H, W] → [B]`, with
/// `log N = -½(log 2π + 2·logs + (x - mean)² · e^(-2·logs))`.
pub fn log_prob(mean: &Tensor, logs: &Tensor, x: &Tensor) -> Result<Tensor> {
    let z = x.sub(mean)?.mul(&logs.neg()?.exp()?)?;
    let per_dim = z
        .square()?
        .scale(0.5)?
        .add(logs)?
        .add_scalar(HALF_LOG_2PI)?
        .neg()?;
    per_dim.sum(&[1, 2, 3], false)
}

/// `mean + temperature · e^logs · ε` with `ε ~ N(0, 1)` drawn from `seed`.
pub fn sample(mean: &Tensor, logs: &Tensor, temperature: f32, seed: u64) -> Result<Tensor> {
    let eps = Tensor::randn(mean.shape(), 0.0, 1.0, seed, mean.device())?;
    from_standard(mean, logs, &eps, temperature)
}

/// `mean + temperature · e^logs · eps` for a given standard-normal `eps`.
pub fn from_standard(
    mean: &Tensor,
    logs: &Tensor,
    eps: &Tensor,
    temperature: f32,
) -> Result<Tensor> {
    mean.add(&logs.exp()?.mul(eps)?.scale(temperature)?)
}
