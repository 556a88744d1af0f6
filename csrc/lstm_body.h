/* Type-generic LSTM body, included by lstm.c with `real`, SUFFIX, EXP.
 * Equation names refer to docs/equations.md §2 (Vanilla LSTM) and §3
 * (augmented LSTM). Per step: one recurrent GEMM, the fused element-wise
 * passes below (split only where a full peephole or the projection needs a
 * GEMM in between), and nothing allocated. */
#define FN(name) FR_CAT(name, SUFFIX)

#include "warp_body.h"

static inline real FN(clip)(real a, real c) { return a > c ? c : (a < -c ? -c : a); }

/* ---- forward ------------------------------------------------------------------
 * The element-wise passes work on n hidden units of one row (a thread's share;
 * n = H for a whole row). Gate blocks of a row are H apart: a[g H + j] is unit
 * j of gate g (cu, cs, du, cr), and every pointer starts at the first unit.
 *
 * Part 1 of a step for one active row: accumulations a_cu, a_cs, a_du get the
 * bias and diagonal peepholes, are (optionally) clipped and warped, and the
 * state is updated: s[n] = g_cs s[n-1] + g_cu u[n] (then the cell clip).
 * a_cr gets its bias and diagonal peephole on the new s[n]. gw may alias a (the
 * gates are then warped in place); with the accumulation clip a keeps the
 * accumulations for the backward and gw is scratch. */
FR_TARGET_CLONES
static void FN(lstm_row_state)(real *a,               /* (4, H) accumulations a_cu|cs|du|cr */
                               real *gw,              /* (4, H) warped gates g_cu|g_cs|u|. */
                               real *restrict s,      /* (n) s[n] out */
                               const real *restrict sp,  /* (n) s[n-1] */
                               const real *restrict b,   /* (4, H) */
                               const real *restrict w_s, /* (3, H) diagonal peepholes or NULL */
                               real c_acc, real c_cell, int coupled, int64_t H, int64_t n) {
    for (int g = 0; g < 4; g++)
        for (int64_t j = 0; j < n; j++) a[g * H + j] += b[g * H + j];
    if (w_s) { /* a_cu, a_cs see s[n-1] */
        for (int64_t j = 0; j < n; j++) {
            a[j] += w_s[j] * sp[j];
            a[H + j] += w_s[H + j] * sp[j];
        }
    }
    const real *src = a;
    if (c_acc > 0) {
        for (int g = 0; g < 3; g++)
            for (int64_t j = 0; j < n; j++) gw[g * H + j] = FN(clip)(a[g * H + j], c_acc);
        src = gw;
    }
    FN(vsigmoid)(gw, src, n);                 /* g_cu = G_c(a_cu) */
    FN(vsigmoid)(gw + H, src + H, n);         /* g_cs = G_c(a_cs) */
    FN(vtanh)(gw + 2 * H, src + 2 * H, n);    /* u = G_d(a_du) */
    if (coupled)
        for (int64_t j = 0; j < n; j++) gw[H + j] = 1 - gw[j];   /* g_cs = 1 - g_cu */
    for (int64_t j = 0; j < n; j++) s[j] = gw[H + j] * sp[j] + gw[j] * gw[2 * H + j];
    if (c_cell > 0)
        for (int64_t j = 0; j < n; j++) s[j] = FN(clip)(s[j], c_cell);
    if (w_s) /* the readout peephole sees the new state s[n] */
        for (int64_t j = 0; j < n; j++) a[3 * H + j] += w_s[2 * H + j] * s[j];
}

/* Part 2: g_cr = G_c(a_cr), v[n] = g_cr G_d(s[n]). */
FR_TARGET_CLONES
static void FN(lstm_row_readout)(real *a_cr,           /* (n) */
                                 real *gw_cr,          /* (n) may alias a_cr */
                                 real *restrict v,     /* (n) v[n] out */
                                 const real *restrict s, /* (n) s[n] */
                                 real c_acc, int64_t n) {
    if (c_acc > 0)
        for (int64_t j = 0; j < n; j++) gw_cr[j] = FN(clip)(a_cr[j], c_acc);
    FN(vsigmoid)(gw_cr, c_acc > 0 ? gw_cr : a_cr, n);
    FN(vtanh)(v, s, n);
    for (int64_t j = 0; j < n; j++) v[j] *= gw_cr[j];
}

/* ---- the team path (packed weights, steps split over threads) ----------------
 * Member id of n owns hidden units [h0, h1) (whole panels) and, with the
 * projection, outputs [p0, p1). It packs its own panels of W_x, W_v, W_qv, runs
 * the input GEMM of its gate columns, and per step its slice of the recurrent
 * GEMM and the element-wise passes of its units; the members meet once per
 * step (twice with the projection, whose q[n] = W_qv v[n] reads all of v[n]). */
typedef struct {
    const fr_lstm_config *cfg;
    const lstm_layout *L;
    real *y_seq, *acts, *work;
    const real *x, *s0, *y0, *W_x, *W_v, *b, *W_s, *W_qv;
} FN(lstm_fwd_ctx);

