/* Type-generic GRU body, included by gru.c with `real`, SUFFIX, EXP (undefined
 * again at the end). Equation names refer to docs/equations.md §8.
 *
 * One forward and one backward time loop over a member's slice of the hidden
 * units, the GEMMs through the call's table, as in lstm_body.h. A row's four
 * H-wide blocks are laid out as gru.c describes; every pointer of a row pass
 * starts at the member's first unit, gate blocks H apart. */
#define FN(name) FR_CAT(name, SUFFIX)
#define WMAT FN(fr_wmat)

#include "warp_body.h"
#include "cell_body.h"

/* ---- forward ------------------------------------------------------------------ */

/* (8.1), (8.2): the accumulations a_r, a_z (in g: the x-side products, plus the
 * recurrent products rec and the bias) and the gates g_r = f(clip(a_r)), g_z
 * into gw; without linear_before_reset (hp given) also c[n] = g_r h[n-1] of
 * (8.4), which W_hn multiplies next. gw is g (warped in place) unless the
 * store keeps the accumulations (§9). */
FR_TARGET_CLONES
static void FN(gru_row_gates)(real *g,                 /* (4, H) a_r|a_z|a_n|c */
                              real *gw,                /* (4, H) g_r|g_z|.|. (may be g) */
                              const real *restrict rec, /* (3, H) W_h* h[n-1] */
                              const real *restrict b,   /* (3, H) */
                              const real *restrict hp,  /* (n) h[n-1], or NULL */
                              const fr_gru_warps *wp, real c_acc, int64_t H, int64_t n) {
    for (int q = 0; q < 2; q++)
        for (int64_t j = 0; j < n; j++) g[q * H + j] += rec[q * H + j] + b[q * H + j];
    FN(vwarp_clipped)(&wp->gate, gw, g, c_acc, n);
    FN(vwarp_clipped)(&wp->gate, gw + H, g + H, c_acc, n);
    if (hp)
        for (int64_t j = 0; j < n; j++) g[3 * H + j] = gw[j] * hp[j];
}

/* (8.3) or (8.4), then (8.5) u = g(clip(a_n)) into gw and (8.6). With
 * linear_before_reset c[n] = W_hn h[n-1] + b_hn is formed here from rec's n
 * block; otherwise that block already is W_hn c[n]. */
FR_TARGET_CLONES
static void FN(gru_row_update)(real *g,                  /* (4, H) .|.|a_n|c */
                               real *gw,                 /* (4, H) g_r|g_z|u|. (may be g) */
                               real *restrict h,         /* (n) h[n] out */
                               const real *restrict rec, /* (3, H) */
                               const real *restrict b,   /* (3, H) */
                               const real *restrict b_hn, /* (n), or NULL */
                               const real *restrict hp,  /* (n) h[n-1] */
                               const fr_gru_warps *wp, real c_acc, int64_t H, int64_t n) {
    real *a_n = g + 2 * H, *c = g + 3 * H, *u = gw + 2 * H;
    const real *g_r = gw, *g_z = gw + H;
    if (b_hn) {
        for (int64_t j = 0; j < n; j++) {
            c[j] = rec[2 * H + j] + b_hn[j];
            a_n[j] += b[2 * H + j] + g_r[j] * c[j];
        }
    } else {
        for (int64_t j = 0; j < n; j++) a_n[j] += b[2 * H + j] + rec[2 * H + j];
    }
    FN(vwarp_clipped)(&wp->cell, u, a_n, c_acc, n);
    for (int64_t j = 0; j < n; j++) h[j] = u[j] + g_z[j] * (hp[j] - u[j]); /* (1-z) u + z h */
}

/* Member id of n owns units [h0, h1): its columns of the x-side GEMM of a
 * chunk, and per step its columns of the recurrent GEMMs and the row passes;
 * one barrier a step, two without linear_before_reset (W_hn c[n] reads all of
 * c[n]). */
typedef struct {
    const fr_gru_config *cfg;
    const FN(fr_gru_forward_seq) *seq;
    const FN(fr_gru_weights) *w;
    WMAT x, h;         /* the GEMM table: op = W_x^T (I, 3H), W_h^T (H, 3H) */
    real *p[GF_COUNT]; /* the workspace */
    fr_gru_warps wp;   /* f, g (§9) */
    int pack;          /* the members pack their panels first */
    int64_t Tc;        /* steps per x-side GEMM */
    fr_qcall qc;       /* reduced precision (x.qpacked, h.qpacked set) */
    const void *q_hn;  /* reduced: the panels of W_hn^T (the n gate of h.qpacked) */
    fr_poll poll;
} FN(gru_fwd);

