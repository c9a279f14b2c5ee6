#version 450
// conv2d_backward_input.comp: the gradient of conv2d.comp with respect to its input,
//   dx[n, ci, iy, ix] = sum_{co, ky, kx} dy[n, co, iy - ky + kh/2, ix - kx + kw/2]
//                                         * w[co, ci, ky, kx]
// (a "full" correlation of dy with the flipped kernel; out-of-range dy counts as 0).
// Bindings: 0 dy (read), 1 w (read), 2 dx (written).
// Push constants: n, c_in, c_out, h, w, kh, kw.
// Tiling: one dx element per invocation, no atomics (a gather, not a scatter). The
// grid's y dimension is the input channel, so weight loads are uniform per workgroup
// (see conv2d.comp); x is over the n*h*w positions.
// Speed: as conv2d.comp, global-memory reads of dy and w per multiply-add.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer DY { float dy[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) writeonly buffer DX { float dx[]; };
layout(push_constant) uniform P {
    uint n; uint c_in; uint c_out; uint h; uint w; uint kh; uint kw;
} p;

void main() {
    uint pos = gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    uint ci = gl_WorkGroupID.y;
    if (pos >= p.n * p.h * p.w) return;
    uint ix = pos % p.w;
    uint iy = (pos / p.w) % p.h;
    uint b = pos / (p.w * p.h);
    uint i = ((b * p.c_in + ci) * p.h + iy) * p.w + ix;
    int ph = int(p.kh / 2), pw = int(p.kw / 2);
    float acc = 0.0;
    for (uint co = 0; co < p.c_out; ++co) {
        uint ybase = (b * p.c_out + co) * p.h * p.w;
        uint wbase = (co * p.c_in + ci) * p.kh * p.kw;
        for (uint ky = 0; ky < p.kh; ++ky) {
            int oy = int(iy) - int(ky) + ph;
            if (oy < 0 || oy >= int(p.h)) continue;
            for (uint kx = 0; kx < p.kw; ++kx) {
                int ox = int(ix) - int(kx) + pw;
                if (ox < 0 || ox >= int(p.w)) continue;
                acc += dy[ybase + uint(oy) * p.w + uint(ox)] * w[wbase + ky * p.kw + kx];
            }
        }
    }
    dx[i] = acc;
}
