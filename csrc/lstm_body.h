/* Type-generic LSTM body, included by lstm.c with `real`, SUFFIX, EXP.
 * Equation names refer to shared/spec/equations.md §2. */
#define FN(name) FR_CAT(name, SUFFIX)

#include "warp_body.h"

/* One step's fused element-wise pass. On entry g (B, 4H) holds the x- and
 * v-side products of the accumulations a_*[n] without bias; on exit it holds
 * the warped gates (g_cu, g_cs, u, g_cr), which training keeps for backward. */
FR_TARGET_CLONES
static void FN(lstm_cell_forward)(real *g,            /* (B, 4H) */
                                  real *s,            /* (B, H) s[n] out */
                                  real *v,            /* (B, H) v[n] out */
                                  const real *s_prev, /* (B, H) s[n-1] */
                                  const real *b,      /* (4H) */
                                  const real *w_s,    /* (3, H) or NULL */
                                  int64_t B, int64_t H) {
    const int64_t G = 4 * H;
    for (int64_t bi = 0; bi < B; bi++) {
        real *restrict a_cu = g + bi * G, *restrict a_cs = a_cu + H;
        real *restrict a_du = a_cu + 2 * H, *restrict a_cr = a_cu + 3 * H;
        const real *restrict sp = s_prev + bi * H;
        real *restrict sr = s + bi * H, *restrict vr = v + bi * H;
        for (int64_t j = 0; j < G; j++) a_cu[j] += b[j]; /* + b_* for all four */
        if (w_s) { /* peepholes: a_cu, a_cs see s[n-1] */
            for (int64_t j = 0; j < H; j++) {
                a_cu[j] += w_s[j] * sp[j];
                a_cs[j] += w_s[H + j] * sp[j];
            }
        }
        FN(vsigmoid)(a_cu, a_cu, 2 * H);  /* g_cu, g_cs = G_c(a_cu), G_c(a_cs) */
        FN(vtanh)(a_du, a_du, H);         /* u = G_d(a_du) */
        for (int64_t j = 0; j < H; j++)   /* s[n] = g_cs s[n-1] + g_cu u */
            sr[j] = a_cs[j] * sp[j] + a_cu[j] * a_du[j];
        if (w_s) /* the readout peephole sees the new state s[n] */
            for (int64_t j = 0; j < H; j++) a_cr[j] += w_s[2 * H + j] * sr[j];
        FN(vsigmoid)(a_cr, a_cr, H);      /* g_cr = G_c(a_cr) */
        FN(vtanh)(vr, sr, H);             /* r[n] = G_d(s[n]) */
        for (int64_t j = 0; j < H; j++) vr[j] *= a_cr[j]; /* v[n] = g_cr r[n] */
    }
}

int FN(fr_lstm_forward)(FR_LSTM_FORWARD_ARGS(real)) {
    FR_CHECK(lstm_check_config(cfg));
    if (!v_seq || !s_T || !v_T || !x || !s0 || !v0 || !W_x || !W_v || !b) return FR_ENULL;
    if (cfg->peepholes && !w_s) return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H;
    const real *peep = cfg->peepholes ? w_s : NULL;
    const int training = acts != NULL;
    if (!training && !work) return FR_ENULL;
    const size_t BG = (size_t)B * G, BH = (size_t)B * H; /* checked by config */

    /* Training: gates (T, B, 4H) and s (T, B, H) live in the activation store.
     * Inference: a gate chunk (Tc, B, 4H) and two state rows (2, B, H). */
    real *gates_all = training ? acts : NULL;                           /* (T, B, 4H) */
    real *s_all = training ? acts + (size_t)T * BG : NULL;              /* (T, B, H) */
    const int64_t Tc = training ? T : fr_inference_chunk(T, B);
    real *chunk = training ? NULL : work;                               /* (Tc, B, 4H) */
    real *s_ring = training ? NULL : work + (size_t)Tc * BG;            /* (2, B, H) */

    for (int64_t t0 = 0; t0 < T; t0 += Tc) {
        const int64_t tc = (T - t0 < Tc) ? T - t0 : Tc;
        real *g0 = training ? gates_all + (size_t)t0 * BG : chunk; /* (tc, B, 4H) */
        /* x-side accumulations of tc steps in one GEMM: W_x* x[n] */
        FR_CHECK(FN(fr_gemm)(g0, x + (size_t)t0 * B * I, W_x, 0, 1, tc * B, G, I, 1, 0, I, I, G));
        for (int64_t n = t0; n < t0 + tc; n++) {
            real *g = g0 + (size_t)(n - t0) * BG; /* (B, 4H) */
            const real *v_prev = n == 0 ? v0 : v_seq + (size_t)(n - 1) * BH;
            const real *s_prev = n == 0 ? s0
                                 : training ? s_all + (size_t)(n - 1) * BH
                                            : s_ring + (size_t)((n - 1) & 1) * BH;
            real *s_n = training ? s_all + (size_t)n * BH : s_ring + (size_t)(n & 1) * BH;
            /* recurrent accumulations: + W_v* v[n-1] */
            FR_CHECK(FN(fr_gemm)(g, v_prev, W_v, 0, 1, B, G, H, 1, 1, H, H, G));
            FN(lstm_cell_forward)(g, s_n, v_seq + (size_t)n * BH, s_prev, b, peep, B, H);
        }
    }
    const real *s_last = training ? s_all + (size_t)(T - 1) * BH : s_ring + (size_t)((T - 1) & 1) * BH;
    memcpy(s_T, s_last, BH * sizeof(real));
    memcpy(v_T, v_seq + (size_t)(T - 1) * BH, BH * sizeof(real));
    return FR_OK;
}

