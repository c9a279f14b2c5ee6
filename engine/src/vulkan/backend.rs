//! The [`Backend`] impl of [`VulkanDevice`]: each primitive turns its shapes into push
//! constants and launches one kernel (concat: one per part). No op falls back to the CPU.
//!
//! Layout ops, broadcasting and reductions all describe their operands as a shape plus
//! strides; [`coalesce`] (in `args.rs`) merges axes contiguous in every operand, so the
//! rank-6 limit of the kernels applies only to genuinely strided layouts.

use super::args::{coalesce, contiguous, grid, pad6, u32_of};
use super::pipelines::{self as k, Kernel};
use super::{VulkanBuffer, VulkanDevice};
use crate::backend::fused::*;
use crate::backend::*;
use crate::{Error, Result};

/// The workgroup edge `TILE` of `gemm_tile.glsl` (matmul and the three convolutions;
/// specialization constant 0) for a device: the largest of 16 and 8 whose `TILE²`
/// invocations fit the device's workgroup limit, are whole subgroups (a partial
/// subgroup idles lanes on every instruction), and whose shared slabs at the widest
/// blocking, `2 · TILE · 4·TILE` floats, fit its shared memory. 16 (256 invocations,
/// 8 KiB) suits every GPU we know; 8 is the fallback for devices with small limits or
/// subgroups wider than 64. Measured on lavapipe only (no GPU has run it yet), so
/// larger tiles are left out until a GPU profile says they pay.
pub(crate) fn gemm_tile(subgroup: u32, max_invocations: u32, shared_bytes: u32) -> u32 {
    [16u32, 8]
        .into_iter()
        .find(|&t| {
            t * t <= max_invocations
                && (t * t) % subgroup.max(1) == 0
                && 2 * t * 4 * t * 4 <= shared_bytes
        })
        .unwrap_or(8)
}
/// Longest reduction handled one-output-per-invocation (`reduce_small.comp`).
const SMALL_REDUCTION: usize = 64;
impl VulkanDevice {
    /// This device's `gemm_tile.glsl` workgroup edge (see [`gemm_tile`]).
    fn gemm_tile(&self) -> u32 {
        self.0.gemm_tile
    }

    /// [`Backend::conv2d`], with [`Epilogue::Relu`](crate::backend::Epilogue::Relu) when `relu` (a push-constant flag:
    /// `conv2d.comp` applies it as it stores).
    fn conv2d_with(
        &self,
        x: &VulkanBuffer,
        w: &VulkanBuffer,
        bias: Option<&VulkanBuffer>,
        dims: Conv2dDims,
        relu: bool,
    ) -> Result<VulkanBuffer> {
        let mut push = conv_push(&dims)?;
        push.push(bias.is_some() as u32 | (relu as u32) << 1);
        let y = self.alloc(dims.output_len())?;
        // Without a bias the binding still needs a buffer; the kernel never reads it.
        let bufs = [
            (x, false),
            (w, false),
            (bias.unwrap_or(w), false),
            (&y, true),
        ];
        if self.0.options.conv == super::ConvKernel::Naive {
            // One invocation per output element (the tour's starting point).
            self.launch(
                &k::CONV2D_NAIVE,
                &[],
                &bufs,
                &push,
                grid(dims.output_len(), 256)?,
            )?;
            return Ok(y);
        }
        let (spec, groups) =
            gemm_launch(self.gemm_tile(), dims.c_out, dims.n * dims.h * dims.w, 1)?;
        self.launch(&k::CONV2D, &spec, &bufs, &push, groups)?;
        Ok(y)
    }

