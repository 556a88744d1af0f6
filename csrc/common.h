/* Internal helpers shared by the kernel files (not part of the public API). */
#ifndef FUSEDRNN_COMMON_H
#define FUSEDRNN_COMMON_H

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fusedrnn.h"
#include "plan.h"
#include "vmath.h"

/* The element-wise passes are compiled for AVX-512, AVX2 and baseline x86-64
 * and picked at load time (ifunc), so a default build runs on any x86-64. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FR_NO_TARGET_CLONES)
#define FR_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FR_TARGET_CLONES
#endif

#define FR_CAT_(a, b) a##b
#define FR_CAT(a, b) FR_CAT_(a, b)

/* out = a * b, or FR_EOVERFLOW. Every size product in the kernel goes through
 * this (or fr_mul3), so no byte count can wrap. */
static inline int fr_mul(size_t *out, size_t a, size_t b) {
    if (__builtin_mul_overflow(a, b, out)) return FR_EOVERFLOW;
    return FR_OK;
}
static inline int fr_mul3(size_t *out, size_t a, size_t b, size_t c) {
    size_t ab;
    if (fr_mul(&ab, a, b) != FR_OK) return FR_EOVERFLOW;
    return fr_mul(out, ab, c);
}
static inline int fr_add(size_t *out, size_t a, size_t b) {
    if (__builtin_add_overflow(a, b, out)) return FR_EOVERFLOW;
    return FR_OK;
}
/* Element counts must also be addressable in bytes (x 8 for float64). */
#define FR_MAX_ELEMS ((size_t)PTRDIFF_MAX / 8)

/* GEMM dimensions reach BLAS as 32-bit int. */
static inline int fr_fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

#define FR_CHECK(expr)                  \
    do {                                \
        int fr_rc_ = (expr);            \
        if (fr_rc_ != FR_OK) return fr_rc_; \
    } while (0)

/* Bodies specialised by a constant flag at each call (one loop per variant). */
#define FR_ALWAYS_INLINE static inline __attribute__((always_inline))

/* ---- warping functions (§9) ------------------------------------------------ */
/* A configuration's activation is valid: a known kind, finite parameters. */
static inline int fr_activation_ok(const fr_activation *f) {
    return f->kind >= FR_ACT_DEFAULT && f->kind < FR_ACT_COUNT && isfinite(f->alpha) &&
           isfinite(f->beta);
}
/* f with FR_ACT_DEFAULT replaced by the cell's default kind. */
static inline fr_activation fr_activation_or(fr_activation f, int default_kind) {
    if (f.kind == FR_ACT_DEFAULT) f.kind = default_kind;
    return f;
}
/* The LSTM's warping functions, defaults resolved; general: not sigmoid, tanh,
 * tanh, so the store keeps the accumulations and the backward their derivatives. */
typedef struct {
    fr_activation gate, cell, output;
    int general;
} fr_lstm_warps;
static inline fr_lstm_warps fr_lstm_warps_of(const fr_lstm_config *cfg) {
    fr_lstm_warps w;
    w.gate = fr_activation_or(cfg->gate, FR_ACT_SIGMOID);
    w.cell = fr_activation_or(cfg->cell, FR_ACT_TANH);
    w.output = fr_activation_or(cfg->output, FR_ACT_TANH);
    w.general = w.gate.kind != FR_ACT_SIGMOID || w.cell.kind != FR_ACT_TANH ||
                w.output.kind != FR_ACT_TANH;
    return w;
}
/* The RNN's G, default resolved; general: not tanh or clipped, so the store
 * keeps s[n] and the backward takes G'(clip(s[n])) from it. */
static inline fr_activation fr_rnn_warp_of(const fr_rnn_config *cfg) {
    return fr_activation_or(cfg->activation, FR_ACT_TANH);
}
static inline int fr_rnn_general(const fr_rnn_config *cfg) {
    return fr_rnn_warp_of(cfg).kind != FR_ACT_TANH || cfg->accumulation_clip > 0;
}

