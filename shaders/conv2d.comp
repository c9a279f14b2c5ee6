#version 450
// conv2d.comp: y[n, co, oy, ox] = bias[co] + sum_{ci, ky, kx}
//     x[n, ci, oy + ky - kh/2, ox + kx - kw/2] * w[co, ci, ky, kx]
// Stride 1, zero "same" padding, NCHW, PyTorch weight layout [c_out, c_in, kh, kw].
// Bindings: 0 x (read), 1 w (read), 2 bias (read; any buffer without a bias),
// 3 y (written). Push constants: n, c_in, c_out, h, w, kh, kw, flags (bit 0: add the
// bias; bit 1: store max(y, 0), the fused conv2d_relu, NaN kept as NaN).
// Tiling: implicit GEMM on gemm_tile.glsl: C[co, pos] = W[co, q] . X[q, pos] with
// q = (ci, ky, kx) over c_in*kh*kw and pos = (n, oy, ox) over n*h*w; X's elements are
// read straight from x (zero outside the image), so no im2col buffer exists.
// Speed: the index arithmetic of each X load (div/mod by kh*kw, kw, h*w, w) costs more
// than the multiply-add it feeds on CPU drivers; on GPUs it hides behind the FMAs.
#extension GL_GOOGLE_include_directive : require
#include "nan_math.glsl"
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n; uint c_in; uint c_out; uint h; uint w; uint kh; uint kw; uint flags;
} p;

uint gemm_m() { return p.c_out; }
uint gemm_n() { return p.n * p.h * p.w; }
uint gemm_k() { return p.c_in * p.kh * p.kw; }

float load_a(uint batch, uint co, uint q) { return w[co * gemm_k() + q]; }

float load_b(uint batch, uint q, uint pos) {
    uint kk = p.kh * p.kw, hw = p.h * p.w;
    uint ci = q / kk, ky = (q % kk) / p.kw, kx = q % p.kw;
    uint b = pos / hw, oy = (pos % hw) / p.w, ox = pos % p.w;
    int iy = int(oy + ky) - int(p.kh / 2), ix = int(ox + kx) - int(p.kw / 2);
    if (iy < 0 || iy >= int(p.h) || ix < 0 || ix >= int(p.w)) return 0.0;
    return x[(b * p.c_in + ci) * hw + uint(iy) * p.w + uint(ix)];
}

void store_c(uint batch, uint co, uint pos, float v) {
    uint hw = p.h * p.w, b = pos / hw;
    float r = v + ((p.flags & 1u) != 0u ? bias[co] : 0.0);
    // The same relu as unary.comp's.
    y[(b * p.c_out + co) * hw + pos % hw] = (p.flags & 2u) != 0u ? relu(r) : r;
}

#include "gemm_tile.glsl"
