//! The CPU device: every [`Backend`] primitive on host memory.
//!
//! Each concern lives in its own file and works on plain slices, so a reader can follow
//! one kernel without the locking around it:
//! - `elementwise.rs`: unary maps and broadcasting binary ops;
//! - `reduce.rs`: sum and max over any set of axes;
//! - `matmul.rs`: a safe wrapper over `matrixmultiply::sgemm` and the batched product;
//! - `conv.rs`: convolution and its two backward ops as direct convolutions, with their
//!   inner loops (portable, AVX2 and AVX-512) in `conv_kernels.rs`; `bf16.rs`: the same three as
//!   bfloat16 matrix products, inside `crate::precision::reduced` code when the process
//!   asks for bf16;
//! - `layout.rs`: permute, slice, concat and gather;
//! - `fused.rs`: Glow's fused affine coupling and Gaussian log-density, with
//!   `fastmath.rs`'s vectorisable `exp` and `ln`;
//! - `random.rs`: counter-based random fills; `adam.rs`: the fused optimiser step;
//! - `strided.rs`: the dimension-collapsing odometer shared by the strided kernels.
//!
//! This file holds the buffer type, the locking rules and the `Backend` impl that ties
//! them together. Threading: one pool, rayon's, for everything: big elementwise and copy
//! loops (see [`par_fill`]), convolutions (by image or by weight panel) and GEMMs (by
//! product or by block of rows; matrixmultiply itself is single-threaded).

mod adam;
mod bf16;
mod conv;
mod conv_kernels;
mod elementwise;
mod fastmath;
mod fused;
mod layout;
mod matmul;
mod pool;
mod random;
mod reduce;
mod strided;
#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock, RwLockReadGuard};

use rayon::prelude::*;

use crate::backend::fused::*;
use crate::backend::*;
use crate::{Error, Result};

/// The CPU backend (stateless; its threads are rayon's pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

/// A CPU buffer: a shared, lockable `Vec<f32>`. The lock exists only for the optimiser's
/// in-place update; every other op reads.
#[derive(Clone, Debug)]
pub struct CpuBuffer(pub(crate) Arc<RwLock<pool::Block>>);

impl CpuBuffer {
    /// Wraps a freshly computed vector.
    fn from_vec(data: Vec<f32>) -> Self {
        CpuBuffer(Arc::new(RwLock::new(pool::Block::new(data))))
    }

    /// Whether `self` and `other` are the same allocation (clones share memory).
    fn same_as(&self, other: &CpuBuffer) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Arrays shorter than this run on the calling thread: below it, handing work to rayon
/// costs more than the loop itself.
pub(crate) const PAR_THRESHOLD: usize = 32 * 1024;

/// Whether this CPU runs the AVX2/FMA kernels (checked once; `ENGINE_CPU_PORTABLE=1`
/// turns them off, to run and test the portable ones).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::env::var_os("ENGINE_CPU_PORTABLE").is_none()
    })
}

/// Whether the CPU has AVX-512F (and AVX2, so the kernels' other paths are there too),
/// unless `ENGINE_CPU_PORTABLE` or `ENGINE_CPU_NO_AVX512` is set (the latter keeps the
/// AVX2 kernels, for comparing the two).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::env::var_os("ENGINE_CPU_NO_AVX512").is_none()
    })
}

/// Elements per rayon task in [`par_fill`]: big enough to amortise scheduling, small
/// enough to balance two to a few dozen cores.
pub(crate) const PAR_CHUNK: usize = 16 * 1024;

/// Fills `out` by calling `f(offset, chunk)` on consecutive chunks, where `offset` is the
/// index of `chunk[0]` in `out`. Chunk lengths are multiples of `align` (so a kernel can
/// work in whole rows); chunks run in parallel when `out` is at least [`PAR_THRESHOLD`].
pub(crate) fn par_fill<F>(out: &mut [f32], align: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let align = align.max(1);
    if out.len() < PAR_THRESHOLD || out.len() <= align {
        f(0, out);
        return;
    }
    let chunk = (PAR_CHUNK / align).max(1) * align;
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| f(i * chunk, c));
}

