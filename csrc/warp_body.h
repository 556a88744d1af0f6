/* The warping functions over contiguous rows, type-generic (`real`, EXP, FN
 * from the including body). The loops auto-vectorise: EXP is branch-free and
 * every choice inside a loop is a select. docs/equations.md §9 lists them. */
FR_ALWAYS_INLINE void FN(vsigmoid)(real *y, const real *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = (real)1 / ((real)1 + EXP(-a[i])); /* G_c = sigma */
}
/* tanh(a) = 1 - 2 / (1 + e^{2a}): absolute error ~ulp(1), saturates to +-1. */
FR_ALWAYS_INLINE void FN(vtanh)(real *y, const real *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = (real)1 - (real)2 / ((real)1 + EXP(2 * a[i]));
}
static inline real FN(tanh1)(real a) { return (real)1 - (real)2 / ((real)1 + EXP(2 * a)); }
static inline real FN(sigmoid1)(real a) { return (real)1 / ((real)1 + EXP(-a)); }
static inline real FN(abs1)(real a) { return a < 0 ? -a : a; }
/* clip(a, -c, c) (§3c) */
static inline real FN(clip)(real a, real c) { return a > c ? c : (a < -c ? -c : a); }
/* log(1 + u) for u in [0, 1]: 2 atanh(s), s = u / (2 + u) in [0, 1/3], by its
 * series to s^35 (the next term is below 2e-19 of the sum). */
static inline real FN(log1p_unit)(real u) {
    const real s = u / (2 + u), s2 = s * s;
    real p = (real)1 / 35;
    for (int k = 33; k >= 1; k -= 2) p = p * s2 + (real)1 / (real)k; /* constant trip count */
    return 2 * s * p;
}

/* y = G(a) for the functions other than sigmoid and tanh (y may alias a). */
FR_TARGET_CLONES __attribute__((unused))
static void FN(vwarp_other)(real *y, const real *a, int64_t n, int kind, real al, real be) {
    switch (kind) {
    case FR_ACT_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = a[i] < 0 ? 0 : a[i];
        break;
    case FR_ACT_HARD_SIGMOID:
        for (int64_t i = 0; i < n; i++) {
            const real z = al * a[i] + be;
            y[i] = z < 0 ? 0 : (z > 1 ? 1 : z);
        }
        break;
    case FR_ACT_AFFINE:
        for (int64_t i = 0; i < n; i++) y[i] = al * a[i] + be;
        break;
    case FR_ACT_LEAKY_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = a[i] < 0 ? al * a[i] : a[i];
        break;
    case FR_ACT_THRESHOLDED_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = a[i] > al ? a[i] : 0;
        break;
    case FR_ACT_SCALED_TANH:
        for (int64_t i = 0; i < n; i++) y[i] = al * FN(tanh1)(be * a[i]);
        break;
    case FR_ACT_ELU:
        for (int64_t i = 0; i < n; i++) {
            const real e = al * (EXP(a[i] < 0 ? a[i] : 0) - 1);
            y[i] = a[i] < 0 ? e : a[i];
        }
        break;
    case FR_ACT_SOFTSIGN:
        for (int64_t i = 0; i < n; i++) y[i] = a[i] / (1 + FN(abs1)(a[i]));
        break;
    default: /* FR_ACT_SOFTPLUS: max(a, 0) + log(1 + e^-|a|), never overflows */
        for (int64_t i = 0; i < n; i++)
            y[i] = (a[i] > 0 ? a[i] : 0) + FN(log1p_unit)(EXP(-FN(abs1)(a[i])));
        break;
    }
}

/* y = G(a) (y may alias a); sigmoid and tanh inline, as the default path. */
FR_ALWAYS_INLINE void FN(vwarp)(const fr_activation *f, real *y, const real *a, int64_t n) {
    if (f->kind == FR_ACT_SIGMOID) FN(vsigmoid)(y, a, n);
    else if (f->kind == FR_ACT_TANH) FN(vtanh)(y, a, n);
    else FN(vwarp_other)(y, a, n, f->kind, (real)f->alpha, (real)f->beta);
}

