//! The fused optimiser update, the one op that writes into existing tensors.
//!
//! Adam keeps two moment tensors per parameter; updating `param`, `m` and `v` in one pass
//! reads each element once instead of the ~10 passes the composed formula would take.

use crate::backend::{AdamUpdate, Backend};
use crate::device::DeviceBackend;
use crate::shape;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Applies one Adam or Adamax step (see [`AdamUpdate`]) to this parameter in place,
    /// updating the moment tensors `m` and `v` too. All four tensors must have the same
    /// shape and device, and `self`, `m` and `v` must be distinct storages. Not recorded:
    /// call it outside of any graph you still want to differentiate.
    pub fn adam_update(
        &self,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        update: &AdamUpdate,
    ) -> Result<()> {
        for (name, t) in [("grad", grad), ("m", m), ("v", v)] {
            self.same_device("adam_update", t)?;
            if t.shape() != self.shape() {
                return Err(Error::shape(
                    "adam_update",
                    format!(
                        "{name} has shape {} but the parameter has shape {}",
                        shape::fmt(t.shape()),
                        shape::fmt(self.shape())
                    ),
                ));
            }
        }
        if update.step == 0
            || update.lr.is_nan()
            || update.lr < 0.0
            || !(0.0..1.0).contains(&update.beta1)
            || !(0.0..1.0).contains(&update.beta2)
        {
            return Err(Error::invalid(
                "adam_update",
                format!(
                    "needs step >= 1, lr >= 0 and betas in [0, 1); got step {}, lr {}, betas ({}, {})",
                    update.step, update.lr, update.beta1, update.beta2
                ),
            ));
        }
        // In place, so anomaly detection looks at what it reads before, not after.
        let read = [self, grad, m, v];
        let watch = crate::anomaly::is_enabled() && crate::anomaly::all_finite(&read)?;
        let n = self.numel();
        dispatch!("adam_update", 0, self.device(), b => b.adam_update(
            b.buf(self.storage()),
            b.buf(grad.storage()),
            b.buf(m.storage()),
            b.buf(v.storage()),
            n,
            update,
        ))?;
        if watch {
            let written = [("param", self), ("m", m), ("v", v)];
            crate::anomaly::check_written("adam_update", &read, &written)?;
        }
        Ok(())
    }
}
