#version 450
// reduce_small.comp: sum or max over any set of axes when few elements (n_red <= 64)
// fold into each output: one invocation per output element loops over them.
// Same bindings and push constants as reduce.comp (see there).
// Tiling: one output per invocation. Speed: memory bound; reads are strided when the
// reduced axes are the inner ones.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "nan_math.glsl"
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n_out; uint n_red; uint op;
    uint kshape[6]; uint kstride[6]; uint rshape[6]; uint rstride[6];
} p;

void main() {
    uint o = flat_index();
    if (o >= p.n_out) return;
    uint base = offset6(o, p.kshape, p.kstride);
    bool is_max = p.op == 1;
    float acc = is_max ? uintBitsToFloat(0xff800000u) : 0.0; // -inf
    for (uint r = 0; r < p.n_red; ++r) {
        float v = x[base + offset6(r, p.rshape, p.rstride)];
        acc = is_max ? nan_max(acc, v) : acc + v;
    }
    y[o] = acc;
}