static void FN(gru_forward_loop)(void *vctx, int id, int nth, fr_team *team) {
    FN(gru_fwd) *c = vctx;
    const fr_gru_config *cfg = c->cfg;
    const FN(fr_gru_forward_seq) *seq = c->seq;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H, Tc = c->Tc;
    const int lbr = cfg->linear_before_reset;
    const size_t BG = (size_t)B * G, BH = (size_t)B * H;
    const real *bias = c->w->b;                       /* (3H) */
    const real *b_hn = lbr ? c->w->b_hn : NULL;       /* (H) */
    real *rec = c->p[GF_REC];                         /* (B, 3H) */
    const fr_gru_warps *wp = &c->wp;
    const real c_acc = (real)cfg->accumulation_clip;
    real *gw_step = c->p[GF_GW]; /* (B, 4H) the gates when the store keeps a_*, else NULL */
    int64_t h0, h1;
    fr_share(&h0, &h1, H, FR_PW(real), id, nth);
    const int64_t nh = h1 - h0;
    if (c->pack) { /* (not in reduced precision: no float GEMMs) */
        FN(fr_pack_gates)(c->p[GF_WX_P], c->w->W_x, 3, H, I, h0, nh);
        FN(fr_pack_gates)(c->p[GF_WH_P], c->w->W_h, 3, H, H, h0, nh);
    }
    for (int64_t k0 = 0; k0 < T; k0 += Tc) {
        const int64_t tc = (T - k0 < Tc) ? T - k0 : Tc;
        const int64_t lo = cfg->reverse ? T - k0 - tc : k0; /* steps [lo, lo + tc) */
        real *g_lo = seq->acts ? seq->acts + (size_t)lo * BG : c->p[GF_CHUNK]; /* (tc, B, 4H) */
        /* x-side accumulations W_x* x[n] of tc steps, this member's units */
        FN(fr_gates_product)(g_lo, G, seq->x + (size_t)lo * B * I, I, &c->x, &c->qc, c->qc.qx,
                             tc * B, I, H, 3, h0, nh, 0, id, nth, team);
        for (int64_t k = k0; k < k0 + tc; k++) {
            const int64_t n = cfg->reverse ? T - 1 - k : k;
            const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
            real *g = g_lo + (size_t)(n - lo) * BG;                                /* (B, 4H) */
            const real *h_prev = k == 0 ? seq->h0 : seq->h_seq + (size_t)n_prev * BH; /* (B, H) */
            real *h_n = seq->h_seq + (size_t)n * BH;                               /* (B, H) */
            real *gw = gw_step ? gw_step : g;                                      /* (B, 4H) */
            /* W_h* h[n-1]: the three gates at once, or without linear_before_reset
             * r and z first and W_hn c[n] after the gates */
            FN(fr_gates_product)(rec, 3 * H, h_prev, H, &c->h, &c->qc, c->qc.qr, B, H, H,
                                 lbr ? 3 : 2, h0, nh, 0, id, nth, team);
            for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
                const size_t o = (size_t)bi * H + h0, og = (size_t)bi * G + h0;
                if (fr_active(cfg->lengths, bi, n))
                    FN(gru_row_gates)(g + og, gw + og, rec + (size_t)bi * 3 * H + h0,
                                      bias + h0, lbr ? NULL : h_prev + o, wp, c_acc, H, nh);
                else /* padding: c (read by the gradient GEMMs) stays finite */
                    memset(g + og + 3 * H, 0, (size_t)nh * sizeof(real));
            }
            if (!lbr) {
                fr_team_barrier(team); /* c[n] complete */
                if (c->q_hn) /* c[n] rounded or quantised per row too (§7) */
                    fr_qgemm_cols_if(FR_REDUCED_OK, rec + 2 * H, 3 * H, g + 3 * H, G, c->q_hn,
                                     &c->qc, c->qc.qr, B, H, h0, nh, 1, H, H, 0, id, nth, team);
                else
                    FN(fr_gates_gemm)(rec, 3 * H, g + 3 * H, G, &c->h, B, H, H, 2, 1, h0, nh, 0);
            }
            for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
                const size_t o = (size_t)bi * H + h0, og = (size_t)bi * G + h0;
                if (fr_active(cfg->lengths, bi, n))
                    FN(gru_row_update)(g + og, gw + og, h_n + o, rec + (size_t)bi * 3 * H + h0,
                                       bias + h0, b_hn ? b_hn + h0 : NULL, h_prev + o, wp,
                                       c_acc, H, nh);
                else /* padding holds the state */
                    memcpy(h_n + o, h_prev + o, (size_t)nh * sizeof(real));
            }
            /* h[n] complete: the next step reads all of it */
            if (fr_step_end(&c->poll, id, team)) return;
        }
    }
}

