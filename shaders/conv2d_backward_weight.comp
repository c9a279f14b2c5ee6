#version 450
// conv2d_backward_weight.comp: the gradient of conv2d.comp with respect to its weight,
//   dw[co, ci, ky, kx] = sum_{n, oy, ox} dy[n, co, oy, ox]
//                                        * x[n, ci, oy + ky - kh/2, ox + kx - kw/2]
// Bindings: 0 x (read), 1 dy (read), 2 dw (written).
// Push constants: n, c_in, c_out, h, w, kh, kw.
// Tiling: implicit GEMM on gemm_tile.glsl: C[co, q] = DY[co, pos] . X'[pos, q] with
// q = (ci, ky, kx) over c_in*kh*kw and the contraction over pos = (n, oy, ox), n*h*w.
// Deterministic (no atomics): one workgroup owns each block of dw.
// Speed: the contraction is long (n*h*w) while dw is small, so few workgroups run when
// c_out and c_in*kh*kw are small; a split-K variant would add parallelism there.
#extension GL_GOOGLE_include_directive : require
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer DY { float dy[]; };
layout(std430, binding = 2) writeonly buffer DW { float dw[]; };
layout(push_constant) uniform P {
    uint n; uint c_in; uint c_out; uint h; uint w; uint kh; uint kw;
} p;

uint gemm_m() { return p.c_out; }
uint gemm_n() { return p.c_in * p.kh * p.kw; }
uint gemm_k() { return p.n * p.h * p.w; }

float load_a(uint batch, uint co, uint pos) {
    uint hw = p.h * p.w;
    return dy[((pos / hw) * p.c_out + co) * hw + pos % hw];
}

float load_b(uint batch, uint pos, uint q) {
    uint kk = p.kh * p.kw, hw = p.h * p.w;
    uint ci = q / kk, ky = (q % kk) / p.kw, kx = q % p.kw;
    uint b = pos / hw, oy = (pos % hw) / p.w, ox = pos % p.w;
    int iy = int(oy + ky) - int(p.kh / 2), ix = int(ox + kx) - int(p.kw / 2);
    if (iy < 0 || iy >= int(p.h) || ix < 0 || ix >= int(p.w)) return 0.0;
    return x[(b * p.c_in + ci) * hw + uint(iy) * p.w + uint(ix)];
}

void store_c(uint batch, uint co, uint q, float v) { dw[co * gemm_n() + q] = v; }

#include "gemm_tile.glsl"
