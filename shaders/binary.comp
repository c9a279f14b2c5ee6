#version 450
// binary.comp: out = a op b with NumPy broadcasting, rank <= 6.
// Bindings: 0 a (read), 1 b (read), 2 out (written).
// Push constants: len (output elements), op (a BINARY_* code of opcodes.glsl, generated
// from opcodes.txt; relu_grad is u * step(v)),
// out shape[6] (left-padded with 1), a strides[6], b strides[6] (0 on broadcast axes).
// Tiling: one output element per invocation. Speed: memory bound, plus the index
// arithmetic (6 div/mod per element) which dominates on CPU drivers like lavapipe.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "opcodes.glsl"
#include "nan_math.glsl"
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer C { float c[]; };
layout(push_constant) uniform P {
    uint len; uint op; uint shape[6]; uint sa[6]; uint sb[6];
} p;

void main() {
    uint i = flat_index();
    if (i >= p.len) return;
    float u = a[offset6(i, p.shape, p.sa)];
    float v = b[offset6(i, p.shape, p.sb)];
    float r;
    switch (p.op) {
    case BINARY_ADD: r = u + v; break;
    case BINARY_SUB: r = u - v; break;
    case BINARY_MUL: r = u * v; break;
    case BINARY_DIV: r = u / v; break;
    case BINARY_MAX: r = nan_max(u, v); break; // NaN if either is
    case BINARY_RELU_GRAD: r = u * (v > 0.0 ? 1.0 : 0.0); break;
    default: r = uintBitsToFloat(0x7fc00000u); break; // an unknown code: NaN
    }
    c[i] = r;
}
