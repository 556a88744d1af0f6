/* Type-generic GEMM body; included by gemm.c with `real`, SUFFIX, BLAS_GEMM,
 * BLAS_FN_T (undefined again at the end). */
#define FN(name) FR_CAT(name, SUFFIX)

/* C (M, N) = alpha op(A) op(B) + beta C with the kernel's own loops. The inner
 * loops run along contiguous rows so the compiler vectorises them. */
static void FN(portable_gemm)(real *C, const real *A, const real *B, int tA, int tB,
                              int64_t M, int64_t N, int64_t K, real alpha, real beta,
                              int64_t lda, int64_t ldb, int64_t ldc) {
    for (int64_t i = 0; i < M; i++) {
        real *c = C + i * ldc; /* (N) */
        if (beta == 0) {
            for (int64_t j = 0; j < N; j++) c[j] = 0; /* beta = 0 never reads C */
        } else if (beta != 1) {
            for (int64_t j = 0; j < N; j++) c[j] *= beta;
        }
    }
    if (!tB) {
        /* C[i, :] += alpha * op(A)[i, k] * B[k, :] */
        for (int64_t i = 0; i < M; i++) {
            real *c = C + i * ldc;
            for (int64_t k = 0; k < K; k++) {
                real a = alpha * (tA ? A[k * lda + i] : A[i * lda + k]);
                const real *b = B + k * ldb;
                for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
            }
        }
    } else {
        /* C[i, j] += alpha * dot(op(A)[i, :], B[j, :]) */
        for (int64_t i = 0; i < M; i++) {
            real *c = C + i * ldc;
            for (int64_t j = 0; j < N; j++) {
                const real *b = B + j * ldb;
                real acc = 0;
                if (tA) {
                    for (int64_t k = 0; k < K; k++) acc += A[k * lda + i] * b[k];
                } else {
                    const real *a = A + i * lda;
                    for (int64_t k = 0; k < K; k++) acc += a[k] * b[k];
                }
                c[j] += alpha * acc;
            }
        }
    }
}

int FN(fr_gemm)(real *C, const real *A, const real *B, int tA, int tB,
                int64_t M, int64_t N, int64_t K, real alpha, real beta,
                int64_t lda, int64_t ldb, int64_t ldc) {
    if (M == 0 || N == 0) return FR_OK;
    if (!fr_fits_int(M) || !fr_fits_int(N) || !fr_fits_int(K) || !fr_fits_int(lda) ||
        !fr_fits_int(ldb) || !fr_fits_int(ldc))
        return FR_EOVERFLOW;
    if (K == 0) alpha = 0; /* C = beta C */
    BLAS_FN_T gemm = BLAS_GEMM;
    if (gemm == NULL || K == 0) {
        FN(portable_gemm)(C, A, B, tA, tB, M, N, K, alpha, beta, lda, ldb, ldc);
        return FR_OK;
    }
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the
     * operands and keep the transpose flags. BLAS takes no const pointers. */
    char ta = tA ? 'T' : 'N', tb = tB ? 'T' : 'N';
    int m = (int)N, n = (int)M, k = (int)K;
    int ia = (int)lda, ib = (int)ldb, ic = (int)ldc;
    /* BLAS requires ld >= max(1, rows of the stored column-major matrix). */
    if (ia < 1) ia = 1;
    if (ib < 1) ib = 1;
    gemm(&tb, &ta, &m, &n, &k, &alpha, (real *)B, &ib, (real *)A, &ia, &beta, C, &ic);
    return FR_OK;
}

/* One entry of a loop's GEMM table (common.h): columns [c0, c0 + nc) of
 * C (M, N) (+)= A (M, K) . op(W) (K, N). */
int FN(fr_wgemm)(real *C, int64_t ldc, const real *A, int64_t lda, const FN(fr_wmat) *W,
                 int64_t M, int64_t c0, int64_t nc, int64_t K, int beta1) {
    if (W->packed) {
        FN(fr_ugemm)(C + c0, ldc, A, lda, 0, W->packed + c0 * K, 0, M, nc, K, beta1);
        return FR_OK;
    }
    const real *w = W->trans ? W->W + c0 * W->ld : W->W + c0;
    return FN(fr_gemm)(C + c0, A, w, 0, W->trans, M, nc, K, 1, beta1 ? 1 : 0, lda, W->ld, ldc);
}

