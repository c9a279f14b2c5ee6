//! The tensor type (in progress).

/// An f32 tensor on a device.
pub struct Tensor;
