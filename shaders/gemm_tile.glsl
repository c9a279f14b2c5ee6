// gemm_tile.glsl: the register-blocked GEMM tiling shared by matmul.comp and the three
// convolution kernels (which are implicit GEMMs: their operands are computed from
// tensor indices on the fly, no im2col buffer). Included, never compiled alone.
//
// C[batch][row, col] = sum_kk A(batch, row, kk) * B(batch, kk, col) over an M x N x K
// problem. The including kernel defines, before the #include:
//   uint gemm_m(); uint gemm_n(); uint gemm_k();
//   float load_a(uint batch, uint row, uint kk);        // called only in range
//   float load_b(uint batch, uint kk, uint col);        // called only in range
//   void store_c(uint batch, uint row, uint col, float v); // called only in range
//
// Tiling: a TILE x TILE workgroup computes a BM x BN block of C (BM = TILE * WM,
// BN = TILE * WN); every invocation holds WM x WN accumulators in registers (rows
// ty + TILE*i, columns tx + TILE*j, so neighbouring invocations touch neighbouring
// columns). Each step stages a BM x TILE slab of A and a TILE x BN slab of B in shared
// memory, loaded cooperatively (WM and WN elements per invocation). TILE, WM and WN
// are specialization constants 0, 1 and 2; the host picks TILE from the device's limits
// (16, or 8 where 256 invocations, their subgroups or 8 KiB of shared memory do not fit:
// `gemm_tile` in engine/src/vulkan/backend.rs) and WM, WN in {1, 2, 4} by the extents, so a 12-row problem is not padded to 64 rows. The grid is
// (ceil(N / BN), ceil(M / BM), batches).
// Speed: WM + WN shared loads feed WM * WN multiply-adds, so large problems are bound by
// FMA throughput (on GPUs) or by the operand loads' index arithmetic (implicit GEMM).
// M below 16 still fills 16-row blocks: conv2d_backward_input with 6 input channels
// (Glow's first coupling layer) runs at a third of the block's rate; a narrower
// workgroup shape for that case is the next step if it shows in a profile.
layout(constant_id = 0) const uint TILE = 16;
layout(constant_id = 1) const uint WM = 4;
layout(constant_id = 2) const uint WN = 4;
layout(local_size_x_id = 0, local_size_y_id = 0) in;

const uint BM = TILE * WM;
const uint BN = TILE * WN;
shared float tile_a[TILE][BM]; // [kk][row of the block]
shared float tile_b[TILE][BN]; // [kk][column of the block]

void main() {
    uint tx = gl_LocalInvocationID.x;
    uint ty = gl_LocalInvocationID.y;
    uint t = ty * TILE + tx;
    uint row0 = gl_WorkGroupID.y * BM;
    uint col0 = gl_WorkGroupID.x * BN;
    uint batch = gl_WorkGroupID.z;
    uint M = gemm_m(), N = gemm_n(), K = gemm_k();
    float acc[WM][WN];
    for (uint i = 0; i < WM; ++i)
        for (uint j = 0; j < WN; ++j) acc[i][j] = 0.0;
    for (uint k0 = 0; k0 < K; k0 += TILE) {
        for (uint l = 0; l < WM; ++l) {
            uint idx = t + l * TILE * TILE; // 0 .. TILE*BM
            uint r = idx / TILE, ka = idx % TILE; // consecutive t walk along k
            bool in_a = row0 + r < M && k0 + ka < K;
            tile_a[ka][r] = in_a ? load_a(batch, row0 + r, k0 + ka) : 0.0;
        }
        for (uint l = 0; l < WN; ++l) {
            uint idx = t + l * TILE * TILE; // 0 .. TILE*BN
            uint kb = idx / BN, cb = idx % BN; // consecutive t walk along columns
            bool in_b = k0 + kb < K && col0 + cb < N;
            tile_b[kb][cb] = in_b ? load_b(batch, k0 + kb, col0 + cb) : 0.0;
        }
        barrier();
        for (uint kk = 0; kk < TILE; ++kk) {
            float ra[WM], rb[WN];
            for (uint i = 0; i < WM; ++i) ra[i] = tile_a[kk][ty + TILE * i];
            for (uint j = 0; j < WN; ++j) rb[j] = tile_b[kk][tx + TILE * j];
            for (uint i = 0; i < WM; ++i)
                for (uint j = 0; j < WN; ++j) acc[i][j] += ra[i] * rb[j];
        }
        barrier();
    }
    for (uint i = 0; i < WM; ++i) {
        uint row = row0 + ty + TILE * i;
        if (row >= M) continue;
        for (uint j = 0; j < WN; ++j) {
            uint col = col0 + tx + TILE * j;
            if (col < N) store_c(batch, row, col, acc[i][j]);
        }
    }
}
