#version 450
// affine_coupling_backward.comp: the gradients of affine_coupling.comp
// (engine/src/ops/fused.rs). Per element of xb, with s = sigmoid(h[2i+1] + 2):
//   dxb = dyb * s,  dh[2i] = dyb * s,
//   dh[2i+1] = dyb * (xb + h[2i]) * s * (1 - s) + dlogdet[b] * (1 - s).
// `mode` 0: g is dyb [n, c, p] and dlogdet is zero (dxb written);
// `mode` 1: g is dlogdet [n] and dyb is zero (dxb not written; binding 3 unused).
// Bindings: 0 g (read), 1 xb (read), 2 h (read), 3 dxb (written), 4 dh [n, 2c, p]
// (written). Push constants: len = n*c*p, c, p, mode.
// Tiling: one element of xb (two of dh) per invocation. Speed: memory bound.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "stable_math.glsl"
layout(std430, binding = 0) readonly buffer G { float g[]; };
layout(std430, binding = 1) readonly buffer XB { float xb[]; };
layout(std430, binding = 2) readonly buffer H { float h[]; };
layout(std430, binding = 3) writeonly buffer DXB { float dxb[]; };
layout(std430, binding = 4) writeonly buffer DH { float dh[]; };
layout(push_constant) uniform P { uint len; uint c; uint p; uint mode; } p;

void main() {
    uint i = flat_index();
    if (i >= p.len) return;
    uint q = i % p.p;
    uint ch = (i / p.p) % p.c;
    uint b = i / (p.p * p.c);
    uint shift_at = (b * 2u * p.c + 2u * ch) * p.p + q;
    float s = sigmoid_stable(h[shift_at + p.p] + 2.0);
    float dy = p.mode == 0u ? g[i] : 0.0;
    float dld = p.mode == 1u ? g[b] : 0.0;
    dh[shift_at] = dy * s;
    dh[shift_at + p.p] = dy * (xb[i] + h[shift_at]) * s * (1.0 - s) + dld * (1.0 - s);
    if (p.mode == 0u) dxb[i] = dy * s;
}
