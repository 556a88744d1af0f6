/* Type-generic LSTM body, included by lstm.c with `real`, SUFFIX, EXP (undefined
 * again at the end). Equation names refer to docs/equations.md §2 (Vanilla
 * LSTM) and §3 (augmented LSTM).
 *
 * One forward and one backward time loop, each run by every member of a team
 * on its slice of the hidden units (a team of one owns them all). The loops
 * reach every weight product through the call's GEMM table: the packed
 * micro-kernel (panels of the member's units, the team path) or the GEMM
 * provider (the BLAS, one member). Per step: the recurrent GEMM, the fused
 * element-wise passes below (split only where a full peephole needs a GEMM in
 * between), a barrier, and nothing allocated. */
#define FN(name) FR_CAT(name, SUFFIX)

#include "warp_body.h"
#include "cell_body.h"

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
                               const fr_lstm_warps *wp,  /* G_c, G_d */
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
    FN(vwarp)(&wp->gate, gw, src, n);                 /* g_cu = G_c(a_cu) (2.5) */
    FN(vwarp)(&wp->gate, gw + H, src + H, n);         /* g_cs = G_c(a_cs) */
    FN(vwarp)(&wp->cell, gw + 2 * H, src + 2 * H, n); /* u = G_d(a_du) (2.6) */
    if (coupled)
        for (int64_t j = 0; j < n; j++) gw[H + j] = 1 - gw[j];   /* g_cs = 1 - g_cu */
    for (int64_t j = 0; j < n; j++) s[j] = gw[H + j] * sp[j] + gw[j] * gw[2 * H + j];
    if (c_cell > 0)
        for (int64_t j = 0; j < n; j++) s[j] = FN(clip)(s[j], c_cell);
    if (w_s) /* the readout peephole sees the new state s[n] */
        for (int64_t j = 0; j < n; j++) a[3 * H + j] += w_s[2 * H + j] * s[j];
}

/* Part 2: g_cr = G_c(a_cr), v[n] = g_cr G_d(s[n]) (2.7), (2.8). */
FR_TARGET_CLONES
static void FN(lstm_row_readout)(real *a_cr,           /* (n) */
                                 real *gw_cr,          /* (n) may alias a_cr */
                                 real *restrict v,     /* (n) v[n] out */
                                 const real *restrict s, /* (n) s[n] */
                                 const fr_lstm_warps *wp, real c_acc, int64_t n) {
    if (c_acc > 0)
        for (int64_t j = 0; j < n; j++) gw_cr[j] = FN(clip)(a_cr[j], c_acc);
    FN(vwarp)(&wp->gate, gw_cr, c_acc > 0 ? gw_cr : a_cr, n);
    FN(vwarp)(&wp->output, v, s, n);
    for (int64_t j = 0; j < n; j++) v[j] *= gw_cr[j];
}


/* ---- backward -----------------------------------------------------------------
 * When the store holds a_* (accumulation clip, or general warping functions),
 * recompute the gates of one row and the clip masks (1 where |a| <= c, the
 * gradient of the clip; c = inf without the clip). With general functions the
 * mask is then multiplied by G'(clip(a)): the whole derivative d g / d a. */
FR_TARGET_CLONES
static void FN(lstm_row_regate)(real *restrict gw, real *restrict mask, const real *restrict a,
                                const fr_lstm_warps *wp, real c_acc, int coupled, int64_t H,
                                int64_t n) {
    for (int g = 0; g < 4; g++)
        for (int64_t j = 0; j < n; j++) {
            const real ag = a[g * H + j];
            mask[g * H + j] = (real)((ag <= c_acc) & (ag >= -c_acc)); /* no branch */
            gw[g * H + j] = FN(clip)(ag, c_acc);
        }
    if (wp->general)
        for (int g = 0; g < 4; g++)
            FN(vwarp_grad_mul)(mask + g * H, gw + g * H, n, g == 2 ? &wp->cell : &wp->gate);
    FN(vwarp)(&wp->gate, gw, gw, n);
    FN(vwarp)(&wp->gate, gw + H, gw + H, n);
    FN(vwarp)(&wp->cell, gw + 2 * H, gw + 2 * H, n);
    FN(vwarp)(&wp->gate, gw + 3 * H, gw + 3 * H, n);
    if (coupled)
        for (int64_t j = 0; j < n; j++) gw[H + j] = 1 - gw[j];
}

/* Part 1 for one active row: r[n], alpha_cr and psi = dE/ds[n] without the
 * full-peephole term W_scr^T alpha_cr (a GEMM the caller adds). general: the
 * derivatives are mask (d g / d a) and dr = G_d'(s[n]); otherwise sigmoid and
 * tanh's, from the gates and r (one loop for each, chosen per row). */
