// Pure-C tests of the reduced-precision inference forward (docs/equations.md §7):
// the LSTM (diagonal and full peepholes, projection, lengths, reverse) and the
// canonical RNN (state feedback) with W_x, W_v (W_r), W_qv in bf16 or int8,
// run by tests/c/run.sh plain / asan / valgrind.
//  - against the float32 forward of the same (dequantised) weights: only the
//    activations' rounding separates them, within a bound and not zero;
//  - path against path: every int8 ISA path the CPU runs gives the same bits
//    (exact integer sums), every bf16 path with k-order sums the same bits as the
//    generic one, vdpbf16ps (pair order) within the float32 bound of it;
//  - 1 and 3 threads bit for bit; the errors of bad calls.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "fusedrnn.h"
#include "plan.h"
#include "qgemm.h"

static int g_fail = 0, g_pass = 0;
#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (!(cond)) {                                            \
            g_fail++;                                             \
            printf("[FAIL] %s:%d: ", __FILE__, __LINE__);         \
            printf(__VA_ARGS__);                                  \
            printf("\n");                                         \
        } else {                                                  \
            g_pass++;                                             \
        }                                                         \
    } while (0)

static uint64_t g_rng = 88172645463325252ull;
static float uniform(float lo, float hi) { // xorshift64
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return lo + (hi - lo) * (float)((g_rng >> 40) * (1.0 / 16777216.0));
}
static float *randv(size_t n, float lo, float hi) {
    float *v = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = uniform(lo, hi);
    return v;
}
static float maxdiff(const float *a, const float *b, size_t n) {
    float d = 0;
    for (size_t i = 0; i < n; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

// A reduced weight (N, K): its stored form (bf16 bits or int8 + row scales) and the
// float32 values it stands for (what the float forward uses).
typedef struct {
    void *q;      // (N, K) uint16 or int8
    float *scale; // (N) int8 only
    float *deq;   // (N, K) the dequantised values
} rweight;

static rweight reduce(const float *W, int64_t N, int64_t K, int type) {
    rweight r = {0};
    const size_t n = (size_t)(N * K);
    r.deq = malloc(n * sizeof(float));
    if (type == FR_QT_BF16) {
        uint16_t *b = malloc(n * sizeof(uint16_t));
        fr_bf16_round(b, W, (int64_t)n);
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)b[i] << 16;
            memcpy(&r.deq[i], &u, 4);
        }
        r.q = b;
    } else {
        int8_t *q = malloc(n);
        r.scale = malloc((size_t)N * sizeof(float));
        fr_s8_quantize(q, r.scale, W, K, N, K);
        for (int64_t i = 0; i < N; i++)
            for (int64_t k = 0; k < K; k++) r.deq[i * K + k] = q[i * K + k] * r.scale[i];
        r.q = q;
    }
    return r;
}
static void rfree(rweight *r) {
    free(r->q);
    free(r->scale);
    free(r->deq);
}

static void *aligned_bytes(size_t n) {
    return aligned_alloc(64, (n + 63) / 64 * 64 + 64); // C11: a multiple of the alignment
}

static fr_call threads_call(int n) {
    fr_tuning t;
    fr_tuning_get(&t);
    t.threads = n;
    t.min_step_flops = 0; // a thread for every panel of units
    t.min_step_bytes = 0;
    t.team_min_steps = 1; // a team at any T
    fr_tuning_set(&t);
    fr_call call = {.max_threads = n};
    return call;
}

// ---- the LSTM ------------------------------------------------------------------
typedef struct {
    fr_lstm_config cfg;
    float *x, *s0, *y0, *b, *W_s; // float inputs
    rweight wx, wv, wq;
    void *packed;
} lstm_case;

