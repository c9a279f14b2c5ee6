//! Binary ops with NumPy broadcasting, and their derivatives.
//!
//! Broadcasting repeats an input along the axes where its extent is 1 (or missing), so
//! the gradient of that input is the output gradient summed back over those axes:
//! [`Tensor::sum_to`] (in `reduce.rs`) does exactly that.

use crate::autograd::BackwardArgs;
use crate::backend::{Backend, BinaryOp};
use crate::device::DeviceBackend;
use crate::shape;
use crate::{Result, Tensor};

/// The two input gradients of a binary op, before reduction to the inputs' shapes.
type BinaryGrads = (Option<Tensor>, Option<Tensor>);

impl Tensor {
    /// Runs `op` with broadcasting; records `backward(args) -> (da, db)` in the output's
    /// shape, which is then summed down to each input's shape.
    fn binary(
        &self,
        other: &Tensor,
        op: BinaryOp,
        name: &'static str,
        backward: impl Fn(&BackwardArgs) -> Result<BinaryGrads> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        self.same_device(name, other)?;
        let out_shape = shape::broadcast(name, self.shape(), other.shape())?;
        shape::check_rank(name, &out_shape)?;
        let rank = out_shape.len();
        let a_shape = shape::pad_to_rank(self.shape(), rank);
        let b_shape = shape::pad_to_rank(other.shape(), rank);
        let storage = dispatch!(name, 0, self.device(), b => b.wrap_res(b.binary(
            op,
            b.buf(self.storage()),
            &a_shape,
            b.buf(other.storage()),
            &b_shape,
            &out_shape,
        )))?;
        Tensor::from_op(storage, out_shape, name, &[self, other], move |a| {
            let (da, db) = backward(a)?;
            let da = da.map(|g| g.sum_to(a.inputs[0].shape())).transpose()?;
            let db = db.map(|g| g.sum_to(a.inputs[1].shape())).transpose()?;
            Ok(vec![da, db])
        })
    }

    /// `a + b`; `da = dy`, `db = dy`.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Add, "add", |a| {
            Ok((Some(a.dy.clone()), Some(a.dy.clone())))
        })
    }

    /// `a - b`; `da = dy`, `db = -dy`.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Sub, "sub", |a| {
            let db = a.needs[1].then(|| a.dy.neg()).transpose()?;
            Ok((Some(a.dy.clone()), db))
        })
    }

    /// `a · b`; `da = dy · b`, `db = dy · a`.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Mul, "mul", |a| {
            let da = a.needs[0].then(|| a.dy.mul(&a.inputs[1])).transpose()?;
            let db = a.needs[1].then(|| a.dy.mul(&a.inputs[0])).transpose()?;
            Ok((da, db))
        })
    }

    /// `a / b`; `da = dy / b`, `db = -dy · a / b² = -dy · y / b`.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Div, "div", |a| {
            let da = a.needs[0].then(|| a.dy.div(&a.inputs[1])).transpose()?;
            let db = a.needs[1]
                .then(|| a.dy.mul(a.out)?.div(&a.inputs[1])?.neg())
                .transpose()?;
            Ok((da, db))
        })
    }

    /// `self · [x > 0]`: relu's VJP for the output gradient `self` and relu's input `x`,
    /// in one pass. Linear in `self` (`d self = dy · [x > 0]`); `x` is not differentiated
    /// (the step has zero derivative almost everywhere).
    pub fn relu_grad(&self, x: &Tensor) -> Result<Tensor> {
        self.binary(&x.detach(), BinaryOp::ReluGrad, "relu_grad", |a| {
            let da = a.needs[0]
                .then(|| a.dy.relu_grad(&a.inputs[1]))
                .transpose()?;
            Ok((da, None))
        })
    }

    /// `max(a, b)` elementwise with broadcasting, NaN where either is NaN. Not
    /// differentiated: the result is detached (it serves numerically stable reductions
    /// such as log-sum-exp).
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.detach()
            .binary(&other.detach(), BinaryOp::Max, "maximum", |_| {
                Ok((None, None))
            })
    }
}