FR_ALWAYS_INLINE
void FN(lstm_row_backward_readout_body)(real *restrict ar,        /* (4H) alpha_cr at 3H */
                                          real *restrict psi,       /* (H) out */
                                          real *restrict dw_scr,    /* (H) += */
                                          real *restrict r,         /* (H) scratch r[n] */
                                          const real *restrict chi, /* (H) dE/dv[n] */
                                          const real *restrict f_psi, /* (H) f_psi[n+1] */
                                          const real *restrict gw,  /* (4H) gates */
                                          const real *restrict mask,/* (4H) clip masks */
                                          const real *restrict s,   /* (H) s[n] */
                                          const real *restrict w_scr, /* (H) */
                                          real *restrict dr,        /* (H) scratch G_d'(s[n]) */
                                          const fr_lstm_warps *wp, int general,
                                          int64_t H, int64_t n) {
    FN(vwarp)(&wp->output, r, s, n); /* r[n] = G_d(s[n]), recomputed rather than stored */
    if (general) {
        for (int64_t j = 0; j < n; j++) dr[j] = 1;
        FN(vwarp_grad_mul)(dr, s, n, &wp->output);
    }
    for (int64_t j = 0; j < n; j++) {
        const real g_cr = gw[3 * H + j];
        const real d_cr = general ? mask[3 * H + j] : g_cr * (1 - g_cr) * mask[3 * H + j];
        const real d_r = general ? dr[j] : 1 - r[j] * r[j];
        const real alpha_cr = chi[j] * r[j] * d_cr;
        const real rho = chi[j] * g_cr;                                 /* dE/dr[n] */
        psi[j] = rho * d_r + w_scr[j] * alpha_cr + f_psi[j];
        dw_scr[j] += alpha_cr * s[j];                  /* dE/dw_scr = sum alpha_cr s[n] */
        ar[3 * H + j] = alpha_cr;
    }
}

/* Part 2 for one active row: the cell clip's gradient, alpha_cs, alpha_cu,
 * alpha_du and f_psi[n] without the full-peephole terms (a GEMM); general as
 * for part 1. */
FR_ALWAYS_INLINE
void FN(lstm_row_backward_state_body)(real *restrict ar,          /* (4H) alpha_cu|cs|du */
                                        real *restrict f_psi,       /* (H) f_psi[n] out */
                                        real *restrict dw_s,        /* (3, H) += (cu, cs) */
                                        const real *restrict psi,   /* (H) dE/ds[n] */
                                        const real *restrict gw,    /* (4H) */
                                        const real *restrict mask,  /* (4H) */
                                        const real *restrict sp,    /* (H) s[n-1] */
                                        const real *restrict w_s,   /* (3, H) diagonal or zeros */
                                        real c_cell, real coupled, int general, int64_t H,
                                        int64_t n) {
    /* one pointer per gate row, so that the loop vectorises */
    real *restrict ar_cu = ar, *restrict ar_cs = ar + H, *restrict ar_du = ar + 2 * H;
    real *restrict dw_cu = dw_s, *restrict dw_cs = dw_s + H;
    for (int64_t j = 0; j < n; j++) {
        const real g_cu = gw[j], g_cs = gw[H + j], u = gw[2 * H + j];
        const real pre = g_cs * sp[j] + g_cu * u;               /* s[n] before the cell clip */
        const real keep = (real)((pre <= c_cell) & (pre >= -c_cell)); /* no branch */
        const real psi_p = psi[j] * keep;                       /* dE/d(pre-clip s[n]) */
        const real d_cs = general ? mask[H + j] : g_cs * (1 - g_cs) * mask[H + j];
        const real d_cu = general ? mask[j] : g_cu * (1 - g_cu) * mask[j];
        const real d_du = general ? mask[2 * H + j] : (1 - u * u) * mask[2 * H + j];
        const real alpha_cs = (1 - coupled) * psi_p * sp[j] * d_cs;
        /* with coupled gates s[n] = (1 - g_cu) s[n-1] + g_cu u: ds/dg_cu = u - s[n-1] */
        const real alpha_cu = psi_p * (u - coupled * sp[j]) * d_cu;
        const real alpha_du = psi_p * g_cu * d_du;
        /* f_psi[n] = W_scu^T alpha_cu + W_scs^T alpha_cs + g_cs psi */
        f_psi[j] = g_cs * psi_p + w_s[j] * alpha_cu + w_s[H + j] * alpha_cs;
        dw_cu[j] += alpha_cu * sp[j];      /* dE/dw_scu = sum alpha_cu s[n-1] */
        dw_cs[j] += alpha_cs * sp[j];      /* dE/dw_scs = sum alpha_cs s[n-1] */
        ar_cu[j] = alpha_cu;
        ar_cs[j] = alpha_cs;
        ar_du[j] = alpha_du;
    }
}

/* The two row passes, each specialised for the default and the general functions. */
#define FR_ROW_READOUT_ARGS                                                                   \
    real *restrict ar, real *restrict psi, real *restrict dw_scr, real *restrict r,          \
        const real *restrict chi, const real *restrict f_psi, const real *restrict gw,       \
        const real *restrict mask, const real *restrict s, const real *restrict w_scr,       \
        real *restrict dr, const fr_lstm_warps *wp, int64_t H, int64_t n
FR_TARGET_CLONES
static void FN(lstm_row_backward_readout)(FR_ROW_READOUT_ARGS) {
    FN(lstm_row_backward_readout_body)(ar, psi, dw_scr, r, chi, f_psi, gw, mask, s, w_scr, dr, wp,
                                       0, H, n);
}
FR_TARGET_CLONES
static void FN(lstm_row_backward_readout_general)(FR_ROW_READOUT_ARGS) {
    FN(lstm_row_backward_readout_body)(ar, psi, dw_scr, r, chi, f_psi, gw, mask, s, w_scr, dr, wp,
                                       1, H, n);
}
#undef FR_ROW_READOUT_ARGS
#define FR_ROW_STATE_ARGS                                                                     \
    real *restrict ar, real *restrict f_psi, real *restrict dw_s, const real *restrict psi,  \
        const real *restrict gw, const real *restrict mask, const real *restrict sp,         \
        const real *restrict w_s, real c_cell, real coupled, int64_t H, int64_t n
