//! The small set of primitives every device provides.
//!
//! Everything the engine computes, forward and backward, is built from the methods of
//! [`Backend`]: elementwise maps, broadcasting binary ops, reductions, batched matmul,
//! convolution and its two backward ops, layout copies (permute, slice, concat, gather),
//! random fills and the fused optimiser update. Composite ops (softmax, losses, Glow's
//! layers) live above this line and never talk to a device directly; derivatives live in
//! [`crate::ops`], so a backend knows nothing about gradients. The fused ops that exist
//! for speed (Glow's affine coupling and Gaussian log-density) are an extension,
//! [`fused::Fused`], whose default methods compose them from these primitives.
//!
//! Backends trust their arguments: shapes have already been checked by the tensor layer
//! (`crate::ops`), which is where user-facing errors are produced. A backend returns
//! `Err` only for device failures (out of memory, a lost device).
//!
//! Every buffer is dense, row-major `f32`. Shapes are passed as slices of extents; a
//! buffer's length is the product of its shape.
//!
//! NaN and infinities follow IEEE arithmetic and PyTorch on every device: any op with a
//! NaN operand gives NaN, `relu`, `max` and `maximum` included (the reference device,
//! `reference/`, defines each case; `engine/tests/nan.rs` checks every device against it).

use crate::Result;

pub mod fused;

/// An elementwise map `y = f(x)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// `ln x`
    Log,
    /// `1 / (1 + e^-x)`, computed without overflow for large `|x|`.
    Sigmoid,
    /// `ln(1 + e^x)`, computed without overflow for large `|x|`.
    Softplus,
    /// `max(x, 0)`; NaN stays NaN.
    Relu,
    /// The Heaviside step: `1` where `x > 0`, else `0` (the derivative of relu; not
    /// itself differentiated). `NaN > 0` is false, so `heaviside(NaN) = 0`, as PyTorch's
    /// `(x > 0).float()`.
    Heaviside,
    /// `√x`
    Sqrt,
    /// `1 / x`
    Recip,
    /// `x²`
    Square,
    /// `|x|`
    Abs,
    /// `tanh x`
    Tanh,
    /// `x · s`
    Scale(f32),
    /// `x + s`
    AddScalar(f32),
    /// `x^p`
    Powf(f32),
    /// `x` where `x > 0`, else `s · x` (leaky relu with negative slope `s`).
    LeakyRelu(f32),
}

/// A binary op on two tensors with NumPy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`, NaN if either is NaN (`torch.maximum`); not differentiated, used
    /// for numerically stable reductions.
    Max,
    /// `a · [b > 0]`: relu's VJP, the output gradient `a` kept where the input `b` is
    /// positive, in one pass instead of `heaviside` then `mul` (in config S of
    /// `benches/train_step` those two passes were 4.4% of the step's op time). It is a
    /// product, not a select, so a NaN in `a` still propagates.
    ReluGrad,
}

/// A reduction over chosen axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum of the elements.
    Sum,
    /// Largest element, NaN if any element is NaN; not differentiated (used to
    /// stabilise log-sum-exp).
    Max,
}

/// The distribution of a random fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Uniform on `[low, high)`.
    Uniform {
        /// Inclusive lower bound.
        low: f32,
        /// Exclusive upper bound.
        high: f32,
    },
    /// Gaussian with the given mean and standard deviation.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
}

/// Shape of a batched matrix product `C[b] = op(A[b]) · op(B[b])`.
///
/// `C[b]` is `[m, n]`. With `trans_a` false `A[b]` is stored `[m, k]`, with it true
/// `[k, m]` (and likewise `B[b]` is `[k, n]` or `[n, k]`). An operand that is not
/// batched is one matrix shared by every batch entry (its batch stride is zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulDims {
    /// Number of products.
    pub batch: usize,
    /// Rows of the output.
    pub m: usize,
    /// The contracted extent.
    pub k: usize,
    /// Columns of the output.
    pub n: usize,
    /// `A` holds `batch` matrices (else one, broadcast).
    pub a_batched: bool,
    /// `B` holds `batch` matrices (else one, broadcast).
    pub b_batched: bool,
    /// `A` is stored transposed.
    pub trans_a: bool,
    /// `B` is stored transposed.
    pub trans_b: bool,
}