int FN(fr_gru_forward)(const FN(fr_gru_forward_seq) *seq, const FN(fr_gru_weights) *w,
                       const fr_gru_config *cfg, const fr_call *call) {
    FR_CHECK(gru_check_config(cfg));
    if (!seq || !w) return FR_ENULL;
    if (!seq->h_seq || !seq->h_T || !seq->x || !seq->h0 || !w->b ||
        (cfg->linear_before_reset && !w->b_hn))
        return FR_ENULL;
    /* the float W_x, W_h (reduced precision: from w->reduced) */
    if (!cfg->reduced && (!w->W_x || !w->W_h)) return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H;
    const int training = seq->acts != NULL;
    /* reduced precision: inference in float32, the weights from fr_gru_qpack */
    if (cfg->reduced && (!FR_REDUCED_OK || training)) return FR_EINVAL;
    if (cfg->reduced && !w->reduced) return FR_ENULL;
    if (cfg->reduced && w->packed) return FR_EINVAL; /* float panels: not with reduced ones */
    size_t nf[GF_COUNT];
    FR_CHECK(gru_forward_regions(nf, cfg, training));
    const fr_plan plan = gru_plan(cfg, call, sizeof(real), w->packed != NULL);
    const int uk = plan.ukernel && !cfg->reduced; /* float panels */

    FN(gru_fwd) c = {.cfg = cfg, .seq = seq, .w = w, .wp = fr_gru_warps_of(cfg),
                     .pack = uk && !w->packed};
    FR_CHECK(fr_workspace_point((void **)c.p, nf, GF_COUNT, seq->work, sizeof(real)));
    real *pk[GP_COUNT] = {c.p[GF_WX_P], c.p[GF_WH_P]}; /* the panels: packed here, or given */
    if (w->packed) {
        size_t np[GP_COUNT];
        FR_CHECK(gru_packed_regions(np, cfg));
        fr_regions_point((void **)pk, np, GP_COUNT, (void *)w->packed, sizeof(real), 1);
    }
    c.x = (WMAT){.W = w->W_x, .ld = I, .trans = 1, .packed = uk ? pk[GP_WX] : NULL};
    c.h = (WMAT){.W = w->W_h, .ld = H, .trans = 1, .packed = uk ? pk[GP_WH] : NULL};
    if (cfg->reduced) { /* the reduced panels (fr_gru_qpack's layout) and their activations */
        size_t nq[GQ_COUNT];
        FR_CHECK(gru_qpacked_regions(nq, cfg));
        c.x.qpacked = w->reduced;
        c.h.qpacked = (const char *)w->reduced + nq[GQ_WX];
        c.q_hn = (const char *)c.h.qpacked + 2 * (nq[GQ_WH] / 3);
        c.qc = (fr_qcall){cfg->reduced, FR_REDUCED_OK ? fr_qget_isa(cfg->reduced) : 0,
                          c.p[GF_QX], c.p[GF_QR]};
    }
    fr_poll_init(&c.poll, call);
    c.Tc = fr_input_steps(&c.poll, T, B, training, 6.0 * (double)B * (double)H * (double)I);
    FR_CHECK(fr_fwd_run(plan.threads, FN(gru_forward_loop), &c, &c.poll));
    const int64_t n_last = cfg->reverse ? 0 : T - 1;
    memcpy(seq->h_T, seq->h_seq + (size_t)n_last * B * H, (size_t)(B * H) * sizeof(real));
    return FR_OK;
}