static void FN(lstm_forward_member)(void *vctx, int id, int nth, fr_team *team) {
    const FN(lstm_fwd_ctx) *c = vctx;
    const fr_lstm_config *cfg = c->cfg;
    const lstm_layout *L = c->L;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H, P = cfg->P;
    const int64_t R = P ? P : H, PW = FR_PW(real), H_pad = (H + PW - 1) / PW * PW;
    const int training = c->acts != NULL, aclip = cfg->accumulation_clip > 0;
    const real c_acc = (real)cfg->accumulation_clip, c_cell = (real)cfg->cell_clip;
    const real *w_diag = cfg->peepholes == FR_PEEP_DIAGONAL ? c->W_s : NULL;
    const size_t B4H = L->B4H, BH = L->BH, BR = L->BR;
    real *acts = c->acts, *work = c->work, *y_seq = c->y_seq;
    int64_t h0, h1, p0 = 0, p1 = 0;
    fr_share(&h0, &h1, H, PW, id, nth);
    if (P) fr_share(&p0, &p1, P, PW, id, nth);
    const int64_t nh = h1 - h0, np = p1 - p0;

    real *gates_all = training ? acts : NULL;                          /* (T, B, 4H) */
    real *s_all = training ? acts + L->TB4H : NULL;                    /* (T, B, H) */
    real *v_all = training && P ? s_all + L->TBH : NULL;               /* (T, B, H) */
    real *chunk = training ? NULL : work;                              /* (Tc, B, 4H) */
    real *s_ring = training ? NULL : chunk + L->chunk;                 /* (2, B, H) */
    real *v_blk = training ? NULL : s_ring + 2 * BH;                   /* (B, H) */
    real *gw_blk = !aclip ? NULL : training ? work : v_blk + BH;       /* (B, 4H) */
    real *Wx_p = (real *)fr_align64(training ? work + (aclip ? B4H : 0) : v_blk + BH + B4H);
                                                                       /* 4 x (H_pad, I) */
    real *Wv_p = Wx_p + 4 * H_pad * I;                                 /* 4 x (H_pad, R) */
    real *Wq_p = Wv_p + 4 * H_pad * R;                                 /* (P_pad, H) */
    const int64_t Tc = training ? T : L->Tc;

    /* this member's panels: W_x*, W_v* of its units (per gate), W_qv of its outputs */
    for (int g = 0; nh > 0 && g < 4; g++) {
        FN(fr_pack)(Wx_p + (g * H_pad + h0) * I, c->W_x + (g * H + h0) * I, 1, nh, I, I);
        FN(fr_pack)(Wv_p + (g * H_pad + h0) * R, c->W_v + (g * H + h0) * R, 1, nh, R, R);
    }
    if (np > 0) FN(fr_pack)(Wq_p + p0 * H, c->W_qv + p0 * H, 1, np, H, H);

    for (int64_t k0 = 0; k0 < T; k0 += Tc) {
        const int64_t tc = (T - k0 < Tc) ? T - k0 : Tc;
        const int64_t lo = cfg->reverse ? T - k0 - tc : k0; /* steps [lo, lo + tc) */
        real *g_lo = training ? gates_all + (size_t)lo * B4H : chunk; /* (tc, B, 4H) */
        /* x-side accumulations of tc steps, this member's columns: W_x* x[n] */
        for (int g = 0; nh > 0 && g < 4; g++)
            FN(fr_ugemm)(g_lo + g * H + h0, G, c->x + (size_t)lo * B * I, I, 0,
                         Wx_p + (g * H_pad + h0) * I, 0, tc * B, nh, I, 0);
        for (int64_t k = k0; k < k0 + tc; k++) {
            const int64_t n = cfg->reverse ? T - 1 - k : k;
            const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
            real *g = g_lo + (size_t)(n - lo) * B4H;                          /* (B, 4H) */
            real *gw = aclip ? gw_blk : g;                                    /* (B, 4H) */
            const real *y_prev = k == 0 ? c->y0 : y_seq + (size_t)n_prev * BR; /* (B, R) */
            const real *s_prev = k == 0 ? c->s0
                                 : training ? s_all + (size_t)n_prev * BH
                                            : s_ring + (size_t)((k - 1) & 1) * BH;
            real *s_n = training ? s_all + (size_t)n * BH : s_ring + (size_t)(k & 1) * BH;
            real *y_n = y_seq + (size_t)n * BR;                               /* (B, R) */
            real *v_n = !P ? y_n : training ? v_all + (size_t)n * BH : v_blk; /* (B, H) */

            /* recurrent accumulations of this member's units: + W_v* v[n-1] (W_q* q[n-1]) */
            for (int gi = 0; nh > 0 && gi < 4; gi++)
                FN(fr_ugemm)(g + gi * H + h0, G, y_prev, R, 0, Wv_p + (gi * H_pad + h0) * R, 0, B,
                             nh, R, 1);
            for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
                const size_t o = (size_t)bi * H + h0;
                if (fr_active(cfg->lengths, bi, n)) {
                    FN(lstm_row_state)(g + bi * G + h0, gw + bi * G + h0, s_n + o, s_prev + o,
                                       c->b + h0, w_diag ? w_diag + h0 : NULL, c_acc, c_cell,
                                       cfg->coupled_gates, H, nh);
                    FN(lstm_row_readout)(g + bi * G + 3 * H + h0, gw + bi * G + 3 * H + h0,
                                         v_n + o, s_n + o, c_acc, nh);
                } else { /* padding: hold the state */
                    memcpy(s_n + o, s_prev + o, (size_t)nh * sizeof(real));
                    if (P) /* finite, and never read with a nonzero weight */
                        memset(v_n + o, 0, (size_t)nh * sizeof(real));
                    else
                        memcpy(y_n + o, y_prev + o, (size_t)nh * sizeof(real));
                }
            }
            if (P) { /* q[n] = W_qv v[n] (§3b) over all of v[n]; padding holds q */
                fr_team_barrier(team);
                if (np > 0) {
                    FN(fr_ugemm)(y_n + p0, R, v_n, H, 0, Wq_p + p0 * H, 0, B, np, H, 0);
                    for (int64_t bi = 0; bi < B; bi++)
                        if (!fr_active(cfg->lengths, bi, n))
                            memcpy(y_n + bi * R + p0, y_prev + bi * R + p0,
                                   (size_t)np * sizeof(real));
                }
            }
            fr_team_barrier(team); /* y[n] complete: the next step reads all of it */
        }
    }
}

