# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin bindings to the C kernel (csrc/). Checks buffer lengths, converts, calls
with the GIL released. Shapes and dtypes are validated by the Python layer; the
length checks here are a second line so that no caller can make the kernel
write out of bounds. The kernel calls take their buffers by keyword, as the C
structs name them.

A long call stays interruptible: the kernel asks `_interrupt` about every 50 ms
(which runs Python's signal handlers), stops when a handler raised (Ctrl-C:
KeyboardInterrupt), and the binding raises that exception; the weight
gradients are then as they were before the call."""
from libc.stdint cimport int64_t, uintptr_t
from libc.string cimport memset
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_ANY_CONTIGUOUS
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_GetName
from cpython.exc cimport PyErr_Occurred

cdef extern from "Python.h":
    # declared without `except`: the exception a handler raised stays pending
    # for the binding to raise once the kernel has returned
    int _check_signals "PyErr_CheckSignals" ()
import numpy as np

cdef extern from "fusedrnn.h" nogil:
    ctypedef void (*fr_sgemm_fn)(char*, char*, int*, int*, int*, float*, float*, int*,
                                 float*, int*, float*, float*, int*)
    ctypedef void (*fr_dgemm_fn)(char*, char*, int*, int*, int*, double*, double*, int*,
                                 double*, int*, double*, double*, int*)
    const char *fr_status_str(int status)
    void fr_set_blas(fr_sgemm_fn sgemm, fr_dgemm_fn dgemm)
    int fr_have_blas()
    int fr_gemm_f32(float *C, const float *A, const float *B, int tA, int tB, int64_t M,
                    int64_t N, int64_t K, float alpha, float beta, int64_t lda, int64_t ldb,
                    int64_t ldc)
    int fr_gemm_f64(double *C, const double *A, const double *B, int tA, int tB, int64_t M,
                    int64_t N, int64_t K, double alpha, double beta, int64_t lda, int64_t ldb,
                    int64_t ldc)


    ctypedef int (*fr_interrupt_fn)(void *ctx) noexcept nogil
    ctypedef struct fr_call:
        int max_threads
        fr_interrupt_fn interrupt
        void *interrupt_ctx

    ctypedef struct fr_activation:
        int kind
        double alpha, beta
    ctypedef struct fr_lstm_config:
        int64_t T, B, I, H, P
        int peepholes, coupled_gates, reverse
        double cell_clip, accumulation_clip
        const int64_t *lengths
        int reduced
        fr_activation gate, cell, output
    ctypedef struct fr_rnn_config:
        int64_t T, B, I, H
        int state_feedback, reverse
        const int64_t *lengths
        double accumulation_clip
        fr_activation activation
        int reduced
    ctypedef struct fr_lstm_weights_f32:
        const float *W_x
        const float *W_v
        const float *b
        const float *W_s
        const float *W_qv
        const float *packed
        const void *reduced
    ctypedef struct fr_lstm_weights_f64:
        const double *W_x
        const double *W_v
        const double *b
        const double *W_s
        const double *W_qv
        const double *packed
        const void *reduced
    ctypedef struct fr_lstm_grads_f32:
        float *dW_x
        float *dW_v
        float *db
        float *dW_s
        float *dW_qv
    ctypedef struct fr_lstm_grads_f64:
        double *dW_x
        double *dW_v
        double *db
        double *dW_s
        double *dW_qv
    ctypedef struct fr_lstm_forward_seq_f32:
        float *y_seq
        float *s_T
        float *y_T
        float *acts
        float *work
        const float *x
        const float *s0
        const float *y0
    ctypedef struct fr_lstm_forward_seq_f64:
        double *y_seq
        double *s_T
        double *y_T
        double *acts
        double *work
        const double *x
        const double *s0
        const double *y0
    ctypedef struct fr_lstm_backward_seq_f32:
        float *dx
        float *ds0
        float *dy0
        float *work
        const float *dy_seq
        const float *ds_T
        const float *dy_T
        const float *acts
        const float *x
        const float *y_seq
        const float *s0
        const float *y0
    ctypedef struct fr_lstm_backward_seq_f64:
        double *dx
        double *ds0
        double *dy0
        double *work
        const double *dy_seq
        const double *ds_T
        const double *dy_T
        const double *acts
        const double *x
        const double *y_seq
        const double *s0
        const double *y0
    ctypedef struct fr_rnn_weights_f32:
        const float *W_x
        const float *W_r
        const float *theta_s
        const float *W_s
        const void *reduced
        const float *packed
    ctypedef struct fr_rnn_weights_f64:
        const double *W_x
        const double *W_r
        const double *theta_s
        const double *W_s
        const void *reduced
        const double *packed
    ctypedef struct fr_rnn_grads_f32:
        float *dW_x
        float *dW_r
        float *dtheta_s
        float *dW_s
    ctypedef struct fr_rnn_grads_f64:
        double *dW_x
        double *dW_r
        double *dtheta_s
        double *dW_s
    ctypedef struct fr_rnn_forward_seq_f32:
        float *r_seq
        float *s_T
        float *r_T
        float *acts
        float *work
        const float *x
        const float *s0
        const float *r0
    ctypedef struct fr_rnn_forward_seq_f64:
        double *r_seq
        double *s_T
        double *r_T
        double *acts
        double *work
        const double *x
        const double *s0
        const double *r0
    ctypedef struct fr_rnn_backward_seq_f32:
        float *dx
        float *ds0
        float *dr0
        float *work
        const float *dr_seq
        const float *ds_T
        const float *dr_T
        const float *acts
        const float *x
        const float *r_seq
        const float *s0
        const float *r0
    ctypedef struct fr_rnn_backward_seq_f64:
        double *dx
        double *ds0
        double *dr0
        double *work
        const double *dr_seq
        const double *ds_T
        const double *dr_T
        const double *acts
        const double *x
        const double *r_seq
        const double *s0
        const double *r0

    int fr_lstm_acts_size(size_t *n, const fr_lstm_config *cfg)
    int fr_lstm_workspace_size(size_t *n, const fr_lstm_config *cfg, int training)
    int fr_lstm_backward_workspace_size(size_t *n, const fr_lstm_config *cfg)
    int fr_lstm_packed_size(size_t *n, const fr_lstm_config *cfg)
    int fr_lstm_qpacked_size(size_t *nbytes, const fr_lstm_config *cfg)
    int fr_lstm_qpack(void *packed, const void *W_x, const float *W_x_scale, const void *W_v,
                      const float *W_v_scale, const void *W_qv, const float *W_qv_scale,
                      const fr_lstm_config *cfg)
    int fr_lstm_pack_f32(float *packed, const fr_lstm_weights_f32 *w, const fr_lstm_config *cfg)
    int fr_lstm_pack_f64(double *packed, const fr_lstm_weights_f64 *w, const fr_lstm_config *cfg)
    int fr_lstm_forward_f32(const fr_lstm_forward_seq_f32 *seq, const fr_lstm_weights_f32 *w,
                            const fr_lstm_config *cfg, const fr_call *call)
    int fr_lstm_forward_f64(const fr_lstm_forward_seq_f64 *seq, const fr_lstm_weights_f64 *w,
                            const fr_lstm_config *cfg, const fr_call *call)
    int fr_lstm_backward_f32(const fr_lstm_grads_f32 *g, const fr_lstm_backward_seq_f32 *seq,
                             const fr_lstm_weights_f32 *w, const fr_lstm_config *cfg,
                             const fr_call *call)
    int fr_lstm_backward_f64(const fr_lstm_grads_f64 *g, const fr_lstm_backward_seq_f64 *seq,
                             const fr_lstm_weights_f64 *w, const fr_lstm_config *cfg,
                             const fr_call *call)
    int fr_rnn_acts_size(size_t *n, const fr_rnn_config *cfg)
    int fr_rnn_workspace_size(size_t *n, const fr_rnn_config *cfg, int training)
    int fr_rnn_backward_workspace_size(size_t *n, const fr_rnn_config *cfg)
    int fr_rnn_packed_size(size_t *n, const fr_rnn_config *cfg)
    int fr_rnn_pack_f32(float *packed, const fr_rnn_weights_f32 *w, const fr_rnn_config *cfg)
    int fr_rnn_pack_f64(double *packed, const fr_rnn_weights_f64 *w, const fr_rnn_config *cfg)
    int fr_rnn_qpacked_size(size_t *nbytes, const fr_rnn_config *cfg)
    int fr_rnn_qpack(void *packed, const void *W_x, const float *W_x_scale, const void *W_r,
                     const float *W_r_scale, const fr_rnn_config *cfg)
    int fr_rnn_forward_f32(const fr_rnn_forward_seq_f32 *seq, const fr_rnn_weights_f32 *w,
                           const fr_rnn_config *cfg, const fr_call *call)
    int fr_rnn_forward_f64(const fr_rnn_forward_seq_f64 *seq, const fr_rnn_weights_f64 *w,
                           const fr_rnn_config *cfg, const fr_call *call)
    int fr_rnn_backward_f32(const fr_rnn_grads_f32 *g, const fr_rnn_backward_seq_f32 *seq,
                            const fr_rnn_weights_f32 *w, const fr_rnn_config *cfg,
                            const fr_call *call)
    int fr_rnn_backward_f64(const fr_rnn_grads_f64 *g, const fr_rnn_backward_seq_f64 *seq,
                            const fr_rnn_weights_f64 *w, const fr_rnn_config *cfg,
                            const fr_call *call)
    ctypedef struct fr_gru_config:
        int64_t T, B, I, H
        int linear_before_reset, reverse
        const int64_t *lengths
        int reduced
        double accumulation_clip
        fr_activation gate, cell
    ctypedef struct fr_gru_weights_f32:
        const float *W_x
        const float *W_h
        const float *b
        const float *b_hn
        const void *reduced
        const float *packed
    ctypedef struct fr_gru_grads_f32:
        float *dW_x
        float *dW_h
        float *db
        float *db_hn
    ctypedef struct fr_gru_forward_seq_f32:
        float *h_seq
        float *h_T
        float *acts
        float *work
        const float *x
        const float *h0
    ctypedef struct fr_gru_backward_seq_f32:
        float *dx
        float *dh0
        float *work
        const float *dh_seq
        const float *dh_T
        const float *acts
        const float *x
        const float *h_seq
        const float *h0
    ctypedef struct fr_gru_weights_f64:
        const double *W_x
        const double *W_h
        const double *b
        const double *b_hn
        const void *reduced
        const double *packed
    ctypedef struct fr_gru_grads_f64:
        double *dW_x
        double *dW_h
        double *db
        double *db_hn
    ctypedef struct fr_gru_forward_seq_f64:
        double *h_seq
        double *h_T
        double *acts
        double *work
        const double *x
        const double *h0
    ctypedef struct fr_gru_backward_seq_f64:
        double *dx
        double *dh0
        double *work
        const double *dh_seq
        const double *dh_T
        const double *acts
        const double *x
        const double *h_seq
        const double *h0
    int fr_gru_acts_size(size_t *n, const fr_gru_config *cfg)
    int fr_gru_workspace_size(size_t *n, const fr_gru_config *cfg, int training)
    int fr_gru_backward_workspace_size(size_t *n, const fr_gru_config *cfg)
    int fr_gru_packed_size(size_t *n, const fr_gru_config *cfg)
    int fr_gru_pack_f32(float *packed, const fr_gru_weights_f32 *w, const fr_gru_config *cfg)
    int fr_gru_pack_f64(double *packed, const fr_gru_weights_f64 *w, const fr_gru_config *cfg)
    int fr_gru_qpacked_size(size_t *nbytes, const fr_gru_config *cfg)
    int fr_gru_qpack(void *packed, const void *W_x, const float *W_x_scale, const void *W_h,
                     const float *W_h_scale, const fr_gru_config *cfg)
    int fr_gru_forward_f32(const fr_gru_forward_seq_f32 *seq, const fr_gru_weights_f32 *w,
                           const fr_gru_config *cfg, const fr_call *call)
    int fr_gru_backward_f32(const fr_gru_grads_f32 *g, const fr_gru_backward_seq_f32 *seq,
                            const fr_gru_weights_f32 *w, const fr_gru_config *cfg,
                            const fr_call *call)
    int fr_gru_forward_f64(const fr_gru_forward_seq_f64 *seq, const fr_gru_weights_f64 *w,
                           const fr_gru_config *cfg, const fr_call *call)
    int fr_gru_backward_f64(const fr_gru_grads_f64 *g, const fr_gru_backward_seq_f64 *seq,
                            const fr_gru_weights_f64 *w, const fr_gru_config *cfg,
                            const fr_call *call)

cdef extern from "plan.h" nogil:
    ctypedef struct fr_tuning:
        int64_t threads, packed_max_rows, team_min_steps, min_step_flops, min_step_bytes
        int64_t grad_rows
    void fr_tuning_get(fr_tuning *t)
    int fr_tuning_set(const fr_tuning *t)
    int fr_plan_packs(int64_t T, int64_t B)

cdef extern from "common.h" nogil:
    int fr_best_isa()
    int fr_get_isa()
    int fr_set_isa(int isa)
    void fr_pack_f32(float *Wp, const float *W, int transposed, int64_t N, int64_t K, int64_t ldw)
    void fr_pack_f64(double *Wp, const double *W, int transposed, int64_t N, int64_t K,
                     int64_t ldw)
    void fr_ugemm_f32(float *C, int64_t ldc, const float *A, int64_t lda, int ta, const float *W,
                      int64_t ldw, int64_t M, int64_t N, int64_t K, int beta1)
    void fr_ugemm_f64(double *C, int64_t ldc, const double *A, int64_t lda, int ta,
                      const double *W, int64_t ldw, int64_t M, int64_t N, int64_t K, int beta1)

ctypedef fused real:
    float
    double

cdef fr_sgemm_fn _scipy_sgemm = NULL
cdef fr_dgemm_fn _scipy_dgemm = NULL


cdef void *_capsule_pointer(object capi, str name) except NULL:
    cap = capi[name]
    return PyCapsule_GetPointer(cap, PyCapsule_GetName(cap))


def _load_scipy_blas() -> bool:
    """Fetch sgemm/dgemm from scipy.linalg.cython_blas (no BLAS is linked at build time)."""
    global _scipy_sgemm, _scipy_dgemm
    try:
        from scipy.linalg import cython_blas
    except ImportError:
        return False
    capi = cython_blas.__pyx_capi__
    _scipy_sgemm = <fr_sgemm_fn>_capsule_pointer(capi, "sgemm")
    _scipy_dgemm = <fr_dgemm_fn>_capsule_pointer(capi, "dgemm")
    return True


def set_gemm(str backend) -> None:
    """Select the GEMM provider: "blas" (SciPy's BLAS) or "portable" (the kernel's own loops)."""
    if backend == "blas":
        if _scipy_sgemm == NULL and not _load_scipy_blas():
            raise RuntimeError("SciPy's BLAS is not available; use set_gemm('portable')")
        fr_set_blas(_scipy_sgemm, _scipy_dgemm)
    elif backend == "portable":
        fr_set_blas(NULL, NULL)
    else:
        raise ValueError(f"backend must be 'blas' or 'portable', got {backend!r}")


def get_gemm() -> str:
    """The GEMM provider in use: "blas" or "portable"."""
    return "blas" if fr_have_blas() else "portable"


cdef int _raise(int status, str what) except -1:
    if status == -4:  # interrupted: the exception a signal handler raised is pending
        if PyErr_Occurred():
            return -1
        raise KeyboardInterrupt
    msg = fr_status_str(status).decode()
    if status == -2:
        raise ValueError(f"{what}: sizes too large ({msg}); every GEMM dimension, including "
                         "T*B, must be below 2**31 and every buffer addressable")
    if status == -1:
        raise ValueError(f"{what}: {msg}")
    raise RuntimeError(f"{what}: kernel error {status} ({msg})")


cdef inline int _check(int status, str what) except -1:
    if status != 0:
        _raise(status, what)
    return 0


cdef inline void _need(Py_ssize_t have, size_t want, str name) except *:
    if <size_t>have < want:
        raise ValueError(f"internal: buffer {name} has {have} elements, kernel needs {want}")


cdef inline void _need_work(real[::1] work, size_t n_work) except *:
    """The workspace the kernel asked for (n_work elements; none needed when 0): given, and
    large enough."""
    if n_work:
        if work is None:
            raise ValueError("internal: workspace missing")
        _need(work.shape[0], n_work, "work")


cdef inline real *_ptr(real[::1] a) noexcept nogil:
    return NULL if a is None or a.shape[0] == 0 else &a[0]


cdef inline const real *_cptr(const real[::1] a) noexcept nogil:
    return NULL if a is None or a.shape[0] == 0 else &a[0]


# ---- GEMM (exposed for tests) ------------------------------------------------

def gemm(real[::1] C, const real[::1] A, const real[::1] Bm, bint tA, bint tB,
         int64_t M, int64_t N, int64_t K, double alpha=1.0, double beta=0.0):
    """Row-major C (M, N) = alpha op(A) op(B) + beta C on flat contiguous buffers."""
    cdef int64_t lda = M if tA else K
    cdef int64_t ldb = K if tB else N
    cdef int status
    if not (0 <= M < 2**31 and 0 <= N < 2**31 and 0 <= K < 2**31):
        raise ValueError(f"gemm: M, N, K must lie in [0, 2**31), got {M}, {N}, {K}")
    _need(C.shape[0], <size_t>(M * N), "C")
    _need(A.shape[0], <size_t>(M * K), "A")
    _need(Bm.shape[0], <size_t>(K * N), "B")
    with nogil:
        if real is float:
            status = fr_gemm_f32(&C[0], &A[0], &Bm[0], tA, tB, M, N, K, <float>alpha,
                                 <float>beta, lda, ldb, N)
        else:
            status = fr_gemm_f64(&C[0], &A[0], &Bm[0], tA, tB, M, N, K, alpha, beta, lda,
                                 ldb, N)
    _check(status, "gemm")



def best_isa() -> int:
    """The micro-kernel's best tile for this CPU: 0 baseline, 1 AVX2+FMA, 2 AVX-512."""
    return fr_best_isa()


