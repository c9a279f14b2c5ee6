#version 450
// conv2d_naive.comp: conv2d.comp's convolution written as the reference device's loop
// nest, for learning and for comparison: one invocation per output element
// y[n, co, oy, ox], which loops over c_in, kh and kw and reads x and w straight from
// global memory.
// Bindings, push constants and flags: conv2d.comp's, so either kernel can serve
// `Backend::conv2d` (VulkanOptions::conv picks; ENGINE_VULKAN_CONV=naive).
// Tiling: none; a 1-D launch of 256 invocations a workgroup over a 2-D grid
// (flat_index). Speed: each invocation reads c_in*kh*kw weights and as many inputs from
// global memory, and its neighbours read most of the same values again; conv2d.comp
// stages them once per workgroup in shared memory and keeps 16 sums per invocation in
// registers (the tour's stop 8 walks from this kernel to that one; benches/ops.rs
// times both).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
#include "nan_math.glsl"
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n; uint c_in; uint c_out; uint h; uint w; uint kh; uint kw; uint flags;
} p;

void main() {
    uint i = flat_index();
    uint hw = p.h * p.w;
    if (i >= p.n * p.c_out * hw) return;
    // The output element's coordinates, from its row-major index.
    uint ox = i % p.w, oy = (i / p.w) % p.h, co = (i / hw) % p.c_out, b = i / (hw * p.c_out);
    float acc = 0.0;
    for (uint ci = 0; ci < p.c_in; ++ci) {
        for (uint ky = 0; ky < p.kh; ++ky) {
            int iy = int(oy + ky) - int(p.kh / 2);
            if (iy < 0 || iy >= int(p.h)) continue; // zero padding
            for (uint kx = 0; kx < p.kw; ++kx) {
                int ix = int(ox + kx) - int(p.kw / 2);
                if (ix < 0 || ix >= int(p.w)) continue;
                acc += x[(b * p.c_in + ci) * hw + uint(iy) * p.w + uint(ix)]
                     * w[((co * p.c_in + ci) * p.kh + ky) * p.kw + kx];
            }
        }
    }
    float r = acc + ((p.flags & 1u) != 0u ? bias[co] : 0.0);
    y[i] = (p.flags & 2u) != 0u ? relu(r) : r;
}