/// Shape of a stride-1, zero-"same"-padded 2-D convolution in NCHW layout.
///
/// Input `[n, c_in, h, w]`, weight `[c_out, c_in, kh, kw]` (PyTorch's layout), output
/// `[n, c_out, h, w]`. Kernel extents are odd; padding is `kh / 2` and `kw / 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dDims {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Height of input and output.
    pub h: usize,
    /// Width of input and output.
    pub w: usize,
    /// Kernel height (odd).
    pub kh: usize,
    /// Kernel width (odd).
    pub kw: usize,
}

impl Conv2dDims {
    /// Elements in the input `[n, c_in, h, w]`.
    pub fn input_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// Elements in the output `[n, c_out, h, w]`.
    pub fn output_len(&self) -> usize {
        self.n * self.c_out * self.h * self.w
    }
    /// Elements in the weight `[c_out, c_in, kh, kw]`.
    pub fn weight_len(&self) -> usize {
        self.c_out * self.c_in * self.kh * self.kw
    }
    /// Multiply-adds of the forward pass (each backward op costs the same).
    pub fn macs(&self) -> usize {
        self.output_len() * self.c_in * self.kh * self.kw
    }
}

/// What a convolution does to its output as it stores it: one pass instead of a second
/// op over the output (see `Tensor::conv2d_relu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// The output as it is.
    None,
    /// `relu` of each output value.
    Relu,
}

/// Which adaptive optimiser a fused update applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdamKind {
    /// Adam (Kingma & Ba 2015, Algorithm 1), bias-corrected first and second moments.
    Adam,
    /// Adamax (Kingma & Ba 2015, Algorithm 2): infinity-norm second moment.
    Adamax,
}

/// Hyper-parameters of one fused Adam/Adamax step, as PyTorch defines them.
///
/// With `g = grad + weight_decay · p` (L2 penalty, as in `torch.optim.Adam`):
/// - Adam: `m = β1 m + (1-β1) g`, `v = β2 v + (1-β2) g²`,
///   `p -= lr · (m / (1-β1^t)) / (√(v / (1-β2^t)) + eps)`.
/// - Adamax: `m = β1 m + (1-β1) g`, `v = max(β2 v, |g| + eps)`,
///   `p -= lr / (1-β1^t) · m / v`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamUpdate {
    /// Adam or Adamax.
    pub kind: AdamKind,
    /// Learning rate for this step (after any schedule).
    pub lr: f32,
    /// First-moment decay β1.
    pub beta1: f32,
    /// Second-moment decay β2.
    pub beta2: f32,
    /// Denominator guard.
    pub eps: f32,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
    /// The 1-based step number `t`, for bias correction.
    pub step: u32,
}

/// Refuses an [`Backend::adam_update`] whose `[param, grad, m, v]` are not four distinct
/// buffers: the update writes three of them in place while reading the others, so an
/// alias would be a data race or a lock waiting on itself. `same` says whether two of
/// the device's buffers share memory.
pub fn distinct_adam_buffers<T>(bufs: [&T; 4], same: impl Fn(&T, &T) -> bool) -> Result<()> {
    let names = ["param", "grad", "m", "v"];
    for i in 0..4 {
        for j in 0..i {
            if same(bufs[i], bufs[j]) {
                let msg = format!("{} and {} are the same buffer", names[j], names[i]);
                return Err(crate::Error::invalid("adam_update", msg));
            }
        }
    }
    Ok(())
}

/// The primitives of one device. See the module documentation.
///
/// `Buffer` is the device's handle to a dense `f32` array; it is cheap to clone and
/// clones share memory. Inputs are never modified except by [`Backend::adam_update`].
pub trait Backend {
    /// The device's array handle.
    type Buffer: Clone;

    /// A human-readable description, e.g. `"cpu"` or `"vulkan:0 (llvmpipe)"`.
    fn name(&self) -> String;