/* One batch row of the fused backward element-wise pass (§2, backward). Reads
 * the stored gates of step n and the carries f_chi[n+1] (= W_v^T alpha[n+1])
 * and f_psi[n+1]; writes alpha_*[n] and f_psi[n] (in place). */
FR_TARGET_CLONES
static void FN(lstm_row_backward)(real *restrict ar,       /* (4H) alpha_cu|cs|du|cr out */
                                  real *restrict fp,       /* (H) f_psi[n+1] in, f_psi[n] out */
                                  real *restrict dw_s,     /* (3, H) += peephole grads */
                                  real *restrict r,        /* (H) scratch: r[n] */
                                  const real *restrict fc, /* (H) f_chi[n+1] */
                                  const real *restrict dv, /* (H) dE/dv[n] from above */
                                  const real *restrict gr, /* (4H) g_cu|g_cs|u|g_cr */
                                  const real *restrict sr, /* (H) s[n] */
                                  const real *restrict sp, /* (H) s[n-1] */
                                  const real *restrict w_s,/* (3, H), zeros without peepholes */
                                  int64_t H) {
    FN(vtanh)(r, sr, H); /* r[n] = G_d(s[n]), recomputed rather than stored */
    for (int64_t j = 0; j < H; j++) {
        const real g_cu = gr[j], g_cs = gr[H + j], u = gr[2 * H + j], g_cr = gr[3 * H + j];
        const real chi = dv[j] + fc[j];                        /* chi = dy/dv + f_chi[n+1] */
        const real rho = chi * g_cr;                           /* dE/dr[n] */
        const real alpha_cr = chi * r[j] * g_cr * (1 - g_cr);
        const real psi = rho * (1 - r[j] * r[j]) + w_s[2 * H + j] * alpha_cr + fp[j]; /* dE/ds[n] */
        const real alpha_cs = psi * sp[j] * g_cs * (1 - g_cs);
        const real alpha_cu = psi * u * g_cu * (1 - g_cu);
        const real alpha_du = psi * g_cu * (1 - u * u);
        /* f_psi[n] = W_scu^T alpha_cu + W_scs^T alpha_cs + g_cs psi */
        fp[j] = g_cs * psi + w_s[j] * alpha_cu + w_s[H + j] * alpha_cs;
        dw_s[j] += alpha_cu * sp[j];          /* dE/dw_scu = sum alpha_cu s[n-1] */
        dw_s[H + j] += alpha_cs * sp[j];      /* dE/dw_scs = sum alpha_cs s[n-1] */
        dw_s[2 * H + j] += alpha_cr * sr[j];  /* dE/dw_scr = sum alpha_cr s[n] */
        ar[j] = alpha_cu;
        ar[H + j] = alpha_cs;
        ar[2 * H + j] = alpha_du;
        ar[3 * H + j] = alpha_cr;
    }
}