    /// `dst[dst_off + idx.dst_strides] = src[src_off + idx.src_strides]` over `shape`.
    fn strided_copy(
        &self,
        src: &VulkanBuffer,
        dst: &VulkanBuffer,
        shape: &[usize],
        strides: [Vec<usize>; 2],
        offsets: [usize; 2],
    ) -> Result<()> {
        let len: usize = shape.iter().product();
        let (shape, strides) = coalesce(shape, &strides);
        let mut push = vec![
            u32_of(len, "copy")?,
            u32_of(offsets[0], "copy")?,
            u32_of(offsets[1], "copy")?,
        ];
        push.extend(pad6(&shape, 1, "copy")?);
        push.extend(pad6(&strides[0], 0, "copy")?);
        push.extend(pad6(&strides[1], 0, "copy")?);
        self.launch(
            &k::STRIDED_COPY,
            &[],
            &[(src, false), (dst, true)],
            &push,
            grid(len, 256)?,
        )
    }

    /// A one-element-per-invocation launch writing a new buffer of `len`.
    fn map_launch(
        &self,
        kernel: &Kernel,
        inputs: &[&VulkanBuffer],
        len: usize,
        push: &[u32],
    ) -> Result<VulkanBuffer> {
        let y = self.alloc(len)?;
        let mut bufs: Vec<_> = inputs.iter().map(|b| (*b, false)).collect();
        bufs.push((&y, true));
        self.launch(kernel, &[], &bufs, push, grid(len, 256)?)?;
        Ok(y)
    }
}

// `unary_code` and `binary_code`, generated from `shaders/opcodes.txt` (see
// `opcode_table.rs`), the one place the kernels' op codes are numbered.
include!(concat!(env!("OUT_DIR"), "/opcodes.rs"));

/// Push constants of the fused Glow kernels: `len = n·c·p`, `c`, `p`, then `extra`.
fn paired_push(op: &'static str, d: PairedDims, extra: &[u32]) -> Result<Vec<u32>> {
    u32_of(d.n * 2 * d.c * d.p, op)?; // the paired tensor's indices must fit as well
    let mut push = vec![u32_of(d.n * d.c * d.p, op)?];
    push.push(u32_of(d.c, op)?);
    push.push(u32_of(d.p, op)?);
    push.extend_from_slice(extra);
    Ok(push)
}

/// `(k, om, ol)` of `gaussian_log_prob*.comp`: channel `i`'s mean is at `i·k + om` and its
/// log-scale at `i·k + ol`.
fn pairing_push(pairing: Pairing, d: PairedDims) -> [u32; 3] {
    match pairing {
        Pairing::Interleaved => [2, 0, 1],
        Pairing::Halves => [1, 0, d.c as u32],
    }
}

fn conv_push(d: &Conv2dDims) -> Result<Vec<u32>> {
    [d.n, d.c_in, d.c_out, d.h, d.w, d.kh, d.kw]
        .iter()
        .map(|&v| u32_of(v, "conv2d"))
        .collect()
}

/// Specialization constants and grid of a `gemm_tile.glsl` kernel over an `m x n`
/// output, `batch` times, with workgroups `tile x tile`. Each invocation computes up to
/// 4 x 4 outputs; fewer along an extent below `4 · tile`, so e.g. 12 output channels are
/// not padded to a 64-row block.
fn gemm_launch(tile: u32, m: usize, n: usize, batch: usize) -> Result<([u32; 3], [u32; 3])> {
    let t = tile as usize;
    let per_invocation = |extent: usize| match extent {
        e if e < 2 * t => 1,
        e if e < 4 * t => 2,
        _ => 4,
    };
    let (wm, wn) = (per_invocation(m), per_invocation(n));
    let block = |w: u32| (tile * w) as usize;
    let groups = [n.div_ceil(block(wn)), m.div_ceil(block(wm)), batch];
    if groups.iter().any(|&g| g > 65535) {
        return Err(Error::Device(format!(
            "vulkan: a {batch} x {m} x {n} product exceeds the dispatch grid"
        )));
    }
    let groups = [groups[0] as u32, groups[1] as u32, groups[2] as u32];
    Ok(([tile, wm, wn], groups))
}

impl Backend for VulkanDevice {
    type Buffer = VulkanBuffer;

    fn name(&self) -> String {
        self.describe()
    }

