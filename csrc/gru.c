/* The GRU (§8), both formulations: one body, two precisions. This file
 * validates configurations and lays out the buffers; the math is in gru_body.h. */
#include "common.h"
#include "qgemm.h"

static int gru_check_config(const fr_gru_config *cfg) {
    if (cfg == NULL) return FR_ENULL;
    if (cfg->linear_before_reset != 0 && cfg->linear_before_reset != 1) return FR_EINVAL;
    if (cfg->reduced < FR_REDUCED_NONE || cfg->reduced > FR_REDUCED_INT8) return FR_EINVAL;
    /* the clip: 0 is off; negative or NaN is invalid */
    if (!(cfg->accumulation_clip >= 0) || !fr_activation_ok(&cfg->gate) ||
        !fr_activation_ok(&cfg->cell))
        return FR_EINVAL;
    FR_CHECK(fr_check_sequence(cfg->T, cfg->B, cfg->I, cfg->H, 4, cfg->reverse, cfg->lengths));
    if (cfg->reduced == FR_REDUCED_INT8 &&
        (cfg->I > FR_S8_MAX_K || cfg->H > FR_S8_MAX_K)) /* int32 sums of K products */
        return FR_EOVERFLOW;
    return FR_OK;
}

/* ---- the buffers: one region table each (see lstm.c) --------------------------
 * A row of the activation store, of an inference chunk and of the backward's
 * alphas has four H-wide blocks:
 *   forward  [g_r | g_z | u | c]          (first the x-side accumulations a_r, a_z, a_n;
 *            [a_r | a_z | a_n | c] in the store when fr_gru_warps_of(cfg).keep)
 *   backward [alpha_r | alpha_z | gamma | alpha_n]
 * so that the rows the per-step recurrent GEMMs read are contiguous: c for
 * W_hn c[n] (8.4), [alpha_r, alpha_z, gamma] for (8.12). */
/* forward workspace; GF_QX, GF_QR: the activations of the reduced x-side and
 * recurrent GEMMs, rounded or quantised (qgemm.h); GF_GW: a step's warped gates */
enum { GF_CHUNK, GF_REC, GF_WX_P, GF_WH_P, GF_QX, GF_QR, GF_GW, GF_COUNT };
enum { GQ_WX, GQ_WH, GQ_COUNT }; /* reduced-precision weights (bytes) */
enum { GP_WX, GP_WH, GP_COUNT }; /* packed float forward weights (fr_gru_pack_*) */
enum { GB_DA, GB_F_CHI, GB_RHO, GB_ZEROS, GB_WH_P, GB_WN_P, GB_SAVE, GB_GW, GB_D,
       GB_COUNT }; /* backward */

static int gru_acts_elems(size_t *n, const fr_gru_config *cfg) {
    FR_CHECK(fr_mul3(n, (size_t)cfg->T, (size_t)cfg->B, 4 * (size_t)cfg->H)); /* (T, B, 4H) */
    return *n > FR_MAX_ELEMS ? FR_EOVERFLOW : FR_OK;
}

/* An inference chunk (Tc, B, 4H) in place of the store, the recurrent products
 * (B, 3H), the micro-kernel's per-gate panels of W_x^T and W_h^T (reduced
 * precision: none, and the reduced GEMMs' activations, bytes in floats; the
 * recurrent ones, h[n-1] or c[n], are B rows of K = H), and when the store
 * keeps the accumulations the step's warped gates (B, 4H) [g_r|g_z|u|.]. */
static int gru_forward_regions(size_t n[GF_COUNT], const fr_gru_config *cfg, int training) {
    const size_t B = (size_t)cfg->B, H = (size_t)cfg->H, H32 = fr_pad32(cfg->H);
    memset(n, 0, GF_COUNT * sizeof n[0]);
    if (!training)
        FR_CHECK(fr_mul3(&n[GF_CHUNK], (size_t)fr_inference_chunk(cfg->T, cfg->B), B, 4 * H));
    FR_CHECK(fr_mul(&n[GF_REC], B, 3 * H));
    if (cfg->reduced && !training)
        return fr_qcall_floats(&n[GF_QX], &n[GF_QR], cfg->reduced,
                               fr_inference_chunk(cfg->T, cfg->B) * cfg->B, cfg->I, cfg->B, cfg->H);
    FR_CHECK(fr_mul3(&n[GF_WX_P], 3, H32, (size_t)cfg->I));
    FR_CHECK(fr_mul3(&n[GF_WH_P], 3, H32, H));
    if (training && fr_gru_warps_of(cfg).keep) FR_CHECK(fr_mul(&n[GF_GW], B, 4 * H));
    return FR_OK;
}

/* The micro-kernel's per-gate panels of W_x^T and W_h^T (3 x (H_pad, K)), the
 * layout the forward packs into GF_WX_P, GF_WH_P. */
static int gru_packed_regions(size_t n[GP_COUNT], const fr_gru_config *cfg) {
    FR_CHECK(fr_mul3(&n[GP_WX], 3, fr_pad32(cfg->H), (size_t)cfg->I));
    return fr_mul3(&n[GP_WH], 3, fr_pad32(cfg->H), (size_t)cfg->H);
}

/* Bytes of the reduced panels of W_x* ^T and W_h* ^T per gate (r, z, n: 3 x
 * ceil(H / 32) panels of K = I, then of K = H), each a multiple of 128 bytes. */
