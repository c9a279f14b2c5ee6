#version 450
// matmul.comp: batched C[b] = op(A[b]) . op(B[b]), op = optional transpose.
// Bindings: 0 A (read), 1 B (read), 2 C (written, [batch, m, n]).
// Push constants: m, k, n, batch stride of A and of B (0 broadcasts one matrix to every
// batch entry), trans_a, trans_b (A stored [k, m], B stored [n, k]).
// Tiling: a TILE x TILE workgroup computes a BM x BN = (TILE*WPT)^2 block of C; every
// invocation holds a WPT x WPT block of accumulators in registers (rows ty + TILE*i,
// columns tx + TILE*j, so neighbouring invocations write neighbouring columns). Each
// step stages a BM x TILE slab of A and a TILE x BN slab of B in shared memory, loaded
// cooperatively (WPT elements of each per invocation). TILE and WPT are specialization
// constants 0 and 1 (the host picks 16 and 4: 64 x 64 blocks, 256 invocations).
// gl_WorkGroupID.z is the batch entry.
// Speed: 2*WPT shared loads feed WPT^2 multiply-adds (8 per 16 here, against 2 per 1
// for one output per invocation), so large products are bound by FMA throughput on
// GPUs; small ones (m or n well below 64) waste most of the block. Transposed operands
// load uncoalesced; the host could permute first if a profile shows it.
layout(constant_id = 0) const uint TILE = 16;
layout(constant_id = 1) const uint WPT = 4;
layout(local_size_x_id = 0, local_size_y_id = 0) in;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer C { float c[]; };
layout(push_constant) uniform P {
    uint m; uint k; uint n; uint stride_a; uint stride_b; uint trans_a; uint trans_b;
} p;

const uint BM = TILE * WPT; // rows of C per workgroup (and columns: the block is square)
shared float tile_a[TILE][BM]; // [k][row of C]
shared float tile_b[TILE][BM]; // [k][column of C]

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
    uint tx = gl_LocalInvocationID.x;
    uint ty = gl_LocalInvocationID.y;
    uint t = ty * TILE + tx;
    uint row0 = gl_WorkGroupID.y * BM;
    uint col0 = gl_WorkGroupID.x * BM;
    uint batch = gl_WorkGroupID.z;
    uint base_a = batch * p.stride_a;
    uint base_b = batch * p.stride_b;
    float acc[WPT][WPT];
    for (uint i = 0; i < WPT; ++i)
        for (uint j = 0; j < WPT; ++j) acc[i][j] = 0.0;
    for (uint k0 = 0; k0 < p.k; k0 += TILE) {
        for (uint l = 0; l < WPT; ++l) {
            uint idx = t + l * TILE * TILE; // 0 .. TILE*BM
            uint r = idx / TILE, kk = idx % TILE; // A slab: consecutive t walk along k
            tile_a[kk][r] = load_a(base_a, row0 + r, k0 + kk);
            uint kb = idx / BM, cb = idx % BM; // B slab: consecutive t walk along n
            tile_b[kb][cb] = load_b(base_b, k0 + kb, col0 + cb);
        }
        barrier();
        for (uint kk = 0; kk < TILE; ++kk) {
            float ra[WPT], rb[WPT];
            for (uint i = 0; i < WPT; ++i) ra[i] = tile_a[kk][ty + TILE * i];
            for (uint j = 0; j < WPT; ++j) rb[j] = tile_b[kk][tx + TILE * j];
            for (uint i = 0; i < WPT; ++i)
                for (uint j = 0; j < WPT; ++j) acc[i][j] += ra[i] * rb[j];
        }
        barrier();
    }
    for (uint i = 0; i < WPT; ++i) {
        uint row = row0 + ty + TILE * i;
        if (row >= p.m) continue;
        for (uint j = 0; j < WPT; ++j) {
            uint col = col0 + tx + TILE * j;
            if (col < p.n) c[(batch * p.m + row) * p.n + col] = acc[i][j];
        }
    }
}
