//! The reference device: every [`Backend`] primitive written plainly on ndarray, in `f64`.
//!
//! This is the oracle the fast devices are checked against (`engine/tests/primitives.rs` runs
//! one test body per primitive on every device and compares it with this one), and the
//! place to read what a primitive *means* before reading how `cpu/` or a GLSL kernel
//! makes it fast. It is a full device: [`crate::Device::Reference`] trains and samples
//! the whole Glow model, only slowly (a naive `f64` loop runs at well under a GFLOP/s).
//!
//! How it reads:
//! - A buffer is a plain `Vec<f32>`. Each primitive loads its operands into `f64`
//!   [`ndarray::ArrayD`]s of their shapes ([`load`]), computes, and rounds the result to
//!   `f32` once ([`store`]). Accumulating in `f64` is what makes it a reference: its only
//!   `f32` rounding is the final one, so its error is far below the fast devices'.
//! - Nothing is fused, blocked, vectorised or threaded. Matmul is the triple sum of its
//!   definition, the convolution and its two adjoints are the same seven nested loops
//!   read three ways (`conv.rs`), reductions fold axis by axis.
//! - NaN propagates everywhere, as in IEEE arithmetic and PyTorch: `relu(NaN)`,
//!   `max(NaN, x)` and Adamax's `max(β2·v, |NaN|)` are NaN (Rust's `f64::max` would drop
//!   the NaN). `heaviside(NaN) = 0`, since `NaN > 0` is false. `engine/tests/nan.rs` checks every
//!   device against these rules.
//!
//! Files: `elementwise.rs` (unary maps, broadcasting binary ops, reductions), `linear.rs`
//! (matmul), `conv.rs` (convolution and its adjoints), `layout.rs` (permute, slice,
//! concat, gather), `fused.rs` (Glow's coupling and Gaussian log-density, and the
//! optimiser step). This file holds the buffer type and the `Backend` impl.

mod conv;
mod elementwise;
mod fused;
mod layout;
mod linear;

use std::sync::{Arc, RwLock};

use ndarray::{ArrayD, IxDyn};

use crate::backend::fused::*;
use crate::backend::*;
use crate::{Error, Result};

/// The reference backend (stateless, single-threaded).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReferenceBackend;

/// A reference buffer: a shared `Vec<f32>`. The lock exists for the optimiser's
/// in-place update; every other primitive only reads.
#[derive(Clone, Debug)]
pub struct ReferenceBuffer(Arc<RwLock<Counted>>);

impl ReferenceBuffer {
    fn new(data: Vec<f32>) -> Self {
        crate::memory::REFERENCE.add(data.len() * 4);
        ReferenceBuffer(Arc::new(RwLock::new(Counted(data))))
    }

    /// A copy of the contents.
    fn to_vec(&self) -> Result<Vec<f32>> {
        let data = self.0.read().map_err(|_| poisoned())?;
        Ok(data.to_vec())
    }
}

/// A buffer's vector, counted as live in [`crate::memory`] until dropped.
#[derive(Debug)]
struct Counted(Vec<f32>);

impl std::ops::Deref for Counted {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl std::ops::DerefMut for Counted {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        crate::memory::REFERENCE.sub(self.0.len() * 4);
    }
}

fn poisoned() -> Error {
    Error::Device("reference buffer lock poisoned by an earlier panic".into())
}

/// The first `numel(shape)` elements of `b` as an `f64` array of `shape`.
fn load(b: &ReferenceBuffer, shape: &[usize]) -> Result<ArrayD<f64>> {
    let len: usize = shape.iter().product();
    let data = b.0.read().map_err(|_| poisoned())?;
    let values: Vec<f64> = data[..len].iter().map(|&v| f64::from(v)).collect();
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .map_err(|e| Error::Device(format!("reference: {e}")))
}

/// Rounds `a` to `f32` in row-major (logical) order, whatever its memory layout.
fn store(a: &ArrayD<f64>) -> ReferenceBuffer {
    ReferenceBuffer::new(a.iter().map(|&v| v as f32).collect())
}

/// `conv(x, w) + bias` in `f64`, before its one rounding: shared by
/// [`Backend::conv2d`], either epilogue.
fn conv_forward(
    x: &ReferenceBuffer,
    w: &ReferenceBuffer,
    bias: Option<&ReferenceBuffer>,
    dims: Conv2dDims,
) -> Result<ArrayD<f64>> {
    let x = load(x, &conv::input_shape(dims))?;
    let w = load(w, &conv::weight_shape(dims))?;
    let bias = bias.map(|b| load(b, &[dims.c_out])).transpose()?;
    Ok(conv::forward(&x, &w, bias.as_ref(), dims))
}

