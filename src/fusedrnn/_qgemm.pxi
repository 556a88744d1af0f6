# The reduced-precision GEMM (csrc/qgemm.h), included by _kernel.pyx: weight
# rounding and quantisation, packing, the GEMM itself, and the ISA paths (tests
# and benchmarks force each one). The scheme: docs/equations.md §7.
from libc.stdint cimport int8_t, int32_t, uint16_t, uint8_t

cdef extern from "qgemm.h" nogil:
    int FR_QT_BF16, FR_QT_INT8, FR_QISA_COUNT
    int64_t FR_S8_MAX_K
    const char *fr_qisa_name(int type, int isa)
    const char *fr_qisa_needs(int type, int isa)
    int fr_qisa_supported(int type, int isa)
    int fr_qbest_isa(int type)
    int fr_qget_isa(int type)
    int fr_qset_isa(int type, int isa)
    void fr_bf16_round(uint16_t *dst, const float *src, int64_t n)
    int fr_bf16_pack(void *Wp, const uint16_t *W, int transposed, int64_t N, int64_t K,
                     int64_t ldw)
    void fr_s8_quantize(int8_t *Q, float *scale, const float *X, int64_t ldx, int64_t rows,
                        int64_t K)
    int fr_s8_pack(void *Wp, const int8_t *W, const float *scale, int transposed, int64_t N,
                   int64_t K, int64_t ldw)
    int fr_qpacked_bytes(size_t *bytes, int type, int64_t N, int64_t K)
    int fr_qgemm_workspace_bytes(size_t *bytes, int type, int64_t M, int64_t K)
    int fr_qgemm(float *C, int64_t ldc, void *work, const float *A, int64_t lda, const void *Wp,
                 int type, int64_t M, int64_t N, int64_t K, int beta1)

QTYPES = {"bf16": 1, "int8": 2}


cdef int _qtype(str precision) except -1:
    try:
        return QTYPES[precision]
    except KeyError:
        raise ValueError(f"precision must be 'bf16' or 'int8', got {precision!r}") from None


def qisa_paths(str precision) -> list:
    """[(level, name, needed CPU features, runs here)] of the reduced kernels' ISA paths."""
    cdef int t = _qtype(precision)
    return [(i, fr_qisa_name(t, i).decode(), fr_qisa_needs(t, i).decode(),
             bool(fr_qisa_supported(t, i))) for i in range(FR_QISA_COUNT)]


def qget_isa(str precision) -> int:
    """The ISA path in use for `precision` (the fastest this CPU runs, unless forced)."""
    return fr_qget_isa(_qtype(precision))


def qset_isa(str precision, int isa) -> int:
    """Tests and benchmarks: force ISA path `isa` of `precision`; returns the old one."""
    cdef int t = _qtype(precision)
    old = fr_qget_isa(t)
    if fr_qset_isa(t, isa) != 0:
        names = [p[1] for p in qisa_paths(precision) if p[3]]
        raise ValueError(f"isa {isa} is not a {precision} path this CPU runs (it runs {names})")
    return old


def bf16_round(const float[::1] src, uint16_t[::1] dst) -> None:
    """dst[i] = the bfloat16 bits of src[i] (round to nearest even, denormals to zero)."""
    if dst.shape[0] != src.shape[0]:
        raise ValueError(f"dst must have {src.shape[0]} elements, got {dst.shape[0]}")
    if src.shape[0]:
        with nogil:
            fr_bf16_round(&dst[0], &src[0], src.shape[0])


def s8_quantize(const float[:, ::1] X, int8_t[:, ::1] Q, float[::1] scale) -> None:
    """Per-row symmetric int8: Q (rows, K), scale (rows,) of X (rows, K)."""
    cdef int64_t rows = X.shape[0], K = X.shape[1]
    if Q.shape[0] != rows or Q.shape[1] != K or scale.shape[0] != rows:
        raise ValueError(f"Q must be ({rows}, {K}) and scale ({rows},)")
    if rows and K:
        with nogil:
            fr_s8_quantize(&Q[0, 0], &scale[0], &X[0, 0], K, rows, K)


def qpack(str precision, W, scale=None) -> np.ndarray:
    """The packed panels (uint8, 64-byte aligned) of op(W) = W^T for a weight W (N, K) stored
    in `precision` (bf16: uint16 bits; int8: int8 with scale (N,) float32)."""
    cdef int t = _qtype(precision)
    cdef const uint16_t[:, ::1] wb
    cdef const int8_t[:, ::1] wq
    cdef const float[::1] sw
    cdef int64_t N = W.shape[0], K = W.shape[1]
    cdef size_t nbytes
    _check(fr_qpacked_bytes(&nbytes, t, N, K), "qpack")
    buf = np.zeros(nbytes + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    out = buf[off:off + nbytes]
    cdef uint8_t[::1] o = out
    cdef int status
    if t == FR_QT_BF16:
        wb = W
        with nogil:
            status = fr_bf16_pack(&o[0], &wb[0, 0], 1, N, K, K)
    else:
        wq = W
        sw = scale
        if sw.shape[0] != N:
            raise ValueError(f"scale must have shape ({N},), got ({sw.shape[0]},)")
        with nogil:
            status = fr_s8_pack(&o[0], &wq[0, 0], &sw[0], 1, N, K, K)
    _check(status, "qpack")
    return out


def qgemm(str precision, float[:, ::1] C, const float[:, ::1] A, const uint8_t[::1] Wp,
          bint beta1) -> None:
    """C (M, N) (+)= A (M, K) . W^T in `precision`, W packed by `qpack` for (N, K)."""
    cdef int t = _qtype(precision)
    cdef int64_t M = C.shape[0], N = C.shape[1], K = A.shape[1]
    cdef size_t need, wbytes
    if A.shape[0] != M or N < 1 or K < 1:
        raise ValueError("qgemm: C (M, N) and A (M, K) do not match")
    _check(fr_qpacked_bytes(&need, t, N, K), "qgemm")
    if <size_t>Wp.shape[0] != need:
        raise ValueError(f"qgemm: Wp must hold {need} bytes for N = {N}, K = {K}")
    _check(fr_qgemm_workspace_bytes(&wbytes, t, M, K), "qgemm")
    work = np.empty(wbytes, np.uint8)
    cdef uint8_t[::1] w = work
    cdef int status
    if M == 0:
        return
    with nogil:
        status = fr_qgemm(&C[0, 0], N, &w[0], &A[0, 0], K, &Wp[0], t, M, N, K, beta1)
    _check(status, "qgemm")
