/* One ISA path of the reduced-precision GEMM (qgemm.c), included once per
 * (type, ISA) with these parameters, all undefined again at the end:
 *   QSUF      name suffix                QATTR   target attribute (or empty)
 *   QS8       1: int8 (dequantising epilogue), 0: bf16
 *   QU8       int8: 1 feeds u8 = a + 128 (the VNNI paths), 0 s8
 *   VL, NV    32-bit lanes per vector, vectors per panel row (VL NV = FR_QPW)
 *   VACC, VW, VA   accumulator, loaded weight words, broadcast activation word
 *   QZERO()   zero accumulator          QWLOAD(p)  VL words of W at p
 *   QABCAST(p) the activation word at p for every lane
 *   QSTEP(acc, a, w)  acc + the G products of a and w in each lane
 *   QOUT(acc, cs, sw, sa)  float32 lanes of an accumulator (int8: cs the
 *             columns' sums of W, sw their scales, sa the row's scale)
 *   QK_SHAPE  the tile shapes (FR_TILE in common.h)
 * The epilogue's float32 vectors (VF, VFLOAD, VFSTORE, VFADD) follow VL.
 *
 *   C (M, N) (+)= A (M, K) . W (K, N)
 * A: (M, kg) words of activations (G values each), row stride lda words;
 * W: panels of FR_QPW columns, panel q at W + q ldp words, (kg, FR_QPW) words,
 * an int8 panel followed by 32 column sums and 32 scales; sa (M) row scales. */
#define Q(name) FR_CAT(name, QSUF)
#if VL == 16
#define VF __m512
#define VFLOAD(p) _mm512_loadu_ps(p)
#define VFSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VFADD(a, b) _mm512_add_ps((a), (b))
#elif VL == 8
#define VF __m256
#define VFLOAD(p) _mm256_loadu_ps(p)
#define VFSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VFADD(a, b) _mm256_add_ps((a), (b))
#else
#define VF float
#define VFLOAD(p) (*(p))
#define VFSTORE(p, v) (*(p) = (v))
#define VFADD(a, b) ((a) + (b))
#endif

/* MR rows x NP panels over all kg words of K: MR NP NV accumulators in
 * registers (the int parameters are constants after inlining). ncols: valid
 * columns from the first panel on. */
static inline __attribute__((always_inline)) QATTR void
Q(tile)(float *C, int64_t ldc, const uint32_t *A, int64_t lda, const uint32_t *W, int64_t ldp,
        int64_t kg, int64_t ncols, const float *sa, int beta1, const int MR, const int NP) {
    VACC acc[FR_TILE(MAXR, QK_SHAPE)][4 * NV];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NP * NV; j++) acc[r][j] = QZERO();
    for (int64_t g = 0; g < kg; g++) {
        VW w[4 * NV];
        for (int q = 0; q < NP; q++)
            for (int v = 0; v < NV; v++) w[q * NV + v] = QWLOAD(W + q * ldp + g * FR_QPW + v * VL);
        for (int r = 0; r < MR; r++) {
            const VA a = QABCAST(A + r * lda + g);
            for (int j = 0; j < NP * NV; j++) acc[r][j] = QSTEP(acc[r][j], a, w[j]);
        }
    }
    for (int r = 0; r < MR; r++) {
        float *c = C + r * ldc;
        const float s_a = QS8 ? sa[r] : 0.0f;
        (void)s_a;
        for (int j = 0; j < NP * NV; j++) {
            const int64_t col = (int64_t)j * VL;
            if (col >= ncols) break;
            /* the panel's column sums (32 int32) and scales (32 float) */
            const uint32_t *epi = QS8 ? W + (j / NV) * ldp + kg * FR_QPW + (j % NV) * VL : W;
            (void)epi;
            const VF out = QOUT(acc[r][j], epi, epi + FR_QPW, s_a);
            if (col + VL <= ncols) {
                VFSTORE(c + col, beta1 ? VFADD(VFLOAD(c + col), out) : out);
            } else { /* the last, partial vector */
                float lane[VL];
                VFSTORE(lane, out);
                for (int64_t i = 0; i < ncols - col; i++)
                    c[col + i] = beta1 ? c[col + i] + lane[i] : lane[i];
            }
        }
    }
}

