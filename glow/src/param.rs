//! Named, replaceable parameters and the model state they form.
//!
//! A [`Param`] holds the current leaf tensor of one parameter. Layers read it with
//! [`Param::get`] on every forward pass; the optimiser updates it in place
//! ([`engine::Tensor::adam_update`]); ActNorm's data-dependent initialisation and loading a
//! state replace it with [`Param::set`]. Names follow the common PyTorch port's
//! `state_dict` keys (e.g. `flow.layers.1.actnorm.bias`), so weights can be exchanged.

use std::sync::RwLock;

use engine::{shape, Device, Error, Result, Tensor};

/// One named tensor of model state: a trainable parameter or a fixed buffer.
#[derive(Debug)]
pub struct Param {
    name: String,
    trainable: bool,
    value: RwLock<Tensor>,
}

impl Param {
    /// A trainable parameter named `name` starting at `value`.
    pub fn new(name: impl Into<String>, value: Tensor) -> Param {
        Param {
            name: name.into(),
            trainable: true,
            value: RwLock::new(value.detach().with_grad()),
        }
    }

    /// A fixed buffer (saved with the model, never trained), e.g. a permutation.
    pub fn buffer(name: impl Into<String>, value: Tensor) -> Param {
        Param {
            name: name.into(),
            trainable: false,
            value: RwLock::new(value.detach()),
        }
    }

    /// Whether the optimiser updates it.
    pub fn trainable(&self) -> bool {
        self.trainable
    }

    /// The parameter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current value: a leaf that requires grad if trainable.
    pub fn get(&self) -> Tensor {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value; the shape must not change.
    pub fn set(&self, value: &Tensor) -> Result<()> {
        let mut slot = self.value.write().unwrap_or_else(|e| e.into_inner());
        if value.shape() != slot.shape() {
            return Err(Error::shape(
                "Param::set",
                format!(
                    "{} has shape {}, cannot take {}",
                    self.name,
                    shape::fmt(slot.shape()),
                    shape::fmt(value.shape())
                ),
            ));
        }
        let value = value.to_device(slot.device())?.detach();
        *slot = if self.trainable {
            value.with_grad()
        } else {
            value
        };
        Ok(())
    }

    /// The shape.
    pub fn shape(&self) -> Vec<usize> {
        self.get().shape().to_vec()
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.get().device().clone()
    }
}

/// A named host copy of one tensor of model state (parameter, fixed buffer or flag).
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    /// Key, e.g. `flow.layers.1.invconv.lower`.
    pub name: String,
    /// Extents.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl StateTensor {
    /// Copies `t` to the host under `name`.
    pub fn from_tensor(name: impl Into<String>, t: &Tensor) -> Result<StateTensor> {
        Ok(StateTensor {
            name: name.into(),
            shape: t.shape().to_vec(),
            data: t.to_vec()?,
        })
    }

    /// Uploads to `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_slice(&self.data, &self.shape, device)
    }
}

/// Everything needed to rebuild a model's function: parameters, fixed buffers (the 1x1
/// convolutions' permutation and signs, shuffles) and ActNorm's initialised flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelState {
    /// The tensors, in the model's order.
    pub tensors: Vec<StateTensor>,
}

impl ModelState {
    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Result<&StateTensor> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::invalid("load_state", format!("the state has no entry {name}")))
    }
}
