/* Type-generic canonical RNN body, included by rnn.c with `real`, SUFFIX, EXP
 * (undefined again at the end). Equation names refer to docs/equations.md §1.
 * One forward and one backward time loop over a member's slice of the hidden
 * units, the GEMMs through the call's table, as in lstm_body.h. */
#define FN(name) FR_CAT(name, SUFFIX)
#define WMAT FN(fr_wmat)

#include "warp_body.h"
#include "cell_body.h"

/* s[n] = accumulations + theta_s, r[n] = G(clip(s[n], -c, c)) (1.2), (1.9) for n
 * units of one row (c_acc = 0: no clip). */
FR_TARGET_CLONES
static void FN(rnn_row_forward)(real *s, real *restrict r, const real *a,
                                const real *restrict theta_s, const fr_activation *G,
                                real c_acc, int64_t n) {
    for (int64_t j = 0; j < n; j++) s[j] = a[j] + theta_s[j]; /* (s and a may alias) */
    FN(vwarp_clipped)(G, r, s, c_acc, n);
}

/* psi[n] = G'(s[n]) chi[n] + W_s^T psi[n+1], chi[n] = dy/dr[n] + W_r^T psi[n+1];
 * G = tanh without the clip: G'(s[n]) = 1 - r[n]^2 from the output. */
FR_TARGET_CLONES
static void FN(rnn_row_backward)(real *restrict psi, const real *restrict f_psi,
                                 const real *restrict f_chi, const real *restrict dr,
                                 const real *restrict r, int64_t n) {
    for (int64_t j = 0; j < n; j++) psi[j] = (1 - r[j] * r[j]) * (dr[j] + f_chi[j]) + f_psi[j];
}

/* The same for any G and the clip (1.10): G'(clip(s[n])) from the stored s[n],
 * zero where the clip is active (c_acc = inf: no clip); dg, cs: (n) scratch. */
FR_TARGET_CLONES
static void FN(rnn_row_backward_general)(real *restrict psi, const real *restrict f_psi,
                                         const real *restrict f_chi, const real *restrict dr,
                                         const real *restrict s, real *restrict dg,
                                         real *restrict cs, const fr_activation *G, real c_acc,
                                         int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        dg[j] = (real)((s[j] <= c_acc) & (s[j] >= -c_acc)); /* no branch */
        cs[j] = FN(clip)(s[j], c_acc);
    }
    FN(vwarp_grad_mul)(dg, cs, n, G);
    for (int64_t j = 0; j < n; j++) psi[j] = dg[j] * (dr[j] + f_chi[j]) + f_psi[j];
}

/* ---- forward ---------------------------------------------------------------------
 * Member id of n owns units [h0, h1): its columns of the x-side GEMM of a chunk,
 * and per step of the recurrent GEMMs and the row pass; one barrier a step. */
typedef struct {
    const fr_rnn_config *cfg;
    const FN(fr_rnn_forward_seq) *seq;
    const FN(fr_rnn_weights) *w;
    WMAT x, r, s;      /* the GEMM table: op = W_x^T (I, H), W_r^T, W_s^T (H, H) */
    real *p[RF_COUNT]; /* the workspace */
    fr_activation G;   /* (§9) */
    int pack;          /* the members pack their panels first */
    int64_t Tc;        /* steps per x-side GEMM */
    fr_qcall qc;       /* reduced precision (x.qpacked, r.qpacked set) */
    fr_poll poll;
} FN(rnn_fwd);