    fn from_host(&self, data: &[f32]) -> Result<VulkanBuffer> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        self.upload(&bytes)
    }

    fn to_host(&self, x: &VulkanBuffer) -> Result<Vec<f32>> {
        self.download(x)
    }

    fn full(&self, len: usize, value: f32) -> Result<VulkanBuffer> {
        self.map_launch(&k::FILL, &[], len, &[u32_of(len, "full")?, value.to_bits()])
    }

    fn unary(&self, op: UnaryOp, x: &VulkanBuffer, len: usize) -> Result<VulkanBuffer> {
        let (code, s) = unary_code(op);
        self.map_launch(
            &k::UNARY,
            &[x],
            len,
            &[u32_of(len, "unary")?, code, s.to_bits()],
        )
    }

    fn binary(
        &self,
        op: BinaryOp,
        a: &VulkanBuffer,
        a_shape: &[usize],
        b: &VulkanBuffer,
        b_shape: &[usize],
        out_shape: &[usize],
    ) -> Result<VulkanBuffer> {
        // A broadcast axis (extent 1) gets stride 0 so every output index reads element 0.
        let bstrides = |shape: &[usize]| -> Vec<usize> {
            contiguous(shape)
                .into_iter()
                .zip(shape)
                .map(|(s, &e)| if e == 1 { 0 } else { s })
                .collect()
        };
        let len: usize = out_shape.iter().product();
        let (shape, strides) = coalesce(out_shape, &[bstrides(a_shape), bstrides(b_shape)]);
        let code = binary_code(op);
        let mut push = vec![u32_of(len, "binary")?, code];
        push.extend(pad6(&shape, 1, "binary")?);
        push.extend(pad6(&strides[0], 0, "binary")?);
        push.extend(pad6(&strides[1], 0, "binary")?);
        self.map_launch(&k::BINARY, &[a, b], len, &push)
    }

    fn reduce(
        &self,
        op: ReduceOp,
        x: &VulkanBuffer,
        shape: &[usize],
        axes: &[usize],
    ) -> Result<VulkanBuffer> {
        let strides = contiguous(shape);
        let split = |reduced: bool| -> (Vec<usize>, Vec<usize>) {
            let dims: Vec<usize> = (0..shape.len())
                .filter(|d| axes.contains(d) == reduced)
                .collect();
            let sh: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
            let st: Vec<usize> = dims.iter().map(|&d| strides[d]).collect();
            let (sh, st) = coalesce(&sh, &[st]);
            (sh, st.into_iter().next().unwrap_or_default())
        };
        let (kshape, kstride) = split(false);
        let (rshape, rstride) = split(true);
        let n_out: usize = kshape.iter().product();
        let n_red: usize = rshape.iter().product();
        let mut push = vec![
            u32_of(n_out, "reduce")?,
            u32_of(n_red, "reduce")?,
            matches!(op, ReduceOp::Max) as u32,
        ];
        push.extend(pad6(&kshape, 1, "reduce")?);
        push.extend(pad6(&kstride, 0, "reduce")?);
        push.extend(pad6(&rshape, 1, "reduce")?);
        push.extend(pad6(&rstride, 0, "reduce")?);
        let y = self.alloc(n_out)?;
        if n_red <= SMALL_REDUCTION {
            self.launch(
                &k::REDUCE_SMALL,
                &[],
                &[(x, false), (&y, true)],
                &push,
                grid(n_out, 256)?,
            )?;
        } else {
            self.launch(
                &k::REDUCE,
                &[],
                &[(x, false), (&y, true)],
                &push,
                grid(n_out, 1)?,
            )?;
        }
        Ok(y)
    }

    fn matmul(&self, a: &VulkanBuffer, b: &VulkanBuffer, d: MatmulDims) -> Result<VulkanBuffer> {
        let c = self.alloc(d.batch * d.m * d.n)?;
        let push = [
            u32_of(d.m, "matmul")?,
            u32_of(d.k, "matmul")?,
            u32_of(d.n, "matmul")?,
            u32_of(if d.a_batched { d.m * d.k } else { 0 }, "matmul")?,
            u32_of(if d.b_batched { d.k * d.n } else { 0 }, "matmul")?,
            d.trans_a as u32,
            d.trans_b as u32,
        ];
        let (spec, groups) = gemm_launch(self.gemm_tile(), d.m, d.n, d.batch)?;
        self.launch(
            &k::MATMUL,
            &spec,
            &[(a, false), (b, false), (&c, true)],
            &push,
            groups,
        )?;
        Ok(c)
    }

    fn conv2d(
        &self,
        x: &VulkanBuffer,
        w: &VulkanBuffer,
        bias: Option<&VulkanBuffer>,
        dims: Conv2dDims,
        epilogue: Epilogue,
    ) -> Result<VulkanBuffer> {
        let relu = match epilogue {
            Epilogue::None => false,
            Epilogue::Relu => true,
        };
        self.conv2d_with(x, w, bias, dims, relu)
    }

    fn conv2d_backward_input(
        &self,
        dy: &VulkanBuffer,
        w: &VulkanBuffer,
        dims: Conv2dDims,
    ) -> Result<VulkanBuffer> {
        let dx = self.alloc(dims.input_len())?;
        let bufs = [(dy, false), (w, false), (&dx, true)];
        let (spec, groups) = gemm_launch(self.gemm_tile(), dims.c_in, dims.n * dims.h * dims.w, 1)?;
        self.launch(
            &k::CONV2D_BACKWARD_INPUT,
            &spec,
            &bufs,
            &conv_push(&dims)?,
            groups,
        )?;
        Ok(dx)
    }

    fn conv2d_backward_weight(
        &self,
        x: &VulkanBuffer,
        dy: &VulkanBuffer,
        dims: Conv2dDims,
    ) -> Result<VulkanBuffer> {
        let dw = self.alloc(dims.weight_len())?;
        let (spec, groups) = gemm_launch(
            self.gemm_tile(),
            dims.c_out,
            dims.c_in * dims.kh * dims.kw,
            1,
        )?;
        self.launch(
            &k::CONV2D_BACKWARD_WEIGHT,
            &spec,
            &[(x, false), (dy, false), (&dw, true)],
            &conv_push(&dims)?,
            groups,
        )?;
        Ok(dw)
    }

    fn permute(&self, x: &VulkanBuffer, shape: &[usize], perm: &[usize]) -> Result<VulkanBuffer> {
        let strides = contiguous(shape);
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let src: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
        let y = self.alloc(out_shape.iter().product())?;
        self.strided_copy(x, &y, &out_shape, [src, contiguous(&out_shape)], [0, 0])?;
        Ok(y)
    }

    fn slice(
        &self,
        x: &VulkanBuffer,
        shape: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<VulkanBuffer> {
        let strides = contiguous(shape);
        let mut out_shape = shape.to_vec();
        out_shape[axis] = len;
        let y = self.alloc(out_shape.iter().product())?;
        let offset = start * strides[axis];
        self.strided_copy(
            x,
            &y,
            &out_shape,
            [strides, contiguous(&out_shape)],
            [offset, 0],
        )?;
        Ok(y)
    }

    fn concat(&self, parts: &[(&VulkanBuffer, &[usize])], axis: usize) -> Result<VulkanBuffer> {
        let Some((_, first)) = parts.first() else {
            return self.alloc(0);
        };
        let mut out_shape = first.to_vec();
        out_shape[axis] = parts.iter().map(|(_, s)| s[axis]).sum();
        let out_strides = contiguous(&out_shape);
        let y = self.alloc(out_shape.iter().product())?;
        let mut at = 0;
        // Each part lands in its window of the output: same output strides, offset by
        // the extents of the parts before it along `axis`.
        for (buf, shape) in parts {
            self.strided_copy(
                buf,
                &y,
                shape,
                [contiguous(shape), out_strides.clone()],
                [0, at * out_strides[axis]],
            )?;
            at += shape[axis];
        }
        Ok(y)
    }

    fn gather(
        &self,
        x: &VulkanBuffer,
        shape: &[usize],
        axis: usize,
        indices: &[usize],
    ) -> Result<VulkanBuffer> {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let len = outer * indices.len() * inner;
        if len == 0 {
            return self.alloc(0);
        }
        let idx: Vec<u8> = indices
            .iter()
            .map(|&i| u32_of(i, "gather"))
            .collect::<Result<Vec<u32>>>()?
            .into_iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let idx = self.upload(&idx)?;
        let push = [
            u32_of(outer, "gather")?,
            u32_of(shape[axis], "gather")?,
            u32_of(indices.len(), "gather")?,
            u32_of(inner, "gather")?,
        ];
        self.map_launch(&k::GATHER, &[x, &idx], len, &push)
    }

    fn random(&self, len: usize, dist: Distribution, seed: u64) -> Result<VulkanBuffer> {
        let (code, a, b) = match dist {
            Distribution::Uniform { low, high } => (0, low, high),
            Distribution::Normal { mean, std } => (1, mean, std),
        };
        let push = [
            u32_of(len, "random")?,
            code,
            seed as u32,
            (seed >> 32) as u32,
            a.to_bits(),
            b.to_bits(),
        ];
        self.map_launch(&k::FILL_RANDOM, &[], len, &push)
    }

    fn adam_update(
        &self,
        param: &VulkanBuffer,
        grad: &VulkanBuffer,
        m: &VulkanBuffer,
        v: &VulkanBuffer,
        len: usize,
        update: &AdamUpdate,
    ) -> Result<()> {
        let t = update.step as i32;
        let push = [
            u32_of(len, "adam_update")?,
            matches!(update.kind, AdamKind::Adamax) as u32,
            update.lr.to_bits(),
            update.beta1.to_bits(),
            update.beta2.to_bits(),
            update.eps.to_bits(),
            update.weight_decay.to_bits(),
            // In f64 like the CPU device: 1 - 0.999^t loses digits in f32.
            ((1.0 - (update.beta1 as f64).powi(t)) as f32).to_bits(),
            ((1.0 - (update.beta2 as f64).powi(t)) as f32).to_bits(),
        ];
        self.launch(
            &k::ADAM_UPDATE,
            &[],
            &[(param, true), (grad, false), (m, true), (v, true)],
            &push,
            grid(len, 256)?,
        )
    }
}

