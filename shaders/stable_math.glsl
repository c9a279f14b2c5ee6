// stable_math.glsl: sigmoid and softplus written so that no intermediate overflows for
// large |x|, shared by unary.comp and the fused coupling kernels. Included, never
// compiled on its own.

// ln(1 + t) for t in [0, 1], accurate for small t (Goldberg's trick: the rounding
// error of u = 1 + t cancels in log(u) / (u - 1)).
float log1p_small(float t) {
    float u = 1.0 + t;
    return u == 1.0 ? t : log(u) * (t / (u - 1.0));
}

// 1 / (1 + e^-x): e^-|x| never overflows; pick the branch whose numerator is bounded.
float sigmoid_stable(float v) {
    float e = exp(-abs(v));
    return v >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

// ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|); NaN stays NaN (GLSL's max may drop it).
float softplus_stable(float v) {
    return isnan(v) ? v : max(v, 0.0) + log1p_small(exp(-abs(v)));
}