int FN(fr_gru_pack)(real *packed, const FN(fr_gru_weights) *w, const fr_gru_config *cfg) {
    FR_CHECK(gru_check_config(cfg));
    if (!packed || !w || !w->W_x || !w->W_h) return FR_ENULL;
    if (cfg->reduced) return FR_EINVAL;
    size_t np[GP_COUNT];
    real *pk[GP_COUNT];
    FR_CHECK(gru_packed_regions(np, cfg));
    fr_regions_point((void **)pk, np, GP_COUNT, packed, sizeof(real), 1);
    FN(fr_pack_gates)(pk[GP_WX], w->W_x, 3, cfg->H, cfg->I, 0, cfg->H);
    FN(fr_pack_gates)(pk[GP_WH], w->W_h, 3, cfg->H, cfg->H, 0, cfg->H);
    return FR_OK;
}

/* ---- backward ------------------------------------------------------------------ */

/* (8.7)-(8.9) for n units of one active row, with linear_before_reset also
 * (8.10), (8.11); f_chi (in: f_chi[n+1]) becomes g_z chi[n], the part of
 * f_chi[n] that needs no GEMM. d: the gates' derivatives f'(a_r), f'(a_z),
 * g'(a_n) (times the clip's), or NULL for sigmoid's and tanh's from the gates. */
FR_ALWAYS_INLINE void FN(gru_row_backward_body)(
    real *restrict da,       /* (4, H) alpha_r|alpha_z|gamma|alpha_n */
    real *restrict f_chi,    /* (n) */
    const real *restrict dh, /* (n) dE/dh[n] from above */
    const real *restrict g,  /* (3, H) g_r|g_z|u */
    const real *restrict c,  /* (n) c[n] */
    const real *restrict d,  /* (3, H) or NULL */
    const real *restrict hp, /* (n) h[n-1] */
    int lbr, int64_t H, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        const real g_r = g[j], g_z = g[H + j], u = g[2 * H + j];
        const real d_r = d ? d[j] : g_r * (1 - g_r), d_z = d ? d[H + j] : g_z * (1 - g_z);
        const real d_n = d ? d[2 * H + j] : 1 - u * u;
        const real chi = dh[j] + f_chi[j];
        const real alpha_n = chi * (1 - g_z) * d_n;
        da[H + j] = chi * (hp[j] - u) * d_z;
        da[2 * H + j] = lbr ? alpha_n * g_r : alpha_n;            /* gamma */
        da[3 * H + j] = alpha_n;
        da[j] = lbr ? alpha_n * c[j] * d_r : 0;                   /* else (8.14) later */
        f_chi[j] = g_z * chi;
    }
}

/* Without linear_before_reset, given rho = W_hn^T alpha_n (8.13): alpha_r
 * (8.14) and the g_r rho term of (8.15); d_r: f'(a_r), or NULL for sigmoid's. */
FR_ALWAYS_INLINE void FN(gru_row_backward_reset_body)(real *restrict da, real *restrict f_chi,
                                                      const real *restrict rho,
                                                      const real *restrict g,
                                                      const real *restrict d_r,
                                                      const real *restrict hp, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        const real g_r = g[j];
        da[j] = rho[j] * hp[j] * (d_r ? d_r[j] : g_r * (1 - g_r));
        f_chi[j] += g_r * rho[j];
    }
}

/* The row passes, each specialised for sigmoid and tanh (d NULL) and for the
 * gates recomputed from the kept accumulations. */
#define FR_GRU_ROW_BACKWARD_ARGS                                                         \
    real *restrict da, real *restrict f_chi, const real *restrict dh, const real *restrict g, \
        const real *restrict c, const real *restrict hp, int lbr, int64_t H, int64_t n
FR_TARGET_CLONES
static void FN(gru_row_backward)(FR_GRU_ROW_BACKWARD_ARGS) {
    FN(gru_row_backward_body)(da, f_chi, dh, g, c, NULL, hp, lbr, H, n);
}
FR_TARGET_CLONES
static void FN(gru_row_backward_kept)(FR_GRU_ROW_BACKWARD_ARGS, const real *restrict d) {
    FN(gru_row_backward_body)(da, f_chi, dh, g, c, d, hp, lbr, H, n);
}
#undef FR_GRU_ROW_BACKWARD_ARGS
FR_TARGET_CLONES
static void FN(gru_row_backward_reset)(real *restrict da, real *restrict f_chi,
                                       const real *restrict rho, const real *restrict g,
                                       const real *restrict d_r, const real *restrict hp,
                                       int64_t n) {
    if (d_r) FN(gru_row_backward_reset_body)(da, f_chi, rho, g, d_r, hp, n);
    else FN(gru_row_backward_reset_body)(da, f_chi, rho, g, NULL, hp, n);
}

