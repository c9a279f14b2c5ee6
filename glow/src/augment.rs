//! Augmentation of training batches: a short list of [`Transform`]s applied in order to
//! the pixel bytes of each batch before they are dequantised.
//!
//! Both transforms of the reference code and the PyTorch port are here: a random
//! translation by whole pixels ([`Transform::Translate`]; openai/glow's `--dal 1`, the
//! port's `RandomAffine(translate=(0.1, 0.1))`) and a horizontal flip with probability
//! 1/2 ([`Transform::HFlip`], the port's `RandomHorizontalFlip`).
//!
//! **Deterministic.** Every random choice comes from an RNG seeded by the run's seed,
//! the step number and a salt of its own per transform, so a resumed run augments its
//! batches exactly as the uninterrupted one did, adding or removing one transform leaves
//! the other's choices unchanged, and every rank of a data-parallel run (which all
//! augment the same global batch before taking their shards of it) makes the same
//! choices. The flip's stream is [`crate::data::random_hflip`]'s.
//!
//! **Translation, precisely.** Each image gets its own shift `(dy, dx)`, each drawn
//! uniformly from the integers `-max..=max`; output pixel `(y, x)` is input pixel
//! `(clamp(y - dy), clamp(x - dx))`, so the pixels a shift uncovers repeat the nearest
//! edge pixel. That is openai/glow's fill (Keras' `fill_mode="nearest"`); the port fills
//! with black instead, which gives the flow a border of constant pixels to model, and
//! Keras shifts by fractions of a pixel with interpolation, which blurs: whole pixels
//! keep every pixel value a real one.

use engine::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Salt of the translation's RNG stream, apart from the epoch order's and the flip's.
const TRANSLATE_SALT: u64 = 0x7472_616E_736C_6174; // "translat"

/// One augmentation of training images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Shift each image by up to `max` whole pixels along each axis, the uncovered pixels
    /// repeating the nearest edge (module docs).
    Translate {
        /// The largest shift, in pixels (0 leaves the images as they are).
        max: usize,
    },
    /// Mirror each image left-right with probability 1/2.
    HFlip,
}

impl Transform {
    /// The port's and openai/glow's translation for images `width` pixels wide: 10% of
    /// the width, rounded (3 pixels for 32).
    pub fn port_translate(width: usize) -> Transform {
        Transform::Translate {
            max: (width as f64 * 0.1).round() as usize,
        }
    }

    /// A short description for logs and the start of a run (`translate ±3 px`, `hflip`).
    pub fn describe(&self) -> String {
        match self {
            Transform::Translate { max } => format!("translate ±{max} px"),
            Transform::HFlip => "hflip".into(),
        }
    }

    /// Applies the transform to `pixels` (`[B, C, H, W]` bytes of `image_shape`) in
    /// place, with the choices of training step `step` of a run seeded by `seed`.
    pub fn apply(
        &self,
        pixels: &mut [u8],
        image_shape: [usize; 3],
        seed: u64,
        step: u64,
    ) -> Result<()> {
        match *self {
            Transform::HFlip => {
                crate::data::random_hflip(pixels, image_shape, seed, step)?;
                Ok(())
            }
            Transform::Translate { max } => {
                let batch = images_in(pixels, image_shape, "translate")?;
                let mut rng = StdRng::seed_from_u64(crate::data::mix(seed ^ TRANSLATE_SALT, step));
                // A shift past the image's size leaves only edge pixels, as the size does.
                let span = max.min(image_shape[1].max(image_shape[2])) as i64;
                let shifts: Vec<(i64, i64)> = (0..batch)
                    .map(|_| {
                        (
                            rng.random_range(-span..=span),
                            rng.random_range(-span..=span),
                        )
                    })
                    .collect();
                translate(pixels, image_shape, &shifts)
            }
        }
    }
}

/// The number of images of `image_shape` in `pixels`, or an error naming `op` when the
/// bytes do not make whole images.
fn images_in(pixels: &[u8], image_shape: [usize; 3], op: &'static str) -> Result<usize> {
    let image: usize = image_shape.iter().product();
    if image == 0 || !pixels.len().is_multiple_of(image) {
        return Err(Error::shape(
            op,
            format!(
                "{} bytes do not make whole images of {image_shape:?}",
                pixels.len()
            ),
        ));
    }
    Ok(pixels.len() / image)
}

/// Shifts image `i` of `pixels` (`[B, C, H, W]` bytes of `image_shape`) by `shifts[i]` =
/// `(dy, dx)` pixels (positive: down and right), repeating the edge pixels into what
/// the shift uncovers (module docs).
pub fn translate(pixels: &mut [u8], image_shape: [usize; 3], shifts: &[(i64, i64)]) -> Result<()> {
    let batch = images_in(pixels, image_shape, "translate")?;
    if batch != shifts.len() {
        return Err(Error::shape(
            "translate",
            format!("{batch} images and {} shifts", shifts.len()),
        ));
    }
    let [c, h, w] = image_shape;
    let clamp = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let mut plane = vec![0u8; h * w];
    for (image, &(dy, dx)) in pixels.chunks_exact_mut(c * h * w).zip(shifts) {
        // Any shift past the size is the same as the size (and cannot overflow below).
        let (dy, dx) = (
            dy.clamp(-(h as i64), h as i64),
            dx.clamp(-(w as i64), w as i64),
        );
        if (dy, dx) == (0, 0) {
            continue;
        }
        for channel in image.chunks_exact_mut(h * w) {
            plane.copy_from_slice(channel);
            for y in 0..h {
                let from = clamp(y as i64 - dy, h) * w;
                for x in 0..w {
                    channel[y * w + x] = plane[from + clamp(x as i64 - dx, w)];
                }
            }
        }
    }
    Ok(())
}