/* The GRU's f and g, defaults resolved; keep: the clip or not sigmoid, tanh, so
 * the store keeps the accumulations a_r, a_z, a_n and the backward recomputes the
 * gates and their derivatives from them. */
typedef struct {
    fr_activation gate, cell;
    int keep;
} fr_gru_warps;
static inline fr_gru_warps fr_gru_warps_of(const fr_gru_config *cfg) {
    fr_gru_warps w = {fr_activation_or(cfg->gate, FR_ACT_SIGMOID),
                      fr_activation_or(cfg->cell, FR_ACT_TANH), 0};
    w.keep = cfg->accumulation_clip > 0 || w.gate.kind != FR_ACT_SIGMOID ||
             w.cell.kind != FR_ACT_TANH;
    return w;
}

/* Row b is active at step n: not past its length (lengths NULL: all T steps). */
static inline int fr_active(const int64_t *lengths, int64_t b, int64_t n) {
    return lengths == NULL || n < lengths[b];
}

/* Steps per chunk of the input GEMM in inference mode: the x-side product is
 * hoisted over a chunk of steps so the workspace stays O(B*H) while the GEMM
 * still has ~256 rows. */
static inline int64_t fr_inference_chunk(int64_t T, int64_t B) {
    int64_t tc = (256 + B - 1) / B;
    if (tc < 4) tc = 4;
    return tc < T ? tc : T;
}

/* ---- one buffer, named regions ("sizes and point", llm.c) ----------------------
 * A cell fills n[i], the elements of each region of a buffer, in one function;
 * the size query sums them (fr_regions_total) and the kernel points into the
 * caller's buffer with the same counts (fr_regions_point), so the two cannot
 * drift apart. In a workspace every region starts on a cache line (64 bytes;
 * FR_ALIGN_SLACK elements of room each); the activation store is packed
 * tight, its layout being part of the contract. A region of 0 elements is NULL. */
#define FR_ALIGN_SLACK ((size_t)16) /* elements: >= 64 bytes of float or double */
static inline void *fr_align64(void *p) {
    return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}
static inline int fr_regions_total(size_t *total, const size_t *n, int count, int aligned) {
    size_t sum = 0;
    for (int i = 0; i < count; i++) {
        if (n[i] == 0) continue;
        FR_CHECK(fr_add(&sum, sum, n[i]));
        if (aligned) FR_CHECK(fr_add(&sum, sum, FR_ALIGN_SLACK));
    }
    if (sum > FR_MAX_ELEMS) return FR_EOVERFLOW;
    *total = sum;
    return FR_OK;
}
static inline void fr_regions_point(void **ptr, const size_t *n, int count, void *base,
                                    size_t elem, int aligned) {
    char *p = base;
    for (int i = 0; i < count; i++) {
        if (n[i] == 0) {
            ptr[i] = NULL;
            continue;
        }
        if (aligned) p = fr_align64(p);
        ptr[i] = p;
        p += n[i] * elem;
    }
}

/* A workspace's regions: ptr[i] into the caller's `base` with the counts n[]
 * (aligned), or FR_ENULL when the table needs room and base is NULL. */
static inline int fr_workspace_point(void **ptr, const size_t *n, int count, void *base,
                                     size_t elem) {
    size_t total;
    FR_CHECK(fr_regions_total(&total, n, count, 1));
    if (total > 0 && base == NULL) return FR_ENULL;
    fr_regions_point(ptr, n, count, base, elem, 1);
    return FR_OK;
}

/* The checks every cell's configuration shares: the sizes, the direction, the
 * lengths, and that the GEMM dimensions (T B rows, `gates` H-wide blocks a row:
 * 4 for the LSTM and the GRU, 1 for the RNN) reach BLAS as int. */