FR_TARGET_CLONES
static void FN(lstm_row_backward_state)(FR_ROW_STATE_ARGS) {
    FN(lstm_row_backward_state_body)(ar, f_psi, dw_s, psi, gw, mask, sp, w_s, c_cell, coupled, 0,
                                     H, n);
}
FR_TARGET_CLONES
static void FN(lstm_row_backward_state_general)(FR_ROW_STATE_ARGS) {
    FN(lstm_row_backward_state_body)(ar, f_psi, dw_s, psi, gw, mask, sp, w_s, c_cell, coupled, 1,
                                     H, n);
}
#undef FR_ROW_STATE_ARGS


/* ---- the GEMM table of a call -------------------------------------------------- */
#define WMAT FN(fr_wmat)
typedef struct {
    WMAT x;     /* forward: op = W_x^T (I, 4H), panels per gate */
    WMAT v;     /* forward: op = W_v^T (R, 4H), panels per gate */
    WMAT qv;    /* forward: op = W_qv^T (H, P) */
    WMAT s_cs;  /* forward, full peepholes: op = [W_scu; W_scs]^T (H, 2H) */
    WMAT s_cr;  /* forward, full peepholes: op = W_scr^T (H, H) */
    WMAT b_v;   /* backward: op = W_v (4H, R) */
    WMAT b_qv;  /* backward: op = W_qv (P, H) */
    WMAT b_scs; /* backward, full peepholes: op = [W_scu; W_scs] (2H, H) */
    WMAT b_scr; /* backward, full peepholes: op = W_scr (H, H) */
} FN(lstm_gemms);

/* Pack units [h0, h0 + nh) of W_x*, W_v* (per gate) and outputs [p0, p0 + np)
 * of W_qv into the panels pk[LP_*] (the layout does not depend on the split). */
static void FN(lstm_pack_slice)(real *const pk[LP_COUNT], const FN(fr_lstm_weights) *w,
                                const fr_lstm_config *cfg, int64_t h0, int64_t nh, int64_t p0,
                                int64_t np) {
    const int64_t I = cfg->I, H = cfg->H, P = cfg->P, R = P ? P : H;
    FN(fr_pack_gates)(pk[LP_WX], w->W_x, 4, H, I, h0, nh);
    FN(fr_pack_gates)(pk[LP_WV], w->W_v, 4, H, R, h0, nh);
    if (np > 0) FN(fr_pack)(pk[LP_WQ] + p0 * H, w->W_qv + p0 * H, 1, np, H, H);
}

/* ---- forward ---------------------------------------------------------------------
 * Member id of n owns hidden units [h0, h1) (whole panels) and, with the
 * projection, outputs [p0, p1): the x-side accumulations of its gate columns
 * for a chunk of steps, and per step its columns of the recurrent GEMM and the
 * element-wise passes of its units; the members meet once per step (twice with
 * the projection, whose q[n] = W_qv v[n] reads all of v[n]). */
typedef struct {
    const fr_lstm_config *cfg;
    const FN(fr_lstm_forward_seq) *seq;
    const FN(fr_lstm_weights) *w;
    FN(lstm_gemms) gm;
    real *a[LA_COUNT];  /* the activation store (training) */
    real *p[LF_COUNT];  /* the workspace */
    real *pk[LP_COUNT]; /* the panels (micro-kernel path) */
    fr_lstm_warps wp;   /* G_c, G_d (§9) */
    int pack;           /* the members pack their panels first */
    int64_t Tc;         /* steps per x-side GEMM */
    fr_qcall qc;        /* reduced precision (gm.*.qpacked set) */
    fr_poll poll;
} FN(lstm_fwd);

