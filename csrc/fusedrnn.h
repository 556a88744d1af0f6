/* fusedrnn: fused CPU kernels for the canonical RNN and the Vanilla LSTM of
 * A. Sherstinsky, "Fundamentals of RNN and LSTM Network", Physica D 404 (2020),
 * and for the GRU (Cho et al. 2014).
 * Equations and names: docs/equations.md (sections cited as §1, §2, §8).
 *
 * Conventions
 *   - All buffers are row-major and contiguous; sequences are time-major (T, B, .).
 *   - A call takes named-pointer structs: outputs first, then inputs, then sizes
 *     (the config) and the options of the call (fr_call, may be NULL).
 *   - *_backward ACCUMULATES (+=) into every gradient buffer it is given, and
 *     only once its time loop has finished: an interrupted call leaves them as
 *     they were.
 *   - Workspace sizes come from *_workspace_size; the caller allocates once.
 *   - Every function returns FR_OK or a negative fr_status; nothing aborts.
 *   - float32 and float64 share one body (lstm_body.h / rnn_body.h / gru_body.h). */
#ifndef FUSEDRNN_H
#define FUSEDRNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FR_OK = 0,
    FR_EINVAL = -1,    /* a size is < 1 or an option is unknown */
    FR_EOVERFLOW = -2, /* a size product overflows size_t, or a GEMM dim exceeds INT_MAX */
    FR_ENULL = -3,     /* a required pointer is NULL */
    FR_EINTR = -4      /* the call's interrupt callback asked it to stop */
} fr_status;

const char *fr_status_str(int status);

/* ---- GEMM provider -------------------------------------------------------
 * Fortran-convention BLAS (as scipy.linalg.cython_blas exports them). With
 * NULL the kernel uses its own portable GEMM. Set once at import. */
typedef void (*fr_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                            float *alpha, float *a, int *lda, float *b, int *ldb,
                            float *beta, float *c, int *ldc);
typedef void (*fr_dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                            double *alpha, double *a, int *lda, double *b, int *ldb,
                            double *beta, double *c, int *ldc);
void fr_set_blas(fr_sgemm_fn sgemm, fr_dgemm_fn dgemm);
/* 1 when a BLAS is installed, 0 for the portable GEMM. */
int fr_have_blas(void);

/* Row-major C (M, N) = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T.
 * lda/ldb/ldc are row strides of the stored matrices. Exposed for tests. */
int fr_gemm_f32(float *C, const float *A, const float *B, int transA, int transB,
                int64_t M, int64_t N, int64_t K, float alpha, float beta,
                int64_t lda, int64_t ldb, int64_t ldc);
int fr_gemm_f64(double *C, const double *A, const double *B, int transA, int transB,
                int64_t M, int64_t N, int64_t K, double alpha, double beta,
                int64_t lda, int64_t ldb, int64_t ldc);

/* ---- options of one call ----------------------------------------------------
 * interrupt: called from the calling thread about every FR_INTERRUPT_NS of the
 * call (a cheap clock decides; never inside a step); a nonzero return stops the
 * call with FR_EINTR: outputs are then undefined and gradients untouched.
 * max_threads: at most this many threads for the call (0: the process setting). */
#define FR_INTERRUPT_NS 50000000 /* 50 ms */
typedef int (*fr_interrupt_fn)(void *ctx);
typedef struct {
    int max_threads;
    fr_interrupt_fn interrupt; /* or NULL */
    void *interrupt_ctx;
} fr_call;

/* ---- warping functions (§9) ----------------------------------------------------
 * G_c and G_d of the LSTM, G of the RNN, f and g of the GRU: the activations
 * ONNX defines for its recurrent operators, with their parameters alpha and beta
 * (unused ones are ignored). FR_ACT_DEFAULT (0, what a zeroed configuration
 * holds) is the cell's own choice: sigmoid for the gates of the LSTM and the
 * GRU, tanh everywhere else. */
