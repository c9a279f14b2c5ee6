//! 2-D convolution (NCHW, stride 1, zero "same" padding) and its derivatives.
//!
//! For `y = conv(x, w) + bias`:
//! - `dx = conv2d_backward_input(dy, w)`: the convolution with the kernel flipped and its
//!   channel axes swapped;
//! - `dw = conv2d_backward_weight(x, dy)`: the correlation of inputs with output
//!   gradients, summed over the batch;
//! - `dbias = Σ dy` over batch, height and width.
//!
//! `conv2d_relu` is the same op with relu applied as the output is stored; its backward
//! first gates `dy` by `y > 0`, with the bias gradient in the same pass
//! ([`Tensor::relu_grad_bias`], in `ops/fused.rs`).
//!
//! The backend implements all three (direct convolutions on the CPU; see `cpu/conv.rs` and
//! `shaders/conv2d*.comp`).

use crate::backend::{Backend, Conv2dDims, Epilogue};
use crate::device::DeviceBackend;
use crate::shape;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Convolution of `self` `[n, c_in, h, w]` with `weight` `[c_out, c_in, kh, kw]`
    /// (odd kernel extents), stride 1, zero padding that keeps `h` and `w`, plus an
    /// optional `bias` `[c_out]`. Returns `[n, c_out, h, w]`.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let dims = self.conv2d_dims("conv2d", weight, bias)?;
        self.conv2d_op("conv2d", weight, bias, dims, false)
    }

    /// `relu(self.conv2d(weight, bias))` as one op: the relu is applied as the convolution
    /// stores its output, on both devices, instead of as a second pass over it. Backward:
    /// `dz = dy · [y > 0]` (`y > 0` exactly where the convolution's output is), then the
    /// convolution's three gradients of `dz`.
    ///
    /// Why fused: relu's forward pass over the coupling network's two hidden layers was
    /// 2.2% of config S's op time in `cargo bench --bench train_step` (`BENCH_PROFILE=1`),
    /// a pass over 2 MB per layer at the first level, and one more dispatch per layer on a GPU.
    pub fn conv2d_relu(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let dims = self.conv2d_dims("conv2d_relu", weight, bias)?;
        self.conv2d_op("conv2d_relu", weight, bias, dims, true)
    }

    /// The argument checks of [`Tensor::conv2d`] (errors name `op`), and its dimensions.
    fn conv2d_dims(
        &self,
        op: &'static str,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Conv2dDims> {
        self.same_device(op, weight)?;
        let (x, w) = (self.shape(), weight.shape());
        if x.len() != 4 || w.len() != 4 {
            return Err(Error::shape(
                op,
                format!(
                    "expects input [n, c_in, h, w] and weight [c_out, c_in, kh, kw], got {} and {}",
                    shape::fmt(x),
                    shape::fmt(w)
                ),
            ));
        }
        if x[1] != w[1] {
            return Err(Error::shape(
                op,
                format!(
                    "input {} has {} channels but weight {} expects {}",
                    shape::fmt(x),
                    x[1],
                    shape::fmt(w),
                    w[1]
                ),
            ));
        }
        if w[2] % 2 == 0 || w[3] % 2 == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "\"same\" padding needs odd kernel extents, weight is {}",
                    shape::fmt(w)
                ),
            ));
        }
        if let Some(b) = bias {
            self.same_device(op, b)?;
            if b.shape() != [w[0]] {
                return Err(Error::shape(
                    op,
                    format!(
                        "bias must be [{}] for weight {}, got {}",
                        w[0],
                        shape::fmt(w),
                        shape::fmt(b.shape())
                    ),
                ));
            }
        }
        let dims = Conv2dDims {
            n: x[0],
            c_in: x[1],
            c_out: w[0],
            h: x[2],
            w: x[3],
            kh: w[2],
            kw: w[3],
        };
        Ok(dims)
    }

    /// The convolution `op` (with relu when `relu`) and its backward.
    fn conv2d_op(
        &self,
        op: &'static str,
        weight: &Tensor,
        bias: Option<&Tensor>,
        dims: Conv2dDims,
        relu: bool,
    ) -> Result<Tensor> {
        let flops = 2 * dims.macs();
        let storage = dispatch!(op, flops, self.device(), b => {
            let (x, w, bias) = (
                b.buf(self.storage()),
                b.buf(weight.storage()),
                bias.map(|t| b.buf(t.storage())),
            );
            let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
            b.wrap_res(b.conv2d(x, w, bias, dims, epilogue))
        })?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        // The backward pass computes in the precision the forward pass was allowed.
        let reduced = crate::precision::allowed();
        Tensor::from_op(
            storage,
            vec![dims.n, dims.c_out, dims.h, dims.w],
            op,
            &inputs,
            move |a| {
                crate::precision::within(reduced, || {
                    let (x, w) = (&a.inputs[0], &a.inputs[1]);
                    let dev = x.device();
                    // Through the relu first: the gradient of the convolution's own output,
                    // and with it the bias gradient (one pass when both are needed).
                    let wants_db = a.inputs.len() == 3 && a.needs[2];
                    let (dz, db) = match (relu, wants_db) {
                        (true, true) => {
                            let (dz, db) = a.dy.relu_grad_bias(a.out)?;
                            (dz, Some(db))
                        }
                        (true, false) => (a.dy.relu_grad(a.out)?, None),
                        (false, true) => (a.dy.clone(), Some(a.dy.sum(&[0, 2, 3], false)?)),
                        (false, false) => (a.dy.clone(), None),
                    };
                    let dx = if a.needs[0] {
                        let s = dispatch!("conv2d_backward_input", flops, dev, b => b.wrap_res(
                        b.conv2d_backward_input(b.buf(dz.storage()), b.buf(w.storage()), dims)))?;
                        Some(Tensor::from_storage(s, x.shape().to_vec(), dev.clone()))
                    } else {
                        None
                    };
                    let dw = if a.needs[1] {
                        let s = dispatch!("conv2d_backward_weight", flops, dev, b => b.wrap_res(
                        b.conv2d_backward_weight(b.buf(x.storage()), b.buf(dz.storage()), dims)))?;
                        Some(Tensor::from_storage(s, w.shape().to_vec(), dev.clone()))
                    } else {
                        None
                    };
                    let mut grads = vec![dx, dw];
                    if a.inputs.len() == 3 {
                        grads.push(db);
                    }
                    Ok(grads)
                })
            },
        )
    }
}