static lstm_case lstm_make(int type, int64_t T, int64_t B, int64_t I, int64_t H, int64_t P,
                           int peep, int reverse, const int64_t *lengths) {
    lstm_case c = {.cfg = {.T = T, .B = B, .I = I, .H = H, .P = P, .peepholes = peep,
                           .reverse = reverse, .lengths = lengths, .reduced = type}};
    const int64_t R = P ? P : H;
    float *W_x = randv((size_t)(4 * H * I), -0.4f, 0.4f);  // (4H, I)
    float *W_v = randv((size_t)(4 * H * R), -0.4f, 0.4f);  // (4H, R)
    float *W_qv = P ? randv((size_t)(P * H), -0.5f, 0.5f) : NULL; // (P, H)
    c.wx = reduce(W_x, 4 * H, I, type);
    c.wv = reduce(W_v, 4 * H, R, type);
    if (P) c.wq = reduce(W_qv, P, H, type);
    free(W_x), free(W_v), free(W_qv);
    c.x = randv((size_t)(T * B * I), -1.f, 1.f);   // (T, B, I)
    c.s0 = randv((size_t)(B * H), -0.5f, 0.5f);    // (B, H)
    c.y0 = randv((size_t)(B * R), -0.5f, 0.5f);    // (B, R)
    c.b = randv((size_t)(4 * H), -0.2f, 0.2f);     // (4H)
    const size_t ns = peep == FR_PEEP_FULL ? (size_t)(3 * H * H) : (size_t)(3 * H);
    c.W_s = peep ? randv(ns, peep == FR_PEEP_FULL ? -0.05f : -0.3f, peep == FR_PEEP_FULL ? 0.05f : 0.3f)
                 : NULL; // (3, H) or (3, H, H)
    size_t bytes = 0;
    CHECK(fr_lstm_qpacked_size(&bytes, &c.cfg) == FR_OK && bytes > 0, "fr_lstm_qpacked_size");
    c.packed = aligned_bytes(bytes);
    CHECK(fr_lstm_qpack(c.packed, c.wx.q, c.wx.scale, c.wv.q, c.wv.scale, P ? c.wq.q : NULL,
                        P ? c.wq.scale : NULL, &c.cfg) == FR_OK, "fr_lstm_qpack");
    return c;
}
static void lstm_free(lstm_case *c) {
    free(c->x), free(c->s0), free(c->y0), free(c->b), free(c->W_s), free(c->packed);
    rfree(&c->wx), rfree(&c->wv);
    if (c->cfg.P) rfree(&c->wq);
}

// y (T, B, R) then s_T (B, H) into out; reduced (1) or float on the dequantised weights (0).
static int lstm_run(const lstm_case *c, int reduced, const fr_call *call, float *out) {
    fr_lstm_config cfg = c->cfg;
    if (!reduced) cfg.reduced = 0;
    const int64_t T = cfg.T, B = cfg.B, H = cfg.H, R = cfg.P ? cfg.P : H;
    size_t n_work = 0;
    int st = fr_lstm_workspace_size(&n_work, &cfg, 0);
    if (st != FR_OK) return st;
    float *work = malloc((n_work ? n_work : 1) * sizeof(float));
    float *y_T = malloc((size_t)(B * R) * sizeof(float));
    fr_lstm_forward_seq_f32 seq = {.y_seq = out, .s_T = out + T * B * R, .y_T = y_T,
                                   .work = work, .x = c->x, .s0 = c->s0, .y0 = c->y0};
    fr_lstm_weights_f32 w = {.b = c->b, .W_s = c->W_s};
    if (reduced) {
        w.reduced = c->packed;
    } else {
        w.W_x = c->wx.deq, w.W_v = c->wv.deq, w.W_qv = cfg.P ? c->wq.deq : NULL;
    }
    st = fr_lstm_forward_f32(&seq, &w, &cfg, call);
    free(work), free(y_T);
    return st;
}

// ---- the RNN -------------------------------------------------------------------
typedef struct {
    fr_rnn_config cfg;
    float *x, *s0, *r0, *theta_s, *W_s;
    rweight wx, wr;
    void *packed;
} rnn_case;