enum {
    FR_ACT_DEFAULT = 0,
    FR_ACT_SIGMOID,          /* 1 / (1 + e^-a) */
    FR_ACT_TANH,             /* tanh(a) */
    FR_ACT_RELU,             /* max(a, 0) */
    FR_ACT_HARD_SIGMOID,     /* clip(alpha a + beta, 0, 1) */
    FR_ACT_AFFINE,           /* alpha a + beta */
    FR_ACT_LEAKY_RELU,       /* a >= 0 ? a : alpha a */
    FR_ACT_THRESHOLDED_RELU, /* a > alpha ? a : 0 */
    FR_ACT_SCALED_TANH,      /* alpha tanh(beta a) */
    FR_ACT_ELU,              /* a >= 0 ? a : alpha (e^a - 1) */
    FR_ACT_SOFTSIGN,         /* a / (1 + |a|) */
    FR_ACT_SOFTPLUS,         /* log(1 + e^a) */
    FR_ACT_COUNT
};
typedef struct {
    int kind;            /* FR_ACT_* */
    double alpha, beta;  /* finite */
} fr_activation;

/* ---- LSTM: Vanilla (§2) and augmented (§3) --------------------------------
 * One layer, one direction. Fused gate order (cu, cs, du, cr) = PyTorch (i, f, g, o).
 * R = P with the projection, else H: the width of the output and of the
 * recurrent feedback (v[n], or q[n] = W_qv v[n]).
 * Variable lengths: row b is active at steps n < lengths[b]. An inactive step
 * holds the row's state (s[n] = s[prev], y[n] = y[prev]) so that y doubles as
 * the recurrent carry; callers zero the padded outputs they show. The final
 * state is the one after the last visited step (n = T-1, or 0 in reverse),
 * which the hold makes the state at each row's own last valid step. */
enum { FR_PEEP_NONE = 0, FR_PEEP_DIAGONAL = 1, FR_PEEP_FULL = 2 };

typedef struct {
    int64_t T;  /* time steps */
    int64_t B;  /* batch rows */
    int64_t I;  /* input width d_x (times the context window size) */
    int64_t H;  /* state size d_s */
    int64_t P;  /* projection size d_q, 0 for none (then R = H) */
    int peepholes;            /* FR_PEEP_* */
    int coupled_gates;        /* g_cs = 1 - g_cu (§3c, ONNX input_forget) */
    int reverse;              /* visit the steps T-1 .. 0 */
    double cell_clip;         /* > 0: s[n] clipped to [-c, c] (§3c); 0: off */
    double accumulation_clip; /* > 0: every a_* clipped to [-c, c] (§3c); 0: off */
    const int64_t *lengths;   /* (B) valid steps of each row in [0, T], or NULL: all T */
    int reduced;              /* FR_REDUCED_*: inference with the weight products in bf16 or
                                 int8 (float32 only), the weights in w->reduced */
    fr_activation gate;       /* G_c of the three gates (ONNX f), default sigmoid */
    fr_activation cell;       /* G_d of the data update u (ONNX g), default tanh */
    fr_activation output;     /* G_d of the readout r = G_d(s[n]) (ONNX h), default tanh */
} fr_lstm_config;

/* Reduced precision for inference (docs/equations.md §7): the products of the
 * weights W_x, W_v, W_qv (RNN: W_x, W_r) with the signals that feed them in
 * bfloat16 or int8, everything else float32. */
enum { FR_REDUCED_NONE = 0, FR_REDUCED_BF16 = 1, FR_REDUCED_INT8 = 2 };

/* The structs of a call list their fields once, for both precisions
 * (FR_*_FIELDS(real)); each is then typedef'd as *_f32 and *_f64 below. */

/* A cell's weights. packed: the forward's weights packed by fr_lstm_pack_*
 * for this I, H, P (then the forward packs nothing), or NULL. */
#define FR_LSTM_WEIGHTS_FIELDS(real)                                               \
    const real *W_x;    /* (4H, I) [W_xcu; W_xcs; W_xdu; W_xcr] */                 \
    const real *W_v;    /* (4H, R) [W_vcu; ...] (W_q* with projection) */          \
    const real *b;      /* (4H) [b_cu; b_cs; b_du; b_cr] */                        \
    const real *W_s;    /* diagonal (3, H) [w_scu; w_scs; w_scr]; full (3, H, H); or NULL */ \
    const real *W_qv;   /* (P, H) projection, or NULL */                           \
    const real *packed; /* (fr_lstm_packed_size) from fr_lstm_pack_*, or NULL */      \
    const void *reduced; /* cfg->reduced: (fr_lstm_qpacked_size bytes) from fr_lstm_qpack */
