#version 450
// affine_coupling.comp: Glow's affine coupling, forward (engine/src/ops/fused.rs). Per
// element of xb: with shift = h[2i], t = h[2i+1] + 2,
//   yb = (xb + shift) * sigmoid(t)  and  ls = log sigmoid(t) = -softplus(-t).
// The backend then sums ls per image (reduce.comp) into the log-determinant.
// Bindings: 0 xb [n, c, p] (read), 1 h [n, 2c, p] (read), 2 yb (written), 3 ls (written).
// Push constants: len = n*c*p, c, p.
// Tiling: one element per invocation. Speed: memory bound (reads 3, writes 2 floats).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "stable_math.glsl"
layout(std430, binding = 0) readonly buffer XB { float xb[]; };
layout(std430, binding = 1) readonly buffer H { float h[]; };
layout(std430, binding = 2) writeonly buffer YB { float yb[]; };
layout(std430, binding = 3) writeonly buffer LS { float ls[]; };
layout(push_constant) uniform P { uint len; uint c; uint p; } p;

void main() {
    uint i = flat_index();
    if (i >= p.len) return;
    uint q = i % p.p;
    uint ch = (i / p.p) % p.c;
    uint b = i / (p.p * p.c);
    uint shift_at = (b * 2u * p.c + 2u * ch) * p.p + q;
    float t = h[shift_at + p.p] + 2.0;
    yb[i] = (xb[i] + h[shift_at]) * sigmoid_stable(t);
    ls[i] = -softplus_stable(-t);
}
