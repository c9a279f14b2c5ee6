//! `exp`, `ln` and the stable sigmoid pieces as branch-free polynomials that the compiler
//! turns into vector code, for the fused ops' inner loops.
//!
//! The standard library's `f32::exp` and `f32::ln_1p` are calls into libm, one element at a
//! time, and a loop containing them never vectorises; the affine coupling's loop made two
//! such calls per element, a visible share of a training step's op time in the per-op
//! profile (`docs/measurements.md`). These versions are
//! the classic Cephes single-precision approximations (range reduction, then a short
//! polynomial), written with selects instead of branches and with round-to-nearest by the
//! `1.5·2²³` trick (SSE2 has no vector `floor`), so the loops that call them vectorise on
//! the baseline x86-64 target. Accuracy is tested below against `f64`: within a few ulp.

/// `1.5·2²³`: adding and subtracting it rounds an `f32` of magnitude below `2²²` to the
/// nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `ln f32::MAX`: above it `e^x` overflows.
const LN_MAX: f32 = 88.722_84;

/// `e^x` to within 2 ulp; results below `e^-87` are flushed to zero instead of going
/// subnormal, inputs in `(88, ln f32::MAX]` give `e^88`, and larger ones overflow to
/// `+∞` as `f32::exp` does. NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // `max`/`min` return the other operand for a NaN `x`, so NaN is put back at the end.
    let c = x.clamp(-87.0, 88.0);
    // x = n·ln2 + r with |r| <= ln2/2; ln2 split in two (Cody-Waite) so n·ln2 is exact.
    let n = (c * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = c - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n through the exponent bits; n is in [-126, 127] after the clamp.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x.is_nan() {
        x
    } else if x < -87.0 {
        0.0
    } else if x > LN_MAX {
        f32::INFINITY
    } else {
        y * scale
    }
}

/// `ln x` for positive normal `x`, to within 2 ulp.
#[inline(always)]
pub(crate) fn ln(x: f32) -> f32 {
    // x = m·2^e with m in [√½, √2): m − 1 is small, where the polynomial is accurate.
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // in [0.5, 1)
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    e -= small as i32;
    m = if small { m + m } else { m } - 1.0;
    let z = m * m;
    let p = 7.037_683_6e-2;
    let p = p * m - 1.151_461e-1;
    let p = p * m + 1.167_699_9e-1;
    let p = p * m - 1.242_014_1e-1;
    let p = p * m + 1.424_932_3e-1;
    let p = p * m - 1.666_805_8e-1;
    let p = p * m + 2.000_071_4e-1;
    let p = p * m - 2.499_999_4e-1;
    let p = p * m + 3.333_333e-1;
    let e = e as f32;
    let y = m * z * p - 2.121_944_4e-4 * e - 0.5 * z;
    m + y + 0.693_359_4 * e
}

/// `ln(1 + u)` for `u` in `[0, 1]`, accurate for tiny `u` too: `ln(w)·u/(w − 1)` with
/// `w = 1 + u` cancels the rounding of `w` (Goldberg's trick), and `u` itself where `w`
/// rounds to 1.
#[inline(always)]
pub(crate) fn ln_1p_unit(u: f32) -> f32 {
    let w = 1.0 + u;
    let d = w - 1.0;
    if d == 0.0 {
        u
    } else {
        ln(w) * (u / d)
    }
}

/// `(σ(t), ln σ(t))` with one exponential: `e = e^-|t|`, `σ(t) = 1/(1+e)` for `t >= 0`
/// and `e/(1+e)` below, `ln σ(t) = min(t, 0) − ln(1 + e)`. Neither overflows for any `t`.
#[inline(always)]
pub(crate) fn sigmoid_and_log(t: f32) -> (f32, f32) {
    let e = exp(-t.abs());
    let s = if t >= 0.0 { 1.0 } else { e } / (1.0 + e);
    (s, t.min(0.0) - ln_1p_unit(e))
}

/// `σ(t)`, as in [`sigmoid_and_log`].
#[inline(always)]
pub(crate) fn sigmoid(t: f32) -> f32 {
    let e = exp(-t.abs());
    (if t >= 0.0 { 1.0 } else { e }) / (1.0 + e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error against `f64`, over a dense sweep including the clamp edges.
    fn worst(f: impl Fn(f32) -> f32, g: impl Fn(f64) -> f64, lo: f32, hi: f32) -> f64 {
        let n = 200_001;
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .map(|x| {
                let want = g(f64::from(x));
                (f64::from(f(x)) - want).abs() / want.abs().max(f64::MIN_POSITIVE)
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn exp_and_ln_are_within_a_few_ulp() {
        // f32's ulp is 2^-23 ≈ 1.2e-7 relative; 3 ulp is the bar.
        let ulp3 = 3.0 * f64::from(f32::EPSILON);
        assert!(worst(exp, f64::exp, -87.0, 88.0) < ulp3);
        assert!(worst(ln, f64::ln, 1e-30, 1e30) < ulp3);
        assert!(worst(ln, f64::ln, 0.5, 2.0) < ulp3);
        assert!(worst(ln_1p_unit, f64::ln_1p, 0.0, 1.0) < ulp3);
        assert!(worst(ln_1p_unit, f64::ln_1p, 1e-12, 1e-5) < ulp3);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(
            (exp(89.0), exp(f32::INFINITY)),
            (f32::INFINITY, f32::INFINITY)
        );
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn sigmoid_and_its_log_hold_at_both_tails() {
        for t in [
            -100.0f32, -30.0, -5.0, -1e-3, 0.0, 1e-3, 0.7, 5.0, 30.0, 100.0,
        ] {
            let (s, ls) = sigmoid_and_log(t);
            let t64 = f64::from(t);
            let want = 1.0 / (1.0 + (-t64).exp());
            let want_log = if t64 >= 0.0 {
                -(-t64).exp().ln_1p()
            } else {
                t64 - t64.exp().ln_1p()
            };
            // 1e-37: below e^-87 the exponential is flushed to zero (see `exp`).
            assert!(
                (f64::from(s) - want).abs() <= 3e-7 * want + 1e-37,
                "σ({t}) = {s}, want {want}"
            );
            assert!(
                (f64::from(ls) - want_log).abs() <= 3e-7 * want_log.abs().max(1e-30),
                "ln σ({t}) = {ls}, want {want_log}"
            );
            assert_eq!(sigmoid(t), s);
        }
    }
}