static int FN(lstm_forward_team)(FR_LSTM_FORWARD_ARGS(real), const lstm_layout *L) {
    FN(lstm_fwd_ctx) c = {cfg, L, y_seq, acts, work, x, s0, y0, W_x, W_v, b, W_s, W_qv};
    fr_team_run(lstm_team_size(cfg, FR_PW(real)), FN(lstm_forward_member), &c);
    const int64_t n_last = cfg->reverse ? 0 : cfg->T - 1;
    const real *s_last = acts ? acts + L->TB4H + (size_t)n_last * L->BH
                              : work + L->chunk + (size_t)((cfg->T - 1) & 1) * L->BH;
    memcpy(s_T, s_last, L->BH * sizeof(real));
    memcpy(y_T, y_seq + (size_t)n_last * L->BR, L->BR * sizeof(real));
    return FR_OK;
}

int FN(fr_lstm_forward)(FR_LSTM_FORWARD_ARGS(real)) {
    lstm_layout L;
    FR_CHECK(lstm_layout_of(&L, cfg));
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H, P = cfg->P;
    const int64_t R = P ? P : H;
    const int diag = cfg->peepholes == FR_PEEP_DIAGONAL, full = cfg->peepholes == FR_PEEP_FULL;
    const int training = acts != NULL, aclip = cfg->accumulation_clip > 0;
    if (!y_seq || !s_T || !y_T || !x || !s0 || !y0 || !W_x || !W_v || !b) return FR_ENULL;
    if ((cfg->peepholes && !W_s) || (P && !W_qv)) return FR_ENULL;
    if ((training ? L.work_train : L.work_infer) > 0 && !work) return FR_ENULL;
    if (lstm_team_path(cfg))
        return FN(lstm_forward_team)(y_seq, s_T, y_T, acts, work, x, s0, y0, W_x, W_v, b, W_s,
                                     W_qv, cfg, &L);
    const real c_acc = (real)cfg->accumulation_clip, c_cell = (real)cfg->cell_clip;
    const size_t B4H = L.B4H, BH = L.BH, BR = L.BR;

    /* Training: gates (T, B, 4H), s (T, B, H), v (T, B, H) in the activation
     * store. Inference: a gate chunk (Tc, B, 4H), a state ring (2, B, H), one
     * step of v (B, H). Both: gw (B, 4H) when the accumulations are clipped. */
    real *gates_all = training ? acts : NULL;                          /* (T, B, 4H) */
    real *s_all = training ? acts + L.TB4H : NULL;                     /* (T, B, H) */
    real *v_all = training && P ? s_all + L.TBH : NULL;                /* (T, B, H) */
    real *chunk = training ? NULL : work;                              /* (Tc, B, 4H) */
    real *s_ring = training ? NULL : chunk + L.chunk;                  /* (2, B, H) */
    real *v_blk = training ? NULL : s_ring + 2 * BH;                   /* (B, H) */
    real *gw_blk = !aclip ? NULL : training ? work : v_blk + BH;       /* (B, 4H) */
    const int64_t Tc = training ? T : L.Tc;

    for (int64_t k0 = 0; k0 < T; k0 += Tc) {
        const int64_t tc = (T - k0 < Tc) ? T - k0 : Tc;
        const int64_t lo = cfg->reverse ? T - k0 - tc : k0; /* steps [lo, lo + tc) */
        real *g_lo = training ? gates_all + (size_t)lo * B4H : chunk; /* (tc, B, 4H) */
        /* x-side accumulations of tc steps in one GEMM: W_x* x[n] */
        FR_CHECK(FN(fr_gemm)(g_lo, x + (size_t)lo * B * I, W_x, 0, 1, tc * B, G, I, 1, 0, I, I, G));
        for (int64_t k = k0; k < k0 + tc; k++) {
            const int64_t n = cfg->reverse ? T - 1 - k : k;
            const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
            real *g = g_lo + (size_t)(n - lo) * B4H;                          /* (B, 4H) */
            real *gw = aclip ? gw_blk : g;                                    /* (B, 4H) */
            const real *y_prev = k == 0 ? y0 : y_seq + (size_t)n_prev * BR;   /* (B, R) */
            const real *s_prev = k == 0 ? s0
                                 : training ? s_all + (size_t)n_prev * BH
                                            : s_ring + (size_t)((k - 1) & 1) * BH;
            real *s_n = training ? s_all + (size_t)n * BH : s_ring + (size_t)(k & 1) * BH;
            real *y_n = y_seq + (size_t)n * BR;                               /* (B, R) */
            real *v_n = !P ? y_n : training ? v_all + (size_t)n * BH : v_blk; /* (B, H) */

            /* recurrent accumulations: + W_v* v[n-1] (W_q* q[n-1]) */
            FR_CHECK(FN(fr_gemm)(g, y_prev, W_v, 0, 1, B, G, R, 1, 1, R, R, G));
            if (full) /* + W_scu s[n-1], W_scs s[n-1] */
                FR_CHECK(FN(fr_gemm)(g, s_prev, W_s, 0, 1, B, 2 * H, H, 1, 1, H, H, G));
            for (int64_t bi = 0; bi < B; bi++) {
                if (fr_active(cfg->lengths, bi, n))
                    FN(lstm_row_state)(g + bi * G, gw + bi * G, s_n + bi * H, s_prev + bi * H, b,
                                       diag ? W_s : NULL, c_acc, c_cell, cfg->coupled_gates, H, H);
                else /* padding: hold the state */
                    memcpy(s_n + bi * H, s_prev + bi * H, (size_t)H * sizeof(real));
            }
            if (full) /* + W_scr s[n] */
                FR_CHECK(FN(fr_gemm)(g + 3 * H, s_n, W_s + (size_t)2 * H * H, 0, 1, B, H, H, 1, 1,
                                     H, H, G));
            for (int64_t bi = 0; bi < B; bi++) {
                if (fr_active(cfg->lengths, bi, n))
                    FN(lstm_row_readout)(g + bi * G + 3 * H, gw + bi * G + 3 * H, v_n + bi * H,
                                         s_n + bi * H, c_acc, H);
                else if (P) /* finite, and never read with a nonzero weight */
                    memset(v_n + bi * H, 0, (size_t)H * sizeof(real));
                else
                    memcpy(y_n + bi * R, y_prev + bi * R, (size_t)R * sizeof(real));
            }
            if (P) { /* q[n] = W_qv v[n] (§3b); padding holds q */
                FR_CHECK(FN(fr_gemm)(y_n, v_n, W_qv, 0, 1, B, P, H, 1, 0, H, H, P));
                for (int64_t bi = 0; bi < B; bi++)
                    if (!fr_active(cfg->lengths, bi, n))
                        memcpy(y_n + bi * R, y_prev + bi * R, (size_t)R * sizeof(real));
            }
        }
    }
    const int64_t n_last = cfg->reverse ? 0 : T - 1;
    const real *s_last = training ? s_all + (size_t)n_last * BH : s_ring + (size_t)((T - 1) & 1) * BH;
    memcpy(s_T, s_last, BH * sizeof(real));
    memcpy(y_T, y_seq + (size_t)n_last * BR, BR * sizeof(real));
    return FR_OK;
}

