// nan_math.glsl: max and relu that propagate NaN, as IEEE `maximum` and PyTorch do (the
// reference device defines it: engine/src/reference/elementwise.rs). GLSL leaves the
// result of max() with a NaN operand to the implementation (lavapipe returns the other
// operand, which made relu(NaN) = 0), so the NaN case is written out. Included, never
// compiled on its own; tests/nan.rs checks every kernel that uses it.

// max(a, b), NaN when either is.
float nan_max(float a, float b) {
    return isnan(a) || isnan(b) ? a + b : max(a, b);
}

// max(v, 0), NaN for NaN.
float relu(float v) {
    return isnan(v) ? v : max(v, 0.0);
}
