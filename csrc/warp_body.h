/* The warping functions over contiguous rows, type-generic (`real`, EXP, FN
 * from the including body). The loops auto-vectorise: EXP is branch-free. */
static inline void FN(vsigmoid)(real *y, const real *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = (real)1 / ((real)1 + EXP(-a[i])); /* G_c = sigma */
}
/* tanh(a) = 1 - 2 / (1 + e^{2a}): absolute error ~ulp(1), saturates to +-1. */
static inline void FN(vtanh)(real *y, const real *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = (real)1 - (real)2 / ((real)1 + EXP(2 * a[i]));
}