impl Backend for ReferenceBackend {
    type Buffer = ReferenceBuffer;

    fn name(&self) -> String {
        "reference".into()
    }

    fn from_host(&self, data: &[f32]) -> Result<ReferenceBuffer> {
        Ok(ReferenceBuffer::new(data.to_vec()))
    }

    fn to_host(&self, x: &ReferenceBuffer) -> Result<Vec<f32>> {
        x.to_vec()
    }

    fn full(&self, len: usize, value: f32) -> Result<ReferenceBuffer> {
        Ok(ReferenceBuffer::new(vec![value; len]))
    }

    fn unary(&self, op: UnaryOp, x: &ReferenceBuffer, len: usize) -> Result<ReferenceBuffer> {
        let x = load(x, &[len])?;
        Ok(store(&x.mapv(|v| elementwise::unary(op, v))))
    }

    fn binary(
        &self,
        op: BinaryOp,
        a: &ReferenceBuffer,
        a_shape: &[usize],
        b: &ReferenceBuffer,
        b_shape: &[usize],
        out_shape: &[usize],
    ) -> Result<ReferenceBuffer> {
        let (a, b) = (load(a, a_shape)?, load(b, b_shape)?);
        Ok(store(&elementwise::binary(op, &a, &b, out_shape)))
    }

    fn reduce(
        &self,
        op: ReduceOp,
        x: &ReferenceBuffer,
        shape: &[usize],
        axes: &[usize],
    ) -> Result<ReferenceBuffer> {
        let x = load(x, shape)?;
        Ok(store(&elementwise::reduce(op, x, axes)))
    }

    fn matmul(
        &self,
        a: &ReferenceBuffer,
        b: &ReferenceBuffer,
        dims: MatmulDims,
    ) -> Result<ReferenceBuffer> {
        let (a_shape, b_shape) = linear::operand_shapes(dims);
        let (a, b) = (load(a, &a_shape)?, load(b, &b_shape)?);
        Ok(store(&linear::matmul(&a, &b, dims)))
    }

    fn conv2d(
        &self,
        x: &ReferenceBuffer,
        w: &ReferenceBuffer,
        bias: Option<&ReferenceBuffer>,
        dims: Conv2dDims,
        epilogue: Epilogue,
    ) -> Result<ReferenceBuffer> {
        let y = conv_forward(x, w, bias, dims)?;
        Ok(store(&match epilogue {
            Epilogue::None => y,
            // By definition: the convolution, then relu. The fast devices fuse the two.
            Epilogue::Relu => y.mapv(|v| elementwise::unary(UnaryOp::Relu, v)),
        }))
    }

    fn conv2d_backward_input(
        &self,
        dy: &ReferenceBuffer,
        w: &ReferenceBuffer,
        dims: Conv2dDims,
    ) -> Result<ReferenceBuffer> {
        let dy = load(dy, &conv::output_shape(dims))?;
        let w = load(w, &conv::weight_shape(dims))?;
        Ok(store(&conv::backward_input(&dy, &w, dims)))
    }

    fn conv2d_backward_weight(
        &self,
        x: &ReferenceBuffer,
        dy: &ReferenceBuffer,
        dims: Conv2dDims,
    ) -> Result<ReferenceBuffer> {
        let x = load(x, &conv::input_shape(dims))?;
        let dy = load(dy, &conv::output_shape(dims))?;
        Ok(store(&conv::backward_weight(&x, &dy, dims)))
    }

    fn permute(
        &self,
        x: &ReferenceBuffer,
        shape: &[usize],
        perm: &[usize],
    ) -> Result<ReferenceBuffer> {
        let x = load(x, shape)?;
        Ok(store(&layout::permute(x, perm)))
    }

