#version 450
// gaussian_log_prob_backward.comp: the gradients of gaussian_log_prob.comp
// (engine/src/ops/fused.rs). Per element of z, with u = (z - mean) e^-logs and
// g = dlp[b]: dz = -g u e^-logs, dmean = g u e^-logs, dlogs = g (u^2 - 1).
// Channel pairing as in gaussian_log_prob.comp (k, om, ol).
// Bindings: 0 dlp [n] (read), 1 z (read), 2 h (read), 3 dz (written), 4 dh (written).
// Push constants: len = n*c*p, c, p, k, om, ol.
// Tiling: one element of z (two of dh) per invocation. Speed: memory bound.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
layout(std430, binding = 0) readonly buffer G { float dlp[]; };
layout(std430, binding = 1) readonly buffer Z { float z[]; };
layout(std430, binding = 2) readonly buffer H { float h[]; };
layout(std430, binding = 3) writeonly buffer DZ { float dz[]; };
layout(std430, binding = 4) writeonly buffer DH { float dh[]; };
layout(push_constant) uniform P { uint len; uint c; uint p; uint k; uint om; uint ol; } p;

void main() {
    uint i = flat_index();
    if (i >= p.len) return;
    uint q = i % p.p;
    uint ch = (i / p.p) % p.c;
    uint b = i / (p.p * p.c);
    uint row = b * 2u * p.c + ch * p.k;
    uint at_m = (row + p.om) * p.p + q;
    uint at_l = (row + p.ol) * p.p + q;
    float inv = exp(-h[at_l]);
    float u = (z[i] - h[at_m]) * inv;
    float g = dlp[b];
    float dm = g * u * inv;
    dz[i] = -dm;
    dh[at_m] = dm;
    dh[at_l] = g * (u * u - 1.0);
}