static void FN(rnn_forward_loop)(void *vctx, int id, int nth, fr_team *team) {
    FN(rnn_fwd) *c = vctx;
    const fr_rnn_config *cfg = c->cfg;
    const FN(fr_rnn_forward_seq) *seq = c->seq;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, Tc = c->Tc;
    const size_t BH = (size_t)B * H;
    /* States go to the activation store when the backward needs them (state
     * feedback or a general G, training); otherwise through a chunk and a
     * ping-pong pair. */
    const int store = seq->acts != NULL && (cfg->state_feedback || fr_rnn_general(cfg));
    const real c_acc = (real)cfg->accumulation_clip;
    real *s_all = store ? seq->acts : NULL;  /* (T, B, H) */
    real *chunk = c->p[RF_CHUNK];            /* (Tc, B, H) */
    real *s_ring = c->p[RF_S_RING];          /* (2, B, H) */
    int64_t h0, h1;
    fr_share(&h0, &h1, H, FR_PW(real), id, nth);
    const int64_t nh = h1 - h0;
    if (c->pack && nh > 0) { /* (reduced precision: the float W_s only) */
        if (!cfg->reduced) {
            FN(fr_pack)(c->p[RF_WX_P] + h0 * I, c->w->W_x + h0 * I, 1, nh, I, I);
            FN(fr_pack)(c->p[RF_WR_P] + h0 * H, c->w->W_r + h0 * H, 1, nh, H, H);
        }
        if (cfg->state_feedback) FN(fr_pack)(c->p[RF_WS_P] + h0 * H, c->w->W_s + h0 * H, 1, nh, H, H);
    }
    for (int64_t k0 = 0; k0 < T; k0 += Tc) {
        const int64_t tc = (T - k0 < Tc) ? T - k0 : Tc;
        const int64_t lo = cfg->reverse ? T - k0 - tc : k0; /* steps [lo, lo + tc) */
        real *a_lo = store ? s_all + (size_t)lo * BH : chunk; /* (tc, B, H) */
        /* W_x x[n] for tc steps in one GEMM, this member's units */
        if (c->x.qpacked) /* reduced (§7): every member rounds its rows, meets the others */
            fr_qgemm_cols_if(FR_REDUCED_OK, a_lo, H, seq->x + (size_t)lo * B * I, I, c->x.qpacked,
                             &c->qc, c->qc.qx, tc * B, I, h0, nh, 1, H, 0, 0, id, nth, team);
        else if (nh > 0)
            FN(fr_wgemm)(a_lo, H, seq->x + (size_t)lo * B * I, I, &c->x, tc * B, h0, nh, I, 0);
        for (int64_t k = k0; k < k0 + tc; k++) {
            const int64_t n = cfg->reverse ? T - 1 - k : k;
            const int64_t n_prev = cfg->reverse ? n + 1 : n - 1;
            real *a = a_lo + (size_t)(n - lo) * BH; /* (B, H) */
            const real *r_prev = k == 0 ? seq->r0 : seq->r_seq + (size_t)n_prev * BH;
            const real *s_prev = k == 0 ? seq->s0
                                 : store ? s_all + (size_t)n_prev * BH
                                         : s_ring + (size_t)((k - 1) & 1) * BH;
            real *s_n = store ? a : s_ring + (size_t)(k & 1) * BH;
            real *r_n = seq->r_seq + (size_t)n * BH;
            /* + W_r r[n-1] (+ W_s s[n-1], float32 also in reduced precision) */
            if (c->r.qpacked)
                fr_qgemm_cols_if(FR_REDUCED_OK, a, H, r_prev, H, c->r.qpacked, &c->qc, c->qc.qr, B,
                                 H, h0, nh, 1, H, 0, 1, id, nth, team);
            else if (nh > 0)
                FN(fr_wgemm)(a, H, r_prev, H, &c->r, B, h0, nh, H, 1);
            if (nh > 0 && cfg->state_feedback) FN(fr_wgemm)(a, H, s_prev, H, &c->s, B, h0, nh, H, 1);
            for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
                const size_t o = (size_t)bi * H + h0;
                if (fr_active(cfg->lengths, bi, n)) {
                    FN(rnn_row_forward)(s_n + o, r_n + o, a + o, c->w->theta_s + h0, &c->G, c_acc,
                                        nh);
                } else { /* padding holds the state */
                    memcpy(s_n + o, s_prev + o, (size_t)nh * sizeof(real));
                    memcpy(r_n + o, r_prev + o, (size_t)nh * sizeof(real));
                }
            }
            /* r[n], s[n] complete: the next step reads all of them */
            if (fr_step_end(&c->poll, id, team)) return;
        }
    }
}