/* ---- backward -----------------------------------------------------------------
 * With the accumulation clip the store holds a_*; recompute the gates of one
 * row and the clip masks (1 where |a| <= c, the gradient of the clip). */
FR_TARGET_CLONES
static void FN(lstm_row_regate)(real *restrict gw, real *restrict mask, const real *restrict a,
                                real c_acc, int coupled, int64_t H, int64_t n) {
    for (int g = 0; g < 4; g++)
        for (int64_t j = 0; j < n; j++) {
            const real ag = a[g * H + j];
            mask[g * H + j] = (real)((ag <= c_acc) & (ag >= -c_acc)); /* no branch */
            gw[g * H + j] = FN(clip)(ag, c_acc);
        }
    FN(vsigmoid)(gw, gw, n);
    FN(vsigmoid)(gw + H, gw + H, n);
    FN(vtanh)(gw + 2 * H, gw + 2 * H, n);
    FN(vsigmoid)(gw + 3 * H, gw + 3 * H, n);
    if (coupled)
        for (int64_t j = 0; j < n; j++) gw[H + j] = 1 - gw[j];
}

/* Part 1 for one active row: r[n], alpha_cr and psi = dE/ds[n] without the
 * full-peephole term W_scr^T alpha_cr (a GEMM the caller adds). */
FR_TARGET_CLONES
static void FN(lstm_row_backward_readout)(real *restrict ar,        /* (4H) alpha_cr at 3H */
                                          real *restrict psi,       /* (H) out */
                                          real *restrict dw_scr,    /* (H) += */
                                          real *restrict r,         /* (H) scratch r[n] */
                                          const real *restrict chi, /* (H) dE/dv[n] */
                                          const real *restrict f_psi, /* (H) f_psi[n+1] */
                                          const real *restrict gw,  /* (4H) gates */
                                          const real *restrict mask,/* (4H) clip masks */
                                          const real *restrict s,   /* (H) s[n] */
                                          const real *restrict w_scr, /* (H) */
                                          int64_t H, int64_t n) {
    FN(vtanh)(r, s, n); /* r[n] = G_d(s[n]), recomputed rather than stored */
    for (int64_t j = 0; j < n; j++) {
        const real g_cr = gw[3 * H + j];
        const real alpha_cr = chi[j] * r[j] * g_cr * (1 - g_cr) * mask[3 * H + j];
        const real rho = chi[j] * g_cr;                                 /* dE/dr[n] */
        psi[j] = rho * (1 - r[j] * r[j]) + w_scr[j] * alpha_cr + f_psi[j];
        dw_scr[j] += alpha_cr * s[j];                  /* dE/dw_scr = sum alpha_cr s[n] */
        ar[3 * H + j] = alpha_cr;
    }
}

/* Part 2 for one active row: the cell clip's gradient, alpha_cs, alpha_cu,
 * alpha_du and f_psi[n] without the full-peephole terms (a GEMM). */