/* The gates of one row and their derivatives (times the clip's, c = inf: no
 * clip) from the kept accumulations a_r, a_z, a_n (§9). */
FR_TARGET_CLONES
static void FN(gru_row_regate)(real *restrict gw, real *restrict d, const real *restrict a,
                               const fr_gru_warps *wp, real c_acc, int64_t H, int64_t n) {
    for (int q = 0; q < 3; q++)
        FN(vwarp_regate)(q == 2 ? &wp->cell : &wp->gate, gw + q * H, d + q * H, a + q * H,
                         c_acc, n);
}

/* Member id owns units [h0, h1): the row passes of its units, then (the
 * step's alphas complete) its columns of f_chi[n] = g_z chi + W_h*^T [...]
 * (8.12) / (8.15), which are its own to read at the next step; one barrier a
 * step, two without linear_before_reset (rho reads all of alpha_n). A padding
 * row's alphas are zero, so the GEMM's += passes its f_chi through. */
typedef struct {
    const fr_gru_config *cfg;
    const FN(fr_gru_grads) *g;
    const FN(fr_gru_backward_seq) *seq;
    const FN(fr_gru_weights) *w;
    WMAT h, hn;        /* the GEMM table: op = W_h (3H, H) ([W_hr; W_hz] (2H, H)), W_hn (H, H) */
    real *p[GB_COUNT]; /* the workspace */
    fr_gru_warps wp;   /* f, g (§9) */
    fr_bwd_state run;  /* the panels, where the gradient GEMMs run, their pieces, the poll */
} FN(gru_bwd);

/* A piece of the gradient GEMMs (8.16), (8.17): steps [t0, t1), this member's
 * output columns. The n blocks of alpha sit at 3H (alpha_n) and 2H (gamma). */
static void FN(gru_grads_piece)(void *vc, const fr_grad_cols *k, int64_t t0, int64_t t1, int uk) {
    const FN(gru_bwd) *c = vc;
    const fr_gru_config *cfg = c->cfg;
    const FN(fr_gru_grads) *g = c->g;
    const FN(fr_gru_backward_seq) *seq = c->seq;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, G = 4 * H, rows = (t1 - t0) * B;
    const int64_t i0 = k->i0, ni = k->ni, h0 = k->h0, nh = k->nh, h1 = h0 + nh;
    const int lbr = cfg->linear_before_reset;
    const real *dA = c->p[GB_DA];                             /* (T, B, 4H) */
    const size_t BG = (size_t)B * G;
    const real *dA_p = dA + (size_t)t0 * BG;             /* (t1 - t0, B, 4H) */
    const real *x_p = seq->x + (size_t)t0 * B * I;       /* (t1 - t0, B, I) */
    if (ni > 0) { /* dE/dW_x* = sum_n alpha_*[n] x[n]^T: r, z; then n */
        FN(fr_agemm)(uk, g->dW_x, I, dA_p, G, 1, x_p, I, 2 * H, i0, ni, rows);
        FN(fr_agemm)(uk, g->dW_x + 2 * H * I, I, dA_p + 3 * H, G, 1, x_p, I, H, i0, ni, rows);
    }
    if (nh > 0) {
        /* dE/dW_h* = sum_n [alpha_r; alpha_z; gamma][n] h[n-1]^T (gamma: with
         * linear_before_reset only) */
        FN(fr_prev_gemm)(uk, g->dW_h, H, dA, G, seq->h0, seq->h_seq, H, lbr ? 3 * H : 2 * H,
                         h0, nh, B, T, cfg->reverse, t0, t1);
        if (!lbr) /* dE/dW_hn = sum_n gamma[n] c[n]^T */
            FN(fr_agemm)(uk, g->dW_h + 2 * H * H, H, dA_p + 2 * H, G, 1,
                         seq->acts + (size_t)t0 * BG + 3 * H, G, H, h0, nh, rows);
    }
    /* dE/db_* = sum_n alpha_*[n] (r, z; then n), dE/db_hn = sum_n gamma[n] */
    FN(fr_sum_rows)(g->db, dA_p, G, rows, h0, h1);
    FN(fr_sum_rows)(g->db + H, dA_p + H, G, rows, h0, h1);
    FN(fr_sum_rows)(g->db + 2 * H, dA_p + 3 * H, G, rows, h0, h1);
    if (lbr) FN(fr_sum_rows)(g->db_hn, dA_p + 2 * H, G, rows, h0, h1);
    if (seq->dx && ni > 0) { /* dE/dx[n] = sum_* W_x*^T alpha_*[n] */
        real *dx_p = seq->dx + (size_t)t0 * B * I;
        FN(fr_agemm)(uk, dx_p, I, dA_p, G, 0, c->w->W_x, I, rows, i0, ni, 2 * H);
        FN(fr_agemm)(uk, dx_p, I, dA_p + 3 * H, G, 0, c->w->W_x + 2 * H * I, I, rows, i0, ni,
                     H);
    }
}
static int FN(gru_grads)(FN(gru_bwd) *c, int id, int nth, fr_team *team, int uk) {
    const fr_gru_config *cfg = c->cfg;
    return fr_grads_run(&c->run, FN(gru_grads_piece), c, cfg->T, cfg->I, cfg->H, cfg->H,
                        FR_PW(real), id, nth, team, uk);
}
static int FN(gru_grads_after)(void *c) { return FN(gru_grads)(c, 0, 1, NULL, 0); }