int FN(fr_rnn_forward)(const FN(fr_rnn_forward_seq) *seq, const FN(fr_rnn_weights) *w,
                       const fr_rnn_config *cfg, const fr_call *call) {
    FR_CHECK(rnn_check_config(cfg));
    if (!seq || !w) return FR_ENULL;
    if (!seq->r_seq || !seq->s_T || !seq->r_T || !seq->x || !seq->s0 || !seq->r0 || !w->theta_s)
        return FR_ENULL;
    /* the float W_x, W_r (reduced precision: from w->reduced) */
    if (!cfg->reduced && (!w->W_x || !w->W_r)) return FR_ENULL;
    if (cfg->state_feedback && !w->W_s) return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H;
    const int training = seq->acts != NULL;
    const int store = training && (cfg->state_feedback || fr_rnn_general(cfg));
    /* reduced precision: inference in float32, the weights from fr_rnn_qpack */
    if (cfg->reduced && (!FR_REDUCED_OK || training)) return FR_EINVAL;
    if (cfg->reduced && !w->reduced) return FR_ENULL;
    if (cfg->reduced && w->packed) return FR_EINVAL; /* float panels: not with reduced ones */
    size_t nf[RF_COUNT];
    FR_CHECK(rnn_forward_regions(nf, cfg, training));
    const fr_plan plan = rnn_plan(cfg, call, sizeof(real), w->packed != NULL);

    FN(rnn_fwd) c = {.cfg = cfg, .seq = seq, .w = w, .G = fr_rnn_warp_of(cfg),
                     .pack = plan.ukernel && !w->packed};
    FR_CHECK(fr_workspace_point((void **)c.p, nf, RF_COUNT, seq->work, sizeof(real)));
    real *pk[RP_COUNT] = {c.p[RF_WX_P], c.p[RF_WR_P], c.p[RF_WS_P]}; /* packed here, or given */
    if (w->packed) {
        size_t np[RP_COUNT];
        FR_CHECK(rnn_packed_regions(np, cfg));
        fr_regions_point((void **)pk, np, RP_COUNT, (void *)w->packed, sizeof(real), 1);
    }
    c.x = (WMAT){w->W_x, I, 1, plan.ukernel ? pk[RP_WX] : NULL, NULL};
    c.r = (WMAT){w->W_r, H, 1, plan.ukernel ? pk[RP_WR] : NULL, NULL};
    c.s = (WMAT){w->W_s, H, 1, plan.ukernel ? pk[RP_WS] : NULL, NULL};
    if (cfg->reduced) { /* the reduced panels (fr_rnn_qpack's layout) and their activations */
        size_t nq[RQ_COUNT];
        FR_CHECK(rnn_qpacked_regions(nq, cfg));
        c.x.qpacked = w->reduced;
        c.r.qpacked = (const char *)w->reduced + nq[RQ_WX];
        c.qc = (fr_qcall){cfg->reduced, FR_REDUCED_OK ? fr_qget_isa(cfg->reduced) : 0,
                          c.p[RF_QX], c.p[RF_QR]};
    }
    fr_poll_init(&c.poll, call);
    /* The input GEMM runs in the same chunks in training and inference, so the
     * BLAS sees the same calls and the two agree bit for bit (OpenBLAS's result
     * for a row depends on M: it has a separate small-matrix path). */
    c.Tc = fr_inference_chunk(T, B);
    FR_CHECK(fr_fwd_run(plan.threads, FN(rnn_forward_loop), &c, &c.poll));

    const size_t BH = (size_t)(B * H);
    const int64_t n_last = cfg->reverse ? 0 : T - 1;
    const real *s_last = store ? seq->acts + (size_t)n_last * BH
                               : c.p[RF_S_RING] + (size_t)((T - 1) & 1) * BH;
    memcpy(seq->s_T, s_last, BH * sizeof(real));
    memcpy(seq->r_T, seq->r_seq + (size_t)n_last * BH, BH * sizeof(real));
    return FR_OK;
}

