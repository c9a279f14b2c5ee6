#version 450
// affine_coupling_backward.comp: the gradients of affine_coupling.comp
// (engine/src/ops/fused.rs), from dyb and/or dlogdet, in one dispatch. Per element of
// xb, with s = sigmoid(h[2i+1] + 2):
//   dxb = dyb * s,  dh[2i] = dyb * s,
//   dh[2i+1] = dyb * (xb + h[2i]) * s * (1 - s) + dlogdet[b] * (1 - s).
// `mode` bit 0: dyb is given (binding 0; dxb written); bit 1: dlogdet is given
// (binding 1). An absent gradient counts as zero, and its binding holds any buffer.
// Bindings: 0 dyb [n, c, p] (read), 1 dlogdet [n] (read), 2 xb (read), 3 h (read),
// 4 dxb (written), 5 dh [n, 2c, p] (written). Push constants: len = n*c*p, c, p, mode.
// Tiling: one element of xb (two of dh) per invocation. Speed: memory bound.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "stable_math.glsl"
layout(std430, binding = 0) readonly buffer DYB { float dyb[]; };
layout(std430, binding = 1) readonly buffer DLD { float dlogdet[]; };
layout(std430, binding = 2) readonly buffer XB { float xb[]; };
layout(std430, binding = 3) readonly buffer H { float h[]; };
layout(std430, binding = 4) writeonly buffer DXB { float dxb[]; };
layout(std430, binding = 5) writeonly buffer DH { float dh[]; };
layout(push_constant) uniform P { uint len; uint c; uint p; uint mode; } p;

void main() {
    uint i = flat_index();
    if (i >= p.len) return;
    uint q = i % p.p;
    uint ch = (i / p.p) % p.c;
    uint b = i / (p.p * p.c);
    uint shift_at = (b * 2u * p.c + 2u * ch) * p.p + q;
    float s = sigmoid_stable(h[shift_at + p.p] + 2.0);
    bool has_dy = (p.mode & 1u) != 0u;
    float dy = has_dy ? dyb[i] : 0.0;
    float dld = (p.mode & 2u) != 0u ? dlogdet[b] : 0.0;
    dh[shift_at] = dy * s;
    dh[shift_at + p.p] = dy * (xb[i] + h[shift_at]) * s * (1.0 - s) + dld * (1.0 - s);
    if (has_dy) dxb[i] = dy * s;
}