FR_TARGET_CLONES
static void FN(lstm_row_backward_state)(real *restrict ar,          /* (4H) alpha_cu|cs|du */
                                        real *restrict f_psi,       /* (H) f_psi[n] out */
                                        real *restrict dw_s,        /* (3, H) += (cu, cs) */
                                        const real *restrict psi,   /* (H) dE/ds[n] */
                                        const real *restrict gw,    /* (4H) */
                                        const real *restrict mask,  /* (4H) */
                                        const real *restrict sp,    /* (H) s[n-1] */
                                        const real *restrict w_s,   /* (3, H) diagonal or zeros */
                                        real c_cell, real coupled, int64_t H, int64_t n) {
    /* one pointer per gate row, so that the loop vectorises */
    real *restrict ar_cu = ar, *restrict ar_cs = ar + H, *restrict ar_du = ar + 2 * H;
    real *restrict dw_cu = dw_s, *restrict dw_cs = dw_s + H;
    for (int64_t j = 0; j < n; j++) {
        const real g_cu = gw[j], g_cs = gw[H + j], u = gw[2 * H + j];
        const real pre = g_cs * sp[j] + g_cu * u;               /* s[n] before the cell clip */
        const real keep = (real)((pre <= c_cell) & (pre >= -c_cell)); /* no branch */
        const real psi_p = psi[j] * keep;                       /* dE/d(pre-clip s[n]) */
        const real alpha_cs = (1 - coupled) * psi_p * sp[j] * g_cs * (1 - g_cs) * mask[H + j];
        /* with coupled gates s[n] = (1 - g_cu) s[n-1] + g_cu u: ds/dg_cu = u - s[n-1] */
        const real alpha_cu = psi_p * (u - coupled * sp[j]) * g_cu * (1 - g_cu) * mask[j];
        const real alpha_du = psi_p * g_cu * (1 - u * u) * mask[2 * H + j];
        /* f_psi[n] = W_scu^T alpha_cu + W_scs^T alpha_cs + g_cs psi */
        f_psi[j] = g_cs * psi_p + w_s[j] * alpha_cu + w_s[H + j] * alpha_cs;
        dw_cu[j] += alpha_cu * sp[j];      /* dE/dw_scu = sum alpha_cu s[n-1] */
        dw_cs[j] += alpha_cs * sp[j];      /* dE/dw_scs = sum alpha_cs s[n-1] */
        ar_cu[j] = alpha_cu;
        ar_cs[j] = alpha_cs;
        ar_du[j] = alpha_du;
    }
}

/* The backward's team path. Member id owns units [h0, h1) and columns
 * [r0, r1) of R (the same split as its units without the projection): chi_q,
 * f_chi of its columns, the element-wise passes of its units, then (after the
 * step's alpha are complete) its columns of f_chi[n] = W_v^T alpha[n]. Its
 * columns of f_chi are its own to read at the next step, so one barrier per step
 * suffices (two with the projection: chi = W_qv^T chi_q reads all of chi_q). */
typedef struct {
    const fr_lstm_config *cfg;
    real *dA, *dQ, *f_chi, *hold, *f_psi, *chi, *psi, *r_row, *zeros, *gw_blk, *mask_blk;
    real *Wv_p, *Wq_p, *dw_diag;
    const real *dy_seq, *gates_all, *s_all, *s0, *W_v, *W_qv, *w_diag;
    /* after the loop */
    real *dW_x, *dW_v, *dW_qv, *db, *dx;
    const real *x, *y_seq, *y0, *v_all, *W_x;
    int grads_in_team;
} FN(lstm_bwd_ctx);

