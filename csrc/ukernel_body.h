/* One ISA's register-blocked tile for the packed-weight GEMM (ukernel.c),
 * included once per (ISA, precision) with: real, UKSUF, VEC, VL (lanes), NV
 * (vectors per panel = FR_PW(real) / VL), VLOAD, VSTORE, VFMA(a, b, c) = a b + c,
 * VBCAST, VZERO, VADD.
 *
 *   C (M, N) (+)= A (M, K) . W,  W packed as panels of FR_PW columns:
 *   Wp[p][k][i] = W[k][p PW + i] (zero past N), one panel (K, PW) contiguous. */
#define UK(name) FR_CAT(name, UKSUF)

/* MR rows x NP panels over K: MR * NP * NV accumulators in registers (the
 * constants are known after inlining). ldp: elements from one panel to the
 * next; ncols: valid columns from the first panel on. */
static inline __attribute__((always_inline)) void
UK(tile)(real *C, int64_t ldc, const real *A, int64_t lda, const real *Wp, int64_t K,
         int64_t ldp, int64_t ncols, int beta1, const int MR, const int NP) {
    enum { PW = NV * VL };
    VEC acc[UK_MAXR][4 * NV];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NP * NV; j++) acc[r][j] = VZERO();
    for (int64_t k = 0; k < K; k++) {
        VEC w[4 * NV];
        for (int q = 0; q < NP; q++)
            for (int v = 0; v < NV; v++) w[q * NV + v] = VLOAD(Wp + q * ldp + k * PW + v * VL);
        for (int r = 0; r < MR; r++) {
            const VEC a = VBCAST(A + r * lda + k);
            for (int j = 0; j < NP * NV; j++) acc[r][j] = VFMA(a, w[j], acc[r][j]);
        }
    }
    for (int r = 0; r < MR; r++) {
        real *c = C + r * ldc;
        for (int j = 0; j < NP * NV; j++) {
            const int64_t col = (int64_t)j * VL;
            if (col + VL <= ncols) {
                VEC out = acc[r][j];
                if (beta1) out = VADD(out, VLOAD(c + col));
                VSTORE(c + col, out);
            } else if (col < ncols) { /* the last, partial vector */
                real lane[VL];
                VSTORE(lane, acc[r][j]);
                for (int64_t i = 0; i < ncols - col; i++)
                    c[col + i] = beta1 ? c[col + i] + lane[i] : lane[i];
            }
        }
    }
}

/* Rows [m, M) against panels [p0, p1) in tiles of MR rows: the largest MR first,
 * then the remainder in tiles of 4, 2, 1 rows with more panels each. */
static inline __attribute__((always_inline)) void
UK(panel_rows)(real *C, int64_t ldc, const real *A, int64_t lda, const real *Wp, int64_t M,
               int64_t N, int64_t K, int64_t kc, int64_t p0, int64_t p1, int beta1, const int MR,
               const int NP, int64_t *m_io) {
    enum { PW = NV * VL };
    int64_t m = *m_io;
    for (; m + MR <= M; m += MR) {
        int64_t p = p0;
        for (; p + NP <= p1; p += NP)
            UK(tile)(C + m * ldc + p * PW, ldc, A + m * lda, lda, Wp + p * K * PW, kc, K * PW, N - p * PW,
                     beta1, MR, NP);
        for (; p < p1; p++)
            UK(tile)(C + m * ldc + p * PW, ldc, A + m * lda, lda, Wp + p * K * PW, kc, K * PW, N - p * PW,
                     beta1, MR, 1);
    }
    *m_io = m;
}

/* K in chunks of UK_KC (the A rows of a tile stay in L1), and within a chunk
 * groups of 4 panels (reused from L2 by every row tile). */
static void UK(ugemm)(real *C, int64_t ldc, const real *A, int64_t lda, const real *Wp,
                      int64_t M, int64_t N, int64_t K, int beta1) {
    enum { PW = NV * VL };
    const int64_t n_panels = (N + PW - 1) / PW;
    for (int64_t k0 = 0; k0 < K; k0 += UK_KC) {
        const int64_t kc = K - k0 < UK_KC ? K - k0 : UK_KC;
        const int b1 = beta1 || k0 > 0;
        for (int64_t p0 = 0; p0 < n_panels; p0 += 4) {
            const int64_t p1 = p0 + 4 < n_panels ? p0 + 4 : n_panels;
            int64_t m = 0;
            const real *Ak = A + k0, *Wk = Wp + k0 * PW;
            UK(panel_rows)(C, ldc, Ak, lda, Wk, M, N, K, kc, p0, p1, b1, UK_MR, UK_MR_NP, &m);
            UK(panel_rows)(C, ldc, Ak, lda, Wk, M, N, K, kc, p0, p1, b1, 4, UK_4_NP, &m);
            UK(panel_rows)(C, ldc, Ak, lda, Wk, M, N, K, kc, p0, p1, b1, 2, UK_2_NP, &m);
            UK(panel_rows)(C, ldc, Ak, lda, Wk, M, N, K, kc, p0, p1, b1, 1, UK_1_NP, &m);
        }
    }
}

#undef UK