static void FN(lstm_forward_loop)(void *vctx, int id, int nth, fr_team *team) {
    FN(lstm_fwd) *c = vctx;
    const fr_lstm_config *cfg = c->cfg;
    const FN(fr_lstm_forward_seq) *seq = c->seq;
    const FN(lstm_gemms) *gm = &c->gm;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H, P = cfg->P;
    const int64_t R = P ? P : H, PW = FR_PW(real), Tc = c->Tc;
    const int training = seq->acts != NULL, keep = lstm_keeps_accumulations(cfg);
    const int full = cfg->peepholes == FR_PEEP_FULL;
    const fr_lstm_warps *wp = &c->wp;
    const real c_acc = (real)cfg->accumulation_clip, c_cell = (real)cfg->cell_clip;
    const real *w_diag = cfg->peepholes == FR_PEEP_DIAGONAL ? c->w->W_s : NULL; /* (3, H) */
    const real *bias = c->w->b;                                               /* (4H) */
    const size_t B4H = (size_t)B * G, BH = (size_t)B * H, BR = (size_t)B * R;
    real *gates_all = c->a[LA_GATES], *s_all = c->a[LA_S], *v_all = c->a[LA_V]; /* (T, B, .) */
    real *chunk = c->p[LF_CHUNK];                                               /* (Tc, B, 4H) */
    real *s_ring = c->p[LF_S_RING];                                             /* (2, B, H) */
    real *v_blk = c->p[LF_V_BLK];                                               /* (B, H) */
    real *gw_blk = c->p[LF_GW];                                                 /* (B, 4H) */
    real *y_seq = seq->y_seq;                                                   /* (T, B, R) */
    int64_t h0, h1, p0 = 0, p1 = 0;
    fr_share(&h0, &h1, H, PW, id, nth);
    if (P) fr_share(&p0, &p1, P, PW, id, nth);
    const int64_t nh = h1 - h0, np = p1 - p0;
    if (c->pack) FN(lstm_pack_slice)(c->pk, c->w, cfg, h0, nh, p0, np);

    for (int64_t k0 = 0; k0 < T; k0 += Tc) {
        const int64_t tc = (T - k0 < Tc) ? T - k0 : Tc;
        const int64_t lo = cfg->reverse ? T - k0 - tc : k0; /* steps [lo, lo + tc) */
        real *g_lo = training ? gates_all + (size_t)lo * B4H : chunk; /* (tc, B, 4H) */
        /* x-side accumulations of tc steps, this member's columns: W_x* x[n] */
        FN(fr_gates_product)(g_lo, G, seq->x + (size_t)lo * B * I, I, &gm->x, &c->qc, c->qc.qx,
                             tc * B, I, H, 4, h0, nh, 0, id, nth, team);
        for (int64_t k = k0; k < k0 + tc; k++) {
            const int64_t n = cfg->reverse ? T - 1 - k : k;
            const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
            real *g = g_lo + (size_t)(n - lo) * B4H;                           /* (B, 4H) */
            real *gw = keep ? gw_blk : g;                                      /* (B, 4H) */
            const real *y_prev = k == 0 ? seq->y0 : y_seq + (size_t)n_prev * BR; /* (B, R) */
            const real *s_prev = k == 0 ? seq->s0
                                 : training ? s_all + (size_t)n_prev * BH
                                            : s_ring + (size_t)((k - 1) & 1) * BH;
            real *s_n = training ? s_all + (size_t)n * BH : s_ring + (size_t)(k & 1) * BH;
            real *y_n = y_seq + (size_t)n * BR;                                /* (B, R) */
            real *v_n = !P ? y_n : training ? v_all + (size_t)n * BH : v_blk;  /* (B, H) */

            /* recurrent accumulations: + W_v* v[n-1] (W_q* q[n-1]) */
            FN(fr_gates_product)(g, G, y_prev, R, &gm->v, &c->qc, c->qc.qr, B, R, H, 4, h0, nh, 1,
                                 id, nth, team);
            if (full) /* + W_scu s[n-1], W_scs s[n-1] (the provider: one member) */
                FN(fr_wgemm)(g, G, s_prev, H, &gm->s_cs, B, 0, 2 * H, H, 1);
            for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
                const size_t o = (size_t)bi * H + h0, og = (size_t)bi * G + h0;
                if (fr_active(cfg->lengths, bi, n)) {
                    FN(lstm_row_state)(g + og, gw + og, s_n + o, s_prev + o, bias + h0,
                                       w_diag ? w_diag + h0 : NULL, wp, c_acc, c_cell,
                                       cfg->coupled_gates, H, nh);
                    if (!full)
                        FN(lstm_row_readout)(g + og + 3 * H, gw + og + 3 * H, v_n + o, s_n + o,
                                             wp, c_acc, nh);
                } else { /* padding: hold the state */
                    memcpy(s_n + o, s_prev + o, (size_t)nh * sizeof(real));
                    if (P) /* finite, and never read with a nonzero weight */
                        memset(v_n + o, 0, (size_t)nh * sizeof(real));
                    else
                        memcpy(y_n + o, y_prev + o, (size_t)nh * sizeof(real));
                }
            }
            if (full) { /* + W_scr s[n], then the readout */
                FN(fr_wgemm)(g + 3 * H, G, s_n, H, &gm->s_cr, B, 0, H, H, 1);
                for (int64_t bi = 0; bi < B; bi++)
                    if (fr_active(cfg->lengths, bi, n))
                        FN(lstm_row_readout)(g + bi * G + 3 * H, gw + bi * G + 3 * H, v_n + bi * H,
                                             s_n + bi * H, wp, c_acc, H);
            }
            if (P) { /* q[n] = W_qv v[n] (§3b) over all of v[n]; padding holds q */
                fr_team_barrier(team);
                if (gm->qv.qpacked) /* meets the team once more inside */
                    fr_qgemm_cols_if(FR_REDUCED_OK, y_n, R, v_n, H, gm->qv.qpacked, &c->qc,
                                     c->qc.qr, B, H, p0, np, 1, P, 0, 0, id, nth, team);
                else if (np > 0)
                    FN(fr_wgemm)(y_n, R, v_n, H, &gm->qv, B, p0, np, H, 0);
                if (np > 0) {
                    for (int64_t bi = 0; bi < B; bi++)
                        if (!fr_active(cfg->lengths, bi, n))
                            memcpy(y_n + bi * R + p0, y_prev + bi * R + p0,
                                   (size_t)np * sizeof(real));
                }
            }
            /* y[n] complete: the next step reads all of it */
            if (fr_step_end(&c->poll, id, team)) return;
        }
    }
}

