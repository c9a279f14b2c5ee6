//! Squeeze: trade space for channels, `[B, C, H, W] → [B, 4C, H/2, W/2]`.
//!
//! Output channel `c·4 + dy·2 + dx` holds input pixel `(2i + dy, 2j + dx)` of channel `c`:
//! view as `[B, C, H/2, 2, W/2, 2]`, move the two 2-axes next to `C`, view as 4-D. A pure
//! permutation of the values, so `log|det| = 0`.

use engine::{Error, Result, Tensor};

use super::dims4;

/// `[B, C, H, W] → [B, 4C, H/2, W/2]`.
pub fn squeeze(x: &Tensor) -> Result<Tensor> {
    let [b, c, h, w] = dims4(x)?;
    if h % 2 != 0 || w % 2 != 0 {
        return Err(Error::shape(
            "squeeze",
            format!("height and width must be even, got {:?}", x.shape()),
        ));
    }
    x.reshape(&[b, c, h / 2, 2, w / 2, 2])?
        .permute(&[0, 1, 3, 5, 2, 4])?
        .reshape(&[b, c * 4, h / 2, w / 2])
}

/// `[B, 4C, H, W] → [B, C, 2H, 2W]`, the inverse of [`squeeze`].
pub fn unsqueeze(x: &Tensor) -> Result<Tensor> {
    let [b, c, h, w] = dims4(x)?;
    if c % 4 != 0 {
        return Err(Error::shape(
            "unsqueeze",
            format!("channels must be a multiple of 4, got {:?}", x.shape()),
        ));
    }
    x.reshape(&[b, c / 4, 2, 2, h, w])?
        .permute(&[0, 1, 4, 2, 5, 3])?
        .reshape(&[b, c / 4, h * 2, w * 2])
}