    fn slice(
        &self,
        x: &ReferenceBuffer,
        shape: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<ReferenceBuffer> {
        let x = load(x, shape)?;
        Ok(store(&layout::slice(&x, axis, start, len)))
    }

    fn concat(
        &self,
        parts: &[(&ReferenceBuffer, &[usize])],
        axis: usize,
    ) -> Result<ReferenceBuffer> {
        let parts = parts
            .iter()
            .map(|(b, shape)| load(b, shape))
            .collect::<Result<Vec<_>>>()?;
        layout::concat(&parts, axis).map(|y| store(&y))
    }

    fn gather(
        &self,
        x: &ReferenceBuffer,
        shape: &[usize],
        axis: usize,
        indices: &[usize],
    ) -> Result<ReferenceBuffer> {
        let x = load(x, shape)?;
        Ok(store(&layout::gather(&x, axis, indices)))
    }

    fn random(&self, len: usize, dist: Distribution, seed: u64) -> Result<ReferenceBuffer> {
        // Element i is a pure function of (seed, i) on every device (`crate::random`),
        // computed in `f32` there too, so this is the same stream bit for bit.
        use crate::random::{normal, uniform01};
        let values = (0..len as u32).map(|i| match dist {
            Distribution::Uniform { low, high } => low + (high - low) * uniform01(seed, i),
            Distribution::Normal { mean, std } => mean + std * normal(seed, i),
        });
        Ok(ReferenceBuffer::new(values.collect()))
    }

    fn adam_update(
        &self,
        param: &ReferenceBuffer,
        grad: &ReferenceBuffer,
        m: &ReferenceBuffer,
        v: &ReferenceBuffer,
        len: usize,
        update: &AdamUpdate,
    ) -> Result<()> {
        distinct_adam_buffers([param, grad, m, v], |a, b| Arc::ptr_eq(&a.0, &b.0))?;
        let g = load(grad, &[len])?;
        let mut p = param.0.write().map_err(|_| poisoned())?;
        let mut m = m.0.write().map_err(|_| poisoned())?;
        let mut v = v.0.write().map_err(|_| poisoned())?;
        for i in 0..len {
            let (pi, mi, vi) = fused::adam(update, p[i].into(), g[i], m[i].into(), v[i].into());
            (p[i], m[i], v[i]) = (pi as f32, mi as f32, vi as f32);
        }
        Ok(())
    }
}

impl Fused for ReferenceBackend {
    fn affine_coupling(
        &self,
        xb: &ReferenceBuffer,
        h: &ReferenceBuffer,
        dims: PairedDims,
    ) -> Result<(ReferenceBuffer, ReferenceBuffer)> {
        let (xb, h) = (
            load(xb, &fused::unpaired(dims))?,
            load(h, &fused::paired(dims))?,
        );
        let (yb, logdet) = fused::affine_coupling(&xb, &h);
        Ok((store(&yb), store(&logdet)))
    }

    fn affine_coupling_backward(
        &self,
        dyb: Option<&ReferenceBuffer>,
        dlogdet: Option<&ReferenceBuffer>,
        xb: &ReferenceBuffer,
        h: &ReferenceBuffer,
        dims: PairedDims,
    ) -> Result<(Option<ReferenceBuffer>, ReferenceBuffer)> {
        let dyb = dyb.map(|d| load(d, &fused::unpaired(dims))).transpose()?;
        let dlogdet = dlogdet.map(|d| load(d, &[dims.n])).transpose()?;
        let (xb, h) = (
            load(xb, &fused::unpaired(dims))?,
            load(h, &fused::paired(dims))?,
        );
        let (dxb, dh) = fused::affine_coupling_backward(dyb.as_ref(), dlogdet.as_ref(), &xb, &h);
        Ok((dxb.map(|d| store(&d)), store(&dh)))
    }

    fn gaussian_log_prob(
        &self,
        z: &ReferenceBuffer,
        h: &ReferenceBuffer,
        dims: PairedDims,
        pairing: Pairing,
    ) -> Result<ReferenceBuffer> {
        let (z, h) = (
            load(z, &fused::unpaired(dims))?,
            load(h, &fused::paired(dims))?,
        );
        Ok(store(&fused::gaussian_log_prob(&z, &h, pairing)))
    }

    fn gaussian_log_prob_backward(
        &self,
        dlp: &ReferenceBuffer,
        z: &ReferenceBuffer,
        h: &ReferenceBuffer,
        dims: PairedDims,
        pairing: Pairing,
    ) -> Result<(ReferenceBuffer, ReferenceBuffer)> {
        let dlp = load(dlp, &[dims.n])?;
        let (z, h) = (
            load(z, &fused::unpaired(dims))?,
            load(h, &fused::paired(dims))?,
        );
        let (dz, dh) = fused::gaussian_log_prob_backward(&dlp, &z, &h, pairing);
        Ok((store(&dz), store(&dh)))
    }
}
