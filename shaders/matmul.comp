#version 450
// matmul.comp: batched C[b] = op(A[b]) . op(B[b]), op = optional transpose.
// Bindings: 0 A (read), 1 B (read), 2 C (written, [batch, m, n]).
// Push constants: m, k, n, batch stride of A and of B (0 broadcasts one matrix to every
// batch entry), trans_a, trans_b (A stored [k, m], B stored [n, k]).
// Tiling: a TILE x TILE workgroup computes a TILE x TILE block of C; each step stages a
// TILE x TILE block of A and of B in shared memory, so every global element is read
// m/TILE (or n/TILE) times instead of m (or n). TILE is specialization constant 0
// (the host picks 16). gl_WorkGroupID.z is the batch entry.
// Speed: on discrete GPUs, shared-memory bandwidth (one FMA per two shared loads); a
// register-blocked version (several outputs per invocation) would be the next step.
// Transposed loads are uncoalesced; the host could permute first if a profile shows it.
layout(constant_id = 0) const uint TILE = 16;
layout(local_size_x_id = 0, local_size_y_id = 0) in;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer C { float c[]; };
layout(push_constant) uniform P {
    uint m; uint k; uint n; uint stride_a; uint stride_b; uint trans_a; uint trans_b;
} p;

shared float tile_a[TILE][TILE]; // [row of C][k]
shared float tile_b[TILE][TILE]; // [k][column of C]

// A[row, kk] of batch entry `base`, zero outside the matrix.
float load_a(uint base, uint row, uint kk) {
    if (row >= p.m || kk >= p.k) return 0.0;
    return p.trans_a != 0 ? a[base + kk * p.m + row] : a[base + row * p.k + kk];
}

// B[kk, col] of batch entry `base`, zero outside the matrix.
float load_b(uint base, uint kk, uint col) {
    if (kk >= p.k || col >= p.n) return 0.0;
    return p.trans_b != 0 ? b[base + col * p.k + kk] : b[base + kk * p.n + col];
}

void main() {
    uint tx = gl_LocalInvocationID.x; // column within the tile
    uint ty = gl_LocalInvocationID.y; // row within the tile
    uint col = gl_WorkGroupID.x * TILE + tx;
    uint row = gl_WorkGroupID.y * TILE + ty;
    uint batch = gl_WorkGroupID.z;
    uint base_a = batch * p.stride_a;
    uint base_b = batch * p.stride_b;
    float acc = 0.0;
    for (uint k0 = 0; k0 < p.k; k0 += TILE) {
        tile_a[ty][tx] = load_a(base_a, row, k0 + tx);
        tile_b[ty][tx] = load_b(base_b, k0 + ty, col);
        barrier();
        for (uint kk = 0; kk < TILE; ++kk) acc += tile_a[ty][kk] * tile_b[kk][tx];
        barrier();
    }
    if (row < p.m && col < p.n) c[(batch * p.m + row) * p.n + col] = acc;
}
