#version 450
// fill_random.comp: y[i] = a draw from a uniform or normal distribution that depends
// only on (seed, i), bit-for-bit the same hash as src/random.rs (lowbias32 twice over
// the counter and both seed halves), so CPU and GPU fills agree.
// Bindings: 0 y (written).
// Push constants: len, dist (0 uniform on [a, b), 1 normal with mean a, std b),
// seed_lo, seed_hi, a, b.
// Uniform draws match the CPU exactly; normal draws (Box-Muller) differ by the last
// bits of the driver's log/cos.
// Tiling: one element per invocation. Speed: ALU bound (a few integer multiplies).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
layout(std430, binding = 0) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint len; uint dist; uint seed_lo; uint seed_hi; float a; float b;
} p;

uint mix32(uint x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

uint hash(uint i) {
    return mix32(mix32(i ^ mix32(p.seed_lo)) + p.seed_hi * 0x9e3779b9u);
}

float uniform01(uint i) {
    return float(hash(i) >> 8) * (1.0 / 16777216.0);
}

void main() {
    uint i = flat_index();
    if (i >= p.len) return;
    if (p.dist == 0) {
        y[i] = p.a + (p.b - p.a) * uniform01(i);
    } else {
        float u1 = 1.0 - uniform01(i * 2u);
        float u2 = uniform01(i * 2u + 1u);
        float z = sqrt(-2.0 * log(u1)) * cos(6.28318530717958647692 * u2);
        y[i] = p.a + p.b * z;
    }
}