int FN(fr_lstm_forward)(const FN(fr_lstm_forward_seq) *seq, const FN(fr_lstm_weights) *w,
                        const fr_lstm_config *cfg, const fr_call *call) {
    FR_CHECK(lstm_check_config(cfg));
    if (!seq || !w) return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, P = cfg->P;
    const int64_t R = P ? P : H;
    const int training = seq->acts != NULL;
    if (!seq->y_seq || !seq->s_T || !seq->y_T || !seq->x || !seq->s0 || !seq->y0 || !w->b)
        return FR_ENULL;
    /* the float W_x, W_v, W_qv (reduced precision: from w->reduced) */
    if (!cfg->reduced && (!w->W_x || !w->W_v || (P && !w->W_qv))) return FR_ENULL;
    if (cfg->peepholes && !w->W_s) return FR_ENULL;
    if (w->packed && !lstm_ukernel_ok(cfg)) return FR_EINVAL;
    /* reduced precision: inference in float32, the weights from fr_lstm_qpack */
    if (cfg->reduced && (!FR_REDUCED_OK || training || w->packed)) return FR_EINVAL;
    if (cfg->reduced && !w->reduced) return FR_ENULL;
    size_t nf[LF_COUNT], na[LA_COUNT], np[LP_COUNT], n_work;
    FR_CHECK(lstm_forward_regions(nf, cfg, training));
    FR_CHECK(fr_regions_total(&n_work, nf, LF_COUNT, 1));
    if (n_work > 0 && !seq->work) return FR_ENULL;
    FR_CHECK(lstm_acts_regions(na, cfg));
    FR_CHECK(lstm_packed_regions(np, cfg));
    fr_plan plan = lstm_plan(cfg, call, sizeof(real), w->packed != NULL || cfg->reduced);
    if (cfg->reduced) { /* the reduced GEMMs run on the team path only */
        if (cfg->peepholes == FR_PEEP_FULL) plan.threads = 1; /* their GEMMs: one member */
        plan.ukernel = 0; /* no float panels */
    }

    FN(lstm_fwd) c = {.cfg = cfg, .seq = seq, .w = w, .wp = fr_lstm_warps_of(cfg)};
    fr_regions_point((void **)c.p, nf, LF_COUNT, seq->work, sizeof(real), 1);
    if (training) fr_regions_point((void **)c.a, na, LA_COUNT, seq->acts, sizeof(real), 0);
    if (plan.ukernel) {
        c.pack = w->packed == NULL;
        fr_regions_point((void **)c.pk, np, LP_COUNT,
                         c.pack ? (void *)c.p[LF_PACKED] : (void *)w->packed, sizeof(real), 1);
    }
    /* the GEMM table: panels on the micro-kernel path, row-major W on the provider */
    c.gm.x = (WMAT){w->W_x, I, 1, c.pk[LP_WX], NULL};
    c.gm.v = (WMAT){w->W_v, R, 1, c.pk[LP_WV], NULL};
    c.gm.qv = (WMAT){w->W_qv, H, 1, c.pk[LP_WQ], NULL};
    if (cfg->peepholes == FR_PEEP_FULL) {
        c.gm.s_cs = (WMAT){w->W_s, H, 1, NULL, NULL};
        c.gm.s_cr = (WMAT){w->W_s + (size_t)2 * H * H, H, 1, NULL, NULL};
    }
#if FR_REDUCED_OK
    if (cfg->reduced) { /* the reduced panels (fr_lstm_qpack's layout) and their activations */
        size_t nq[LQ_COUNT];
        FR_CHECK(lstm_qpacked_regions(nq, cfg));
        const char *qp = w->reduced;
        c.gm.x.qpacked = qp;
        c.gm.v.qpacked = qp + nq[LQ_WX];
        c.gm.qv.qpacked = P ? qp + nq[LQ_WX] + nq[LQ_WV] : NULL;
        c.qc = (fr_qcall){cfg->reduced, fr_qget_isa(cfg->reduced), c.p[LF_QX], c.p[LF_QR]};
    }
#endif
    fr_poll_init(&c.poll, call);
    /* the x-side GEMM: chunks of the inference workspace, or all T steps of a
     * training call at once (in pieces when the call can be interrupted; whole
     * inference chunks, so that both see the same GEMMs) */
    const int64_t Tc_infer = fr_inference_chunk(T, B);
    c.Tc = training ? fr_piece_steps(&c.poll, T, 2.0 * (double)B * 4.0 * (double)H * (double)I,
                                     Tc_infer)
                    : Tc_infer;
    fr_team_run(plan.threads, FN(lstm_forward_loop), &c);
    if (fr_poll_stopped(&c.poll)) return FR_EINTR;

    const int64_t n_last = cfg->reverse ? 0 : T - 1;
    const real *s_last = training ? c.a[LA_S] + (size_t)n_last * B * H
                                  : c.p[LF_S_RING] + (size_t)((T - 1) & 1) * B * H;
    memcpy(seq->s_T, s_last, (size_t)(B * H) * sizeof(real));
    memcpy(seq->y_T, seq->y_seq + (size_t)n_last * B * R, (size_t)(B * R) * sizeof(real));
    return FR_OK;
}

int FN(fr_lstm_pack)(real *packed, const FN(fr_lstm_weights) *w, const fr_lstm_config *cfg) {
    FR_CHECK(lstm_check_config(cfg));
    if (!packed || !w || !w->W_x || !w->W_v || (cfg->P && !w->W_qv)) return FR_ENULL;
    if (!lstm_ukernel_ok(cfg)) return FR_EINVAL;
    size_t np[LP_COUNT];
    real *pk[LP_COUNT];
    FR_CHECK(lstm_packed_regions(np, cfg));
    fr_regions_point((void **)pk, np, LP_COUNT, packed, sizeof(real), 1);
    FN(lstm_pack_slice)(pk, w, cfg, 0, cfg->H, 0, cfg->P);
    return FR_OK;
}

/* ---- backward --------------------------------------------------------------------
 * Member id owns units [h0, h1) and columns [r0, r1) of R (the same split as
 * its units without the projection): chi_q, f_chi of its columns, the
 * element-wise passes of its units, then (after the step's alpha are complete)
 * its columns of f_chi[n] = W_v^T alpha[n]. Its columns of f_chi are its own
 * to read at the next step, so one barrier per step suffices (two with the
 * projection: chi = W_qv^T chi_q reads all of chi_q). */
