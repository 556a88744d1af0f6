/* Canonical RNN (§1): s[n] = W_s s[n-1] + W_r r[n-1] + W_x x[n] + theta_s,
 * r[n] = G(clip(s[n])) (G = tanh by default, §9). One body, two precisions. */
#include "common.h"
#include "qgemm.h"

static int rnn_check_config(const fr_rnn_config *cfg) {
    if (cfg == NULL) return FR_ENULL;
    if (cfg->state_feedback != 0 && cfg->state_feedback != 1) return FR_EINVAL;
    if (!(cfg->accumulation_clip >= 0) || !fr_activation_ok(&cfg->activation)) return FR_EINVAL;
    if (cfg->reduced < FR_REDUCED_NONE || cfg->reduced > FR_REDUCED_INT8) return FR_EINVAL;
    FR_CHECK(fr_check_sequence(cfg->T, cfg->B, cfg->I, cfg->H, 1, cfg->reverse, cfg->lengths));
    if (cfg->reduced == FR_REDUCED_INT8 &&
        (cfg->I > FR_S8_MAX_K || cfg->H > FR_S8_MAX_K)) /* int32 sums of K products */
        return FR_EOVERFLOW;
    return FR_OK;
}

/* ---- the buffers: one region table each (see lstm.c) -------------------------- */
/* forward workspace; RF_QX, RF_QR: the activations of the reduced x-side and
 * recurrent GEMMs, rounded or quantised (qgemm.h) */
enum { RF_CHUNK, RF_S_RING, RF_WX_P, RF_WR_P, RF_WS_P, RF_QX, RF_QR, RF_COUNT };
enum { RQ_WX, RQ_WR, RQ_COUNT }; /* reduced-precision weights (bytes) */
enum { RP_WX, RP_WR, RP_WS, RP_COUNT }; /* packed float forward weights (fr_rnn_pack_*) */
enum { RB_PSI, RB_F_CHI, RB_F_PSI, RB_HOLD_CHI, RB_HOLD_PSI, RB_DG_ROW, RB_CS_ROW, RB_WR_P,
       RB_WS_P, RB_SAVE, RB_COUNT };                                                  /* backward workspace */

/* The backward needs s[n] for dE/dW_s and for G'(clip(s[n])): states (T, B, H)
 * with state feedback or a general G, nothing otherwise (tanh'(s[n]) = 1 - r[n]^2
 * comes from the output). */
static int rnn_acts_elems(size_t *n, const fr_rnn_config *cfg) {
    *n = 0;
    if (cfg->state_feedback || fr_rnn_general(cfg)) FR_CHECK(fr_mul3(n, (size_t)cfg->T, (size_t)cfg->B, (size_t)cfg->H));
    return *n > FR_MAX_ELEMS ? FR_EOVERFLOW : FR_OK;
}

/* A chunk of accumulations (Tc, B, H) and a state ping-pong (2, B, H) whenever
 * the states are not kept in the activation store; the micro-kernel's panels
 * of W_x^T, W_r^T, W_s^T (H_pad columns each; reduced precision: of W_s^T only,
 * and the reduced GEMMs' activations, bytes in floats). */
static int rnn_forward_regions(size_t n[RF_COUNT], const fr_rnn_config *cfg, int training) {
    const size_t B = (size_t)cfg->B, H = (size_t)cfg->H, H32 = fr_pad32(cfg->H);
    memset(n, 0, RF_COUNT * sizeof n[0]);
    if (!(training && (cfg->state_feedback || fr_rnn_general(cfg)))) {
        FR_CHECK(fr_mul3(&n[RF_CHUNK], (size_t)fr_inference_chunk(cfg->T, cfg->B), B, H));
        FR_CHECK(fr_mul3(&n[RF_S_RING], 2, B, H));
    }
    FR_CHECK(fr_mul(&n[RF_WX_P], H32, (size_t)cfg->I));
    FR_CHECK(fr_mul(&n[RF_WR_P], H32, H));
    n[RF_WS_P] = cfg->state_feedback ? n[RF_WR_P] : 0;
    if (cfg->reduced && !training) {
        n[RF_WX_P] = n[RF_WR_P] = 0;
        FR_CHECK(fr_qcall_floats(&n[RF_QX], &n[RF_QR], cfg->reduced,
                                 fr_inference_chunk(cfg->T, cfg->B) * cfg->B, cfg->I, cfg->B,
                                 cfg->H));
    }
    return FR_OK;
}

/* The micro-kernel's panels of W_x^T, W_r^T (and W_s^T), the layout the forward
 * packs into RF_WX_P, RF_WR_P, RF_WS_P. */
static int rnn_packed_regions(size_t n[RP_COUNT], const fr_rnn_config *cfg) {
    FR_CHECK(fr_mul(&n[RP_WX], fr_pad32(cfg->H), (size_t)cfg->I));
    FR_CHECK(fr_mul(&n[RP_WR], fr_pad32(cfg->H), (size_t)cfg->H));
    n[RP_WS] = cfg->state_feedback ? n[RP_WR] : 0;
    return FR_OK;
}

