/* Canonical RNN (§1): s[n] = W_s s[n-1] + W_r r[n-1] + W_x x[n] + theta_s,
 * r[n] = tanh(s[n]). One body, two precisions. */
#include "common.h"

static int rnn_check_config(const fr_rnn_config *cfg) {
    if (cfg == NULL) return FR_ENULL;
    if (cfg->T < 1 || cfg->B < 1 || cfg->I < 1 || cfg->H < 1) return FR_EINVAL;
    if (cfg->state_feedback != 0 && cfg->state_feedback != 1) return FR_EINVAL;
    if (cfg->reverse != 0 && cfg->reverse != 1) return FR_EINVAL;
    if (cfg->lengths)
        for (int64_t b = 0; b < cfg->B; b++)
            if (cfg->lengths[b] < 0 || cfg->lengths[b] > cfg->T) return FR_EINVAL;
    size_t TB;
    FR_CHECK(fr_mul(&TB, (size_t)cfg->T, (size_t)cfg->B));
    if (!fr_fits_int((int64_t)TB) || !fr_fits_int(cfg->H) || !fr_fits_int(cfg->I))
        return FR_EOVERFLOW;
    return FR_OK;
}

/* The backward needs s[n] only for dE/dW_s: states (T, B, H) with state
 * feedback, nothing without (G'(s[n]) = 1 - r[n]^2 comes from the output). */
int fr_rnn_acts_size(size_t *n_elems, const fr_rnn_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(rnn_check_config(cfg));
    size_t n = 0;
    if (cfg->state_feedback)
        FR_CHECK(fr_mul3(&n, (size_t)cfg->T, (size_t)cfg->B, (size_t)cfg->H));
    if (n > FR_MAX_ELEMS) return FR_EOVERFLOW;
    *n_elems = n;
    return FR_OK;
}

/* Chunk of accumulations (Tc, B, H) + state ping-pong (2, B, H), used whenever
 * the states are not kept in the activation store. */
int fr_rnn_workspace_size(size_t *n_elems, const fr_rnn_config *cfg, int training) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(rnn_check_config(cfg));
    if (training && cfg->state_feedback) {
        *n_elems = 0;
        return FR_OK;
    }
    size_t chunk, states, n;
    int64_t tc = fr_inference_chunk(cfg->T, cfg->B);
    FR_CHECK(fr_mul3(&chunk, (size_t)tc, (size_t)cfg->B, (size_t)cfg->H));
    FR_CHECK(fr_mul3(&states, 2, (size_t)cfg->B, (size_t)cfg->H));
    FR_CHECK(fr_add(&n, chunk, states));
    if (n > FR_MAX_ELEMS) return FR_EOVERFLOW;
    *n_elems = n;
    return FR_OK;
}

/* psi (T, B, H) of every step + f_chi, f_psi, and their holds (B, H) x 4. */
int fr_rnn_backward_workspace_size(size_t *n_elems, const fr_rnn_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(rnn_check_config(cfg));
    size_t psi, carry, n;
    FR_CHECK(fr_mul3(&psi, (size_t)cfg->T, (size_t)cfg->B, (size_t)cfg->H));
    FR_CHECK(fr_mul3(&carry, 4, (size_t)cfg->B, (size_t)cfg->H));
    FR_CHECK(fr_add(&n, psi, carry));
    if (n > FR_MAX_ELEMS) return FR_EOVERFLOW;
    *n_elems = n;
    return FR_OK;
}

#define real float
#define SUFFIX _f32
#define EXP fr_exp_f32
#include "rnn_body.h"
#undef real
#undef SUFFIX
#undef EXP

#define real double
#define SUFFIX _f64
#define EXP fr_exp_f64
#include "rnn_body.h"
#undef real
#undef SUFFIX
#undef EXP
