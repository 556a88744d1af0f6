/* One ISA's register-blocked tile for the micro-kernel GEMM (ukernel.c),
 * included once per (ISA, precision) with: real, UKSUF, VEC, VL (lanes), NV
 * (vectors per panel = FR_PW(real) / VL), VLOAD, VLOADM(p, n) (the first n
 * lanes, zeros after, no access past them), VSTORE, VFMA(a, b, c) = a b + c,
 * VBCAST, VZERO, VADD, and UK_SHAPE, the ISA's tile shapes
 * (MAXR, MR, MR_NP, 4_NP, 2_NP, 1_NP): at most MAXR rows, tiles of MR rows x
 * MR_NP panels, then of 4, 2, 1 rows x *_NP panels. All of them are undefined
 * again at the end, so an instantiation defines just these.
 *
 *   C (M, N) (+)= op(A) (M, K) . W (K, N)
 *   op(A) = A (M, K) with row stride lda, or A^T for A (K, M) (ta = 1);
 *   W packed (ldw = 0): panels of PW columns, Wp[p][k][i] = W[k][p PW + i]
 *   (zero past N), each panel (K, PW) contiguous; or W row-major with row
 *   stride ldw (the big GEMMs after the backward loop read activations in place). */
#define UK(name) FR_CAT(name, UKSUF)
#define UK_MAXR FR_TILE(MAXR, UK_SHAPE)
#define UK_MR FR_TILE(MR, UK_SHAPE)
#define UK_MR_NP FR_TILE(MR_NP, UK_SHAPE)
#define UK_4_NP FR_TILE(4_NP, UK_SHAPE)
#define UK_2_NP FR_TILE(2_NP, UK_SHAPE)
#define UK_1_NP FR_TILE(1_NP, UK_SHAPE)

/* MR rows x NP panels over kc steps of K: MR * NP * NV accumulators in
 * registers (every int parameter is a constant after inlining). W element
 * (k, panel q, lane i) is at W[q ldp + k ldk + i]; ncols: valid columns from
 * the first panel on (MASKED: loads stop there, for a row-major W's last panel). */