static rnn_case rnn_make(int type, int64_t T, int64_t B, int64_t I, int64_t H, int sf,
                         const int64_t *lengths) {
    rnn_case c = {.cfg = {.T = T, .B = B, .I = I, .H = H, .state_feedback = sf,
                          .lengths = lengths, .reduced = type}};
    float *W_x = randv((size_t)(H * I), -0.3f, 0.3f); // (H, I)
    float *W_r = randv((size_t)(H * H), -0.2f, 0.2f); // (H, H)
    c.wx = reduce(W_x, H, I, type);
    c.wr = reduce(W_r, H, H, type);
    free(W_x), free(W_r);
    c.x = randv((size_t)(T * B * I), -1.f, 1.f);       // (T, B, I)
    c.s0 = randv((size_t)(B * H), -0.5f, 0.5f);        // (B, H)
    c.r0 = randv((size_t)(B * H), -0.5f, 0.5f);        // (B, H)
    c.theta_s = randv((size_t)H, -0.2f, 0.2f);         // (H)
    c.W_s = sf ? randv((size_t)(H * H), -0.05f, 0.05f) : NULL; // (H, H) float32
    size_t bytes = 0;
    CHECK(fr_rnn_qpacked_size(&bytes, &c.cfg) == FR_OK && bytes > 0, "fr_rnn_qpacked_size");
    c.packed = aligned_bytes(bytes);
    CHECK(fr_rnn_qpack(c.packed, c.wx.q, c.wx.scale, c.wr.q, c.wr.scale, &c.cfg) == FR_OK,
          "fr_rnn_qpack");
    return c;
}
static void rnn_free(rnn_case *c) {
    free(c->x), free(c->s0), free(c->r0), free(c->theta_s), free(c->W_s), free(c->packed);
    rfree(&c->wx), rfree(&c->wr);
}

// r (T, B, H) then s_T (B, H) into out.
static int rnn_run(const rnn_case *c, int reduced, const fr_call *call, float *out) {
    fr_rnn_config cfg = c->cfg;
    if (!reduced) cfg.reduced = 0;
    const int64_t T = cfg.T, B = cfg.B, H = cfg.H;
    size_t n_work = 0;
    int st = fr_rnn_workspace_size(&n_work, &cfg, 0);
    if (st != FR_OK) return st;
    float *work = malloc((n_work ? n_work : 1) * sizeof(float));
    float *r_T = malloc((size_t)(B * H) * sizeof(float));
    fr_rnn_forward_seq_f32 seq = {.r_seq = out, .s_T = out + T * B * H, .r_T = r_T,
                                  .work = work, .x = c->x, .s0 = c->s0, .r0 = c->r0};
    fr_rnn_weights_f32 w = {.theta_s = c->theta_s, .W_s = c->W_s};
    if (reduced) w.reduced = c->packed;
    else w.W_x = c->wx.deq, w.W_r = c->wr.deq;
    st = fr_rnn_forward_f32(&seq, &w, &cfg, call);
    free(work), free(r_T);
    return st;
}

// ---- the GRU -------------------------------------------------------------------
typedef struct {
    fr_gru_config cfg;
    float *x, *h0, *b, *b_hn;
    rweight wx, wh;
    void *packed;
} gru_case;

static gru_case gru_make(int type, int64_t T, int64_t B, int64_t I, int64_t H, int lbr,
                         int reverse, const int64_t *lengths) {
    gru_case c = {.cfg = {.T = T, .B = B, .I = I, .H = H, .linear_before_reset = lbr,
                          .reverse = reverse, .lengths = lengths, .reduced = type}};
    float *W_x = randv((size_t)(3 * H * I), -0.3f, 0.3f); // (3H, I)
    float *W_h = randv((size_t)(3 * H * H), -0.2f, 0.2f); // (3H, H)
    c.wx = reduce(W_x, 3 * H, I, type);
    c.wh = reduce(W_h, 3 * H, H, type);
    free(W_x), free(W_h);
    c.x = randv((size_t)(T * B * I), -1.f, 1.f);           // (T, B, I)
    c.h0 = randv((size_t)(B * H), -0.5f, 0.5f);            // (B, H)
    c.b = randv((size_t)(3 * H), -0.2f, 0.2f);             // (3H)
    c.b_hn = lbr ? randv((size_t)H, -0.2f, 0.2f) : NULL;   // (H)
    size_t bytes = 0;
    CHECK(fr_gru_qpacked_size(&bytes, &c.cfg) == FR_OK && bytes > 0, "fr_gru_qpacked_size");
    c.packed = aligned_bytes(bytes);
    CHECK(fr_gru_qpack(c.packed, c.wx.q, c.wx.scale, c.wh.q, c.wh.scale, &c.cfg) == FR_OK,
          "fr_gru_qpack");
    return c;
}
static void gru_free(gru_case *c) {
    free(c->x), free(c->h0), free(c->b), free(c->b_hn), free(c->packed);
    rfree(&c->wx), rfree(&c->wh);
}