typedef struct {
    const fr_lstm_config *cfg;
    const FN(fr_lstm_grads) *g;
    const FN(fr_lstm_backward_seq) *seq;
    const FN(fr_lstm_weights) *w;
    FN(lstm_gemms) gm;
    const real *a[LA_COUNT]; /* the forward's activation store */
    real *p[LB_COUNT];       /* the workspace */
    const real *w_diag;      /* (3, H) diagonal peepholes, or zeros */
    real *dw_diag;           /* (3, H) their gradient, or a sink */
    fr_lstm_warps wp;        /* G_c, G_d (§9) */
    fr_bwd_state run;        /* the panels, where the gradient GEMMs run, their pieces, the poll */
} FN(lstm_bwd);

/* A piece of the gradient GEMMs over the rows of all T B steps: steps [t0, t1),
 * this member's output columns; they read alpha and the activations in place
 * (op(A) = dA^T). */
static void FN(lstm_grads_piece)(void *vc, const fr_grad_cols *k, int64_t t0, int64_t t1,
                                 int uk) {
    const FN(lstm_bwd) *c = vc;
    const fr_lstm_config *cfg = c->cfg;
    const FN(fr_lstm_grads) *g = c->g;
    const FN(fr_lstm_backward_seq) *seq = c->seq;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H, P = cfg->P;
    const int64_t R = P ? P : H, rows = (t1 - t0) * B;
    const int64_t i0 = k->i0, ni = k->ni, r0 = k->r0, nr = k->nr, h0 = k->h0, nh = k->nh;
    const int64_t h1 = h0 + nh;
    const int full = cfg->peepholes == FR_PEEP_FULL;
    const real *dA = c->p[LB_DA], *dQ = c->p[LB_DQ];          /* (T, B, 4H), (T, B, P) */
    const real *s_all = c->a[LA_S], *v_all = c->a[LA_V];       /* (T, B, H) */
    const size_t B4H = (size_t)B * G, BH = (size_t)B * H;
    const real *dA_p = dA + (size_t)t0 * B4H; /* (t1 - t0, B, 4H) */
    if (ni > 0) /* dE/dW_x* = sum_n alpha_*[n] x[n]^T: (4H, rows) x (rows, ni) */
        FN(fr_agemm)(uk, g->dW_x, I, dA_p, G, 1, seq->x + (size_t)t0 * B * I, I, G, i0, ni,
                     rows);
    if (nr > 0) /* dE/dW_v* = sum_n alpha_*[n] y[prev]^T */
        FN(fr_prev_gemm)(uk, g->dW_v, R, dA, G, seq->y0, seq->y_seq, R, G, r0, nr, B, T,
                         cfg->reverse, t0, t1);
    if (full && nh > 0) {
        /* dE/dW_scu, dE/dW_scs = sum_n alpha_{cu,cs}[n] s[prev]^T: (2H, rows) x (rows, nh) */
        FN(fr_prev_gemm)(uk, g->dW_s, H, dA, G, seq->s0, s_all, H, 2 * H, h0, nh, B, T,
                         cfg->reverse, t0, t1);
        /* dE/dW_scr = sum_n alpha_cr[n] s[n]^T */
        FN(fr_agemm)(uk, g->dW_s + (size_t)2 * H * H, H, dA_p + 3 * H, G, 1,
                     s_all + (size_t)t0 * BH, H, H, h0, nh, rows);
    }
    if (P && nh > 0) /* dE/dW_qv = sum_n chi_q[n] v[n]^T: (P, rows) x (rows, nh) */
        FN(fr_agemm)(uk, g->dW_qv, H, dQ + (size_t)t0 * B * P, P, 1, v_all + (size_t)t0 * BH, H,
                     P, h0, nh, rows);
    for (int q = 0; q < 4; q++) /* dE/db_* = sum_n alpha_*[n] */
        FN(fr_sum_rows)(g->db + q * H, dA_p + q * H, G, rows, h0, h1);
    if (seq->dx && ni > 0) /* dE/dx[n] = sum_* W_x*^T alpha_*[n]: (rows, 4H) x (4H, ni) */
        FN(fr_agemm)(uk, seq->dx + (size_t)t0 * B * I, I, dA_p, G, 0, c->w->W_x, I, rows, i0,
                     ni, G);
}
static int FN(lstm_grads)(FN(lstm_bwd) *c, int id, int nth, fr_team *team, int uk) {
    const fr_lstm_config *cfg = c->cfg;
    return fr_grads_run(&c->run, FN(lstm_grads_piece), c, cfg->T, cfg->I, cfg->H,
                        cfg->P ? cfg->P : cfg->H, FR_PW(real), id, nth, team, uk);
}

