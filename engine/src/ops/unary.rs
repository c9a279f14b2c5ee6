//! Elementwise maps `y = f(x)` and their derivatives `dx = dy · f'(x)`.
//!
//! Each derivative is written with the value that is cheapest to reuse: `exp`, `sigmoid`,
//! `sqrt`, `recip` and `tanh` reuse the output `y`; the rest use the input `x`.

use crate::autograd::BackwardArgs;
use crate::backend::{Backend, UnaryOp};
use crate::device::DeviceBackend;
use crate::{Result, Tensor};

impl Tensor {
    /// Runs `op` and records `backward(args) -> dx`.
    fn unary(
        &self,
        op: UnaryOp,
        name: &'static str,
        backward: impl Fn(&BackwardArgs) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        let n = self.numel();
        let storage = dispatch!(name, 0, self.device(), b => b.wrap_res(b.unary(op, b.buf(self.storage()), n)))?;
        Tensor::from_op(storage, self.shape().to_vec(), name, &[self], move |a| {
            Ok(vec![Some(backward(a)?)])
        })
    }

    /// `-x`.
    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg, "neg", |a| a.dy.neg())
    }

    /// `e^x`; `dx = dy · y`.
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp, "exp", |a| a.dy.mul(a.out))
    }

    /// `ln x`; `dx = dy / x`.
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log, "log", |a| a.dy.div(&a.inputs[0]))
    }

    /// `1 / (1 + e^-x)`; `dx = dy · y · (1 - y)`.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid, "sigmoid", |a| {
            a.dy.mul(&a.out.mul(&a.out.neg()?.add_scalar(1.0)?)?)
        })
    }

    /// `ln(1 + e^x)`; `dx = dy · sigmoid(x)`. With `log_sigmoid(x) = -softplus(-x)` this
    /// gives a log-sigmoid that stays finite for very negative `x`.
    pub fn softplus(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Softplus, "softplus", |a| {
            a.dy.mul(&a.inputs[0].sigmoid()?)
        })
    }

    /// `max(x, 0)` (NaN stays NaN); `dx = dy` where `x > 0`, else 0 (one
    /// [`Tensor::relu_grad`]).
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu, "relu", |a| a.dy.relu_grad(&a.inputs[0]))
    }

    /// `x` where `x > 0`, else `slope · x`; `dx = dy` where `x > 0`, else `slope · dy`,
    /// i.e. `dx = dy · (heaviside(x) · (1 - slope) + slope)`.
    pub fn leaky_relu(&self, slope: f32) -> Result<Tensor> {
        self.unary(UnaryOp::LeakyRelu(slope), "leaky_relu", move |a| {
            let gate = a.inputs[0]
                .heaviside()?
                .scale(1.0 - slope)?
                .add_scalar(slope)?;
            a.dy.mul(&gate)
        })
    }

    /// `√x`; `dx = dy / (2y)`.
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt, "sqrt", |a| a.dy.div(&a.out.scale(2.0)?))
    }

    /// `1 / x`; `dx = -dy · y²`.
    pub fn recip(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Recip, "recip", |a| {
            a.dy.mul(&a.out.square()?)?.neg()
        })
    }

    /// `x²`; `dx = 2 · x · dy`.
    pub fn square(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Square, "square", |a| {
            a.dy.mul(&a.inputs[0].scale(2.0)?)
        })
    }

    /// `|x|`; `dx = dy · sign(x)` (0 at 0).
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs, "abs", |a| {
            let x = &a.inputs[0];
            a.dy.mul(&x.heaviside()?.sub(&x.neg()?.heaviside()?)?)
        })
    }

    /// `tanh x`; `dx = dy · (1 - y²)`.
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh, "tanh", |a| {
            a.dy.mul(&a.out.square()?.neg()?.add_scalar(1.0)?)
        })
    }

    /// `x · s`; `dx = dy · s`.
    pub fn scale(&self, s: f32) -> Result<Tensor> {
        self.unary(UnaryOp::Scale(s), "scale", move |a| a.dy.scale(s))
    }

    /// `x + s`; `dx = dy`.
    pub fn add_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary(UnaryOp::AddScalar(s), "add_scalar", |a| Ok(a.dy.clone()))
    }

    /// `x^p`; `dx = dy · p · x^(p-1)`.
    pub fn powf(&self, p: f32) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(p), "powf", move |a| {
            a.dy.mul(&a.inputs[0].powf(p - 1.0)?.scale(p)?)
        })
    }

    /// The Heaviside step: `1` where `x > 0`, else `0` (so `heaviside(NaN) = 0`).
    /// Piecewise constant, so no gradient flows through it.
    pub fn heaviside(&self) -> Result<Tensor> {
        let n = self.numel();
        let storage = dispatch!("heaviside", 0, self.device(), b =>
            b.wrap_res(b.unary(UnaryOp::Heaviside, b.buf(self.storage()), n)))?;
        Ok(Tensor::from_storage(
            storage,
            self.shape().to_vec(),
            self.device().clone(),
        ))
    }
}
