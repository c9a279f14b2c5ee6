#version 450
// fill.comp: y[i] = value, for `Backend::full`.
// Bindings: 0 y (written). Push constants: len, value.
// Tiling: one element per invocation, 256 per workgroup. Speed: limited by memory writes.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#include "common.glsl"
layout(std430, binding = 0) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint len; float value; } p;

void main() {
    uint i = flat_index();
    if (i < p.len) y[i] = p.value;
}