static inline int fr_check_sequence(int64_t T, int64_t B, int64_t I, int64_t H, size_t gates,
                                    int reverse, const int64_t *lengths) {
    if (T < 1 || B < 1 || I < 1 || H < 1) return FR_EINVAL;
    if (reverse != 0 && reverse != 1) return FR_EINVAL;
    if (lengths)
        for (int64_t b = 0; b < B; b++)
            if (lengths[b] < 0 || lengths[b] > T) return FR_EINVAL;
    size_t TB, G;
    FR_CHECK(fr_mul(&TB, (size_t)T, (size_t)B));
    FR_CHECK(fr_mul(&G, gates, (size_t)H));
    if (!fr_fits_int((int64_t)TB) || !fr_fits_int((int64_t)G) || !fr_fits_int(I))
        return FR_EOVERFLOW;
    return FR_OK;
}

/* ---- interrupting a long call ---------------------------------------------------
 * Member 0 of a call polls once per step (fr_poll_step: a cheap clock read every
 * 8th step); when FR_INTERRUPT_NS have passed it asks the caller's callback and
 * raises `stop`, which every member reads after the step's barrier, so all stop
 * at the same step. */
typedef struct {
    fr_interrupt_fn fn; /* NULL: never */
    void *ctx;
    int64_t next_ns;
    unsigned tick;
    int stop; /* written by member 0 before a barrier, read by all after it */
} fr_poll;
int64_t fr_clock_ns(void); /* a monotonic clock, coarse and cheap where there is one */
static inline void fr_poll_init(fr_poll *p, const fr_call *call) {
    p->fn = call ? call->interrupt : NULL;
    p->ctx = call ? call->interrupt_ctx : NULL;
    p->tick = 0;
    p->stop = 0;
    p->next_ns = p->fn ? fr_clock_ns() + FR_INTERRUPT_NS : 0;
}
/* Member 0, after a piece of work: may set p->stop. */
static inline void fr_poll_check(fr_poll *p, int id) {
    if (p->fn == NULL || id != 0) return;
    const int64_t now = fr_clock_ns();
    if (now < p->next_ns) return;
    p->next_ns = now + FR_INTERRUPT_NS;
    if (p->fn(p->ctx)) __atomic_store_n(&p->stop, 1, __ATOMIC_RELAXED);
}
/* Member 0, once per step: the clock is read every 8th. */
static inline void fr_poll_step(fr_poll *p, int id) {
    if (p->fn != NULL && id == 0 && (++p->tick & 7) == 0) fr_poll_check(p, id);
}
static inline int fr_poll_stopped(const fr_poll *p) {
    return __atomic_load_n(&p->stop, __ATOMIC_RELAXED);
}
/* Steps per piece of a long phase that runs as one GEMM otherwise (the input
 * GEMM of a training forward, the gradient GEMMs): pieces of about 2e9 flops
 * (tens of ms) when the call can be interrupted, else all T steps at once. A
 * piece is a whole number of `unit` steps. */
static inline int64_t fr_piece_steps(const fr_poll *p, int64_t T, double flops_per_step,
                                     int64_t unit) {
    if (p->fn == NULL || flops_per_step * (double)T <= 4e9) return T;
    double k = 2e9 / (flops_per_step * (double)unit);
    int64_t steps = (k < 1 ? 1 : (int64_t)k) * unit;
    return steps < T ? steps : T;
}
/* Steps per piece of the gradient GEMMs, whose depth K is the piece's rows (steps
 * x B): whole pieces of at least FR_GRAD_PIECE_ROWS rows, since each piece reads
 * and writes the weight gradients once more (T = 50, B = 64, I = 512, H = 1024:
 * pieces of one step, 64 rows, made the backward about 15% slower than one GEMM
 * over all T B rows; pieces of 16 steps cost nothing measurable). */
#define FR_GRAD_PIECE_ROWS 1024
static inline int64_t fr_grad_piece_steps(const fr_poll *p, int64_t T, int64_t B,
                                          double flops_per_step) {
    const int64_t unit = B > 0 ? (FR_GRAD_PIECE_ROWS + B - 1) / B : 1;
    return fr_piece_steps(p, T, flops_per_step, unit);
}

/* Steps per x-side GEMM of a forward call (the LSTM's and the GRU's): chunks of
 * the inference workspace, or all T steps of a training call at once (in pieces
 * when the call can be interrupted; whole inference chunks, so that both see
 * the same GEMMs). */
