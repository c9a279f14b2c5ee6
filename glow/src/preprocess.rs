//! From pixels to the flow's input: [`Glow::preprocess`] keeps `n_bits` of each 8-bit
//! value, scales to `[-0.5, 0.5)` and dequantises, adding noise within each value's bin
//! as [`Dequantization`] says (uniform, per data-parallel shard, per image, or the
//! bin's centre). The model's discrete likelihood is the continuous one of this input
//! (`docs/model.md`).

use engine::{Error, Result, Tensor};

use crate::model::Glow;

/// How [`Glow::preprocess`] dequantises pixel values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dequantization {
    /// `u ~ U(0, 1/n_bins)` per element, drawn from this seed (reproducible on every device).
    Uniform(u64),
    /// Images `first..first + B` of the [`Dequantization::Uniform`] noise of a batch of
    /// `total` images: a data-parallel rank's shard of a global batch gets the noise one
    /// process would give those images ([`crate::parallel`]).
    UniformRows {
        /// Seed of the whole batch's noise.
        seed: u64,
        /// The shard's first image in the whole batch.
        first: usize,
        /// Images in the whole batch.
        total: usize,
    },
    /// `u ~ U(0, 1/n_bins)` drawn per image: image `i` of the batch uses the stream of
    /// seed `hash(seed, first_index + i)`, so each image of a dataset gets the same noise
    /// whatever the batch size (for reproducible evaluation).
    PerImage {
        /// Base seed.
        seed: u64,
        /// Dataset index of the batch's first image.
        first_index: u64,
    },
    /// `u = 0.5 / n_bins`, the centre of each bin.
    Midpoint,
}

impl Dequantization {
    /// The seed of image `index` under [`Dequantization::PerImage`].
    pub fn image_seed(seed: u64, index: u64) -> u64 {
        let lo = engine::random::hash(seed, index as u32);
        let hi = engine::random::hash(seed ^ 0x5851_f42d_4c95_7f2d, (index >> 32) as u32);
        (u64::from(hi) << 32) | u64::from(lo)
    }
}

impl Glow {
    /// Fails unless `pixels` are the bytes of `batch` images of the model's shape; returns
    /// the bytes of one image.
    pub(crate) fn check_pixels(&self, pixels: &[u8], batch: usize) -> Result<usize> {
        let [c, h, w] = self.config().image_shape;
        if pixels.len() != batch * c * h * w {
            return Err(Error::shape(
                "preprocess",
                format!(
                    "{} bytes do not make {batch} images of [{c}, {h}, {w}]",
                    pixels.len()
                ),
            ));
        }
        Ok(c * h * w)
    }

    /// Turns 8-bit pixel values `[B, C, H, W]` (as floats 0..=255, on any device) into the
    /// flow's input: keep `n_bits`, scale to `[-0.5, 0.5)` and dequantise,
    /// `x = floor(v / 2^(8 − n_bits)) / n_bins − 0.5 + u`.
    pub fn preprocess(
        &self,
        pixels: &[u8],
        batch: usize,
        dequant: Dequantization,
    ) -> Result<Tensor> {
        let [c, h, w] = self.config().image_shape;
        self.check_pixels(pixels, batch)?;
        let n_bins = self.config().n_bins();
        let shift = 8 - self.config().n_bits;
        let offset = match dequant {
            Dequantization::Midpoint => 0.5 / n_bins,
            _ => 0.0,
        };
        let values: Vec<f32> = pixels
            .iter()
            .map(|&p| f32::from(p >> shift) / n_bins - 0.5 + offset)
            .collect();
        let x = Tensor::from_vec(values, &[batch, c, h, w], self.device())?;
        match dequant {
            Dequantization::Midpoint => Ok(x),
            Dequantization::Uniform(seed) => x.add(&Tensor::rand_uniform(
                x.shape(),
                0.0,
                1.0 / n_bins,
                seed,
                self.device(),
            )?),
            Dequantization::UniformRows { seed, first, total } => {
                if first.checked_add(batch).is_none_or(|end| end > total) {
                    return Err(Error::invalid(
                        "preprocess",
                        format!("{batch} images from image {first} of a batch of {total}"),
                    ));
                }
                let noise = Tensor::rand_uniform(
                    &[total, c, h, w],
                    0.0,
                    1.0 / n_bins,
                    seed,
                    self.device(),
                )?;
                x.add(&noise.slice(0, first, batch)?)
            }
            Dequantization::PerImage { seed, first_index } => {
                let noise: Vec<Tensor> = (0..batch as u64)
                    .map(|i| {
                        let s = Dequantization::image_seed(seed, first_index + i);
                        Tensor::rand_uniform(&[1, c, h, w], 0.0, 1.0 / n_bins, s, self.device())
                    })
                    .collect::<Result<_>>()?;
                let parts: Vec<&Tensor> = noise.iter().collect();
                x.add(&Tensor::concat(&parts, 0)?)
            }
        }
    }

    /// The inverse of [`Glow::preprocess`] up to the dequantisation: the pixel bytes of
    /// flow-range values `x` `[B, C, H, W]`, each `floor((x + 0.5) · n_bins)` clamped to
    /// the bins and scaled back to 8 bits (`· 2^(8 − n_bits)`). Any point of a pixel's bin
    /// (its midpoint, or any dequantised value) gives that pixel back.
    pub fn postprocess(&self, x: &Tensor) -> Result<Vec<u8>> {
        let [c, h, w] = self.config().image_shape;
        let s = x.shape();
        if s.len() != 4 || s[1..] != [c, h, w] {
            return Err(Error::shape(
                "postprocess",
                format!("expected images [B, {c}, {h}, {w}], got {s:?}"),
            ));
        }
        let n_bins = self.config().n_bins();
        let shift = 8 - self.config().n_bits;
        Ok(x.to_vec()?
            .into_iter()
            .map(|v| (((v + 0.5) * n_bins).floor().clamp(0.0, n_bins - 1.0) as u8) << shift)
            .collect())
    }
}
