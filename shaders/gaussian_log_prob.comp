#version 450
// gaussian_log_prob.comp: a diagonal Gaussian log-density per image
// (engine/src/ops/fused.rs), in one dispatch. Per element of z, with mean = h[cm], logs = h[cl] where
// cm = i*k + om and cl = i*k + ol (k = 2, om = 0, ol = 1 interleaved; k = 1, om = 0,
// ol = c for halves):
//   lp[b] = sum over the image of -(0.5 ln 2pi + logs + 0.5 ((z - mean) e^-logs)^2).
// Bindings: 0 z [n, c, p] (read), 1 h [n, 2c, p] (read), 2 lp [n] (written).
// Push constants: len = n*c*p, c, p, k, om, ol.
// Tiling: one workgroup of 256 per image, each invocation striding over the image's
// c*p elements, partial sums added by workgroup_sum.glsl (one dispatch instead of a
// pass and a reduction, as in affine_coupling.comp). Speed: memory bound.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "workgroup_sum.glsl"
layout(std430, binding = 0) readonly buffer Z { float z[]; };
layout(std430, binding = 1) readonly buffer H { float h[]; };
layout(std430, binding = 2) writeonly buffer LP { float lp[]; };
layout(push_constant) uniform P { uint len; uint c; uint p; uint k; uint om; uint ol; } p;

void main() {
    uint per = p.c * p.p;
    uint b = flat_group();
    // A folded grid may have spare workgroups; the test is uniform per workgroup.
    if (per == 0u || b * per >= p.len) return;
    float acc = 0.0;
    for (uint j = gl_LocalInvocationID.x; j < per; j += 256u) {
        uint row = b * 2u * p.c + (j / p.p) * p.k;
        uint q = j % p.p;
        float mean = h[(row + p.om) * p.p + q];
        float logs = h[(row + p.ol) * p.p + q];
        float u = (z[b * per + j] - mean) * exp(-logs);
        acc += -(0.91893853320467274 + logs + 0.5 * u * u);
    }
    float total = workgroup_sum(acc);
    if (gl_LocalInvocationID.x == 0u) lp[b] = total;
}
