//! The fused ops: single passes over data that the core primitives of [`Backend`] could
//! compute in a dozen, written by a device for speed. [`Fused`] gives each one a default
//! method that composes it from the core primitives, so a new device runs everything
//! once it has written the core, and writes a fused kernel only where a profile says so
//! (the CPU device overrides all of them, the reference and Vulkan devices all but
//! [`Fused::relu_grad_bias`], whose composition is already their two kernels;
//! [`CoreOnly`] overrides none, and the tests check that it agrees with them).
//!
//! What they compute, and why they are fused: `crate::ops::fused` (the tensor ops, with
//! their backward passes), `docs/measurements.md` for the profile. Two are Glow's
//! hottest elementwise chains, and [`PairedDims`] and [`Pairing`] describe Glow's way of
//! packing two values per channel; the third is the relu and bias gradient of the
//! coupling networks' convolutions.

use super::*;

/// Shape of the fused Glow ops ([`Fused::affine_coupling`],
/// [`Fused::gaussian_log_prob`]): `n` images, `c` channels, `p = h·w` pixels per
/// channel. Their paired input `h` has `2c` channels; see [`Pairing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairedDims {
    /// Images.
    pub n: usize,
    /// Channels of the unpaired operands (`xb`, `z`); `h` has `2c`.
    pub c: usize,
    /// Pixels per channel.
    pub p: usize,
}

/// How the two values paired with channel `i` sit in a `[n, 2c, p]` tensor `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// Channels `2i` and `2i + 1` (`h[:, 0::2]`, `h[:, 1::2]`).
    Interleaved,
    /// Channels `i` and `c + i` (the first and second halves).
    Halves,
}

impl Pairing {
    /// The channels of `h` paired with channel `i` of `c`.
    pub fn channels(self, i: usize, c: usize) -> (usize, usize) {
        match self {
            Pairing::Interleaved => (2 * i, 2 * i + 1),
            Pairing::Halves => (i, c + i),
        }
    }
}

/// A device's core primitives alone: every [`Backend`] method forwards to `B`, and every
/// fused op is [`Fused`]'s default composition. What a new device runs before it writes
/// any fused kernel; as `Device::CoreCpu` (over the CPU device) it runs the whole model,
/// and the tests check it against the devices with kernels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreOnly<B>(pub B);

impl<B: Backend> Backend for CoreOnly<B> {
    type Buffer = B::Buffer;

