/* The LSTM kernel, Vanilla (§2) and augmented (§3): one body, two precisions.
 * This file validates configurations and lays out the buffers; the math is in
 * lstm_body.h. */
#include "common.h"

/* Element counts of every buffer region, computed once with overflow checks;
 * the size functions report the totals and the kernel carves by the counts. */
typedef struct {
    size_t TB4H, TBH, TBP, B4H, BH, BR, H, R;
    size_t chunk;          /* inference gate chunk (Tc, B, 4H) */
    int64_t Tc;
    size_t acts;           /* gates + s (+ v with projection) */
    size_t work_train;     /* gw scratch (acc. clip) */
    size_t work_infer;     /* chunk + s ring + v row block + gw scratch */
    size_t work_backward;  /* dA + dQ + carries + scratch */
    size_t n_zeros;        /* zero block: max(B * R, 3H) */
    size_t packed_fwd;     /* team path: W_x, W_v (per gate) and W_qv^T packed, or 0 */
    size_t packed_bwd;     /* team path: W_v and W_qv packed, or 0 */
    size_t packed_bwd_wv;  /* of which W_v (R_pad, 4H): W_qv's packed panels follow */
} lstm_layout;

/* Whether this call runs the team path: packed weights, every GEMM of the
 * forward and the per-step GEMMs of the backward on the micro-kernel, the
 * steps split over cfg->num_threads threads. Full peepholes need a GEMM between
 * the element-wise passes and take the BLAS path. */
static inline int lstm_team_path(const fr_lstm_config *cfg) {
    return cfg->B <= cfg->packed_max_rows && cfg->peepholes != FR_PEEP_FULL;
}

/* Threads for a team-path call: at most num_threads and one per panel of
 * hidden units, and each with at least FR_MIN_STEP_FLOPS of recurrent GEMM per
 * step (below that a barrier per step costs more than it saves; tests set it
 * to 0 to run small problems on several threads), or with at least
 * FR_MIN_STEP_BYTES of the recurrent weights: beyond L1 each step streams them
 * from L2, and every core adds its own L2 bandwidth (B = 1, H = 128, f32: 256 KB
 * of W_v, 65k flops a thread; inference 0.28 -> 0.20 ms on 2 threads; at 32 KB a
 * thread, H = 64, two threads were slower). */
static double g_min_step_flops = 200000.0;
#define FR_MIN_STEP_BYTES (64.0 * 1024)

void fr_set_min_step_flops(double flops) { g_min_step_flops = flops > 0 ? flops : 0; }

/* Whether the team path's backward also runs the gradient GEMMs over all T B
 * rows on the micro-kernel (split over the team) rather than on the BLAS after
 * the team: up to g_team_grad_rows rows, by default always. With more than one
 * thread a BLAS call leaves its pool spinning (OpenBLAS: ~0.1 s) on the cores
 * the team's next steps need (medium, 2 threads, training step: 150 ms with the
 * BLAS, 70-100 ms without); on one thread the micro-kernel was level with
 * SciPy's OpenBLAS on an AVX-512 Xeon and 17-26% faster on an AMD EPYC (Zen 5),
 * where OpenBLAS runs its AVX2 kernels (bench/README.md). */
static int64_t g_team_grad_rows = INT64_MAX;

int64_t fr_set_team_grad_rows(int64_t rows) {
    const int64_t old = g_team_grad_rows;
    g_team_grad_rows = rows > 0 ? rows : 0;
    return old;
}

static inline int lstm_grads_in_team(const fr_lstm_config *cfg) {
    return cfg->T * cfg->B <= g_team_grad_rows; /* T B fits int (lstm_check_config) */
}

static int lstm_team_size(const fr_lstm_config *cfg, int64_t pw) {
    const int64_t R = cfg->P ? cfg->P : cfg->H;
    const double flops = 2.0 * (double)cfg->B * 4.0 * (double)cfg->H * (double)R;
    int64_t n = cfg->num_threads < 1 ? 1 : cfg->num_threads;
    const int64_t panels = (cfg->H + pw - 1) / pw;
    if (n > panels) n = panels;
    const double bytes = 4.0 * (double)cfg->H * (double)R * (double)(128 / pw); /* W_v */
    while (n > 1 && flops / (double)n < g_min_step_flops && bytes / (double)n < FR_MIN_STEP_BYTES)
        n--;
    return (int)n;
}

static int lstm_check_config(const fr_lstm_config *cfg) {
    if (cfg == NULL) return FR_ENULL;
    if (cfg->T < 1 || cfg->B < 1 || cfg->I < 1 || cfg->H < 1 || cfg->P < 0) return FR_EINVAL;
    if (cfg->P >= cfg->H && cfg->P != 0) return FR_EINVAL; /* projection must shrink: d_q < d_s */
    if (cfg->peepholes < FR_PEEP_NONE || cfg->peepholes > FR_PEEP_FULL) return FR_EINVAL;
    if ((cfg->coupled_gates != 0 && cfg->coupled_gates != 1) || (cfg->reverse != 0 && cfg->reverse != 1))
        return FR_EINVAL;
    /* clips: 0 is off; negative or NaN is invalid */
    if (!(cfg->cell_clip >= 0) || !(cfg->accumulation_clip >= 0)) return FR_EINVAL;
    if (cfg->packed_max_rows < 0 || cfg->num_threads < 0) return FR_EINVAL;
    if (cfg->lengths)
        for (int64_t b = 0; b < cfg->B; b++)
            if (cfg->lengths[b] < 0 || cfg->lengths[b] > cfg->T) return FR_EINVAL;
    size_t TB, G;
    FR_CHECK(fr_mul(&TB, (size_t)cfg->T, (size_t)cfg->B));
    FR_CHECK(fr_mul(&G, 4, (size_t)cfg->H));
    if (!fr_fits_int((int64_t)TB) || !fr_fits_int((int64_t)G) || !fr_fits_int(cfg->I))
        return FR_EOVERFLOW;
    return FR_OK;
}

