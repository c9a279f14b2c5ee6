#version 450
// strided_copy.comp: dst[dst_off + idx . dst_stride] = src[src_off + idx . src_stride]
// for every index idx of a rank-6 `shape`. One kernel serves three layout ops:
// permute (src strides permuted), slice (src offset at the start of the range) and
// concat (each part copied into its window of the output via dst offset and strides).
// Bindings: 0 src (read), 1 dst (written).
// Push constants: len (elements of shape), src_off, dst_off, shape[6], src strides[6],
// dst strides[6].
// Tiling: one element per invocation. Speed: memory bound; permutes that move the
// innermost axis read uncoalesced.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
layout(std430, binding = 0) readonly buffer S { float src[]; };
layout(std430, binding = 1) writeonly buffer D { float dst[]; };
layout(push_constant) uniform P {
    uint len; uint src_off; uint dst_off;
    uint shape[6]; uint src_stride[6]; uint dst_stride[6];
} p;

void main() {
    uint i = flat_index();
    if (i >= p.len) return;
    dst[p.dst_off + offset6(i, p.shape, p.dst_stride)] =
        src[p.src_off + offset6(i, p.shape, p.src_stride)];
}
