//! Counter-based random numbers shared by every device.
//!
//! Element `i` of a random fill with seed `s` is a pure function of `(s, i)`: a
//! stateless integer hash, so the CPU loop and a GPU kernel (see
//! `shaders/fill_random.comp`) produce the same stream without sharing a generator,
//! and a fill can be split across threads or workgroups in any way. The hash is two
//! rounds of Chris Wellons' `lowbias32` integer mixer over the index and both halves
//! of the seed; the low 24 bits of uniform floats are exact in f32.

/// One round of the `lowbias32` mixer (bias ≈ 0.17, good avalanche, cheap in GLSL).
#[inline]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The 32-bit hash of counter `i` under `seed`.
#[inline]
pub fn hash(seed: u64, i: u32) -> u32 {
    let lo = seed as u32;
    let hi = (seed >> 32) as u32;
    mix32(mix32(i ^ mix32(lo)).wrapping_add(hi.wrapping_mul(0x9e37_79b9)))
}

/// A uniform float in `[0, 1)` with 24 random bits, for counter `i`.
#[inline]
pub fn uniform01(seed: u64, i: u32) -> f32 {
    (hash(seed, i) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A standard normal for element `i` by Box–Muller over counters `2i` and `2i + 1`.
///
/// `1 - u` keeps the logarithm's argument in `(0, 1]`, so the result is always finite.
#[inline]
pub fn normal(seed: u64, i: u32) -> f32 {
    let u1 = 1.0 - uniform01(seed, i.wrapping_mul(2));
    let u2 = uniform01(seed, i.wrapping_mul(2).wrapping_add(1));
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}