int FN(fr_rnn_pack)(real *packed, const FN(fr_rnn_weights) *w, const fr_rnn_config *cfg) {
    FR_CHECK(rnn_check_config(cfg));
    if (!packed || !w || !w->W_x || !w->W_r || (cfg->state_feedback && !w->W_s)) return FR_ENULL;
    if (cfg->reduced) return FR_EINVAL;
    const int64_t I = cfg->I, H = cfg->H;
    size_t np[RP_COUNT];
    real *pk[RP_COUNT];
    FR_CHECK(rnn_packed_regions(np, cfg));
    fr_regions_point((void **)pk, np, RP_COUNT, packed, sizeof(real), 1);
    FN(fr_pack)(pk[RP_WX], w->W_x, 1, H, I, I);
    FN(fr_pack)(pk[RP_WR], w->W_r, 1, H, H, H);
    if (cfg->state_feedback) FN(fr_pack)(pk[RP_WS], w->W_s, 1, H, H, H);
    return FR_OK;
}

/* ---- backward --------------------------------------------------------------------
 * Member id owns units [h0, h1): psi of its units, then (all of psi[n] complete)
 * its columns of f_chi = W_r^T psi[n] and f_psi = W_s^T psi[n]; one barrier a
 * step. */
typedef struct {
    const fr_rnn_config *cfg;
    const FN(fr_rnn_grads) *g;
    const FN(fr_rnn_backward_seq) *seq;
    const FN(fr_rnn_weights) *w;
    WMAT r, s;         /* the GEMM table: op = W_r, W_s (H, H) */
    real *p[RB_COUNT]; /* the workspace */
    fr_activation G;   /* (§9) */
    fr_bwd_state run;  /* the panels, where the gradient GEMMs run, their pieces, the poll */
} FN(rnn_bwd);

/* A piece of the gradient GEMMs: steps [t0, t1), this member's output columns. */
static void FN(rnn_grads_piece)(void *vc, const fr_grad_cols *k, int64_t t0, int64_t t1, int uk) {
    const FN(rnn_bwd) *c = vc;
    const fr_rnn_config *cfg = c->cfg;
    const FN(fr_rnn_grads) *g = c->g;
    const FN(fr_rnn_backward_seq) *seq = c->seq;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H, rows = (t1 - t0) * B;
    const int64_t i0 = k->i0, ni = k->ni, h0 = k->h0, nh = k->nh, h1 = h0 + nh;
    const real *psi_all = c->p[RB_PSI]; /* (T, B, H) */
    const real *psi_p = psi_all + (size_t)t0 * B * H; /* (t1 - t0, B, H) */
    if (ni > 0) /* dE/dW_x = sum_n psi[n] x[n]^T */
        FN(fr_agemm)(uk, g->dW_x, I, psi_p, H, 1, seq->x + (size_t)t0 * B * I, I, H, i0, ni,
                     rows);
    if (nh > 0) { /* dE/dW_r = sum_n psi[n] r[prev]^T, dE/dW_s = sum_n psi[n] s[prev]^T */
        FN(fr_prev_gemm)(uk, g->dW_r, H, psi_all, H, seq->r0, seq->r_seq, H, H, h0, nh, B, T,
                         cfg->reverse, t0, t1);
        if (cfg->state_feedback)
            FN(fr_prev_gemm)(uk, g->dW_s, H, psi_all, H, seq->s0, seq->acts, H, H, h0, nh, B,
                             T, cfg->reverse, t0, t1);
    }
    FN(fr_sum_rows)(g->dtheta_s, psi_p, H, rows, h0, h1); /* dE/dtheta_s = sum_n psi[n] */
    if (seq->dx && ni > 0) /* dE/dx[n] = W_x^T psi[n] */
        FN(fr_agemm)(uk, seq->dx + (size_t)t0 * B * I, I, psi_p, H, 0, c->w->W_x, I, rows, i0,
                     ni, H);
}
static int FN(rnn_grads)(FN(rnn_bwd) *c, int id, int nth, fr_team *team, int uk) {
    const fr_rnn_config *cfg = c->cfg;
    return fr_grads_run(&c->run, FN(rnn_grads_piece), c, cfg->T, cfg->I, cfg->H, cfg->H,
                        FR_PW(real), id, nth, team, uk);
}
static int FN(rnn_grads_after)(void *c) { return FN(rnn_grads)(c, 0, 1, NULL, 0); }