static void FN(lstm_backward_loop)(void *vctx, int id, int nth, fr_team *team) {
    FN(lstm_bwd) *c = vctx;
    const fr_lstm_config *cfg = c->cfg;
    const FN(fr_lstm_backward_seq) *seq = c->seq;
    const FN(lstm_gemms) *gm = &c->gm;
    const int64_t T = cfg->T, B = cfg->B, H = cfg->H, G = 4 * H, P = cfg->P, R = P ? P : H;
    const int64_t PW = FR_PW(real);
    const int keep = lstm_keeps_accumulations(cfg), full = cfg->peepholes == FR_PEEP_FULL;
    const fr_lstm_warps *wp = &c->wp;
    const real c_acc = cfg->accumulation_clip > 0 ? (real)cfg->accumulation_clip : (real)INFINITY;
    const real c_cell = cfg->cell_clip > 0 ? (real)cfg->cell_clip : (real)INFINITY;
    const real coupled = (real)cfg->coupled_gates;
    const size_t B4H = (size_t)B * G, BH = (size_t)B * H, BR = (size_t)B * R;
    real *const *p = c->p;
    real *dA = p[LB_DA], *dQ = p[LB_DQ];                      /* (T, B, 4H), (T, B, P) */
    real *f_chi = p[LB_F_CHI], *hold = p[LB_HOLD];            /* (B, R) */
    real *f_psi = p[LB_F_PSI], *chi = p[LB_CHI], *psi = p[LB_PSI]; /* (B, H) */
    real *r_row = p[LB_R_ROW], *dr_row = p[LB_DR_ROW]; /* (H) */
    real *gw_blk = p[LB_GW], *mask_blk = p[LB_MASK];      /* (B, 4H) */
    const real *zeros = p[LB_ZEROS];
    const real *gates_all = c->a[LA_GATES], *s_all = c->a[LA_S];
    const real *w_diag = c->w_diag;
    real *dw_diag = c->dw_diag;
    int64_t h0, h1, r0, r1;
    fr_share(&h0, &h1, H, PW, id, nth);
    fr_share(&r0, &r1, R, PW, id, nth);
    const int64_t nh = h1 - h0, nr = r1 - r0;
    if (c->run.pack) { /* panels: W_v (K = 4H, N = R) for f_chi; W_qv (K = P, N = H) for chi */
        if (nr > 0) FN(fr_pack)(p[LB_WV_P] + r0 * G, c->w->W_v + r0, 0, nr, G, R);
        if (P && nh > 0) FN(fr_pack)(p[LB_WQ_P] + h0 * P, c->w->W_qv + h0, 0, nh, P, H);
    }

    for (int64_t k = T - 1; k >= 0; k--) {
        const int64_t n = cfg->reverse ? T - 1 - k : k;
        const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
        const real *s_prev = k == 0 ? seq->s0 : s_all + (size_t)n_prev * BH;  /* (B, H) */
        const real *s_n = s_all + (size_t)n * BH;                            /* (B, H) */
        const real *g_n = gates_all + (size_t)n * B4H;                       /* (B, 4H) */
        const real *dy_n = seq->dy_seq ? seq->dy_seq + (size_t)n * BR : zeros; /* (B, R) */
        real *dA_n = dA + (size_t)n * B4H;                                   /* (B, 4H) */
        real *chi_q = P ? dQ + (size_t)n * B * P : chi;                      /* (B, R) */

        /* chi_q[n] = dy/dy[n] + f_chi[n+1], this member's columns; padding
         * ignores dy and passes f_chi on */
        for (int64_t bi = 0; nr > 0 && bi < B; bi++) {
            real *cq = chi_q + bi * R + r0, *fc = f_chi + bi * R + r0;
            const real *d = dy_n + bi * R + r0;
            if (fr_active(cfg->lengths, bi, n)) {
                for (int64_t j = 0; j < nr; j++) cq[j] = d[j] + fc[j];
            } else {
                memcpy(hold + bi * R + r0, fc, (size_t)nr * sizeof(real));
                memset(cq, 0, (size_t)nr * sizeof(real));
            }
        }
        if (P) { /* chi[n] = W_qv^T chi_q[n] (§3b), this member's units */
            fr_team_barrier(team);
            if (nh > 0) FN(fr_wgemm)(chi, H, chi_q, P, &gm->b_qv, B, h0, nh, P, 0);
        }
        for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
            const size_t o = (size_t)bi * H + h0, og = (size_t)bi * G + h0;
            if (!fr_active(cfg->lengths, bi, n)) {
                for (int q = 0; q < 4; q++) memset(dA_n + og + q * H, 0, (size_t)nh * sizeof(real));
                continue; /* f_psi holds through padding */
            }
            const real *gw = g_n + og;
            if (keep) {
                FN(lstm_row_regate)(gw_blk + og, mask_blk + og, g_n + og, wp, c_acc,
                                    cfg->coupled_gates, H, nh);
                gw = gw_blk + og;
            }
            (wp->general ? FN(lstm_row_backward_readout_general) : FN(lstm_row_backward_readout))(
                dA_n + og, psi + o, dw_diag + 2 * H + h0, r_row + h0, chi + o, f_psi + o, gw,
                mask_blk + og, s_n + o, w_diag + 2 * H + h0, wp->general ? dr_row + h0 : NULL, wp,
                H, nh);
            if (!full)
                (wp->general ? FN(lstm_row_backward_state_general) : FN(lstm_row_backward_state))(
                    dA_n + og, f_psi + o, dw_diag + h0, psi + o, gw, mask_blk + og, s_prev + o,
                    w_diag + h0, c_cell, coupled, H, nh);
        }
        if (full) { /* psi += W_scr^T alpha_cr, the state pass, f_psi += W_scu^T a_cu + W_scs^T a_cs */
            FN(fr_wgemm)(psi, H, dA_n + 3 * H, G, &gm->b_scr, B, 0, H, H, 1);
            for (int64_t bi = 0; bi < B; bi++) {
                if (!fr_active(cfg->lengths, bi, n)) continue;
                const real *gw = keep ? gw_blk + bi * G : g_n + bi * G;
                (wp->general ? FN(lstm_row_backward_state_general) : FN(lstm_row_backward_state))(
                    dA_n + bi * G, f_psi + bi * H, dw_diag, psi + bi * H, gw, mask_blk + bi * G,
                    s_prev + bi * H, w_diag, c_cell, coupled, H, H);
            }
            FN(fr_wgemm)(f_psi, H, dA_n, G, &gm->b_scs, B, 0, H, 2 * H, 1);
        }
        if (fr_step_end(&c->run.poll, id, team)) return; /* alpha[n] complete */
        /* f_chi[n] = sum_* W_v*^T alpha_*[n], this member's columns: (B, 4H) x (4H, nr) */
        if (nr > 0) {
            FN(fr_wgemm)(f_chi, R, dA_n, G, &gm->b_v, B, r0, nr, G, 0);
            for (int64_t bi = 0; bi < B; bi++)
                if (!fr_active(cfg->lengths, bi, n))
                    memcpy(f_chi + bi * R + r0, hold + bi * R + r0, (size_t)nr * sizeof(real));
        }
    }
    if (!c->run.grads_in_team) return;
    fr_team_barrier(team); /* every alpha[n] complete */
    FN(lstm_grads)(c, id, nth, team, 1);
}
static int FN(lstm_grads_after)(void *c) { return FN(lstm_grads)(c, 0, 1, NULL, 0); }

