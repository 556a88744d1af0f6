/*
 * Pure-C tests of the fusedrnn kernel (csrc/), no Python involved. The kernel
 * runs on its own portable GEMM: fr_set_blas is never called with a BLAS.
 * Build and run with tests/c/run.sh (plain, asan, valgrind, all).
 *
 * Test groups, one output line each:
 *   gemm     fr_gemm_f32/f64 vs a naive triple loop: the 4 transpose
 *            combinations, beta = 0 over a NaN-filled C, beta = 1, strides
 *   sizes    size functions and forward/backward: FR_EINVAL, FR_EOVERFLOW, FR_ENULL
 *   fd       float64 backward vs central finite differences of
 *              E = sum(w_y * y) + sum(w_s * s_T) + sum(w_o * o_T)
 *            for every element of every weight, of x and of the initial states
 *   twice    a second backward call doubles the gradients (they accumulate)
 *   f32      float32 forward and backward vs float64 on the same inputs
 *   infer    inference forward (acts == NULL) is bit-identical to the training
 *            forward, also where the inference chunking splits the sequence
 *   chunked  two calls with the state carried == one call (forward bit-identical;
 *            backward with the final-state gradients carried back == whole)
 * The last line is "N passed, M failed"; the exit status is 0 iff M == 0.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusedrnn.h"
#include "plan.h" // the tuning the tests set (internal)

// ----------------------------------------------------------------------------
// harness

static int n_passed = 0, n_failed = 0;

static void report(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "[ ok ]" : "[FAIL]");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (ok) n_passed++; else n_failed++;
}

// The worst element of a comparison: err = |a - b| / max(|a|, |b|, floor).
typedef struct {
    double err, a, b;
    const char *where;
    size_t idx;
} worst;

static void track(worst *w, double a, double b, double floor, const char *where, size_t idx) {
    double scale = fmax(fmax(fabs(a), fabs(b)), floor);
    double err = fabs(a - b) / scale;
    if (isnan(err)) err = INFINITY; // a NaN is the worst error
    if (err > w->err || w->where == NULL) {
        w->err = err; w->a = a; w->b = b; w->where = where; w->idx = idx;
    }
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size); // never 0 bytes: a NULL would mean "absent"
    if (p == NULL) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

// xorshift64* (deterministic, same on every platform)
static uint64_t rng_state;
static void rng_seed(uint64_t seed) { rng_state = seed * 0x9E3779B97F4A7C15ULL | 1; }
static uint32_t rand_u32(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}
// uniform in [lo, hi), rounded to float so that float32 runs see the same numbers
static double rand_uniform(double lo, double hi) {
    return (double)(float)(lo + (hi - lo) * (rand_u32() / 4294967296.0));
}

// element i of a float (f32 = 1) or double buffer
static double at(const void *p, int f32, size_t i) {
    return f32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
static void to_f32(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

// ----------------------------------------------------------------------------
// a model: an LSTM, canonical RNN or GRU configuration, and the layout of its
// parameter vector theta = [weights | x | s0 | y0], which is also the layout
// of the gradient vector (the GRU has no s: its s0 segment and s_T are empty)

enum { S_WX, S_WV, S_B, S_WS, S_WQV, S_X, S_S0, S_Y0, NSEG };
static const char *seg_lstm[NSEG] = {"W_x", "W_v", "b", "W_s", "W_qv", "x", "s0", "v0"};
static const char *seg_rnn[NSEG] = {"W_x", "W_r", "theta_s", "W_s", "-", "x", "s0", "r0"};
static const char *seg_gru[NSEG] = {"W_x", "W_h", "b", "b_hn", "-", "x", "-", "h0"};

typedef struct {
    int lstm;                // 1: LSTM (§2, §3), 0: canonical RNN (§1) or GRU
    int gru;                 // 1 (with lstm = 0): GRU (§8)
    int64_t T, B, I, H, P;   // P: LSTM projection size, 0 for none
    int opt;                 // LSTM: peepholes (FR_PEEP_*); RNN: state_feedback; GRU:
                             // linear_before_reset
    int coupled, reverse;    // LSTM coupled gates; visit T-1 .. 0
    const int64_t *lengths;  // (B) valid steps per row, or NULL
    int packed;              // the team path (packed micro-kernel), any T
    int threads;             // team path: at most this many threads (fr_call; 0: one)
    int warp;                // 1: non-default warping functions (§9), see set_warps
} spec;

// The non-default warping functions of spec.warp = 1 (smooth ones, so that the
// central differences see no kink): LSTM G_c = softplus, G_d of u = softsign,
// G_d of r = elu(0.7), with the accumulation clip; RNN G = scaled_tanh(1.2, 0.7)
// with the accumulation clip (1.9); GRU f = softsign, g = scaled_tanh(1.1, 0.8)
// with the clip (§8).
static void set_lstm_warps(fr_lstm_config *c) {
    c->gate = (fr_activation){FR_ACT_SOFTPLUS, 0, 0};
    c->cell = (fr_activation){FR_ACT_SOFTSIGN, 0, 0};
    c->output = (fr_activation){FR_ACT_ELU, 0.7, 0};
    c->accumulation_clip = 2.5;
}
static void set_rnn_warps(fr_rnn_config *c) {
    c->activation = (fr_activation){FR_ACT_SCALED_TANH, 1.2, 0.7};
    c->accumulation_clip = 0.9;
}
static void set_gru_warps(fr_gru_config *c) {
    c->gate = (fr_activation){FR_ACT_SOFTSIGN, 0, 0};
    c->cell = (fr_activation){FR_ACT_SCALED_TANH, 1.1, 0.8};
    c->accumulation_clip = 1.1;
}

typedef struct {
    spec sp;
    fr_lstm_config lc;       // when sp.lstm
    fr_rnn_config rc;        // when !sp.lstm && !sp.gru
    fr_gru_config gc;        // when sp.gru
    int64_t R;               // output width: P, or H
    size_t off[NSEG], len[NSEG], n_theta; // segments of theta
    size_t n_y, n_s, n_o;    // (T, B, R), (B, H), (B, R)
    size_t n_acts, n_work, n_bwork;        // activation store and workspaces
    char desc[96];
} model;

static int model_init(model *m, const spec *sp) {
    memset(m, 0, sizeof *m);
    m->sp = *sp;
    const int64_t T = sp->T, B = sp->B, I = sp->I, H = sp->H, P = sp->P;
    const int64_t G = sp->lstm ? 4 * H : sp->gru ? 3 * H : H; // rows of the fused weights
    m->R = P ? P : H;
    m->len[S_WX] = (size_t)(G * I);
    m->len[S_WV] = (size_t)(G * m->R);
    m->len[S_B] = (size_t)G;
    if (sp->lstm) m->len[S_WS] = sp->opt == FR_PEEP_DIAGONAL ? (size_t)(3 * H)
                               : sp->opt == FR_PEEP_FULL ? (size_t)(3 * H * H) : 0;
    else if (sp->gru) m->len[S_WS] = sp->opt ? (size_t)H : 0; // b_hn
    else m->len[S_WS] = sp->opt ? (size_t)(H * H) : 0;
    if (sp->gru) m->len[S_WV] = (size_t)(G * H);
    m->len[S_WQV] = (size_t)(P * H);
    m->len[S_X] = (size_t)(T * B * I);
    m->len[S_S0] = sp->gru ? 0 : (size_t)(B * H);
    m->len[S_Y0] = (size_t)(B * m->R);
    for (int s = 0; s < NSEG; s++) {
        m->off[s] = m->n_theta;
        m->n_theta += m->len[s];
    }
    m->n_y = (size_t)(T * B * m->R);
    m->n_s = m->len[S_S0];
    m->n_o = (size_t)(B * m->R);

    size_t train = 0, infer = 0;
    int rc;
    if (sp->lstm) {
        fr_lstm_config *c = &m->lc;
        c->T = T; c->B = B; c->I = I; c->H = H; c->P = P;
        c->peepholes = sp->opt; c->coupled_gates = sp->coupled; c->reverse = sp->reverse;
        c->lengths = sp->lengths;
        if (sp->warp) set_lstm_warps(c);
        if ((rc = fr_lstm_acts_size(&m->n_acts, c)) != FR_OK) return rc;
        if ((rc = fr_lstm_workspace_size(&train, c, 1)) != FR_OK) return rc;
        if ((rc = fr_lstm_workspace_size(&infer, c, 0)) != FR_OK) return rc;
        if ((rc = fr_lstm_backward_workspace_size(&m->n_bwork, c)) != FR_OK) return rc;
    } else if (sp->gru) {
        fr_gru_config *c = &m->gc;
        c->T = T; c->B = B; c->I = I; c->H = H;
        c->linear_before_reset = sp->opt; c->reverse = sp->reverse; c->lengths = sp->lengths;
        if (sp->warp) set_gru_warps(c);
        if ((rc = fr_gru_acts_size(&m->n_acts, c)) != FR_OK) return rc;
        if ((rc = fr_gru_workspace_size(&train, c, 1)) != FR_OK) return rc;
        if ((rc = fr_gru_workspace_size(&infer, c, 0)) != FR_OK) return rc;
        if ((rc = fr_gru_backward_workspace_size(&m->n_bwork, c)) != FR_OK) return rc;
    } else {
        fr_rnn_config *c = &m->rc;
        c->T = T; c->B = B; c->I = I; c->H = H;
        c->state_feedback = sp->opt; c->reverse = sp->reverse; c->lengths = sp->lengths;
        if (sp->warp) set_rnn_warps(c);
        if ((rc = fr_rnn_acts_size(&m->n_acts, c)) != FR_OK) return rc;
        if ((rc = fr_rnn_workspace_size(&train, c, 1)) != FR_OK) return rc;
        if ((rc = fr_rnn_workspace_size(&infer, c, 0)) != FR_OK) return rc;
        if ((rc = fr_rnn_backward_workspace_size(&m->n_bwork, c)) != FR_OK) return rc;
    }
    m->n_work = train > infer ? train : infer;
    snprintf(m->desc, sizeof m->desc, "%s %s=%d T=%lld B=%lld I=%lld H=%lld%s%s%s%s%s",
             sp->lstm ? "lstm" : sp->gru ? "gru " : "rnn ",
             sp->lstm ? "peep" : sp->gru ? "lbr" : "sf", sp->opt, (long long)T,
             (long long)B, (long long)I, (long long)H, P ? " P>0" : "",
             sp->coupled ? " coupled" : "", sp->reverse ? " reverse" : "",
             sp->lengths ? " lengths" : "", sp->warp ? " warp" : "");
    return FR_OK;
}

static const char *seg_name(const model *m, size_t i) { // segment of theta element i
    int s = NSEG - 1;
    while (s > 0 && i < m->off[s]) s--;
    return m->sp.lstm ? seg_lstm[s] : m->sp.gru ? seg_gru[s] : seg_rnn[s];
}

// Fresh pseudo-random theta and loss weights dE = [w_y | w_s | w_o]; w_y is 0
// at padded steps, whose dy the backward ignores by contract.
static void model_fill(const model *m, double *theta, double *dE, uint64_t seed) {
    rng_seed(seed);
    // RNN weights scaled as 1/sqrt(H) beyond H = 4 (PyTorch's initialisation):
    // the state feedback s[n] = W_s s[n-1] + ... has no squashing, and at H = 34
    // with +-0.6 weights its growth alone leaves float32 at 5e-4 from float64
    const double wmax = !m->sp.lstm && m->sp.H > 4 ? 0.6 * 2 / sqrt((double)m->sp.H) : 0.6;
    for (size_t i = 0; i < m->n_theta; i++) theta[i] = rand_uniform(-wmax, wmax);
    for (size_t i = 0; i < m->len[S_X]; i++) theta[m->off[S_X] + i] = rand_uniform(-1, 1);
    for (size_t i = 0; i < m->n_y + m->n_s + m->n_o; i++) dE[i] = rand_uniform(-1, 1);
    if (m->sp.lengths)
        for (int64_t n = 0; n < m->sp.T; n++)
            for (int64_t b = 0; b < m->sp.B; b++)
                if (n >= m->sp.lengths[b])
                    for (int64_t j = 0; j < m->R; j++) dE[(n * m->sp.B + b) * m->R + j] = 0;
}

// Buffers of one model in one precision (float when f32, else double).
typedef struct {
    int f32;
    void *theta; // (n_theta) weights | x | s0 | y0, segments model.off/len
    void *grad;  // (n_theta) gradients, same layout
    void *dE;    // (n_y + n_s + n_o) loss weights w_y (T,B,R) | w_s (B,H) | w_o (B,R)
    void *y;     // (T, B, R) outputs y[n] (LSTM v or q, RNN r)
    void *sT;    // (B, H) final state
    void *oT;    // (B, R) final output
    void *acts;  // (n_acts) activation store
    void *work;  // (n_work) forward workspace, training or inference
    void *bwork; // (n_bwork) backward workspace
} bufs;

static bufs bufs_alloc(const model *m, int f32) {
    size_t es = f32 ? sizeof(float) : sizeof(double);
    bufs b;
    b.f32 = f32;
    b.theta = xcalloc(m->n_theta, es);
    b.grad = xcalloc(m->n_theta, es);
    b.dE = xcalloc(m->n_y + m->n_s + m->n_o, es);
    b.y = xcalloc(m->n_y, es);
    b.sT = xcalloc(m->n_s, es);
    b.oT = xcalloc(m->n_o, es);
    b.acts = xcalloc(m->n_acts, es);
    b.work = xcalloc(m->n_work, es);
    b.bwork = xcalloc(m->n_bwork, es);
    return b;
}

static void bufs_free(bufs *b) {
    free(b->theta); free(b->grad); free(b->dE); free(b->y); free(b->sT); free(b->oT);
    free(b->acts); free(b->work); free(b->bwork);
}

static void set_theta(const model *m, bufs *b, const double *theta, const double *dE) {
    size_t nE = m->n_y + m->n_s + m->n_o;
    if (b->f32) {
        to_f32(b->theta, theta, m->n_theta);
        to_f32(b->dE, dE, nE);
    } else {
        memcpy(b->theta, theta, m->n_theta * sizeof(double));
        memcpy(b->dE, dE, nE * sizeof(double));
    }
}

// ----------------------------------------------------------------------------
// the kernel calls, with the segments of theta (an absent segment is NULL)

#define SEG(p, s) (m->len[s] ? (p) + m->off[s] : NULL)

// The plan of the model's calls: the micro-kernel path for any T (or never),
// split even tiny problems; `threads` through the call's options.
static fr_call plan_for(const model *m) {
    fr_tuning t;
    fr_tuning_get(&t);
    t.packed_max_rows = m->sp.packed ? 1 << 30 : 0;
    t.team_min_steps = 1;
    t.min_step_flops = 0;
    fr_tuning_set(&t);
    fr_call call = {.max_threads = m->sp.threads};
    return call;
}

// The named-pointer structs of one call, for either precision (real = float or double).
#define LSTM_WEIGHTS(real, th) {SEG(th, S_WX), SEG(th, S_WV), SEG(th, S_B), SEG(th, S_WS), \
                                SEG(th, S_WQV), NULL, NULL}
#define LSTM_GRADS(g) {SEG(g, S_WX), SEG(g, S_WV), SEG(g, S_B), SEG(g, S_WS), SEG(g, S_WQV)}
#define RNN_WEIGHTS(th) {SEG(th, S_WX), SEG(th, S_WV), SEG(th, S_B), SEG(th, S_WS), NULL, NULL}
#define RNN_GRADS(g) {SEG(g, S_WX), SEG(g, S_WV), SEG(g, S_B), SEG(g, S_WS)}
// the GRU's: W_x, W_h, b, b_hn in the segments of W_x, W_v, b, W_s
#define GRU_WEIGHTS(th) {SEG(th, S_WX), SEG(th, S_WV), SEG(th, S_B), SEG(th, S_WS), NULL, NULL}
#define GRU_GRADS(g) RNN_GRADS(g)

static int forward_f64(const model *m, double *y, double *sT, double *oT, double *acts,
                       double *work, const double *th) {
    const fr_call call = plan_for(m);
    if (m->sp.lstm) {
        const fr_lstm_forward_seq_f64 seq = {y, sT, oT, acts, work, SEG(th, S_X), SEG(th, S_S0),
                                             SEG(th, S_Y0)};
        const fr_lstm_weights_f64 w = LSTM_WEIGHTS(double, th);
        return fr_lstm_forward_f64(&seq, &w, &m->lc, &call);
    }
    if (m->sp.gru) {
        const fr_gru_forward_seq_f64 seq = {y, oT, acts, work, SEG(th, S_X), SEG(th, S_Y0)};
        const fr_gru_weights_f64 w = GRU_WEIGHTS(th);
        return fr_gru_forward_f64(&seq, &w, &m->gc, &call);
    }
    const fr_rnn_forward_seq_f64 seq = {y, sT, oT, acts, work, SEG(th, S_X), SEG(th, S_S0),
                                        SEG(th, S_Y0)};
    const fr_rnn_weights_f64 w = RNN_WEIGHTS(th);
    return fr_rnn_forward_f64(&seq, &w, &m->rc, &call);
}

static int forward_f32(const model *m, float *y, float *sT, float *oT, float *acts, float *work,
                       const float *th) {
    const fr_call call = plan_for(m);
    if (m->sp.lstm) {
        const fr_lstm_forward_seq_f32 seq = {y, sT, oT, acts, work, SEG(th, S_X), SEG(th, S_S0),
                                             SEG(th, S_Y0)};
        const fr_lstm_weights_f32 w = LSTM_WEIGHTS(float, th);
        return fr_lstm_forward_f32(&seq, &w, &m->lc, &call);
    }
    if (m->sp.gru) {
        const fr_gru_forward_seq_f32 seq = {y, oT, acts, work, SEG(th, S_X), SEG(th, S_Y0)};
        const fr_gru_weights_f32 w = GRU_WEIGHTS(th);
        return fr_gru_forward_f32(&seq, &w, &m->gc, &call);
    }
    const fr_rnn_forward_seq_f32 seq = {y, sT, oT, acts, work, SEG(th, S_X), SEG(th, S_S0),
                                        SEG(th, S_Y0)};
    const fr_rnn_weights_f32 w = RNN_WEIGHTS(th);
    return fr_rnn_forward_f32(&seq, &w, &m->rc, &call);
}

// dy (T,B,R), dsT (B,H), doT (B,R): the gradients of E arriving from above
static int backward_f64(const model *m, double *g, double *bwork, const double *dy,
                        const double *dsT, const double *doT, const double *acts,
                        const double *y, const double *th) {
    const fr_call call = plan_for(m);
    if (m->sp.lstm) {
        const fr_lstm_grads_f64 gr = LSTM_GRADS(g);
        const fr_lstm_backward_seq_f64 seq = {SEG(g, S_X), SEG(g, S_S0), SEG(g, S_Y0), bwork, dy,
                                              dsT, doT, acts, SEG(th, S_X), y, SEG(th, S_S0),
                                              SEG(th, S_Y0)};
        const fr_lstm_weights_f64 w = LSTM_WEIGHTS(double, th);
        return fr_lstm_backward_f64(&gr, &seq, &w, &m->lc, &call);
    }
    if (m->sp.gru) {
        const fr_gru_grads_f64 gr = GRU_GRADS(g);
        const fr_gru_backward_seq_f64 seq = {SEG(g, S_X), SEG(g, S_Y0), bwork, dy, doT, acts,
                                              SEG(th, S_X), y, SEG(th, S_Y0)};
        const fr_gru_weights_f64 w = GRU_WEIGHTS(th);
        return fr_gru_backward_f64(&gr, &seq, &w, &m->gc, &call);
    }
    const fr_rnn_grads_f64 gr = RNN_GRADS(g);
    const fr_rnn_backward_seq_f64 seq = {SEG(g, S_X), SEG(g, S_S0), SEG(g, S_Y0), bwork, dy, dsT,
                                         doT, acts, SEG(th, S_X), y, SEG(th, S_S0), SEG(th, S_Y0)};
    const fr_rnn_weights_f64 w = RNN_WEIGHTS(th);
    return fr_rnn_backward_f64(&gr, &seq, &w, &m->rc, &call);
}

static int backward_f32(const model *m, float *g, float *bwork, const float *dy, const float *dsT,
                        const float *doT, const float *acts, const float *y, const float *th) {
    const fr_call call = plan_for(m);
    if (m->sp.lstm) {
        const fr_lstm_grads_f32 gr = LSTM_GRADS(g);
        const fr_lstm_backward_seq_f32 seq = {SEG(g, S_X), SEG(g, S_S0), SEG(g, S_Y0), bwork, dy,
                                              dsT, doT, acts, SEG(th, S_X), y, SEG(th, S_S0),
                                              SEG(th, S_Y0)};
        const fr_lstm_weights_f32 w = LSTM_WEIGHTS(float, th);
        return fr_lstm_backward_f32(&gr, &seq, &w, &m->lc, &call);
    }
    if (m->sp.gru) {
        const fr_gru_grads_f32 gr = GRU_GRADS(g);
        const fr_gru_backward_seq_f32 seq = {SEG(g, S_X), SEG(g, S_Y0), bwork, dy, doT, acts,
                                              SEG(th, S_X), y, SEG(th, S_Y0)};
        const fr_gru_weights_f32 w = GRU_WEIGHTS(th);
        return fr_gru_backward_f32(&gr, &seq, &w, &m->gc, &call);
    }
    const fr_rnn_grads_f32 gr = RNN_GRADS(g);
    const fr_rnn_backward_seq_f32 seq = {SEG(g, S_X), SEG(g, S_S0), SEG(g, S_Y0), bwork, dy, dsT,
                                         doT, acts, SEG(th, S_X), y, SEG(th, S_S0), SEG(th, S_Y0)};
    const fr_rnn_weights_f32 w = RNN_WEIGHTS(th);
    return fr_rnn_backward_f32(&gr, &seq, &w, &m->rc, &call);
}

// Forward into (y, sT, oT); training when `train` (acts), else inference.
static int forward(const model *m, bufs *b, void *y, void *sT, void *oT, int train) {
    void *acts = train ? b->acts : NULL;
    if (b->f32) return forward_f32(m, y, sT, oT, acts, b->work, b->theta);
    return forward_f64(m, y, sT, oT, acts, b->work, b->theta);
}

// Backward of E with dy = w_y, dsT = w_s, doT = w_o; accumulates into b->grad.
static int backward(const model *m, bufs *b) {
    if (b->f32) {
        const float *dE = b->dE;
        return backward_f32(m, b->grad, b->bwork, dE, dE + m->n_y, dE + m->n_y + m->n_s, b->acts,
                            b->y, b->theta);
    }
    const double *dE = b->dE;
    return backward_f64(m, b->grad, b->bwork, dE, dE + m->n_y, dE + m->n_y + m->n_s, b->acts, b->y,
                        b->theta);
}

// E = sum(w_y * y) + sum(w_s * s_T) + sum(w_o * o_T) after a training forward (f64).
static double loss_f64(const model *m, bufs *b) {
    if (forward(m, b, b->y, b->sT, b->oT, 1) != FR_OK) return NAN;
    const double *dE = b->dE, *y = b->y, *sT = b->sT, *oT = b->oT;
    double E = 0;
    for (size_t i = 0; i < m->n_y; i++) E += dE[i] * y[i];
    for (size_t i = 0; i < m->n_s; i++) E += dE[m->n_y + i] * sT[i];
    for (size_t i = 0; i < m->n_o; i++) E += dE[m->n_y + m->n_s + i] * oT[i];
    return E;
}

// ----------------------------------------------------------------------------
// fd and twice: float64 backward vs central finite differences, then a second
// backward call, which must double the gradients

static void test_fd(const spec *sp) {
    model m;
    int rc = model_init(&m, sp);
    if (rc != FR_OK) { report(0, "fd      size functions failed: %s", fr_status_str(rc)); return; }
    bufs b = bufs_alloc(&m, 0);
    double *theta0 = xcalloc(m.n_theta, sizeof(double));       // (n_theta)
    double *dE0 = xcalloc(m.n_y + m.n_s + m.n_o, sizeof(double)); // (n_y + n_s + n_o)
    double *num = xcalloc(m.n_theta, sizeof(double));          // (n_theta) dE/dtheta by FD
    double *g1 = xcalloc(m.n_theta, sizeof(double));           // (n_theta) one backward
    double *theta = b.theta, *grad = b.grad;
    model_fill(&m, theta0, dE0, 1000 + (uint64_t)m.n_theta);
    set_theta(&m, &b, theta0, dE0);

    rc = forward(&m, &b, b.y, b.sT, b.oT, 1);
    if (rc == FR_OK) rc = backward(&m, &b); // grad was zeroed by calloc

    // fourth-order central differences: truncation O(h^4), rounding ~ eps |E| / h
    // At most ~64 evenly spaced elements of each segment (every element of the
    // small models): the team-path models have thousands, and each costs four
    // forwards with a thread team (minutes under valgrind).
    // FR_TEST_FD_MAX lowers the 64 (tests/c/run.sh sets 4 under valgrind, which is there
    // for memory errors: the plain and asan runs check the numbers on every element).
    const double h = 1e-4;
    size_t n_checked = 0;
    const char *fd_max_env = getenv("FR_TEST_FD_MAX");
    const size_t fd_max = fd_max_env && atoi(fd_max_env) > 0 ? (size_t)atoi(fd_max_env) : 64;
    unsigned char *chk = xcalloc(m.n_theta, 1); // (n_theta) 1 where checked
    for (int s = 0; s < NSEG; s++) {
        const size_t stride = m.len[s] > fd_max ? m.len[s] / fd_max : 1;
        for (size_t j = 0; j < m.len[s]; j += stride) chk[m.off[s] + j] = 1;
    }
    for (size_t i = 0; i < m.n_theta; i++) {
        if (!chk[i]) continue;
        n_checked++;
        const double t = theta[i];
        double E[4]; // E(t - 2h), E(t - h), E(t + h), E(t + 2h)
        const double steps[4] = {-2 * h, -h, h, 2 * h};
        for (int k = 0; k < 4; k++) {
            theta[i] = t + steps[k];
            E[k] = loss_f64(&m, &b);
        }
        theta[i] = t;
        num[i] = (E[0] - 8 * E[1] + 8 * E[2] - E[3]) / (12 * h);
    }
    worst w = {0};
    for (size_t i = 0; i < m.n_theta; i++)
        if (chk[i]) track(&w, grad[i], num[i], 1e-4, seg_name(&m, i), i);
    report(rc == FR_OK && w.err < 1e-6,
           "fd      %-44s rc=%d  %zu/%zu elems  max rel err %.1e at %s (analytic %.9g, fd %.9g)",
           m.desc, rc, n_checked, m.n_theta, w.err, w.where, w.a, w.b);

    // twice: refresh the activation store (the FD calls left it perturbed), backward again
    memcpy(g1, grad, m.n_theta * sizeof(double));
    rc = forward(&m, &b, b.y, b.sT, b.oT, 1);
    if (rc == FR_OK) rc = backward(&m, &b);
    worst w2 = {0};
    for (size_t i = 0; i < m.n_theta; i++) track(&w2, grad[i], 2 * g1[i], 1e-12, seg_name(&m, i), i);
    report(rc == FR_OK && w2.err < 1e-12, "twice   %-44s rc=%d  max rel err %.1e at %s", m.desc, rc,
           w2.err, w2.where);

    free(theta0); free(dE0); free(num); free(g1); free(chk);
    bufs_free(&b);
}

// ----------------------------------------------------------------------------
// f32: float32 forward and backward vs float64 on the same inputs

static void test_f32(const spec *sp) {
    model m;
    int rc = model_init(&m, sp);
    if (rc != FR_OK) { report(0, "f32     size functions failed: %s", fr_status_str(rc)); return; }
    bufs d = bufs_alloc(&m, 0), f = bufs_alloc(&m, 1);
    double *theta0 = xcalloc(m.n_theta, sizeof(double));          // (n_theta)
    double *dE0 = xcalloc(m.n_y + m.n_s + m.n_o, sizeof(double)); // (n_y + n_s + n_o)
    model_fill(&m, theta0, dE0, 2000 + (uint64_t)m.n_theta);
    set_theta(&m, &d, theta0, dE0); // both precisions get the same (float-exact) numbers
    set_theta(&m, &f, theta0, dE0);

    int rc64 = forward(&m, &d, d.y, d.sT, d.oT, 1);
    if (rc64 == FR_OK) rc64 = backward(&m, &d);
    int rc32 = forward(&m, &f, f.y, f.sT, f.oT, 1);
    if (rc32 == FR_OK) rc32 = backward(&m, &f);

    // relative error, with a floor of 1e-2 for elements that are (nearly) zero
    worst w = {0};
    for (size_t i = 0; i < m.n_y; i++) track(&w, at(f.y, 1, i), at(d.y, 0, i), 1e-2, "y", i);
    for (size_t i = 0; i < m.n_s; i++) track(&w, at(f.sT, 1, i), at(d.sT, 0, i), 1e-2, "s_T", i);
    for (size_t i = 0; i < m.n_o; i++) track(&w, at(f.oT, 1, i), at(d.oT, 0, i), 1e-2, "o_T", i);
    for (size_t i = 0; i < m.n_theta; i++)
        track(&w, at(f.grad, 1, i), at(d.grad, 0, i), 1e-2, seg_name(&m, i), i);
    report(rc64 == FR_OK && rc32 == FR_OK && w.err < 1e-4,
           "f32     %-44s rc=%d,%d  max rel err %.1e at %s (f32 %.9g, f64 %.9g)", m.desc, rc32,
           rc64, w.err, w.where, w.a, w.b);

    free(theta0); free(dE0);
    bufs_free(&d); bufs_free(&f);
}

// ----------------------------------------------------------------------------
// infer: inference forward (acts == NULL) bit-identical to the training forward

static void test_infer(const spec *sp) {
    model m;
    int rc = model_init(&m, sp);
    if (rc != FR_OK) { report(0, "infer   size functions failed: %s", fr_status_str(rc)); return; }
    double *theta0 = xcalloc(m.n_theta, sizeof(double));          // (n_theta)
    double *dE0 = xcalloc(m.n_y + m.n_s + m.n_o, sizeof(double)); // (n_y + n_s + n_o)
    model_fill(&m, theta0, dE0, 3000 + (uint64_t)m.n_theta);
    int ok = 1, rcs = FR_OK;
    const char *what = "";
    for (int f32 = 0; f32 <= 1; f32++) {
        size_t es = f32 ? sizeof(float) : sizeof(double);
        bufs b = bufs_alloc(&m, f32);
        unsigned char *y2 = xcalloc(m.n_y, es);  // (T, B, R) inference outputs
        unsigned char *sT2 = xcalloc(m.n_s, es); // (B, H)
        unsigned char *oT2 = xcalloc(m.n_o, es); // (B, R)
        memset(y2, 0xff, m.n_y * es);             // NaN: an unwritten element shows
        set_theta(&m, &b, theta0, dE0);
        int rc1 = forward(&m, &b, b.y, b.sT, b.oT, 1);
        int rc2 = forward(&m, &b, y2, sT2, oT2, 0);
        if (rc1 != FR_OK || rc2 != FR_OK) { ok = 0; rcs = rc1 != FR_OK ? rc1 : rc2; what = "rc"; }
        else if (memcmp(b.y, y2, m.n_y * es)) { ok = 0; what = f32 ? "y f32" : "y f64"; }
        else if (memcmp(b.sT, sT2, m.n_s * es)) { ok = 0; what = f32 ? "s_T f32" : "s_T f64"; }
        else if (memcmp(b.oT, oT2, m.n_o * es)) { ok = 0; what = f32 ? "o_T f32" : "o_T f64"; }
        free(y2); free(sT2); free(oT2);
        bufs_free(&b);
    }
    // the number of inference chunks (csrc/common.h: fr_inference_chunk)
    int64_t tc = (256 + sp->B - 1) / sp->B;
    if (tc < 4) tc = 4;
    if (tc > sp->T) tc = sp->T;
    report(ok, "infer   %-44s %lld chunk(s) of %lld steps, f64+f32 bit-identical%s%s rc=%d", m.desc,
           (long long)((sp->T + tc - 1) / tc), (long long)tc, ok ? "" : ": MISMATCH in ",
           what, rcs);
    free(theta0); free(dE0);
}

// ----------------------------------------------------------------------------
// chunked: steps [0, T1) and [T1, T) in two calls, the state carried, equal
// one call over [0, T). The backward of the later-visited part hands its
// initial-state gradients to the earlier one as ds_T, dy_T.

static void test_chunked(const spec *sp, int64_t T1) {
    model m, mp[2]; // whole; parts [0, T1) and [T1, T)
    int rc = model_init(&m, sp);
    int64_t len_p[2][64]; // (2, B) lengths of the parts
    spec sp_p[2] = {*sp, *sp};
    sp_p[0].T = T1;
    sp_p[1].T = sp->T - T1;
    for (int p = 0; p < 2 && sp->lengths; p++) {
        if (sp->B > 64) { report(0, "chunked test supports B <= 64 with lengths"); return; }
        const int64_t lo = p ? T1 : 0;
        for (int64_t bi = 0; bi < sp->B; bi++) {
            int64_t l = sp->lengths[bi] - lo;
            len_p[p][bi] = l < 0 ? 0 : l > sp_p[p].T ? sp_p[p].T : l;
        }
        sp_p[p].lengths = len_p[p];
    }
    if (rc == FR_OK) rc = model_init(&mp[0], &sp_p[0]);
    if (rc == FR_OK) rc = model_init(&mp[1], &sp_p[1]);
    if (rc != FR_OK) { report(0, "chunked size functions failed: %s", fr_status_str(rc)); return; }
    double *theta0 = xcalloc(m.n_theta, sizeof(double));          // (n_theta)
    double *dE0 = xcalloc(m.n_y + m.n_s + m.n_o, sizeof(double)); // (n_y + n_s + n_o)
    model_fill(&m, theta0, dE0, 4000 + (uint64_t)m.n_theta);
    const int first = sp->reverse ? 1 : 0; // the part visited first
    int ok_fwd = 1, ok_rc = 1;
    worst w[2]; // f64, f32
    memset(w, 0, sizeof w);
    for (int f32 = 0; f32 <= 1; f32++) {
        const size_t es = f32 ? sizeof(float) : sizeof(double);
        bufs b = bufs_alloc(&m, f32);
        bufs bp[2] = {bufs_alloc(&mp[0], f32), bufs_alloc(&mp[1], f32)};
        set_theta(&m, &b, theta0, dE0);
        // each part's theta: the weights, its slice of x; its dE: its slice of w_y
        const size_t n_w = m.off[S_X]; // weights come first, same layout in every part
        const size_t xB = (size_t)(sp->B * sp->I), yB = (size_t)(sp->B * m.R); // per step
        for (int p = 0; p < 2; p++) {
            const size_t n0 = p ? (size_t)T1 : 0;
            unsigned char *th = bp[p].theta, *de = bp[p].dE;
            const unsigned char *TH = b.theta, *DE = b.dE;
            memcpy(th, TH, n_w * es);
            memcpy(th + mp[p].off[S_X] * es, TH + (m.off[S_X] + n0 * xB) * es, mp[p].len[S_X] * es);
            memcpy(de, DE + n0 * yB * es, mp[p].n_y * es);
            // final-state weights w_s, w_o: only the later-visited part sees them
            if (p != first) memcpy(de + mp[p].n_y * es, DE + m.n_y * es, (m.n_s + m.n_o) * es);
        }
        // initial states: the whole's for the first part, the first's final for the second
        {
            unsigned char *th0 = bp[first].theta, *th1 = bp[1 - first].theta;
            const unsigned char *TH = b.theta;
            memcpy(th0 + mp[first].off[S_S0] * es, TH + m.off[S_S0] * es, (m.n_s + m.n_o) * es);
            for (int train = 0; train <= 1; train++) {
                int r1 = forward(&m, &b, b.y, b.sT, b.oT, train);
                int r2 = forward(&mp[first], &bp[first], bp[first].y, bp[first].sT, bp[first].oT,
                                 train);
                memcpy(th1 + mp[1 - first].off[S_S0] * es, bp[first].sT, m.n_s * es);
                memcpy(th1 + mp[1 - first].off[S_Y0] * es, bp[first].oT, m.n_o * es);
                int r3 = forward(&mp[1 - first], &bp[1 - first], bp[1 - first].y, bp[1 - first].sT,
                                 bp[1 - first].oT, train);
                if (r1 != FR_OK || r2 != FR_OK || r3 != FR_OK) ok_rc = 0;
                const unsigned char *Y = b.y;
                if (memcmp(Y, bp[0].y, mp[0].n_y * es) ||
                    memcmp(Y + mp[0].n_y * es, bp[1].y, mp[1].n_y * es) ||
                    memcmp(b.sT, bp[1 - first].sT, m.n_s * es) ||
                    memcmp(b.oT, bp[1 - first].oT, m.n_o * es))
                    ok_fwd = 0;
            }
        }
        // backward: whole; later-visited part, then the first with its ds0, dy0 as ds_T, dy_T
        if (backward(&m, &b) != FR_OK) ok_rc = 0;
        if (backward(&mp[1 - first], &bp[1 - first]) != FR_OK) ok_rc = 0;
        {
            unsigned char *de = bp[first].dE;
            const unsigned char *g1 = bp[1 - first].grad;
            memcpy(de + mp[first].n_y * es, g1 + mp[1 - first].off[S_S0] * es, m.n_s * es);
            memcpy(de + (mp[first].n_y + m.n_s) * es, g1 + mp[1 - first].off[S_Y0] * es,
                   m.n_o * es);
        }
        if (backward(&mp[first], &bp[first]) != FR_OK) ok_rc = 0;
        const double floor = f32 ? 1e-2 : 1e-6;
        for (size_t i = 0; i < m.n_theta; i++) {
            double want = at(b.grad, f32, i), got;
            if (i < n_w) { // weights: the sum of both parts
                got = at(bp[0].grad, f32, i) + at(bp[1].grad, f32, i);
            } else if (i < m.off[S_S0]) { // x: the part holding step n
                size_t k = i - m.off[S_X], p = k >= (size_t)T1 * xB;
                got = at(bp[p].grad, f32, mp[p].off[S_X] + k - (p ? (size_t)T1 * xB : 0));
            } else { // initial states: the first-visited part
                got = at(bp[first].grad, f32, mp[first].off[S_S0] + i - m.off[S_S0]);
            }
            track(&w[f32], got, want, floor, seg_name(&m, i), i);
        }
        bufs_free(&b); bufs_free(&bp[0]); bufs_free(&bp[1]);
    }
    report(ok_rc && ok_fwd && w[0].err < 1e-10 && w[1].err < 1e-4,
           "chunked %-44s split %lld+%lld: forward %s, backward max rel err %.1e (f64) at %s, "
           "%.1e (f32) at %s", m.desc, (long long)T1, (long long)(sp->T - T1),
           ok_fwd ? "bit-identical" : "DIFFERS", w[0].err, w[0].where, w[1].err, w[1].where);
    free(theta0); free(dE0);
}

// ----------------------------------------------------------------------------
// gemm: fr_gemm_f32/f64 against a naive triple loop

static void test_gemm(int f32) {
    static const int64_t shapes[][3] = {{5, 7, 6}, {1, 1, 1}, {33, 65, 17}, {8, 3, 40}};
    static const double ab[][2] = {{1, 0}, {1, 1}, {0.5, 1}, {-1.5, 0.25}}; // (alpha, beta)
    const int64_t pad = 3; // every matrix is stored with 3 extra columns
    const double tol = f32 ? 1e-5 : 1e-13;
    const double sentinel = 12345.0;
    int ok = 1, n_cases = 0;
    char fail[256] = "";
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        const size_t nA = (size_t)((M + pad) * (K + pad)), nB = (size_t)((K + pad) * (N + pad));
        const size_t nC = (size_t)(M * (N + pad));
        double *A = xcalloc(nA, sizeof(double));   // (M, K) or (K, M), row stride lda
        double *B = xcalloc(nB, sizeof(double));   // (K, N) or (N, K), row stride ldb
        double *C0 = xcalloc(nC, sizeof(double));  // (M, N) row stride ldc, C before
        double *C = xcalloc(nC, sizeof(double));   // (M, N) row stride ldc, C after
        float *Af = xcalloc(nA, sizeof(float));    // float copies
        float *Bf = xcalloc(nB, sizeof(float));
        float *Cf = xcalloc(nC, sizeof(float));
        rng_seed(5000 + si);
        for (size_t i = 0; i < nA; i++) A[i] = rand_uniform(-1, 1);
        for (size_t i = 0; i < nB; i++) B[i] = rand_uniform(-1, 1);
        to_f32(Af, A, nA);
        to_f32(Bf, B, nB);
        for (int tA = 0; tA <= 1; tA++)
        for (int tB = 0; tB <= 1; tB++)
        for (size_t ci = 0; ci < sizeof ab / sizeof ab[0]; ci++) {
            const double alpha = ab[ci][0], beta = ab[ci][1];
            const int64_t lda = (tA ? M : K) + pad, ldb = (tB ? K : N) + pad, ldc = N + pad;
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < ldc; j++)
                    C0[i * ldc + j] = j >= N ? sentinel : beta == 0 ? NAN : rand_uniform(-1, 1);
            memcpy(C, C0, nC * sizeof(double));
            int rc;
            if (f32) {
                to_f32(Cf, C0, nC);
                rc = fr_gemm_f32(Cf, Af, Bf, tA, tB, M, N, K, (float)alpha, (float)beta, lda, ldb,
                                 ldc);
                for (size_t i = 0; i < nC; i++) C[i] = Cf[i];
            } else {
                rc = fr_gemm_f64(C, A, B, tA, tB, M, N, K, alpha, beta, lda, ldb, ldc);
            }
            n_cases++;
            if (rc != FR_OK) { ok = 0; snprintf(fail, sizeof fail, " rc=%d", rc); }
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < ldc; j++) {
                    const double got = C[i * ldc + j];
                    if (j >= N) { // the padding columns are never written
                        if (got != sentinel) {
                            ok = 0;
                            snprintf(fail, sizeof fail, " padding written (tA=%d tB=%d)", tA, tB);
                        }
                        continue;
                    }
                    double ref = 0, mag = 0; // alpha op(A) op(B) + beta C, and its magnitude
                    for (int64_t k = 0; k < K; k++) {
                        double a = tA ? A[k * lda + i] : A[i * lda + k];
                        double bk = tB ? B[j * ldb + k] : B[k * ldb + j];
                        ref += alpha * a * bk;
                        mag += fabs(alpha * a * bk);
                    }
                    if (beta != 0) {
                        ref += beta * C0[i * ldc + j];
                        mag += fabs(beta * C0[i * ldc + j]);
                    }
                    // error relative to the magnitude of the terms (floor 1e-3)
                    double e = fabs(got - ref) / fmax(mag, 1e-3);
                    if (!(e <= tol)) {
                        ok = 0;
                        snprintf(fail, sizeof fail, " M=%lld N=%lld K=%lld tA=%d tB=%d a=%g b=%g: %g vs %g",
                                 (long long)M, (long long)N, (long long)K, tA, tB, alpha, beta,
                                 got, ref);
                    }
                }
        }
        free(A); free(B); free(C0); free(C); free(Af); free(Bf); free(Cf);
    }
    // edge cases: K = 0 (C = beta C, NaN dropped by beta = 0), M = 0, dims > INT_MAX
    {
        double Cd[6] = {NAN, NAN, NAN, 1, 2, 3}; // (2, 3)
        float Cs[6] = {NAN, NAN, NAN, 1, 2, 3};
        double one = 1;
        float onef = 1;
        int rc1, rc2, rc3, rc4;
        if (f32) {
            rc1 = fr_gemm_f32(Cs, &onef, &onef, 0, 0, 1, 3, 0, 1, 0, 1, 3, 3);
            rc2 = fr_gemm_f32(Cs + 3, &onef, &onef, 0, 0, 1, 3, 0, 1, 2, 1, 3, 3);
            rc3 = fr_gemm_f32(Cs, &onef, &onef, 0, 0, 0, 3, 1, 1, 0, 1, 3, 3);
            rc4 = fr_gemm_f32(Cs, &onef, &onef, 0, 0, (int64_t)INT32_MAX + 1, 1, 1, 1, 0, 1, 1, 1);
            for (int i = 0; i < 6; i++) Cd[i] = Cs[i];
        } else {
            rc1 = fr_gemm_f64(Cd, &one, &one, 0, 0, 1, 3, 0, 1, 0, 1, 3, 3);
            rc2 = fr_gemm_f64(Cd + 3, &one, &one, 0, 0, 1, 3, 0, 1, 2, 1, 3, 3);
            rc3 = fr_gemm_f64(Cd, &one, &one, 0, 0, 0, 3, 1, 1, 0, 1, 3, 3);
            rc4 = fr_gemm_f64(Cd, &one, &one, 0, 0, (int64_t)INT32_MAX + 1, 1, 1, 1, 0, 1, 1, 1);
        }
        n_cases += 4;
        if (rc1 || rc2 || rc3 || rc4 != FR_EOVERFLOW || Cd[0] != 0 || Cd[1] != 0 || Cd[2] != 0 ||
            Cd[3] != 2 || Cd[4] != 4 || Cd[5] != 6) {
            ok = 0;
            snprintf(fail, sizeof fail, " edge cases: rc %d %d %d %d, C %g %g %g %g %g %g", rc1, rc2,
                     rc3, rc4, Cd[0], Cd[1], Cd[2], Cd[3], Cd[4], Cd[5]);
        }
    }
    report(ok, "gemm    %s: %d cases (4 transpose combos x alpha/beta incl. beta=0 on NaN, "
               "beta=1; K=0, M=0, overflow)%s",
           f32 ? "f32" : "f64", n_cases, fail);
}

// ----------------------------------------------------------------------------
// sizes: status codes of the size functions and of forward/backward

static int size_ok;
static char size_fail[256];
// record the first status that differs from `want`; k numbers the NULL pointer (or -1)
static void expect_k(int got, int want, const char *what, int line, int k) {
    if (got != want && size_ok) {
        size_ok = 0;
        snprintf(size_fail, sizeof size_fail, ": %s (k=%d) returned %d (%s), want %d (line %d)",
                 what, k, got, fr_status_str(got), want, line);
    }
}
static void expect(int got, int want, const char *what, int line) {
    expect_k(got, want, what, line, -1);
}
#define EXPECT(call, want) expect((call), (want), #call, __LINE__)

// the size functions of an LSTM config all return `want`
static void expect_lstm_sizes(const fr_lstm_config *c, int want, int line) {
    size_t n;
    expect(fr_lstm_acts_size(&n, c), want, "fr_lstm_acts_size", line);
    expect(fr_lstm_workspace_size(&n, c, 1), want, "fr_lstm_workspace_size(training)", line);
    expect(fr_lstm_workspace_size(&n, c, 0), want, "fr_lstm_workspace_size(inference)", line);
    expect(fr_lstm_backward_workspace_size(&n, c), want, "fr_lstm_backward_workspace_size", line);
}
static void expect_rnn_sizes(const fr_rnn_config *c, int want, int line) {
    size_t n;
    expect(fr_rnn_acts_size(&n, c), want, "fr_rnn_acts_size", line);
    expect(fr_rnn_workspace_size(&n, c, 1), want, "fr_rnn_workspace_size(training)", line);
    expect(fr_rnn_workspace_size(&n, c, 0), want, "fr_rnn_workspace_size(inference)", line);
    expect(fr_rnn_backward_workspace_size(&n, c), want, "fr_rnn_backward_workspace_size", line);
}

static void test_sizes_lstm(void) {
    size_ok = 1;
    size_fail[0] = 0;
    size_t n;
    const int64_t big = (int64_t)1 << 40;
    fr_lstm_config ok_cfg = {.T = 4, .B = 3, .I = 5, .H = 4, .peepholes = FR_PEEP_DIAGONAL};
    fr_lstm_config c;
    expect_lstm_sizes(&ok_cfg, FR_OK, __LINE__);
    // FR_EINVAL: a size < 1 or an unknown option
    c = ok_cfg; c.T = 0; expect_lstm_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.H = 0; expect_lstm_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.B = 0; expect_lstm_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.I = 0; expect_lstm_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.T = -1; expect_lstm_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.P = 4; expect_lstm_sizes(&c, FR_EINVAL, __LINE__); // projection must shrink
    c = ok_cfg; c.peepholes = 3; expect_lstm_sizes(&c, FR_EINVAL, __LINE__);
    // warping functions: an unknown kind, a non-finite parameter
    c = ok_cfg; c.gate.kind = FR_ACT_COUNT; expect_lstm_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.cell.kind = -1; expect_lstm_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.output = (fr_activation){FR_ACT_ELU, NAN, 0};
    expect_lstm_sizes(&c, FR_EINVAL, __LINE__);
    // FR_EOVERFLOW: T*B overflows size_t; T*B > INT_MAX; T*B*4H elements not addressable
    c = ok_cfg; c.T = big; c.B = big; expect_lstm_sizes(&c, FR_EOVERFLOW, __LINE__);
    c = ok_cfg; c.T = (int64_t)1 << 31; c.B = 2; expect_lstm_sizes(&c, FR_EOVERFLOW, __LINE__);
    c = ok_cfg; c.T = (int64_t)1 << 20; c.B = 1 << 10; c.H = (int64_t)1 << 28;
    EXPECT(fr_lstm_acts_size(&n, &c), FR_EOVERFLOW);
    EXPECT(fr_lstm_backward_workspace_size(&n, &c), FR_EOVERFLOW);
    // FR_ENULL: no config
    expect_lstm_sizes(NULL, FR_ENULL, __LINE__);

    // forward/backward: the same statuses, checked before any buffer is touched
    spec sp = {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL};
    model mm, *m = &mm;
    if (model_init(m, &sp) != FR_OK) { report(0, "sizes   lstm: model_init failed"); return; }
    bufs b = bufs_alloc(m, 0);
    double *th = b.theta, *g = b.grad, *y = b.y, *sT = b.sT, *oT = b.oT, *acts = b.acts;
    double *work = b.work, *bwork = b.bwork, *dy = b.dE;
    fr_lstm_config bad[3] = {ok_cfg, ok_cfg, ok_cfg};
    bad[0].T = 0; bad[1].T = big; bad[1].B = big; bad[2].H = 0;
    const int bad_want[3] = {FR_EINVAL, FR_EOVERFLOW, FR_EINVAL};
    const fr_lstm_forward_seq_f64 fs = {y, sT, oT, acts, work, SEG(th, S_X), SEG(th, S_S0),
                                        SEG(th, S_Y0)};
    const fr_lstm_weights_f64 fw = LSTM_WEIGHTS(double, th);
    const fr_lstm_grads_f64 gr = LSTM_GRADS(g);
    const fr_lstm_backward_seq_f64 bs = {NULL, NULL, NULL, bwork, dy, NULL, NULL, acts,
                                         SEG(th, S_X), y, SEG(th, S_S0), SEG(th, S_Y0)};
    for (int k = 0; k < 3; k++) {
        expect(fr_lstm_forward_f64(&fs, &fw, &bad[k], NULL), bad_want[k],
               "fr_lstm_forward_f64(bad cfg)", __LINE__);
        expect(fr_lstm_backward_f64(&gr, &bs, &fw, &bad[k], NULL), bad_want[k],
               "fr_lstm_backward_f64(bad cfg)", __LINE__);
    }
    EXPECT(fr_lstm_forward_f64(&fs, &fw, NULL, NULL), FR_ENULL);
    EXPECT(fr_lstm_forward_f64(NULL, &fw, &ok_cfg, NULL), FR_ENULL);
    EXPECT(fr_lstm_forward_f64(&fs, NULL, &ok_cfg, NULL), FR_ENULL);
    // each required pointer of the forward NULL in turn (k = 10: the inference workspace)
    for (int k = 0; k < 11; k++) {
        fr_lstm_forward_seq_f64 s2 = fs;
        fr_lstm_weights_f64 w2 = fw;
        double **out[] = {&s2.y_seq, &s2.s_T, &s2.y_T};
        const double **in[] = {&s2.x, &s2.s0, &s2.y0, &w2.W_x, &w2.W_v, &w2.b, &w2.W_s};
        if (k < 3) *out[k] = NULL;
        else if (k < 10) *in[k - 3] = NULL;
        else s2.acts = s2.work = NULL;
        expect_k(fr_lstm_forward_f64(&s2, &w2, &ok_cfg, NULL), FR_ENULL,
                 "fr_lstm_forward_f64(NULL required pointer)", __LINE__, k);
    }
    EXPECT(fr_lstm_forward_f64(&fs, &fw, &ok_cfg, NULL), FR_OK);
    // each required pointer of the backward NULL in turn
    for (int k = 0; k < 13; k++) {
        fr_lstm_grads_f64 g2 = gr;
        fr_lstm_backward_seq_f64 s2 = bs;
        fr_lstm_weights_f64 w2 = fw;
        double **out[] = {&g2.dW_x, &g2.dW_v, &g2.db, &g2.dW_s, &s2.work};
        const double **in[] = {&s2.acts, &s2.x, &s2.y_seq, &s2.s0, &s2.y0, &w2.W_x, &w2.W_v,
                               &w2.W_s};
        if (k < 5) *out[k] = NULL;
        else *in[k - 5] = NULL;
        expect_k(fr_lstm_backward_f64(&g2, &s2, &w2, &ok_cfg, NULL), FR_ENULL,
                 "fr_lstm_backward_f64(NULL required pointer)", __LINE__, k);
    }
    // the optional ones may all be NULL: dx, ds0, dy0, dy_seq, ds_T, dy_T
    {
        fr_lstm_backward_seq_f64 s2 = bs;
        s2.dy_seq = NULL;
        EXPECT(fr_lstm_backward_f64(&gr, &s2, &fw, &ok_cfg, NULL), FR_OK);
    }
    bufs_free(&b);
    report(size_ok, "sizes   lstm: EINVAL (T/B/I/H <= 0, P >= H, peepholes, warping), EOVERFLOW (3 configs), "
                    "ENULL (cfg, 10 forward + 13 backward pointers), optional NULLs ok%s", size_fail);
}

static void test_sizes_rnn(void) {
    size_ok = 1;
    size_fail[0] = 0;
    size_t n;
    const int64_t big = (int64_t)1 << 40;
    fr_rnn_config ok_cfg = {.T = 4, .B = 3, .I = 5, .H = 4, .state_feedback = 1};
    fr_rnn_config c;
    expect_rnn_sizes(&ok_cfg, FR_OK, __LINE__);
    c = ok_cfg; c.T = 0; expect_rnn_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.H = 0; expect_rnn_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.B = 0; expect_rnn_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.I = 0; expect_rnn_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.state_feedback = 2; expect_rnn_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.activation.kind = FR_ACT_COUNT; expect_rnn_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.activation = (fr_activation){FR_ACT_AFFINE, 1, INFINITY};
    expect_rnn_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.accumulation_clip = -1; expect_rnn_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.accumulation_clip = NAN; expect_rnn_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.T = big; c.B = big; expect_rnn_sizes(&c, FR_EOVERFLOW, __LINE__);
    c = ok_cfg; c.T = (int64_t)1 << 31; c.B = 2; expect_rnn_sizes(&c, FR_EOVERFLOW, __LINE__);
    c = ok_cfg; c.T = (int64_t)1 << 20; c.B = 1 << 10; c.H = (int64_t)1 << 30; // T*B*H = 2^60
    EXPECT(fr_rnn_acts_size(&n, &c), FR_EOVERFLOW);
    EXPECT(fr_rnn_backward_workspace_size(&n, &c), FR_EOVERFLOW);
    expect_rnn_sizes(NULL, FR_ENULL, __LINE__);

    spec sp = {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1};
    model mm, *m = &mm;
    if (model_init(m, &sp) != FR_OK) { report(0, "sizes   rnn: model_init failed"); return; }
    bufs b = bufs_alloc(m, 0);
    double *th = b.theta, *g = b.grad, *y = b.y, *sT = b.sT, *oT = b.oT, *acts = b.acts;
    double *work = b.work, *bwork = b.bwork, *dy = b.dE;
    fr_rnn_config bad[3] = {ok_cfg, ok_cfg, ok_cfg};
    bad[0].T = 0; bad[1].T = big; bad[1].B = big; bad[2].H = 0;
    const int bad_want[3] = {FR_EINVAL, FR_EOVERFLOW, FR_EINVAL};
    const fr_rnn_forward_seq_f64 fs = {y, sT, oT, acts, work, SEG(th, S_X), SEG(th, S_S0),
                                       SEG(th, S_Y0)};
    const fr_rnn_weights_f64 fw = RNN_WEIGHTS(th);
    const fr_rnn_grads_f64 gr = RNN_GRADS(g);
    const fr_rnn_backward_seq_f64 bs = {NULL, NULL, NULL, bwork, dy, NULL, NULL, acts,
                                        SEG(th, S_X), y, SEG(th, S_S0), SEG(th, S_Y0)};
    for (int k = 0; k < 3; k++) {
        expect(fr_rnn_forward_f64(&fs, &fw, &bad[k], NULL), bad_want[k],
               "fr_rnn_forward_f64(bad cfg)", __LINE__);
        expect(fr_rnn_backward_f64(&gr, &bs, &fw, &bad[k], NULL), bad_want[k],
               "fr_rnn_backward_f64(bad cfg)", __LINE__);
    }
    EXPECT(fr_rnn_forward_f64(&fs, &fw, NULL, NULL), FR_ENULL);
    for (int k = 0; k < 11; k++) {
        fr_rnn_forward_seq_f64 s2 = fs;
        fr_rnn_weights_f64 w2 = fw;
        double **out[] = {&s2.r_seq, &s2.s_T, &s2.r_T};
        const double **in[] = {&s2.x, &s2.s0, &s2.r0, &w2.W_x, &w2.W_r, &w2.theta_s, &w2.W_s};
        if (k < 3) *out[k] = NULL;
        else if (k < 10) *in[k - 3] = NULL;
        else s2.acts = s2.work = NULL;
        expect_k(fr_rnn_forward_f64(&s2, &w2, &ok_cfg, NULL), FR_ENULL,
                 "fr_rnn_forward_f64(NULL required pointer)", __LINE__, k);
    }
    EXPECT(fr_rnn_forward_f64(&fs, &fw, &ok_cfg, NULL), FR_OK);
    for (int k = 0; k < 13; k++) {
        fr_rnn_grads_f64 g2 = gr;
        fr_rnn_backward_seq_f64 s2 = bs;
        fr_rnn_weights_f64 w2 = fw;
        double **out[] = {&g2.dW_x, &g2.dW_r, &g2.dtheta_s, &g2.dW_s, &s2.work};
        const double **in[] = {&s2.acts, &s2.x, &s2.r_seq, &s2.s0, &s2.r0, &w2.W_x, &w2.W_r,
                               &w2.W_s};
        if (k < 5) *out[k] = NULL;
        else *in[k - 5] = NULL;
        expect_k(fr_rnn_backward_f64(&g2, &s2, &w2, &ok_cfg, NULL), FR_ENULL,
                 "fr_rnn_backward_f64(NULL required pointer)", __LINE__, k);
    }
    {
        fr_rnn_backward_seq_f64 s2 = bs;
        s2.dr_seq = NULL;
        EXPECT(fr_rnn_backward_f64(&gr, &s2, &fw, &ok_cfg, NULL), FR_OK);
    }
    bufs_free(&b);
    report(size_ok, "sizes   rnn:  EINVAL (T/B/I/H <= 0, state_feedback, warping, clip), EOVERFLOW (3 configs), "
                    "ENULL (cfg, 10 forward + 13 backward pointers), optional NULLs ok%s", size_fail);
}

static void expect_gru_sizes(const fr_gru_config *c, int want, int line) {
    size_t n;
    expect(fr_gru_acts_size(&n, c), want, "fr_gru_acts_size", line);
    expect(fr_gru_workspace_size(&n, c, 1), want, "fr_gru_workspace_size(training)", line);
    expect(fr_gru_workspace_size(&n, c, 0), want, "fr_gru_workspace_size(inference)", line);
    expect(fr_gru_backward_workspace_size(&n, c), want, "fr_gru_backward_workspace_size", line);
}

static void test_sizes_gru(void) {
    size_ok = 1;
    size_fail[0] = 0;
    const int64_t big = (int64_t)1 << 40;
    const int64_t bad_len[3] = {4, 5, 0}; // 5 > T
    fr_gru_config ok_cfg = {.T = 4, .B = 3, .I = 5, .H = 4, .linear_before_reset = 1};
    fr_gru_config c;
    expect_gru_sizes(&ok_cfg, FR_OK, __LINE__);
    c = ok_cfg; c.T = 0; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.B = -1; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.I = 0; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.H = 0; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.linear_before_reset = 2; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.reverse = -1; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.lengths = bad_len; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    // warping functions and the clip: an unknown kind, a non-finite parameter, c < 0 or NaN
    c = ok_cfg; c.gate.kind = FR_ACT_COUNT; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.cell = (fr_activation){FR_ACT_ELU, NAN, 0};
    expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.accumulation_clip = -1; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.accumulation_clip = NAN; expect_gru_sizes(&c, FR_EINVAL, __LINE__);
    c = ok_cfg; c.T = big; c.B = big; expect_gru_sizes(&c, FR_EOVERFLOW, __LINE__);
    c = ok_cfg; c.H = (int64_t)1 << 30; expect_gru_sizes(&c, FR_EOVERFLOW, __LINE__);
    c = ok_cfg; c.T = (int64_t)1 << 31; c.B = 2; expect_gru_sizes(&c, FR_EOVERFLOW, __LINE__);
    expect(fr_gru_acts_size(NULL, &ok_cfg), FR_ENULL, "fr_gru_acts_size(NULL)", __LINE__);
    expect(fr_gru_acts_size(&(size_t){0}, NULL), FR_ENULL, "fr_gru_acts_size(cfg NULL)", __LINE__);

    spec sp = {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1};
    model mm, *m = &mm;
    if (model_init(m, &sp) != FR_OK) { report(0, "sizes   gru: model_init failed"); return; }
    bufs b = bufs_alloc(m, 0);
    double *th = b.theta, *g = b.grad, *y = b.y, *oT = b.oT, *acts = b.acts;
    double *work = b.work, *bwork = b.bwork, *dy = b.dE;
    const fr_gru_forward_seq_f64 fs = {y, oT, acts, work, SEG(th, S_X), SEG(th, S_Y0)};
    const fr_gru_weights_f64 fw = GRU_WEIGHTS(th);
    const fr_gru_grads_f64 gr = GRU_GRADS(g);
    const fr_gru_backward_seq_f64 bs = {NULL, NULL, bwork, dy, NULL, acts, SEG(th, S_X), y,
                                        SEG(th, S_Y0)};
    EXPECT(fr_gru_forward_f64(&fs, &fw, NULL, NULL), FR_ENULL);
    for (int k = 0; k < 8; k++) { // every required forward pointer, b_hn with the option
        fr_gru_forward_seq_f64 s2 = fs;
        fr_gru_weights_f64 w2 = fw;
        double **out[] = {&s2.h_seq, &s2.h_T, &s2.work};
        const double **in[] = {&s2.x, &s2.h0, &w2.W_x, &w2.W_h, &w2.b};
        if (k < 3) *out[k] = NULL;
        else *in[k - 3] = NULL;
        expect_k(fr_gru_forward_f64(&s2, &w2, &ok_cfg, NULL), FR_ENULL,
                 "fr_gru_forward_f64(NULL required pointer)", __LINE__, k);
    }
    {
        fr_gru_weights_f64 w2 = fw;
        w2.b_hn = NULL;
        EXPECT(fr_gru_forward_f64(&fs, &w2, &ok_cfg, NULL), FR_ENULL);
    }
    EXPECT(fr_gru_forward_f64(&fs, &fw, &ok_cfg, NULL), FR_OK);
    for (int k = 0; k < 10; k++) {
        fr_gru_grads_f64 g2 = gr;
        fr_gru_backward_seq_f64 s2 = bs;
        fr_gru_weights_f64 w2 = fw;
        double **out[] = {&g2.dW_x, &g2.dW_h, &g2.db, &g2.db_hn, &s2.work};
        const double **in[] = {&s2.acts, &s2.x, &s2.h_seq, &s2.h0, &w2.W_x};
        if (k < 5) *out[k] = NULL;
        else *in[k - 5] = NULL;
        expect_k(fr_gru_backward_f64(&g2, &s2, &w2, &ok_cfg, NULL), FR_ENULL,
                 "fr_gru_backward_f64(NULL required pointer)", __LINE__, k);
    }
    {
        fr_gru_backward_seq_f64 s2 = bs;
        s2.dh_seq = NULL;
        EXPECT(fr_gru_backward_f64(&gr, &s2, &fw, &ok_cfg, NULL), FR_OK);
        fr_gru_config c0 = ok_cfg;
        fr_gru_grads_f64 g2 = gr;
        c0.linear_before_reset = 0; // b_hn not used: may be NULL
        g2.db_hn = NULL;
        EXPECT(fr_gru_forward_f64(&fs, &fw, &c0, NULL), FR_OK);
        EXPECT(fr_gru_backward_f64(&g2, &s2, &fw, &c0, NULL), FR_OK);
    }
    bufs_free(&b);
    report(size_ok, "sizes   gru:  EINVAL (T/B/I/H <= 0, options, lengths > T, warping, clip), "
                    "EOVERFLOW (3 configs), ENULL (cfg, 9 forward + 10 backward pointers), optional NULLs ok%s",
           size_fail);
}

// ----------------------------------------------------------------------------

int main(void) {
    fr_set_blas(NULL, NULL); // the portable GEMM (the default; never a BLAS here)
    static const int64_t len3[3] = {4, 0, 2};     // (B=3) with one empty row
    static int64_t len64[64];                     // (B=64)
    for (int b = 0; b < 64; b++) len64[b] = (b * 7) % 11; // 0 .. 10
    printf("fusedrnn C kernel tests (portable GEMM, have_blas=%d)\n", fr_have_blas());

    test_gemm(0);
    test_gemm(1);
    test_sizes_lstm();
    test_sizes_rnn();
    test_sizes_gru();

    // fd, twice, f32, infer, chunked on small problems
    static const spec small[] = {
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_NONE},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL},
        {.lstm = 1, .T = 1, .B = 1, .I = 5, .H = 4, .opt = FR_PEEP_NONE},
        {.lstm = 1, .T = 1, .B = 1, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL},
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 0},
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1},
        {.lstm = 0, .T = 1, .B = 1, .I = 5, .H = 4, .opt = 0},
        {.lstm = 0, .T = 1, .B = 1, .I = 5, .H = 4, .opt = 1},
        // beyond the Vanilla cell: full peepholes, coupled gates, projection,
        // reverse, variable lengths
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_FULL},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL, .coupled = 1},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .P = 2, .opt = FR_PEEP_DIAGONAL},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL, .lengths = len3},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL, .reverse = 1,
         .lengths = len3},
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1, .lengths = len3},
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1, .reverse = 1, .lengths = len3},
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 0, .reverse = 1, .lengths = len3},
        // the packed-weight micro-kernel for the per-step GEMMs
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL, .packed = 1},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 3, .P = 2, .opt = FR_PEEP_FULL, .packed = 1},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL, .reverse = 1,
         .lengths = len3, .packed = 1},
        // the team path on 2 and 3 threads (uneven splits, partial panels)
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 18, .P = 3, .opt = FR_PEEP_DIAGONAL,
         .packed = 1, .threads = 2},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 34, .opt = FR_PEEP_NONE, .reverse = 1,
         .lengths = len3, .packed = 1, .threads = 3},
        // the GRU, both formulations: plain, lengths, reverse, the team path
        {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1},
        {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 0},
        {.gru = 1, .T = 1, .B = 1, .I = 5, .H = 4, .opt = 1},
        {.gru = 1, .T = 1, .B = 1, .I = 5, .H = 4, .opt = 0},
        {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1, .reverse = 1, .lengths = len3},
        {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 0, .lengths = len3},
        {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 0, .packed = 1},
        {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 34, .opt = 1, .reverse = 1, .lengths = len3,
         .packed = 1, .threads = 2},
        {.gru = 1, .T = 4, .B = 3, .I = 6, .H = 36, .opt = 0, .lengths = len3, .packed = 1,
         .threads = 3},
        // the RNN's team path
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1, .packed = 1},
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 34, .opt = 1, .reverse = 1, .lengths = len3,
         .packed = 1, .threads = 2},
        {.lstm = 0, .T = 4, .B = 3, .I = 6, .H = 36, .opt = 0, .lengths = len3, .packed = 1,
         .threads = 3},
        // non-default warping functions (§9): provider and team paths, both cells
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL, .lengths = len3,
         .warp = 1},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = FR_PEEP_FULL, .coupled = 1, .warp = 1},
        {.lstm = 1, .T = 4, .B = 3, .I = 5, .H = 18, .P = 3, .opt = FR_PEEP_DIAGONAL,
         .reverse = 1, .packed = 1, .threads = 2, .warp = 1},
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 0, .lengths = len3, .warp = 1},
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1, .reverse = 1, .warp = 1},
        {.lstm = 0, .T = 4, .B = 3, .I = 5, .H = 34, .opt = 0, .packed = 1, .threads = 2,
         .warp = 1},
        {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 1, .lengths = len3, .warp = 1},
        {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 4, .opt = 0, .reverse = 1, .warp = 1},
        {.gru = 1, .T = 4, .B = 3, .I = 5, .H = 34, .opt = 0, .lengths = len3, .packed = 1,
         .threads = 2, .warp = 1},
    };
    const size_t n_small = sizeof small / sizeof small[0];
    for (size_t i = 0; i < n_small; i++) test_fd(&small[i]);
    for (size_t i = 0; i < n_small; i++) test_f32(&small[i]);
    for (size_t i = 0; i < n_small; i++) test_infer(&small[i]);
    for (size_t i = 0; i < n_small; i++)
        if (small[i].T > 1) test_chunked(&small[i], 1 + (int64_t)(i % 3));

    // infer and chunked where the inference chunking (fr_inference_chunk) splits
    // the sequence: B = 64 -> chunks of 4 steps; B = 1 -> chunks of 256 steps
    static const spec longer[] = {
        {.lstm = 1, .T = 10, .B = 64, .I = 5, .H = 4, .opt = FR_PEEP_NONE},
        {.lstm = 1, .T = 9, .B = 64, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL},
        {.lstm = 1, .T = 10, .B = 64, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL, .reverse = 1},
        {.lstm = 1, .T = 10, .B = 64, .I = 5, .H = 4, .P = 3, .opt = FR_PEEP_FULL,
         .lengths = len64},
        {.lstm = 1, .T = 300, .B = 1, .I = 5, .H = 4, .opt = FR_PEEP_DIAGONAL},
        {.lstm = 0, .T = 10, .B = 64, .I = 5, .H = 4, .opt = 0},
        {.lstm = 0, .T = 9, .B = 64, .I = 5, .H = 4, .opt = 1},
        {.lstm = 0, .T = 10, .B = 64, .I = 5, .H = 4, .opt = 1, .reverse = 1, .lengths = len64},
        {.lstm = 0, .T = 301, .B = 1, .I = 5, .H = 4, .opt = 0},
        {.gru = 1, .T = 10, .B = 64, .I = 5, .H = 4, .opt = 1, .reverse = 1, .lengths = len64},
        {.gru = 1, .T = 11, .B = 64, .I = 5, .H = 4, .opt = 0, .lengths = len64},
        {.gru = 1, .T = 300, .B = 1, .I = 5, .H = 4, .opt = 0},
    };
    const size_t n_longer = sizeof longer / sizeof longer[0];
    for (size_t i = 0; i < n_longer; i++) test_infer(&longer[i]);
    for (size_t i = 0; i < n_longer; i++) test_chunked(&longer[i], longer[i].T / 2 - 1);

    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
