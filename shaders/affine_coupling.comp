#version 450
// affine_coupling.comp: Glow's affine coupling, forward (engine/src/ops/fused.rs), in
// one dispatch. Per element of xb: with shift = h[2i], t = h[2i+1] + 2,
//   yb = (xb + shift) * sigmoid(t),  logdet[b] = sum over the image of log sigmoid(t),
// where log sigmoid(t) = -softplus(-t).
// Bindings: 0 xb [n, c, p] (read), 1 h [n, 2c, p] (read), 2 yb (written), 3 logdet [n]
// (written). Push constants: len = n*c*p, c, p.
// Tiling: one workgroup of 256 per image, each invocation striding over the image's
// c*p elements and keeping its own partial sum, added up by workgroup_sum.glsl. One
// dispatch instead of an elementwise pass and a reduction: on a GPU the fixed cost of a
// dispatch is what a small op is made of. Speed: memory bound (reads 3, writes 1
// float per element).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "stable_math.glsl"
#include "workgroup_sum.glsl"
layout(std430, binding = 0) readonly buffer XB { float xb[]; };
layout(std430, binding = 1) readonly buffer H { float h[]; };
layout(std430, binding = 2) writeonly buffer YB { float yb[]; };
layout(std430, binding = 3) writeonly buffer LD { float logdet[]; };
layout(push_constant) uniform P { uint len; uint c; uint p; } p;

void main() {
    uint per = p.c * p.p;
    uint b = flat_group();
    // A folded grid may have spare workgroups; the test is uniform per workgroup.
    if (per == 0u || b * per >= p.len) return;
    float acc = 0.0;
    for (uint j = gl_LocalInvocationID.x; j < per; j += 256u) {
        uint i = b * per + j;
        uint shift_at = (b * 2u * p.c + 2u * (j / p.p)) * p.p + j % p.p;
        float t = h[shift_at + p.p] + 2.0;
        yb[i] = (xb[i] + h[shift_at]) * sigmoid_stable(t);
        acc += -softplus_stable(-t);
    }
    float total = workgroup_sum(acc);
    if (gl_LocalInvocationID.x == 0u) logdet[b] = total;
}