int FN(fr_lstm_backward)(const FN(fr_lstm_grads) *g, const FN(fr_lstm_backward_seq) *seq,
                         const FN(fr_lstm_weights) *w, const fr_lstm_config *cfg,
                         const fr_call *call) {
    FR_CHECK(lstm_check_config(cfg));
    if (!g || !seq || !w) return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H, P = cfg->P;
    const int64_t R = P ? P : H;
    const int diag = cfg->peepholes == FR_PEEP_DIAGONAL, full = cfg->peepholes == FR_PEEP_FULL;
    if (!g->dW_x || !g->dW_v || !g->db || !seq->work || !seq->acts || !seq->x || !seq->y_seq ||
        !seq->s0 || !seq->y0 || !w->W_x || !w->W_v)
        return FR_ENULL;
    if ((cfg->peepholes && (!w->W_s || !g->dW_s)) || (P && (!w->W_qv || !g->dW_qv)))
        return FR_ENULL;
    size_t nb[LB_COUNT], na[LA_COUNT];
    FR_CHECK(lstm_backward_regions(nb, cfg));
    FR_CHECK(lstm_acts_regions(na, cfg));
    const fr_plan plan = lstm_plan(cfg, call, sizeof(real), 0);

    FN(lstm_bwd) c = {.cfg = cfg, .g = g, .seq = seq, .w = w};
    FR_CHECK(fr_workspace_point((void **)c.p, nb, LB_COUNT, seq->work, sizeof(real)));
    fr_regions_point((void **)c.a, na, LA_COUNT, (void *)seq->acts, sizeof(real), 0);
    real *const *p = c.p;
    memset(p[LB_ZEROS], 0, nb[LB_ZEROS] * sizeof(real));
    memset(p[LB_DW_SINK], 0, nb[LB_DW_SINK] * sizeof(real));
    c.wp = fr_lstm_warps_of(cfg);
    if (!lstm_keeps_accumulations(cfg))
        for (size_t i = 0; i < nb[LB_MASK]; i++) p[LB_MASK][i] = 1;
    c.w_diag = diag ? w->W_s : p[LB_ZEROS];
    c.dw_diag = diag ? g->dW_s : p[LB_DW_SINK];
    /* f_chi[T] = dE/d(final y) from a later window, f_psi[T] = dE/d(final s). */
    const size_t BR = (size_t)(B * R), BH = (size_t)(B * H);
    FN(fr_copy_or_zero)(p[LB_F_CHI], seq->dy_T, BR);
    FN(fr_copy_or_zero)(p[LB_F_PSI], seq->ds_T, BH);

    c.gm.b_v = (WMAT){w->W_v, R, 0, plan.ukernel ? p[LB_WV_P] : NULL, NULL};
    c.gm.b_qv = (WMAT){w->W_qv, H, 0, plan.ukernel ? p[LB_WQ_P] : NULL, NULL};
    if (full) {
        c.gm.b_scs = (WMAT){w->W_s, H, 0, NULL, NULL};
        c.gm.b_scr = (WMAT){w->W_s + (size_t)2 * H * H, H, 0, NULL, NULL};
    }
    const double grad_flops = 2.0 * (double)B * (double)G * (double)(2 * I + R) +
                              2.0 * (double)B * (double)P * (double)H +
                              (full ? 6.0 * (double)B * (double)H * (double)H : 0.0);
    fr_bwd_start(&c.run, &plan, call, T, B, grad_flops);
    /* The weight gradients as they were, when the call can be interrupted: all
     * of them when the gradient GEMMs can, else the diagonal peepholes', which
     * the loop accumulates. */
    const size_t H_ = (size_t)H, R_ = (size_t)R;
    const fr_kept kept = {
        .save = c.run.poll.fn ? p[LB_SAVE] : NULL, .elem = sizeof(real),
        .count = c.run.piece < T ? 5 : 1,
        .arrays = {g->dW_s, g->dW_x, g->dW_v, g->db, g->dW_qv},
        .len = {cfg->peepholes ? 3 * H_ * (full ? H_ : 1) : 0, 4 * H_ * (size_t)I, 4 * H_ * R_,
                4 * H_, (size_t)P * H_}};
    fr_keep(&kept);
    FR_CHECK(fr_bwd_run(plan.threads, FN(lstm_backward_loop), &c, &c.run,
                        FN(lstm_grads_after), &kept));
    /* Initial-state gradients: dE/dy[-1] = f_chi[0], dE/ds[-1] = f_psi[0]. */
    FN(fr_add_to)(seq->dy0, p[LB_F_CHI], BR);
    FN(fr_add_to)(seq->ds0, p[LB_F_PSI], BH);
    return FR_OK;
}

#include "cell_end.h"
