#version 450
// reduce.comp: sum or max over any set of axes, one workgroup per output element.
// The host splits the input's axes into kept axes (which index the output) and reduced
// axes; both are given as rank-6 shapes with the input's strides, so any axis set works
// without a permute first.
// Bindings: 0 x (read), 1 y (written, one element per kept index).
// Push constants: n_out, n_red (elements reduced per output), op (0 sum, 1 max, which
// is NaN where any element is),
// kept shape[6], kept strides[6], reduced shape[6], reduced strides[6].
// Tiling: 128 invocations stride over the reduced elements, then a shared-memory tree.
// Speed: memory bound for long reductions; for short ones (n_red <= 64) the host picks
// reduce_small.comp instead, since most of a workgroup would idle.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 128) in;
#include "common.glsl"
#include "nan_math.glsl"
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n_out; uint n_red; uint op;
    uint kshape[6]; uint kstride[6]; uint rshape[6]; uint rstride[6];
} p;

shared float partial[128];

void main() {
    uint o = flat_group();
    if (o >= p.n_out) return; // uniform across the workgroup
    uint base = offset6(o, p.kshape, p.kstride);
    uint t = gl_LocalInvocationID.x;
    bool is_max = p.op == 1;
    float acc = is_max ? uintBitsToFloat(0xff800000u) : 0.0; // -inf
    for (uint r = t; r < p.n_red; r += 128) {
        float v = x[base + offset6(r, p.rshape, p.rstride)];
        acc = is_max ? nan_max(acc, v) : acc + v;
    }
    partial[t] = acc;
    barrier();
    for (uint s = 64; s > 0; s >>= 1) {
        if (t < s) {
            float w = partial[t + s];
            partial[t] = is_max ? nan_max(partial[t], w) : partial[t] + w;
        }
        barrier();
    }
    if (t == 0) y[o] = partial[0];
}