typedef struct { FR_LSTM_WEIGHTS_FIELDS(float) } fr_lstm_weights_f32;
typedef struct { FR_LSTM_WEIGHTS_FIELDS(double) } fr_lstm_weights_f64;

/* Gradients, shaped like the weights; every one is accumulated (+=). */
#define FR_LSTM_GRADS_FIELDS(real)                                                 \
    real *dW_x;  /* (4H, I) */                                                     \
    real *dW_v;  /* (4H, R) */                                                     \
    real *db;    /* (4H) */                                                        \
    real *dW_s;  /* like W_s, or NULL without peepholes */                         \
    real *dW_qv; /* (P, H) or NULL */
typedef struct { FR_LSTM_GRADS_FIELDS(float) } fr_lstm_grads_f32;
typedef struct { FR_LSTM_GRADS_FIELDS(double) } fr_lstm_grads_f64;

/* The sequence of a forward. acts == NULL selects inference (nothing stored,
 * the workspace is O(B*H)); otherwise acts gets fr_lstm_acts_size elements. */
#define FR_LSTM_FORWARD_SEQ_FIELDS(real)                                           \
    real *y_seq;    /* (T, B, R) out: outputs = recurrent carry */                 \
    real *s_T;      /* (B, H) out: final state */                                  \
    real *y_T;      /* (B, R) out: final output */                                 \
    real *acts;     /* out, training: the activation store; NULL: inference */     \
    real *work;     /* workspace (fr_lstm_workspace_size) */                       \
    const real *x;  /* (T, B, I) */                                                \
    const real *s0; /* (B, H) s[-1] */                                             \
    const real *y0; /* (B, R) v[-1] (q[-1] with projection) */
typedef struct { FR_LSTM_FORWARD_SEQ_FIELDS(float) } fr_lstm_forward_seq_f32;
typedef struct { FR_LSTM_FORWARD_SEQ_FIELDS(double) } fr_lstm_forward_seq_f64;

/* The sequence of a backward through the last training forward. dx, ds0, dy0
 * may be NULL (not wanted), dy_seq, ds_T, dy_T may be NULL (zero); dy at
 * inactive (padded) steps is ignored. */
#define FR_LSTM_BACKWARD_SEQ_FIELDS(real)                                          \
    real *dx;           /* (T, B, I) += */                                         \
    real *ds0;          /* (B, H) += dE/ds[-1] */                                  \
    real *dy0;          /* (B, R) += dE/dy[-1] */                                  \
    real *work;         /* workspace (fr_lstm_backward_workspace_size) */          \
    const real *dy_seq; /* (T, B, R) dE/dy[n] from above */                        \
    const real *ds_T;   /* (B, H) dE/d(final s) */                                 \
    const real *dy_T;   /* (B, R) dE/d(final y) */                                 \
    const real *acts;   /* the forward's activation store */                       \
    const real *x;      /* (T, B, I) the forward's input */                        \
    const real *y_seq;  /* (T, B, R) the forward's outputs */                      \
    const real *s0;     /* (B, H) */                                               \
    const real *y0;     /* (B, R) */
typedef struct { FR_LSTM_BACKWARD_SEQ_FIELDS(float) } fr_lstm_backward_seq_f32;
typedef struct { FR_LSTM_BACKWARD_SEQ_FIELDS(double) } fr_lstm_backward_seq_f64;

/* Elements of the activation store a training forward fills and the backward
 * reads: gates (T, B, 4H) (warped; the accumulations a_* when
 * accumulation_clip is on or a warping function is not the default), states s (T, B, H), and with projection the
 * unprojected outputs v (T, B, H). */
int fr_lstm_acts_size(size_t *n_elems, const fr_lstm_config *cfg);
/* Elements of scratch space for a forward (training or inference) or backward. */
int fr_lstm_workspace_size(size_t *n_elems, const fr_lstm_config *cfg, int training);
int fr_lstm_backward_workspace_size(size_t *n_elems, const fr_lstm_config *cfg);
/* Elements of a cell's packed forward weights (depend on I, H, P only). */
int fr_lstm_packed_size(size_t *n_elems, const fr_lstm_config *cfg);

