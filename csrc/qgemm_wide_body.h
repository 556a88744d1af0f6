/* The widened bf16 GEMM for many rows (qgemm.c), included once per ISA with
 * these parameters, all undefined again at the end:
 *   WSUF      name suffix                WATTR   target attribute
 *   WVL       float32 lanes per vector   WV      the vector type
 *   WMR       rows of the largest tile (WMR x 2 vectors, 2 WMR accumulators)
 *   WKCW      words of K per block of the widened strip
 *   WZERO(), WLOAD(p), WSTORE(p, v), WADD(a, b), WFMA(a, b, c) = a b + c,
 *   WBCAST(p) (the float at p in every lane), WSHL16(i), WHI16(i) (the low /
 *   high bf16 half of each 32-bit word of an integer vector, as float32 bits),
 *   WI, WILOAD(p) (an integer vector, WVL words at p).
 *
 *   C (M, N) (+)= A (M, K) . W (K, N)      (the arguments of qgemm_body.h)
 *
 * A panel at a time: a block of at most KCW words of it (2 KCW values of k,
 * FR_QPW columns) is widened to float32 once into wb on the stack, and so are
 * the activations of a tile's rows (al: the low halves, k = 2g; ah: the high
 * ones, k = 2g + 1); the tile then runs plain float32 FMAs, a broadcast
 * activation against two weight vectors, over the panel's strips of SW
 * columns. Every output's sum
 * is the small-tile path's: +0, then the product of k = 0, 1, 2, ... (the zero
 * of an odd K's last word included), one FMA each; the sums of a row block
 * (MB rows) wait in `part` between blocks of K. */
#define W_(name) FR_CAT(name, WSUF)
#define SW (2 * WVL)
#define KCW WKCW
#define MB 120

/* MR rows [m, m + MR) of the row block (partial sums at part, FR_QPW per row)
 * against words [g0, g0 + gn) of the panel (wb, widened: 2 gn rows of FR_QPW
 * floats), strip after strip; first: start from zero, last: write C (ncols
 * valid columns), else store the partial sums. */
static inline __attribute__((always_inline)) WATTR void
W_(wtile)(float *C, int64_t ldc, const uint32_t *A, int64_t lda, const float *wb, float *part,
          int64_t g0, int64_t gn, int64_t ncols, int first, int last, int beta1, const int MR) {
    float al[WMR][KCW] __attribute__((aligned(64)));
    float ah[WMR][KCW] __attribute__((aligned(64)));
    for (int r = 0; r < MR; r++) {
        const uint32_t *a = A + r * lda + g0;
        int64_t g = 0;
        for (; g + WVL <= gn; g += WVL) {
            WSTORE(&al[r][g], WSHL16(WILOAD(a + g)));
            WSTORE(&ah[r][g], WHI16(WILOAD(a + g)));
        }
        for (; g < gn; g++) {
            const uint32_t lo = a[g] << 16, hi = a[g] & 0xFFFF0000u;
            memcpy(&al[r][g], &lo, 4);
            memcpy(&ah[r][g], &hi, 4);
        }
    }
    if (first)
        for (int r = 0; r < MR; r++)
            for (int64_t j = 0; j < FR_QPW; j += WVL) WSTORE(part + r * FR_QPW + j, WZERO());
    for (int64_t s0 = 0; s0 < ncols; s0 += SW) {
        WV acc[WMR][2];
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < 2; v++) acc[r][v] = WLOAD(part + r * FR_QPW + s0 + v * WVL);
        for (int64_t g = 0; g < gn; g++) {
            const float *w = wb + 2 * g * FR_QPW + s0;
            WV w0 = WLOAD(w), w1 = WLOAD(w + WVL);
            __asm__("" : "+x"(w0), "+x"(w1)); /* in registers, loaded once */
            for (int r = 0; r < MR; r++) {
                const WV a = WBCAST(&al[r][g]);
                acc[r][0] = WFMA(a, w0, acc[r][0]);
                acc[r][1] = WFMA(a, w1, acc[r][1]);
            }
            WV w2 = WLOAD(w + FR_QPW), w3 = WLOAD(w + FR_QPW + WVL);
            __asm__("" : "+x"(w2), "+x"(w3));
            for (int r = 0; r < MR; r++) {
                const WV a = WBCAST(&ah[r][g]);
                acc[r][0] = WFMA(a, w2, acc[r][0]);
                acc[r][1] = WFMA(a, w3, acc[r][1]);
            }
        }
        for (int r = 0; r < MR; r++) {
            if (!last) {
                for (int v = 0; v < 2; v++) WSTORE(part + r * FR_QPW + s0 + v * WVL, acc[r][v]);
                continue;
            }
            float *c = C + r * ldc;
            for (int v = 0; v < 2; v++) {
                const int64_t col = s0 + (int64_t)v * WVL;
                if (col >= ncols) break;
                if (col + WVL <= ncols) {
                    WSTORE(c + col, beta1 ? WADD(WLOAD(c + col), acc[r][v]) : acc[r][v]);
                } else { /* the last, partial vector */
                    float lane[WVL];
                    WSTORE(lane, acc[r][v]);
                    for (int64_t i = 0; i < ncols - col; i++)
                        c[col + i] = beta1 ? c[col + i] + lane[i] : lane[i];
                }
            }
        }
    }
}

