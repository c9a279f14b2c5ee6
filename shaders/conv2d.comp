#version 450
// conv2d.comp: y[n, co, oy, ox] = bias[co] + sum_{ci, ky, kx}
//     x[n, ci, oy + ky - kh/2, ox + kx - kw/2] * w[co, ci, ky, kx]
// Stride 1, zero "same" padding, NCHW, PyTorch weight layout [c_out, c_in, kh, kw].
// Bindings: 0 x (read), 1 w (read), 2 bias (read; any buffer when has_bias is 0),
// 3 y (written). Push constants: n, c_in, c_out, h, w, kh, kw, has_bias.
// Tiling: one output element per invocation (direct convolution, no im2col buffer).
// The grid's y dimension is the output channel, so every weight index depends only on
// gl_WorkGroupID and the loop counters: the compiler can see the weight loads as
// uniform (one scalar/broadcast load per workgroup step on GPUs; no measurable change
// on lavapipe). x is over the n*h*w output positions.
// Speed: every invocation reads c_in*kh*kw inputs straight from global memory;
// neighbouring invocations share them through the cache only. A shared-memory input
// tile (or implicit GEMM on matmul.comp's tiling) is the next step if profiles show
// conv dominating.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n; uint c_in; uint c_out; uint h; uint w; uint kh; uint kw; uint has_bias;
} p;

void main() {
    uint pos = gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    uint co = gl_WorkGroupID.y;
    if (pos >= p.n * p.h * p.w) return;
    uint ox = pos % p.w;
    uint oy = (pos / p.w) % p.h;
    uint b = pos / (p.w * p.h);
    uint i = ((b * p.c_out + co) * p.h + oy) * p.w + ox;
    int ph = int(p.kh / 2), pw = int(p.kw / 2);
    float acc = p.has_bias != 0 ? bias[co] : 0.0;
    for (uint ci = 0; ci < p.c_in; ++ci) {
        uint xbase = (b * p.c_in + ci) * p.h * p.w;
        uint wbase = (co * p.c_in + ci) * p.kh * p.kw;
        for (uint ky = 0; ky < p.kh; ++ky) {
            int iy = int(oy) + int(ky) - ph;
            if (iy < 0 || iy >= int(p.h)) continue;
            for (uint kx = 0; kx < p.kw; ++kx) {
                int ix = int(ox) + int(kx) - pw;
                if (ix < 0 || ix >= int(p.w)) continue;
                acc += x[xbase + uint(iy) * p.w + uint(ix)] * w[wbase + ky * p.kw + kx];
            }
        }
    }
    y[i] = acc;
}