/* Pack a cell's forward weights once (W_x, W_v, W_qv of w; w->packed is
 * ignored), for forwards that pass the result as weights.packed: a stream of
 * T = 1 calls then packs nothing per step. Not with full peepholes (FR_EINVAL). */
int fr_lstm_pack_f32(float *packed, const fr_lstm_weights_f32 *w, const fr_lstm_config *cfg);
int fr_lstm_pack_f64(double *packed, const fr_lstm_weights_f64 *w, const fr_lstm_config *cfg);

/* Bytes of a cell's reduced-precision forward weights (cfg->reduced set). */
int fr_lstm_qpacked_size(size_t *bytes, const fr_lstm_config *cfg);
/* Pack them (for weights.reduced; the buffer 4-byte aligned, 64 is best): W_x (4H, I),
 * W_v (4H, R), W_qv (P, H) or NULL, stored as bf16 bits (uint16) or int8 with one
 * float32 scale per row (W_x_scale (4H), W_v_scale (4H), W_qv_scale (P); NULL for
 * bf16). FR_EINVAL for an int8 weight of -128. Peepholes (full ones too) stay
 * float32 and come from weights.W_s. */
int fr_lstm_qpack(void *packed, const void *W_x, const float *W_x_scale, const void *W_v,
                  const float *W_v_scale, const void *W_qv, const float *W_qv_scale,
                  const fr_lstm_config *cfg);

int fr_lstm_forward_f32(const fr_lstm_forward_seq_f32 *seq, const fr_lstm_weights_f32 *w,
                        const fr_lstm_config *cfg, const fr_call *call);
int fr_lstm_forward_f64(const fr_lstm_forward_seq_f64 *seq, const fr_lstm_weights_f64 *w,
                        const fr_lstm_config *cfg, const fr_call *call);
int fr_lstm_backward_f32(const fr_lstm_grads_f32 *g, const fr_lstm_backward_seq_f32 *seq,
                         const fr_lstm_weights_f32 *w, const fr_lstm_config *cfg,
                         const fr_call *call);
int fr_lstm_backward_f64(const fr_lstm_grads_f64 *g, const fr_lstm_backward_seq_f64 *seq,
                         const fr_lstm_weights_f64 *w, const fr_lstm_config *cfg,
                         const fr_call *call);

/* ---- Canonical RNN (§1) ----------------------------------------------------
 *   s[n] = W_s s[n-1] + W_r r[n-1] + W_x x[n] + theta_s,  r[n] = G(clip(s[n], -c, c))
 * (1.9); G = tanh by default, the state s keeps the unclipped value. */
typedef struct {
    int64_t T, B, I, H;
    int state_feedback;     /* 0: W_s = 0 (standard RNN), 1: W_s used */
    int reverse;            /* visit the steps T-1 .. 0 */
    const int64_t *lengths; /* (B) valid steps per row in [0, T], or NULL; padding holds
                               the state as for the LSTM */
    double accumulation_clip; /* > 0: G sees clip(s[n], -c, c) (ONNX's clip); 0: off */
    fr_activation activation; /* G, default tanh */
    int reduced;            /* FR_REDUCED_*: inference with W_x x[n], W_r r[n-1] in bf16 or
                               int8 (float32 only), those weights in w->reduced; W_s s[n-1]
                               stays float32 */
} fr_rnn_config;

#define FR_RNN_WEIGHTS_FIELDS(real)                                                \
    const real *W_x;     /* (H, I) */                                              \
    const real *W_r;     /* (H, H) */                                              \
    const real *theta_s; /* (H) */                                                 \
    const real *W_s;     /* (H, H), or NULL without state feedback */          \
    const void *reduced; /* cfg->reduced: (fr_rnn_qpacked_size bytes) from fr_rnn_qpack; \
                            W_x, W_r are then not read */                        \
    const real *packed;  /* float: (fr_rnn_packed_size) from fr_rnn_pack_* for this I, \
                            H (the forward then packs nothing and runs on the     \
                            micro-kernel), or NULL; the backward ignores it */