static inline int64_t fr_input_steps(const fr_poll *p, int64_t T, int64_t B, int training,
                                     double flops_per_step) {
    const int64_t chunk = fr_inference_chunk(T, B);
    return training ? fr_piece_steps(p, T, flops_per_step, chunk) : chunk;
}

/* Copy `count` arrays (len[i] elements of `elem` bytes each, 0: none) one after
 * another into `save` (restore = 0), or from it back into them (restore = 1):
 * the weight gradients as they were, restored when a call is interrupted. */
static inline void fr_copy_arrays(void *save, void *const *arrays, const size_t *len, int count,
                                  size_t elem, int restore) {
    char *s = save;
    for (int i = 0; i < count; i++) {
        if (len[i] == 0) continue;
        if (restore) memcpy(arrays[i], s, len[i] * elem);
        else memcpy(s, arrays[i], len[i] * elem);
        s += len[i] * elem;
    }
}

/* The weight gradients a backward call changes, kept as they were when the call
 * can be interrupted (fr_keep) and put back when it is (fr_bwd_run). */
#define FR_KEPT_MAX 6
typedef struct {
    void *save;                 /* (sum of len) a workspace region, or NULL: nothing kept */
    void *arrays[FR_KEPT_MAX];  /* the gradients */
    size_t len[FR_KEPT_MAX];    /* elements of each (0: none) */
    int count;
    size_t elem;                /* sizeof(real) */
} fr_kept;
static inline void fr_keep(const fr_kept *k) {
    if (k->save) fr_copy_arrays(k->save, k->arrays, k->len, k->count, k->elem, 0);
}

/* A micro-kernel path's tile shapes, one tuple (max rows, main rows, the main
 * tile's panels, the panels of the 4-, 2- and 1-row tiles), read by field:
 * FR_TILE(MAXR, (12, 12, 1, 2, 4, 4)) is 12. */
#define FR_TILE(field, shape) FR_TILE_ARGS(FR_TILE_##field, shape)
#define FR_TILE_ARGS(f, args) f args
#define FR_TILE_MAXR(maxr, mr, mr_np, np4, np2, np1) maxr
#define FR_TILE_MR(maxr, mr, mr_np, np4, np2, np1) mr
#define FR_TILE_MR_NP(maxr, mr, mr_np, np4, np2, np1) mr_np
#define FR_TILE_4_NP(maxr, mr, mr_np, np4, np2, np1) np4
#define FR_TILE_2_NP(maxr, mr, mr_np, np4, np2, np1) np2
#define FR_TILE_1_NP(maxr, mr, mr_np, np4, np2, np1) np1

/* ---- packed-weight GEMM (ukernel.c) -------------------------------------------
 * Panels of FR_PW columns (128 bytes), contiguous along K. */
#define FR_PW(real) ((int64_t)(128 / sizeof(real)))
enum { FR_ISA_GENERIC = 0, FR_ISA_AVX2 = 1, FR_ISA_AVX512 = 2 };
static inline int64_t fr_packed_elems(int64_t N, int64_t K, int64_t pw) {
    return (N + pw - 1) / pw * pw * K; /* callers bound N, K first */
}
/* Packed weights start on a cache line (every workspace region does): a
 * 64-byte load across two lines costs two (a B = 1 step GEMM: 1.06 instead of
 * 0.66 us). Sizes are reckoned with 32-wide panels, enough for either precision. */
static inline size_t fr_pad32(int64_t n) { return (size_t)(n + 31) / 32 * 32; }
/* Wp: the (K, N) operand W (transposed: W is (N, K)) with row stride ldw, packed. */
void fr_pack_f32(float *Wp, const float *W, int transposed, int64_t N, int64_t K, int64_t ldw);
void fr_pack_f64(double *Wp, const double *W, int transposed, int64_t N, int64_t K, int64_t ldw);
/* C (M, N) = op(A) (M, K) . W (K, N) (+ C when beta1). op(A) = A with row stride
 * lda, or A^T of A (K, M) (ta = 1). W from fr_pack_* (ldw = 0), or row-major
 * with row stride ldw. */