/* Gate blocks q0 .. q0 + nq - 1 (H columns each) of a gated cell's accumulations,
 * units [h0, h0 + nh):  C[:, q H + j] (+)= A (M, K) . op(W)[:, q H + j]. On the
 * micro-kernel from per-gate panels (fr_pack_gates), else in one provider call
 * over the blocks' nq H columns (its single member owns every unit). */
int FN(fr_gates_gemm)(real *C, int64_t ldc, const real *A, int64_t lda, const FN(fr_wmat) *W,
                      int64_t M, int64_t K, int64_t H, int q0, int nq, int64_t h0, int64_t nh,
                      int beta1) {
    if (nh <= 0) return FR_OK;
    if (W->packed == NULL) return FN(fr_wgemm)(C, ldc, A, lda, W, M, q0 * H, nq * H, K, beta1);
    const int64_t PW = FR_PW(real), H_pad = (H + PW - 1) / PW * PW;
    for (int q = q0; q < q0 + nq; q++)
        FN(fr_ugemm)(C + q * H + h0, ldc, A, lda, 0, W->packed + (q * H_pad + h0) * K, 0, M, nh,
                     K, beta1);
    return FR_OK;
}

/* Units [h0, h0 + nh) of every gate block of W (gates H, K), row-major, packed
 * as op(W) = W^T: gate q's panels start at (q H_pad + h0) K of Wp (the layout
 * does not depend on the split over members). */
void FN(fr_pack_gates)(real *Wp, const real *W, int gates, int64_t H, int64_t K, int64_t h0,
                       int64_t nh) {
    const int64_t PW = FR_PW(real), H_pad = (H + PW - 1) / PW * PW;
    for (int q = 0; nh > 0 && q < gates; q++)
        FN(fr_pack)(Wp + (q * H_pad + h0) * K, W + (q * H + h0) * K, 1, nh, K, K);
}

/* The gradient GEMMs: columns [c0, c0 + nc) of C (M, N) += op(A) (M, K) . Y (K, N). */
int FN(fr_agemm)(int uk, real *C, int64_t ldc, const real *A, int64_t lda, int ta,
                 const real *Y, int64_t ldy, int64_t M, int64_t c0, int64_t nc, int64_t K) {
    if (uk) {
        FN(fr_ugemm)(C + c0, ldc, A, lda, ta, Y + c0, ldy, M, nc, K, 1);
        return FR_OK;
    }
    return FN(fr_gemm)(C + c0, A, Y + c0, ta, 0, M, nc, K, 1, 1, lda, ldy, ldc);
}

/* The gradient of a recurrent weight: columns [c0, c0 + nc) of
 *     C (M, N) += sum over steps n in [t_lo, t_hi) of A[n]^T Y[prev(n)]
 * for A (T, B, lda) and Y (T, B, ldy) by steps, prev(n) = n - 1 (reverse:
 * n + 1), and Y0 (B, ldy) in place of Y[prev] at the first visited step: two
 * GEMMs, the first step's then the others' (T, B rows fit int: the configs). */
void FN(fr_prev_gemm)(int uk, real *C, int64_t ldc, const real *A, int64_t lda, const real *Y0,
                      const real *Y, int64_t ldy, int64_t M, int64_t c0, int64_t nc, int64_t B,
                      int64_t T, int reverse, int64_t t_lo, int64_t t_hi) {
    const int64_t first = reverse ? T - 1 : 0;
    if (first >= t_lo && first < t_hi)
        FN(fr_agemm)(uk, C, ldc, A + first * B * lda, lda, 1, Y0, ldy, M, c0, nc, B);
    const int64_t lo = reverse ? t_lo : (t_lo > 1 ? t_lo : 1);
    const int64_t hi = reverse ? (t_hi < T - 1 ? t_hi : T - 1) : t_hi;
    if (hi > lo)
        FN(fr_agemm)(uk, C, ldc, A + lo * B * lda, lda, 1, Y + (lo + (reverse ? 1 : -1)) * B * ldy,
                     ldy, M, c0, nc, (hi - lo) * B);
}

#undef FN
#undef real
#undef SUFFIX
#undef BLAS_GEMM
#undef BLAS_FN_T