impl Fused for VulkanDevice {
    fn affine_coupling(
        &self,
        xb: &VulkanBuffer,
        h: &VulkanBuffer,
        d: PairedDims,
    ) -> Result<(VulkanBuffer, VulkanBuffer)> {
        let len = d.n * d.c * d.p;
        if len == 0 {
            return Ok((self.alloc(0)?, self.full(d.n, 0.0)?));
        }
        let push = paired_push("affine_coupling", d, &[])?;
        let yb = self.alloc(len)?;
        let logdet = self.alloc(d.n)?;
        // One workgroup per image: the kernel sums the log-determinant itself.
        self.launch(
            &k::AFFINE_COUPLING,
            &[],
            &[(xb, false), (h, false), (&yb, true), (&logdet, true)],
            &push,
            grid(d.n * 256, 256)?,
        )?;
        Ok((yb, logdet))
    }

    fn affine_coupling_backward(
        &self,
        dyb: Option<&VulkanBuffer>,
        dlogdet: Option<&VulkanBuffer>,
        xb: &VulkanBuffer,
        h: &VulkanBuffer,
        d: PairedDims,
    ) -> Result<(Option<VulkanBuffer>, VulkanBuffer)> {
        let len = d.n * d.c * d.p;
        let dh = self.alloc(2 * len)?;
        let dxb = dyb.map(|_| self.alloc(len)).transpose()?;
        if len == 0 {
            return Ok((dxb, dh));
        }
        // One dispatch for both gradients; an absent one is flagged off in `mode` and its
        // binding filled with a buffer the kernel never reads. Without dyb there is no
        // dxb, and its binding gets a one-element buffer of its own that is never written
        // (not an input, which would look like a write to something read).
        let mode = dyb.is_some() as u32 | (dlogdet.is_some() as u32) << 1;
        let unused_dxb = if dxb.is_none() {
            Some(self.alloc(1)?)
        } else {
            None
        };
        let push = paired_push("affine_coupling_backward", d, &[mode])?;
        self.launch(
            &k::AFFINE_COUPLING_BACKWARD,
            &[],
            &[
                (dyb.unwrap_or(xb), false),
                (dlogdet.unwrap_or(xb), false),
                (xb, false),
                (h, false),
                (
                    dxb.as_ref()
                        .or(unused_dxb.as_ref())
                        .expect("one of the two"),
                    true,
                ),
                (&dh, true),
            ],
            &push,
            grid(len, 256)?,
        )?;
        Ok((dxb, dh))
    }

