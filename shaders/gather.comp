#version 450
// gather.comp: y[o, j, i] = x[o, idx[j], i], the input viewed as [outer, axis_in, inner]
// and the output as [outer, n_idx, inner].
// Bindings: 0 x (read), 1 idx (read, uint), 2 y (written).
// Push constants: outer, axis_in, n_idx, inner.
// Tiling: one output element per invocation. Speed: memory bound.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer I { uint idx[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint outer; uint axis_in; uint n_idx; uint inner; } p;

void main() {
    uint i = flat_index();
    if (i >= p.outer * p.n_idx * p.inner) return;
    uint in_ = i % p.inner;
    uint j = (i / p.inner) % p.n_idx;
    uint o = i / (p.inner * p.n_idx);
    y[i] = x[(o * p.axis_in + idx[j]) * p.inner + in_];
}
