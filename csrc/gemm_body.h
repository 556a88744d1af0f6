/* Type-generic GEMM body; included by gemm.c with `real`, SUFFIX, BLAS_GEMM. */
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

#undef FN