typedef struct { FR_RNN_WEIGHTS_FIELDS(float) } fr_rnn_weights_f32;
typedef struct { FR_RNN_WEIGHTS_FIELDS(double) } fr_rnn_weights_f64;

#define FR_RNN_GRADS_FIELDS(real)                                                  \
    real *dW_x;     /* (H, I) += */                                                \
    real *dW_r;     /* (H, H) += */                                                \
    real *dtheta_s; /* (H) += */                                                   \
    real *dW_s;     /* (H, H) += or NULL */
typedef struct { FR_RNN_GRADS_FIELDS(float) } fr_rnn_grads_f32;
typedef struct { FR_RNN_GRADS_FIELDS(double) } fr_rnn_grads_f64;

#define FR_RNN_FORWARD_SEQ_FIELDS(real)                                            \
    real *r_seq;    /* (T, B, H) out: readouts r[n] */                             \
    real *s_T;      /* (B, H) out */                                               \
    real *r_T;      /* (B, H) out */                                               \
    real *acts;     /* out, training: the store (fr_rnn_acts_size); NULL: inference */ \
    real *work;     /* workspace */                                                \
    const real *x;  /* (T, B, I) */                                                \
    const real *s0; /* (B, H) */                                                   \
    const real *r0; /* (B, H) */
typedef struct { FR_RNN_FORWARD_SEQ_FIELDS(float) } fr_rnn_forward_seq_f32;
typedef struct { FR_RNN_FORWARD_SEQ_FIELDS(double) } fr_rnn_forward_seq_f64;

#define FR_RNN_BACKWARD_SEQ_FIELDS(real)                                           \
    real *dx;           /* (T, B, I) += or NULL */                                 \
    real *ds0;          /* (B, H) += or NULL */                                    \
    real *dr0;          /* (B, H) += or NULL */                                    \
    real *work;         /* workspace */                                            \
    const real *dr_seq; /* (T, B, H) or NULL */                                    \
    const real *ds_T;   /* (B, H) or NULL */                                       \
    const real *dr_T;   /* (B, H) or NULL */                                       \
    const real *acts;   /* the forward's store (NULL without state feedback) */    \
    const real *x;      /* (T, B, I) */                                            \
    const real *r_seq;  /* (T, B, H) */                                            \
    const real *s0;     /* (B, H) */                                               \
    const real *r0;     /* (B, H) */
typedef struct { FR_RNN_BACKWARD_SEQ_FIELDS(float) } fr_rnn_backward_seq_f32;
typedef struct { FR_RNN_BACKWARD_SEQ_FIELDS(double) } fr_rnn_backward_seq_f64;

/* Activation store: states s (T, B, H) with state feedback, the accumulation
 * clip or G other than tanh, else nothing. */
int fr_rnn_acts_size(size_t *n_elems, const fr_rnn_config *cfg);
int fr_rnn_workspace_size(size_t *n_elems, const fr_rnn_config *cfg, int training);
int fr_rnn_backward_workspace_size(size_t *n_elems, const fr_rnn_config *cfg);

/* Bytes of a cell's reduced-precision weights (cfg->reduced set). */
/* Elements of a cell's packed float forward weights (depend on I, H, state_feedback). */
int fr_rnn_packed_size(size_t *n_elems, const fr_rnn_config *cfg);
/* Pack a cell's forward weights W_x, W_r (and W_s with state feedback) once
 * (w->packed, w->reduced and theta_s are ignored), for forwards that pass the
 * result as weights.packed. */
int fr_rnn_pack_f32(float *packed, const fr_rnn_weights_f32 *w, const fr_rnn_config *cfg);
int fr_rnn_pack_f64(double *packed, const fr_rnn_weights_f64 *w, const fr_rnn_config *cfg);

int fr_rnn_qpacked_size(size_t *bytes, const fr_rnn_config *cfg);
/* Pack them (for weights.reduced; the buffer 4-byte aligned, 64 is best): W_x (H, I)
 * and W_r (H, H) as bf16 bits (uint16), or int8 with one float32 scale per row
 * (W_x_scale (H), W_r_scale (H); NULL for bf16). FR_EINVAL for an int8 weight of
 * -128. W_s stays float32 and comes from weights.W_s. */
int fr_rnn_qpack(void *packed, const void *W_x, const float *W_x_scale, const void *W_r,
                 const float *W_r_scale, const fr_rnn_config *cfg);

