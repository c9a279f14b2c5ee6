//! The fused Adam/Adamax step: one pass that reads `grad` and updates `param`, `m` and
//! `v` in place, exactly as [`AdamUpdate`] documents.
//!
//! This is the only CPU op that writes an existing buffer, hence the only one that takes
//! write locks. Two of the four buffers being the same allocation would make it wait on
//! itself, so that is refused with an error before any lock is taken.

use std::sync::RwLockWriteGuard;

use rayon::prelude::*;

use super::elementwise::nan_max;
use super::{read, CpuBuffer, PAR_CHUNK, PAR_THRESHOLD};
use crate::backend::{distinct_adam_buffers, AdamKind, AdamUpdate};
use crate::{Error, Result};

/// Takes a write lock, reporting a poisoned lock as a device error.
fn write(b: &CpuBuffer) -> Result<RwLockWriteGuard<'_, super::pool::Block>> {
    b.0.write()
        .map_err(|_| Error::Device("cpu buffer lock poisoned by an earlier panic".into()))
}

/// One optimiser step over the first `len` elements.
pub(super) fn update(
    param: &CpuBuffer,
    grad: &CpuBuffer,
    m: &CpuBuffer,
    v: &CpuBuffer,
    len: usize,
    update: &AdamUpdate,
) -> Result<()> {
    distinct_adam_buffers([param, grad, m, v], CpuBuffer::same_as)?;
    let (mut p, g, mut m, mut v) = (write(param)?, read(grad)?, write(m)?, write(v)?);
    let (p, g, m, v) = (&mut p[..len], &g[..len], &mut m[..len], &mut v[..len]);
    if len < PAR_THRESHOLD {
        kernel(p, g, m, v, update);
    } else {
        p.par_chunks_mut(PAR_CHUNK)
            .zip(g.par_chunks(PAR_CHUNK))
            .zip(m.par_chunks_mut(PAR_CHUNK))
            .zip(v.par_chunks_mut(PAR_CHUNK))
            .for_each(|(((p, g), m), v)| kernel(p, g, m, v, update));
    }
    Ok(())
}

/// The update on matching chunks of the four arrays.
fn kernel(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamUpdate) {
    let (b1, b2, eps, wd) = (s.beta1, s.beta2, s.eps, s.weight_decay);
    // Bias corrections 1 - β^t, computed once per step in f64 (β^t underflows gently).
    let t = s.step as i32;
    let bc1 = (1.0 - (b1 as f64).powi(t)) as f32;
    let bc2 = (1.0 - (b2 as f64).powi(t)) as f32;
    let elems = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
    match s.kind {
        AdamKind::Adam => {
            for (((p, &g), m), v) in elems {
                let g = g + wd * *p;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= s.lr * (*m / bc1) / ((*v / bc2).sqrt() + eps);
            }
        }
        AdamKind::Adamax => {
            let lr_t = s.lr / bc1;
            for (((p, &g), m), v) in elems {
                let g = g + wd * *p;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = nan_max(b2 * *v, g.abs() + eps);
                *p -= lr_t * *m / *v;
            }
        }
    }
}