/* d *= G'(a), the derivative at a (left derivative at a kink: relu'(0) = 0,
 * leaky_relu'(0) = elu'(0) = alpha, thresholded_relu'(alpha) = 0;
 * hard_sigmoid' = alpha strictly inside (0, 1), else 0). */
FR_TARGET_CLONES __attribute__((unused))
static void FN(vwarp_grad_mul)(real *restrict d, const real *restrict a, int64_t n,
                               const fr_activation *f) {
    const real al = (real)f->alpha, be = (real)f->beta;
    switch (f->kind) {
    case FR_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) {
            const real g = FN(sigmoid1)(a[i]);
            d[i] *= g * (1 - g);
        }
        break;
    case FR_ACT_TANH:
        for (int64_t i = 0; i < n; i++) {
            const real t = FN(tanh1)(a[i]);
            d[i] *= 1 - t * t;
        }
        break;
    case FR_ACT_RELU:
        for (int64_t i = 0; i < n; i++) d[i] *= a[i] > 0 ? 1 : 0;
        break;
    case FR_ACT_HARD_SIGMOID:
        for (int64_t i = 0; i < n; i++) {
            const real z = al * a[i] + be;
            d[i] *= (z > 0 && z < 1) ? al : 0;
        }
        break;
    case FR_ACT_AFFINE:
        for (int64_t i = 0; i < n; i++) d[i] *= al;
        break;
    case FR_ACT_LEAKY_RELU:
        for (int64_t i = 0; i < n; i++) d[i] *= a[i] > 0 ? 1 : al;
        break;
    case FR_ACT_THRESHOLDED_RELU:
        for (int64_t i = 0; i < n; i++) d[i] *= a[i] > al ? 1 : 0;
        break;
    case FR_ACT_SCALED_TANH:
        for (int64_t i = 0; i < n; i++) {
            const real t = FN(tanh1)(be * a[i]);
            d[i] *= al * be * (1 - t * t);
        }
        break;
    case FR_ACT_ELU:
        for (int64_t i = 0; i < n; i++) d[i] *= a[i] > 0 ? 1 : al * EXP(a[i] < 0 ? a[i] : 0);
        break;
    case FR_ACT_SOFTSIGN:
        for (int64_t i = 0; i < n; i++) {
            const real q = 1 + FN(abs1)(a[i]);
            d[i] *= 1 / (q * q);
        }
        break;
    default: /* FR_ACT_SOFTPLUS: sigma(a) */
        for (int64_t i = 0; i < n; i++) d[i] *= FN(sigmoid1)(a[i]);
        break;
    }
}

/* y = G(clip(a, -c, c)), c = 0: no clip (y may alias a): a gate with ONNX's clip. */
FR_ALWAYS_INLINE void FN(vwarp_clipped)(const fr_activation *f, real *y, const real *a, real c,
                                        int64_t n) {
    if (c > 0) {
        for (int64_t i = 0; i < n; i++) y[i] = FN(clip)(a[i], c);
        FN(vwarp)(f, y, y, n);
    } else {
        FN(vwarp)(f, y, a, n);
    }
}

/* For a backward that kept the accumulations a: y = G(clip(a, -c, c)) and its
 * whole derivative d = dy/da = G'(clip(a)) 1{|a| <= c} (c = inf: no clip). */
FR_ALWAYS_INLINE void FN(vwarp_regate)(const fr_activation *f, real *restrict y, real *restrict d,
                                       const real *restrict a, real c, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        d[i] = (real)((a[i] <= c) & (a[i] >= -c)); /* no branch */
        y[i] = FN(clip)(a[i], c);
    }
    FN(vwarp_grad_mul)(d, y, n, f);
    FN(vwarp)(f, y, y, n);
}