void fr_ugemm_f32(float *C, int64_t ldc, const float *A, int64_t lda, int ta, const float *W,
                  int64_t ldw, int64_t M, int64_t N, int64_t K, int beta1);
void fr_ugemm_f64(double *C, int64_t ldc, const double *A, int64_t lda, int ta,
                  const double *W, int64_t ldw, int64_t M, int64_t N, int64_t K, int beta1);
int fr_best_isa(void);
int fr_get_isa(void);
int fr_set_isa(int isa); /* FR_ISA_*, at most fr_best_isa(); for tests and benchmarks */

/* ---- the GEMMs of a time loop ---------------------------------------------------
 * Every product a loop makes with a weight matrix goes through one entry of its
 * GEMM table: the weights row-major, and their panels when the plan runs the
 * loop on the micro-kernel. fr_wgemm_* then computes columns [c0, c0 + nc) of
 *     C (M, N) (+)= A (M, K) . op(W) (K, N)
 * from the panels (c0 on a panel edge), or with the GEMM provider (BLAS). */
#define FR_WMAT_FIELDS(real)                                                       \
    const real *W;      /* (N, K) when trans (the product uses W^T), else (K, N) */ \
    int64_t ld;         /* row stride of W */                                     \
    int trans;                                                                    \
    const real *packed; /* fr_pack_* panels of op(W), or NULL: the provider */     \
    const void *qpacked; /* reduced-precision panels (qgemm.h) per gate, or NULL */
typedef struct { FR_WMAT_FIELDS(float) } fr_wmat_f32;
typedef struct { FR_WMAT_FIELDS(double) } fr_wmat_f64;
int fr_wgemm_f32(float *C, int64_t ldc, const float *A, int64_t lda, const fr_wmat_f32 *W,
                 int64_t M, int64_t c0, int64_t nc, int64_t K, int beta1);
int fr_wgemm_f64(double *C, int64_t ldc, const double *A, int64_t lda, const fr_wmat_f64 *W,
                 int64_t M, int64_t c0, int64_t nc, int64_t K, int beta1);
/* The gradient GEMMs, which read activations in place: columns [c0, c0 + nc) of
 *     C (M, N) += op(A) (M, K) . Y (K, N)     (Y row-major, row stride ldy)
 * op(A) = A (M, K) with row stride lda, or A^T of A (K, M) (ta = 1); on the
 * micro-kernel when uk, else with the provider. */
int fr_agemm_f32(int uk, float *C, int64_t ldc, const float *A, int64_t lda, int ta,
                 const float *Y, int64_t ldy, int64_t M, int64_t c0, int64_t nc, int64_t K);
int fr_agemm_f64(int uk, double *C, int64_t ldc, const double *A, int64_t lda, int ta,
                 const double *Y, int64_t ldy, int64_t M, int64_t c0, int64_t nc, int64_t K);
/* The gate blocks of a gated cell (gemm_body.h): columns of gates q0 .. q0+nq-1,
 * units [h0, h0 + nh), from per-gate panels fr_pack_gates wrote. */
int fr_gates_gemm_f32(float *C, int64_t ldc, const float *A, int64_t lda, const fr_wmat_f32 *W,
                      int64_t M, int64_t K, int64_t H, int q0, int nq, int64_t h0, int64_t nh,
                      int beta1);
int fr_gates_gemm_f64(double *C, int64_t ldc, const double *A, int64_t lda, const fr_wmat_f64 *W,
                      int64_t M, int64_t K, int64_t H, int q0, int nq, int64_t h0, int64_t nh,
                      int beta1);
void fr_pack_gates_f32(float *Wp, const float *W, int gates, int64_t H, int64_t K, int64_t h0,
                       int64_t nh);
void fr_pack_gates_f64(double *Wp, const double *W, int gates, int64_t H, int64_t K, int64_t h0,
                       int64_t nh);