// h (T, B, H) then h_T (B, H) into out.
static int gru_run(const gru_case *c, int reduced, const fr_call *call, float *out) {
    fr_gru_config cfg = c->cfg;
    if (!reduced) cfg.reduced = 0;
    const int64_t T = cfg.T, B = cfg.B, H = cfg.H;
    size_t n_work = 0;
    int st = fr_gru_workspace_size(&n_work, &cfg, 0);
    if (st != FR_OK) return st;
    float *work = malloc((n_work ? n_work : 1) * sizeof(float));
    fr_gru_forward_seq_f32 seq = {.h_seq = out, .h_T = out + T * B * H, .work = work,
                                  .x = c->x, .h0 = c->h0};
    fr_gru_weights_f32 w = {.b = c->b, .b_hn = c->b_hn};
    if (reduced) w.reduced = c->packed;
    else w.W_x = c->wx.deq, w.W_h = c->wh.deq;
    st = fr_gru_forward_f32(&seq, &w, &cfg, call);
    free(work);
    return st;
}

// ---- one case on every path ------------------------------------------------------
typedef int (*run_fn)(const void *c, int reduced, const fr_call *call, float *out);
static int lstm_run_v(const void *c, int r, const fr_call *k, float *o) { return lstm_run(c, r, k, o); }
static int rnn_run_v(const void *c, int r, const fr_call *k, float *o) { return rnn_run(c, r, k, o); }
static int gru_run_v(const void *c, int r, const fr_call *k, float *o) { return gru_run(c, r, k, o); }

// The activations rounded to bf16 (relative 2^-9) or quantised to int8 (half a step of
// max|row| / 127) move each sum by at most that share of sum |w a|; over a few steps of
// these small nets the outputs stay within `bound` of float32 (and are not equal to it).
static void check_case(const char *name, int type, const void *c, run_fn run, size_t n_out,
                       float bound) {
    float *ref = malloc(n_out * sizeof(float)), *first = malloc(n_out * sizeof(float));
    float *got = malloc(n_out * sizeof(float));
    fr_call one = threads_call(1);
    CHECK(run(c, 0, &one, ref) == FR_OK, "%s: float forward", name);
    const int saved = fr_qget_isa(type);
    int have_first = 0;
    for (int isa = 0; isa < FR_QISA_COUNT; isa++) {
        const char *path = fr_qisa_name(type, isa);
        if (!fr_qisa_supported(type, isa)) {
            printf("[skip] %s on %s: needs %s, which this CPU lacks\n", name, path,
                   fr_qisa_needs(type, isa));
            continue;
        }
        CHECK(fr_qset_isa(type, isa) == FR_OK, "fr_qset_isa");
        CHECK(run(c, 1, &one, got) == FR_OK, "%s on %s: reduced forward", name, path);
        const float d = maxdiff(got, ref, n_out);
        CHECK(d > 0 && d < bound, "%s on %s: max |reduced - float32| = %.3g, bound %.3g", name,
              path, d, bound);
        const int pairs = type == FR_QT_BF16 && isa == FR_QISA_TOP; // vdpbf16ps' own order
        if (!have_first) {
            memcpy(first, got, n_out * sizeof(float));
            have_first = 1;
        } else if (pairs) {
            const float e = maxdiff(got, first, n_out);
            CHECK(e < 0.1f * d + 1e-6f, "%s on %s: %.3g from the k-order paths (float32 "
                  "is %.3g away)", name, path, e, d);
        } else {
            CHECK(memcmp(got, first, n_out * sizeof(float)) == 0,
                  "%s on %s: not bit for bit the generic path's", name, path);
        }
        fr_call three = threads_call(3);
        float *t3 = malloc(n_out * sizeof(float));
        CHECK(run(c, 1, &three, t3) == FR_OK, "%s on %s: 3 threads", name, path);
        CHECK(memcmp(got, t3, n_out * sizeof(float)) == 0, "%s on %s: 3 threads differ from 1",
              name, path);
        free(t3);
        printf("[ ok ] %-34s %-10s max |reduced - float32| %.2e\n", name, path, d);
    }
    fr_qset_isa(type, saved);
    threads_call(1);
    free(ref), free(first), free(got);
}