int fr_rnn_forward_f32(const fr_rnn_forward_seq_f32 *seq, const fr_rnn_weights_f32 *w,
                       const fr_rnn_config *cfg, const fr_call *call);
int fr_rnn_forward_f64(const fr_rnn_forward_seq_f64 *seq, const fr_rnn_weights_f64 *w,
                       const fr_rnn_config *cfg, const fr_call *call);
int fr_rnn_backward_f32(const fr_rnn_grads_f32 *g, const fr_rnn_backward_seq_f32 *seq,
                        const fr_rnn_weights_f32 *w, const fr_rnn_config *cfg,
                        const fr_call *call);
int fr_rnn_backward_f64(const fr_rnn_grads_f64 *g, const fr_rnn_backward_seq_f64 *seq,
                        const fr_rnn_weights_f64 *w, const fr_rnn_config *cfg,
                        const fr_call *call);

/* ---- GRU (§8) ----------------------------------------------------------------
 * One layer, one direction. Fused gate order (r, z, n) = PyTorch's. The state h
 * is the output and the recurrent feedback; padding holds it, as for the LSTM.
 * linear_before_reset = 1: n = tanh(W_xn x + b_n + r (W_hn h + b_hn)) (8.3)
 * (torch, Keras reset_after); 0: n = tanh(W_xn x + W_hn (r h) + b_n) (8.4)
 * (ONNX's default), which needs a second recurrent GEMM per step. */
typedef struct {
    int64_t T, B, I, H;
    int linear_before_reset; /* 1: (8.3), 0: (8.4) */
    int reverse;             /* visit the steps T-1 .. 0 */
    const int64_t *lengths;  /* (B) valid steps per row in [0, T], or NULL */
    int reduced;             /* FR_REDUCED_*: inference with W_x x[n], W_h* h[n-1] (and
                                W_hn c[n]) in bf16 or int8 (float32 only), those weights in
                                w->reduced */
    double accumulation_clip; /* > 0: a_r, a_z, a_n clipped to [-c, c] before warping
                                 (ONNX's clip, §9); 0: off */
    fr_activation gate;       /* f of g_r, g_z (ONNX f), default sigmoid */
    fr_activation cell;       /* g of the candidate u (ONNX g), default tanh */
} fr_gru_config;

#define FR_GRU_WEIGHTS_FIELDS(real)                                                \
    const real *W_x;  /* (3H, I) [W_xr; W_xz; W_xn] */                             \
    const real *W_h;  /* (3H, H) [W_hr; W_hz; W_hn] */                             \
    const real *b;    /* (3H) [b_r; b_z; b_n] */                                   \
    const real *b_hn; /* (H) with linear_before_reset, else NULL */              \
    const void *reduced; /* cfg->reduced: (fr_gru_qpacked_size bytes) from fr_gru_qpack; \
                            W_x, W_h are then not read */                        \
    const real *packed;  /* float: (fr_gru_packed_size) from fr_gru_pack_* for this I, \
                            H (the forward then packs nothing and runs on the     \
                            micro-kernel), or NULL; the backward ignores it */
typedef struct { FR_GRU_WEIGHTS_FIELDS(float) } fr_gru_weights_f32;
typedef struct { FR_GRU_WEIGHTS_FIELDS(double) } fr_gru_weights_f64;

#define FR_GRU_GRADS_FIELDS(real)                                                  \
    real *dW_x;  /* (3H, I) += */                                                  \
    real *dW_h;  /* (3H, H) += */                                                  \
    real *db;    /* (3H) += */                                                     \
    real *db_hn; /* (H) += with linear_before_reset, else NULL */
typedef struct { FR_GRU_GRADS_FIELDS(float) } fr_gru_grads_f32;
typedef struct { FR_GRU_GRADS_FIELDS(double) } fr_gru_grads_f64;

#define FR_GRU_FORWARD_SEQ_FIELDS(real)                                            \
    real *h_seq;    /* (T, B, H) out: h[n] = outputs = recurrent carry */          \
    real *h_T;      /* (B, H) out: final state */                                  \
    real *acts;     /* out, training: the store (fr_gru_acts_size); NULL: inference */ \
    real *work;     /* workspace (fr_gru_workspace_size) */                        \
    const real *x;  /* (T, B, I) */                                                \
    const real *h0; /* (B, H) h[-1] */
