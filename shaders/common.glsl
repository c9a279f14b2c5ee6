// common.glsl: helpers shared by the kernels. Included (GL_GOOGLE_include_directive),
// never compiled on its own; build.rs compiles only *.comp files.
//
// Large 1-D launches use a 2-D grid because a dimension of the dispatch is limited to
// 65535 workgroups; `flat_index` folds it back into one element index.

// The element this invocation handles in a 1-D launch over a 2-D grid.
uint flat_index() {
    uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    return group * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
}

// The index of this workgroup in a 1-D launch of workgroups over a 2-D grid.
uint flat_group() {
    return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
}

// Offset of row-major element `i` of a rank-6 `shape` in a buffer laid out with
// `stride` (a stride of 0 broadcasts that axis). Shapes of lower rank are padded on the
// left with extent 1 by the host.
uint offset6(uint i, uint shape[6], uint stride[6]) {
    uint off = 0;
    for (int d = 5; d >= 0; --d) {
        uint e = shape[d];
        off += (i % e) * stride[d];
        i /= e;
    }
    return off;
}