static void FN(gru_backward_loop)(void *vctx, int id, int nth, fr_team *team) {
    FN(gru_bwd) *c = vctx;
    const fr_gru_config *cfg = c->cfg;
    const FN(fr_gru_backward_seq) *seq = c->seq;
    const int64_t T = cfg->T, B = cfg->B, H = cfg->H, G = 4 * H;
    const int lbr = cfg->linear_before_reset;
    const int64_t K = lbr ? 3 * H : 2 * H; /* depth of the f_chi GEMM */
    const size_t BG = (size_t)B * G, BH = (size_t)B * H;
    real *dA = c->p[GB_DA];                              /* (T, B, 4H) */
    real *f_chi = c->p[GB_F_CHI], *rho = c->p[GB_RHO];   /* (B, H) */
    const real *zeros = c->p[GB_ZEROS];                  /* (B, H) */
    /* the store keeps a_*: a step's gates and their derivatives, recomputed */
    real *gw_step = c->p[GB_GW], *d_step = c->p[GB_D];   /* (B, 4H) each, or NULL */
    const real c_acc = cfg->accumulation_clip > 0 ? (real)cfg->accumulation_clip : (real)INFINITY;
    int64_t h0, h1;
    fr_share(&h0, &h1, H, FR_PW(real), id, nth);
    const int64_t nh = h1 - h0;
    if (c->run.pack && nh > 0) { /* panels of W_h's first K rows and of W_hn, N = H */
        FN(fr_pack)(c->p[GB_WH_P] + h0 * K, c->w->W_h + h0, 0, nh, K, H);
        if (!lbr) FN(fr_pack)(c->p[GB_WN_P] + h0 * H, c->w->W_h + 2 * H * H + h0, 0, nh, H, H);
    }
    for (int64_t k = T - 1; k >= 0; k--) {
        const int64_t n = cfg->reverse ? T - 1 - k : k;
        const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
        const real *g_n = seq->acts + (size_t)n * BG;                             /* (B, 4H) */
        const real *h_prev = k == 0 ? seq->h0 : seq->h_seq + (size_t)n_prev * BH; /* (B, H) */
        const real *dh_n = seq->dh_seq ? seq->dh_seq + (size_t)n * BH : zeros;    /* (B, H) */
        real *dA_n = dA + (size_t)n * BG;                                        /* (B, 4H) */
        const real *gv = gw_step ? gw_step : g_n;                 /* (B, 4H) g_r|g_z|u|. */
        for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
            const size_t o = (size_t)bi * H + h0, og = (size_t)bi * G + h0;
            if (fr_active(cfg->lengths, bi, n) && gw_step) {
                FN(gru_row_regate)(gw_step + og, d_step + og, g_n + og, &c->wp, c_acc, H, nh);
                FN(gru_row_backward_kept)(dA_n + og, f_chi + o, dh_n + o, gv + og,
                                          g_n + og + 3 * H, h_prev + o, lbr, H, nh, d_step + og);
            } else if (fr_active(cfg->lengths, bi, n)) {
                FN(gru_row_backward)(dA_n + og, f_chi + o, dh_n + o, gv + og, g_n + og + 3 * H,
                                     h_prev + o, lbr, H, nh);
            } else /* padding: no contribution; f_chi passes through */
                for (int q = 0; q < 4; q++) memset(dA_n + og + q * H, 0, (size_t)nh * sizeof(real));
        }
        /* alpha_n[n] (with linear_before_reset all alphas) complete */
        if (fr_step_end(&c->run.poll, id, team)) return;
        if (!lbr) {
            if (nh > 0) FN(fr_wgemm)(rho, H, dA_n + 3 * H, G, &c->hn, B, h0, nh, H, 0);
            for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
                const size_t o = (size_t)bi * H + h0, og = (size_t)bi * G + h0;
                if (fr_active(cfg->lengths, bi, n))
                    FN(gru_row_backward_reset)(dA_n + og, f_chi + o, rho + o, gv + og,
                                               d_step ? d_step + og : NULL, h_prev + o, nh);
            }
            fr_team_barrier(team); /* alpha_r[n] complete */
        }
        if (nh > 0) FN(fr_wgemm)(f_chi, H, dA_n, G, &c->h, B, h0, nh, K, 1);
    }
    if (!c->run.grads_in_team) return;
    fr_team_barrier(team); /* every alpha[n] complete */
    FN(gru_grads)(c, id, nth, team, 1);
}