    fn gaussian_log_prob(
        &self,
        z: &VulkanBuffer,
        h: &VulkanBuffer,
        d: PairedDims,
        pairing: Pairing,
    ) -> Result<VulkanBuffer> {
        let len = d.n * d.c * d.p;
        if len == 0 {
            return self.full(d.n, 0.0);
        }
        let push = paired_push("gaussian_log_prob", d, &pairing_push(pairing, d))?;
        let lp = self.alloc(d.n)?;
        // One workgroup per image: the kernel sums the log-density itself.
        self.launch(
            &k::GAUSSIAN_LOG_PROB,
            &[],
            &[(z, false), (h, false), (&lp, true)],
            &push,
            grid(d.n * 256, 256)?,
        )?;
        Ok(lp)
    }

    fn gaussian_log_prob_backward(
        &self,
        dlp: &VulkanBuffer,
        z: &VulkanBuffer,
        h: &VulkanBuffer,
        d: PairedDims,
        pairing: Pairing,
    ) -> Result<(VulkanBuffer, VulkanBuffer)> {
        let len = d.n * d.c * d.p;
        let push = paired_push("gaussian_log_prob_backward", d, &pairing_push(pairing, d))?;
        let dz = self.alloc(len)?;
        let dh = self.alloc(2 * len)?;
        self.launch(
            &k::GAUSSIAN_LOG_PROB_BACKWARD,
            &[],
            &[
                (dlp, false),
                (z, false),
                (h, false),
                (&dz, true),
                (&dh, true),
            ],
            &push,
            grid(len, 256)?,
        )?;
        Ok((dz, dh))
    }
}

