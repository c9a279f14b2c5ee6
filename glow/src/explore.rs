//! Moving through latent space: interpolation between two images and attribute
//! manipulation along a class direction.
//!
//! Both work on every latent of the multi-scale model (each split's `z2` and the top `z`),
//! so a decoded point is a full image, not a blurred reconstruction.

use engine::{no_grad, Error, Result, Tensor};

use crate::model::Glow;

/// `(1 − t)·a + t·b` for every latent.
fn lerp(a: &[Tensor], b: &[Tensor], t: f32) -> Result<Vec<Tensor>> {
    a.iter()
        .zip(b)
        .map(|(za, zb)| za.scale(1.0 - t)?.add(&zb.scale(t)?))
        .collect()
}

/// Decodes `steps` points evenly spaced from `x_a` to `x_b` (both `[1, C, H, W]`, already
/// preprocessed) in latent space; returns `[steps, C, H, W]`, the ends being the
/// reconstructions of `x_a` and `x_b`.
pub fn interpolate(
    model: &Glow,
    x_a: &Tensor,
    x_b: &Tensor,
    labels: Option<(&[usize], &[usize])>,
    steps: usize,
) -> Result<Tensor> {
    if steps < 2 {
        return Err(Error::invalid(
            "interpolate",
            format!("needs at least 2 steps, got {steps}"),
        ));
    }
    no_grad(|| {
        let za = model.encode(x_a, labels.map(|l| l.0))?;
        let zb = model.encode(x_b, labels.map(|l| l.1))?;
        let frames: Vec<Tensor> = (0..steps)
            .map(|i| model.decode(&lerp(&za, &zb, i as f32 / (steps - 1) as f32)?))
            .collect::<Result<_>>()?;
        Tensor::concat(&frames.iter().collect::<Vec<_>>(), 0)
    })
}

/// The mean of each latent over a batch of encodings, keeping a batch axis of 1.
fn mean_latents(model: &Glow, x: &Tensor, labels: Option<&[usize]>) -> Result<Vec<Tensor>> {
    model
        .encode(x, labels)?
        .iter()
        .map(|z| z.mean(&[0], true))
        .collect()
}

/// The direction of an attribute in latent space: the mean latent of `with` minus the
/// mean latent of `without` (both preprocessed batches `[N, C, H, W]`).
pub fn attribute_direction(
    model: &Glow,
    with: &Tensor,
    without: &Tensor,
    labels: Option<(&[usize], &[usize])>,
) -> Result<Vec<Tensor>> {
    no_grad(|| {
        let a = mean_latents(model, with, labels.map(|l| l.0))?;
        let b = mean_latents(model, without, labels.map(|l| l.1))?;
        a.iter().zip(&b).map(|(p, q)| p.sub(q)).collect()
    })
}

/// Decodes `z(x) + α · direction` for each `α` in `alphas`; `x` is `[1, C, H, W]`.
/// Returns `[alphas.len(), C, H, W]`.
pub fn manipulate(
    model: &Glow,
    x: &Tensor,
    label: Option<&[usize]>,
    direction: &[Tensor],
    alphas: &[f32],
) -> Result<Tensor> {
    no_grad(|| {
        let z = model.encode(x, label)?;
        if z.len() != direction.len() {
            return Err(Error::invalid(
                "manipulate",
                format!("{} latents but a direction of {}", z.len(), direction.len()),
            ));
        }
        let frames: Vec<Tensor> = alphas
            .iter()
            .map(|&alpha| {
                let moved: Vec<Tensor> = z
                    .iter()
                    .zip(direction)
                    .map(|(zi, di)| zi.add(&di.scale(alpha)?))
                    .collect::<Result<_>>()?;
                model.decode(&moved)
            })
            .collect::<Result<_>>()?;
        Tensor::concat(&frames.iter().collect::<Vec<_>>(), 0)
    })
}
