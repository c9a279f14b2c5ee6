#version 450
// unary.comp: y[i] = f(x[i]) for every `UnaryOp` (the op is a push constant, so one
// pipeline serves all maps; the switch is uniform across the launch and costs nothing).
// Bindings: 0 x (read), 1 y (written). Push constants: len, op code, scalar s.
// Op codes: the UNARY_* constants of opcodes.glsl, generated with the Rust side from
// opcodes.txt (engine/src/vulkan/opcode_table.rs), one per `UnaryOp` of
// engine/src/backend.rs.
// Sigmoid, softplus and tanh are written so that no intermediate overflows for large |x|.
// NaN and infinities give what IEEE arithmetic gives (engine/src/reference/ defines it,
// tests/nan.rs checks it): where GLSL leaves a case to the implementation (max with a
// NaN, log and sqrt of a negative number, pow of a NaN or with exponent 0) it is
// written out.
// Tiling: one element per invocation. Speed: memory bound.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "opcodes.glsl"
#include "nan_math.glsl"
#include "stable_math.glsl"
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint len; uint op; float s; } p;

#define NAN uintBitsToFloat(0x7fc00000u)
#define INF uintBitsToFloat(0x7f800000u)

// x^s with the sign rule of `powf` for negative bases and integer exponents; x^0 = 1
// for every x, NaN propagates otherwise.
float powf(float v, float e) {
    if (e == 0.0) return 1.0;
    if (isnan(v)) return v;
    if (v >= 0.0) return pow(v, e);
    if (e == floor(e)) {
        float m = pow(-v, e);
        return mod(e, 2.0) == 0.0 ? m : -m;
    }
    return NAN; // as powf does
}

// ln x: NaN below 0 and -inf at 0 (GLSL's log is undefined there).
float log_ieee(float v) {
    return v > 0.0 ? log(v) : (v == 0.0 ? -INF : NAN + v);
}

// sqrt x: NaN below 0 (GLSL's sqrt is undefined there).
float sqrt_ieee(float v) {
    return v < 0.0 ? NAN : sqrt(v);
}

float apply(float v) {
    switch (p.op) {
    case UNARY_NEG: return -v;
    case UNARY_EXP: return exp(v);
    case UNARY_LOG: return log_ieee(v);
    case UNARY_SIGMOID: return sigmoid_stable(v);
    case UNARY_SOFTPLUS: return softplus_stable(v);
    case UNARY_RELU: return relu(v);
    case UNARY_HEAVISIDE: return v > 0.0 ? 1.0 : 0.0;
    case UNARY_SQRT: return sqrt_ieee(v);
    case UNARY_RECIP: return 1.0 / v;
    case UNARY_SQUARE: return v * v;
    case UNARY_ABS: return abs(v);
    case UNARY_TANH: { // tanh via e^-2|x|, which is in (0, 1]
        float e = exp(-2.0 * abs(v));
        float t = (1.0 - e) / (1.0 + e);
        return v < 0.0 ? -t : t;
    }
    case UNARY_SCALE: return v * p.s;
    case UNARY_ADD_SCALAR: return v + p.s;
    case UNARY_POWF: return powf(v, p.s);
    case UNARY_LEAKY_RELU: return v > 0.0 ? v : p.s * v;
    default: return uintBitsToFloat(0x7fc00000u); // an unknown code: NaN, not a silent op
    }
}

void main() {
    uint i = flat_index();
    if (i < p.len) y[i] = apply(x[i]);
}