/// Calls `f(i, chunk)` on each chunk `i` of `per` elements of `out` (the last may be
/// shorter): as rayon tasks when `parallel`, else in order on this thread. A chunk is
/// always one call, so what it computes does not depend on the thread count.
pub(crate) fn for_each_chunk<T: Send>(
    out: &mut [T],
    per: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let per = per.max(1);
    if parallel {
        out.par_chunks_mut(per)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(per).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// [`Backend::conv2d`], with the relu epilogue when `relu`.
fn conv_forward(
    x: &CpuBuffer,
    w: &CpuBuffer,
    bias: Option<&CpuBuffer>,
    dims: Conv2dDims,
    relu: bool,
) -> Result<CpuBuffer> {
    let mut bufs = vec![x, w];
    bufs.extend(bias);
    // Decided here, on the op's thread: the kernels run on rayon's.
    let bf16 = bf16::pays(dims, bf16::Pass::Forward) && crate::precision::use_bf16();
    with_reads(&bufs, |s| {
        let y = if bf16 {
            bf16::forward(s[0], s[1], s.get(2).copied(), dims, relu)
        } else {
            conv::forward(s[0], s[1], s.get(2).copied(), dims, relu)
        };
        Ok(CpuBuffer::from_vec(y))
    })
}

/// Takes a read lock, turning a poisoned lock (a panic during an in-place update) into
/// a device error instead of a panic here.
fn read(b: &CpuBuffer) -> Result<RwLockReadGuard<'_, pool::Block>> {
    b.0.read()
        .map_err(|_| Error::Device("cpu buffer lock poisoned by an earlier panic".into()))
}

/// Runs `f` on the contents of `bufs`, holding one read guard per distinct allocation.
///
/// Inputs may alias (`binary(a, a)`); taking a second read guard on a lock this thread
/// already holds can deadlock when a writer is queued, so an aliased buffer reuses the
/// first guard's slice.
fn with_reads<R>(bufs: &[&CpuBuffer], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let mut guards = Vec::with_capacity(bufs.len());
    let mut which = Vec::with_capacity(bufs.len());
    for (i, b) in bufs.iter().enumerate() {
        match bufs[..i].iter().position(|p| p.same_as(b)) {
            Some(j) => which.push(which[j]),
            None => {
                which.push(guards.len());
                guards.push(read(b)?);
            }
        }
    }
    let slices: Vec<&[f32]> = which.iter().map(|&g| guards[g].as_slice()).collect();
    f(&slices)
}

/// Row-major strides of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn from_host(&self, data: &[f32]) -> Result<CpuBuffer> {
        let mut v = pool::take(data.len());
        v.copy_from_slice(data);
        Ok(CpuBuffer::from_vec(v))
    }

    fn to_host(&self, x: &CpuBuffer) -> Result<Vec<f32>> {
        Ok(read(x)?.to_vec())
    }

    fn full(&self, len: usize, value: f32) -> Result<CpuBuffer> {
        let mut v = pool::take(len);
        v.fill(value);
        Ok(CpuBuffer::from_vec(v))
    }

    fn unary(&self, op: UnaryOp, x: &CpuBuffer, len: usize) -> Result<CpuBuffer> {
        let x = read(x)?;
        Ok(CpuBuffer::from_vec(elementwise::unary(op, &x[..len])))
    }

    fn binary(
        &self,
        op: BinaryOp,
        a: &CpuBuffer,
        a_shape: &[usize],
        b: &CpuBuffer,
        b_shape: &[usize],
        out_shape: &[usize],
    ) -> Result<CpuBuffer> {
        with_reads(&[a, b], |s| {
            let y = elementwise::binary(op, s[0], a_shape, s[1], b_shape, out_shape);
            Ok(CpuBuffer::from_vec(y))
        })
    }

    fn reduce(
        &self,
        op: ReduceOp,
        x: &CpuBuffer,
        shape: &[usize],
        axes: &[usize],
    ) -> Result<CpuBuffer> {
        let x = read(x)?;
        Ok(CpuBuffer::from_vec(reduce::reduce(op, &x, shape, axes)))
    }

    fn matmul(&self, a: &CpuBuffer, b: &CpuBuffer, dims: MatmulDims) -> Result<CpuBuffer> {
        with_reads(&[a, b], |s| {
            Ok(CpuBuffer::from_vec(matmul::batched(s[0], s[1], dims)))
        })
    }

    fn conv2d(
        &self,
        x: &CpuBuffer,
        w: &CpuBuffer,
        bias: Option<&CpuBuffer>,
        dims: Conv2dDims,
        epilogue: Epilogue,
    ) -> Result<CpuBuffer> {
        let relu = match epilogue {
            Epilogue::None => false,
            Epilogue::Relu => true,
        };
        conv_forward(x, w, bias, dims, relu)
    }

    fn conv2d_backward_input(
        &self,
        dy: &CpuBuffer,
        w: &CpuBuffer,
        dims: Conv2dDims,
    ) -> Result<CpuBuffer> {
        let bf16 = bf16::pays(dims, bf16::Pass::Input) && crate::precision::use_bf16();
        with_reads(&[dy, w], |s| {
            Ok(CpuBuffer::from_vec(if bf16 {
                bf16::backward_input(s[0], s[1], dims)
            } else {
                conv::backward_input(s[0], s[1], dims)
            }))
        })
    }

    fn conv2d_backward_weight(
        &self,
        x: &CpuBuffer,
        dy: &CpuBuffer,
        dims: Conv2dDims,
    ) -> Result<CpuBuffer> {
        let bf16 = bf16::pays(dims, bf16::Pass::Weight) && crate::precision::use_bf16();
        with_reads(&[x, dy], |s| {
            Ok(CpuBuffer::from_vec(if bf16 {
                bf16::backward_weight(s[0], s[1], dims)
            } else {
                conv::backward_weight(s[0], s[1], dims)
            }))
        })
    }

    fn permute(&self, x: &CpuBuffer, shape: &[usize], perm: &[usize]) -> Result<CpuBuffer> {
        let x = read(x)?;
        Ok(CpuBuffer::from_vec(layout::permute(&x, shape, perm)))
    }

    fn slice(
        &self,
        x: &CpuBuffer,
        shape: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<CpuBuffer> {
        let x = read(x)?;
        Ok(CpuBuffer::from_vec(layout::slice(
            &x, shape, axis, start, len,
        )))
    }

    fn concat(&self, parts: &[(&CpuBuffer, &[usize])], axis: usize) -> Result<CpuBuffer> {
        let bufs: Vec<&CpuBuffer> = parts.iter().map(|p| p.0).collect();
        with_reads(&bufs, |s| {
            let parts: Vec<(&[f32], &[usize])> =
                s.iter().zip(parts).map(|(d, p)| (*d, p.1)).collect();
            Ok(CpuBuffer::from_vec(layout::concat(&parts, axis)))
        })
    }

    fn gather(
        &self,
        x: &CpuBuffer,
        shape: &[usize],
        axis: usize,
        indices: &[usize],
    ) -> Result<CpuBuffer> {
        let x = read(x)?;
        Ok(CpuBuffer::from_vec(layout::gather(
            &x, shape, axis, indices,
        )))
    }

    fn random(&self, len: usize, dist: Distribution, seed: u64) -> Result<CpuBuffer> {
        Ok(CpuBuffer::from_vec(random::fill(len, dist, seed)))
    }

    fn adam_update(
        &self,
        param: &CpuBuffer,
        grad: &CpuBuffer,
        m: &CpuBuffer,
        v: &CpuBuffer,
        len: usize,
        update: &AdamUpdate,
    ) -> Result<()> {
        adam::update(param, grad, m, v, len, update)
    }
}