/* A recurrent weight's gradient over steps [t_lo, t_hi) (gemm_body.h). */
void fr_prev_gemm_f32(int uk, float *C, int64_t ldc, const float *A, int64_t lda, const float *Y0,
                      const float *Y, int64_t ldy, int64_t M, int64_t c0, int64_t nc, int64_t B,
                      int64_t T, int reverse, int64_t t_lo, int64_t t_hi);
void fr_prev_gemm_f64(int uk, double *C, int64_t ldc, const double *A, int64_t lda,
                      const double *Y0, const double *Y, int64_t ldy, int64_t M, int64_t c0,
                      int64_t nc, int64_t B, int64_t T, int reverse, int64_t t_lo, int64_t t_hi);

/* ---- a team of threads for one call (team.c) ---------------------------------
 * fr_team_run calls fn(ctx, id, n, team) on n members (id 0 is the caller) and
 * returns n, which may be smaller than asked when threads cannot be created (or
 * 1 where the platform has no threads here). fr_team_barrier waits for all n
 * members; with team == NULL (n == 1) it returns at once. */
#define FR_MAX_THREADS 64
typedef struct fr_team fr_team;
typedef void (*fr_team_fn)(void *ctx, int id, int n, fr_team *team);
int fr_team_run(int n, fr_team_fn fn, void *ctx);
void fr_team_barrier(fr_team *team);

/* [lo, hi) of member id's share of n_units, split in whole blocks of `block`. */
static inline void fr_share(int64_t *lo, int64_t *hi, int64_t n_units, int64_t block, int id,
                            int n) {
    const int64_t blocks = (n_units + block - 1) / block;
    const int64_t b0 = blocks * id / n, b1 = blocks * (id + 1) / n;
    *lo = b0 * block < n_units ? b0 * block : n_units;
    *hi = b1 * block < n_units ? b1 * block : n_units;
}

/* A forward call's run: its loop on `threads` members; FR_EINTR when interrupted. */
static inline int fr_fwd_run(int threads, fr_team_fn loop, void *ctx, const fr_poll *poll) {
    fr_team_run(threads, loop, ctx);
    return fr_poll_stopped(poll) ? FR_EINTR : FR_OK;
}

/* ---- a backward call (every cell) ------------------------------------------------
 * Its loop runs on the team, last step first; the gradient GEMMs over the rows
 * of all T steps run after the loop, in the team on the micro-kernel or after
 * the team on the provider, as the plan says, in pieces of `piece` steps when
 * the call can be interrupted. */
typedef struct {
    int pack;          /* the members pack their panels first (the micro-kernel path) */
    int grads_in_team; /* the gradient GEMMs on the micro-kernel, in the team */
    int64_t piece;     /* steps per piece of the gradient GEMMs */
    fr_poll poll;
} fr_bwd_state;
static inline void fr_bwd_start(fr_bwd_state *s, const fr_plan *plan, const fr_call *call,
                                int64_t T, int64_t B, double grad_flops_per_step) {
    s->pack = plan->ukernel;
    s->grads_in_team = plan->ukernel && plan->grads_in_team;
    fr_poll_init(&s->poll, call);
    s->piece = fr_grad_piece_steps(&s->poll, T, B, grad_flops_per_step);
}
/* The run: the loop on `threads` members, then, unless interrupted, grads(ctx)
 * (the gradient GEMMs on the provider; 0 when interrupted) when the plan keeps
 * them out of the team. An interrupted call puts the kept gradients back and
 * returns FR_EINTR. */
static inline int fr_bwd_run(int threads, fr_team_fn loop, void *ctx, fr_bwd_state *s,
                             int (*grads)(void *ctx), const fr_kept *kept) {
    if (fr_fwd_run(threads, loop, ctx, &s->poll) == FR_OK && !s->grads_in_team) grads(ctx);
    if (!fr_poll_stopped(&s->poll)) return FR_OK;
    if (kept->save) fr_copy_arrays(kept->save, kept->arrays, kept->len, kept->count, kept->elem, 1);
    return FR_EINTR;
}

/* The end of a step (or piece) of a team's loop: member 0 polls, all meet,
 * and all see whether to stop (1). */
