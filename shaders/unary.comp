#version 450
// unary.comp: y[i] = f(x[i]) for every `UnaryOp` (the op is a push constant, so one
// pipeline serves all maps; the switch is uniform across the launch and costs nothing).
// Bindings: 0 x (read), 1 y (written). Push constants: len, op code, scalar s.
// Op codes match `UnaryOp` in src/vulkan/backend.rs: 0 neg, 1 exp, 2 log, 3 sigmoid,
// 4 softplus, 5 relu, 6 step, 7 sqrt, 8 recip, 9 square, 10 abs, 11 tanh, 12 scale,
// 13 add scalar, 14 powf.
// Sigmoid, softplus and tanh are written so that no intermediate overflows for large |x|.
// Tiling: one element per invocation. Speed: memory bound.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "stable_math.glsl"
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint len; uint op; float s; } p;

// x^s with the sign rule of `powf` for negative bases and integer exponents.
float powf(float v, float e) {
    if (v >= 0.0) return pow(v, e);
    if (e == floor(e)) {
        float m = pow(-v, e);
        return mod(e, 2.0) == 0.0 ? m : -m;
    }
    return uintBitsToFloat(0x7fc00000u); // NaN, as powf does
}

float apply(float v) {
    switch (p.op) {
    case 0: return -v;
    case 1: return exp(v);
    case 2: return log(v);
    case 3: return sigmoid_stable(v);
    case 4: return softplus_stable(v);
    case 5: return max(v, 0.0);
    case 6: return v > 0.0 ? 1.0 : 0.0;
    case 7: return sqrt(v);
    case 8: return 1.0 / v;
    case 9: return v * v;
    case 10: return abs(v);
    case 11: { // tanh via e^-2|x|, which is in (0, 1]
        float e = exp(-2.0 * abs(v));
        float t = (1.0 - e) / (1.0 + e);
        return v < 0.0 ? -t : t;
    }
    case 12: return v * p.s;
    case 13: return v + p.s;
    default: return powf(v, p.s);
    }
}

void main() {
    uint i = flat_index();
    if (i < p.len) y[i] = apply(x[i]);
}