static int gru_qpacked_regions(size_t n[GQ_COUNT], const fr_gru_config *cfg) {
    FR_CHECK(fr_qpacked_bytes(&n[GQ_WX], cfg->reduced, cfg->H, cfg->I));
    FR_CHECK(fr_qpacked_bytes(&n[GQ_WH], cfg->reduced, cfg->H, cfg->H));
    FR_CHECK(fr_mul(&n[GQ_WX], n[GQ_WX], 3));
    return fr_mul(&n[GQ_WH], n[GQ_WH], 3);
}

/* The alphas (T, B, 4H) of every step, the carry f_chi and rho = W_hn^T alpha_n
 * (B, H), zeros for an absent dh, the panels of the backward's recurrent
 * GEMMs (K = 3H, or 2H and H without linear_before_reset; N = H), the
 * weight gradients as they were (restored when a call is interrupted), and
 * when the store keeps the accumulations a step's recomputed gates and their
 * derivatives (B, 4H) each, [g_r|g_z|u|.] and [f'|f'|g'|.]. */
static int gru_backward_regions(size_t n[GB_COUNT], const fr_gru_config *cfg) {
    const size_t T = (size_t)cfg->T, B = (size_t)cfg->B, H = (size_t)cfg->H;
    const size_t I = (size_t)cfg->I, H32 = fr_pad32(cfg->H);
    const int lbr = cfg->linear_before_reset;
    FR_CHECK(fr_mul3(&n[GB_DA], T, B, 4 * H));
    FR_CHECK(fr_mul(&n[GB_F_CHI], B, H));
    n[GB_RHO] = lbr ? 0 : n[GB_F_CHI];
    n[GB_ZEROS] = n[GB_F_CHI];
    FR_CHECK(fr_mul3(&n[GB_WH_P], H32, lbr ? 3 : 2, H));
    FR_CHECK(fr_mul(&n[GB_WN_P], H32, lbr ? 0 : H));
    FR_CHECK(fr_mul(&n[GB_SAVE], 3 * H, I + H + 1));
    FR_CHECK(fr_add(&n[GB_SAVE], n[GB_SAVE], lbr ? H : 0));
    n[GB_GW] = n[GB_D] = 0;
    if (fr_gru_warps_of(cfg).keep) {
        FR_CHECK(fr_mul(&n[GB_GW], B, 4 * H));
        n[GB_D] = n[GB_GW];
    }
    return FR_OK;
}

static fr_plan gru_plan(const fr_gru_config *cfg, const fr_call *call, size_t elem,
                        int prepacked) {
    const fr_plan_input in = {.T = cfg->T, .B = cfg->B, .units = cfg->H, .rec_cols = 3 * cfg->H,
                              .rec_depth = cfg->H, .elem = elem, .ukernel_ok = 1,
                              .prepacked = prepacked || cfg->reduced != 0};
    return fr_plan_cell(&in, call);
}

int fr_gru_acts_size(size_t *n_elems, const fr_gru_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(gru_check_config(cfg));
    return gru_acts_elems(n_elems, cfg);
}

int fr_gru_workspace_size(size_t *n_elems, const fr_gru_config *cfg, int training) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(gru_check_config(cfg));
    size_t n[GF_COUNT];
    FR_CHECK(gru_forward_regions(n, cfg, training));
    return fr_regions_total(n_elems, n, GF_COUNT, 1);
}

int fr_gru_backward_workspace_size(size_t *n_elems, const fr_gru_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(gru_check_config(cfg));
    size_t n[GB_COUNT];
    FR_CHECK(gru_backward_regions(n, cfg));
    return fr_regions_total(n_elems, n, GB_COUNT, 1);
}

int fr_gru_packed_size(size_t *n_elems, const fr_gru_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    FR_CHECK(gru_check_config(cfg));
    size_t n[GP_COUNT];
    FR_CHECK(gru_packed_regions(n, cfg));
    return fr_regions_total(n_elems, n, GP_COUNT, 1);
}

int fr_gru_qpacked_size(size_t *bytes, const fr_gru_config *cfg) {
    if (bytes == NULL) return FR_ENULL;
    FR_CHECK(gru_check_config(cfg));
    if (!cfg->reduced) return FR_EINVAL;
    size_t n[GQ_COUNT];
    FR_CHECK(gru_qpacked_regions(n, cfg));
    return fr_add(bytes, n[GQ_WX], n[GQ_WH]);
}

int fr_gru_qpack(void *packed, const void *W_x, const float *W_x_scale, const void *W_h,
                 const float *W_h_scale, const fr_gru_config *cfg) {
    FR_CHECK(gru_check_config(cfg));
    if (!cfg->reduced) return FR_EINVAL;
    size_t n[GQ_COUNT];
    FR_CHECK(gru_qpacked_regions(n, cfg));
    return fr_qpack_cell(packed, cfg->reduced, W_x, W_x_scale, W_h, W_h_scale, cfg->H, cfg->I,
                         cfg->H, 3, n[GQ_WX]);
}

#define real float
#define SUFFIX _f32
#define EXP fr_exp_f32
#define FR_REDUCED_OK 1 /* the reduced-precision GEMMs compute in float32 */
#include "gru_body.h"

#define real double
#define SUFFIX _f64
#define EXP fr_exp_f64
#define FR_REDUCED_OK 0
#include "gru_body.h"