static inline int fr_step_end(fr_poll *p, int id, fr_team *team) {
    fr_poll_step(p, id);
    fr_team_barrier(team);
    return fr_poll_stopped(p);
}
static inline int fr_piece_end(fr_poll *p, int id, fr_team *team) {
    fr_poll_check(p, id);
    fr_team_barrier(team);
    return fr_poll_stopped(p);
}

/* ---- reduced precision in a time loop (qgemm.h, docs/equations.md §7) ---------
 * A call's reduced GEMMs: the type and ISA path (taken once, so every member
 * runs the same one) and the shared buffers of the rounded or quantised
 * activations. */
typedef struct {
    int type, isa; /* FR_REDUCED_*, fr_qget_isa(type) */
    void *qx;      /* the x-side activations (a chunk of steps) */
    void *qr;      /* the recurrent (and projection) activations (one step) */
} fr_qcall;
/* Columns [c0, c0 + nc) of each of `gates` blocks of C (M, gates gate_ldc)
 * (+)= A (M, K) . W from per-block panels (gate_cols columns a block, each
 * block ceil(gate_cols / 32) panels of K; c0 on a panel edge). The members
 * first round or quantise their share of A's rows into the shared buffer qa,
 * meet, then each multiplies all rows by its panels: every member calls it,
 * and the numbers do not depend on the split. */
void fr_qgemm_cols(float *C, int64_t ldc, const float *A, int64_t lda, const void *panels,
                   const fr_qcall *qc, void *qa, int64_t M, int64_t K, int64_t c0, int64_t nc,
                   int gates, int64_t gate_cols, int64_t gate_ldc, int beta1, int id, int nth,
                   fr_team *team);
/* The same from a type-generic body (C, A of its `real`): only the float32 body
 * (ok = FR_REDUCED_OK) has reduced weights; the float64 config check refuses them. */
static inline void fr_qgemm_cols_if(int ok, void *C, int64_t ldc, const void *A, int64_t lda,
                                    const void *panels, const fr_qcall *qc, void *qa, int64_t M,
                                    int64_t K, int64_t c0, int64_t nc, int gates,
                                    int64_t gate_cols, int64_t gate_ldc, int beta1, int id,
                                    int nth, fr_team *team) {
    if (ok)
        fr_qgemm_cols((float *)C, ldc, (const float *)A, lda, panels, qc, qa, M, K, c0, nc,
                      gates, gate_cols, gate_ldc, beta1, id, nth, team);
}

/* A member's output columns of the gradient GEMMs: [i0, i0 + ni) of the
 * inputs I, [h0, h0 + nh) of the units H, [r0, r0 + nr) of the recurrent
 * inputs R (whole panels of pw columns). */
typedef struct {
    int64_t i0, ni, h0, nh, r0, nr;
} fr_grad_cols;
/* One piece of a cell's gradient GEMMs: steps [t0, t1), a member's columns. */
typedef void (*fr_grads_piece_fn)(void *ctx, const fr_grad_cols *cols, int64_t t0, int64_t t1,
                                  int uk);
/* Member id of nth's gradient GEMMs over all T steps, piece by piece, polling
 * and meeting between pieces; 0 when interrupted. */
static inline int fr_grads_run(fr_bwd_state *s, fr_grads_piece_fn piece, void *ctx, int64_t T,
                               int64_t I, int64_t H, int64_t R, int64_t pw, int id, int nth,
                               fr_team *team, int uk) {
    fr_grad_cols k;
    int64_t i1, h1, r1;
    fr_share(&k.i0, &i1, I, pw, id, nth);
    fr_share(&k.h0, &h1, H, pw, id, nth);
    fr_share(&k.r0, &r1, R, pw, id, nth);
    k.ni = i1 - k.i0, k.nh = h1 - k.h0, k.nr = r1 - k.r0;
    for (int64_t t0 = 0; t0 < T; t0 += s->piece) {
        const int64_t t1 = T - t0 < s->piece ? T : t0 + s->piece;
        piece(ctx, &k, t0, t1, uk);
        if (t1 < T && fr_piece_end(&s->poll, id, team)) return 0;
    }
    return 1;
}

#endif