def get_isa() -> int:
    """The micro-kernel's tile in use: 0 baseline, 1 AVX2+FMA, 2 AVX-512."""
    return fr_get_isa()


def set_isa(int isa) -> int:
    """Tests and benchmarks: use the tiles of ISA level isa (<= best_isa());
    returns the old level."""
    old = fr_get_isa()
    if fr_set_isa(isa) != 0:
        raise ValueError(f"isa must be in 0..{fr_best_isa()}, got {isa}")
    return old


def ugemm(real[:, ::1] C, const real[:, ::1] A, const real[:, ::1] W, bint ta, bint packed,
          bint beta1):
    """The micro-kernel GEMM (tests): C (M, N) (+)= op(A) W, op(A) = A (M, K) or
    A^T of A (K, M); W (K, N) row-major, or packed first when `packed`."""
    cdef int64_t M = C.shape[0], N = C.shape[1], K = W.shape[0]
    if W.shape[1] != N or (A.shape[1] if ta else A.shape[0]) != M or \
            (A.shape[0] if ta else A.shape[1]) != K or M < 1 or N < 1 or K < 1:
        raise ValueError("ugemm: C (M, N), op(A) (M, K) and W (K, N) do not match")
    cdef int64_t lda = A.shape[1], pw = 128 // sizeof(real)
    cdef real[::1] Wp
    if real is float:
        Wp = np.zeros(((N + pw - 1) // pw * pw * K if packed else 1), np.float32)
        with nogil:
            if packed:
                fr_pack_f32(&Wp[0], &W[0, 0], 0, N, K, N)
                fr_ugemm_f32(&C[0, 0], N, &A[0, 0], lda, ta, &Wp[0], 0, M, N, K, beta1)
            else:
                fr_ugemm_f32(&C[0, 0], N, &A[0, 0], lda, ta, &W[0, 0], N, M, N, K, beta1)
    else:
        Wp = np.zeros(((N + pw - 1) // pw * pw * K if packed else 1), np.float64)
        with nogil:
            if packed:
                fr_pack_f64(&Wp[0], &W[0, 0], 0, N, K, N)
                fr_ugemm_f64(&C[0, 0], N, &A[0, 0], lda, ta, &Wp[0], 0, M, N, K, beta1)
            else:
                fr_ugemm_f64(&C[0, 0], N, &A[0, 0], lda, ta, &W[0, 0], N, M, N, K, beta1)




# ---- tuning (fusedrnn._tuning owns these; the values live in the kernel) ----------

_TUNING_FIELDS = ("threads", "packed_max_rows", "team_min_steps", "min_step_flops",
                  "min_step_bytes", "grad_rows")


def get_tuning() -> dict:
    """The kernel's tuning settings (csrc/plan.h) as a dict."""
    cdef fr_tuning t
    fr_tuning_get(&t)
    return dict(threads=t.threads, packed_max_rows=t.packed_max_rows,
                team_min_steps=t.team_min_steps, min_step_flops=t.min_step_flops,
                min_step_bytes=t.min_step_bytes, grad_rows=t.grad_rows)


def set_tuning(**values) -> None:
    """Replace some of the kernel's tuning settings (validated by fusedrnn._tuning)."""
    cdef fr_tuning t
    fr_tuning_get(&t)
    for name, v in values.items():
        if name == "threads": t.threads = v
        elif name == "packed_max_rows": t.packed_max_rows = v
        elif name == "team_min_steps": t.team_min_steps = v
        elif name == "min_step_flops": t.min_step_flops = v
        elif name == "min_step_bytes": t.min_step_bytes = v
        elif name == "grad_rows": t.grad_rows = v
        else:
            raise ValueError(f"unknown kernel setting {name!r}")
    if fr_tuning_set(&t) != 0:
        raise ValueError(f"kernel settings out of range: {values}")


# ---- the options of a call ------------------------------------------------------

cdef int _interrupt(void *ctx) noexcept nogil:
    """The kernel's interrupt callback: run Python's signal handlers; nonzero
    (stop) when one raised, its exception left pending for the binding."""
    with gil:
        return 1 if _check_signals() != 0 else 0


cdef inline void _call_init(fr_call *call, int threads) noexcept:
    call.max_threads = threads
    call.interrupt = _interrupt
    call.interrupt_ctx = NULL


cdef const int64_t *_lengths_of(const int64_t[::1] lengths, int64_t B) except? NULL:
    """The kernel's pointer to a call's lengths (B entries), or NULL for None."""
    if lengths is None:
        return NULL
    if lengths.shape[0] != B:
        raise ValueError(f"internal: lengths has {lengths.shape[0]} entries, B = {B}")
    return &lengths[0]


cdef int _threads_arg(int threads) except -1:
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    return threads


# ---- LSTM ----------------------------------------------------------------------

cdef fr_activation _activation(object spec):
    """A kernel activation from (kind, alpha, beta) (kind: FR_ACT_*), or the
    cell's default for None."""
    cdef fr_activation f
    f.kind = 0; f.alpha = 0.0; f.beta = 0.0
    if spec is not None:
        f.kind, f.alpha, f.beta = int(spec[0]), float(spec[1]), float(spec[2])
    return f

cdef class LSTMConfig:
    """One LSTM layer-direction call: sizes and options (see fr_lstm_config).
    Holds the lengths buffer alive for the duration of the kernel calls.
    threads: at most this many threads for the call (0: fusedrnn.set_num_threads')."""
    cdef fr_lstm_config cfg
    cdef fr_call call
    cdef const int64_t[::1] _lengths
    cdef readonly int64_t R

    def __init__(self, int64_t T, int64_t B, int64_t I, int64_t H, int64_t P=0,
                 int peepholes=0, bint coupled_gates=False, bint reverse=False,
                 double cell_clip=0.0, double accumulation_clip=0.0,
                 const int64_t[::1] lengths=None, int threads=0, int reduced=0, warps=None):
        self.cfg.T = T; self.cfg.B = B; self.cfg.I = I; self.cfg.H = H; self.cfg.P = P
        self.cfg.reduced = reduced
        # warps: None (sigmoid, tanh, tanh) or three (kind, alpha, beta): G_c, G_d of u, of r
        self.cfg.gate = _activation(warps[0] if warps else None)
        self.cfg.cell = _activation(warps[1] if warps else None)
        self.cfg.output = _activation(warps[2] if warps else None)
        self.cfg.peepholes = peepholes; self.cfg.coupled_gates = coupled_gates
        self.cfg.reverse = reverse; self.cfg.cell_clip = cell_clip
        self.cfg.accumulation_clip = accumulation_clip
        self.cfg.lengths = NULL
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        _call_init(&self.call, threads)
        if lengths is not None:
            if lengths.shape[0] != B:
                raise ValueError(f"internal: lengths has {lengths.shape[0]} entries, B = {B}")
            self._lengths = lengths
            self.cfg.lengths = &lengths[0]
        self.R = P if P else H

    def sizes(self):
        """Element counts (acts, train workspace, inference workspace, backward workspace)."""
        cdef size_t acts = 0, wt = 0, wi = 0, wb = 0
        _check(fr_lstm_acts_size(&acts, &self.cfg), "LSTM")
        _check(fr_lstm_workspace_size(&wt, &self.cfg, 1), "LSTM")
        _check(fr_lstm_workspace_size(&wi, &self.cfg, 0), "LSTM")
        _check(fr_lstm_backward_workspace_size(&wb, &self.cfg), "LSTM")
        return acts, wt, wi, wb


def lstm_sizes(int64_t T, int64_t B, int64_t I, int64_t H, int peepholes, int64_t P=0):
    """Element counts (acts, train workspace, inference workspace, backward workspace)."""
    return LSTMConfig(T, B, I, H, P, peepholes).sizes()


cdef _check_weights(LSTMConfig c, Py_ssize_t nW_x, Py_ssize_t nW_v, Py_ssize_t nb,
                    Py_ssize_t nW_s, Py_ssize_t nW_qv):
    """Weight buffer lengths against the configuration; -1 marks a missing one."""
    cdef int64_t H = c.cfg.H, I = c.cfg.I, P = c.cfg.P
    _need(nW_x, <size_t>(4 * H * I), "W_x"); _need(nW_v, <size_t>(4 * H * c.R), "W_v")
    _need(nb, <size_t>(4 * H), "b")
    if c.cfg.peepholes:
        if nW_s < 0:
            raise ValueError("internal: peephole weights missing")
        _need(nW_s, <size_t>(3 * H * (H if c.cfg.peepholes == 2 else 1)), "W_s")
    if P:
        if nW_qv < 0:
            raise ValueError("internal: projection weights missing")
        _need(nW_qv, <size_t>(P * H), "W_qv")


cdef inline Py_ssize_t _len(object a):
    return -1 if a is None else a.shape[0]


cdef object _pack_dtype(object W_x, str what):
    """The dtype of a cell's packed float weights: W_x's, float32 or float64 (TypeError
    naming `what` else)."""
    dtype = np.dtype(W_x.dtype)
    if dtype != np.float32 and dtype != np.float64:
        raise TypeError(f"{what}: W_x must be float32 or float64, got {dtype}")
    return dtype


cdef class PackedWeights:
    """A cell's forward weights (W_x, W_v, W_qv) packed once for the kernel's
    micro-kernel, for a stream of forward calls with the same weights (T = 1
    steps then pack nothing): `lstm_forward(..., packed=pw)`. Made for the I, H,
    P and dtype of `c`; a copy, so pack again after the weights change."""
    cdef readonly object buffer  # the packed panels, 64-byte aligned inside
    cdef readonly int64_t I, H, P
    cdef readonly object dtype

    def __init__(self, LSTMConfig c, *, W_x, W_v, W_qv=None):
        cdef size_t n = 0
        cdef int status
        _check(fr_lstm_packed_size(&n, &c.cfg), "PackedWeights")
        if c.cfg.peepholes == 2:
            raise ValueError("PackedWeights: full peepholes do not run on the micro-kernel")
        _check_weights(c, _len(W_x), _len(W_v), 4 * c.cfg.H, 3 * c.cfg.H, _len(W_qv))
        self.dtype = _pack_dtype(W_x, "PackedWeights")
        self.I, self.H, self.P = c.cfg.I, c.cfg.H, c.cfg.P
        self.buffer = np.empty(n, self.dtype)
        if self.dtype == np.float32:
            status = _pack[float](self.buffer, W_x, W_v, W_qv, &c.cfg)
        else:
            status = _pack[double](self.buffer, W_x, W_v, W_qv, &c.cfg)
        _check(status, "PackedWeights")


cdef int _pack(real[::1] buf, const real[::1] W_x, const real[::1] W_v, const real[::1] W_qv,
               const fr_lstm_config *cfg) except? -9:
    cdef int status
    cdef fr_lstm_weights_f32 w32
    cdef fr_lstm_weights_f64 w64
    with nogil:
        if real is float:
            w32.W_x = &W_x[0]; w32.W_v = &W_v[0]; w32.b = NULL; w32.W_s = NULL
            w32.W_qv = _cptr(W_qv); w32.packed = NULL; w32.reduced = NULL
            status = fr_lstm_pack_f32(&buf[0], &w32, cfg)
        else:
            w64.W_x = &W_x[0]; w64.W_v = &W_v[0]; w64.b = NULL; w64.W_s = NULL
            w64.W_qv = _cptr(W_qv); w64.packed = NULL; w64.reduced = NULL
            status = fr_lstm_pack_f64(&buf[0], &w64, cfg)
    return status


def lstm_forward(LSTMConfig c, *, real[::1] y_seq, real[::1] s_T, real[::1] y_T,
                 real[::1] acts, real[::1] work, const real[::1] x, const real[::1] s0,
                 const real[::1] y0, const real[::1] W_x, const real[::1] W_v,
                 const real[::1] b, const real[::1] W_s, const real[::1] W_qv,
                 PackedWeights packed=None):
    """fr_lstm_forward on flat buffers; acts=None selects inference. packed: the
    cell's PackedWeights (then nothing is packed in the call)."""
    cdef size_t n_acts = 0, n_work = 0
    cdef int64_t T = c.cfg.T, B = c.cfg.B, I = c.cfg.I, H = c.cfg.H, R = c.R
    cdef bint training = acts is not None
    cdef int status
    cdef real[::1] pk = None
    _check(fr_lstm_acts_size(&n_acts, &c.cfg), "LSTM forward")
    _check(fr_lstm_workspace_size(&n_work, &c.cfg, training), "LSTM forward")
    _need(y_seq.shape[0], <size_t>(T * B * R), "y_seq"); _need(s_T.shape[0], <size_t>(B * H), "s_T")
    _need(y_T.shape[0], <size_t>(B * R), "y_T"); _need(x.shape[0], <size_t>(T * B * I), "x")
    _need(s0.shape[0], <size_t>(B * H), "s0"); _need(y0.shape[0], <size_t>(B * R), "y0")
    _check_weights(c, W_x.shape[0], W_v.shape[0], b.shape[0], _len(W_s), _len(W_qv))
    if training:
        _need(acts.shape[0], n_acts, "acts")
    _need_work(work, n_work)
    if packed is not None:
        if (packed.I, packed.H, packed.P) != (I, H, c.cfg.P):
            raise ValueError(f"packed: made for I, H, P = {packed.I}, {packed.H}, {packed.P}, "
                             f"this call has {I}, {H}, {c.cfg.P}")
        pk = packed.buffer  # a dtype other than the call's fails here (TypeError)
    cdef fr_lstm_forward_seq_f32 s32
    cdef fr_lstm_forward_seq_f64 s64
    cdef fr_lstm_weights_f32 w32
    cdef fr_lstm_weights_f64 w64
    with nogil:
        if real is float:
            s32.y_seq = &y_seq[0]; s32.s_T = &s_T[0]; s32.y_T = &y_T[0]
            s32.acts = _ptr(acts); s32.work = _ptr(work)
            s32.x = &x[0]; s32.s0 = &s0[0]; s32.y0 = &y0[0]
            w32.W_x = &W_x[0]; w32.W_v = &W_v[0]; w32.b = &b[0]
            w32.W_s = _cptr(W_s); w32.W_qv = _cptr(W_qv); w32.packed = _cptr(pk)
            w32.reduced = NULL
            status = fr_lstm_forward_f32(&s32, &w32, &c.cfg, &c.call)
        else:
            s64.y_seq = &y_seq[0]; s64.s_T = &s_T[0]; s64.y_T = &y_T[0]
            s64.acts = _ptr(acts); s64.work = _ptr(work)
            s64.x = &x[0]; s64.s0 = &s0[0]; s64.y0 = &y0[0]
            w64.W_x = &W_x[0]; w64.W_v = &W_v[0]; w64.b = &b[0]
            w64.W_s = _cptr(W_s); w64.W_qv = _cptr(W_qv); w64.packed = _cptr(pk)
            w64.reduced = NULL
            status = fr_lstm_forward_f64(&s64, &w64, &c.cfg, &c.call)
    _check(status, "LSTM forward")


def _check_reduced(int reduced, weights):
    """Each (name, W, scale, rows, cols) of `weights` (rows 0: absent): W a C-contiguous
    (rows, cols) array of bf16 bits (reduced 1) or int8 (2) with a float32 (rows,) scale."""
    want = np.uint16 if reduced == 1 else np.int8
    for name, a, sc, rows, cols in weights:
        if rows == 0:
            continue
        if a is None or a.dtype != want or a.shape != (rows, cols) or not a.flags.c_contiguous:
            raise ValueError(f"internal: {name} must be a C-contiguous {np.dtype(want)} "
                             f"({rows}, {cols}) array")
        if reduced == 2 and (sc is None or sc.dtype != np.float32 or sc.shape != (rows,)):
            raise ValueError(f"internal: {name}_scale must be float32 ({rows},)")


def _aligned_bytes(size_t n):
    """n bytes (uint8) starting on a 64-byte boundary."""
    raw = np.empty(n + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + n]


cdef class QPackedWeights:
    """A cell's reduced-precision forward weights (W_x, W_v, W_qv stored as bf16 bits or
    int8 with row scales) packed for `lstm_forward_reduced`, for the I, H, P and
    precision of `c` (c.reduced: 1 bf16, 2 int8)."""
    cdef readonly object buffer  # uint8, 64-byte aligned
    cdef readonly int64_t I, H, P
    cdef readonly int reduced

    def __init__(self, LSTMConfig c, *, W_x, W_v, W_qv=None, W_x_scale=None,
                 W_v_scale=None, W_qv_scale=None):
        cdef size_t n = 0
        cdef int status
        _check(fr_lstm_qpacked_size(&n, &c.cfg), "QPackedWeights")
        self.I, self.H, self.P, self.reduced = c.cfg.I, c.cfg.H, c.cfg.P, c.cfg.reduced
        _check_reduced(c.cfg.reduced, (("W_x", W_x, W_x_scale, 4 * c.cfg.H, c.cfg.I),
                                       ("W_v", W_v, W_v_scale, 4 * c.cfg.H, c.R),
                                       ("W_qv", W_qv, W_qv_scale, c.cfg.P, c.cfg.H)))
        self.buffer = _aligned_bytes(n)
        cdef uintptr_t dst = self.buffer.ctypes.data
        cdef uintptr_t px = W_x.ctypes.data, pv = W_v.ctypes.data
        cdef uintptr_t pq = 0 if W_qv is None else W_qv.ctypes.data
        cdef uintptr_t sx = 0 if W_x_scale is None else W_x_scale.ctypes.data
        cdef uintptr_t sv = 0 if W_v_scale is None else W_v_scale.ctypes.data
        cdef uintptr_t sq = 0 if W_qv_scale is None else W_qv_scale.ctypes.data
        with nogil:
            status = fr_lstm_qpack(<void *>dst, <const void *>px, <const float *>sx,
                                   <const void *>pv, <const float *>sv, <const void *>pq,
                                   <const float *>sq, &c.cfg)
        _check(status, "QPackedWeights")


def lstm_forward_reduced(LSTMConfig c, QPackedWeights reduced, *, float[::1] y_seq,
                         float[::1] s_T, float[::1] y_T, float[::1] work, const float[::1] x,
                         const float[::1] s0, const float[::1] y0, const float[::1] b,
                         const float[::1] W_s):
    """fr_lstm_forward_f32 (inference) with the weight products in reduced precision: W_x,
    W_v, W_qv from `reduced`, b and the peepholes W_s (diagonal or full) float32."""
    cdef size_t n_work = 0
    cdef int64_t T = c.cfg.T, B = c.cfg.B, I = c.cfg.I, H = c.cfg.H, R = c.R
    cdef int status
    if not c.cfg.reduced or (reduced.I, reduced.H, reduced.P, reduced.reduced) != \
            (I, H, c.cfg.P, c.cfg.reduced):
        raise ValueError("internal: the reduced weights were packed for another configuration")
    _check(fr_lstm_workspace_size(&n_work, &c.cfg, 0), "LSTM forward")
    _need(y_seq.shape[0], <size_t>(T * B * R), "y_seq"); _need(s_T.shape[0], <size_t>(B * H), "s_T")
    _need(y_T.shape[0], <size_t>(B * R), "y_T"); _need(x.shape[0], <size_t>(T * B * I), "x")
    _need(s0.shape[0], <size_t>(B * H), "s0"); _need(y0.shape[0], <size_t>(B * R), "y0")
    _need(b.shape[0], <size_t>(4 * H), "b")
    if c.cfg.peepholes:
        if W_s is None:
            raise ValueError("internal: peephole weights missing")
        _need(W_s.shape[0], <size_t>(3 * H * (H if c.cfg.peepholes == 2 else 1)), "W_s")
    _need_work(work, n_work)
    cdef uintptr_t qp = reduced.buffer.ctypes.data
    cdef fr_lstm_forward_seq_f32 s32
    cdef fr_lstm_weights_f32 w32
    with nogil:
        s32.y_seq = &y_seq[0]; s32.s_T = &s_T[0]; s32.y_T = &y_T[0]
        s32.acts = NULL; s32.work = _ptr(work)
        s32.x = &x[0]; s32.s0 = &s0[0]; s32.y0 = &y0[0]
        w32.W_x = NULL; w32.W_v = NULL; w32.b = &b[0]
        w32.W_s = _cptr(W_s); w32.W_qv = NULL; w32.packed = NULL
        w32.reduced = <const void *>qp
        status = fr_lstm_forward_f32(&s32, &w32, &c.cfg, &c.call)
    _check(status, "LSTM forward")


def lstm_backward(LSTMConfig c, *, real[::1] dW_x, real[::1] dW_v, real[::1] db,
                  real[::1] dW_s, real[::1] dW_qv, real[::1] dx, real[::1] ds0, real[::1] dy0,
                  real[::1] work, const real[::1] dy_seq, const real[::1] ds_T,
                  const real[::1] dy_T, const real[::1] acts, const real[::1] x,
                  const real[::1] y_seq, const real[::1] s0, const real[::1] y0,
                  const real[::1] W_x, const real[::1] W_v, const real[::1] W_s,
                  const real[::1] W_qv):
    """fr_lstm_backward on flat buffers; every gradient output is accumulated (+=)."""
    cdef size_t n_acts = 0, n_work = 0
    cdef int64_t T = c.cfg.T, B = c.cfg.B, I = c.cfg.I, H = c.cfg.H, R = c.R
    cdef int status
    _check(fr_lstm_acts_size(&n_acts, &c.cfg), "LSTM backward")
    _check(fr_lstm_backward_workspace_size(&n_work, &c.cfg), "LSTM backward")
    if dx is not None:
        _need(dx.shape[0], <size_t>(T * B * I), "dx")
    if ds0 is not None:
        _need(ds0.shape[0], <size_t>(B * H), "ds0")
    if dy0 is not None:
        _need(dy0.shape[0], <size_t>(B * R), "dy0")
    _check_weights(c, dW_x.shape[0], dW_v.shape[0], db.shape[0], _len(dW_s), _len(dW_qv))
    _check_weights(c, W_x.shape[0], W_v.shape[0], 4 * H, _len(W_s), _len(W_qv))
    _need_work(work, n_work); _need(acts.shape[0], n_acts, "acts")
    _need(x.shape[0], <size_t>(T * B * I), "x"); _need(y_seq.shape[0], <size_t>(T * B * R), "y_seq")
    _need(s0.shape[0], <size_t>(B * H), "s0"); _need(y0.shape[0], <size_t>(B * R), "y0")
    if dy_seq is not None:
        _need(dy_seq.shape[0], <size_t>(T * B * R), "dy_seq")
    if ds_T is not None:
        _need(ds_T.shape[0], <size_t>(B * H), "ds_T")
    if dy_T is not None:
        _need(dy_T.shape[0], <size_t>(B * R), "dy_T")
    cdef fr_lstm_grads_f32 g32
    cdef fr_lstm_grads_f64 g64
    cdef fr_lstm_backward_seq_f32 s32
    cdef fr_lstm_backward_seq_f64 s64
    cdef fr_lstm_weights_f32 w32
    cdef fr_lstm_weights_f64 w64
    with nogil:
        if real is float:
            g32.dW_x = &dW_x[0]; g32.dW_v = &dW_v[0]; g32.db = &db[0]
            g32.dW_s = _ptr(dW_s); g32.dW_qv = _ptr(dW_qv)
            s32.dx = _ptr(dx); s32.ds0 = _ptr(ds0); s32.dy0 = _ptr(dy0); s32.work = &work[0]
            s32.dy_seq = _cptr(dy_seq); s32.ds_T = _cptr(ds_T); s32.dy_T = _cptr(dy_T)
            s32.acts = &acts[0]; s32.x = &x[0]; s32.y_seq = &y_seq[0]
            s32.s0 = &s0[0]; s32.y0 = &y0[0]
            w32.W_x = &W_x[0]; w32.W_v = &W_v[0]; w32.b = NULL
            w32.W_s = _cptr(W_s); w32.W_qv = _cptr(W_qv); w32.packed = NULL; w32.reduced = NULL
            status = fr_lstm_backward_f32(&g32, &s32, &w32, &c.cfg, &c.call)
        else:
            g64.dW_x = &dW_x[0]; g64.dW_v = &dW_v[0]; g64.db = &db[0]
            g64.dW_s = _ptr(dW_s); g64.dW_qv = _ptr(dW_qv)
            s64.dx = _ptr(dx); s64.ds0 = _ptr(ds0); s64.dy0 = _ptr(dy0); s64.work = &work[0]
            s64.dy_seq = _cptr(dy_seq); s64.ds_T = _cptr(ds_T); s64.dy_T = _cptr(dy_T)
            s64.acts = &acts[0]; s64.x = &x[0]; s64.y_seq = &y_seq[0]
            s64.s0 = &s0[0]; s64.y0 = &y0[0]
            w64.W_x = &W_x[0]; w64.W_v = &W_v[0]; w64.b = NULL
            w64.W_s = _cptr(W_s); w64.W_qv = _cptr(W_qv); w64.packed = NULL; w64.reduced = NULL
            status = fr_lstm_backward_f64(&g64, &s64, &w64, &c.cfg, &c.call)
    _check(status, "LSTM backward")


# ---- canonical RNN ---------------------------------------------------------------

cdef class RNNConfig:
    """One RNN layer-direction call: sizes and options (see fr_rnn_config).
    threads: at most this many threads for the call (0: the process setting);
    reduced: 1 bf16, 2 int8 (inference with the reduced weights, `RNNQPackedWeights`)."""
    cdef fr_rnn_config cfg
    cdef fr_call call
    cdef const int64_t[::1] _lengths

    def __init__(self, int64_t T, int64_t B, int64_t I, int64_t H, bint state_feedback=False,
                 bint reverse=False, const int64_t[::1] lengths=None, int threads=0,
                 activation=None, double accumulation_clip=0.0, int reduced=0):
        self.cfg.T = T; self.cfg.B = B; self.cfg.I = I; self.cfg.H = H
        self.cfg.reduced = reduced
        self.cfg.state_feedback = state_feedback; self.cfg.reverse = reverse
        # activation: None (tanh) or (kind, alpha, beta); accumulation_clip: c > 0 or 0 (off)
        self.cfg.activation = _activation(activation)
        self.cfg.accumulation_clip = accumulation_clip
        self.cfg.lengths = NULL
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        _call_init(&self.call, threads)
        if lengths is not None:
            if lengths.shape[0] != B:
                raise ValueError(f"internal: lengths has {lengths.shape[0]} entries, B = {B}")
            self._lengths = lengths
            self.cfg.lengths = &lengths[0]

    def sizes(self):
        """Element counts (acts, train workspace, inference workspace, backward workspace)."""
        cdef size_t acts = 0, wt = 0, wi = 0, wb = 0
        _check(fr_rnn_acts_size(&acts, &self.cfg), "RNN")
        _check(fr_rnn_workspace_size(&wt, &self.cfg, 1), "RNN")
        _check(fr_rnn_workspace_size(&wi, &self.cfg, 0), "RNN")
        _check(fr_rnn_backward_workspace_size(&wb, &self.cfg), "RNN")
        return acts, wt, wi, wb


def rnn_sizes(int64_t T, int64_t B, int64_t I, int64_t H, int state_feedback):
    """Element counts (acts, train workspace, inference workspace, backward workspace)."""
    return RNNConfig(T, B, I, H, state_feedback).sizes()


cdef class RNNPackedWeights:
    """An RNN cell's float forward weights W_x (H, I), W_r (H, H) and, with state feedback,
    W_s (H, H) packed once for the micro-kernel: `rnn_forward(..., packed=pw)` then packs
    nothing (and runs on the micro-kernel whatever T). Made for the I, H, state_feedback
    and dtype of `c`; a copy, so pack again after the weights change."""
    cdef readonly object buffer  # the packed panels, 64-byte aligned inside
    cdef readonly int64_t I, H
    cdef readonly int state_feedback
    cdef readonly object dtype

    def __init__(self, RNNConfig c, *, W_x, W_r, W_s=None):
        cdef size_t n = 0
        cdef int status
        if c.cfg.reduced:
            raise ValueError("RNNPackedWeights: float weights (the reduced ones are "
                             "RNNQPackedWeights)")
        _check(fr_rnn_packed_size(&n, &c.cfg), "RNNPackedWeights")
        _have(W_x, <size_t>(c.cfg.H * c.cfg.I), "W_x")
        _have(W_r, <size_t>(c.cfg.H * c.cfg.H), "W_r")
        if c.cfg.state_feedback:
            _have(W_s, <size_t>(c.cfg.H * c.cfg.H), "W_s")
        self.dtype = _pack_dtype(W_x, "RNNPackedWeights")
        self.I, self.H, self.state_feedback = c.cfg.I, c.cfg.H, c.cfg.state_feedback
        self.buffer = np.empty(n, self.dtype)
        if self.dtype == np.float32:
            status = _rnn_pack[float](self.buffer, W_x, W_r, W_s, &c.cfg)
        else:
            status = _rnn_pack[double](self.buffer, W_x, W_r, W_s, &c.cfg)
        _check(status, "RNNPackedWeights")


cdef int _rnn_pack(real[::1] buf, const real[::1] W_x, const real[::1] W_r, const real[::1] W_s,
                   const fr_rnn_config *cfg) except? -9:
    """fr_rnn_pack_* of W_x, W_r (W_s) into buf (theta_s is not read)."""
    cdef fr_rnn_weights_f32 w32
    cdef fr_rnn_weights_f64 w64
    cdef int status
    if real is float:
        memset(&w32, 0, sizeof(w32))
        w32.W_x, w32.W_r, w32.W_s = &W_x[0], &W_r[0], _cptr(W_s)
        with nogil:
            status = fr_rnn_pack_f32(&buf[0], &w32, cfg)
    else:
        memset(&w64, 0, sizeof(w64))
        w64.W_x, w64.W_r, w64.W_s = &W_x[0], &W_r[0], _cptr(W_s)
        with nogil:
            status = fr_rnn_pack_f64(&buf[0], &w64, cfg)
    return status


def rnn_forward(RNNConfig c, *, real[::1] r_seq, real[::1] s_T, real[::1] r_T, real[::1] acts,
                real[::1] work, const real[::1] x, const real[::1] s0, const real[::1] r0,
                const real[::1] W_x, const real[::1] W_r, const real[::1] theta_s,
                const real[::1] W_s, RNNPackedWeights packed=None):
    """fr_rnn_forward on flat buffers; acts=None selects inference. packed: the cell's
    RNNPackedWeights (then nothing is packed in the call)."""
    cdef size_t n_acts = 0, n_work = 0
    cdef real[::1] pk = None
    cdef int64_t T = c.cfg.T, B = c.cfg.B, I = c.cfg.I, H = c.cfg.H
    cdef size_t TBH = <size_t>(T * B * H), BH = <size_t>(B * H)
    cdef bint training = acts is not None
    cdef int status
    _check(fr_rnn_acts_size(&n_acts, &c.cfg), "RNN forward")
    _check(fr_rnn_workspace_size(&n_work, &c.cfg, training), "RNN forward")
    _need(r_seq.shape[0], TBH, "r_seq"); _need(s_T.shape[0], BH, "s_T")
    _need(r_T.shape[0], BH, "r_T"); _need(x.shape[0], <size_t>(T * B * I), "x")
    _need(s0.shape[0], BH, "s0"); _need(r0.shape[0], BH, "r0")
    _need(W_x.shape[0], <size_t>(H * I), "W_x"); _need(W_r.shape[0], <size_t>(H * H), "W_r")
    _need(theta_s.shape[0], <size_t>H, "theta_s")
    if training:
        _need(acts.shape[0], n_acts, "acts")
    _need_work(work, n_work)
    if c.cfg.state_feedback:
        if W_s is None:
            raise ValueError("internal: W_s missing")
        _need(W_s.shape[0], <size_t>(H * H), "W_s")
    if packed is not None:
        if (packed.I, packed.H, packed.state_feedback) != (I, H, c.cfg.state_feedback):
            raise ValueError(f"packed: made for I, H, state_feedback = {packed.I}, {packed.H}, "
                             f"{packed.state_feedback}, the call has {I}, {H}, "
                             f"{c.cfg.state_feedback}")
        pk = packed.buffer  # a dtype other than the call's fails here (TypeError)
    cdef fr_rnn_forward_seq_f32 s32
    cdef fr_rnn_forward_seq_f64 s64
    cdef fr_rnn_weights_f32 w32
    cdef fr_rnn_weights_f64 w64
    with nogil:
        if real is float:
            s32.r_seq = &r_seq[0]; s32.s_T = &s_T[0]; s32.r_T = &r_T[0]
            s32.acts = _ptr(acts); s32.work = _ptr(work)
            s32.x = &x[0]; s32.s0 = &s0[0]; s32.r0 = &r0[0]
            w32.W_x = &W_x[0]; w32.W_r = &W_r[0]; w32.theta_s = &theta_s[0]; w32.W_s = _cptr(W_s)
            w32.reduced = NULL; w32.packed = _cptr(pk)
            status = fr_rnn_forward_f32(&s32, &w32, &c.cfg, &c.call)
        else:
            s64.r_seq = &r_seq[0]; s64.s_T = &s_T[0]; s64.r_T = &r_T[0]
            s64.acts = _ptr(acts); s64.work = _ptr(work)
            s64.x = &x[0]; s64.s0 = &s0[0]; s64.r0 = &r0[0]
            w64.W_x = &W_x[0]; w64.W_r = &W_r[0]; w64.theta_s = &theta_s[0]; w64.W_s = _cptr(W_s)
            w64.reduced = NULL; w64.packed = _cptr(pk)
            status = fr_rnn_forward_f64(&s64, &w64, &c.cfg, &c.call)
    _check(status, "RNN forward")


cdef class RNNQPackedWeights:
    """A cell's reduced-precision weights W_x (H, I), W_r (H, H) (bf16 bits, or int8 with
    float32 row scales W_x_scale, W_r_scale (H,)) packed for `rnn_forward_reduced`, for the
    I, H and precision of `c` (c.reduced: 1 bf16, 2 int8)."""
    cdef readonly object buffer  # uint8, 64-byte aligned
    cdef readonly int64_t I, H
    cdef readonly int reduced

    def __init__(self, RNNConfig c, *, W_x, W_r, W_x_scale=None, W_r_scale=None):
        cdef size_t n = 0
        cdef int status
        _check(fr_rnn_qpacked_size(&n, &c.cfg), "RNNQPackedWeights")
        self.I, self.H, self.reduced = c.cfg.I, c.cfg.H, c.cfg.reduced
        _check_reduced(c.cfg.reduced, (("W_x", W_x, W_x_scale, c.cfg.H, c.cfg.I),
                                       ("W_r", W_r, W_r_scale, c.cfg.H, c.cfg.H)))
        self.buffer = _aligned_bytes(n)
        cdef uintptr_t dst = self.buffer.ctypes.data
        cdef uintptr_t px = W_x.ctypes.data, pr = W_r.ctypes.data
        cdef uintptr_t sx = 0 if W_x_scale is None else W_x_scale.ctypes.data
        cdef uintptr_t sr = 0 if W_r_scale is None else W_r_scale.ctypes.data
        with nogil:
            status = fr_rnn_qpack(<void *>dst, <const void *>px, <const float *>sx,
                                  <const void *>pr, <const float *>sr, &c.cfg)
        _check(status, "RNNQPackedWeights")


def rnn_forward_reduced(RNNConfig c, RNNQPackedWeights reduced, *, float[::1] r_seq,
                        float[::1] s_T, float[::1] r_T, float[::1] work, const float[::1] x,
                        const float[::1] s0, const float[::1] r0, const float[::1] theta_s,
                        const float[::1] W_s):
    """fr_rnn_forward_f32 (inference) with W_x x[n], W_r r[n-1] in reduced precision from
    `reduced`; theta_s and W_s (state feedback) float32."""
    cdef size_t n_work = 0
    cdef int64_t T = c.cfg.T, B = c.cfg.B, I = c.cfg.I, H = c.cfg.H
    cdef size_t BH = <size_t>(B * H)
    cdef int status
    if not c.cfg.reduced or (reduced.I, reduced.H, reduced.reduced) != (I, H, c.cfg.reduced):
        raise ValueError("internal: the reduced weights were packed for another configuration")
    _check(fr_rnn_workspace_size(&n_work, &c.cfg, 0), "RNN forward")
    _need(r_seq.shape[0], <size_t>(T * B * H), "r_seq"); _need(s_T.shape[0], BH, "s_T")
    _need(r_T.shape[0], BH, "r_T"); _need(x.shape[0], <size_t>(T * B * I), "x")
    _need(s0.shape[0], BH, "s0"); _need(r0.shape[0], BH, "r0")
    _need(theta_s.shape[0], <size_t>H, "theta_s")
    if c.cfg.state_feedback:
        if W_s is None:
            raise ValueError("internal: W_s missing")
        _need(W_s.shape[0], <size_t>(H * H), "W_s")
    _need_work(work, n_work)
    cdef uintptr_t qp = reduced.buffer.ctypes.data
    cdef fr_rnn_forward_seq_f32 s32
    cdef fr_rnn_weights_f32 w32
    with nogil:
        s32.r_seq = &r_seq[0]; s32.s_T = &s_T[0]; s32.r_T = &r_T[0]
        s32.acts = NULL; s32.work = _ptr(work)
        s32.x = &x[0]; s32.s0 = &s0[0]; s32.r0 = &r0[0]
        w32.W_x = NULL; w32.W_r = NULL; w32.theta_s = &theta_s[0]; w32.W_s = _cptr(W_s)
        w32.reduced = <const void *>qp; w32.packed = NULL
        status = fr_rnn_forward_f32(&s32, &w32, &c.cfg, &c.call)
    _check(status, "RNN forward")


def rnn_backward(RNNConfig c, *, real[::1] dW_x, real[::1] dW_r, real[::1] dtheta_s,
                 real[::1] dW_s, real[::1] dx, real[::1] ds0, real[::1] dr0, real[::1] work,
                 const real[::1] dr_seq, const real[::1] ds_T, const real[::1] dr_T,
                 const real[::1] acts, const real[::1] x, const real[::1] r_seq,
                 const real[::1] s0, const real[::1] r0, const real[::1] W_x,
                 const real[::1] W_r, const real[::1] W_s):
    """fr_rnn_backward on flat buffers; every gradient output is accumulated (+=)."""
    cdef size_t n_acts = 0, n_work = 0
    cdef int64_t T = c.cfg.T, B = c.cfg.B, I = c.cfg.I, H = c.cfg.H
    cdef size_t TBH = <size_t>(T * B * H), BH = <size_t>(B * H)
    cdef int status
    _check(fr_rnn_acts_size(&n_acts, &c.cfg), "RNN backward")
    _check(fr_rnn_backward_workspace_size(&n_work, &c.cfg), "RNN backward")
    if dx is not None:
        _need(dx.shape[0], <size_t>(T * B * I), "dx")
    if ds0 is not None:
        _need(ds0.shape[0], BH, "ds0")
    if dr0 is not None:
        _need(dr0.shape[0], BH, "dr0")
    _need(dW_x.shape[0], <size_t>(H * I), "dW_x")
    _need(dW_r.shape[0], <size_t>(H * H), "dW_r"); _need(dtheta_s.shape[0], <size_t>H, "dtheta_s")
    _need_work(work, n_work); _need(x.shape[0], <size_t>(T * B * I), "x")
    _need(r_seq.shape[0], TBH, "r_seq"); _need(s0.shape[0], BH, "s0"); _need(r0.shape[0], BH, "r0")
    _need(W_x.shape[0], <size_t>(H * I), "W_x"); _need(W_r.shape[0], <size_t>(H * H), "W_r")
    if dr_seq is not None:
        _need(dr_seq.shape[0], TBH, "dr_seq")
    if ds_T is not None:
        _need(ds_T.shape[0], BH, "ds_T")
    if dr_T is not None:
        _need(dr_T.shape[0], BH, "dr_T")
    if c.cfg.state_feedback:
        if W_s is None or dW_s is None or acts is None:
            raise ValueError("internal: state-feedback buffers missing")
        _need(W_s.shape[0], <size_t>(H * H), "W_s"); _need(dW_s.shape[0], <size_t>(H * H), "dW_s")
        _need(acts.shape[0], n_acts, "acts")
    elif n_acts:
        if acts is None:
            raise ValueError("internal: the RNN's activation store is missing")
        _need(acts.shape[0], n_acts, "acts")
    cdef fr_rnn_grads_f32 g32
    cdef fr_rnn_grads_f64 g64
    cdef fr_rnn_backward_seq_f32 s32
    cdef fr_rnn_backward_seq_f64 s64
    cdef fr_rnn_weights_f32 w32
    cdef fr_rnn_weights_f64 w64
    with nogil:
        if real is float:
            g32.dW_x = &dW_x[0]; g32.dW_r = &dW_r[0]; g32.dtheta_s = &dtheta_s[0]
            g32.dW_s = _ptr(dW_s)
            s32.dx = _ptr(dx); s32.ds0 = _ptr(ds0); s32.dr0 = _ptr(dr0); s32.work = &work[0]
            s32.dr_seq = _cptr(dr_seq); s32.ds_T = _cptr(ds_T); s32.dr_T = _cptr(dr_T)
            s32.acts = _cptr(acts); s32.x = &x[0]; s32.r_seq = &r_seq[0]
            s32.s0 = &s0[0]; s32.r0 = &r0[0]
            w32.W_x = &W_x[0]; w32.W_r = &W_r[0]; w32.theta_s = NULL; w32.W_s = _cptr(W_s)
            w32.reduced = NULL; w32.packed = NULL
            status = fr_rnn_backward_f32(&g32, &s32, &w32, &c.cfg, &c.call)
        else:
            g64.dW_x = &dW_x[0]; g64.dW_r = &dW_r[0]; g64.dtheta_s = &dtheta_s[0]
            g64.dW_s = _ptr(dW_s)
            s64.dx = _ptr(dx); s64.ds0 = _ptr(ds0); s64.dr0 = _ptr(dr0); s64.work = &work[0]
            s64.dr_seq = _cptr(dr_seq); s64.ds_T = _cptr(ds_T); s64.dr_T = _cptr(dr_T)
            s64.acts = _cptr(acts); s64.x = &x[0]; s64.r_seq = &r_seq[0]
            s64.s0 = &s0[0]; s64.r0 = &r0[0]
            w64.W_x = &W_x[0]; w64.W_r = &W_r[0]; w64.theta_s = NULL; w64.W_s = _cptr(W_s)
            w64.reduced = NULL; w64.packed = NULL
            status = fr_rnn_backward_f64(&g64, &s64, &w64, &c.cfg, &c.call)
    _check(status, "RNN backward")


# ---- GRU -----------------------------------------------------------------------

cdef class GRUConfig:
    """One GRU layer-direction call: sizes and options (see fr_gru_config).
    threads: at most this many threads for the call (0: the process setting);
    reduced: 1 bf16, 2 int8 (inference with the reduced weights, `GRUQPackedWeights`)."""
    cdef fr_gru_config cfg
    cdef fr_call call
    cdef const int64_t[::1] _lengths

    def __init__(self, int64_t T, int64_t B, int64_t I, int64_t H, bint linear_before_reset=True,
                 bint reverse=False, const int64_t[::1] lengths=None, int threads=0,
                 int reduced=0, warps=None, double accumulation_clip=0.0):
        self.cfg.T = T; self.cfg.B = B; self.cfg.I = I; self.cfg.H = H
        self.cfg.reduced = reduced
        self.cfg.linear_before_reset = linear_before_reset; self.cfg.reverse = reverse
        # warps: None (sigmoid, tanh) or two (kind, alpha, beta): f, g; the clip: c > 0 or 0 (off)
        self.cfg.gate = _activation(warps[0] if warps else None)
        self.cfg.cell = _activation(warps[1] if warps else None)
        self.cfg.accumulation_clip = accumulation_clip
        self.cfg.lengths = _lengths_of(lengths, B)
        self._lengths = lengths
        _call_init(&self.call, _threads_arg(threads))

    def sizes(self):
        """Element counts (acts, train workspace, inference workspace, backward workspace)."""
        cdef size_t n[4]
        _check(fr_gru_acts_size(&n[0], &self.cfg), "GRU")
        _check(fr_gru_workspace_size(&n[1], &self.cfg, 1), "GRU")
        _check(fr_gru_workspace_size(&n[2], &self.cfg, 0), "GRU")
        _check(fr_gru_backward_workspace_size(&n[3], &self.cfg), "GRU")
        return n[0], n[1], n[2], n[3]


cdef inline void _have(object a, size_t want, str name) except *:
    """A buffer the kernel needs: given, with at least `want` elements."""
    if a is None:
        raise ValueError(f"internal: buffer {name} missing")
    _need(a.shape[0], want, name)


cdef _gru_check(GRUConfig c, object x, object h0, object h_seq, object W_x, object W_h,
                object acts):
    """The buffers every GRU call reads, against its configuration."""
    cdef int64_t T = c.cfg.T, B = c.cfg.B, I = c.cfg.I, H = c.cfg.H
    cdef size_t n_acts = 0
    _have(x, <size_t>(T * B * I), "x"); _have(h0, <size_t>(B * H), "h0")
    _have(h_seq, <size_t>(T * B * H), "h_seq")
    _have(W_x, <size_t>(3 * H * I), "W_x"); _have(W_h, <size_t>(3 * H * H), "W_h")
    if acts is not None:
        _check(fr_gru_acts_size(&n_acts, &c.cfg), "GRU")
        _need(acts.shape[0], n_acts, "acts")


def data_address(object a) -> int:
    """The address of a contiguous array's first byte (what `a.ctypes.data` gives, in a
    tenth of its time)."""
    cdef Py_buffer view
    PyObject_GetBuffer(a, &view, PyBUF_ANY_CONTIGUOUS)
    cdef uintptr_t p = <uintptr_t>view.buf
    PyBuffer_Release(&view)
    return p


def packs_weights(int64_t T, int64_t B) -> bool:
    """Whether a call of T steps and B rows packs its weights for the micro-kernel
    (when its options allow that path): with packed weights given it would run on
    the same path, so passing them changes no result."""
    return fr_plan_packs(T, B) != 0


cdef class GRUPackedWeights:
    """A GRU cell's float forward weights W_x (3H, I), W_h (3H, H) packed once for the
    micro-kernel: `gru_forward(..., packed=pw)` then packs nothing (and runs on the
    micro-kernel whatever T). Made for the I, H and dtype of `c`; a copy, so pack
    again after the weights change."""
    cdef readonly object buffer  # the packed panels, 64-byte aligned inside
    cdef readonly int64_t I, H
    cdef readonly object dtype

    def __init__(self, GRUConfig c, *, W_x, W_h):
        cdef size_t n = 0
        cdef int status
        if c.cfg.reduced:
            raise ValueError("GRUPackedWeights: float weights (the reduced ones are "
                             "GRUQPackedWeights)")
        _check(fr_gru_packed_size(&n, &c.cfg), "GRUPackedWeights")
        _have(W_x, <size_t>(3 * c.cfg.H * c.cfg.I), "W_x")
        _have(W_h, <size_t>(3 * c.cfg.H * c.cfg.H), "W_h")
        self.dtype = _pack_dtype(W_x, "GRUPackedWeights")
        self.I, self.H = c.cfg.I, c.cfg.H
        self.buffer = np.empty(n, self.dtype)
        if self.dtype == np.float32:
            status = _gru_pack[float](self.buffer, W_x, W_h, &c.cfg)
        else:
            status = _gru_pack[double](self.buffer, W_x, W_h, &c.cfg)
        _check(status, "GRUPackedWeights")


cdef int _gru_pack(real[::1] buf, const real[::1] W_x, const real[::1] W_h,
                   const fr_gru_config *cfg) except? -9:
    """fr_gru_pack_* of W_x, W_h into buf (the other weights are not read)."""
    cdef fr_gru_weights_f32 w32
    cdef fr_gru_weights_f64 w64
    cdef int status
    if real is float:
        memset(&w32, 0, sizeof(w32))
        w32.W_x, w32.W_h = &W_x[0], &W_h[0]
        with nogil:
            status = fr_gru_pack_f32(&buf[0], &w32, cfg)
    else:
        memset(&w64, 0, sizeof(w64))
        w64.W_x, w64.W_h = &W_x[0], &W_h[0]
        with nogil:
            status = fr_gru_pack_f64(&buf[0], &w64, cfg)
    return status


def gru_forward(GRUConfig c, *, real[::1] h_seq, real[::1] h_T, real[::1] acts, real[::1] work,
                const real[::1] x, const real[::1] h0, const real[::1] W_x, const real[::1] W_h,
                const real[::1] b, const real[::1] b_hn, GRUPackedWeights packed=None):
    """fr_gru_forward on flat buffers; acts=None selects inference. packed: the cell's
    GRUPackedWeights (then nothing is packed in the call)."""
    cdef size_t n_work = 0
    cdef int status
    cdef real[::1] pk = None
    if packed is not None:
        if (packed.I, packed.H) != (c.cfg.I, c.cfg.H):
            raise ValueError(f"packed: made for I, H = {packed.I}, {packed.H}, the call has "
                             f"{c.cfg.I}, {c.cfg.H}")
        pk = packed.buffer  # a dtype other than the call's fails here (TypeError)
    _check(fr_gru_workspace_size(&n_work, &c.cfg, acts is not None), "GRU forward")
    _gru_check(c, x, h0, h_seq, W_x, W_h, acts)
    _have(h_T, <size_t>(c.cfg.B * c.cfg.H), "h_T"); _have(b, <size_t>(3 * c.cfg.H), "b")
    _have(work, n_work, "work")
    if c.cfg.linear_before_reset:
        _have(b_hn, <size_t>c.cfg.H, "b_hn")
    cdef fr_gru_forward_seq_f32 s32
    cdef fr_gru_forward_seq_f64 s64
    cdef fr_gru_weights_f32 w32
    cdef fr_gru_weights_f64 w64
    with nogil:
        if real is float:
            s32 = fr_gru_forward_seq_f32(h_seq=&h_seq[0], h_T=&h_T[0], acts=_ptr(acts),
                                         work=&work[0], x=&x[0], h0=&h0[0])
            w32 = fr_gru_weights_f32(W_x=&W_x[0], W_h=&W_h[0], b=&b[0], b_hn=_cptr(b_hn),
                                     reduced=NULL, packed=_cptr(pk))
            status = fr_gru_forward_f32(&s32, &w32, &c.cfg, &c.call)
        else:
            s64 = fr_gru_forward_seq_f64(h_seq=&h_seq[0], h_T=&h_T[0], acts=_ptr(acts),
                                         work=&work[0], x=&x[0], h0=&h0[0])
            w64 = fr_gru_weights_f64(W_x=&W_x[0], W_h=&W_h[0], b=&b[0], b_hn=_cptr(b_hn),
                                     reduced=NULL, packed=_cptr(pk))
            status = fr_gru_forward_f64(&s64, &w64, &c.cfg, &c.call)
    _check(status, "GRU forward")


cdef class GRUQPackedWeights:
    """A cell's reduced-precision weights W_x (3H, I), W_h (3H, H) (bf16 bits, or int8 with
    float32 row scales W_x_scale, W_h_scale (3H,)) packed for `gru_forward_reduced`, for
    the I, H and precision of `c` (c.reduced: 1 bf16, 2 int8)."""
    cdef readonly object buffer  # uint8, 64-byte aligned
    cdef readonly int64_t I, H
    cdef readonly int reduced

    def __init__(self, GRUConfig c, *, W_x, W_h, W_x_scale=None, W_h_scale=None):
        cdef size_t n = 0
        cdef int status
        _check(fr_gru_qpacked_size(&n, &c.cfg), "GRUQPackedWeights")
        self.I, self.H, self.reduced = c.cfg.I, c.cfg.H, c.cfg.reduced
        _check_reduced(c.cfg.reduced, (("W_x", W_x, W_x_scale, 3 * c.cfg.H, c.cfg.I),
                                       ("W_h", W_h, W_h_scale, 3 * c.cfg.H, c.cfg.H)))
        self.buffer = _aligned_bytes(n)
        cdef uintptr_t dst = self.buffer.ctypes.data
        cdef uintptr_t px = W_x.ctypes.data, ph = W_h.ctypes.data
        cdef uintptr_t sx = 0 if W_x_scale is None else W_x_scale.ctypes.data
        cdef uintptr_t sh = 0 if W_h_scale is None else W_h_scale.ctypes.data
        with nogil:
            status = fr_gru_qpack(<void *>dst, <const void *>px, <const float *>sx,
                                  <const void *>ph, <const float *>sh, &c.cfg)
        _check(status, "GRUQPackedWeights")


def gru_forward_reduced(GRUConfig c, GRUQPackedWeights reduced, *, float[::1] h_seq,
                        float[::1] h_T, float[::1] work, const float[::1] x,
                        const float[::1] h0, const float[::1] b, const float[::1] b_hn):
    """fr_gru_forward_f32 (inference) with W_x x[n], W_h* h[n-1] (and W_hn c[n]) in reduced
    precision from `reduced`; b and b_hn float32."""
    cdef size_t n_work = 0
    cdef int64_t T = c.cfg.T, B = c.cfg.B, I = c.cfg.I, H = c.cfg.H
    cdef int status
    if not c.cfg.reduced or (reduced.I, reduced.H, reduced.reduced) != (I, H, c.cfg.reduced):
        raise ValueError("internal: the reduced weights were packed for another configuration")
    _check(fr_gru_workspace_size(&n_work, &c.cfg, 0), "GRU forward")
    _have(h_seq, <size_t>(T * B * H), "h_seq"); _have(h_T, <size_t>(B * H), "h_T")
    _have(x, <size_t>(T * B * I), "x"); _have(h0, <size_t>(B * H), "h0")
    _have(b, <size_t>(3 * H), "b"); _have(work, n_work, "work")
    if c.cfg.linear_before_reset:
        _have(b_hn, <size_t>H, "b_hn")
    cdef uintptr_t qp = reduced.buffer.ctypes.data
    cdef fr_gru_forward_seq_f32 s32
    cdef fr_gru_weights_f32 w32
    with nogil:
        s32 = fr_gru_forward_seq_f32(h_seq=&h_seq[0], h_T=&h_T[0], acts=NULL, work=&work[0],
                                     x=&x[0], h0=&h0[0])
        w32 = fr_gru_weights_f32(W_x=NULL, W_h=NULL, b=&b[0], b_hn=_cptr(b_hn),
                                 reduced=<const void *>qp, packed=NULL)
        status = fr_gru_forward_f32(&s32, &w32, &c.cfg, &c.call)
    _check(status, "GRU forward")


def gru_backward(GRUConfig c, *, real[::1] dW_x, real[::1] dW_h, real[::1] db, real[::1] db_hn,
                 real[::1] dx, real[::1] dh0, real[::1] work, const real[::1] dh_seq,
                 const real[::1] dh_T, const real[::1] acts, const real[::1] x,
                 const real[::1] h_seq, const real[::1] h0, const real[::1] W_x,
                 const real[::1] W_h):
    """fr_gru_backward on flat buffers; every gradient output is accumulated (+=)."""
    cdef size_t n_work = 0
    cdef int64_t T = c.cfg.T, B = c.cfg.B, I = c.cfg.I, H = c.cfg.H
    cdef int status
    _check(fr_gru_backward_workspace_size(&n_work, &c.cfg), "GRU backward")
    _have(acts, 0, "acts")
    _gru_check(c, x, h0, h_seq, W_x, W_h, acts)
    _have(dW_x, <size_t>(3 * H * I), "dW_x"); _have(dW_h, <size_t>(3 * H * H), "dW_h")
    _have(db, <size_t>(3 * H), "db"); _have(work, n_work, "work")
    if c.cfg.linear_before_reset:
        _have(db_hn, <size_t>H, "db_hn")
    for a, n, name in ((dx, T * B * I, "dx"), (dh0, B * H, "dh0"), (dh_seq, T * B * H, "dh_seq"),
                       (dh_T, B * H, "dh_T")):
        if a is not None:
            _need(a.shape[0], <size_t>n, name)
    cdef fr_gru_grads_f32 g32
    cdef fr_gru_grads_f64 g64
    cdef fr_gru_backward_seq_f32 s32
    cdef fr_gru_backward_seq_f64 s64
    cdef fr_gru_weights_f32 w32
    cdef fr_gru_weights_f64 w64
    with nogil:
        if real is float:
            g32 = fr_gru_grads_f32(dW_x=&dW_x[0], dW_h=&dW_h[0], db=&db[0], db_hn=_ptr(db_hn))
            s32 = fr_gru_backward_seq_f32(dx=_ptr(dx), dh0=_ptr(dh0), work=&work[0],
                                          dh_seq=_cptr(dh_seq), dh_T=_cptr(dh_T), acts=&acts[0],
                                          x=&x[0], h_seq=&h_seq[0], h0=&h0[0])
            w32 = fr_gru_weights_f32(W_x=&W_x[0], W_h=&W_h[0], b=NULL, b_hn=NULL,
                                     reduced=NULL, packed=NULL)
            status = fr_gru_backward_f32(&g32, &s32, &w32, &c.cfg, &c.call)
        else:
            g64 = fr_gru_grads_f64(dW_x=&dW_x[0], dW_h=&dW_h[0], db=&db[0], db_hn=_ptr(db_hn))
            s64 = fr_gru_backward_seq_f64(dx=_ptr(dx), dh0=_ptr(dh0), work=&work[0],
                                          dh_seq=_cptr(dh_seq), dh_T=_cptr(dh_T), acts=&acts[0],
                                          x=&x[0], h_seq=&h_seq[0], h0=&h0[0])
            w64 = fr_gru_weights_f64(W_x=&W_x[0], W_h=&W_h[0], b=NULL, b_hn=NULL,
                                     reduced=NULL, packed=NULL)
            status = fr_gru_backward_f64(&g64, &s64, &w64, &c.cfg, &c.call)
    _check(status, "GRU backward")


# ---- streams: the per-frame step ----------------------------------------------------

include "_stream.pxi"


# SciPy's BLAS by default; the portable GEMM when SciPy is missing.
if _load_scipy_blas():
    fr_set_blas(_scipy_sgemm, _scipy_dgemm)


include "_qgemm.pxi"
