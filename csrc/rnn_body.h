/* Type-generic canonical RNN body, included by rnn.c with `real`, SUFFIX, EXP.
 * Equation names refer to docs/equations.md §1. */
#define FN(name) FR_CAT(name, SUFFIX)

#include "warp_body.h"

/* s[n] = accumulations + theta_s, r[n] = G(s[n]) for one row. */
FR_TARGET_CLONES
static void FN(rnn_row_forward)(real *s, real *restrict r, const real *a,
                                const real *restrict theta_s, int64_t H) {
    for (int64_t j = 0; j < H; j++) s[j] = a[j] + theta_s[j]; /* (s and a may alias) */
    FN(vtanh)(r, s, H);
}

/* psi[n] = G'(s[n]) chi[n] + W_s^T psi[n+1], chi[n] = dy/dr[n] + W_r^T psi[n+1]. */
FR_TARGET_CLONES
static void FN(rnn_row_backward)(real *restrict psi, const real *restrict f_psi,
                                 const real *restrict f_chi, const real *restrict dr,
                                 const real *restrict r, int64_t H) {
    for (int64_t j = 0; j < H; j++) psi[j] = (1 - r[j] * r[j]) * (dr[j] + f_chi[j]) + f_psi[j];
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
    /* The input GEMM runs in the same chunks either way, so the BLAS sees the same
     * calls and training and inference agree bit for bit (OpenBLAS's result for a
     * row depends on M: it has a separate small-matrix path). */
    const int64_t Tc = fr_inference_chunk(T, B);
    real *s_all = store ? acts : NULL;                           /* (T, B, H) */
    real *chunk = store ? NULL : work;                           /* (Tc, B, H) */
    real *s_ring = store ? NULL : work + (size_t)Tc * BH;        /* (2, B, H) */

    for (int64_t k0 = 0; k0 < T; k0 += Tc) {
        const int64_t tc = (T - k0 < Tc) ? T - k0 : Tc;
        const int64_t lo = cfg->reverse ? T - k0 - tc : k0; /* steps [lo, lo + tc) */
        real *a_lo = store ? s_all + (size_t)lo * BH : chunk; /* (tc, B, H) */
        /* W_x x[n] for tc steps in one GEMM */
        FR_CHECK(FN(fr_gemm)(a_lo, x + (size_t)lo * B * I, W_x, 0, 1, tc * B, H, I, 1, 0, I, I, H));
        for (int64_t k = k0; k < k0 + tc; k++) {
            const int64_t n = cfg->reverse ? T - 1 - k : k;
            const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
            real *a = a_lo + (size_t)(n - lo) * BH; /* (B, H) */
            const real *r_prev = k == 0 ? r0 : r_seq + (size_t)n_prev * BH;
            const real *s_prev = k == 0 ? s0
                                 : store ? s_all + (size_t)n_prev * BH
                                         : s_ring + (size_t)((k - 1) & 1) * BH;
            /* + W_r r[n-1] (+ W_s s[n-1]) */
            FR_CHECK(FN(fr_gemm)(a, r_prev, W_r, 0, 1, B, H, H, 1, 1, H, H, H));
            if (cfg->state_feedback)
                FR_CHECK(FN(fr_gemm)(a, s_prev, W_s, 0, 1, B, H, H, 1, 1, H, H, H));
            real *s_n = store ? a : s_ring + (size_t)(k & 1) * BH;
            real *r_n = r_seq + (size_t)n * BH;
            for (int64_t bi = 0; bi < B; bi++) {
                if (fr_active(cfg->lengths, bi, n)) {
                    FN(rnn_row_forward)(s_n + bi * H, r_n + bi * H, a + bi * H, theta_s, H);
                } else { /* padding holds the state */
                    memcpy(s_n + bi * H, s_prev + bi * H, (size_t)H * sizeof(real));
                    memcpy(r_n + bi * H, r_prev + bi * H, (size_t)H * sizeof(real));
                }
            }
        }
    }
    const int64_t n_last = cfg->reverse ? 0 : T - 1;
    const real *s_last = store ? s_all + (size_t)n_last * BH : s_ring + (size_t)((T - 1) & 1) * BH;
    memcpy(s_T, s_last, BH * sizeof(real));
    memcpy(r_T, r_seq + (size_t)n_last * BH, BH * sizeof(real));
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
    real *hold_chi = f_psi + BH;               /* (B, H) carries through padding */
    real *hold_psi = hold_chi + BH;            /* (B, H) */

    /* The final-state gradients enter as chi[T-1] += dE/dr[T-1], psi[T-1] += dE/ds[T-1]. */
    if (dr_T) memcpy(f_chi, dr_T, BH * sizeof(real)); else memset(f_chi, 0, BH * sizeof(real));
    if (ds_T) memcpy(f_psi, ds_T, BH * sizeof(real)); else memset(f_psi, 0, BH * sizeof(real));
    memset(hold_chi, 0, 2 * BH * sizeof(real));

    for (int64_t k = T - 1; k >= 0; k--) {
        const int64_t n = cfg->reverse ? T - 1 - k : k;
        real *psi = psi_all + (size_t)n * BH; /* (B, H) */
        const real *r = r_seq + (size_t)n * BH;
        for (int64_t bi = 0; bi < B; bi++) {
            const size_t o = (size_t)bi * H;
            if (fr_active(cfg->lengths, bi, n)) {
                if (dr_seq)
                    FN(rnn_row_backward)(psi + o, f_psi + o, f_chi + o, dr_seq + (size_t)n * BH + o,
                                         r + o, H);
                else
                    FN(rnn_row_backward)(psi + o, f_psi + o, f_chi + o, hold_chi + o, r + o, H);
            } else { /* padding: no contribution, carries pass through */
                memset(psi + o, 0, (size_t)H * sizeof(real));
                memcpy(hold_chi + o, f_chi + o, (size_t)H * sizeof(real));
                memcpy(hold_psi + o, f_psi + o, (size_t)H * sizeof(real));
            }
        }
        FR_CHECK(FN(fr_gemm)(f_chi, psi, W_r, 0, 0, B, H, H, 1, 0, H, H, H));
        if (cfg->state_feedback)
            FR_CHECK(FN(fr_gemm)(f_psi, psi, W_s, 0, 0, B, H, H, 1, 0, H, H, H));
        else
            memset(f_psi, 0, BH * sizeof(real));
        for (int64_t bi = 0; bi < B; bi++) {
            const size_t o = (size_t)bi * H;
            if (!fr_active(cfg->lengths, bi, n)) {
                memcpy(f_chi + o, hold_chi + o, (size_t)H * sizeof(real));
                memcpy(f_psi + o, hold_psi + o, (size_t)H * sizeof(real));
                memset(hold_chi + o, 0, (size_t)H * sizeof(real)); /* zeros for dr_seq == NULL */
            }
        }
    }
    /* dE/dr[-1] = W_r^T psi[0], dE/ds[-1] = W_s^T psi[0] */
    if (dr0) for (size_t i = 0; i < BH; i++) dr0[i] += f_chi[i];
    if (ds0) for (size_t i = 0; i < BH; i++) ds0[i] += f_psi[i];

    const int64_t TB = T * B, T1B = (T - 1) * B;
    real *psi_first = psi_all + (size_t)(cfg->reverse ? T - 1 : 0) * BH; /* first visited step */
    real *psi_rest = psi_all + (cfg->reverse ? 0 : BH);                 /* (T-1, B, H) */
    const size_t prev_off = cfg->reverse ? BH : 0;                      /* their predecessors */
    /* dE/dW_x = sum_n psi[n] x[n]^T */
    FR_CHECK(FN(fr_gemm)(dW_x, psi_all, x, 1, 0, H, I, TB, 1, 1, H, I, I));
    /* dE/dW_r = sum_n psi[n] r[prev]^T */
    FR_CHECK(FN(fr_gemm)(dW_r, psi_first, r0, 1, 0, H, H, B, 1, 1, H, H, H));
    if (T > 1)
        FR_CHECK(FN(fr_gemm)(dW_r, psi_rest, r_seq + prev_off, 1, 0, H, H, T1B, 1, 1, H, H, H));
    if (cfg->state_feedback) {
        /* dE/dW_s = sum_n psi[n] s[prev]^T */
        FR_CHECK(FN(fr_gemm)(dW_s, psi_first, s0, 1, 0, H, H, B, 1, 1, H, H, H));
        if (T > 1)
            FR_CHECK(FN(fr_gemm)(dW_s, psi_rest, acts + prev_off, 1, 0, H, H, T1B, 1, 1, H, H, H));
    }
    /* dE/dtheta_s = sum_n psi[n] */
    for (int64_t row = 0; row < TB; row++)
        for (int64_t j = 0; j < H; j++) dtheta_s[j] += psi_all[(size_t)row * H + j];
    /* dE/dx[n] = W_x^T psi[n] */
    if (dx) FR_CHECK(FN(fr_gemm)(dx, psi_all, W_x, 0, 0, TB, I, H, 1, 1, H, I, I));
    return FR_OK;
}

#undef FN