static int lstm_layout_of(lstm_layout *L, const fr_lstm_config *cfg) {
    FR_CHECK(lstm_check_config(cfg));
    const size_t T = (size_t)cfg->T, B = (size_t)cfg->B, H = (size_t)cfg->H;
    const size_t P = (size_t)cfg->P, R = P ? P : H;
    const int proj = P > 0, aclip = cfg->accumulation_clip > 0;
    memset(L, 0, sizeof *L);
    L->H = H;
    L->R = R;
    FR_CHECK(fr_mul3(&L->TB4H, T, B, 4 * H));
    FR_CHECK(fr_mul3(&L->TBH, T, B, H));
    FR_CHECK(fr_mul3(&L->TBP, T, B, P));
    FR_CHECK(fr_mul(&L->B4H, B, 4 * H));
    FR_CHECK(fr_mul(&L->BH, B, H));
    FR_CHECK(fr_mul(&L->BR, B, R));
    L->Tc = fr_inference_chunk(cfg->T, cfg->B);
    FR_CHECK(fr_mul(&L->chunk, (size_t)L->Tc, L->B4H));
    L->n_zeros = L->BR > 3 * H ? L->BR : 3 * H;

    /* packed panels are FR_PW(real) wide (32 floats, 16 doubles): size for 32 */
    size_t n;
    if (lstm_team_path(cfg)) {
        const size_t H32 = (H + 31) / 32 * 32, P32 = (P + 31) / 32 * 32, R32 = (R + 31) / 32 * 32;
        size_t wx, wv, wq;
        FR_CHECK(fr_mul3(&wx, 4, H32, (size_t)cfg->I));
        FR_CHECK(fr_mul3(&wv, 4, H32, R));
        FR_CHECK(fr_mul(&wq, P32, H));
        FR_CHECK(fr_add(&n, wx, wv));
        FR_CHECK(fr_add(&n, n, wq));
        FR_CHECK(fr_add(&L->packed_fwd, n, FR_ALIGN_SLACK));
        FR_CHECK(fr_mul(&L->packed_bwd_wv, R32, 4 * H));
        FR_CHECK(fr_mul(&wq, H32, P));
        FR_CHECK(fr_add(&n, L->packed_bwd_wv, wq));
        FR_CHECK(fr_add(&L->packed_bwd, n, FR_ALIGN_SLACK));
    }
    /* acts: gates (T, B, 4H) + s (T, B, H) [+ v (T, B, H)] */
    FR_CHECK(fr_add(&n, L->TB4H, L->TBH));
    if (proj) FR_CHECK(fr_add(&n, n, L->TBH));
    L->acts = n;
    /* training forward: gw (B, 4H) when the stored gates are the accumulations,
     * packed W_v */
    FR_CHECK(fr_add(&L->work_train, aclip ? L->B4H : 0, L->packed_fwd));
    /* inference: chunk + s ring (2, B, H) + v (B, H) + gw (B, 4H) + packed W_v */
    FR_CHECK(fr_add(&n, L->chunk, 2 * L->BH));
    FR_CHECK(fr_add(&n, n, L->BH));
    FR_CHECK(fr_add(&n, n, L->B4H));
    FR_CHECK(fr_add(&n, n, L->packed_fwd));
    L->work_infer = n;
    /* backward: dA (T,B,4H) + dQ (T,B,P) + f_chi, hold (B,R) x2 + f_psi, chi,
     * psi (B,H) x3 + r (H) + zeros + dW_s sink (3H) + gw, mask (B,4H) x2 */
    FR_CHECK(fr_add(&n, L->TB4H, L->TBP));
    FR_CHECK(fr_add(&n, n, 2 * L->BR));
    FR_CHECK(fr_add(&n, n, 3 * L->BH));
    FR_CHECK(fr_add(&n, n, H + L->n_zeros + 3 * H));
    FR_CHECK(fr_add(&n, n, 2 * L->B4H));
    FR_CHECK(fr_add(&n, n, L->packed_bwd));
    L->work_backward = n;
    if (L->acts > FR_MAX_ELEMS || L->work_infer > FR_MAX_ELEMS || L->work_backward > FR_MAX_ELEMS)
        return FR_EOVERFLOW;
    return FR_OK;
}

int fr_lstm_acts_size(size_t *n_elems, const fr_lstm_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    lstm_layout L;
    FR_CHECK(lstm_layout_of(&L, cfg));
    *n_elems = L.acts;
    return FR_OK;
}

int fr_lstm_workspace_size(size_t *n_elems, const fr_lstm_config *cfg, int training) {
    if (n_elems == NULL) return FR_ENULL;
    lstm_layout L;
    FR_CHECK(lstm_layout_of(&L, cfg));
    *n_elems = training ? L.work_train : L.work_infer;
    return FR_OK;
}

int fr_lstm_backward_workspace_size(size_t *n_elems, const fr_lstm_config *cfg) {
    if (n_elems == NULL) return FR_ENULL;
    lstm_layout L;
    FR_CHECK(lstm_layout_of(&L, cfg));
    *n_elems = L.work_backward;
    return FR_OK;
}

#define real float
#define SUFFIX _f32
#define EXP fr_exp_f32
#include "lstm_body.h"
#undef real
#undef SUFFIX
#undef EXP

#define real double
#define SUFFIX _f64
#define EXP fr_exp_f64
#include "lstm_body.h"
#undef real
#undef SUFFIX
#undef EXP
