//! Ops composed from the others, with no derivative code of their own.

use crate::shape;
use crate::{Device, Error, Result, Tensor};

impl Tensor {
    /// `log softmax` along `axis`: `x - log Σ e^x`, shifted by the (detached) maximum so
    /// no exponential overflows. The shift cancels in value and gradient.
    pub fn log_softmax(&self, axis: usize) -> Result<Tensor> {
        shape::check_axis("log_softmax", axis, self.shape())?;
        let shifted = self.sub(&self.max(&[axis], true)?)?;
        let lse = shifted.exp()?.sum(&[axis], true)?.log()?;
        shifted.sub(&lse)
    }

    /// `[labels.len(), classes]` with a 1 at each label's column.
    pub fn one_hot(labels: &[usize], classes: usize, device: &Device) -> Result<Tensor> {
        let mut data = vec![0.0; labels.len() * classes];
        for (i, &l) in labels.iter().enumerate() {
            if l >= classes {
                return Err(Error::invalid(
                    "one_hot",
                    format!("label {l} is out of range for {classes} classes"),
                ));
            }
            data[i * classes + l] = 1.0;
        }
        Tensor::from_vec(data, &[labels.len(), classes], device)
    }
}
