/* GEMM dispatch: a Fortran BLAS handed in at run time (SciPy's, through
 * scipy.linalg.cython_blas), or the portable loops below. Row-major API. */
#include "common.h"

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