static WATTR void W_(gemm_wide)(float *C, int64_t ldc, const uint32_t *A, int64_t lda,
                                const uint32_t *W, int64_t ldp, int64_t M, int64_t N,
                                int64_t kg, int beta1) {
    float wb[2 * KCW * FR_QPW] __attribute__((aligned(64)));
    float part[MB * FR_QPW] __attribute__((aligned(64)));
    for (int64_t col0 = 0; col0 < N; col0 += FR_QPW) {
        const uint32_t *panel = W + (col0 / FR_QPW) * ldp;
        const int64_t ncols = N - col0 < FR_QPW ? N - col0 : FR_QPW;
        for (int64_t m0 = 0; m0 < M; m0 += MB) {
            const int64_t m1 = M - m0 < MB ? M : m0 + MB;
            for (int64_t g0 = 0; g0 < kg; g0 += KCW) {
                const int64_t gn = kg - g0 < KCW ? kg - g0 : KCW;
                for (int64_t g = 0; g < gn; g++)
                    for (int64_t j = 0; j < FR_QPW; j += WVL) {
                        const WI x = WILOAD(panel + (g0 + g) * FR_QPW + j);
                        WSTORE(wb + 2 * g * FR_QPW + j, WSHL16(x));
                        WSTORE(wb + (2 * g + 1) * FR_QPW + j, WHI16(x));
                    }
                const int first = g0 == 0, last = g0 + gn == kg;
                /* ceil(rows / WMR) tiles of as equal heights as can be (7 rows:
                 * 4 + 3, not 5 + 2: a short tile reuses each weight vector less) */
                const int64_t tiles = (m1 - m0 + WMR - 1) / WMR;
                for (int64_t t = 0, m = m0; t < tiles; t++) {
                    const int64_t mr = (m1 - m + (tiles - t) - 1) / (tiles - t);
#define W_TILE(mr)                                                                              \
    W_(wtile)(C + m * ldc + col0, ldc, A + m * lda, lda, wb, part + (m - m0) * FR_QPW, g0, gn, \
              ncols, first, last, beta1, (mr))
                    switch (mr) {
                    case WMR: W_TILE(WMR); break;
#if WMR > 4
                    case 4: W_TILE(4); break;
#endif
#if WMR > 3
                    case 3: W_TILE(3); break;
#endif
                    case 2: W_TILE(2); break;
                    default: W_TILE(1); break;
                    }
#undef W_TILE
                    m += mr;
                }
            }
        }
    }
}

#undef W_
#undef SW
#undef KCW
#undef WKCW
#undef MB
#undef WSUF
#undef WATTR
#undef WVL
#undef WV
#undef WI
#undef WMR
#undef WZERO
#undef WLOAD
#undef WSTORE
#undef WADD
#undef WFMA
#undef WBCAST
#undef WSHL16
#undef WHI16
#undef WILOAD