/* Bytes of the reduced panels of W_x^T (ceil(H / 32) panels of K = I) and W_r^T
 * (K = H), each a multiple of 128 bytes. */
static int rnn_qpacked_regions(size_t n[RQ_COUNT], const fr_rnn_config *cfg) {
    FR_CHECK(fr_qpacked_bytes(&n[RQ_WX], cfg->reduced, cfg->H, cfg->I));
    return fr_qpacked_bytes(&n[RQ_WR], cfg->reduced, cfg->H, cfg->H);
}

/* psi (T, B, H) of every step, the carries f_chi, f_psi and their holds
 * (B, H) x 4, the panels of W_r, W_s (K = H, N = H), and the weight gradients
 * as they were (restored when a call is interrupted). */
static int rnn_backward_regions(size_t n[RB_COUNT], const fr_rnn_config *cfg) {
    const size_t T = (size_t)cfg->T, B = (size_t)cfg->B, H = (size_t)cfg->H;
    const size_t I = (size_t)cfg->I;
    FR_CHECK(fr_mul3(&n[RB_PSI], T, B, H));
    FR_CHECK(fr_mul(&n[RB_F_CHI], B, H));
    n[RB_F_PSI] = n[RB_HOLD_CHI] = n[RB_HOLD_PSI] = n[RB_F_CHI];
    n[RB_DG_ROW] = n[RB_CS_ROW] = fr_rnn_general(cfg) ? H : 0; /* (H) G', clip(s) of a row */
    FR_CHECK(fr_mul(&n[RB_WR_P], fr_pad32(cfg->H), H));
    n[RB_WS_P] = cfg->state_feedback ? n[RB_WR_P] : 0;
    size_t w;
    FR_CHECK(fr_mul(&w, H, I + H + 1 + (cfg->state_feedback ? H : 0)));
    n[RB_SAVE] = w;
    return FR_OK;
}

static fr_plan rnn_plan(const fr_rnn_config *cfg, const fr_call *call, size_t elem,
                        int prepacked) {
    const fr_plan_input in = {.T = cfg->T, .B = cfg->B, .units = cfg->H, .rec_cols = cfg->H,
                              .rec_depth = cfg->H * (cfg->state_feedback ? 2 : 1), .elem = elem,
                              .ukernel_ok = 1, .prepacked = prepacked || cfg->reduced != 0};
    return fr_plan_cell(&in, call);
}

int fr_rnn_acts_size(size_t *n_elems, const fr_rnn_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(rnn_check_config(cfg));
    return rnn_acts_elems(n_elems, cfg);
}

int fr_rnn_workspace_size(size_t *n_elems, const fr_rnn_config *cfg, int training) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(rnn_check_config(cfg));
    size_t n[RF_COUNT];
    FR_CHECK(rnn_forward_regions(n, cfg, training));
    return fr_regions_total(n_elems, n, RF_COUNT, 1);
}

int fr_rnn_backward_workspace_size(size_t *n_elems, const fr_rnn_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(rnn_check_config(cfg));
    size_t n[RB_COUNT];
    FR_CHECK(rnn_backward_regions(n, cfg));
    return fr_regions_total(n_elems, n, RB_COUNT, 1);
}

int fr_rnn_packed_size(size_t *n_elems, const fr_rnn_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(rnn_check_config(cfg));
    size_t n[RP_COUNT];
    FR_CHECK(rnn_packed_regions(n, cfg));
    return fr_regions_total(n_elems, n, RP_COUNT, 1);
}

int fr_rnn_qpacked_size(size_t *bytes, const fr_rnn_config *cfg) {
    if (bytes == NULL) return FR_ENULL;
    FR_CHECK(rnn_check_config(cfg));
    if (!cfg->reduced) return FR_EINVAL;
    size_t n[RQ_COUNT];
    FR_CHECK(rnn_qpacked_regions(n, cfg));
    return fr_add(bytes, n[RQ_WX], n[RQ_WR]);
}

int fr_rnn_qpack(void *packed, const void *W_x, const float *W_x_scale, const void *W_r,
                 const float *W_r_scale, const fr_rnn_config *cfg) {
    FR_CHECK(rnn_check_config(cfg));
    if (!cfg->reduced) return FR_EINVAL;
    size_t n[RQ_COUNT];
    FR_CHECK(rnn_qpacked_regions(n, cfg));
    return fr_qpack_cell(packed, cfg->reduced, W_x, W_x_scale, W_r, W_r_scale, cfg->H, cfg->I,
                         cfg->H, 1, n[RQ_WX]);
}

#define real float
#define SUFFIX _f32
#define EXP fr_exp_f32
#define FR_REDUCED_OK 1 /* the reduced-precision GEMMs compute in float32 */
#include "rnn_body.h"

#define real double
#define SUFFIX _f64
#define EXP fr_exp_f64
#define FR_REDUCED_OK 0
#include "rnn_body.h"
