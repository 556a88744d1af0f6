/* Packed-weight GEMM for the small per-step recurrent products, type-generic
 * (`real`, FN from the including body). At small batch the recurrent GEMM of
 * a step is a few rows times a weight matrix that stays the same for all T
 * steps: packing the weights once per call into panels of VL columns (one
 * vector register wide) lets every step stream them contiguously, and a
 * register-blocked loop of GCC vector operations (compiled per ISA through
 * FR_TARGET_CLONES) replaces a BLAS call whose fixed cost dominates there.
 *
 *   C (M, N) (+)= A (M, K) . op(W),  op(W) = W^T for W (N, K) (forward, W_v),
 *                                    op(W) = W   for W (K, N) (backward, W_v)
 *   Wp: ceil(N / VL) panels of (K, VL): Wp[p][k][i] = op(W)[k][p VL + i], zero-padded. */
typedef real FN(vreal) __attribute__((vector_size(32)));
#define VL ((int64_t)(32 / sizeof(real)))

static inline int64_t FN(packed_size)(int64_t N, int64_t K) { return (N + VL - 1) / VL * VL * K; }

static void FN(pack_weights)(real *restrict Wp, const real *restrict W, int transposed,
                             int64_t N, int64_t K) {
    const int64_t NP = (N + VL - 1) / VL;
    for (int64_t p = 0; p < NP; p++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < VL; i++) {
                const int64_t n = p * VL + i;
                Wp[(p * K + k) * VL + i] = n >= N ? 0 : transposed ? W[n * K + k] : W[k * N + n];
            }
}

/* One register block: MR rows x NPB panels, both compile-time constants after
 * inlining, so the accumulators live in registers. */
static inline __attribute__((always_inline)) void
FN(packed_block)(real *C, int64_t ldc, const real *A, int64_t lda, const real *Wp, int64_t K,
                 int64_t n0, int64_t N, int beta1, const int MR, const int NPB) {
    FN(vreal) acc[4][4];
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NPB; q++) acc[r][q] = (FN(vreal)){0};
    for (int64_t k = 0; k < K; k++) {
        FN(vreal) w[4];
        for (int q = 0; q < NPB; q++) memcpy(&w[q], Wp + ((int64_t)q * K + k) * VL, sizeof w[q]);
        for (int r = 0; r < MR; r++) {
            const real a = A[r * lda + k];
            for (int q = 0; q < NPB; q++) acc[r][q] += a * w[q];
        }
    }
    for (int r = 0; r < MR; r++) {
        real *c = C + r * ldc;
        for (int q = 0; q < NPB; q++) {
            real lane[32 / sizeof(real)];
            memcpy(lane, &acc[r][q], sizeof lane);
            const int64_t base = n0 + q * VL;
            const int64_t nv = N - base < VL ? N - base : VL;
            for (int64_t i = 0; i < nv; i++) c[base + i] = beta1 ? c[base + i] + lane[i] : lane[i];
        }
    }
}

/* Panels in groups of NPB for MR rows (the tail group narrower). */
static inline __attribute__((always_inline)) void
FN(packed_rows)(real *C, int64_t ldc, const real *A, int64_t lda, const real *Wp, int64_t N,
                int64_t K, int beta1, const int MR, const int NPB) {
    const int64_t NP = (N + VL - 1) / VL;
    int64_t p = 0;
    for (; p + NPB <= NP; p += NPB)
        FN(packed_block)(C, ldc, A, lda, Wp + p * K * VL, K, p * VL, N, beta1, MR, NPB);
    for (; p < NP; p++)
        FN(packed_block)(C, ldc, A, lda, Wp + p * K * VL, K, p * VL, N, beta1, MR, 1);
}

FR_TARGET_CLONES
static void FN(packed_gemm)(real *C, int64_t ldc, const real *A, int64_t lda, const real *Wp,
                            int64_t M, int64_t N, int64_t K, int beta1) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) /* 4 rows x 2 panels: 8 accumulators */
        FN(packed_rows)(C + m * ldc, ldc, A + m * lda, lda, Wp, N, K, beta1, 4, 2);
    switch (M - m) { /* fewer rows: more panels at once keep the FMA units busy */
    case 3: FN(packed_rows)(C + m * ldc, ldc, A + m * lda, lda, Wp, N, K, beta1, 3, 2); break;
    case 2: FN(packed_rows)(C + m * ldc, ldc, A + m * lda, lda, Wp, N, K, beta1, 2, 3); break;
    case 1: FN(packed_rows)(C + m * ldc, ldc, A + m * lda, lda, Wp, N, K, beta1, 1, 4); break;
    default: break;
    }
}

#undef VL
