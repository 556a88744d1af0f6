/* The LSTM kernel, Vanilla (§2) and augmented (§3): one body, two precisions.
 * This file validates configurations and lays out the buffers; the math is in
 * lstm_body.h. */
#include "common.h"
#include "qgemm.h"

static int lstm_check_config(const fr_lstm_config *cfg) {
    if (cfg == NULL) return FR_ENULL;
    if (cfg->P < 0) return FR_EINVAL;
    if (cfg->P >= cfg->H && cfg->P != 0) return FR_EINVAL; /* projection must shrink: d_q < d_s */
    if (cfg->peepholes < FR_PEEP_NONE || cfg->peepholes > FR_PEEP_FULL) return FR_EINVAL;
    if (cfg->coupled_gates != 0 && cfg->coupled_gates != 1) return FR_EINVAL;
    /* clips: 0 is off; negative or NaN is invalid */
    if (!(cfg->cell_clip >= 0) || !(cfg->accumulation_clip >= 0)) return FR_EINVAL;
    if (!fr_activation_ok(&cfg->gate) || !fr_activation_ok(&cfg->cell) ||
        !fr_activation_ok(&cfg->output))
        return FR_EINVAL;
    if (cfg->reduced < FR_REDUCED_NONE || cfg->reduced > FR_REDUCED_INT8) return FR_EINVAL;
    FR_CHECK(fr_check_sequence(cfg->T, cfg->B, cfg->I, cfg->H, 4, cfg->reverse, cfg->lengths));
    if (cfg->reduced == FR_REDUCED_INT8 &&
        (cfg->I > FR_S8_MAX_K || cfg->H > FR_S8_MAX_K)) /* int32 sums of K products */
        return FR_EOVERFLOW;
    return FR_OK;
}

/* ---- the buffers: one region table each ------------------------------------
 * Element counts come from these functions only; the size queries sum them and
 * the kernel points into the caller's buffers with them. The micro-kernel's
 * panels are reserved whenever the options allow that path (the plan picks it
 * at call time). */
enum { LA_GATES, LA_S, LA_V, LA_COUNT }; /* the activation store */
enum { LP_WX, LP_WV, LP_WQ, LP_COUNT };  /* packed forward weights */
enum { LQ_WX, LQ_WV, LQ_WQ, LQ_COUNT };  /* reduced-precision forward weights (bytes) */
/* forward workspace; LF_QX, LF_QR: the activations of the reduced x-side and
 * recurrent (and projection) GEMMs, rounded or quantised (qgemm.h) */
enum { LF_CHUNK, LF_S_RING, LF_V_BLK, LF_GW, LF_PACKED, LF_QX, LF_QR, LF_COUNT };
enum {                                                                /* backward workspace */
    LB_DA, LB_DQ, LB_F_CHI, LB_HOLD, LB_F_PSI, LB_CHI, LB_PSI, LB_R_ROW, LB_DR_ROW, LB_ZEROS,
    LB_DW_SINK,
    LB_GW, LB_MASK, LB_WV_P, LB_WQ_P, LB_SAVE, LB_COUNT
};

/* The store keeps the accumulations a_* (not the warped gates): with the
 * accumulation clip, or with a warping function other than the default, whose
 * derivative the backward takes at a_*. */
static int lstm_keeps_accumulations(const fr_lstm_config *cfg) {
    return cfg->accumulation_clip > 0 || fr_lstm_warps_of(cfg).general;
}

static int lstm_ukernel_ok(const fr_lstm_config *cfg) {
    return cfg->peepholes != FR_PEEP_FULL; /* full peepholes: a GEMM between the passes */
}

static int lstm_acts_regions(size_t n[LA_COUNT], const fr_lstm_config *cfg) {
    const size_t T = (size_t)cfg->T, B = (size_t)cfg->B, H = (size_t)cfg->H;
    FR_CHECK(fr_mul3(&n[LA_GATES], T, B, 4 * H)); /* (T, B, 4H) gates or a_* */
    FR_CHECK(fr_mul3(&n[LA_S], T, B, H));         /* (T, B, H) s[n] */
    n[LA_V] = cfg->P ? n[LA_S] : 0;               /* (T, B, H) v[n] with projection */
    return FR_OK;
}

/* Panels of FR_PW columns: the forward's W_x* and W_v* per gate (4 x (H_pad, K)),
 * W_qv^T (P_pad, H). */
static int lstm_packed_regions(size_t n[LP_COUNT], const fr_lstm_config *cfg) {
    const size_t H = (size_t)cfg->H, P = (size_t)cfg->P, R = P ? P : H;
    FR_CHECK(fr_mul3(&n[LP_WX], 4, fr_pad32(cfg->H), (size_t)cfg->I));
    FR_CHECK(fr_mul3(&n[LP_WV], 4, fr_pad32(cfg->H), R));
    FR_CHECK(fr_mul(&n[LP_WQ], fr_pad32(cfg->P), P ? H : 0));
    return FR_OK;
}

