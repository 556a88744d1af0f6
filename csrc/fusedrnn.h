/* fusedrnn: fused CPU kernels for the canonical RNN and the Vanilla LSTM of
 * A. Sherstinsky, "Fundamentals of RNN and LSTM Network", Physica D 404 (2020).
 * Equations and names: docs/equations.md (sections cited as §1, §2).
 *
 * Conventions
 *   - All buffers are row-major and contiguous; sequences are time-major (T, B, .).
 *   - Functions take outputs first, then inputs, then sizes (llm.c / haste style).
 *   - *_backward ACCUMULATES (+=) into every gradient buffer it is given.
 *   - Workspace sizes come from *_workspace_size; the caller allocates once.
 *   - Every function returns FR_OK or a negative fr_status; nothing aborts.
 *   - float32 and float64 share one body (lstm_body.h / rnn_body.h). */
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
    FR_ENULL = -3      /* a required pointer is NULL */
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

/* ---- LSTM: Vanilla (§2) and augmented (§3) --------------------------------
 * One layer, one direction. Fused gate order (cu, cs, du, cr) = PyTorch (i, f, g, o).
 * R = P with the projection, else H: the width of the output and of the
 * recurrent feedback (v[n], or q[n] = W_qv v[n]).
 *   W_x  (4H, I) = [W_xcu; W_xcs; W_xdu; W_xcr]   (I is K*d_x for a context window,
 *                                                   the caller unfolds the input)
 *   W_v  (4H, R) = [W_vcu; W_vcs; W_vdu; W_vcr]   (W_q* with projection)
 *   b    (4H)    = [b_cu; b_cs; b_du; b_cr]
 *   W_s  diagonal: (3, H) = [w_scu; w_scs; w_scr]; full: (3, H, H); NULL: none
 *   W_qv (P, H) projection, or NULL
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
    int packed_max_rows;      /* batches of at most this many rows (and no full peepholes)
                                 run on the kernel's packed-weight micro-kernel, the steps
                                 split over num_threads threads; others call the GEMM
                                 provider step by step (0: never packed) */
    int num_threads;          /* threads of the packed path; 0 or 1: the caller's only */
} fr_lstm_config;

/* Tuning: a team-path call uses a thread only for at least this many flops of
 * recurrent GEMM per step (default 2e5); 0 lets tests split tiny problems. */
void fr_set_min_step_flops(double flops);
/* Tuning: a team-path backward runs its gradient GEMMs inside the team up to
 * T B = rows (default: always), beyond on the GEMM provider after the team.
 * Returns the old value. */
int64_t fr_set_team_grad_rows(int64_t rows);

/* Elements of the activation store a training forward fills and the backward
 * reads: gates (T, B, 4H) (warped; the accumulations a_* when
 * accumulation_clip is on), states s (T, B, H), and with projection the
 * unprojected outputs v (T, B, H). */
int fr_lstm_acts_size(size_t *n_elems, const fr_lstm_config *cfg);
/* Elements of scratch space for a forward (training or inference) or backward. */
int fr_lstm_workspace_size(size_t *n_elems, const fr_lstm_config *cfg, int training);
int fr_lstm_backward_workspace_size(size_t *n_elems, const fr_lstm_config *cfg);

/* Forward over T steps. acts == NULL selects inference (nothing stored, the
 * workspace is O(B*H)); otherwise acts gets fr_lstm_acts_size elements. */
#define FR_LSTM_FORWARD_ARGS(real)                                              \
    real *y_seq,       /* (T, B, R) outputs = recurrent carry */               \
    real *s_T,         /* (B, H) final state */                                \
    real *y_T,         /* (B, R) final output */                               \
    real *acts,        /* training: activation store, or NULL */               \
    real *work,        /* workspace */                                         \
    const real *x,     /* (T, B, I) */                                         \
    const real *s0,    /* (B, H) s[-1] */                                      \
    const real *y0,    /* (B, R) v[-1] (q[-1] with projection) */              \
    const real *W_x, const real *W_v, const real *b, const real *W_s,         \
    const real *W_qv,                                                          \
    const fr_lstm_config *cfg
