#version 450
// matmul.comp: batched C[b] = op(A[b]) . op(B[b]), op = optional transpose.
// Bindings: 0 A (read), 1 B (read), 2 C (written, [batch, m, n]).
// Push constants: m, k, n, batch stride of A and of B (0 broadcasts one matrix to every
// batch entry), trans_a, trans_b (A stored [k, m], B stored [n, k]).
// Tiling: gemm_tile.glsl (up to 64 x 64 blocks of C, up to 4 x 4 per invocation,
// batch entry in gl_WorkGroupID.z). Speed: FMA bound for large products on GPUs; transposed operands
// load uncoalesced (the host could permute first if a profile shows it).
#extension GL_GOOGLE_include_directive : require
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer C { float c[]; };
layout(push_constant) uniform P {
    uint m; uint k; uint n; uint stride_a; uint stride_b; uint trans_a; uint trans_b;
} p;

uint gemm_m() { return p.m; }
uint gemm_n() { return p.n; }
uint gemm_k() { return p.k; }

float load_a(uint batch, uint row, uint kk) {
    uint base = batch * p.stride_a;
    return p.trans_a != 0 ? a[base + kk * p.m + row] : a[base + row * p.k + kk];
}

float load_b(uint batch, uint kk, uint col) {
    uint base = batch * p.stride_b;
    return p.trans_b != 0 ? b[base + col * p.k + kk] : b[base + kk * p.n + col];
}

void store_c(uint batch, uint row, uint col, float v) {
    c[(batch * p.m + row) * p.n + col] = v;
}

#include "gemm_tile.glsl"
