/* GEMM dispatch: a Fortran BLAS handed in at run time (SciPy's, through
 * scipy.linalg.cython_blas), or the portable loops below. Row-major API. */
#include "common.h"
#include "qgemm.h"

static fr_sgemm_fn g_sgemm = NULL;
static fr_dgemm_fn g_dgemm = NULL;

void fr_set_blas(fr_sgemm_fn sgemm, fr_dgemm_fn dgemm) {
    g_sgemm = sgemm;
    g_dgemm = dgemm;
}

int fr_have_blas(void) { return g_sgemm != NULL && g_dgemm != NULL; }

const char *fr_status_str(int status) {
    switch (status) {
    case FR_OK: return "ok";
    case FR_EINVAL: return "invalid size or option";
    case FR_EOVERFLOW: return "size overflow";
    case FR_ENULL: return "required buffer is NULL";
    case FR_EINTR: return "interrupted";
    default: return "unknown status";
    }
}

#define real float
#define SUFFIX _f32
#define BLAS_GEMM g_sgemm
#define BLAS_FN_T fr_sgemm_fn
#include "gemm_body.h"

#define real double
#define SUFFIX _f64
#define BLAS_GEMM g_dgemm
#define BLAS_FN_T fr_dgemm_fn
#include "gemm_body.h"

void fr_qgemm_cols(float *C, int64_t ldc, const float *A, int64_t lda, const void *panels,
                   const fr_qcall *qc, void *qa, int64_t M, int64_t K, int64_t c0, int64_t nc,
                   int gates, int64_t gate_cols, int64_t gate_ldc, int beta1, int id, int nth,
                   fr_team *team) {
    int64_t m0, m1;
    fr_share(&m0, &m1, M, 1, id, nth);
    fr_qprep(qa, A, lda, qc->type, qc->isa, M, K, m0, m1);
    fr_team_barrier(team); /* every row of A rounded or quantised */
    if (nc <= 0) return;
    const size_t pb = fr_qpanel_bytes(qc->type, K);
    const int64_t gate_panels = (gate_cols + 31) / 32;
    for (int q = 0; q < gates; q++)
        fr_qgemm_prepped(C + q * gate_ldc + c0, ldc, qa,
                         (const char *)panels + (size_t)(q * gate_panels + c0 / 32) * pb,
                         qc->type, qc->isa, M, nc, K, beta1);
}