/* Rows [*m, M) in tiles of MR rows against panels [p0, p1), NP at a time. */
static inline __attribute__((always_inline)) QATTR void
Q(panel_rows)(float *C, int64_t ldc, const uint32_t *A, int64_t lda, const uint32_t *W,
              int64_t ldp, const float *sa, int64_t M, int64_t N, int64_t kg, int64_t p0,
              int64_t p1, int beta1, int64_t *m_io, const int MR, const int NP) {
    int64_t m = *m_io;
    for (; m + MR <= M; m += MR) {
        float *c = C + m * ldc;
        const uint32_t *a = A + m * lda;
        const float *s = QS8 ? sa + m : NULL;
        int64_t p = p0;
        for (; p + NP <= p1; p += NP)
            Q(tile)(c + p * FR_QPW, ldc, a, lda, W + p * ldp, ldp, kg, N - p * FR_QPW, s, beta1,
                    MR, NP);
        for (; p < p1; p++)
            Q(tile)(c + p * FR_QPW, ldc, a, lda, W + p * ldp, ldp, kg, N - p * FR_QPW, s, beta1,
                    MR, 1);
    }
    *m_io = m;
}

/* All rows against all panels: groups of 4 panels (reused from L2 by every row
 * tile), the largest row tile first, then the remainder in tiles of 4, 2, 1
 * rows with more panels each. */
static QATTR void Q(gemm)(float *C, int64_t ldc, const uint32_t *A, int64_t lda,
                          const uint32_t *W, int64_t ldp, const float *sa, int64_t M, int64_t N,
                          int64_t kg, int beta1) {
    const int64_t n_panels = (N + FR_QPW - 1) / FR_QPW;
    for (int64_t p0 = 0; p0 < n_panels; p0 += 4) {
        const int64_t p1 = p0 + 4 < n_panels ? p0 + 4 : n_panels;
        int64_t m = 0;
        Q(panel_rows)(C, ldc, A, lda, W, ldp, sa, M, N, kg, p0, p1, beta1, &m, FR_TILE(MR, QK_SHAPE), FR_TILE(MR_NP, QK_SHAPE));
        Q(panel_rows)(C, ldc, A, lda, W, ldp, sa, M, N, kg, p0, p1, beta1, &m, 4, FR_TILE(4_NP, QK_SHAPE));
        Q(panel_rows)(C, ldc, A, lda, W, ldp, sa, M, N, kg, p0, p1, beta1, &m, 2, FR_TILE(2_NP, QK_SHAPE));
        Q(panel_rows)(C, ldc, A, lda, W, ldp, sa, M, N, kg, p0, p1, beta1, &m, 1, FR_TILE(1_NP, QK_SHAPE));
    }
}

/* The activations in this path's format (the scalar code of qgemm.c, compiled
 * for the path's ISA so that it vectorises there). */
static QATTR void Q(prep)(uint32_t *Aw, int64_t ldaw, float *sa, const float *A, int64_t lda,
                          int64_t M, int64_t K) {
#if QS8
    q_prep_s8(Aw, ldaw, sa, A, lda, M, K, QU8);
#else
    (void)sa;
    q_prep_bf16(Aw, ldaw, A, lda, M, K);
#endif
}

#undef Q
#undef QSUF
#undef QATTR
#undef QS8
#undef QU8
#undef VL
#undef NV
#undef VACC
#undef VW
#undef VA
#undef QZERO
#undef QWLOAD
#undef QABCAST
#undef QSTEP
#undef QOUT
#undef VF
#undef VFLOAD
#undef VFSTORE
#undef VFADD
#undef QK_SHAPE
