/* Type-generic steps every cell body shares, included by each body (with
 * `real` and FN) as it includes warp_body.h: the parts of a call that are the
 * same in every cell, so that a body keeps only its row passes and its GEMMs. */

/* dst (n) = src, or zeros without src: a final state's gradient from a later
 * window, the carry a backward loop starts from. */
static inline void FN(fr_copy_or_zero)(real *restrict dst, const real *restrict src, size_t n) {
    if (src) memcpy(dst, src, n * sizeof(real));
    else memset(dst, 0, n * sizeof(real));
}

/* dst (n) += src when the caller asked for dst: an initial state's gradient. */
static inline void FN(fr_add_to)(real *restrict dst, const real *restrict src, size_t n) {
    if (dst)
        for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/* db[j] += sum over the rows of A[row][j] (row stride lda), j in [j0, j1): a
 * bias gradient, dE/db = sum_n alpha[n], over the rows of a piece. */
static inline void FN(fr_sum_rows)(real *restrict db, const real *restrict A, int64_t lda,
                                   int64_t rows, int64_t j0, int64_t j1) {
    if (j0 >= j1) return;
    for (int64_t row = 0; row < rows; row++)
        for (int64_t j = j0; j < j1; j++) db[j] += A[(size_t)row * lda + j];
}

/* Gate blocks 0 .. nq - 1 (H columns each) of a gated cell's accumulations, units
 * [h0, h0 + nh):  C (M, nq H) (+)= A (M, K) . W, on W's reduced-precision panels
 * (§7: every member of the team calls it, rounds or quantises its share of A's
 * rows and meets the others) or as fr_gates_gemm. qa: the shared buffer of A's
 * reduced rows. */
static inline void FN(fr_gates_product)(real *C, int64_t ldc, const real *A, int64_t lda,
                                        const FN(fr_wmat) *W, const fr_qcall *qc, void *qa,
                                        int64_t M, int64_t K, int64_t H, int nq, int64_t h0,
                                        int64_t nh, int beta1, int id, int nth, fr_team *team) {
    if (W->qpacked)
        fr_qgemm_cols_if(FR_REDUCED_OK, C, ldc, A, lda, W->qpacked, qc, qa, M, K, h0, nh, nq, H,
                         H, beta1, id, nth, team);
    else
        FN(fr_gates_gemm)(C, ldc, A, lda, W, M, K, H, 0, nq, h0, nh, beta1);
}
