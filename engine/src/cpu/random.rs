//! Random fills: element `i` is a pure function of `(seed, i)` from [`crate::random`],
//! so the fill splits across threads freely and matches the GPU bit for bit (up to the
//! last-ulp differences of `ln`/`cos` in the normal transform).

use super::par_fill;
use crate::backend::Distribution;
use crate::random::{normal, uniform01};

/// `len` draws from `dist` under `seed`.
pub(super) fn fill(len: usize, dist: Distribution, seed: u64) -> Vec<f32> {
    let mut out = vec![0.0f32; len];
    match dist {
        Distribution::Uniform { low, high } => par_fill(&mut out, 1, |s, out| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = low + (high - low) * uniform01(seed, (s + i) as u32);
            }
        }),
        Distribution::Normal { mean, std } => par_fill(&mut out, 1, |s, out| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = mean + std * normal(seed, (s + i) as u32);
            }
        }),
    }
    out
}