static void FN(lstm_backward_member)(void *vctx, int id, int nth, fr_team *team) {
    const FN(lstm_bwd_ctx) *c = vctx;
    const fr_lstm_config *cfg = c->cfg;
    const int64_t T = cfg->T, B = cfg->B, H = cfg->H, G = 4 * H, P = cfg->P, R = P ? P : H;
    const int64_t PW = FR_PW(real);
    const int aclip = cfg->accumulation_clip > 0;
    const real c_acc = (real)cfg->accumulation_clip;
    const real c_cell = cfg->cell_clip > 0 ? (real)cfg->cell_clip : (real)INFINITY;
    const real coupled = (real)cfg->coupled_gates;
    const size_t B4H = (size_t)B * G, BH = (size_t)B * H, BR = (size_t)B * R;
    int64_t h0, h1, r0, r1;
    fr_share(&h0, &h1, H, PW, id, nth);
    fr_share(&r0, &r1, R, PW, id, nth);
    const int64_t nh = h1 - h0, nr = r1 - r0;
    /* panels: W_v as (K = 4H, N = R) for f_chi; W_qv as (K = P, N = H) for chi */
    if (nr > 0) FN(fr_pack)(c->Wv_p + r0 * G, c->W_v + r0, 0, nr, G, R);
    if (P && nh > 0) FN(fr_pack)(c->Wq_p + h0 * P, c->W_qv + h0, 0, nh, P, H);

    for (int64_t k = T - 1; k >= 0; k--) {
        const int64_t n = cfg->reverse ? T - 1 - k : k;
        const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
        const real *s_prev = k == 0 ? c->s0 : c->s_all + (size_t)n_prev * BH; /* (B, H) */
        const real *s_n = c->s_all + (size_t)n * BH;                         /* (B, H) */
        const real *g_n = c->gates_all + (size_t)n * B4H;                    /* (B, 4H) */
        const real *dy_n = c->dy_seq ? c->dy_seq + (size_t)n * BR : c->zeros; /* (B, R) */
        real *dA_n = c->dA + (size_t)n * B4H;                                /* (B, 4H) */
        real *chi_q = P ? c->dQ + (size_t)n * B * P : c->chi;                /* (B, R) */

        /* chi_q[n] = dy/dy[n] + f_chi[n+1], this member's columns */
        for (int64_t bi = 0; nr > 0 && bi < B; bi++) {
            real *cq = chi_q + bi * R + r0, *fc = c->f_chi + bi * R + r0;
            const real *d = dy_n + bi * R + r0;
            if (fr_active(cfg->lengths, bi, n)) {
                for (int64_t j = 0; j < nr; j++) cq[j] = d[j] + fc[j];
            } else {
                memcpy(c->hold + bi * R + r0, fc, (size_t)nr * sizeof(real));
                memset(cq, 0, (size_t)nr * sizeof(real));
            }
        }
        if (P) { /* chi[n] = W_qv^T chi_q[n] (§3b), this member's units */
            fr_team_barrier(team);
            if (nh > 0) FN(fr_ugemm)(c->chi + h0, H, chi_q, P, 0, c->Wq_p + h0 * P, 0, B, nh, P, 0);
        }
        for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
            const size_t o = (size_t)bi * H + h0, og = (size_t)bi * G + h0;
            if (!fr_active(cfg->lengths, bi, n)) {
                for (int g = 0; g < 4; g++) memset(dA_n + og + g * H, 0, (size_t)nh * sizeof(real));
                continue; /* f_psi holds through padding */
            }
            const real *gw = g_n + og;
            if (aclip) {
                FN(lstm_row_regate)(c->gw_blk + og, c->mask_blk + og, g_n + og, c_acc,
                                    cfg->coupled_gates, H, nh);
                gw = c->gw_blk + og;
            }
            FN(lstm_row_backward_readout)(dA_n + og, c->psi + o, c->dw_diag + 2 * H + h0,
                                          c->r_row + h0, c->chi + o, c->f_psi + o, gw,
                                          c->mask_blk + og, s_n + o, c->w_diag + 2 * H + h0, H, nh);
            FN(lstm_row_backward_state)(dA_n + og, c->f_psi + o, c->dw_diag + h0, c->psi + o, gw,
                                        c->mask_blk + og, s_prev + o, c->w_diag + h0, c_cell,
                                        coupled, H, nh);
        }
        fr_team_barrier(team); /* alpha[n] complete */
        /* f_chi[n] = sum_* W_v*^T alpha_*[n], this member's columns: (B, 4H) x (4H, nr) */
        if (nr > 0) {
            FN(fr_ugemm)(c->f_chi + r0, R, dA_n, G, 0, c->Wv_p + r0 * G, 0, B, nr, G, 0);
            for (int64_t bi = 0; bi < B; bi++)
                if (!fr_active(cfg->lengths, bi, n))
                    memcpy(c->f_chi + bi * R + r0, c->hold + bi * R + r0, (size_t)nr * sizeof(real));
        }
    }
    if (!c->grads_in_team) return;
    fr_team_barrier(team); /* every alpha[n] complete */

    /* The gradient GEMMs over all T B rows, this member's output columns; they
     * read dA and the activations in place (row-major W operand, op(A) = dA^T). */
    const int64_t I = cfg->I, TB = T * B, T1B = (T - 1) * B;
    int64_t i0, i1;
    fr_share(&i0, &i1, I, PW, id, nth);
    const int64_t ni = i1 - i0;
    const real *dA_first = c->dA + (size_t)(cfg->reverse ? T - 1 : 0) * B4H; /* first visit */
    const real *dA_rest = c->dA + (cfg->reverse ? 0 : B4H);                  /* (T-1, B, 4H) */
    const size_t prev_off = cfg->reverse ? 1 : 0;          /* predecessors' first step */
    if (ni > 0) /* dE/dW_x* = sum_n alpha_*[n] x[n]^T: (4H, TB) x (TB, ni) */
        FN(fr_ugemm)(c->dW_x + i0, I, c->dA, G, 1, c->x + i0, I, G, ni, TB, 1);
    if (nr > 0) { /* dE/dW_v* = sum_n alpha_*[n] y[prev]^T */
        FN(fr_ugemm)(c->dW_v + r0, R, dA_first, G, 1, c->y0 + r0, R, G, nr, B, 1);
        if (T > 1)
            FN(fr_ugemm)(c->dW_v + r0, R, dA_rest, G, 1, c->y_seq + prev_off * BR + r0, R, G, nr,
                         T1B, 1);
    }
    if (P && nh > 0) /* dE/dW_qv = sum_n chi_q[n] v[n]^T: (P, TB) x (TB, nh) */
        FN(fr_ugemm)(c->dW_qv + h0, H, c->dQ, P, 1, c->v_all + h0, H, P, nh, TB, 1);
    for (int g = 0; nh > 0 && g < 4; g++) { /* dE/db_* = sum_n alpha_*[n], this member's units */
        real *d = c->db + g * H + h0;
        for (int64_t row = 0; row < TB; row++) {
            const real *a = c->dA + (size_t)row * G + g * H + h0;
            for (int64_t j = 0; j < nh; j++) d[j] += a[j];
        }
    }
    if (c->dx && ni > 0) /* dE/dx[n] = sum_* W_x*^T alpha_*[n]: (TB, 4H) x (4H, ni) */
        FN(fr_ugemm)(c->dx + i0, I, c->dA, G, 0, c->W_x + i0, I, TB, ni, G, 1);
}