int FN(fr_gru_backward)(const FN(fr_gru_grads) *g, const FN(fr_gru_backward_seq) *seq,
                        const FN(fr_gru_weights) *w, const fr_gru_config *cfg,
                        const fr_call *call) {
    FR_CHECK(gru_check_config(cfg));
    if (!g || !seq || !w) return FR_ENULL;
    const int lbr = cfg->linear_before_reset;
    if (!g->dW_x || !g->dW_h || !g->db || (lbr && !g->db_hn) || !seq->work || !seq->acts ||
        !seq->x || !seq->h_seq || !seq->h0 || !w->W_x || !w->W_h)
        return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H;
    size_t nb[GB_COUNT];
    FR_CHECK(gru_backward_regions(nb, cfg));
    const fr_plan plan = gru_plan(cfg, call, sizeof(real), 0);

    FN(gru_bwd) c = {.cfg = cfg, .g = g, .seq = seq, .w = w, .wp = fr_gru_warps_of(cfg)};
    FR_CHECK(fr_workspace_point((void **)c.p, nb, GB_COUNT, seq->work, sizeof(real)));
    real *const *p = c.p;
    /* f_chi[T] = dE/d(final h) from a later window */
    const size_t BH = (size_t)(B * H);
    FN(fr_copy_or_zero)(p[GB_F_CHI], seq->dh_T, BH);
    memset(p[GB_ZEROS], 0, BH * sizeof(real));
    c.h = (WMAT){.W = w->W_h, .ld = H, .trans = 0, .packed = plan.ukernel ? p[GB_WH_P] : NULL};
    c.hn = (WMAT){.W = w->W_h + (size_t)2 * H * H, .ld = H, .trans = 0,
                  .packed = plan.ukernel ? p[GB_WN_P] : NULL};
    fr_bwd_start(&c.run, &plan, call, T, B,
                 2.0 * (double)B * 3.0 * (double)H * (double)(2 * I + H));
    /* the weight gradients as they were, when the gradient GEMMs can be interrupted */
    const fr_kept kept = {.save = c.run.piece < T ? p[GB_SAVE] : NULL, .elem = sizeof(real),
                          .arrays = {g->dW_x, g->dW_h, g->db, g->db_hn}, .count = 4,
                          .len = {(size_t)(3 * H * I), (size_t)(3 * H * H), (size_t)(3 * H),
                                  lbr ? (size_t)H : 0}};
    fr_keep(&kept);
    FR_CHECK(fr_bwd_run(plan.threads, FN(gru_backward_loop), &c, &c.run,
                        FN(gru_grads_after), &kept));
    FN(fr_add_to)(seq->dh0, p[GB_F_CHI], BH); /* (8.18) dE/dh[-1] = f_chi[0] */
    return FR_OK;
}

#include "cell_end.h"