/// The transforms applied to each training batch, in order (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Augmentation {
    /// Applied first to last.
    pub transforms: Vec<Transform>,
}

impl Augmentation {
    /// No augmentation.
    pub fn none() -> Augmentation {
        Augmentation::default()
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// `translate ±3 px, hflip`, or `none`.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self.transforms.iter().map(Transform::describe).collect();
        parts.join(", ")
    }

    /// Applies every transform in order to `pixels` (`[B, C, H, W]` bytes of
    /// `image_shape`), with the choices of step `step` of a run seeded by `seed`.
    pub fn apply(
        &self,
        pixels: &mut [u8],
        image_shape: [usize; 3],
        seed: u64,
        step: u64,
    ) -> Result<()> {
        for t in &self.transforms {
            t.apply(pixels, image_shape, seed, step)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One 1×3×3 image whose pixel at (y, x) is 10y + x.
    fn grid() -> Vec<u8> {
        (0..3)
            .flat_map(|y| (0..3).map(move |x| 10 * y + x))
            .collect()
    }

    #[test]
    fn translation_moves_pixels_and_repeats_the_edge() {
        let mut img = grid();
        // One down, one left: row 0 repeats the old row 0, column 2 repeats column 2.
        translate(&mut img, [1, 3, 3], &[(1, -1)]).unwrap();
        assert_eq!(img, vec![1, 2, 2, 1, 2, 2, 11, 12, 12]);
        let mut img = grid();
        translate(&mut img, [1, 3, 3], &[(0, 0)]).unwrap();
        assert_eq!(img, grid());
        // Far past the edge: every pixel is the nearest corner's column/row.
        let mut img = grid();
        translate(&mut img, [1, 3, 3], &[(-5, 5)]).unwrap();
        assert_eq!(img, vec![20, 20, 20, 20, 20, 20, 20, 20, 20]);
        let mut far = grid();
        translate(&mut far, [1, 3, 3], &[(i64::MIN, i64::MAX)]).unwrap();
        assert_eq!(far, img, "no overflow, the same as any shift past the size");
        assert!(translate(&mut img, [1, 3, 3], &[(0, 0), (0, 0)]).is_err());
        assert!(translate(&mut img[..5], [1, 3, 3], &[(0, 0)]).is_err());
    }

    #[test]
    fn translation_choices_are_deterministic_and_bounded() {
        let shape = [1, 8, 8];
        let base: Vec<u8> = (0..64 * 40).map(|i| (i * 7 % 251) as u8).collect();
        let t = Transform::Translate { max: 2 };
        let mut a = base.clone();
        t.apply(&mut a, shape, 5, 9).unwrap();
        let mut b = base.clone();
        t.apply(&mut b, shape, 5, 9).unwrap();
        assert_eq!(a, b, "same seed and step, same shifts");
        let mut c = base.clone();
        t.apply(&mut c, shape, 5, 10).unwrap();
        assert_ne!(a, c, "another step, other shifts");
        // Each image equals the original shifted by some (dy, dx) in -2..=2.
        for (i, img) in a.chunks_exact(64).enumerate() {
            let orig = &base[i * 64..(i + 1) * 64];
            let found = (-2..=2)
                .flat_map(|dy| (-2..=2).map(move |dx| (dy, dx)))
                .any(|s| {
                    let mut o = orig.to_vec();
                    translate(&mut o, shape, &[s]).unwrap();
                    o == img
                });
            assert!(found, "image {i} is not a shift of at most 2 pixels");
        }
        // max 0 changes nothing.
        let mut d = base.clone();
        Transform::Translate { max: 0 }
            .apply(&mut d, shape, 5, 9)
            .unwrap();
        assert_eq!(d, base);
    }

    #[test]
    fn the_flip_in_a_list_is_random_hflip() {
        let shape = [3, 4, 4];
        let base: Vec<u8> = (0..48 * 16).map(|i| (i % 253) as u8).collect();
        let mut a = base.clone();
        crate::data::random_hflip(&mut a, shape, 3, 4).unwrap();
        let mut b = base.clone();
        let aug = Augmentation {
            transforms: vec![Transform::HFlip],
        };
        aug.apply(&mut b, shape, 3, 4).unwrap();
        assert_eq!(a, b);
        assert_eq!(aug.describe(), "hflip");
        assert_eq!(
            Transform::port_translate(32),
            Transform::Translate { max: 3 }
        );
        assert_eq!(Augmentation::none().describe(), "none");
    }
}