static int lstm_packed_total(size_t *total, const fr_lstm_config *cfg) {
    size_t n[LP_COUNT];
    FR_CHECK(lstm_packed_regions(n, cfg));
    return fr_regions_total(total, n, LP_COUNT, 1);
}

/* Bytes of each set of reduced panels: W_x* and W_v* per gate (4 x ceil(H / 32)
 * panels of K = I, R), W_qv^T (ceil(P / 32) panels of K = H); each a multiple of
 * 128 bytes, so every set starts where the one before ends. */
static int lstm_qpacked_regions(size_t n[LQ_COUNT], const fr_lstm_config *cfg) {
    const int64_t R = cfg->P ? cfg->P : cfg->H;
    FR_CHECK(fr_qpacked_bytes(&n[LQ_WX], cfg->reduced, cfg->H, cfg->I));
    FR_CHECK(fr_qpacked_bytes(&n[LQ_WV], cfg->reduced, cfg->H, R));
    FR_CHECK(fr_mul(&n[LQ_WX], n[LQ_WX], 4));
    FR_CHECK(fr_mul(&n[LQ_WV], n[LQ_WV], 4));
    n[LQ_WQ] = 0;
    if (cfg->P) FR_CHECK(fr_qpacked_bytes(&n[LQ_WQ], cfg->reduced, cfg->P, cfg->H));
    return FR_OK;
}

static int lstm_forward_regions(size_t n[LF_COUNT], const fr_lstm_config *cfg, int training) {
    const size_t B = (size_t)cfg->B, H = (size_t)cfg->H;
    size_t BH, B4H;
    FR_CHECK(fr_mul(&BH, B, H));
    FR_CHECK(fr_mul(&B4H, B, 4 * H));
    memset(n, 0, LF_COUNT * sizeof n[0]);
    if (!training) { /* a gate chunk, a state ring, one step of v */
        FR_CHECK(fr_mul(&n[LF_CHUNK], (size_t)fr_inference_chunk(cfg->T, cfg->B), B4H));
        n[LF_S_RING] = 2 * BH;
        n[LF_V_BLK] = cfg->P ? BH : 0;
    }
    n[LF_GW] = lstm_keeps_accumulations(cfg) ? B4H : 0; /* (B, 4H) warped gates when acts keeps a_* */
    if (lstm_ukernel_ok(cfg) && !cfg->reduced) FR_CHECK(lstm_packed_total(&n[LF_PACKED], cfg));
    if (cfg->reduced && !training) {
        const int64_t K = cfg->P ? (cfg->P > cfg->H ? cfg->P : cfg->H) : cfg->H; /* R, H */
        FR_CHECK(fr_qcall_floats(&n[LF_QX], &n[LF_QR], cfg->reduced,
                                 fr_inference_chunk(cfg->T, cfg->B) * cfg->B, cfg->I, cfg->B, K));
    }
    return FR_OK;
}

static int lstm_backward_regions(size_t n[LB_COUNT], const fr_lstm_config *cfg) {
    const size_t T = (size_t)cfg->T, B = (size_t)cfg->B, H = (size_t)cfg->H;
    const size_t P = (size_t)cfg->P, R = P ? P : H;
    size_t BH, BR, B4H;
    FR_CHECK(fr_mul(&BH, B, H));
    FR_CHECK(fr_mul(&BR, B, R));
    FR_CHECK(fr_mul(&B4H, B, 4 * H));
    FR_CHECK(fr_mul3(&n[LB_DA], T, B, 4 * H)); /* (T, B, 4H) alpha_* of every step */
    FR_CHECK(fr_mul3(&n[LB_DQ], T, B, P));     /* (T, B, P) chi_q of every step */
    n[LB_F_CHI] = BR;                          /* (B, R) W_v^T alpha[n+1] */
    n[LB_HOLD] = BR;                           /* (B, R) f_chi carried through padding */
    n[LB_F_PSI] = BH;                          /* (B, H) */
    n[LB_CHI] = BH;                            /* (B, H) dE/dv[n] */
    n[LB_PSI] = BH;                            /* (B, H) dE/ds[n] */
    n[LB_R_ROW] = H;                           /* (H) r[n] of one row */
    n[LB_DR_ROW] = fr_lstm_warps_of(cfg).general ? H : 0; /* (H) G_d'(s[n]) of one row */
    n[LB_ZEROS] = BR > 3 * H ? BR : 3 * H;     /* zeros: absent dy, peepholes */
    n[LB_DW_SINK] = 3 * H;                     /* (3, H) diagonal grads without peepholes */
    n[LB_GW] = B4H;                            /* (B, 4H) gates recomputed from a_* */
    n[LB_MASK] = B4H;                          /* (B, 4H) clip masks (times G' when general) */
    n[LB_WV_P] = n[LB_WQ_P] = 0;
    if (lstm_ukernel_ok(cfg)) {
        FR_CHECK(fr_mul(&n[LB_WV_P], fr_pad32((int64_t)R), 4 * H)); /* W_v (K = 4H, N = R) */
        FR_CHECK(fr_mul(&n[LB_WQ_P], fr_pad32(cfg->H), P));        /* W_qv (K = P, N = H) */
    }
    /* the weight gradients as they were, restored when a call is interrupted */
    size_t w, sum;
    FR_CHECK(fr_mul(&w, 4 * H, (size_t)cfg->I + R + 1));
    FR_CHECK(fr_mul(&sum, P, H));
    FR_CHECK(fr_add(&w, w, sum));
    FR_CHECK(fr_mul3(&sum, 3, H, cfg->peepholes == FR_PEEP_FULL ? H : 1));
    FR_CHECK(fr_add(&n[LB_SAVE], w, sum));
    return FR_OK;
}