static void FN(rnn_backward_loop)(void *vctx, int id, int nth, fr_team *team) {
    FN(rnn_bwd) *c = vctx;
    const fr_rnn_config *cfg = c->cfg;
    const FN(fr_rnn_backward_seq) *seq = c->seq;
    const int64_t T = cfg->T, B = cfg->B, H = cfg->H;
    const size_t BH = (size_t)B * H;
    real *psi_all = c->p[RB_PSI];                             /* (T, B, H) psi[n] of every step */
    real *f_chi = c->p[RB_F_CHI], *f_psi = c->p[RB_F_PSI];    /* (B, H) W_r^T, W_s^T psi[n+1] */
    real *hold_chi = c->p[RB_HOLD_CHI], *hold_psi = c->p[RB_HOLD_PSI]; /* (B, H) padding carries */
    real *dg_row = c->p[RB_DG_ROW], *cs_row = c->p[RB_CS_ROW];          /* (H) general G */
    const int general = fr_rnn_general(cfg);
    const real c_acc = cfg->accumulation_clip > 0 ? (real)cfg->accumulation_clip : (real)INFINITY;
    int64_t h0, h1;
    fr_share(&h0, &h1, H, FR_PW(real), id, nth);
    const int64_t nh = h1 - h0;
    if (c->run.pack && nh > 0) { /* panels of W_r, W_s as (K = H, N = H) */
        FN(fr_pack)(c->p[RB_WR_P] + h0 * H, c->w->W_r + h0, 0, nh, H, H);
        if (cfg->state_feedback) FN(fr_pack)(c->p[RB_WS_P] + h0 * H, c->w->W_s + h0, 0, nh, H, H);
    }
    for (int64_t k = T - 1; k >= 0; k--) {
        const int64_t n = cfg->reverse ? T - 1 - k : k;
        real *psi = psi_all + (size_t)n * BH; /* (B, H) */
        const real *r = seq->r_seq + (size_t)n * BH;
        const real *s_n = general ? seq->acts + (size_t)n * BH : NULL; /* (B, H) */
        for (int64_t bi = 0; nh > 0 && bi < B; bi++) {
            const size_t o = (size_t)bi * H + h0;
            if (fr_active(cfg->lengths, bi, n)) { /* hold_chi is zero here: dr = 0 without dr_seq */
                const real *dr = seq->dr_seq ? seq->dr_seq + (size_t)n * BH + o : hold_chi + o;
                if (general)
                    FN(rnn_row_backward_general)(psi + o, f_psi + o, f_chi + o, dr, s_n + o,
                                                 dg_row + h0, cs_row + h0, &c->G, c_acc, nh);
                else
                    FN(rnn_row_backward)(psi + o, f_psi + o, f_chi + o, dr, r + o, nh);
            } else { /* padding: no contribution, carries pass through */
                memset(psi + o, 0, (size_t)nh * sizeof(real));
                memcpy(hold_chi + o, f_chi + o, (size_t)nh * sizeof(real));
                memcpy(hold_psi + o, f_psi + o, (size_t)nh * sizeof(real));
            }
        }
        if (fr_step_end(&c->run.poll, id, team)) return; /* psi[n] complete */
        if (nh == 0) continue;
        FN(fr_wgemm)(f_chi, H, psi, H, &c->r, B, h0, nh, H, 0);
        if (cfg->state_feedback)
            FN(fr_wgemm)(f_psi, H, psi, H, &c->s, B, h0, nh, H, 0);
        else
            for (int64_t bi = 0; bi < B; bi++) memset(f_psi + bi * H + h0, 0, (size_t)nh * sizeof(real));
        for (int64_t bi = 0; bi < B; bi++) {
            const size_t o = (size_t)bi * H + h0;
            if (!fr_active(cfg->lengths, bi, n)) {
                memcpy(f_chi + o, hold_chi + o, (size_t)nh * sizeof(real));
                memcpy(f_psi + o, hold_psi + o, (size_t)nh * sizeof(real));
                memset(hold_chi + o, 0, (size_t)nh * sizeof(real)); /* zeros for dr_seq == NULL */
            }
        }
    }
    if (!c->run.grads_in_team) return;
    fr_team_barrier(team); /* every psi[n] complete */
    FN(rnn_grads)(c, id, nth, team, 1);
}

