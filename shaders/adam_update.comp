#version 450
// adam_update.comp: one fused Adam or Adamax step, in place on param, m and v
// (formulas in `AdamStep`'s documentation, src/backend.rs).
// Bindings: 0 param (read-write), 1 grad (read), 2 m (read-write), 3 v (read-write).
// Push constants: len, kind (0 Adam, 1 Adamax), lr, beta1, beta2, eps, weight_decay,
// bc1 = 1 - beta1^t, bc2 = 1 - beta2^t (bias corrections, computed once on the host).
// Tiling: one element per invocation. Speed: memory bound (4 reads, 3 writes).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "nan_math.glsl"
layout(std430, binding = 0) buffer Param { float param[]; };
layout(std430, binding = 1) readonly buffer Grad { float grad[]; };
layout(std430, binding = 2) buffer M { float m[]; };
layout(std430, binding = 3) buffer V { float v[]; };
layout(push_constant) uniform P {
    uint len; uint kind; float lr; float beta1; float beta2; float eps;
    float weight_decay; float bc1; float bc2;
} p;

void main() {
    uint i = flat_index();
    if (i >= p.len) return;
    float g = grad[i] + p.weight_decay * param[i];
    float mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    m[i] = mi;
    if (p.kind == 0) {
        float vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
        v[i] = vi;
        param[i] -= p.lr * (mi / p.bc1) / (sqrt(vi / p.bc2) + p.eps);
    } else {
        float vi = nan_max(p.beta2 * v[i], abs(g) + p.eps); // a NaN g makes v NaN
        v[i] = vi;
        param[i] -= p.lr / p.bc1 * mi / vi;
    }
}