static void test_lstm_cases(void) {
    static const int64_t lens[5] = {7, 0, 3, 7, 5};
    static const char *tn[3] = {"", "bf16", "int8"};
    for (int type = FR_QT_BF16; type <= FR_QT_INT8; type++) {
        const float bound = type == FR_QT_BF16 ? 2e-2f : 5e-2f;
        struct { const char *what; int64_t P; int peep, rev; const int64_t *len; } v[3] = {
            {"lstm diagonal, projection, lengths", 9, FR_PEEP_DIAGONAL, 0, lens},
            {"lstm full peepholes, reverse", 0, FR_PEEP_FULL, 1, NULL},
            {"lstm no peepholes, lengths", 0, FR_PEEP_NONE, 0, lens},
        };
        for (int i = 0; i < 3; i++) {
            lstm_case c = lstm_make(type, 7, 5, 37, 70, v[i].P, v[i].peep, v[i].rev, v[i].len);
            const int64_t R = v[i].P ? v[i].P : 70;
            char name[96];
            snprintf(name, sizeof name, "%s %s", tn[type], v[i].what);
            check_case(name, type, &c, lstm_run_v, (size_t)(7 * 5 * R + 5 * 70), bound);
            lstm_free(&c);
        }
        { // 17 rows: the bf16 AVX2 path's recurrent product on its wide tile
            lstm_case c = lstm_make(type, 5, 17, 37, 70, 0, FR_PEEP_DIAGONAL, 0, NULL);
            char name[96];
            snprintf(name, sizeof name, "%s lstm diagonal, batch 17", tn[type]);
            check_case(name, type, &c, lstm_run_v, (size_t)(5 * 17 * 70 + 17 * 70), bound);
            lstm_free(&c);
        }
        for (int sf = 0; sf <= 1; sf++) {
            rnn_case c = rnn_make(type, 7, 5, 37, 70, sf, lens);
            char name[96];
            snprintf(name, sizeof name, "%s rnn%s, lengths", tn[type], sf ? " state feedback" : "");
            check_case(name, type, &c, rnn_run_v, (size_t)(7 * 5 * 70 + 5 * 70), bound);
            rnn_free(&c);
        }
        for (int lbr = 0; lbr <= 1; lbr++) {
            gru_case c = gru_make(type, 7, 5, 37, 70, lbr, !lbr, lens);
            char name[96];
            snprintf(name, sizeof name, "%s gru%s, lengths", tn[type],
                     lbr ? " linear_before_reset" : " reset first, reverse");
            check_case(name, type, &c, gru_run_v, (size_t)(7 * 5 * 70 + 5 * 70), bound);
            gru_free(&c);
        }
    }
}

