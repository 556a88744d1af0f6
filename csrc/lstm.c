/* Vanilla LSTM with diagonal peepholes (§2): one body, two precisions. */
#include "common.h"

static int lstm_check_config(const fr_lstm_config *cfg) {
    if (cfg == NULL) return FR_ENULL;
    if (cfg->T < 1 || cfg->B < 1 || cfg->I < 1 || cfg->H < 1) return FR_EINVAL;
    if (cfg->peepholes != 0 && cfg->peepholes != 1) return FR_EINVAL;
    /* GEMM dims: rows T*B and columns 4H go to BLAS as int. */
    size_t TB, G;
    FR_CHECK(fr_mul(&TB, (size_t)cfg->T, (size_t)cfg->B));
    FR_CHECK(fr_mul(&G, 4, (size_t)cfg->H));
    if (!fr_fits_int((int64_t)TB) || !fr_fits_int((int64_t)G) || !fr_fits_int(cfg->I))
        return FR_EOVERFLOW;
    return FR_OK;
}

/* gates (T, B, 4H) + states s (T, B, H) = T * B * 5H elements. */
int fr_lstm_acts_size(size_t *n_elems, const fr_lstm_config *cfg) {
    FR_CHECK(lstm_check_config(cfg));
    size_t n;
    FR_CHECK(fr_mul3(&n, (size_t)cfg->T, (size_t)cfg->B, (size_t)cfg->H));
    FR_CHECK(fr_mul(&n, n, 5));
    if (n > FR_MAX_ELEMS) return FR_EOVERFLOW;
    *n_elems = n;
    return FR_OK;
}

/* Training keeps its gates in the activation store and needs no scratch.
 * Inference: gate chunk (Tc, B, 4H) + state ping-pong (2, B, H). */
int fr_lstm_workspace_size(size_t *n_elems, const fr_lstm_config *cfg, int training) {
    FR_CHECK(lstm_check_config(cfg));
    if (training) {
        *n_elems = 0;
        return FR_OK;
    }
    size_t chunk, states, n;
    int64_t tc = fr_inference_chunk(cfg->T, cfg->B);
    FR_CHECK(fr_mul3(&chunk, (size_t)tc, (size_t)cfg->B, 4 * (size_t)cfg->H));
    FR_CHECK(fr_mul3(&states, 2, (size_t)cfg->B, (size_t)cfg->H));
    FR_CHECK(fr_add(&n, chunk, states));
    if (n > FR_MAX_ELEMS) return FR_EOVERFLOW;
    *n_elems = n;
    return FR_OK;
}

/* dA (T, B, 4H) all steps' alpha_* + f_chi, f_psi (B, H) + r row (H) +
 * zeros (max(B, 3), H) + peephole-gradient sink (3, H). */
int fr_lstm_backward_workspace_size(size_t *n_elems, const fr_lstm_config *cfg) {
    FR_CHECK(lstm_check_config(cfg));
    size_t dA, rows, rest, n;
    size_t B = (size_t)cfg->B;
    FR_CHECK(fr_mul3(&dA, (size_t)cfg->T, B, 4 * (size_t)cfg->H));
    rows = 2 * B + 1 + (B > 3 ? B : 3) + 3; /* B < INT_MAX by the config check */
    FR_CHECK(fr_mul(&rest, rows, (size_t)cfg->H));
    FR_CHECK(fr_add(&n, dA, rest));
    if (n > FR_MAX_ELEMS) return FR_EOVERFLOW;
    *n_elems = n;
    return FR_OK;
}

#define real float
#define SUFFIX _f32
#define EXP fr_exp_f32
#include "lstm_body.h"
#undef real
#undef SUFFIX
#undef EXP

#define real double
#define SUFFIX _f64
#define EXP fr_exp_f64
#include "lstm_body.h"
#undef real
#undef SUFFIX
#undef EXP
