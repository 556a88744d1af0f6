/* Type-generic canonical RNN body, included by rnn.c with `real`, SUFFIX, EXP.
 * Equation names refer to shared/spec/equations.md §1. */
#define FN(name) FR_CAT(name, SUFFIX)

#include "warp_body.h"

/* s[n] = accumulations + theta_s, r[n] = G(s[n]) for one step. */
FR_TARGET_CLONES
static void FN(rnn_cell_forward)(real *s, real *r, const real *a, const real *theta_s,
                                 int64_t B, int64_t H) {
    for (int64_t bi = 0; bi < B; bi++) {
        real *restrict sr = s + bi * H, *restrict rr = r + bi * H;
        const real *ar = a + bi * H;
        for (int64_t j = 0; j < H; j++) sr[j] = ar[j] + theta_s[j]; /* (s and a may alias) */
        FN(vtanh)(rr, sr, H);
    }
}

/* psi[n] = G'(s[n]) chi[n] + W_s^T psi[n+1], chi[n] = dy/dr[n] + W_r^T psi[n+1]. */
FR_TARGET_CLONES
static void FN(rnn_cell_backward)(real *psi, const real *f_psi, const real *f_chi,
                                  const real *dr, const real *r, size_t BH) {
    const real zero = 0;
    for (size_t i = 0; i < BH; i++) {
        real chi = (dr ? dr[i] : zero) + f_chi[i];
        psi[i] = (1 - r[i] * r[i]) * chi + f_psi[i];
    }
}

int FN(fr_rnn_forward)(FR_RNN_FORWARD_ARGS(real)) {
    FR_CHECK(rnn_check_config(cfg));
    if (!r_seq || !s_T || !r_T || !x || !s0 || !r0 || !W_x || !W_r || !theta_s) return FR_ENULL;
    if (cfg->state_feedback && !W_s) return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H;
    const size_t BH = (size_t)B * H;
    /* States go to the activation store when the backward needs them (state
     * feedback, training); otherwise through a chunk and a ping-pong pair. */
    const int store = acts != NULL && cfg->state_feedback;
    if (!store && !work) return FR_ENULL;
    const int64_t Tc = store ? T : fr_inference_chunk(T, B);
    real *s_all = store ? acts : NULL;                           /* (T, B, H) */
    real *chunk = store ? NULL : work;                           /* (Tc, B, H) */
    real *s_ring = store ? NULL : work + (size_t)Tc * BH;        /* (2, B, H) */

    for (int64_t t0 = 0; t0 < T; t0 += Tc) {
        const int64_t tc = (T - t0 < Tc) ? T - t0 : Tc;
        real *a0 = store ? s_all + (size_t)t0 * BH : chunk; /* (tc, B, H) */
        /* W_x x[n] for tc steps in one GEMM */
        FR_CHECK(FN(fr_gemm)(a0, x + (size_t)t0 * B * I, W_x, 0, 1, tc * B, H, I, 1, 0, I, I, H));
        for (int64_t n = t0; n < t0 + tc; n++) {
            real *a = a0 + (size_t)(n - t0) * BH; /* (B, H) */
            const real *r_prev = n == 0 ? r0 : r_seq + (size_t)(n - 1) * BH;
            const real *s_prev = n == 0 ? s0
                                 : store ? s_all + (size_t)(n - 1) * BH
                                         : s_ring + (size_t)((n - 1) & 1) * BH;
            /* + W_r r[n-1] (+ W_s s[n-1]) */
            FR_CHECK(FN(fr_gemm)(a, r_prev, W_r, 0, 1, B, H, H, 1, 1, H, H, H));
            if (cfg->state_feedback)
                FR_CHECK(FN(fr_gemm)(a, s_prev, W_s, 0, 1, B, H, H, 1, 1, H, H, H));
            real *s_n = store ? a : s_ring + (size_t)(n & 1) * BH;
            FN(rnn_cell_forward)(s_n, r_seq + (size_t)n * BH, a, theta_s, B, H);
        }
    }
    const real *s_last = store ? s_all + (size_t)(T - 1) * BH : s_ring + (size_t)((T - 1) & 1) * BH;
    memcpy(s_T, s_last, BH * sizeof(real));
    memcpy(r_T, r_seq + (size_t)(T - 1) * BH, BH * sizeof(real));
    return FR_OK;
}