    /// Copies host data into a new buffer.
    #[allow(clippy::wrong_self_convention)] // a method of the device, not a constructor
    fn from_host(&self, data: &[f32]) -> Result<Self::Buffer>;
    /// Copies a buffer back to the host, waiting for pending work that writes it.
    fn to_host(&self, x: &Self::Buffer) -> Result<Vec<f32>>;
    /// A new buffer of `len` copies of `value`.
    fn full(&self, len: usize, value: f32) -> Result<Self::Buffer>;

    /// `y[i] = op(x[i])` over `len` elements.
    fn unary(&self, op: UnaryOp, x: &Self::Buffer, len: usize) -> Result<Self::Buffer>;
    /// `y = op(a, b)` with NumPy broadcasting. All three shapes have the same rank;
    /// each input extent equals the output's or is 1.
    fn binary(
        &self,
        op: BinaryOp,
        a: &Self::Buffer,
        a_shape: &[usize],
        b: &Self::Buffer,
        b_shape: &[usize],
        out_shape: &[usize],
    ) -> Result<Self::Buffer>;
    /// Reduces `x` of `shape` over `axes` (sorted, unique); the output has the same
    /// rank with those extents set to 1.
    fn reduce(
        &self,
        op: ReduceOp,
        x: &Self::Buffer,
        shape: &[usize],
        axes: &[usize],
    ) -> Result<Self::Buffer>;
    /// Batched matrix product, see [`MatmulDims`]. Output `[batch, m, n]`.
    fn matmul(&self, a: &Self::Buffer, b: &Self::Buffer, dims: MatmulDims) -> Result<Self::Buffer>;

    /// Convolution `y = epilogue(conv(x, w) + bias)`, see [`Conv2dDims`] and
    /// [`Epilogue`].
    fn conv2d(
        &self,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        dims: Conv2dDims,
        epilogue: Epilogue,
    ) -> Result<Self::Buffer>;
    /// Gradient of the convolution with respect to its input: `dx [n, c_in, h, w]` from
    /// `dy [n, c_out, h, w]` and `w`.
    fn conv2d_backward_input(
        &self,
        dy: &Self::Buffer,
        w: &Self::Buffer,
        dims: Conv2dDims,
    ) -> Result<Self::Buffer>;
    /// Gradient of the convolution with respect to its weight: `dw [c_out, c_in, kh, kw]`
    /// from `x` and `dy`, summed over the batch.
    fn conv2d_backward_weight(
        &self,
        x: &Self::Buffer,
        dy: &Self::Buffer,
        dims: Conv2dDims,
    ) -> Result<Self::Buffer>;

    /// `y = x.permute(perm)`: output axis `i` is input axis `perm[i]`.
    fn permute(&self, x: &Self::Buffer, shape: &[usize], perm: &[usize]) -> Result<Self::Buffer>;
    /// The range `start..start + len` of `axis`.
    fn slice(
        &self,
        x: &Self::Buffer,
        shape: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<Self::Buffer>;
    /// Joins `parts` along `axis`; every other extent agrees.
    fn concat(&self, parts: &[(&Self::Buffer, &[usize])], axis: usize) -> Result<Self::Buffer>;
    /// `y` takes index `indices[j]` of `axis` as its index `j` (every index in range).
    fn gather(
        &self,
        x: &Self::Buffer,
        shape: &[usize],
        axis: usize,
        indices: &[usize],
    ) -> Result<Self::Buffer>;

    /// `len` draws from `dist`; element `i` depends only on `(seed, i)`, identically on
    /// every device (see [`crate::random`]).
    fn random(&self, len: usize, dist: Distribution, seed: u64) -> Result<Self::Buffer>;

    /// One fused optimiser step over `len` elements, updating `param`, `m` and `v` in
    /// place (see [`AdamUpdate`]).
    fn adam_update(
        &self,
        param: &Self::Buffer,
        grad: &Self::Buffer,
        m: &Self::Buffer,
        v: &Self::Buffer,
        len: usize,
        update: &AdamUpdate,
    ) -> Result<()>;
}