int fr_lstm_forward_f32(FR_LSTM_FORWARD_ARGS(float));
int fr_lstm_forward_f64(FR_LSTM_FORWARD_ARGS(double));

/* Backward through the last training forward. Every output is +=; dx, ds0,
 * dy0 may be NULL (not wanted); dy_seq, ds_T, dy_T may be NULL (zero). dy at
 * inactive (padded) steps is ignored. */
#define FR_LSTM_BACKWARD_ARGS(real)                                             \
    real *dx,          /* (T, B, I) */                                         \
    real *ds0,         /* (B, H) dE/ds[-1] */                                  \
    real *dy0,         /* (B, R) dE/dy[-1] */                                  \
    real *dW_x, real *dW_v, real *db, real *dW_s, real *dW_qv, /* like weights */ \
    real *work,        /* backward workspace */                                \
    const real *dy_seq, /* (T, B, R) dE/dy[n] from above */                    \
    const real *ds_T,  /* (B, H) dE/d(final s) */                              \
    const real *dy_T,  /* (B, R) dE/d(final y) */                              \
    const real *acts,  /* activation store of the forward */                  \
    const real *x, const real *y_seq, const real *s0, const real *y0,        \
    const real *W_x, const real *W_v, const real *W_s, const real *W_qv,     \
    const fr_lstm_config *cfg
int fr_lstm_backward_f32(FR_LSTM_BACKWARD_ARGS(float));
int fr_lstm_backward_f64(FR_LSTM_BACKWARD_ARGS(double));

/* ---- Canonical RNN (§1) ----------------------------------------------------
 *   s[n] = W_s s[n-1] + W_r r[n-1] + W_x x[n] + theta_s,  r[n] = tanh(s[n])
 *   W_x (H, I), W_r (H, H), theta_s (H), W_s (H, H) or NULL (no state feedback) */
typedef struct {
    int64_t T, B, I, H;
    int state_feedback;     /* 0: W_s = 0 (standard RNN), 1: W_s used */
    int reverse;            /* visit the steps T-1 .. 0 */
    const int64_t *lengths; /* (B) valid steps per row in [0, T], or NULL; padding holds
                               the state as for the LSTM */
} fr_rnn_config;

/* Activation store: states s (T, B, H). */
int fr_rnn_acts_size(size_t *n_elems, const fr_rnn_config *cfg);
int fr_rnn_workspace_size(size_t *n_elems, const fr_rnn_config *cfg, int training);
int fr_rnn_backward_workspace_size(size_t *n_elems, const fr_rnn_config *cfg);

#define FR_RNN_FORWARD_ARGS(real)                                               \
    real *r_seq,       /* (T, B, H) readouts r[n] */                           \
    real *s_T,         /* (B, H) */                                            \
    real *r_T,         /* (B, H) */                                            \
    real *acts,        /* training: (T, B, H) states, or NULL */               \
    real *work,                                                                \
    const real *x,     /* (T, B, I) */                                         \
    const real *s0, const real *r0, /* (B, H) */                              \
    const real *W_x, const real *W_r, const real *theta_s, const real *W_s,   \
    const fr_rnn_config *cfg
int fr_rnn_forward_f32(FR_RNN_FORWARD_ARGS(float));
int fr_rnn_forward_f64(FR_RNN_FORWARD_ARGS(double));

#define FR_RNN_BACKWARD_ARGS(real)                                              \
    real *dx, real *ds0, real *dr0,                                            \
    real *dW_x, real *dW_r, real *dtheta_s, real *dW_s,                        \
    real *work,                                                                \
    const real *dr_seq, const real *ds_T, const real *dr_T,                    \
    const real *acts,                                                          \
    const real *x, const real *r_seq, const real *s0, const real *r0,        \
    const real *W_x, const real *W_r, const real *W_s,                       \
    const fr_rnn_config *cfg
int fr_rnn_backward_f32(FR_RNN_BACKWARD_ARGS(float));
int fr_rnn_backward_f64(FR_RNN_BACKWARD_ARGS(double));

#ifdef __cplusplus
}
#endif
#endif /* FUSEDRNN_H */