impl Fused for CpuBackend {
    fn affine_coupling(
        &self,
        xb: &CpuBuffer,
        h: &CpuBuffer,
        dims: PairedDims,
    ) -> Result<(CpuBuffer, CpuBuffer)> {
        with_reads(&[xb, h], |s| {
            let (yb, ld) = fused::affine_coupling(s[0], s[1], dims);
            Ok((CpuBuffer::from_vec(yb), CpuBuffer::from_vec(ld)))
        })
    }

    fn affine_coupling_backward(
        &self,
        dyb: Option<&CpuBuffer>,
        dlogdet: Option<&CpuBuffer>,
        xb: &CpuBuffer,
        h: &CpuBuffer,
        dims: PairedDims,
    ) -> Result<(Option<CpuBuffer>, CpuBuffer)> {
        let mut bufs = vec![xb, h];
        bufs.extend(dyb);
        bufs.extend(dlogdet);
        with_reads(&bufs, |s| {
            let dy = dyb.map(|_| s[2]);
            let dld = dlogdet.map(|_| s[2 + dyb.is_some() as usize]);
            let (dx, dh) = fused::affine_coupling_backward(dy, dld, s[0], s[1], dims);
            Ok((dx.map(CpuBuffer::from_vec), CpuBuffer::from_vec(dh)))
        })
    }

    fn gaussian_log_prob(
        &self,
        z: &CpuBuffer,
        h: &CpuBuffer,
        dims: PairedDims,
        pairing: Pairing,
    ) -> Result<CpuBuffer> {
        with_reads(&[z, h], |s| {
            Ok(CpuBuffer::from_vec(fused::gaussian_log_prob(
                s[0], s[1], dims, pairing,
            )))
        })
    }

    fn gaussian_log_prob_backward(
        &self,
        dlp: &CpuBuffer,
        z: &CpuBuffer,
        h: &CpuBuffer,
        dims: PairedDims,
        pairing: Pairing,
    ) -> Result<(CpuBuffer, CpuBuffer)> {
        with_reads(&[dlp, z, h], |s| {
            let (dz, dh) = fused::gaussian_log_prob_backward(s[0], s[1], s[2], dims, pairing);
            Ok((CpuBuffer::from_vec(dz), CpuBuffer::from_vec(dh)))
        })
    }

    fn relu_grad_bias(
        &self,
        dy: &CpuBuffer,
        y: &CpuBuffer,
        shape: [usize; 4],
    ) -> Result<(CpuBuffer, CpuBuffer)> {
        with_reads(&[dy, y], |s| {
            let (dz, db) = fused::relu_grad_bias(s[0], s[1], shape);
            Ok((CpuBuffer::from_vec(dz), CpuBuffer::from_vec(db)))
        })
    }
}