int FN(fr_rnn_backward)(FR_RNN_BACKWARD_ARGS(real)) {
    FR_CHECK(rnn_check_config(cfg));
    if (!dW_x || !dW_r || !dtheta_s || !work || !x || !r_seq || !s0 || !r0 || !W_x || !W_r)
        return FR_ENULL;
    if (cfg->state_feedback && (!W_s || !dW_s || !acts)) return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H;
    const size_t BH = (size_t)B * H;
    real *psi_all = work;                      /* (T, B, H) psi[n] of every step */
    real *f_chi = work + (size_t)T * BH;       /* (B, H) W_r^T psi[n+1] */
    real *f_psi = f_chi + BH;                  /* (B, H) W_s^T psi[n+1] */

    /* The final-state gradients enter as chi[T-1] += dE/dr[T-1], psi[T-1] += dE/ds[T-1]. */
    if (dr_T) memcpy(f_chi, dr_T, BH * sizeof(real)); else memset(f_chi, 0, BH * sizeof(real));
    if (ds_T) memcpy(f_psi, ds_T, BH * sizeof(real)); else memset(f_psi, 0, BH * sizeof(real));

    for (int64_t n = T - 1; n >= 0; n--) {
        real *psi = psi_all + (size_t)n * BH; /* (B, H) */
        const real *r = r_seq + (size_t)n * BH;
        const real *dr = dr_seq ? dr_seq + (size_t)n * BH : NULL;
        FN(rnn_cell_backward)(psi, f_psi, f_chi, dr, r, BH);
        FR_CHECK(FN(fr_gemm)(f_chi, psi, W_r, 0, 0, B, H, H, 1, 0, H, H, H));
        if (cfg->state_feedback)
            FR_CHECK(FN(fr_gemm)(f_psi, psi, W_s, 0, 0, B, H, H, 1, 0, H, H, H));
        else
            memset(f_psi, 0, BH * sizeof(real));
    }
    /* dE/dr[-1] = W_r^T psi[0], dE/ds[-1] = W_s^T psi[0] */
    if (dr0) for (size_t i = 0; i < BH; i++) dr0[i] += f_chi[i];
    if (ds0) for (size_t i = 0; i < BH; i++) ds0[i] += f_psi[i];

    const int64_t TB = T * B;
    /* dE/dW_x = sum_n psi[n] x[n]^T */
    FR_CHECK(FN(fr_gemm)(dW_x, psi_all, x, 1, 0, H, I, TB, 1, 1, H, I, I));
    /* dE/dW_r = sum_n psi[n] r[n-1]^T */
    FR_CHECK(FN(fr_gemm)(dW_r, psi_all, r0, 1, 0, H, H, B, 1, 1, H, H, H));
    if (T > 1)
        FR_CHECK(FN(fr_gemm)(dW_r, psi_all + BH, r_seq, 1, 0, H, H, (T - 1) * B, 1, 1, H, H, H));
    if (cfg->state_feedback) {
        /* dE/dW_s = sum_n psi[n] s[n-1]^T */
        FR_CHECK(FN(fr_gemm)(dW_s, psi_all, s0, 1, 0, H, H, B, 1, 1, H, H, H));
        if (T > 1)
            FR_CHECK(FN(fr_gemm)(dW_s, psi_all + BH, acts, 1, 0, H, H, (T - 1) * B, 1, 1, H, H, H));
    }
    /* dE/dtheta_s = sum_n psi[n] */
    for (int64_t row = 0; row < TB; row++)
        for (int64_t j = 0; j < H; j++) dtheta_s[j] += psi_all[(size_t)row * H + j];
    /* dE/dx[n] = W_x^T psi[n] */
    if (dx) FR_CHECK(FN(fr_gemm)(dx, psi_all, W_x, 0, 0, TB, I, H, 1, 1, H, I, I));
    return FR_OK;
}

#undef FN