typedef struct { FR_GRU_FORWARD_SEQ_FIELDS(float) } fr_gru_forward_seq_f32;
typedef struct { FR_GRU_FORWARD_SEQ_FIELDS(double) } fr_gru_forward_seq_f64;

#define FR_GRU_BACKWARD_SEQ_FIELDS(real)                                           \
    real *dx;           /* (T, B, I) += or NULL */                                 \
    real *dh0;          /* (B, H) += dE/dh[-1], or NULL */                         \
    real *work;         /* workspace (fr_gru_backward_workspace_size) */           \
    const real *dh_seq; /* (T, B, H) dE/dh[n] from above, or NULL */               \
    const real *dh_T;   /* (B, H) dE/d(final h), or NULL */                        \
    const real *acts;   /* the forward's activation store */                       \
    const real *x;      /* (T, B, I) the forward's input */                        \
    const real *h_seq;  /* (T, B, H) the forward's outputs */                      \
    const real *h0;     /* (B, H) */
typedef struct { FR_GRU_BACKWARD_SEQ_FIELDS(float) } fr_gru_backward_seq_f32;
typedef struct { FR_GRU_BACKWARD_SEQ_FIELDS(double) } fr_gru_backward_seq_f64;

/* Activation store: (T, B, 4H) per row [g_r | g_z | u | c] (c[n] of (8.3) or (8.4));
 * with the clip or a warping function other than the default, [a_r | a_z | a_n | c]
 * (the accumulations before the clip, whose derivatives the backward takes). */
int fr_gru_acts_size(size_t *n_elems, const fr_gru_config *cfg);
int fr_gru_workspace_size(size_t *n_elems, const fr_gru_config *cfg, int training);
int fr_gru_backward_workspace_size(size_t *n_elems, const fr_gru_config *cfg);

/* Bytes of a cell's reduced-precision weights (cfg->reduced set). */
int fr_gru_qpacked_size(size_t *bytes, const fr_gru_config *cfg);
/* Pack them (for weights.reduced; the buffer 4-byte aligned, 64 is best): W_x (3H, I)
 * and W_h (3H, H) as bf16 bits (uint16), or int8 with one float32 scale per row
 * (W_x_scale (3H), W_h_scale (3H); NULL for bf16). FR_EINVAL for an int8 weight of
 * -128. The biases stay float32 and come from weights.b, weights.b_hn. */
int fr_gru_qpack(void *packed, const void *W_x, const float *W_x_scale, const void *W_h,
                 const float *W_h_scale, const fr_gru_config *cfg);

/* Elements of a cell's packed float forward weights (depend on I, H only). */
int fr_gru_packed_size(size_t *n_elems, const fr_gru_config *cfg);
/* Pack a cell's forward weights W_x, W_h once (w->packed, w->reduced and the
 * biases are ignored), for forwards that pass the result as weights.packed. */
int fr_gru_pack_f32(float *packed, const fr_gru_weights_f32 *w, const fr_gru_config *cfg);
int fr_gru_pack_f64(double *packed, const fr_gru_weights_f64 *w, const fr_gru_config *cfg);

int fr_gru_forward_f32(const fr_gru_forward_seq_f32 *seq, const fr_gru_weights_f32 *w,
                       const fr_gru_config *cfg, const fr_call *call);
int fr_gru_forward_f64(const fr_gru_forward_seq_f64 *seq, const fr_gru_weights_f64 *w,
                       const fr_gru_config *cfg, const fr_call *call);
int fr_gru_backward_f32(const fr_gru_grads_f32 *g, const fr_gru_backward_seq_f32 *seq,
                        const fr_gru_weights_f32 *w, const fr_gru_config *cfg,
                        const fr_call *call);
int fr_gru_backward_f64(const fr_gru_grads_f64 *g, const fr_gru_backward_seq_f64 *seq,
                        const fr_gru_weights_f64 *w, const fr_gru_config *cfg,
                        const fr_call *call);

#ifdef __cplusplus
}
#endif
#endif /* FUSEDRNN_H */