    fn name(&self) -> String {
        format!("{}, core primitives only", self.0.name())
    }
    fn from_host(&self, data: &[f32]) -> Result<Self::Buffer> {
        self.0.from_host(data)
    }
    fn to_host(&self, x: &Self::Buffer) -> Result<Vec<f32>> {
        self.0.to_host(x)
    }
    fn full(&self, len: usize, value: f32) -> Result<Self::Buffer> {
        self.0.full(len, value)
    }
    fn unary(&self, op: UnaryOp, x: &Self::Buffer, len: usize) -> Result<Self::Buffer> {
        self.0.unary(op, x, len)
    }
    fn binary(
        &self,
        op: BinaryOp,
        a: &Self::Buffer,
        a_shape: &[usize],
        b: &Self::Buffer,
        b_shape: &[usize],
        out_shape: &[usize],
    ) -> Result<Self::Buffer> {
        self.0.binary(op, a, a_shape, b, b_shape, out_shape)
    }
    fn reduce(
        &self,
        op: ReduceOp,
        x: &Self::Buffer,
        shape: &[usize],
        axes: &[usize],
    ) -> Result<Self::Buffer> {
        self.0.reduce(op, x, shape, axes)
    }
    fn matmul(&self, a: &Self::Buffer, b: &Self::Buffer, dims: MatmulDims) -> Result<Self::Buffer> {
        self.0.matmul(a, b, dims)
    }
    fn conv2d(
        &self,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        dims: Conv2dDims,
        epilogue: Epilogue,
    ) -> Result<Self::Buffer> {
        self.0.conv2d(x, w, bias, dims, epilogue)
    }
    fn conv2d_backward_input(
        &self,
        dy: &Self::Buffer,
        w: &Self::Buffer,
        dims: Conv2dDims,
    ) -> Result<Self::Buffer> {
        self.0.conv2d_backward_input(dy, w, dims)
    }
    fn conv2d_backward_weight(
        &self,
        x: &Self::Buffer,
        dy: &Self::Buffer,
        dims: Conv2dDims,
    ) -> Result<Self::Buffer> {
        self.0.conv2d_backward_weight(x, dy, dims)
    }
    fn permute(&self, x: &Self::Buffer, shape: &[usize], perm: &[usize]) -> Result<Self::Buffer> {
        self.0.permute(x, shape, perm)
    }
    fn slice(
        &self,
        x: &Self::Buffer,
        shape: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<Self::Buffer> {
        self.0.slice(x, shape, axis, start, len)
    }
    fn concat(&self, parts: &[(&Self::Buffer, &[usize])], axis: usize) -> Result<Self::Buffer> {
        self.0.concat(parts, axis)
    }
    fn gather(
        &self,
        x: &Self::Buffer,
        shape: &[usize],
        axis: usize,
        indices: &[usize],
    ) -> Result<Self::Buffer> {
        self.0.gather(x, shape, axis, indices)
    }
    fn random(&self, len: usize, dist: Distribution, seed: u64) -> Result<Self::Buffer> {
        self.0.random(len, dist, seed)
    }
    fn adam_update(
        &self,
        param: &Self::Buffer,
        grad: &Self::Buffer,
        m: &Self::Buffer,
        v: &Self::Buffer,
        len: usize,
        update: &AdamUpdate,
    ) -> Result<()> {
        self.0.adam_update(param, grad, m, v, len, update)
    }
}

/// The compositions alone: no method is overridden.
impl<B: Backend> Fused for CoreOnly<B> {}

/// `ln 2π`.
const LN_2PI: f32 = 1.837_877_1;

/// The fused ops of a device: each default method is the composition of core primitives
/// that defines it; a device overrides it with a kernel.
pub trait Fused: Backend {
    /// Glow's affine coupling, fused (see `ops/fused.rs`): with `shift = h[2i]` and
    /// `t = h[2i + 1] + 2` (interleaved pairing), `yb = (xb + shift) · σ(t)` `[n, c, p]`
    /// and `logdet[b] = Σ log σ(t)` `[n]`.
    fn affine_coupling(
        &self,
        xb: &Self::Buffer,
        h: &Self::Buffer,
        dims: PairedDims,
    ) -> Result<(Self::Buffer, Self::Buffer)> {
        let parts = AffineParts::new(self, xb, h, dims)?;
        let shape = dims.shape();
        let yb = self.binary(
            BinaryOp::Mul,
            &parts.moved,
            &shape,
            &parts.s,
            &shape,
            &shape,
        )?;
        // log σ(t) = −softplus(−t), without overflow for large |t|.
        let len = dims.len();
        let neg_t = self.unary(UnaryOp::Neg, &parts.t, len)?;
        let log_s = self.unary(
            UnaryOp::Scale(-1.0),
            &self.unary(UnaryOp::Softplus, &neg_t, len)?,
            len,
        )?;
        let logdet = self.reduce(ReduceOp::Sum, &log_s, &shape, &[1, 2])?;
        Ok((yb, logdet))
    }
    /// The gradients of [`Fused::affine_coupling`] from `dyb` and/or `dlogdet` (an
    /// absent one counts as zero): `dxb` (only with `dyb`) and `dh`.
    fn affine_coupling_backward(
        &self,
        dyb: Option<&Self::Buffer>,
        dlogdet: Option<&Self::Buffer>,
        xb: &Self::Buffer,
        h: &Self::Buffer,
        dims: PairedDims,
    ) -> Result<(Option<Self::Buffer>, Self::Buffer)> {
        let parts = AffineParts::new(self, xb, h, dims)?;
        let (shape, len) = (dims.shape(), dims.len());
        let mul = |a: &Self::Buffer, b: &Self::Buffer, b_shape: &[usize]| {
            self.binary(BinaryOp::Mul, a, &shape, b, b_shape, &shape)
        };
        let add = |a: &Self::Buffer, b: &Self::Buffer| {
            self.binary(BinaryOp::Add, a, &shape, b, &shape, &shape)
        };
        // 1 − σ(t)
        let one_minus_s = self.unary(
            UnaryOp::AddScalar(1.0),
            &self.unary(UnaryOp::Neg, &parts.s, len)?,
            len,
        )?;
        let (dxb, dshift, mut dt) = match dyb {
            Some(dyb) => {
                let dys = mul(dyb, &parts.s, &shape)?;
                let dt = mul(&mul(&dys, &parts.moved, &shape)?, &one_minus_s, &shape)?;
                (Some(dys.clone()), dys, Some(dt))
            }
            None => (None, self.full(len, 0.0)?, None),
        };
        if let Some(dl) = dlogdet {
            let per_image = mul(&one_minus_s, dl, &[dims.n, 1, 1])?;
            dt = Some(match dt {
                Some(dt) => add(&dt, &per_image)?,
                None => per_image,
            });
        }
        let dt = match dt {
            Some(dt) => dt,
            None => self.full(len, 0.0)?,
        };
        let dh = join(self, &dshift, &dt, dims, Pairing::Interleaved)?;
        Ok((dxb, dh))
    }
    /// `lp[b] = Σ_{i,q} −½(ln 2π + 2·logs + (z − mean)² · e^(−2·logs))` `[n]`, with
    /// `(mean, logs)` the channels of `h` paired with channel `i` of `z`.
    fn gaussian_log_prob(
        &self,
        z: &Self::Buffer,
        h: &Self::Buffer,
        dims: PairedDims,
        pairing: Pairing,
    ) -> Result<Self::Buffer> {
        let parts = GaussianParts::new(self, z, h, dims, pairing)?;
        let (shape, len) = (dims.shape(), dims.len());
        let u2 = self.unary(UnaryOp::Square, &parts.u, len)?;
        let two_logs = self.unary(UnaryOp::Scale(2.0), &parts.logs, len)?;
        let sum = self.binary(BinaryOp::Add, &two_logs, &shape, &u2, &shape, &shape)?;
        let term = self.unary(
            UnaryOp::Scale(-0.5),
            &self.unary(UnaryOp::AddScalar(LN_2PI), &sum, len)?,
            len,
        )?;
        self.reduce(ReduceOp::Sum, &term, &shape, &[1, 2])
    }
    /// Relu's VJP and the bias gradient beneath it, for the output gradient `dy` and
    /// relu's output `y` `[n, c, h, w]`: `dz = dy · [y > 0]` and `db[i] = Σ dz[·, i, ·, ·]`
    /// `[c]`, the sum over images and pixels. What the backward pass of a convolution
    /// with bias and relu needs before its two gradient convolutions.
    fn relu_grad_bias(
        &self,
        dy: &Self::Buffer,
        y: &Self::Buffer,
        shape: [usize; 4],
    ) -> Result<(Self::Buffer, Self::Buffer)> {
        let dz = self.binary(BinaryOp::ReluGrad, dy, &shape, y, &shape, &shape)?;
        let db = self.reduce(ReduceOp::Sum, &dz, &shape, &[0, 2, 3])?;
        Ok((dz, db))
    }
    /// The gradients `(dz, dh)` of [`Fused::gaussian_log_prob`] from `dlp` `[n]`.
    fn gaussian_log_prob_backward(
        &self,
        dlp: &Self::Buffer,
        z: &Self::Buffer,
        h: &Self::Buffer,
        dims: PairedDims,
        pairing: Pairing,
    ) -> Result<(Self::Buffer, Self::Buffer)> {
        let parts = GaussianParts::new(self, z, h, dims, pairing)?;
        let (shape, len) = (dims.shape(), dims.len());
        let per_image = [dims.n, 1, 1];
        // dmean = dlp · u · e^(−logs), dz = −dmean, dlogs = dlp · (u² − 1).
        let u_inv = self.binary(BinaryOp::Mul, &parts.u, &shape, &parts.inv, &shape, &shape)?;
        let dmean = self.binary(BinaryOp::Mul, &u_inv, &shape, dlp, &per_image, &shape)?;
        let dz = self.unary(UnaryOp::Neg, &dmean, len)?;
        let u2_1 = self.unary(
            UnaryOp::AddScalar(-1.0),
            &self.unary(UnaryOp::Square, &parts.u, len)?,
            len,
        )?;
        let dlogs = self.binary(BinaryOp::Mul, &u2_1, &shape, dlp, &per_image, &shape)?;
        Ok((dz, join(self, &dmean, &dlogs, dims, pairing)?))
    }
}

impl PairedDims {
    /// `[n, c, p]`, the shape of the unpaired operands.
    fn shape(self) -> [usize; 3] {
        [self.n, self.c, self.p]
    }