int FN(fr_rnn_backward)(const FN(fr_rnn_grads) *g, const FN(fr_rnn_backward_seq) *seq,
                        const FN(fr_rnn_weights) *w, const fr_rnn_config *cfg,
                        const fr_call *call) {
    FR_CHECK(rnn_check_config(cfg));
    if (!g || !seq || !w) return FR_ENULL;
    if (!g->dW_x || !g->dW_r || !g->dtheta_s || !seq->work || !seq->x || !seq->r_seq ||
        !seq->s0 || !seq->r0 || !w->W_x || !w->W_r)
        return FR_ENULL;
    if (cfg->state_feedback && (!w->W_s || !g->dW_s)) return FR_ENULL;
    if ((cfg->state_feedback || fr_rnn_general(cfg)) && !seq->acts) return FR_ENULL;
    const int64_t T = cfg->T, B = cfg->B, I = cfg->I, H = cfg->H;
    size_t nb[RB_COUNT];
    FR_CHECK(rnn_backward_regions(nb, cfg));
    const fr_plan plan = rnn_plan(cfg, call, sizeof(real), 0);

    FN(rnn_bwd) c = {.cfg = cfg, .g = g, .seq = seq, .w = w, .G = fr_rnn_warp_of(cfg)};
    FR_CHECK(fr_workspace_point((void **)c.p, nb, RB_COUNT, seq->work, sizeof(real)));
    real *const *p = c.p;
    /* The final-state gradients enter as chi[T-1] += dE/dr[T-1], psi[T-1] += dE/ds[T-1]. */
    const size_t BH = (size_t)(B * H);
    FN(fr_copy_or_zero)(p[RB_F_CHI], seq->dr_T, BH);
    FN(fr_copy_or_zero)(p[RB_F_PSI], seq->ds_T, BH);
    memset(p[RB_HOLD_CHI], 0, BH * sizeof(real));
    memset(p[RB_HOLD_PSI], 0, BH * sizeof(real));
    c.r = (WMAT){w->W_r, H, 0, plan.ukernel ? p[RB_WR_P] : NULL, NULL};
    c.s = (WMAT){w->W_s, H, 0, plan.ukernel ? p[RB_WS_P] : NULL, NULL};
    fr_bwd_start(&c.run, &plan, call, T, B,
                 2.0 * (double)B * (double)H * (double)(2 * I + 2 * H));
    /* the weight gradients as they were, when the gradient GEMMs can be interrupted */
    const fr_kept kept = {.save = c.run.piece < T ? p[RB_SAVE] : NULL, .elem = sizeof(real),
                          .arrays = {g->dW_x, g->dW_r, g->dtheta_s, g->dW_s}, .count = 4,
                          .len = {(size_t)(H * I), (size_t)(H * H), (size_t)H,
                                  cfg->state_feedback ? (size_t)(H * H) : 0}};
    fr_keep(&kept);
    FR_CHECK(fr_bwd_run(plan.threads, FN(rnn_backward_loop), &c, &c.run,
                        FN(rnn_grads_after), &kept));
    /* dE/dr[-1] = W_r^T psi[0], dE/ds[-1] = W_s^T psi[0] */
    FN(fr_add_to)(seq->dr0, p[RB_F_CHI], BH);
    FN(fr_add_to)(seq->ds0, p[RB_F_PSI], BH);
    return FR_OK;
}

#include "cell_end.h"