static inline __attribute__((always_inline)) void
UK(tile)(real *C, int64_t ldc, const real *A, int64_t lda, const real *W, int64_t ldp,
         int64_t ldk, int64_t kc, int64_t ncols, int beta1, const int MR, const int NP,
         const int TA, const int PACKED, const int MASKED) {
    enum { PW = NV * VL };
    if (PACKED) ldk = PW;
    VEC acc[UK_MAXR][4 * NV];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NP * NV; j++) acc[r][j] = VZERO();
    for (int64_t k = 0; k < kc; k++) {
        VEC w[4 * NV];
        for (int q = 0; q < NP; q++)
            for (int v = 0; v < NV; v++) {
                const real *p = W + q * ldp + k * ldk + v * VL;
                const int64_t left = ncols - (int64_t)(q * PW + v * VL);
                w[q * NV + v] = MASKED && left < VL ? VLOADM(p, left) : VLOAD(p);
            }
        for (int r = 0; r < MR; r++) {
            const VEC a = VBCAST(TA ? A + k * lda + r : A + r * lda + k);
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

/* Rows [*m, M) in tiles of MR rows against panels [p0, p1), NP at a time. */
static inline __attribute__((always_inline)) void
UK(panel_rows)(real *C, int64_t ldc, const real *A, int64_t lda, const real *W, int64_t ldp,
               int64_t ldk, int64_t M, int64_t N, int64_t kc, int64_t p0, int64_t p1, int beta1,
               int64_t *m_io, const int MR, const int NP, const int TA, const int PACKED) {
    enum { PW = NV * VL };
    int64_t m = *m_io;
    for (; m + MR <= M; m += MR) {
        real *c = C + m * ldc;
        const real *a = TA ? A + m : A + m * lda;
        int64_t p = p0;
        for (; p + NP <= p1; p += NP) {
            if (!PACKED && (p + NP) * PW > N)
                UK(tile)(c + p * PW, ldc, a, lda, W + p * ldp, ldp, ldk, kc, N - p * PW, beta1,
                         MR, NP, TA, PACKED, 1);
            else
                UK(tile)(c + p * PW, ldc, a, lda, W + p * ldp, ldp, ldk, kc, N - p * PW, beta1,
                         MR, NP, TA, PACKED, 0);
        }
        for (; p < p1; p++) {
            if (!PACKED && (p + 1) * PW > N)
                UK(tile)(c + p * PW, ldc, a, lda, W + p * ldp, ldp, ldk, kc, N - p * PW, beta1,
                         MR, 1, TA, PACKED, 1);
            else
                UK(tile)(c + p * PW, ldc, a, lda, W + p * ldp, ldp, ldk, kc, N - p * PW, beta1,
                         MR, 1, TA, PACKED, 0);
        }
    }
    *m_io = m;
}

/* One K chunk of rows [0, M) against all panels: groups of 4 panels (reused
 * from L2 by every row tile), the largest row tile first, then the remainder in
 * tiles of 4, 2, 1 rows with more panels each. */
static inline __attribute__((always_inline)) void
UK(chunk)(real *C, int64_t ldc, const real *A, int64_t lda, const real *W, int64_t ldp,
          int64_t ldk, int64_t M, int64_t N, int64_t kc, int beta1, const int TA,
          const int PACKED) {
    enum { PW = NV * VL };
    const int64_t n_panels = (N + PW - 1) / PW;
    for (int64_t p0 = 0; p0 < n_panels; p0 += 4) {
        const int64_t p1 = p0 + 4 < n_panels ? p0 + 4 : n_panels;
        int64_t m = 0;
        UK(panel_rows)(C, ldc, A, lda, W, ldp, ldk, M, N, kc, p0, p1, beta1, &m, UK_MR, UK_MR_NP,
                       TA, PACKED);
        UK(panel_rows)(C, ldc, A, lda, W, ldp, ldk, M, N, kc, p0, p1, beta1, &m, 4, UK_4_NP, TA,
                       PACKED);
        UK(panel_rows)(C, ldc, A, lda, W, ldp, ldk, M, N, kc, p0, p1, beta1, &m, 2, UK_2_NP, TA,
                       PACKED);
        UK(panel_rows)(C, ldc, A, lda, W, ldp, ldk, M, N, kc, p0, p1, beta1, &m, 1, UK_1_NP, TA,
                       PACKED);
    }
}

/* K in chunks of UK_KC (the A rows of a tile stay in L1). */
static inline __attribute__((always_inline)) void
UK(ugemm_t)(real *C, int64_t ldc, const real *A, int64_t lda, const real *W, int64_t ldw,
            int64_t M, int64_t N, int64_t K, int beta1, const int TA, const int PACKED) {
    enum { PW = NV * VL };
    const int64_t ldp = PACKED ? K * PW : PW, ldk = PACKED ? PW : ldw;
    for (int64_t k0 = 0; k0 < K; k0 += UK_KC) {
        const int64_t kc = K - k0 < UK_KC ? K - k0 : UK_KC;
        const int b1 = beta1 || k0 > 0;
        const real *Wk = W + k0 * ldk;
        if (!TA && (lda * (int64_t)sizeof(real) < UK_ALIAS_BYTES || M < UK_COPY_MIN_ROWS)) {
            UK(chunk)(C, ldc, A + k0, lda, Wk, ldp, ldk, M, N, kc, b1, 0, PACKED);
            continue;
        }
        /* Copy UK_MB-row strips of op(A)'s kc columns into Ab, contiguous, and tile
         * that. A^T (the gradient GEMMs, K = T B): A's rows are 4H apart, so walking
         * k in place strides 4-8 KB, a new page and the same L1 sets at every step.
         * A with rows UK_ALIAS_BYTES or more apart (H = 1024: 4 KB): the tile's rows
         * fall on the same few L1 sets and evict each other and the W panels. */
        for (int64_t m0 = 0; m0 < M; m0 += UK_MB) {
            const int64_t mb = M - m0 < UK_MB ? M - m0 : UK_MB;
            real Ab[UK_MB * UK_KC]; /* A^T: (kc, mb), A[k0 + k][m0 + r] at Ab[k mb + r];
                                     * A: (mb, kc), A[m0 + r][k0 + k] at Ab[r kc + k] */
            if (TA) {
                const real *Ak = A + k0 * lda;
                for (int64_t k = 0; k < kc; k++)
                    for (int64_t r = 0; r < mb; r++) Ab[k * mb + r] = Ak[k * lda + m0 + r];
            } else {
                for (int64_t r = 0; r < mb; r++)
                    memcpy(Ab + r * kc, A + (m0 + r) * lda + k0, (size_t)kc * sizeof(real));
            }
            UK(chunk)(C + m0 * ldc, ldc, Ab, TA ? mb : kc, Wk, ldp, ldk, mb, N, kc, b1, TA,
                      PACKED);
        }
    }
}

static void UK(ugemm)(real *C, int64_t ldc, const real *A, int64_t lda, int ta, const real *W,
                      int64_t ldw, int64_t M, int64_t N, int64_t K, int beta1) {
    if (ldw == 0) {
        if (ta) UK(ugemm_t)(C, ldc, A, lda, W, 0, M, N, K, beta1, 1, 1);
        else UK(ugemm_t)(C, ldc, A, lda, W, 0, M, N, K, beta1, 0, 1);
    } else {
        if (ta) UK(ugemm_t)(C, ldc, A, lda, W, ldw, M, N, K, beta1, 1, 0);
        else UK(ugemm_t)(C, ldc, A, lda, W, ldw, M, N, K, beta1, 0, 0);
    }
}

#undef UK
#undef UK_MAXR
#undef UK_MR
#undef UK_MR_NP
#undef UK_4_NP
#undef UK_2_NP
#undef UK_1_NP
/* this instantiation's parameters */
#undef UK_SHAPE
#undef real
#undef VEC
#undef VL
#undef NV
#undef UKSUF
#undef VZERO
#undef VLOAD
#undef VLOADM
#undef VSTORE
#undef VFMA
#undef VBCAST
#undef VADD
