#version 450
// conv2d_backward_input.comp: the gradient of conv2d.comp with respect to its input,
//   dx[n, ci, iy, ix] = sum_{co, ky, kx} dy[n, co, iy - ky + kh/2, ix - kx + kw/2]
//                                         * w[co, ci, ky, kx]
// (a "full" correlation of dy with the flipped kernel; out-of-range dy counts as 0).
// Bindings: 0 dy (read), 1 w (read), 2 dx (written).
// Push constants: n, c_in, c_out, h, w, kh, kw.
// Tiling: implicit GEMM on gemm_tile.glsl: C[ci, pos] = W'[ci, q] . DY[q, pos] with
// q = (co, ky, kx) over c_out*kh*kw and pos = (n, iy, ix) over n*h*w. A gather, so no
// atomics. Speed: as conv2d.comp, index arithmetic per operand load.
#extension GL_GOOGLE_include_directive : require
layout(std430, binding = 0) readonly buffer DY { float dy[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) writeonly buffer DX { float dx[]; };
layout(push_constant) uniform P {
    uint n; uint c_in; uint c_out; uint h; uint w; uint kh; uint kw;
} p;

uint gemm_m() { return p.c_in; }
uint gemm_n() { return p.n * p.h * p.w; }
uint gemm_k() { return p.c_out * p.kh * p.kw; }

float load_a(uint batch, uint ci, uint q) {
    uint kk = p.kh * p.kw;
    return w[((q / kk) * p.c_in + ci) * kk + q % kk];
}

float load_b(uint batch, uint q, uint pos) {
    uint kk = p.kh * p.kw, hw = p.h * p.w;
    uint co = q / kk, ky = (q % kk) / p.kw, kx = q % p.kw;
    uint b = pos / hw, iy = (pos % hw) / p.w, ix = pos % p.w;
    int oy = int(iy + p.kh / 2) - int(ky), ox = int(ix + p.kw / 2) - int(kx);
    if (oy < 0 || oy >= int(p.h) || ox < 0 || ox >= int(p.w)) return 0.0;
    return dy[(b * p.c_out + co) * hw + uint(oy) * p.w + uint(ox)];
}

void store_c(uint batch, uint ci, uint pos, float v) {
    uint hw = p.h * p.w, b = pos / hw;
    dx[(b * p.c_in + ci) * hw + pos % hw] = v;
}

#include "gemm_tile.glsl"
