// workgroup_sum.glsl: the sum of one value per invocation over a workgroup of 256, as a
// tree in shared memory: a fixed order, so the result is the same on every run.
// Included, never compiled alone. Every invocation of the workgroup must call it (it
// has barriers), and the workgroup must be 256 wide.

shared float wg_partial[256];

float workgroup_sum(float v) {
    uint l = gl_LocalInvocationID.x;
    wg_partial[l] = v;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1) {
        if (l < s) wg_partial[l] += wg_partial[l + s];
        barrier();
    }
    return wg_partial[0];
}