int FN(fr_lstm_backward)(FR_LSTM_BACKWARD_ARGS(real)) {
    FR_CHECK(lstm_check_config(cfg));
    if (!dW_x || !dW_v || !db || !work || !acts || !x || !v_seq || !s0 || !v0 || !W_x || !W_v)
        return FR_ENULL;
    if (cfg->peepholes && (!w_s || !dw_s)) return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H;
    const real *peep = cfg->peepholes ? w_s : NULL;
    const size_t BG = (size_t)B * G, BH = (size_t)B * H;
    const real *gates_all = acts;                 /* (T, B, 4H) */
    const real *s_all = acts + (size_t)T * BG;    /* (T, B, H) */
    real *dA = work;                              /* (T, B, 4H) alpha_* of every step */
    real *f_chi = work + (size_t)T * BG;          /* (B, H) */
    real *f_psi = f_chi + BH;                     /* (B, H) */
    real *r_row = f_psi + BH;                     /* (H) */
    /* Without dy or peepholes the loop reads zeros instead of branching. */
    const size_t n_zeros = (size_t)(B > 3 ? B : 3) * H;
    real *zeros = r_row + H;                      /* (max(B, 3), H) */
    real *dw_s_sink = zeros + n_zeros;            /* (3, H) peephole grads when off */
    memset(zeros, 0, n_zeros * sizeof(real));

    /* f_chi[T] = dE/dv[T-1] from a later window, f_psi[T] = dE/ds[T-1]. */
    if (dv_T) memcpy(f_chi, dv_T, BH * sizeof(real)); else memset(f_chi, 0, BH * sizeof(real));
    if (ds_T) memcpy(f_psi, ds_T, BH * sizeof(real)); else memset(f_psi, 0, BH * sizeof(real));

    for (int64_t n = T - 1; n >= 0; n--) {
        real *dA_n = dA + (size_t)n * BG; /* (B, 4H) */
        const real *s_prev = n == 0 ? s0 : s_all + (size_t)(n - 1) * BH;
        const real *dv_n = dv_seq ? dv_seq + (size_t)n * BH : zeros;
        const real *g_n = gates_all + (size_t)n * BG, *s_n = s_all + (size_t)n * BH;
        for (int64_t bi = 0; bi < B; bi++)
            FN(lstm_row_backward)(dA_n + bi * G, f_psi + bi * H, peep ? dw_s : dw_s_sink, r_row,
                                  f_chi + bi * H, dv_n + bi * H, g_n + bi * G, s_n + bi * H,
                                  s_prev + bi * H, peep ? peep : zeros, H);
        /* f_chi[n] = sum_* W_v*^T alpha_*[n]: (B, 4H) x (4H, H) */
        FR_CHECK(FN(fr_gemm)(f_chi, dA_n, W_v, 0, 0, B, H, G, 1, 0, G, H, H));
    }
    /* Initial-state gradients: dE/dv[-1] = f_chi[0], dE/ds[-1] = f_psi[0]. */
    if (dv0) for (size_t i = 0; i < BH; i++) dv0[i] += f_chi[i];
    if (ds0) for (size_t i = 0; i < BH; i++) ds0[i] += f_psi[i];

    const int64_t TB = T * B;
    /* dE/dW_x* = sum_n alpha_*[n] x[n]^T: (4H, TB) x (TB, I) */
    FR_CHECK(FN(fr_gemm)(dW_x, dA, x, 1, 0, G, I, TB, 1, 1, G, I, I));
    /* dE/dW_v* = sum_n alpha_*[n] v[n-1]^T, v[-1] = v0 then v[0..T-2] */
    FR_CHECK(FN(fr_gemm)(dW_v, dA, v0, 1, 0, G, H, B, 1, 1, G, H, H));
    if (T > 1)
        FR_CHECK(FN(fr_gemm)(dW_v, dA + BG, v_seq, 1, 0, G, H, (T - 1) * B, 1, 1, G, H, H));
    /* dE/db_* = sum_n alpha_*[n] */
    for (int64_t row = 0; row < TB; row++) {
        const real *a = dA + (size_t)row * G;
        for (int64_t k = 0; k < G; k++) db[k] += a[k];
    }
    /* dE/dx[n] = sum_* W_x*^T alpha_*[n]: (TB, 4H) x (4H, I) */
    if (dx) FR_CHECK(FN(fr_gemm)(dx, dA, W_x, 0, 0, TB, I, G, 1, 1, G, I, I));
    return FR_OK;
}

#undef FN
