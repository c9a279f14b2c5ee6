#version 450
// conv2d_backward_weight.comp: the gradient of conv2d.comp with respect to its weight,
//   dw[co, ci, ky, kx] = sum_{n, oy, ox} dy[n, co, oy, ox]
//                                        * x[n, ci, oy + ky - kh/2, ox + kx - kw/2]
// Bindings: 0 x (read), 1 dy (read), 2 dw (written).
// Push constants: n, c_in, c_out, h, w, kh, kw.
// Tiling: one workgroup of 64 invocations per dw element; they stride over the
// n*h*w products and combine them with a shared-memory tree (no atomics, deterministic).
// Speed: memory bound: each product reads one dy and one x element; the reads of
// neighbouring invocations are contiguous along ox.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
#include "common.glsl"
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer DY { float dy[]; };
layout(std430, binding = 2) writeonly buffer DW { float dw[]; };
layout(push_constant) uniform P {
    uint n; uint c_in; uint c_out; uint h; uint w; uint kh; uint kw;
} p;

shared float partial[64];

void main() {
    uint o = flat_group();
    if (o >= p.c_out * p.c_in * p.kh * p.kw) return; // uniform across the workgroup
    uint kx = o % p.kw;
    uint ky = (o / p.kw) % p.kh;
    uint ci = (o / (p.kw * p.kh)) % p.c_in;
    uint co = o / (p.kw * p.kh * p.c_in);
    int dyo = int(ky) - int(p.kh / 2), dxo = int(kx) - int(p.kw / 2);
    uint hw = p.h * p.w;
    uint t = gl_LocalInvocationID.x;
    float acc = 0.0;
    for (uint r = t; r < p.n * hw; r += 64) {
        uint ox = r % p.w;
        uint oy = (r / p.w) % p.h;
        uint b = r / hw;
        int iy = int(oy) + dyo, ix = int(ox) + dxo;
        if (iy < 0 || iy >= int(p.h) || ix < 0 || ix >= int(p.w)) continue;
        acc += dy[(b * p.c_out + co) * hw + oy * p.w + ox]
             * x[(b * p.c_in + ci) * hw + uint(iy) * p.w + uint(ix)];
    }
    partial[t] = acc;
    barrier();
    for (uint s = 32; s > 0; s >>= 1) {
        if (t < s) partial[t] += partial[t + s];
        barrier();
    }
    if (t == 0) dw[o] = partial[0];
}