static void test_errors(void) {
    lstm_case c = lstm_make(FR_QT_INT8, 3, 2, 5, 4, 0, FR_PEEP_DIAGONAL, 0, NULL);
    fr_call one = threads_call(1);
    size_t n = 0;
    fr_lstm_config bad = c.cfg;
    bad.reduced = 3;
    CHECK(fr_lstm_qpacked_size(&n, &bad) == FR_EINVAL, "reduced = 3");
    bad.reduced = 0;
    CHECK(fr_lstm_qpacked_size(&n, &bad) == FR_EINVAL, "qpacked size without reduced");
    CHECK(fr_lstm_qpack(c.packed, c.wx.q, NULL, c.wv.q, c.wv.scale, NULL, NULL, &c.cfg) ==
          FR_ENULL, "int8 without scales");
    CHECK(fr_lstm_qpack((char *)c.packed + 1, c.wx.q, c.wx.scale, c.wv.q, c.wv.scale, NULL, NULL,
                        &c.cfg) == FR_EINVAL, "misaligned pack buffer");
    ((int8_t *)c.wx.q)[3] = -128; // outside the symmetric grid
    void *tmp = aligned_bytes(4096);
    CHECK(fr_lstm_qpack(tmp, c.wx.q, c.wx.scale, c.wv.q, c.wv.scale, NULL, NULL, &c.cfg) ==
          FR_EINVAL, "an int8 weight of -128");
    free(tmp);
    // the forward: reduced weights missing, a training call, float64
    float out[3 * 2 * 4 + 2 * 4], y_T[8], acts[4096], work[4096];
    fr_lstm_forward_seq_f32 seq = {.y_seq = out, .s_T = out + 24, .y_T = y_T, .work = work,
                                   .x = c.x, .s0 = c.s0, .y0 = c.y0};
    fr_lstm_weights_f32 w = {.b = c.b, .W_s = c.W_s};
    CHECK(fr_lstm_forward_f32(&seq, &w, &c.cfg, &one) == FR_ENULL, "no reduced weights");
    w.reduced = c.packed;
    seq.acts = acts;
    CHECK(fr_lstm_forward_f32(&seq, &w, &c.cfg, &one) == FR_EINVAL, "reduced training call");
    double d[64] = {0};
    fr_lstm_forward_seq_f64 s64 = {.y_seq = d, .s_T = d, .y_T = d, .work = d, .x = d, .s0 = d,
                                   .y0 = d};
    fr_lstm_weights_f64 w64 = {.b = d, .W_s = d, .reduced = c.packed};
    CHECK(fr_lstm_forward_f64(&s64, &w64, &c.cfg, &one) == FR_EINVAL, "reduced float64");
    lstm_free(&c);

    rnn_case r = rnn_make(FR_QT_BF16, 3, 2, 5, 4, 1, NULL);
    fr_rnn_config rb = r.cfg;
    rb.reduced = -1;
    CHECK(fr_rnn_qpacked_size(&n, &rb) == FR_EINVAL, "rnn reduced = -1");
    CHECK(fr_rnn_qpack(r.packed, NULL, NULL, r.wr.q, NULL, &r.cfg) == FR_ENULL, "rnn no W_x");
    rb = r.cfg;
    rb.reduced = FR_QT_INT8;
    rb.I = FR_S8_MAX_K + 1; // int32 sums of more products could overflow
    CHECK(fr_rnn_qpacked_size(&n, &rb) == FR_EOVERFLOW, "int8 K beyond FR_S8_MAX_K");
    fr_rnn_forward_seq_f32 rs = {.r_seq = out, .s_T = out + 24, .r_T = y_T, .work = work,
                                 .x = r.x, .s0 = r.s0, .r0 = r.r0};
    fr_rnn_weights_f32 rw = {.theta_s = r.theta_s, .W_s = r.W_s};
    CHECK(fr_rnn_forward_f32(&rs, &rw, &r.cfg, &one) == FR_ENULL, "rnn no reduced weights");
    rw.reduced = r.packed;
    rs.acts = acts;
    CHECK(fr_rnn_forward_f32(&rs, &rw, &r.cfg, &one) == FR_EINVAL, "rnn reduced training call");
    rnn_free(&r);

    gru_case g = gru_make(FR_QT_INT8, 3, 2, 5, 4, 0, 0, NULL);
    fr_gru_config gb = g.cfg;
    gb.reduced = 3;
    CHECK(fr_gru_qpacked_size(&n, &gb) == FR_EINVAL, "gru reduced = 3");
    CHECK(fr_gru_qpack(g.packed, g.wx.q, NULL, g.wh.q, g.wh.scale, &g.cfg) == FR_ENULL,
          "gru int8 without scales");
    gb = g.cfg;
    gb.I = FR_S8_MAX_K + 1;
    CHECK(fr_gru_qpacked_size(&n, &gb) == FR_EOVERFLOW, "gru int8 K beyond FR_S8_MAX_K");
    fr_gru_forward_seq_f32 gs = {.h_seq = out, .h_T = y_T, .work = work, .x = g.x, .h0 = g.h0};
    fr_gru_weights_f32 gw = {.b = g.b};
    CHECK(fr_gru_forward_f32(&gs, &gw, &g.cfg, &one) == FR_ENULL, "gru no reduced weights");
    gw.reduced = g.packed;
    gs.acts = acts;
    CHECK(fr_gru_forward_f32(&gs, &gw, &g.cfg, &one) == FR_EINVAL, "gru reduced training call");
    fr_gru_forward_seq_f64 g64 = {.h_seq = d, .h_T = d, .work = d, .x = d, .h0 = d};
    fr_gru_weights_f64 gw64 = {.b = d, .reduced = g.packed};
    CHECK(fr_gru_forward_f64(&g64, &gw64, &g.cfg, &one) == FR_EINVAL, "gru reduced float64");
    gru_free(&g);
}

int main(void) {
    test_lstm_cases();
    test_errors();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