/* The plan's view of a call. */
static fr_plan lstm_plan(const fr_lstm_config *cfg, const fr_call *call, size_t elem,
                         int prepacked) {
    const fr_plan_input in = {.T = cfg->T, .B = cfg->B, .units = cfg->H, .rec_cols = 4 * cfg->H,
                              .rec_depth = cfg->P ? cfg->P : cfg->H, .elem = elem,
                              .ukernel_ok = lstm_ukernel_ok(cfg), .prepacked = prepacked};
    return fr_plan_cell(&in, call);
}

int fr_lstm_acts_size(size_t *n_elems, const fr_lstm_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(lstm_check_config(cfg));
    size_t n[LA_COUNT];
    FR_CHECK(lstm_acts_regions(n, cfg));
    return fr_regions_total(n_elems, n, LA_COUNT, 0);
}

int fr_lstm_workspace_size(size_t *n_elems, const fr_lstm_config *cfg, int training) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(lstm_check_config(cfg));
    size_t n[LF_COUNT];
    FR_CHECK(lstm_forward_regions(n, cfg, training));
    return fr_regions_total(n_elems, n, LF_COUNT, 1);
}

int fr_lstm_backward_workspace_size(size_t *n_elems, const fr_lstm_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(lstm_check_config(cfg));
    size_t n[LB_COUNT];
    FR_CHECK(lstm_backward_regions(n, cfg));
    return fr_regions_total(n_elems, n, LB_COUNT, 1);
}

int fr_lstm_qpacked_size(size_t *bytes, const fr_lstm_config *cfg) {
    if (bytes == NULL) return FR_ENULL;
    FR_CHECK(lstm_check_config(cfg));
    if (!cfg->reduced) return FR_EINVAL;
    size_t n[LQ_COUNT], total = 0;
    FR_CHECK(lstm_qpacked_regions(n, cfg));
    for (int i = 0; i < LQ_COUNT; i++) FR_CHECK(fr_add(&total, total, n[i]));
    *bytes = total;
    return FR_OK;
}

int fr_lstm_qpack(void *packed, const void *W_x, const float *W_x_scale, const void *W_v,
                  const float *W_v_scale, const void *W_qv, const float *W_qv_scale,
                  const fr_lstm_config *cfg) {
    FR_CHECK(lstm_check_config(cfg));
    if (!cfg->reduced) return FR_EINVAL;
    const int64_t H = cfg->H, P = cfg->P, R = P ? P : H;
    if (P && (!W_qv || (cfg->reduced == FR_REDUCED_INT8 && !W_qv_scale))) return FR_ENULL;
    size_t n[LQ_COUNT];
    FR_CHECK(lstm_qpacked_regions(n, cfg));
    FR_CHECK(fr_qpack_cell(packed, cfg->reduced, W_x, W_x_scale, W_v, W_v_scale, H, cfg->I, R, 4,
                           n[LQ_WX]));
    if (P) /* W_qv (P, H) after W_x and W_v */
        FR_CHECK(fr_qpack_gates((char *)packed + n[LQ_WX] + n[LQ_WV], cfg->reduced, W_qv,
                                W_qv_scale, P, H, 1));
    return FR_OK;
}

int fr_lstm_packed_size(size_t *n_elems, const fr_lstm_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(lstm_check_config(cfg));
    return lstm_packed_total(n_elems, cfg);
}

#define real float
#define SUFFIX _f32
#define EXP fr_exp_f32
#define FR_REDUCED_OK 1 /* the reduced-precision GEMMs compute in float32 */
#include "lstm_body.h"

#define real double
#define SUFFIX _f64
#define EXP fr_exp_f64
#define FR_REDUCED_OK 0
#include "lstm_body.h"