int FN(fr_lstm_backward)(FR_LSTM_BACKWARD_ARGS(real)) {
    lstm_layout L;
    FR_CHECK(lstm_layout_of(&L, cfg));
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H, P = cfg->P;
    const int64_t R = P ? P : H;
    const int diag = cfg->peepholes == FR_PEEP_DIAGONAL, full = cfg->peepholes == FR_PEEP_FULL;
    const int aclip = cfg->accumulation_clip > 0;
    if (!dW_x || !dW_v || !db || !work || !acts || !x || !y_seq || !s0 || !y0 || !W_x || !W_v)
        return FR_ENULL;
    if ((cfg->peepholes && (!W_s || !dW_s)) || (P && (!W_qv || !dW_qv))) return FR_ENULL;
    const size_t B4H = L.B4H, BH = L.BH, BR = L.BR;
    const real c_acc = (real)cfg->accumulation_clip;
    const real c_cell = cfg->cell_clip > 0 ? (real)cfg->cell_clip : (real)INFINITY;
    const real coupled = (real)cfg->coupled_gates;

    const real *gates_all = acts;                  /* (T, B, 4H) */
    const real *s_all = acts + L.TB4H;             /* (T, B, H) */
    const real *v_all = s_all + L.TBH;             /* (T, B, H) with projection */
    real *dA = work;                               /* (T, B, 4H) alpha_* of every step */
    real *dQ = dA + L.TB4H;                        /* (T, B, P) chi_q of every step */
    real *f_chi = dQ + L.TBP;                      /* (B, R) W_v^T alpha[n+1] */
    real *hold = f_chi + BR;                       /* (B, R) carry through padding */
    real *f_psi = hold + BR;                       /* (B, H) */
    real *chi = f_psi + BH;                        /* (B, H) dE/dv[n] */
    real *psi = chi + BH;                          /* (B, H) dE/ds[n] */
    real *r_row = psi + BH;                        /* (H) */
    real *zeros = r_row + H;                       /* (max(B R, 3H)) */
    real *dw_sink = zeros + L.n_zeros;             /* (3, H) diagonal grads when not diagonal */
    real *gw_blk = dw_sink + 3 * H;                /* (B, 4H) recomputed gates */
    real *mask_blk = gw_blk + B4H;                 /* (B, 4H) accumulation-clip masks */
    const int team = lstm_team_path(cfg);
    /* team path: packed W_v (R_pad, 4H), then packed W_qv (H_pad, P) */
    real *Wp = team ? (real *)fr_align64(mask_blk + B4H) : NULL;
    real *Wq_p = team ? Wp + L.packed_bwd_wv : NULL;
    const int team_grads = team && lstm_grads_in_team(cfg); /* read once: a global setting */
    memset(zeros, 0, L.n_zeros * sizeof(real));
    memset(dw_sink, 0, (size_t)(3 * H) * sizeof(real));
    if (!aclip) for (size_t i = 0; i < B4H; i++) mask_blk[i] = 1;
    const real *w_diag = diag ? W_s : zeros;       /* (3, H) */
    real *dw_diag = diag ? dW_s : dw_sink;         /* (3, H) */

    /* f_chi[T] = dE/d(final y) from a later window, f_psi[T] = dE/d(final s). */
    if (dy_T) memcpy(f_chi, dy_T, BR * sizeof(real)); else memset(f_chi, 0, BR * sizeof(real));
    if (ds_T) memcpy(f_psi, ds_T, BH * sizeof(real)); else memset(f_psi, 0, BH * sizeof(real));

    if (team) {
        FN(lstm_bwd_ctx) c = {cfg, dA, dQ, f_chi, hold, f_psi, chi, psi, r_row, zeros, gw_blk,
                              mask_blk, Wp, Wq_p,
                              dw_diag, dy_seq, gates_all, s_all, s0, W_v, W_qv, w_diag,
                              dW_x, dW_v, dW_qv, db, dx, x, y_seq, y0, v_all, W_x,
                              team_grads};
        fr_team_run(lstm_team_size(cfg, FR_PW(real)), FN(lstm_backward_member), &c);
    }
    /* The step loop on the GEMM provider (the team ran it otherwise). */
    for (int64_t k = T - 1; !team && k >= 0; k--) {
        const int64_t n = cfg->reverse ? T - 1 - k : k;
        const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
        const real *s_prev = k == 0 ? s0 : s_all + (size_t)n_prev * BH;   /* (B, H) */
        const real *s_n = s_all + (size_t)n * BH;                         /* (B, H) */
        const real *g_n = gates_all + (size_t)n * B4H;                    /* (B, 4H) */
        const real *dy_n = dy_seq ? dy_seq + (size_t)n * BR : zeros;      /* (B, R) */
        real *dA_n = dA + (size_t)n * B4H;                                /* (B, 4H) */
        real *chi_q = P ? dQ + (size_t)n * B * P : chi;                   /* (B, R) */

        /* chi_q[n] = dy/dy[n] + f_chi[n+1]; padding ignores dy and passes f_chi on */
        for (int64_t bi = 0; bi < B; bi++) {
            real *cq = chi_q + bi * R, *fc = f_chi + bi * R;
            const real *d = dy_n + bi * R;
            if (fr_active(cfg->lengths, bi, n)) {
                for (int64_t j = 0; j < R; j++) cq[j] = d[j] + fc[j];
            } else {
                memcpy(hold + bi * R, fc, (size_t)R * sizeof(real));
                memset(cq, 0, (size_t)R * sizeof(real));
            }
        }
        if (P) /* chi[n] = W_qv^T chi_q[n] (§3b) */
            FR_CHECK(FN(fr_gemm)(chi, chi_q, W_qv, 0, 0, B, H, P, 1, 0, P, H, H));

        for (int64_t bi = 0; bi < B; bi++) {
            if (!fr_active(cfg->lengths, bi, n)) {
                memset(dA_n + bi * G, 0, (size_t)G * sizeof(real));
                continue;
            }
            const real *gw = g_n + bi * G;
            if (aclip) {
                FN(lstm_row_regate)(gw_blk + bi * G, mask_blk + bi * G, g_n + bi * G, c_acc,
                                    cfg->coupled_gates, H, H);
                gw = gw_blk + bi * G;
            }
            FN(lstm_row_backward_readout)(dA_n + bi * G, psi + bi * H, dw_diag + 2 * H, r_row,
                                          chi + bi * H, f_psi + bi * H, gw, mask_blk + bi * G,
                                          s_n + bi * H, w_diag + 2 * H, H, H);
        }
        if (full) /* psi += W_scr^T alpha_cr */
            FR_CHECK(FN(fr_gemm)(psi, dA_n + 3 * H, W_s + (size_t)2 * H * H, 0, 0, B, H, H, 1, 1,
                                 G, H, H));
        for (int64_t bi = 0; bi < B; bi++) {
            if (!fr_active(cfg->lengths, bi, n)) continue; /* f_psi holds through padding */
            const real *gw = aclip ? gw_blk + bi * G : g_n + bi * G;
            FN(lstm_row_backward_state)(dA_n + bi * G, f_psi + bi * H, dw_diag, psi + bi * H, gw,
                                        mask_blk + bi * G, s_prev + bi * H, w_diag, c_cell,
                                        coupled, H, H);
        }
        if (full) /* f_psi += W_scu^T alpha_cu + W_scs^T alpha_cs */
            FR_CHECK(FN(fr_gemm)(f_psi, dA_n, W_s, 0, 0, B, H, 2 * H, 1, 1, G, H, H));
        /* f_chi[n] = sum_* W_v*^T alpha_*[n]: (B, 4H) x (4H, R) */
        FR_CHECK(FN(fr_gemm)(f_chi, dA_n, W_v, 0, 0, B, R, G, 1, 0, G, R, R));
        for (int64_t bi = 0; bi < B; bi++)
            if (!fr_active(cfg->lengths, bi, n))
                memcpy(f_chi + bi * R, hold + bi * R, (size_t)R * sizeof(real));
    }
    /* Initial-state gradients: dE/dy[-1] = f_chi[0], dE/ds[-1] = f_psi[0]. */
    if (dy0) for (size_t i = 0; i < BR; i++) dy0[i] += f_chi[i];
    if (ds0) for (size_t i = 0; i < BH; i++) ds0[i] += f_psi[i];
    if (team_grads) return FR_OK; /* the team did the gradient GEMMs */

    const int64_t TB = T * B, T1B = (T - 1) * B;
    /* step n's predecessor: forward n-1 (the rows after the first step), reverse n+1 */
    real *dA_first = dA + (size_t)(cfg->reverse ? T - 1 : 0) * B4H;   /* alpha of the first visit */
    real *dA_rest = dA + (cfg->reverse ? 0 : B4H);                     /* (T-1, B, 4H) */
    const size_t prev_off = cfg->reverse ? 1 : 0;                      /* predecessors' first step */
    /* dE/dW_x* = sum_n alpha_*[n] x[n]^T: (4H, TB) x (TB, I) */
    FR_CHECK(FN(fr_gemm)(dW_x, dA, x, 1, 0, G, I, TB, 1, 1, G, I, I));
    /* dE/dW_v* = sum_n alpha_*[n] y[prev]^T */
    FR_CHECK(FN(fr_gemm)(dW_v, dA_first, y0, 1, 0, G, R, B, 1, 1, G, R, R));
    if (T > 1)
        FR_CHECK(FN(fr_gemm)(dW_v, dA_rest, y_seq + prev_off * BR, 1, 0, G, R, T1B, 1, 1, G, R, R));
    if (full) {
        /* dE/dW_scu, dE/dW_scs = sum_n alpha_{cu,cs}[n] s[prev]^T: (2H, TB) x (TB, H) */
        FR_CHECK(FN(fr_gemm)(dW_s, dA_first, s0, 1, 0, 2 * H, H, B, 1, 1, G, H, H));
        if (T > 1)
            FR_CHECK(FN(fr_gemm)(dW_s, dA_rest, s_all + prev_off * BH, 1, 0, 2 * H, H, T1B, 1, 1,
                                 G, H, H));
        /* dE/dW_scr = sum_n alpha_cr[n] s[n]^T */
        FR_CHECK(FN(fr_gemm)(dW_s + (size_t)2 * H * H, dA + 3 * H, s_all, 1, 0, H, H, TB, 1, 1,
                             G, H, H));
    }
    if (P) /* dE/dW_qv = sum_n chi_q[n] v[n]^T: (P, TB) x (TB, H) */
        FR_CHECK(FN(fr_gemm)(dW_qv, dQ, v_all, 1, 0, P, H, TB, 1, 1, P, H, H));
    /* dE/db_* = sum_n alpha_*[n] */
    for (int64_t row = 0; row < TB; row++) {
        const real *a = dA + (size_t)row * G;
        for (int64_t j = 0; j < G; j++) db[j] += a[j];
    }
    /* dE/dx[n] = sum_* W_x*^T alpha_*[n]: (TB, 4H) x (4H, I) */
    if (dx) FR_CHECK(FN(fr_gemm)(dx, dA, W_x, 0, 0, TB, I, G, 1, 1, G, I, I));
    return FR_OK;
}

#undef FN