#[cfg(test)]
mod gemm_shape_tests {
    use super::*;

    #[test]
    fn the_tile_follows_the_device_limits() {
        // A typical GPU (NVIDIA: subgroups of 32, 48 KiB shared memory, 1024 invocations).
        assert_eq!(gemm_tile(32, 1024, 48 * 1024), 16);
        // AMD's wave64 and lavapipe's subgroups of 8 also divide 256.
        assert_eq!(gemm_tile(64, 1024, 32 * 1024), 16);
        assert_eq!(gemm_tile(8, 1024, 32 * 1024), 16);
        // Vulkan's minimum limits (128 invocations, 16 KiB): 256 invocations do not fit.
        assert_eq!(gemm_tile(4, 128, 16 * 1024), 8);
        // Shared memory below 8 KiB rules out 16 (2 slabs of 16 x 64 floats).
        assert_eq!(gemm_tile(32, 1024, 6 * 1024), 8);
        // Subgroups wider than 256 invocations: fall back to 8.
        assert_eq!(gemm_tile(512, 1024, 64 * 1024), 8);
    }

    #[test]
    fn launches_cover_the_output_at_either_tile() {
        for tile in [8u32, 16] {
            for (m, n) in [(1, 1), (12, 300), (64, 64), (65, 1000), (500, 7)] {
                let ([t, wm, wn], [gx, gy, gz]) = gemm_launch(tile, m, n, 3).unwrap();
                assert_eq!(t, tile);
                assert!((gy * t * wm) as usize >= m && (gx * t * wn) as usize >= n);
                // No whole workgroup of padding.
                assert!(((gy - 1) * t * wm) < m as u32 && ((gx - 1) * t * wn) < n as u32);
                assert_eq!(gz, 3);
            }
        }
    }
}
