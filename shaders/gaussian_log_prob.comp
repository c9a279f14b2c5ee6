#version 450
// gaussian_log_prob.comp: the terms of a diagonal Gaussian log-density
// (engine/src/ops/fused.rs). Per element of z, with mean = h[cm], logs = h[cl] where
// cm = i*k + om and cl = i*k + ol (k = 2, om = 0, ol = 1 interleaved; k = 1, om = 0,
// ol = c for halves):
//   term = -(0.5 ln 2pi + logs + 0.5 ((z - mean) e^-logs)^2).
// The backend then sums the terms per image (reduce.comp).
// Bindings: 0 z [n, c, p] (read), 1 h [n, 2c, p] (read), 2 term (written).
// Push constants: len = n*c*p, c, p, k, om, ol.
// Tiling: one element per invocation. Speed: memory bound.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
layout(std430, binding = 0) readonly buffer Z { float z[]; };
layout(std430, binding = 1) readonly buffer H { float h[]; };
layout(std430, binding = 2) writeonly buffer T { float term[]; };
layout(push_constant) uniform P { uint len; uint c; uint p; uint k; uint om; uint ol; } p;

void main() {
    uint i = flat_index();
    if (i >= p.len) return;
    uint q = i % p.p;
    uint ch = (i / p.p) % p.c;
    uint b = i / (p.p * p.c);
    uint row = b * 2u * p.c + ch * p.k;
    float mean = h[(row + p.om) * p.p + q];
    float logs = h[(row + p.ol) * p.p + q];
    float u = (z[i] - mean) * exp(-logs);
    term[i] = -(0.91893853320467274 + logs + 0.5 * u * u);
}