    /// Elements of an unpaired operand.
    fn len(self) -> usize {
        self.n * self.c * self.p
    }
}

/// The two `[n, c, p]` halves of `h` `[n, 2c, p]` paired as `pairing` says.
fn split<B: Backend + ?Sized>(
    b: &B,
    h: &B::Buffer,
    dims: PairedDims,
    pairing: Pairing,
) -> Result<(B::Buffer, B::Buffer)> {
    let (n, c, p) = (dims.n, dims.c, dims.p);
    match pairing {
        // Channel 2i + k is [n, c, 2, p]'s index (i, k).
        Pairing::Interleaved => Ok((
            b.slice(h, &[n, c, 2, p], 2, 0, 1)?,
            b.slice(h, &[n, c, 2, p], 2, 1, 1)?,
        )),
        Pairing::Halves => Ok((
            b.slice(h, &[n, 2 * c, p], 1, 0, c)?,
            b.slice(h, &[n, 2 * c, p], 1, c, c)?,
        )),
    }
}

/// The inverse of [`split`]: `[n, 2c, p]` from the two `[n, c, p]` halves.
fn join<B: Backend + ?Sized>(
    b: &B,
    first: &B::Buffer,
    second: &B::Buffer,
    dims: PairedDims,
    pairing: Pairing,
) -> Result<B::Buffer> {
    let (n, c, p) = (dims.n, dims.c, dims.p);
    match pairing {
        Pairing::Interleaved => {
            let part = [n, c, 1, p];
            b.concat(&[(first, &part[..]), (second, &part[..])], 2)
        }
        Pairing::Halves => {
            let part = [n, c, p];
            b.concat(&[(first, &part[..]), (second, &part[..])], 1)
        }
    }
}

/// What the affine coupling's forward and backward both need: `shift` and `t` from `h`,
/// `s = σ(t)` and `xb + shift`.
struct AffineParts<Buf> {
    t: Buf,
    s: Buf,
    moved: Buf,
}

impl<Buf> AffineParts<Buf> {
    fn new<B: Backend<Buffer = Buf> + ?Sized>(
        b: &B,
        xb: &Buf,
        h: &Buf,
        dims: PairedDims,
    ) -> Result<Self> {
        let (shape, len) = (dims.shape(), dims.len());
        let (shift, raw_t) = split(b, h, dims, Pairing::Interleaved)?;
        let t = b.unary(UnaryOp::AddScalar(2.0), &raw_t, len)?;
        let s = b.unary(UnaryOp::Sigmoid, &t, len)?;
        let moved = b.binary(BinaryOp::Add, xb, &shape, &shift, &shape, &shape)?;
        Ok(AffineParts { t, s, moved })
    }
}

/// What the Gaussian log-density's forward and backward both need: `logs`,
/// `inv = e^(−logs)` and `u = (z − mean) · inv`.
struct GaussianParts<Buf> {
    logs: Buf,
    inv: Buf,
    u: Buf,
}

impl<Buf> GaussianParts<Buf> {
    fn new<B: Backend<Buffer = Buf> + ?Sized>(
        b: &B,
        z: &Buf,
        h: &Buf,
        dims: PairedDims,
        pairing: Pairing,
    ) -> Result<Self> {
        let (shape, len) = (dims.shape(), dims.len());
        let (mean, logs) = split(b, h, dims, pairing)?;
        let inv = b.unary(UnaryOp::Exp, &b.unary(UnaryOp::Neg, &logs, len)?, len)?;
        let diff = b.binary(BinaryOp::Sub, z, &shape, &mean, &shape, &shape)?;
        let u = b.binary(BinaryOp::Mul, &diff, &shape, &inv, &shape, &shape)?;
        Ok(GaussianParts { logs, inv, u })
    }
}
